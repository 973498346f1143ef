"""The paper's toy simulations (jnorm.simulations, pure functions) and the synthetic data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm.data import synthetic
from jnorm.simulations import cosine_descent
from jnorm.simulations import imbalance
from jnorm.simulations import weight_decay


def _tiny_pairs(n=4, d=3, r=2.0):
  z = cosine_descent.random_sphere(jax.random.key(1), (n, d), radius=r, dtype=jnp.float64)
  w = cosine_descent.random_sphere(jax.random.key(2), (n, d), radius=r, dtype=jnp.float64)
  return z, w


def _cos(z, w):
  return np.mean(np.sum(z * w, -1) / (np.linalg.norm(z, axis=-1) * np.linalg.norm(w, axis=-1)))


def test_first_step_quirk_matches_the_formula(x64):
  """Step 1 follows -mean(z·w)/r² (no tangential projection); without the quirk, the cosine."""
  z, w = _tiny_pairs()
  n, r, lr = z.shape[0], 2.0, 3.0
  zn, wn = np.asarray(z), np.asarray(w)
  # Quirk: d/dz [-mean(z·w)/r²] = -w / (n r²).
  z_q, w_q = zn + lr * wn / (n * r**2), wn + lr * zn / (n * r**2)
  # True cosine: d/dz [-mean cos] = -(I - ẑẑᵀ)ŵ / (n ‖z‖).
  def tangent(a, b):
    ah, bh = a / np.linalg.norm(a, axis=-1, keepdims=True), b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (bh - np.sum(ah * bh, -1, keepdims=True) * ah) / np.linalg.norm(a, axis=-1, keepdims=True)
  z_c, w_c = zn + lr * tangent(zn, wn) / n, wn + lr * tangent(wn, zn) / n
  run = jax.jit(cosine_descent.cosine_descent, static_argnames=("lr", "eps", "max_steps",
                                                                "power", "first_step_quirk"))
  steps, cos_q = run(z, w, lr=lr, eps=1e-3, max_steps=1, first_step_quirk=True)
  _, cos_c = run(z, w, lr=lr, eps=1e-3, max_steps=1, first_step_quirk=False)
  assert int(steps) == 1
  np.testing.assert_allclose(float(cos_q), _cos(z_q, w_q), rtol=1e-13)
  np.testing.assert_allclose(float(cos_c), _cos(z_c, w_c), rtol=1e-13)
  # The two first steps really differ (by far more than the 1e-13 agreement above).
  assert abs(_cos(z_q, w_q) - _cos(z_c, w_c)) > 1e-5


def test_convergence_criterion(x64):
  """Stops at the first step with mean cos >= 1 - eps; 0 steps if it starts converged."""
  z, w = _tiny_pairs()
  eps = 1e-2
  steps, cos = cosine_descent.cosine_descent(z, w, lr=1.0, eps=eps, max_steps=10_000)
  k = int(steps)
  assert 1 < k < 10_000 and float(cos) >= 1 - eps
  steps_before, cos_before = cosine_descent.cosine_descent(z, w, lr=1.0, eps=eps, max_steps=k - 1)
  assert int(steps_before) == k - 1 and float(cos_before) < 1 - eps
  steps0, cos0 = cosine_descent.cosine_descent(z, 3.0 * z, lr=1.0, eps=eps, max_steps=100)
  assert int(steps0) == 0 and float(cos0) == pytest.approx(1.0)


def test_steps_grow_as_norm_squared():
  """steps(r) / steps(1) ≈ r² within 2% (docs/paper.md §2.1; lr/n as the reference's 10/500)."""
  norms = (1.0, 2.0, 4.0)
  steps, _ = cosine_descent.norm_convergence_steps(
      key=jax.random.key(0), norms=norms, num_pairs=50, dim=20, lr=1.0, max_steps=5_000)
  steps = np.asarray(steps, np.float64)
  assert steps[0] > 50
  np.testing.assert_allclose(steps / steps[0], np.square(norms), rtol=0.02)


def test_gradscale_power_zero_is_plain_and_exponent_is_two_minus_p():
  """p = 0 is bit-identical to no GradScale. p changes the law to steps ∝ r^(2 - p).

  GradScale p multiplies the gradient (size ∝ 1/‖z‖) by ‖z‖^p; the angle a step turns is
  its size over ‖z‖, so ∝ ‖z‖^(p-2): p = 1 leaves steps ∝ r, p = 2 makes them constant.
  """
  kw = dict(key=jax.random.key(0), norms=(0.5, 1.0, 2.0), num_pairs=50, dim=20, lr=1.0,
            max_steps=2_000)
  plain = cosine_descent.norm_convergence_steps(**kw)
  p0 = cosine_descent.norm_convergence_steps(power=0.0, **kw)
  np.testing.assert_array_equal(np.asarray(plain[0]), np.asarray(p0[0]))
  np.testing.assert_array_equal(np.asarray(plain[1]), np.asarray(p0[1]))
  for power in (1.0, 2.0):
    steps, _ = cosine_descent.norm_convergence_steps(power=power, **kw)
    fit = cosine_descent.fit_power_law(kw["norms"], np.asarray(steps))
    assert fit["exponent"] == pytest.approx(2.0 - power, abs=0.05)
  assert np.ptp(np.asarray(steps)) <= 1  # p = 2: (nearly) independent of r


def test_angle_steps_increase_from_half_pi_toward_pi():
  angles = (math.pi / 2, 2.2, 2.8, 3.05)
  steps, cos = cosine_descent.angle_convergence_steps(
      key=jax.random.key(0), angles=angles, num_pairs=50, dim=20, lr=1.0, max_steps=5_000)
  steps = np.asarray(steps)
  assert np.all(np.diff(steps) > 0) and np.all(np.asarray(cos) >= 1 - 1e-3)
  z, w = cosine_descent.pairs_at_angle(key=jax.random.key(3), num_pairs=5, dim=7, angle=2.5)
  np.testing.assert_allclose(np.arccos(np.clip(np.sum(z * w, -1), -1, 1)), 2.5, atol=1e-3)


def test_weight_decay_bounds_norms_and_zero_decay_only_grows(x64):
  """λ = 0: ‖z⁺‖² = ‖z‖² + γ² sin²θ/‖z‖² exactly; λ > 0: bounded, reaches the fixed point."""
  lr, angle, lam = 1.0, 1.0, 1e-2
  traj = np.asarray(weight_decay.weight_decay_sweep(
      key=jax.random.key(0), weight_decays=(0.0, lam), init_norms=(1.0, 5.0), dim=6,
      angle=angle, lr=lr, num_steps=1_500, dtype=jnp.float64))
  x = traj[0] ** 2
  assert np.all(np.diff(traj[0], axis=0) > 0)
  np.testing.assert_allclose(x[1:], x[:-1] + lr**2 * np.sin(angle) ** 2 / x[:-1], rtol=1e-12)
  star = weight_decay.exact_fixed_point_norm(lr=lr, angle=angle, weight_decay=lam)
  assert traj[1].max() <= 5.0 * (1 + 1e-12)  # the start above the fixed point only falls
  assert traj[1, :, 0].max() <= star * (1 + 1e-9)  # the start below never overshoots it
  np.testing.assert_allclose(traj[1, -1], star, rtol=1e-6)
  heuristic = weight_decay.heuristic_equilibrium_norm(lr=lr, angle=angle, weight_decay=lam)
  assert star / heuristic == pytest.approx((1 - lr * lam / 2) ** -0.25, rel=1e-12)


def test_latent_class_data_is_deterministic_and_as_documented():
  kw = dict(num_samples=300, class_weights=(1, 2, 4, 8), noise_std=0.5, structure_seed=7)
  x, y, latent = synthetic.latent_class_data(seed=3, return_latent=True, **kw)
  x2, y2 = synthetic.latent_class_data(seed=3, **kw)
  x3, _ = synthetic.latent_class_data(seed=4, **kw)
  assert x.shape == (300, 64) and x.dtype == np.float32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  assert not np.allclose(x, x3)
  counts = np.bincount(y, minlength=4)
  assert counts.sum() == 300 and np.all(np.abs(counts - 300 * np.array([1, 2, 4, 8]) / 15) < 1)
  means, matrix = synthetic.latent_structure(structure_seed=7, num_classes=4)
  np.testing.assert_allclose(np.linalg.norm(means, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(x, 10.0 * latent @ matrix, rtol=1e-5, atol=1e-4)
  noise = latent - means[y]
  assert np.std(noise) == pytest.approx(0.5, rel=0.1) and abs(np.mean(noise)) < 0.05


def test_same_class_partners():
  y = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=50), jnp.int32)
  partners = np.asarray(imbalance.same_class_partners(jax.random.key(0), y, num_classes=3))
  np.testing.assert_array_equal(np.asarray(y)[partners], np.asarray(y))
  assert np.all(partners != np.arange(50))
