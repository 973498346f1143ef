"""Tests of jnorm.gradscale: the custom_vjp and the optax transform, and that they agree."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnorm import losses
from jnorm.gradscale import embedding_grad_then_vjp, gradscale, scale_by_embedding_norm

POWERS = [0.5, 1.0, 2.0, -1.0]


def _embeddings(shape, seed=0, dtype=jnp.float64):
  """Random embeddings whose row norms spread over several orders of magnitude."""
  kd, kn = jax.random.split(jax.random.key(seed))
  z = jax.random.normal(kd, shape, dtype)
  return z * jnp.exp(2.0 * jax.random.normal(kn, shape[:-1] + (1,), dtype))


def _row_norms(z):
  return np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)


def _loss(z):
  """A loss that depends on the norms too, so the plain gradient is not orthogonal to z."""
  return jnp.sum(jnp.sin(z) * jnp.arange(z.shape[-1])) + jnp.sum(z**2) ** 0.5


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 6)])
def test_forward_is_identity(shape):
  z = _embeddings(shape, dtype=jnp.float32)
  outs = jax.jit(lambda z: [gradscale(z, power=p) for p in [0, *POWERS]])(z)
  for out in outs:
    assert out.dtype == z.dtype
    np.testing.assert_array_equal(out, z)


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 6)])
def test_backward_scales_each_row_by_norm_power(x64, shape):
  z = _embeddings(shape, seed=1)
  plain, *scaled = jax.jit(lambda z: [jax.grad(lambda z, p=p: _loss(
      gradscale(z, power=p) if p is not None else z))(z) for p in [None, *POWERS]])(z)
  for power, got in zip(POWERS, scaled):
    np.testing.assert_allclose(got, _row_norms(z) ** power * plain, rtol=1e-13)


def test_power_zero_is_bit_identical(x64):
  z = _embeddings((6, 4), seed=2)
  plain = jax.jit(jax.grad(_loss))(z)
  for power in (0, 0.0):
    np.testing.assert_array_equal(
        jax.jit(jax.grad(lambda z, p=power: _loss(gradscale(z, power=p))))(z), plain)
    transform = scale_by_embedding_norm(power)
    updates, _ = transform.update(plain, transform.init(z), z)
    np.testing.assert_array_equal(updates, plain)


def test_power_one_cancels_the_inverse_norm_factor(x64):
  """The cosine gradient scales as 1/‖z‖; with p = 1 it is invariant to z -> c·z."""
  z1, z2 = _embeddings((6, 5), seed=3), _embeddings((6, 5), seed=4)

  @jax.jit
  def grads(z1, z2):
    return jax.grad(lambda a, b: losses.infonce_loss(
        gradscale(a, power=1.0), gradscale(b, power=1.0), temperature=0.5), (0, 1))(z1, z2)

  base = grads(z1, z2)
  for c in (1e-3, 3.0, 1e4):
    for got, want in zip(grads(c * z1, c * z2), base):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_transform_scales_rows_of_a_pytree_and_chains(x64):
  zs = (_embeddings((4, 3), seed=5), _embeddings((4, 3), seed=6))
  dzs = (_embeddings((4, 3), seed=7), _embeddings((4, 3), seed=8))
  lr, power = 0.1, 1.5
  opt = optax.chain(scale_by_embedding_norm(power), optax.scale(-lr))
  state = opt.init(zs)
  updates, new_state = jax.jit(opt.update)(dzs, state, zs)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for u, g, z in zip(updates, dzs, zs):
    np.testing.assert_allclose(u, -lr * _row_norms(z) ** power * np.asarray(g), rtol=1e-13)


def test_transform_needs_params():
  transform = scale_by_embedding_norm(1.0)
  with pytest.raises(ValueError, match="params=z"):
    transform.update(jnp.ones((2, 3)), transform.init(None))


def test_power_must_be_static():
  with pytest.raises(TypeError, match="static Python number"):
    gradscale(jnp.ones((2, 3)), power=jnp.array(1.0))
  with pytest.raises(TypeError, match="static Python number"):
    scale_by_embedding_norm(jnp.array(1.0))


def _mlp(params, x):
  """2-layer MLP [B, 4] -> [B, 3]."""
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def test_custom_vjp_and_optax_transform_give_identical_param_grads(x64):
  """GradScale in the forward pass vs scale_by_embedding_norm on dL/dz then jax.vjp,
  through a 2-layer MLP, for p in {0, 1, 2}; p = 0 also equals no GradScale."""
  keys = jax.random.split(jax.random.key(9), 6)
  params = {"w1": jax.random.normal(keys[0], (4, 8), jnp.float64),
            "b1": jax.random.normal(keys[1], (8,), jnp.float64),
            "w2": 3.0 * jax.random.normal(keys[2], (8, 3), jnp.float64),
            "b2": jax.random.normal(keys[3], (3,), jnp.float64)}
  x1 = jax.random.normal(keys[4], (6, 4), jnp.float64)
  x2 = x1 + 0.3 * jax.random.normal(keys[5], (6, 4), jnp.float64)
  powers = (0.0, 1.0, 2.0)

  def embed(p):
    return _mlp(p, x1), _mlp(p, x2)

  def loss_fn(z):
    return losses.infonce_loss(*z, temperature=0.5)

  def in_forward(p, power):
    z1, z2 = embed(p)
    return loss_fn((gradscale(z1, power=power), gradscale(z2, power=power)))

  @jax.jit
  def all_grads(p):
    forward = [jax.value_and_grad(in_forward)(p, power) for power in powers]
    transformed = [embedding_grad_then_vjp(embed, p, loss_fn,
                                           transform=scale_by_embedding_norm(power))
                   for power in powers]
    return jax.grad(lambda p: loss_fn(embed(p)))(p), forward, transformed

  plain, forward, transformed = all_grads(params)
  for power, (loss_a, grads_a), (loss_b, grads_b) in zip(powers, forward, transformed):
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-15)
    for k in params:
      np.testing.assert_allclose(grads_a[k], grads_b[k], rtol=1e-12, atol=1e-14)
      if power == 0.0:  # p = 0 is no GradScale at all: the same ops, the same bits
        np.testing.assert_array_equal(grads_a[k], plain[k])
        np.testing.assert_allclose(grads_b[k], plain[k], rtol=1e-12, atol=1e-14)
      else:  # GradScale changed something
        assert not np.allclose(grads_a[k], plain[k], rtol=1e-3)
