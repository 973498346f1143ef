"""Vector data end to end: the MLP backbone, noisy views, and SimCLR on the spherical data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm import augment, errors, models
from jnorm import jobs
from jnorm.training import loop as train

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_noisy_views_are_keyed_scale_free_and_per_example():
  x = jax.random.normal(jax.random.key(0), (6, 16)) * 7.0
  key = jax.random.key(1)
  v1, v2 = augment.noisy_views(key, x, relative_std=0.5)
  w1, w2 = augment.noisy_views(key, x, relative_std=0.5)
  np.testing.assert_array_equal(v1, w1)
  np.testing.assert_array_equal(v2, w2)
  assert v1.shape == x.shape and not np.allclose(v1, v2)
  # Scale-free: scaling x scales the views by the same factor.
  s1, _ = augment.noisy_views(key, 3.0 * x, relative_std=0.5)
  np.testing.assert_allclose(s1, 3.0 * v1, rtol=1e-5, atol=1e-5)
  # Noise size: std of (view - x) / rms(x) is about relative_std.
  big = jax.random.normal(jax.random.key(2), (512, 64))
  b1, _ = augment.noisy_views(key, big, relative_std=0.5)
  rms = jnp.linalg.norm(big, axis=-1, keepdims=True) / 8.0
  assert abs(float(jnp.std((b1 - big) / rms)) - 0.5) < 0.02
  # Example i's views depend on its id, not its position in the batch.
  p1, _ = augment.noisy_views(key, x[::-1], example_ids=jnp.arange(6)[::-1])
  np.testing.assert_allclose(p1[::-1], v1, rtol=1e-6)


def test_mlp_backbone_shapes_and_errors():
  cfg = models.default_model_config()
  cfg.backbone, cfg.mlp_features, cfg.projector_dims = "mlp", (32, 16), (16, 8)
  net = models.build_ssl_net(cfg)
  variables = net.init(jax.random.key(0), jnp.zeros((4, 64)), train=True)
  out = net.apply(variables, jnp.ones((4, 64)), train=False)
  assert out["backbone"].shape == (4, 16) and out["projector"].shape == (4, 8)
  with pytest.raises(ValueError, match="vectors"):
    net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), train=True)
  cfg.mlp_features = (32, 0)
  with pytest.raises(errors.ConfigError, match="mlp_features"):
    models.build_ssl_net(cfg)


def test_simclr_trains_on_spherical_vectors(tmp_path):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "spherical.py"), "smoke")
  config.progress_bar = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] >= 2 and np.isfinite(results["final_loss"])
  assert 0.0 <= results["knn_accuracy"] <= 1.0 and results["embedding_norm_mean"] > 0
