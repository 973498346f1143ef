"""jnorm.analysis, jnorm.data.human_labels, the plots and the analysis job."""

import json
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds

from jnorm import norms as analysis
from jnorm.jobs import analysis as analysis_job
from jnorm.plots import analysis as analysis_plots
from jnorm import errors
from jnorm import io
from jnorm.plots import figures
from jnorm.data import human_labels

# Hand-made example: min 2, range 10 -> normalised [0, .1, .22, 1, .5, .99, .049, .05]
# -> buckets (width 0.05) [0, 2, 4, 19, 10, 19, 0, 1].
HAND_NORMS = np.array([2.0, 3.0, 4.2, 12.0, 7.0, 11.9, 2.49, 2.5])
HAND_BUCKETS = np.array([0, 2, 4, 19, 10, 19, 0, 1])
HAND_CORRECT = np.array([1, 0, 1, 1, 0, 0, 0, 1], bool)


def test_norm_buckets_by_hand():
  np.testing.assert_allclose(analysis.normalize_norms(HAND_NORMS),
                             [0, .1, .22, 1, .5, .99, .049, .05], atol=1e-12)
  np.testing.assert_array_equal(analysis.norm_buckets(HAND_NORMS), HAND_BUCKETS)
  stats = analysis.norm_bucket_accuracy(HAND_NORMS, HAND_CORRECT)
  expect = np.full(20, np.nan)
  expect[[0, 1, 2, 4, 10, 19]] = [0.5, 1.0, 0.0, 1.0, 0.0, 0.5]
  np.testing.assert_array_equal(stats["accuracy"], expect)
  count = np.zeros(20, int)
  count[[0, 1, 2, 4, 10, 19]] = [2, 1, 1, 1, 1, 2]
  np.testing.assert_array_equal(stats["count"], count)
  np.testing.assert_allclose(stats["bucket_centre"], 0.025 + 0.05 * np.arange(20))
  assert stats["overall_accuracy"] == pytest.approx(4 / 8)
  # Spearman over the 6 non-empty buckets, computed independently from the ranks.
  centres, acc = 0.025 + 0.05 * np.array([0, 1, 2, 4, 10, 19]), [.5, 1, 0, 1, 0, .5]
  assert stats["spearman"] == pytest.approx(
      np.corrcoef(scipy.stats.rankdata(centres), scipy.stats.rankdata(acc))[0, 1])
  # min_count=2 keeps only buckets 0 and 19: too few for a correlation.
  assert np.isnan(analysis.norm_bucket_spearman(HAND_NORMS, HAND_CORRECT, min_count=2))
  # Equal norms: a single bucket, no correlation.
  assert np.all(analysis.norm_buckets(np.ones(5)) == 0)


def test_bucket_spearman_sign_on_monotone_cases():
  rng = np.random.default_rng(0)
  norms = rng.uniform(1.0, 5.0, size=4000)
  # P(correct) rises with the norm: rho must be clearly positive.
  correct = rng.uniform(size=norms.size) < (norms - 1.0) / 4.0
  assert analysis.norm_bucket_spearman(norms, correct, min_count=10) > 0.8
  assert analysis.norm_bucket_spearman(norms, ~correct, min_count=10) < -0.8
  values = np.arange(10.0)
  assert analysis.bucket_spearman(values, np.ones(10)) == pytest.approx(1.0)
  assert analysis.bucket_spearman(values[::-1], np.ones(10)) == pytest.approx(-1.0)
  assert np.isnan(analysis.bucket_spearman(np.ones(10), np.ones(10)))


def _pairwise_auroc(seen, novel):
  """P(seen norm > novel norm) + P(tie) / 2, by counting every pair."""
  diff = seen[:, None] - novel[None, :]
  return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size


def test_novelty_auroc_matches_pairwise_counting():
  rng = np.random.default_rng(1)
  seen = np.round(rng.normal(3.0, 1.0, size=300), 1)  # rounding makes ties
  novel = np.round(rng.normal(2.5, 1.0, size=200), 1)
  auroc = analysis.novelty_auroc(seen, novel)
  assert auroc == pytest.approx(_pairwise_auroc(seen, novel), abs=1e-12)
  assert auroc > 0.5  # novel samples have smaller norms here
  u = scipy.stats.mannwhitneyu(seen, novel).statistic
  assert auroc == pytest.approx(u / (seen.size * novel.size), abs=1e-12)
  assert analysis.novelty_auroc([2.0, 3.0], [0.5, 1.0]) == 1.0
  assert analysis.novelty_auroc([0.5, 1.0], [2.0, 3.0]) == 0.0
  with pytest.raises(ValueError):
    analysis.novelty_auroc([], [1.0])


