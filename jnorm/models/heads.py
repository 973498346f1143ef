"""Projector and predictor heads, and the SSL network that chains them.

docs/paper.md §4.1: SimCLR's projector is in->128->128 without BN; SimSiam/BYOL use
3 x Linear(2048) with BN after each (ReLU after all but the last) and a
2048->512->2048 predictor with BN+ReLU in the bottleneck.

Dense layers are initialised as torch's `nn.Linear` (the reference's framework):
kernel and bias uniform in +-1/sqrt(fan_in). BatchNorm as in the backbone
(momentum 0.9 == torch 0.1, eps 1e-5, float32). Every head computes in float32.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnorm.models import layers

# torch.nn.Linear: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch.nn.Linear's bias init."""
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=torch_linear_kernel_init,
                  bias_init=torch_linear_bias_init(fan_in), dtype=jnp.float32,
                  param_dtype=jnp.float32, name=name)


def _batch_norm(train: bool, axis_name: str | None, name: str) -> nn.Module:
  return layers.batch_norm()(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=jnp.float32, param_dtype=jnp.float32,
                   axis_name=axis_name, name=name)


class Projector(nn.Module):
  """MLP: Dense layers, [BN] + ReLU between them; the last is linear (BN, no ReLU, with use_bn).

  Attributes:
    features: output width of each Dense layer, e.g. (128, 128) for SimCLR or
      (2048, 2048, 2048) for SimSiam.
    use_bn: BatchNorm after every Dense layer (the last one included).
    bn_axis_name: named mesh axis to sync BN statistics over (see ResNet).
  """
  features: Sequence[int]
  use_bn: bool = False
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, h: jax.Array, train: bool = True) -> jax.Array:
    """h: [B, F] backbone features -> z: [B, features[-1]] (float32)."""
    z = h.astype(jnp.float32)
    for i, width in enumerate(self.features):
      z = _dense(width, z.shape[-1], name=f"dense{i + 1}")(z)
      if self.use_bn:
        z = _batch_norm(train, self.bn_axis_name, name=f"bn{i + 1}")(z)
      if i < len(self.features) - 1:
        z = nn.relu(z)
    return z


class Predictor(nn.Module):
  """Bottleneck MLP features -> hidden (BN + ReLU) -> features (SimSiam/BYOL).

  Attributes:
    hidden: bottleneck width (512 in the reference).
    features: output width (= the projector's, 2048 in the reference).
    bn_axis_name: named mesh axis to sync BN statistics over.
  """
  hidden: int
  features: int
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    """z: [B, P] projector embeddings -> p: [B, features] (float32)."""
    p = z.astype(jnp.float32)
    p = _dense(self.hidden, p.shape[-1], name="dense1")(p)
    p = nn.relu(_batch_norm(train, self.bn_axis_name, name="bn1")(p))
    return _dense(self.features, self.hidden, name="dense2")(p)


class SSLNet(nn.Module):
  """Backbone -> projector [-> predictor], returning every stage's output.

  Attributes:
    backbone: module mapping images [B, H, W, C] to features [B, F].
    projector: module mapping [B, F] to embeddings [B, P].
    predictor: optional module mapping [B, P] to [B, P] (SimSiam / BYOL).
  """
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module | None = None

  def __call__(self, x: jax.Array, train: bool = True) -> dict[str, jax.Array]:
    """x: [B, H, W, C] -> {'backbone': [B, F], 'projector': [B, P], 'predictor': [B, P]?}.

    All outputs are float32; 'predictor' is present only with a predictor.
    """
    h = self.backbone(x, train=train).astype(jnp.float32)
    z = self.projector(h, train=train)
    out = {"backbone": h, "projector": z}
    if self.predictor is not None:
      out["predictor"] = self.predictor(z, train=train)
    return out
