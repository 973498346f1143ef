"""An MLP backbone for vector inputs (the synthetic latent-class data, docs/paper.md §2.3)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnorm.models.heads import _batch_norm, _dense


class MLPBackbone(nn.Module):
  """Dense -> BatchNorm -> ReLU blocks on [B, D] inputs; returns [B, features[-1]].

  Accepts (and ignores) the ResNet-only keywords so `build_ssl_net` can construct
  every backbone the same way.
  """
  features: Sequence[int] = (64, 64)
  bn_axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  stem: str = "cifar"  # unused: image-only option
  zero_init_residual: bool = False  # unused: image-only option

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if x.ndim != 2:
      raise ValueError(f"MLPBackbone takes vectors [B, D]; got shape {x.shape}")
    h = x.astype(jnp.float32)
    for i, width in enumerate(self.features):
      h = _dense(width, h.shape[-1], name=f"dense{i}")(h)
      h = _batch_norm(train, self.bn_axis_name, name=f"bn{i}")(h)
      h = nn.relu(h)
    return h
