"""jnorm.norms: norm buckets, Spearman, novelty AUROC, class norms, human confidence,
norm trajectories."""

import numpy as np
import pytest
import scipy.stats

from jnorm import errors
from jnorm import norms
from jnorm.data import human_labels

# Hand-made example: min 2, range 10 -> normalised [0, .1, .22, 1, .5, .99, .049, .05]
# -> buckets (width 0.05) [0, 2, 4, 19, 10, 19, 0, 1].
HAND_NORMS = np.array([2.0, 3.0, 4.2, 12.0, 7.0, 11.9, 2.49, 2.5])
HAND_BUCKETS = np.array([0, 2, 4, 19, 10, 19, 0, 1])
HAND_CORRECT = np.array([1, 0, 1, 1, 0, 0, 0, 1], bool)


def test_norm_buckets_by_hand():
  np.testing.assert_allclose(norms.normalize_norms(HAND_NORMS),
                             [0, .1, .22, 1, .5, .99, .049, .05], atol=1e-12)
  np.testing.assert_array_equal(norms.norm_buckets(HAND_NORMS), HAND_BUCKETS)
  stats = norms.norm_bucket_accuracy(HAND_NORMS, HAND_CORRECT)
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
  assert np.isnan(norms.norm_bucket_spearman(HAND_NORMS, HAND_CORRECT, min_count=2))
  # Equal norms: a single bucket, no correlation.
  assert np.all(norms.norm_buckets(np.ones(5)) == 0)


def test_bucket_spearman_sign_on_monotone_cases():
  rng = np.random.default_rng(0)
  z_norms = rng.uniform(1.0, 5.0, size=4000)
  # P(correct) rises with the norm: rho must be clearly positive.
  correct = rng.uniform(size=z_norms.size) < (z_norms - 1.0) / 4.0
  assert norms.norm_bucket_spearman(z_norms, correct, min_count=10) > 0.8
  assert norms.norm_bucket_spearman(z_norms, ~correct, min_count=10) < -0.8
  values = np.arange(10.0)
  assert norms.bucket_spearman(values, np.ones(10)) == pytest.approx(1.0)
  assert norms.bucket_spearman(values[::-1], np.ones(10)) == pytest.approx(-1.0)
  assert np.isnan(norms.bucket_spearman(np.ones(10), np.ones(10)))


def _pairwise_auroc(seen, novel):
  """P(seen norm > novel norm) + P(tie) / 2, by counting every pair."""
  diff = seen[:, None] - novel[None, :]
  return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size


def test_novelty_auroc_matches_pairwise_counting():
  rng = np.random.default_rng(1)
  seen = np.round(rng.normal(3.0, 1.0, size=300), 1)  # rounding makes ties
  novel = np.round(rng.normal(2.5, 1.0, size=200), 1)
  auroc = norms.novelty_auroc(seen, novel)
  assert auroc == pytest.approx(_pairwise_auroc(seen, novel), abs=1e-12)
  assert auroc > 0.5  # novel samples have smaller norms here
  u = scipy.stats.mannwhitneyu(seen, novel).statistic
  assert auroc == pytest.approx(u / (seen.size * novel.size), abs=1e-12)
  assert norms.novelty_auroc([2.0, 3.0], [0.5, 1.0]) == 1.0
  assert norms.novelty_auroc([0.5, 1.0], [2.0, 3.0]) == 0.0
  with pytest.raises(ValueError):
    norms.novelty_auroc([], [1.0])


def test_class_norm_spearman_monotone():
  rng = np.random.default_rng(2)
  counts = np.array([5000, 3333, 2222, 1481, 987])
  labels = rng.integers(0, 5, size=500)
  z_norms = 10.0 - labels + 0.1 * rng.normal(size=500)  # frequent classes: larger norms
  np.testing.assert_allclose(norms.class_mean_norms(z_norms, labels, num_classes=5),
                             [z_norms[labels == c].mean() for c in range(5)])
  assert norms.class_norm_spearman(z_norms, labels, counts) == pytest.approx(1.0)
  assert norms.class_norm_spearman(-z_norms, labels, counts) == pytest.approx(-1.0)


