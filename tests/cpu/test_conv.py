"""jnorm.cpu.conv: the GEMM and XLA forms of the convolution agree, the layer is a
drop-in for nn.Conv, and the fusion barrier is the identity."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm.cpu import conv as conv_lib


CONV_CASES = [  # (kernel, stride, padding, H): the ResNets' convs and nn.Conv's modes
    (1, 1, "VALID", 7), (1, 2, "VALID", 8), (1, 2, "SAME", 7),
    (3, 1, ((1, 1), (1, 1)), 6), (3, 2, ((1, 1), (1, 1)), 7), (3, 2, "SAME", 8),
    (7, 2, ((3, 3), (3, 3)), 9), (7, 1, 3, 5), (3, 2, ((0, 1), (2, 0)), 9)]


def _conv_fn(impl, kernel, stride, padding):
  def f(x, w):
    pads = conv_lib.resolve_padding(padding, in_spatial=x.shape[1:3],
                                    kernel_size=(kernel, kernel), strides=(stride, stride))
    fn = conv_lib.conv_gemm if impl == "gemm" else conv_lib.conv_xla
    return fn(x, w, strides=(stride, stride), padding=pads)
  return f


def _conv_value_and_grads(impl, kernel, stride, padding, x, w, cotangent):
  f = _conv_fn(impl, kernel, stride, padding)
  y, vjp = jax.vjp(f, x, w)
  return (y, *vjp(cotangent))


def _gemm_and_xla(kernel, stride, padding, x, w, g) -> tuple:
  """(gemm's, xla's) (value, input gradient, kernel gradient), in one jitted call."""
  both = jax.jit(lambda x, w, g: [_conv_value_and_grads(impl, kernel, stride, padding,
                                                        x, w, g) for impl in ("gemm", "xla")])
  return both(x, w, g)


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES[:3] + [
    pytest.param(*case, marks=pytest.mark.slow) for case in CONV_CASES[3:]])
def test_gemm_conv_matches_xla_float32(kernel, stride, padding, size):
  kx, kw, kc = jax.random.split(jax.random.key(kernel * 10 + stride), 3)
  x = jax.random.normal(kx, (3, size, size, 5))
  w = jax.random.normal(kw, (kernel, kernel, 5, 6)) / kernel
  out_shape = jax.eval_shape(_conv_fn("xla", kernel, stride, padding), x, w).shape
  g = jax.random.normal(kc, out_shape)

  got, want = _gemm_and_xla(kernel, stride, padding, x, w, g)
  for a, b in zip(got, want):
    assert a.shape == b.shape and a.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES[1::2])
def test_gemm_conv_matches_xla_float64(x64, kernel, stride, padding, size):
  rng = np.random.default_rng(kernel + 7 * stride)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)))
  ref = _conv_fn("xla", kernel, stride, padding)(x, w)
  g = jnp.asarray(rng.normal(size=ref.shape))

  got, want = _gemm_and_xla(kernel, stride, padding, x, w, g)
  for a, b in zip(got, want):
    assert a.dtype == jnp.float64
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_module_is_a_drop_in_for_nn_conv():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  kw = dict(features=4, kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)))
  ref_vars = nn.Conv(**kw).init(jax.random.key(1), x)
  for impl in ("gemm", "xla", "kernels"):
    mine = conv_lib.Conv(**kw, implementation=impl)
    variables = mine.init(jax.random.key(1), x)
    # Same parameter names, shapes and initial values as nn.Conv with the same key.
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, ref_vars))
    np.testing.assert_allclose(mine.apply(variables, x), nn.Conv(**kw).apply(ref_vars, x),
                               atol=1e-5)


def test_fusion_barrier_is_the_identity_and_survives_xla_optimisation():
  """Bit-identical values and gradients, and XLA:CPU keeps the conditional (if a future
  XLA folds the always-true predicate, the barrier no longer stops the fusion)."""
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))

  def loss(kernel, x, barrier):
    y = jax.nn.relu(x)
    y = conv_lib.fusion_barrier(y) if barrier else y
    return jnp.sum(conv_lib.conv_xla(y, kernel, strides=(1, 1),
                                     padding=((1, 1), (1, 1))) ** 2)

  grads = [jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(kernel, x, b)
           for b in (False, True)]
  for plain, barred in zip(*grads):
    np.testing.assert_array_equal(plain, barred)
  np.testing.assert_array_equal(conv_lib.fusion_barrier(x), x)
  nan = x.at[0, 0, 0, 0].set(jnp.nan)  # the predicate is true for NaN too
  np.testing.assert_array_equal(conv_lib.fusion_barrier(nan), nan)
  hlo = jax.jit(jax.grad(loss), static_argnums=2).lower(kernel, x, True).compile().as_text()
  assert "conditional(" in hlo
