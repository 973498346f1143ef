"""The density statistic (jnorm.norms.kth_neighbour_distance / density_spearman, docs/paper.md §2.4)."""

import numpy as np
import pytest
import scipy.stats

from jnorm import norms


def _brute_force_kth(z, k):
  """k-th smallest ‖ẑ_i - ẑ_j‖ over j != i, by the full distance matrix."""
  zhat = z / np.linalg.norm(z, axis=1, keepdims=True)
  d = np.linalg.norm(zhat[:, None, :] - zhat[None, :, :], axis=-1)
  np.fill_diagonal(d, np.inf)
  return np.sort(d, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_kth_neighbour_distance_matches_brute_force(k):
  z = np.random.default_rng(0).normal(size=(60, 5))
  np.testing.assert_allclose(norms.kth_neighbour_distance(z, k=k), _brute_force_kth(z, k),
                             rtol=1e-10, atol=1e-12)


def test_kth_neighbour_distance_sees_only_directions():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(40, 4))
  scaled = z * rng.uniform(0.01, 100.0, size=(40, 1))
  np.testing.assert_allclose(norms.kth_neighbour_distance(scaled, k=4),
                             norms.kth_neighbour_distance(z, k=4), rtol=1e-10)


def test_kth_neighbour_distance_on_a_circle():
  # Unit directions at angles 0, 0.1, 0.3, 0.6, 1.0 (rad): chord length 2 sin(Δθ / 2).
  angles = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
  z = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.arange(1, 6)[:, None]
  chord = lambda d: 2 * np.sin(d / 2)
  want_k1 = chord(np.array([0.1, 0.1, 0.2, 0.3, 0.4]))
  want_k2 = chord(np.array([0.3, 0.2, 0.3, 0.4, 0.7]))
  np.testing.assert_allclose(norms.kth_neighbour_distance(z, k=1), want_k1, rtol=1e-12)
  np.testing.assert_allclose(norms.kth_neighbour_distance(z, k=2), want_k2, rtol=1e-12)


def _clustered(norm_of_spread):
  """Directions c + s·noise with spreads s from 0.01 to 1; norm ‖z_i‖ = norm_of_spread(s_i)."""
  rng = np.random.default_rng(2)
  n, d = 300, 8
  spread = np.logspace(-2, 0, n)
  centre = np.eye(d)[0]
  directions = centre + spread[:, None] * rng.normal(size=(n, d))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  return directions * norm_of_spread(spread)[:, None]


def test_density_spearman_sign_on_a_constructed_example():
  # Dense (small-spread) directions with LARGE norms: distance falls as the norm rises.
  dense_large = _clustered(lambda s: 1.0 / s)
  rho = norms.density_spearman(dense_large, k=10)
  assert rho < -0.8, rho
  # The same directions with the norms reversed: the sign flips.
  dense_small = _clustered(lambda s: s)
  assert norms.density_spearman(dense_small, k=10) > 0.8
  # It is exactly Spearman(‖z‖, k-th neighbour distance).
  want = scipy.stats.spearmanr(np.linalg.norm(dense_large, axis=1),
                               _brute_force_kth(dense_large, 10)).statistic
  assert rho == pytest.approx(want, abs=1e-12)


def test_density_spearman_is_nan_for_constant_norms():
  z = np.random.default_rng(3).normal(size=(30, 3))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  assert np.isnan(norms.density_spearman(z, k=5))


@pytest.mark.parametrize("bad, k", [(np.ones((5, 3)), 5), (np.ones((5, 3)), 0),
                                    (np.vstack([np.ones((5, 3)), np.zeros((1, 3))]), 2),
                                    (np.ones(5), 1)])
def test_kth_neighbour_distance_rejects_bad_inputs(bad, k):
  with pytest.raises(ValueError):
    norms.kth_neighbour_distance(bad, k=k)
