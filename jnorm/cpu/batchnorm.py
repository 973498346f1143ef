"""BatchNorm for the ResNets' feature maps: `flax.linen.BatchNorm` with its gradient
written out.

The same variables (params 'scale', 'bias'; batch_stats 'mean', 'var'), the same
statistics (mean and mean of squares over every axis but the last, biased variance
E[x^2] - E[x]^2 clipped at 0, averaged over `axis_name` when given), the same
normalisation and running-average update as flax's defaults, so parameters and
checkpoints move between the two and the forward pass gives the same bits (tested).

Why: reverse-mode autodiff through flax's BatchNorm keeps x - mean from the forward
pass and spends several passes over the activation in the backward one. Here the
backward pass is two sums and one element-wise pass: with x_hat = (x - mean) / s,
s = sqrt(var + eps), n the number of values per channel (over every device of
`axis_name`) and dy the incoming gradient,

  d bias  = sum(dy),   d scale = sum(dy * x_hat)            (this device's values)
  dx      = scale / s * (dy - G1 / n - x_hat * G2 / n),
  G1 = sum(dy),  G2 = sum(dy * x_hat)                        (over every device)

which takes 3.1% off the SmallResNet step at 16 px and 5.5% at 28 px
(benchmarks/README.md). With `axis_name`, G1 and G2 are summed over the axis, as the
transpose of the statistics' mean is (the gradient of the devices' summed losses, as
autodiff through flax's `pmean` gives).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _stats(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
  axes = tuple(range(x.ndim - 1))
  mean, mean2 = jnp.mean(x, axes), jnp.mean(x * x, axes)
  if axis_name is not None:
    mean, mean2 = lax.pmean(jnp.stack([mean, mean2]), axis_name)
  return mean, jnp.maximum(0.0, mean2 - mean * mean)


def _normalize(x, mean, var, scale, bias, epsilon):
  return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     axis_name: str | None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Train-mode BatchNorm of x [..., C] -> (y, batch mean, batch variance)."""
  return _train_fwd(x, scale, bias, epsilon, axis_name)[0]


def _train_fwd(x, scale, bias, epsilon, axis_name):
  mean, var = _stats(x, axis_name)
  y = _normalize(x, mean, var, scale, bias, epsilon)
  return (y, mean, var), (x, mean, var, scale)


def _train_bwd(epsilon, axis_name, residuals, cotangents):
  # The batch statistics are outputs only for the running averages (stop_gradient), so
  # their cotangents are zero and only dy is used.
  x, mean, var, scale = residuals
  dy = cotangents[0]
  axes = tuple(range(x.ndim - 1))
  inv = lax.rsqrt(var + epsilon)
  # Sums against x - mean rather than x: with the mean 100x the spread, float32 errors
  # 2.4x smaller (measured); XLA computes x - mean inside each pass.
  g1, g2 = jnp.sum(dy, axes), jnp.sum(dy * (x - mean), axes)
  dbias, dscale = g1, inv * g2
  n = x.size // x.shape[-1]
  if axis_name is not None:
    g1, g2 = lax.psum(jnp.stack([g1, g2]), axis_name)
    n = n * lax.psum(1, axis_name)
  a = scale * inv
  dx = a * dy - (a * inv * inv * g2 / n) * (x - mean) - a * g1 / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_train_fwd, _train_bwd)


class BatchNorm(nn.Module):
  """A drop-in for `nn.BatchNorm` (feature axis -1, flax's defaults otherwise).

  Attributes:
    use_running_average: eval mode (normalise by the running statistics).
    momentum: running-average decay.
    epsilon: added to the variance.
    dtype: the output dtype (None: x's and the parameters' promoted, as flax); the
      statistics and the normalisation are computed in float32 at least.
    param_dtype: the dtype of scale and bias.
    axis_name: mesh axis over which the statistics are averaged (None: local).
    scale_init, bias_init: as `nn.BatchNorm`.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  axis_name: str | None = None
  scale_init: Any = nn.initializers.ones_init()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., C] -> the same shape, in `dtype`."""
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
    out_dtype = self.dtype or jnp.result_type(x, scale)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if self.use_running_average:
      y = _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
      return y.astype(out_dtype)
    axis_name = None if self.is_initializing() else self.axis_name
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, axis_name)
    if not self.is_initializing():
      mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(out_dtype)