def test_class_norm_spearman_monotone():
  rng = np.random.default_rng(2)
  counts = np.array([5000, 3333, 2222, 1481, 987])
  labels = rng.integers(0, 5, size=500)
  norms = 10.0 - labels + 0.1 * rng.normal(size=500)  # frequent classes: larger norms
  np.testing.assert_allclose(analysis.class_mean_norms(norms, labels, num_classes=5),
                             [norms[labels == c].mean() for c in range(5)])
  assert analysis.class_norm_spearman(norms, labels, counts) == pytest.approx(1.0)
  assert analysis.class_norm_spearman(-norms, labels, counts) == pytest.approx(-1.0)


def test_agreement_and_entropy_by_hand():
  votes = human_labels.votes_from_labels(np.array([[1, 1, 2], [0, -1, -1], [3, 2, 1]]),
                                     num_classes=4)
  np.testing.assert_array_equal(votes, [[0, 2, 1, 0], [1, 0, 0, 0], [0, 1, 1, 1]])
  np.testing.assert_allclose(analysis.annotator_agreement(votes, np.array([1, 0, 0])),
                             [2 / 3, 1.0, 0.0])
  np.testing.assert_allclose(analysis.annotator_agreement(votes), [2 / 3, 1.0, 1 / 3])
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(analysis.label_entropy(votes),
                             [-(p * np.log(p)).sum(), 0.0, np.log(3.0)], atol=1e-12)
  with pytest.raises(ValueError):
    analysis.annotator_agreement(np.zeros([1, 3]))


@pytest.mark.parametrize("name", ["cifar10_n", "cifar100_n", "cifar10_h"])
def test_human_label_loaders_under_mock_data(name):
  split = human_labels.TFDS_SOURCES[name][0]
  with tfds.testing.mock_data(num_examples=7):
    labels = human_labels.load_tfds_human_labels(name)
    records = [tfds.data_source(name, split=split)[i] for i in range(7)]
  assert len(labels) == 7 and labels.images.shape == (7, 32, 32, 3)
  np.testing.assert_array_equal(labels.clean_label, [r["label"] for r in records])
  np.testing.assert_array_equal(labels.images[3], records[3]["image"])
  for row, r in zip(labels.votes, records):
    if name == "cifar10_n":
      expect = np.bincount([r[f"random_label{j}"] for j in (1, 2, 3)], minlength=10)
    elif name == "cifar100_n":
      expect = np.eye(100)[r["noise_label"]]
    else:
      expect = r["soft_label"]
    np.testing.assert_allclose(row, expect)


