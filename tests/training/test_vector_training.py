"""Vector data end to end: SimCLR with the MLP backbone and noisy views on the spherical
data (`configs/spherical.py:smoke`)."""

import os

import numpy as np
import pytest

from jnorm import jobs
from jnorm.training import loop

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_simclr_trains_on_spherical_vectors(tmp_path):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "spherical.py"), "smoke")
  config.progress_bar = False
  results = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] >= 2 and np.isfinite(results["final_loss"])
  assert 0.0 <= results["knn_accuracy"] <= 1.0 and results["embedding_norm_mean"] > 0
