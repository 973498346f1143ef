"""GradScale: rescale each embedding's gradient by its norm to a power.

Draganov et al. (2025) show that the gradient of any loss that sees an embedding z only
through z/‖z‖ has size proportional to 1/‖z‖ (`jnorm.losses`), so samples with large
norms learn slowly. GradScale multiplies the gradient of row i by ‖z_i‖^p, the norm
treated as a constant (not differentiated). p = 1 cancels the 1/‖z‖ factor exactly;
p = 0 is a no-op. The paper reports as a limitation that p = 1 did not converge on
ImageNet-100 or for non-contrastive (SimSiam/BYOL) models.

Two equivalent forms (the tests check they give identical parameter gradients):

* `gradscale(z, power=p)`: a `jax.custom_vjp` placed in the forward pass, identity
  forward, so `jax.grad` of the whole model sees the rescaled gradient.
* `scale_by_embedding_norm(p)`: an optax transform applied to dL/dz, whose `params`
  argument is the embeddings; `embedding_grad_then_vjp` then pulls the rescaled
  gradient back through the network with `jax.vjp`.

Norms are computed without an eps clamp: a zero row with p > 0 gets a zero gradient
(the limit), and with p < 0 an infinite one -- negative powers are allowed but are the
caller's risk.

References:
  Draganov et al., "On the Importance of Embedding Norms in Self-Supervised Learning",
  ICML 2025, arXiv 2502.09252, Sec. 5 (GradScale).
  optax.scale_gradient (the custom_vjp pattern used here).
"""

import functools
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _check_power(power) -> float:
  """Power must be a static Python number (it selects code paths and is hashed)."""
  if isinstance(power, (jax.Array, np.ndarray)) or not isinstance(power, numbers.Real):
    raise TypeError(f"power must be a static Python number, got {type(power).__name__}; "
                    "pass e.g. power=1.0 (not a traced array)")
  return float(power)


def _row_scale(z: jax.Array, power: float) -> jax.Array:
  """‖z_i‖^power over the last axis, [..., 1], as a constant."""
  # stop_gradient: GradScale rescales the gradient, it does not add a gradient through
  # the norm (matters only if someone differentiates the backward pass itself).
  z = jax.lax.stop_gradient(z)
  return jnp.linalg.norm(z, axis=-1, keepdims=True) ** power


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gradscale(z: jax.Array, power: float) -> jax.Array:
  del power  # used only by the backward pass
  return z


def _gradscale_fwd(z, power):
  return z, z  # the residual is z itself, whose row norms scale the cotangent


def _gradscale_bwd(power, z, g):
  return (g * _row_scale(z, power).astype(g.dtype),)


_gradscale.defvjp(_gradscale_fwd, _gradscale_bwd)


def gradscale(z: jax.Array, *, power: float) -> jax.Array:
  """Identity forward; backward multiplies row i of the cotangent by ‖z_i‖^power.

  Args:
    z: [..., D] embeddings; the norm is over the last axis.
    power: static Python number p. p = 0 returns `z` untouched, so gradients are
      bit-identical to not calling gradscale at all.

  Returns:
    `z`, unchanged.
  """
  power = _check_power(power)
  if power == 0.0:
    return z
  return _gradscale(z, power)


def scale_by_embedding_norm(power: float) -> optax.GradientTransformation:
  """Optax transform: multiplies row i of each update leaf by ‖params_i‖^power.

  Here `params` are the embeddings, not network weights: `update(dL_dz, state, z)`
  with `z` a pytree of [..., D] leaves (e.g. the tuple (z1, z2)) matching `dL_dz`.

  Args:
    power: static Python number p; p = 0 returns the updates unchanged.

  Returns:
    An `optax.GradientTransformation` (composes with `optax.chain`).
  """
  power = _check_power(power)

  def init_fn(params):
    del params  # stateless: the scale depends only on the current embeddings
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_embedding_norm needs the embeddings: call "
                       "update(dL_dz, state, z) with params=z")
    if power == 0.0:
      return updates, state
    updates = jax.tree.map(lambda g, z: g * _row_scale(z, power).astype(g.dtype),
                           updates, params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def embedding_grad_then_vjp(embed_fn: Callable[[Any], Any], params: Any,
                            loss_fn: Callable[..., jax.Array], *,
                            transform: optax.GradientTransformation, has_aux: bool = False):
  """Loss and parameter gradients with `transform` applied to dL/dz in between.

  Computes z = embed_fn(params), g = dL/dz, g' = transform.update(g, init(z), z), then
  pulls g' back to the parameters with the `jax.vjp` of `embed_fn`. With
  `transform = scale_by_embedding_norm(p)` this equals `jax.grad` of
  `loss_fn(gradscale(embed_fn(params), power=p))`.

  Args:
    embed_fn: params -> z, a pytree of [..., D] embeddings (e.g. (z1, z2)); with
      `has_aux`, params -> (z, aux).
    params: network parameters (any pytree).
    loss_fn: z -> scalar loss; with `has_aux`, (z, aux) -> scalar loss (aux is constant).
    transform: a stateless transform (its state is re-initialised on every call).
    has_aux: whether `embed_fn` also returns auxiliary outputs.

  Returns:
    (loss, grads), grads with the structure of `params`; with `has_aux`,
    (loss, grads, aux).
  """
  if has_aux:
    z, pull_back, aux = jax.vjp(embed_fn, params, has_aux=True)
    loss, dz = jax.value_and_grad(lambda e: loss_fn(e, aux))(z)
  else:
    z, pull_back = jax.vjp(embed_fn, params)
    loss, dz = jax.value_and_grad(loss_fn)(z)
  dz, _ = transform.update(dz, transform.init(z), z)
  (grads,) = pull_back(dz)
  return (loss, grads, aux) if has_aux else (loss, grads)
