"""The analysis job (jnorm.jobs.analysis): every section wired with a stand-in model, and
end to end with the real trainer."""

import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jnorm import errors
from jnorm import json_files
from jnorm import jobs
from jnorm.jobs import analysis
from jnorm.training import loop

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _smoke_config():
  """configs/analysis.py:smoke."""
  return jobs.load_config_file(os.path.join(_ROOT, "configs", "analysis.py"), "smoke")


def _stand_in_load_trained(train_classes):
  """A `jnorm.training.loop.load_trained` stand-in: fixed random ReLU features of the pixels."""
  rng = np.random.default_rng(0)
  w_backbone = rng.normal(size=[16 * 16, 32]) / 16.0
  w_projector = rng.normal(size=[32, 8])

  def embed_fn(inputs):
    flat = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    backbone = np.maximum(flat @ w_backbone, 0.0)
    return {"backbone": backbone.astype(np.float32),
            "projector": (backbone @ w_projector).astype(np.float32)}

  config = ml_collections.ConfigDict({"data": {"name": "digits", "image_size": 16,
                                               "train_classes": train_classes}})
  return lambda workdir: (config, embed_fn)


def test_analysis_job_wiring_with_stand_in_model(tmp_path, monkeypatch):
  """Every section of the job on digits, with a stand-in model (no training here)."""
  monkeypatch.setattr(loop, "load_trained", _stand_in_load_trained(tuple(range(8))))
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(
      {"step": s, "kind": "train", "norm_projector_v1_mean": 1.0 + s,
       "norm_projector_v1_max": 9.0, "grad_norm": 3.0}) for s in range(4)) + "\n")
  config = _smoke_config()
  config.train_workdir = str(run_dir)
  config.class_frequency = "on"
  config.novelty_other_dataset = "cifar10"
  config.human_labels.name = "cifar10_h"
  workdir = str(tmp_path / "analysis")
  with tfds.testing.mock_data(num_examples=40):
    headline = analysis.analysis_job(config, workdir)
  results = json_files.load_results(workdir)
  for key in ("norm_bucket_spearman", "novelty_auroc", "novelty_auroc_other_dataset",
              "class_norm_spearman", "human_agreement_spearman", "knn_accuracy_test"):
    assert key in headline and headline[key] == pytest.approx(results[key], nan_ok=True)
  assert 0.0 <= results["novelty_auroc"] <= 1.0
  head = results["norm_buckets"]["projector"]
  # The test split's 8s and 9s are novel: they are not in the bucket counts.
  assert sum(head["train_to_test"]["count"]) == sum(results["dataset"]["test_class_counts"][:8])
  assert sum(head["loo_train"]["count"]) == results["dataset"]["num_train"]
  novelty = results["novelty"]["projector"]
  assert set(novelty["mean_norm"]) >= {"train", "test (held-out classes)", "other: cifar10"}
  assert results["class_norms"]["class_counts"][8:] == [0.0, 0.0]
  assert results["human_confidence"]["num_samples"] == 40
  assert list(results["norm_trajectories"]) == ["train/norm_projector_v1_mean"]
  for name in ("norm_buckets", "norm_histogram_projector", "norm_histogram_backbone",
               "class_norms", "human_agreement", "human_entropy", "norm_trajectories"):
    assert os.path.exists(os.path.join(workdir, f"{name}.png")), name
  assert 0.0 < head["knn_accuracy_test"] <= 1.0
  bad = ml_collections.ConfigDict(config.to_dict())
  bad.primary_head = "predictor"
  with pytest.raises(errors.ConfigError, match="primary_head"):
    analysis.analysis_job(bad, workdir)


@pytest.mark.slow
def test_analysis_smoke_end_to_end_with_trainer(tmp_path):
  """`configs/analysis.py:smoke`: trains a few SimCLR steps on digits 0-7, then analyses."""
  workdir = str(tmp_path / "analysis")
  headline = analysis.analysis_job(_smoke_config(), workdir)
  results = json_files.load_results(workdir)
  assert results["dataset"]["train_classes"] == list(range(8))
  assert results["dataset"]["class_counts"][8:] == [0, 0]
  assert 0.0 <= headline["novelty_auroc"] <= 1.0
  assert 0.0 < headline["knn_accuracy_test"] <= 1.0
  assert results["norm_trajectories"], "metrics.jsonl of the run gave no norm keys"
  for name in ("norm_buckets", "norm_histogram_projector", "norm_trajectories"):
    assert os.path.exists(os.path.join(workdir, f"{name}.png"))
  # A second run reuses the finished training run and reproduces the numbers.
  again = analysis.analysis_job(_smoke_config(), workdir)
  assert again["novelty_auroc"] == headline["novelty_auroc"]
