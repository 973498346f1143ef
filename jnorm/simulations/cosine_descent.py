"""Gradient descent on the cosine similarity of point pairs: the paper's toy simulations.

Pure functions (keyword-only hyperparameters, arrays in, arrays out) behind the
`sim_norm_convergence`, `sim_angle_convergence` and `sim_gradscale` jobs. Reference:
Draganov et al., "On the Importance of Embedding Norms in Self-Supervised Learning",
ICML 2025, §3 (docs/paper.md §2.1-2.2) and the authors' Simulations notebook.
`gradient_size_vs_norm` (the 1/‖z‖ law, §1.2) and `norm_growth` (§1.3) are the
measurements of notebooks/01_theory.ipynb.

Setting: n pairs (z_i, w_i) in R^d, both points are free parameters, trained by plain
gradient descent with step `lr` on L = -mean_i cos(z_i, w_i). Since ∇_z cos = (I - ẑẑᵀ)ŵ/‖z‖,
each step turns a pair by about lr · sin θ / (n ‖z‖²) radians, so the number of steps to
close a given angle grows as ‖z‖² (at fixed lr): the norm effect.

The reference's quirk, reproduced on purpose: its FIRST step differentiates
-mean(z·w)/r² (r the initial radius, a constant) instead of the cosine, i.e. it skips
the tangential projection (I - ẑẑᵀ) once; later steps use the true cosine. Convergence
is declared when the mean cosine is >= 1 - eps, checked after each step (and before the
first), so a run that starts converged takes 0 steps.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jnorm import gradscale as gradscale_lib
from jnorm import losses


def random_sphere(key: jax.Array, shape, *, radius=1.0, dtype=jnp.float32) -> jax.Array:
  """Points uniform on the sphere of `radius`: Gaussian draws normalised per row. [*shape]."""
  x = jax.random.normal(key, shape, dtype)
  return radius * x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def pairs_at_angle(*, key: jax.Array, num_pairs: int, dim: int, angle, radius=1.0,
                   dtype=jnp.float32):
  """Pairs at an exact angle: w = cos(θ) z + sin(θ) v with v ⊥ z, both of norm `radius`.

  This is the spherical interpolation from a random direction orthogonal to z (θ = π/2)
  toward -z (θ = π), or toward +z for θ < π/2. Returns z, w: [num_pairs, dim].
  """
  key_z, key_v = jax.random.split(key)
  z_hat = random_sphere(key_z, (num_pairs, dim), dtype=dtype)
  u = jax.random.normal(key_v, (num_pairs, dim), dtype)
  u = u - jnp.sum(u * z_hat, axis=-1, keepdims=True) * z_hat  # Gram-Schmidt: u ⊥ z
  v_hat = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
  w_hat = jnp.cos(angle) * z_hat + jnp.sin(angle) * v_hat
  return radius * z_hat, radius * w_hat


def mean_cosine(z: jax.Array, w: jax.Array) -> jax.Array:
  """mean_i cos(z_i, w_i) for z, w: [N, D]; a scalar."""
  return jnp.mean(losses.cosine_similarity(z, w))


def cosine_descent(z: jax.Array, w: jax.Array, *, lr: float, eps: float = 1e-3,
                   max_steps: int, power: float | None = None, first_step_quirk: bool = True):
  """Gradient descent on -mean cos(z_i, w_i) until the mean cosine is >= 1 - eps.

  Both points move. With `power` set, each point passes through GradScale
  (`jnorm.gradscale.gradscale`: identity forward, row gradients times ‖z_i‖^power);
  power 0 is bit-identical to plain descent (power None, GradScale left out).
  One `jax.lax.while_loop`: jit/vmap-able.

  Args:
    z, w: [N, D] initial points.
    lr: the step size (the reference uses 10 with the mean over N = 500 pairs).
    eps: convergence tolerance on the mean cosine.
    max_steps: hard cap on the number of steps.
    power: GradScale power p (a static Python number), or None for no GradScale.
    first_step_quirk: the reference's first step on -mean(z·w)/(‖z₀‖‖w₀‖) (module doc).

  Returns:
    steps: int32 scalar, the number of steps taken (max_steps if not converged).
    final_cos: the mean cosine after the last step.
  """
  z0_norm = jnp.linalg.norm(z, axis=-1)
  w0_norm = jnp.linalg.norm(w, axis=-1)

  def scaled(a, b):
    if power is None:
      return a, b
    return gradscale_lib.gradscale(a, power=power), gradscale_lib.gradscale(b, power=power)

  def cosine_loss(params):
    a, b = scaled(*params)
    return -mean_cosine(a, b)

  def quirk_loss(params):
    a, b = scaled(*params)
    # The reference divides by the initial radius², a constant: no gradient through it.
    denom = jax.lax.stop_gradient(z0_norm * w0_norm)
    return -jnp.mean(jnp.sum(a * b, axis=-1) / denom)

  def descend(loss_fn, state):
    params, step, _ = state
    grads = jax.grad(loss_fn)(params)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return params, step + 1, mean_cosine(*params)

  def not_done(state):
    _, step, cos = state
    return (cos < 1 - eps) & (step < max_steps)

  state = ((z, w), jnp.int32(0), mean_cosine(z, w))
  if first_step_quirk:
    state = jax.lax.cond(not_done(state), lambda s: descend(quirk_loss, s), lambda s: s, state)
  (_, steps, final_cos) = jax.lax.while_loop(
      not_done, lambda s: descend(cosine_loss, s), state)
  return steps, final_cos


def norm_convergence_steps(*, key: jax.Array, norms, num_pairs: int, dim: int, lr: float,
                           eps: float = 1e-3, max_steps: int, power: float | None = None,
                           first_step_quirk: bool = True, dtype=jnp.float32):
  """Steps to converge for each initial radius r in `norms` (docs/paper.md §2.1).

  The same unit directions are scaled by every r (as the reference baseline does), so
  only the norm differs between runs; `jax.vmap` over the norms, one compiled call.
  Returns steps: int32 [R], final_cos: [R].
  """
  key_z, key_w = jax.random.split(key)
  z_hat = random_sphere(key_z, (num_pairs, dim), dtype=dtype)
  w_hat = random_sphere(key_w, (num_pairs, dim), dtype=dtype)

  def run(r):
    return cosine_descent(r * z_hat, r * w_hat, lr=lr, eps=eps, max_steps=max_steps,
                          power=power, first_step_quirk=first_step_quirk)

  return jax.jit(jax.vmap(run))(jnp.asarray(norms, dtype))


def angle_convergence_steps(*, key: jax.Array, angles, num_pairs: int, dim: int, lr: float,
                            eps: float = 1e-3, max_steps: int, radius: float = 1.0,
                            dtype=jnp.float32):
  """Steps to converge for pairs that all start at angle θ, for each θ in `angles` (§2.2).

  Same z and orthogonal directions for every angle; `jax.vmap` over the angles.
  Returns steps: int32 [A], final_cos: [A].
  """

  def run(angle):
    z, w = pairs_at_angle(key=key, num_pairs=num_pairs, dim=dim, angle=angle, radius=radius,
                          dtype=dtype)
    return cosine_descent(z, w, lr=lr, eps=eps, max_steps=max_steps)

  return jax.jit(jax.vmap(run))(jnp.asarray(angles, dtype))


def fit_power_law(norms, steps):
  """Least-squares fits of steps(r): the coefficient a of a·r² and the exponent k of c·r^k.

  a minimises Σ (s - a r²)²; (k, log c) is the line fitted to (log r, log s). Runs that
  took 0 steps are left out (log 0). Returns dict(a=..., exponent=..., prefactor=...).
  """
  r = np.asarray(norms, np.float64)
  s = np.asarray(steps, np.float64)
  keep = s > 0
  r, s = r[keep], s[keep]
  a = float(np.sum(s * r**2) / np.sum(r**4))
  exponent, log_c = np.polyfit(np.log(r), np.log(s), 1)
  return {"a": a, "exponent": float(exponent), "prefactor": float(np.exp(log_c))}


def gradient_size_vs_norm(z1: jax.Array, z2: jax.Array, *, loss_fn, radii,
                          power: float = 0.0) -> jax.Array:
  """Mean per-sample gradient size with every embedding scaled to norm r (docs/paper.md §1.2, §1.6).

  The rows of z1 and z2 are normalised and scaled to each radius r in `radii`; both pass
  through GradScale with `power` (`jnorm.gradscale.gradscale`) and `loss_fn(a, b)` is
  differentiated with respect to the first. For a loss that sees only the directions
  the size scales as r^(power - 1): slope -1 on log-log axes without GradScale, flat
  for p = 1. `jax.vmap` over the radii, one compiled call.

  Args:
    z1, z2: [N, D] embeddings; only their directions are used.
    loss_fn: (a [N, D], b [N, D]) -> scalar loss, e.g.
      `functools.partial(losses.infonce_loss, temperature=0.5)`.
    radii: [R] norms r.
    power: GradScale power p (a static Python number; 0 = no GradScale).

  Returns:
    [R]: mean_i ‖∂L/∂a_i‖ at each radius.
  """
  u1, u2 = losses.l2_normalize(z1), losses.l2_normalize(z2)

  def scaled_loss(a, b):
    return loss_fn(gradscale_lib.gradscale(a, power=power),
                   gradscale_lib.gradscale(b, power=power))

  def size(r):
    g = jax.grad(scaled_loss)(r * u1, r * u2)
    return jnp.mean(jnp.linalg.norm(g, axis=-1))

  return jax.jit(jax.vmap(size))(jnp.asarray(radii, u1.dtype))


def norm_growth(z1: jax.Array, z2: jax.Array, *, grad_fn, lr: float, num_steps: int) -> dict:
  """Plain gradient descent on the embeddings themselves, recording their norms (§1.3).

  Each step: (z1, z2) <- (z1, z2) - lr · grad_fn(z1, z2). For a loss that sees only the
  directions the gradient g is ⟂ z, so ‖z⁺‖² = ‖z‖² + lr²‖g‖² exactly (Pythagoras) and
  the norms only grow. One `jax.lax.scan`.

  Args:
    z1, z2: [N, D] initial embeddings (both views move).
    grad_fn: (z1, z2) -> (dL/dz1, dL/dz2), e.g.
      `functools.partial(losses.infonce_grad, temperature=0.5)`.
    lr: step size γ.
    num_steps: number of steps T.

  Returns:
    {'mean_norm': [T + 1] mean ‖z‖ over the rows of both views, at the start and after
     each step; 'pythagoras_error': [T] per step, the largest relative error over the
     rows of both views of ‖z⁺‖² against ‖z‖² + lr²‖g‖²; 'z1', 'z2': the final
     embeddings}.
  """
  def mean_norm(a, b):
    return jnp.mean(jnp.linalg.norm(jnp.concatenate([a, b]), axis=-1))

  def step(carry, _):
    a, b = carry
    ga, gb = grad_fn(a, b)
    z, g = jnp.concatenate([a, b]), jnp.concatenate([ga, gb])
    predicted = jnp.sum(z**2, axis=-1) + lr**2 * jnp.sum(g**2, axis=-1)
    a, b = a - lr * ga, b - lr * gb
    actual = jnp.sum(jnp.concatenate([a, b])**2, axis=-1)
    error = jnp.max(jnp.abs(actual - predicted) / predicted)
    return (a, b), (mean_norm(a, b), error)

  @jax.jit
  def run(a, b):
    return jax.lax.scan(step, (a, b), None, length=num_steps)

  (a, b), (norms, errors) = run(z1, z2)
  return {"mean_norm": jnp.concatenate([mean_norm(z1, z2)[None], norms]),
          "pythagoras_error": errors, "z1": a, "z2": b}
