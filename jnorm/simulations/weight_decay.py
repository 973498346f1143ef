"""Embedding norms under the cosine loss with weight decay: growth, and where it stops.

Setting (chosen because it has a clean equilibrium). Each point z ∈ R^d is trained by
gradient descent with step γ on its own loss -cos(z, w) plus L2 weight decay λ/2 ‖z‖²
(coupled decay: `optax.add_decayed_weights(λ)` then `optax.sgd(γ)`, so
z⁺ = z - γ(∇ + λz)). The positive w is re-drawn at every step at the fixed angle θ from
the current z: w = cos θ ẑ + sin θ v, with v the unit component of a fixed random
direction orthogonal to ẑ. It models a fresh augmented view that always disagrees with
the embedding by θ, so the cosine gradient never vanishes. (With the positive held
fixed instead, the angle closes, the gradient vanishes and any λ > 0 drives the norm to
0: no informative equilibrium.)

Exact norm dynamics. ∇_z(-cos) = -(I - ẑẑᵀ)ŵ/‖z‖ is orthogonal to z with size sin θ/‖z‖,
so with x = ‖z‖²:

  x⁺ = (1 - γλ)² x + γ² sin²θ / x.

* λ = 0: x⁺ = x + γ² sin²θ / x > x. The norm only grows (the exact norm-growth identity
  ‖z⁺‖² = ‖z‖² + γ²‖∇‖²), and ‖z‖⁴ grows about linearly in time: ‖z‖ ~ t^(1/4).
* λ > 0, heuristic: growth per step γ²‖∇‖² = γ² sin²θ/‖z‖² balances the decay's shrink
  ‖z‖² - (1 - γλ)²‖z‖² ≈ 2γλ‖z‖² when ‖z*‖⁴ = γ sin²θ / (2λ).
* λ > 0, exact fixed point of the map above: ‖z*‖⁴ = γ sin²θ / (2λ - γλ²), so the
  measured / heuristic ratio should be (1 - γλ/2)^(-1/4) ≈ 1 + γλ/8. Linearising, x
  relaxes to x* at the rate 4γλ per step (so run many times 1/(4γλ) steps).

docs/paper.md §1.5 (heuristic derived for jnorm, not from the paper; verified here).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnorm import losses


def positive_at_angle(z: jax.Array, u: jax.Array, *, angle) -> jax.Array:
  """w = cos θ ẑ + sin θ v, v the unit part of `u` orthogonal to z. z, u: [N, D] -> [N, D]."""
  z_hat = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  v = u - jnp.sum(u * z_hat, axis=-1, keepdims=True) * z_hat
  v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
  return jnp.cos(angle) * z_hat + jnp.sin(angle) * v


def norm_trajectories(*, key: jax.Array, init_norms, dim: int, angle: float, lr: float,
                      weight_decay, num_steps: int, dtype=jnp.float32) -> jax.Array:
  """‖z_t‖ for t = 0..num_steps, one point per initial norm (module docstring's setting).

  Args:
    key: draws the initial directions and the fixed directions u that orient the positive.
    init_norms: [P] initial norms.
    dim: d.
    angle: θ, the fixed angle between each z and its positive.
    lr: γ.
    weight_decay: λ (>= 0); may be a traced scalar (vmap over λ).
    num_steps: T.

  Returns:
    norms: [T + 1, P].
  """
  init_norms = jnp.asarray(init_norms, dtype)
  key_z, key_u = jax.random.split(key)
  z = jax.random.normal(key_z, (init_norms.shape[0], dim), dtype)
  z = init_norms[:, None] * z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  u = jax.random.normal(key_u, z.shape, dtype)
  optimizer = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr))

  def loss_fn(z):
    # The positive is a target re-drawn from the current z: not differentiated.
    w = jax.lax.stop_gradient(positive_at_angle(z, u, angle=angle))
    # Sum, not mean: each point follows its own loss -cos(z_i, w_i) with step γ.
    return -jnp.sum(losses.cosine_similarity(z, w))

  def step(carry, _):
    z, opt_state = carry
    grads = jax.grad(loss_fn)(z)
    updates, opt_state = optimizer.update(grads, opt_state, z)
    z = optax.apply_updates(z, updates)
    return (z, opt_state), jnp.linalg.norm(z, axis=-1)

  _, norms = jax.lax.scan(step, (z, optimizer.init(z)), None, length=num_steps)
  return jnp.concatenate([jnp.linalg.norm(z, axis=-1)[None], norms], axis=0)


def weight_decay_sweep(*, key: jax.Array, weight_decays, init_norms, dim: int, angle: float,
                       lr: float, num_steps: int, dtype=jnp.float32) -> jax.Array:
  """`norm_trajectories` for each λ in `weight_decays`, vmapped: returns [L, T + 1, P]."""

  def run(weight_decay):
    return norm_trajectories(key=key, init_norms=init_norms, dim=dim, angle=angle, lr=lr,
                             weight_decay=weight_decay, num_steps=num_steps, dtype=dtype)

  return jax.jit(jax.vmap(run))(jnp.asarray(weight_decays, dtype))


def heuristic_equilibrium_norm(*, lr: float, angle: float, weight_decay: float) -> float:
  """(γ sin²θ / (2λ))^(1/4); infinite for λ = 0."""
  if weight_decay == 0:
    return float("inf")
  return float((lr * np.sin(angle) ** 2 / (2 * weight_decay)) ** 0.25)


def exact_fixed_point_norm(*, lr: float, angle: float, weight_decay: float) -> float:
  """(γ sin²θ / (2λ - γλ²))^(1/4): the fixed point of x⁺ = (1-γλ)²x + γ²sin²θ/x."""
  if weight_decay == 0:
    return float("inf")
  denom = 2 * weight_decay - lr * weight_decay**2
  return float((lr * np.sin(angle) ** 2 / denom) ** 0.25)
