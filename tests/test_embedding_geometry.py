"""jnorm.embedding_geometry: the norm decomposition's identities and the kernel norms."""

import numpy as np
import pytest

from jnorm import embedding_geometry


def test_decomposition_identity_and_participation_ratio():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(4000, 16)) + 3.0  # a shared mean plus isotropic spread
  d = embedding_geometry.norm_decomposition(z)
  centre = z.mean(0)
  np.testing.assert_allclose(d["centroid_norm"], np.linalg.norm(centre), rtol=1e-12)
  # E||z||^2 = ||m||^2 + E||z - m||^2, exactly
  np.testing.assert_allclose(np.mean(np.sum(z ** 2, 1)),
                             d["centroid_norm"] ** 2 + d["centred_rms"] ** 2, rtol=1e-10)
  assert d["mean_norm"] == pytest.approx(np.linalg.norm(z, axis=1).mean(), rel=1e-12)
  assert 14.5 < d["participation_ratio"] <= 16.0  # isotropic: about d
  line = np.outer(rng.normal(size=500), rng.normal(size=16))  # rank one
  assert embedding_geometry.norm_decomposition(line)["participation_ratio"] == pytest.approx(1.0)
  assert embedding_geometry.norm_decomposition(np.ones((5, 3)))["participation_ratio"] == 0.0


def test_kernel_norms_walk_nested_params():
  params = {"projector": {"dense1": {"kernel": np.full((2, 2), 2.0), "bias": np.ones(2)},
                          "bn": {"scale": np.ones(2)}},
            "stem_conv": {"kernel": np.ones((3, 3, 1, 1))}}
  assert embedding_geometry.kernel_norms(params) == {"projector/dense1": 4.0, "stem_conv": 3.0}
