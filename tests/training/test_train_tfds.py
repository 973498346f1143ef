"""The TFDS path end to end: SimCLR's CIFAR-10 smoke config trains on mock CIFAR-10.

`tfds.testing.mock_data` replaces the prepared dataset with random examples of the right
structure, so this exercises loading, the uint8 host pipeline, the CIFAR augmentations
and the train loop exactly as a real CIFAR run would, without a download.
"""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jnorm import jobs
from jnorm.training import loop

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_simclr_cifar10_smoke_trains_on_mock_tfds(tmp_path):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "simclr.py"), "cifar10,smoke")
  config.progress_bar = False
  assert config.data.name == "cifar10" and config.augment == "cifar_reference"
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=48):
    results = loop.train_and_evaluate(config, workdir)
  assert results["steps"] >= 1
  assert 0.0 <= results["knn_accuracy"] <= 1.0
  assert np.isfinite(results["final_loss"]) and results["embedding_norm_mean"] > 0
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["steps"] == results["steps"]