def test_agreement_and_entropy_by_hand():
  votes = human_labels.votes_from_labels(np.array([[1, 1, 2], [0, -1, -1], [3, 2, 1]]),
                                     num_classes=4)
  np.testing.assert_array_equal(votes, [[0, 2, 1, 0], [1, 0, 0, 0], [0, 1, 1, 1]])
  np.testing.assert_allclose(norms.annotator_agreement(votes, np.array([1, 0, 0])),
                             [2 / 3, 1.0, 0.0])
  np.testing.assert_allclose(norms.annotator_agreement(votes), [2 / 3, 1.0, 1 / 3])
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(norms.label_entropy(votes),
                             [-(p * np.log(p)).sum(), 0.0, np.log(3.0)], atol=1e-12)
  with pytest.raises(ValueError):
    norms.annotator_agreement(np.zeros([1, 3]))


def test_norm_trajectories_picks_norm_means_and_kinds():
  records = [{"step": 1, "loss": 3.0, "norm/projector_mean": 1.0, "grad_norm": 5.0},
             {"step": 2, "loss": 2.5, "norm/projector_mean": 1.5, "norm/backbone_mean": 4.0}]
  traj = norms.norm_trajectories(records)
  assert sorted(traj) == ["norm/backbone_mean", "norm/projector_mean"]
  np.testing.assert_array_equal(traj["norm/projector_mean"][0], [1, 2])
  np.testing.assert_array_equal(traj["norm/projector_mean"][1], [1.0, 1.5])
  assert list(norms.norm_trajectories(records, ("loss",))) == ["loss"]
  kinds = [{"step": 1, "kind": "train", "norm_z_mean": 2.0, "norm_z_max": 3.0},
           {"step": 1, "kind": "eval", "norm_z_mean": 1.0, "knn_accuracy": 0.5},
           {"step": 2, "kind": "train", "norm_z_mean": 2.5, "norm_z_max": "nan"}]
  traj = norms.norm_trajectories(kinds)
  assert sorted(traj) == ["eval/norm_z_mean", "train/norm_z_mean"]
  np.testing.assert_array_equal(traj["train/norm_z_mean"][1], [2.0, 2.5])
  assert list(norms.norm_trajectories(kinds, ("train/norm_z_max",))) == [
      "train/norm_z_max"]
  with pytest.raises(errors.ConfigError, match="norm/backbone_mean"):
    norms.norm_trajectories(records, ("norm/predictor_mean",))


def test_normalized_std_zero_for_collapse_and_one_over_sqrt_d_when_spread():
  rng = np.random.default_rng(0)
  direction = rng.normal(size=64)
  collapsed = rng.uniform(0.5, 3.0, size=(500, 1)) * direction  # one direction, many norms
  assert norms.normalized_std(collapsed) < 1e-12
  spread = rng.normal(size=(20000, 64)) * rng.uniform(0.5, 3.0, size=(20000, 1))
  assert abs(norms.normalized_std(spread) * np.sqrt(64) - 1.0) < 0.02


def test_frequency_swap_effect_by_hand():
  counts, swapped = [4, 2, 1], [1, 2, 4]  # class 1 keeps its count: left out
  mine, theirs = [3.0, 9.0, 1.0], [2.0, 5.0, 2.5]
  # class 0 frequent: 3 - 2 = +1; class 2 rare: -(1 - 2.5) = +1.5 -> mean 1.25
  assert norms.frequency_swap_effect(mine, counts, theirs, swapped) == 1.25
  rel = norms.frequency_swap_effect(mine, counts, theirs, swapped, relative=True)
  a, b = np.array(mine) / np.mean(mine), np.array(theirs) / np.mean(theirs)
  assert rel == pytest.approx(((a[0] - b[0]) - (a[2] - b[2])) / 2, rel=1e-12)
  # a non-finite class norm is left out; nothing left -> nan
  assert norms.frequency_swap_effect([3.0, 1.0, np.nan], counts, [2.0, 1.0, 2.5],
                                     swapped) == 1.0
  assert np.isnan(norms.frequency_swap_effect([1.0], [2], [1.0], [2]))


def test_quantile_buckets_have_equal_counts_in_norm_order():
  rng = np.random.default_rng(0)
  values = rng.lognormal(size=103)
  buckets = norms.quantile_buckets(values, num_buckets=10)
  counts = np.bincount(buckets, minlength=10)
  assert counts.max() - counts.min() <= 1 and counts.sum() == 103
  order = np.argsort(values)
  assert np.all(np.diff(buckets[order]) >= 0)  # larger norms never in a lower bucket
  # A heavy tail that leaves min-max buckets near-empty still fills every quantile bucket.
  tailed = np.concatenate([np.ones(99), [1000.0]])
  assert np.bincount(norms.quantile_buckets(tailed, num_buckets=5)).tolist() == [20] * 5