def test_human_labels_missing_and_files(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    human_labels.load_tfds_human_labels("cifar10_n", data_dir=str(tmp_path))
  assert "\n" not in str(info.value) and "download_and_prepare" in str(info.value)
  with pytest.raises(errors.DatasetNotFoundError):
    human_labels.load_label_file(str(tmp_path / "none.npy"), num_classes=10)
  np.save(tmp_path / "ann.npy", np.array([[1, 1, 2], [0, -1, 0]]))
  np.testing.assert_array_equal(
      human_labels.load_label_file(str(tmp_path / "ann.npy"), num_classes=3).votes,
      [[0, 2, 1], [2, 0, 0]])
  soft = np.array([[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
  np.save(tmp_path / "soft.npy", soft)
  np.testing.assert_array_equal(
      human_labels.load_label_file(str(tmp_path / "soft.npy"), num_classes=3).votes, soft)
  (tmp_path / "ann.csv").write_text("label,a1,a2\n2,2,1\n0,0,\n")
  from_csv = human_labels.load_label_file(str(tmp_path / "ann.csv"), num_classes=3)
  np.testing.assert_array_equal(from_csv.votes, [[0, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(from_csv.clean_label, [2, 0])
  with pytest.raises(errors.ConfigError):
    human_labels.load_label_file(str(tmp_path / "ann.npy"), num_classes=2)  # label 2 >= 2
  with pytest.raises(errors.ConfigError):
    human_labels.load_label_file(str(tmp_path / "soft.npy"), num_classes=4)


def test_norm_trajectories_reader(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [{"step": 1, "loss": 3.0, "norm/projector_mean": 1.0, "grad_norm": 5.0},
           {"step": 2, "loss": 2.5, "norm/projector_mean": 1.5, "norm/backbone_mean": 4.0}]
  path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 3, "lo')
  records = metrics_writer.read_metrics(str(path))
  assert len(records) == 2  # the line cut short is skipped
  traj = analysis.norm_trajectories(records)
  assert sorted(traj) == ["norm/backbone_mean", "norm/projector_mean"]
  np.testing.assert_array_equal(traj["norm/projector_mean"][0], [1, 2])
  np.testing.assert_array_equal(traj["norm/projector_mean"][1], [1.0, 1.5])
  assert list(analysis.norm_trajectories(records, ("loss",))) == ["loss"]
  kinds = [{"step": 1, "kind": "train", "norm_z_mean": 2.0, "norm_z_max": 3.0},
           {"step": 1, "kind": "eval", "norm_z_mean": 1.0, "knn_accuracy": 0.5},
           {"step": 2, "kind": "train", "norm_z_mean": 2.5, "norm_z_max": "nan"}]
  traj = analysis.norm_trajectories(kinds)
  assert sorted(traj) == ["eval/norm_z_mean", "train/norm_z_mean"]
  np.testing.assert_array_equal(traj["train/norm_z_mean"][1], [2.0, 2.5])
  assert list(analysis.norm_trajectories(kinds, ("train/norm_z_max",))) == [
      "train/norm_z_max"]
  with pytest.raises(errors.ConfigError, match="norm/backbone_mean"):
    analysis.norm_trajectories(records, ("norm/predictor_mean",))


def test_plots_write_pngs(tmp_path):
  centres = analysis.bucket_centres(20)
  values = np.where(np.arange(20) % 7 == 0, np.nan, np.linspace(0.5, 1.0, 20))
  figs = {
      "buckets": analysis_plots.plot_norm_buckets(
          {"projector": (centres, values, np.arange(20)), "backbone": (centres, values[::-1],
                                                                       np.arange(20))},
          min_count=2, title="t"),
      "hist": analysis_plots.plot_norm_histograms(
          {"seen": np.random.default_rng(0).normal(5, 1, 100), "novel": np.ones(5),
           "empty": np.zeros(0)}),
      "classes": analysis_plots.plot_class_norms([5000, 3333, 2222], [3.0, 2.5, 2.0]),
      "traj": analysis_plots.plot_trajectories({"n": (np.arange(5), np.arange(1.0, 6.0))},
                                               log_y=True),
  }
  for name, fig in figs.items():
    path = figures.save_figure(fig, str(tmp_path), name)
    assert os.path.getsize(path) > 1000


def _stand_in_load_trained(train_classes):
  """A `jnorm.train.load_trained` stand-in: fixed random ReLU features of the pixels."""
  import ml_collections  # pylint: disable=g-import-not-at-top
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
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jnorm.training import loop as train
  monkeypatch.setattr(train, "load_trained", _stand_in_load_trained(tuple(range(8))))
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(
      {"step": s, "kind": "train", "norm_projector_v1_mean": 1.0 + s,
       "norm_projector_v1_max": 9.0, "grad_norm": 3.0}) for s in range(4)) + "\n")
  import configs.analysis as analysis_config  # pylint: disable=g-import-not-at-top
  config = analysis_config.get_config("smoke")
  config.train_workdir = str(run_dir)
  config.class_frequency = "on"
  config.novelty_other_dataset = "cifar10"
  config.human_labels.name = "cifar10_h"
  workdir = str(tmp_path / "analysis")
  with tfds.testing.mock_data(num_examples=40):
    headline = analysis_job.analysis_job(config, workdir)
  results = io.load_results(workdir)
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
    analysis_job.analysis_job(bad, workdir)


def test_analysis_smoke_end_to_end_with_trainer(tmp_path):
  """`configs/analysis.py:smoke`: trains a few SimCLR steps on digits 0-7, then analyses."""
  import configs.analysis as analysis_config  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "analysis")
  headline = analysis_job.analysis_job(analysis_config.get_config("smoke"), workdir)
  results = io.load_results(workdir)
  assert results["dataset"]["train_classes"] == list(range(8))
  assert results["dataset"]["class_counts"][8:] == [0, 0]
  assert 0.0 <= headline["novelty_auroc"] <= 1.0
  assert 0.0 < headline["knn_accuracy_test"] <= 1.0
  assert results["norm_trajectories"], "metrics.jsonl of the run gave no norm keys"
  for name in ("norm_buckets", "norm_histogram_projector", "norm_trajectories"):
    assert os.path.exists(os.path.join(workdir, f"{name}.png"))
  # A second run reuses the finished training run and reproduces the numbers.
  again = analysis_job.analysis_job(analysis_config.get_config("smoke"), workdir)
  assert again["novelty_auroc"] == headline["novelty_auroc"]
