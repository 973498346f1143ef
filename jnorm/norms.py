"""Embedding norms as confidence: pure analysis functions (numpy / scipy / sklearn, no I/O).

docs/paper.md §3 (Draganov et al. 2025): smaller embedding norms mark unexpected, less
confident samples; larger norms mark familiar ones. This module measures that:

- `norm_buckets`: norms min-max normalised to [0, 1] (subtract the minimum, divide by
  the range), split into buckets of width 1/num_buckets (20 buckets of 0.05; the last
  includes 1.0); `bucket_mean` gives a per-bucket mean of any per-sample quantity
  (kNN correctness, annotator agreement, label entropy) and the count.
- `norm_bucket_accuracy`: per-bucket kNN accuracy, leave-one-out on the same
  embeddings or with a separate bank (train -> test).
- `bucket_spearman` / `norm_bucket_spearman`: Spearman correlation of a per-bucket
  value with the bucket centre over buckets with at least `min_count` samples.
- `novelty_auroc`: AUROC of the NEGATIVE norm as a novelty score (novel = positive).
- `class_norm_spearman`: class frequency vs mean class norm (long-tailed data).
- `kth_neighbour_distance` / `density_spearman`: distance from ẑ to its k-th nearest
  neighbour vs the norm (docs/paper.md §2.4: dense regions carry large norms).
- `annotator_agreement`, `label_entropy`: per-sample human confidence (CIFAR-10N/100N,
  CIFAR-10H) from vote counts [N, C].
"""

from typing import Optional

import numpy as np

from jnorm import errors
from jnorm import probes
from jnorm import stats


def embedding_norms(embeddings) -> np.ndarray:
  """Euclidean norms ||z|| of embeddings [N, D] -> [N] float64."""
  return np.linalg.norm(np.asarray(embeddings, np.float64), axis=-1)


def normalized_std(embeddings) -> float:
  """Collapse monitor: the std over samples of the L2-normalized embeddings, averaged
  over dimensions (as SimSiam's paper uses it). 0 when every embedding points the same
  way (collapse); about 1/sqrt(d) for embeddings spread uniformly on the sphere in d
  dimensions. embeddings: [N, d] with N >= 2."""
  x = np.asarray(embeddings, np.float64)
  unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return float(unit.std(axis=0).mean())


def normalize_norms(norms) -> np.ndarray:
  """Min-max normalisation (norm - min) / (max - min) -> [N] in [0, 1].

  As the paper: subtract the minimum, divide by the (shifted) maximum. If every norm
  is equal the result is all zeros (one bucket).
  """
  norms = np.asarray(norms, np.float64)
  low, high = norms.min(), norms.max()
  if high <= low:
    return np.zeros_like(norms)
  return (norms - low) / (high - low)


def norm_buckets(norms, *, num_buckets: int = 20) -> np.ndarray:
  """Bucket index [N] int in [0, num_buckets) of each min-max normalised norm.

  Bucket b holds normalised norms in [b / num_buckets, (b + 1) / num_buckets); the
  last bucket also holds 1.0 (the largest norm). Computed as floor(n * num_buckets).
  """
  scaled = normalize_norms(norms) * num_buckets
  return np.clip(np.floor(scaled).astype(np.int64), 0, num_buckets - 1)


def quantile_buckets(norms, *, num_buckets: int = 10) -> np.ndarray:
  """Bucket index [N] int in [0, num_buckets) of equal-count buckets by norm rank.

  Bucket 0 holds the smallest norms; sizes differ by at most one (ties are split by
  position). Unlike `norm_buckets`, no bucket is near-empty, so no minimum count is
  needed to rank them.
  """
  norms = np.asarray(norms, np.float64)
  ranks = np.argsort(np.argsort(norms, kind="stable"), kind="stable")
  return (ranks * num_buckets // max(len(norms), 1)).astype(np.int64)


def bucket_centres(num_buckets: int = 20) -> np.ndarray:
  """Centres [num_buckets] of the normalised-norm buckets: (b + 0.5) / num_buckets."""
  return (np.arange(num_buckets) + 0.5) / num_buckets


def bucket_mean(buckets, values, *, num_buckets: int = 20):
  """Per-bucket mean of a per-sample quantity.

  Args:
    buckets: [N] bucket indices from `norm_buckets`.
    values: [N] per-sample values (e.g. 1.0 for a correct kNN prediction).
    num_buckets: number of buckets B.

  Returns:
    (means [B] float64 with NaN for empty buckets, counts [B] int64).
  """
  buckets = np.asarray(buckets, np.int64)
  values = np.asarray(values, np.float64)
  counts = np.bincount(buckets, minlength=num_buckets)
  sums = np.bincount(buckets, weights=values, minlength=num_buckets)
  with np.errstate(invalid="ignore", divide="ignore"):
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  return means, counts


def bucket_spearman(values, counts, *, min_count: int = 1) -> float:
  """Spearman rho of per-bucket values with the bucket centre (= bucket order).

  Only buckets with at least `min_count` samples (and a finite value) count. NaN if
  fewer than 3 buckets remain or the values are constant (rho undefined).
  """
  values = np.asarray(values, np.float64)
  keep = (np.asarray(counts) >= max(min_count, 1)) & np.isfinite(values)
  if keep.sum() < 3 or np.ptp(values[keep]) == 0:
    return float("nan")
  centres = bucket_centres(len(values))[keep]
  return stats.spearman(centres, values[keep])


def knn_correct(bank_features, bank_labels, query_features, query_labels, *,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                leave_one_out: bool = False) -> np.ndarray:
  """[Q] bool: whether weighted kNN (`jnorm.probes.knn_predict`) is right per query."""
  preds = probes.knn_predict(bank_features, bank_labels, query_features,
                               num_classes=num_classes, k=k, temperature=temperature,
                               leave_one_out=leave_one_out)
  return preds == np.asarray(query_labels)


def norm_bucket_accuracy(norms, correct, *, num_buckets: int = 20,
                         min_count: int = 1) -> dict:
  """Per-bucket accuracy of per-sample correctness, and its Spearman with the norm.

  Args:
    norms: [N] embedding norms (raw; normalised here).
    correct: [N] bool, e.g. from `knn_correct`.
    num_buckets: number of buckets (20 -> width 0.05 as in the paper).
    min_count: buckets with fewer samples are left out of the Spearman correlation.

  Returns:
    {'bucket_centre': [B], 'accuracy': [B] (NaN if empty), 'count': [B],
     'spearman': float, 'overall_accuracy': float}.
  """
  buckets = norm_buckets(norms, num_buckets=num_buckets)
  accuracy, counts = bucket_mean(buckets, correct, num_buckets=num_buckets)
  return {"bucket_centre": bucket_centres(num_buckets), "accuracy": accuracy,
          "count": counts, "spearman": bucket_spearman(accuracy, counts,
                                                       min_count=min_count),
          "overall_accuracy": float(np.mean(correct))}


def norm_bucket_spearman(norms, correct, *, num_buckets: int = 20,
                         min_count: int = 1) -> float:
  """Spearman rho of per-bucket accuracy with the bucket centre (see above)."""
  return norm_bucket_accuracy(norms, correct, num_buckets=num_buckets,
                              min_count=min_count)["spearman"]


def novelty_auroc(seen_norms, novel_norms) -> float:
  """AUROC of -||z|| for telling novel samples (positives) from seen ones.

  Smaller norms mark unexpected samples (docs/paper.md §3.4), so the novelty score is the
  negative norm: 1.0 = every novel sample has a smaller norm than every seen one,
  0.5 = chance. Equals P(norm_seen > norm_novel) + P(tie) / 2 (Mann-Whitney U).
  """
  seen = np.asarray(seen_norms, np.float64).ravel()
  novel = np.asarray(novel_norms, np.float64).ravel()
  if seen.size == 0 or novel.size == 0:
    raise ValueError("novelty_auroc needs at least one seen and one novel sample")
  targets = np.concatenate([np.zeros(seen.size), np.ones(novel.size)])
  scores = -np.concatenate([seen, novel])
  import sklearn.metrics  # pylint: disable=g-import-not-at-top  # ~1.8 s: imported on use
  return float(sklearn.metrics.roc_auc_score(targets, scores))


def class_mean_norms(norms, labels, *, num_classes: int) -> np.ndarray:
  """Mean norm [C] per class (NaN for a class with no samples)."""
  labels = np.asarray(labels, np.int64)
  counts = np.bincount(labels, minlength=num_classes)
  sums = np.bincount(labels, weights=np.asarray(norms, np.float64),
                     minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def class_norm_spearman(norms, labels, class_counts) -> float:
  """Spearman rho between a class's training frequency and its mean embedding norm.

  Args:
    norms: [N] norms of the samples evaluated (e.g. the balanced test split).
    labels: [N] their labels.
    class_counts: [C] training examples per class (e.g. CIFAR-10-LT's counts).

  Returns:
    rho over the classes present (positive: frequent classes get larger norms, as in
    docs/paper.md §2.3); NaN if fewer than 3 classes or constant inputs.
  """
  class_counts = np.asarray(class_counts, np.float64)
  means = class_mean_norms(norms, labels, num_classes=class_counts.size)
  keep = np.isfinite(means)
  if keep.sum() < 3 or np.ptp(means[keep]) == 0 or np.ptp(class_counts[keep]) == 0:
    return float("nan")
  return stats.spearman(class_counts[keep], means[keep])


def frequency_swap_effect(norms, counts, swapped_norms, swapped_counts, *,
                          relative: bool = False) -> float:
  """A class's norm when frequent minus its norm when rare, in one pair of runs that
  differ only in which class is frequent (the same classes, the counts reversed).

  effect = mean over classes c with counts[c] != swapped_counts[c] of
           (norms[c] - swapped_norms[c]) * sign(counts[c] - swapped_counts[c]):
  positive when classes get larger norms when they are more frequent, with each class's
  own geometry held fixed. `relative`: divide each run's class norms by their mean
  first (removes a change of overall scale between the runs). Classes with a
  non-finite norm in either run are left out.
  """
  a, b = np.asarray(norms, np.float64), np.asarray(swapped_norms, np.float64)
  if relative:
    a, b = a / np.nanmean(a), b / np.nanmean(b)
  sign = np.sign(np.asarray(counts, np.float64) - np.asarray(swapped_counts, np.float64))
  keep = (sign != 0) & np.isfinite(a) & np.isfinite(b)
  if not keep.any():
    return float("nan")
  return float(np.mean(((a - b) * sign)[keep]))


def kth_neighbour_distance(embeddings, *, k: int = 10) -> np.ndarray:
  """Euclidean distance from each normalised embedding ẑ_i to its k-th nearest neighbour.

  Neighbours are the other rows' ẑ_j = z_j / ‖z_j‖ (the point itself is not counted; an
  exact duplicate is, at distance 0). On the unit sphere the distance is
  sqrt(2 - 2 cos), so a small value means a dense region of directions.

  Args:
    embeddings: [N, D] embeddings with non-zero, finite norms; N > k.
    k: which neighbour (the paper's density measure uses k = 10).

  Returns:
    [N] float64 distances.
  """
  z = np.asarray(embeddings, np.float64)
  if z.ndim != 2:
    raise ValueError(f"embeddings must be [N, D], got shape {z.shape}")
  if k < 1 or z.shape[0] <= k:
    raise ValueError(f"need 1 <= k < N, got k={k} and N={z.shape[0]}")
  norms = np.linalg.norm(z, axis=-1, keepdims=True)
  if not np.all(np.isfinite(norms) & (norms > 0)):
    raise ValueError("every embedding needs a finite, non-zero norm")
  zhat = z / norms
  # k + 1 neighbours of each query among all rows: the nearest is the point itself at
  # distance 0, so column k is the k-th nearest other point (ties give equal distances).
  import sklearn.neighbors  # pylint: disable=g-import-not-at-top  # ~1.8 s: imported on use
  dist, _ = sklearn.neighbors.NearestNeighbors(n_neighbors=k + 1).fit(zhat).kneighbors(zhat)
  return dist[:, k]


def density_spearman(embeddings, *, k: int = 10) -> float:
  """Spearman rho between ‖z_i‖ and the k-th neighbour distance of ẑ_i (docs/paper.md §2.4).

  The paper finds it negative on trained embeddings: the distance falls as the norm
  rises, i.e. dense regions of directions carry large norms. NaN if the norms or the
  distances are constant (up to a relative 1e-12, so rounding is not ranked).
  """
  distances = kth_neighbour_distance(embeddings, k=k)
  norms = embedding_norms(embeddings)
  if (np.ptp(norms) <= 1e-12 * np.max(norms)
      or np.ptp(distances) <= 1e-12 * max(np.max(distances), 1e-300)):
    return float("nan")
  return stats.spearman(norms, distances)


def annotator_agreement(votes, reference: Optional[np.ndarray] = None) -> np.ndarray:
  """Fraction of the annotators' votes that equal a reference label, per sample.

  Args:
    votes: [N, C] non-negative vote counts (or a distribution) over C classes, e.g.
      CIFAR-10N's three annotators as counts, CIFAR-100N's single label as one-hot,
      CIFAR-10H's soft label.
    reference: [N] labels to agree with: the clean label (the default in the analysis
      job). None = the majority label argmax(votes) (ties -> the lowest class), which
      gives the size of the largest voting block.

  Returns:
    [N] float64 in [0, 1]: votes[i, reference[i]] / sum(votes[i]).
  """
  votes = np.asarray(votes, np.float64)
  if reference is None:
    reference = np.argmax(votes, axis=-1)
  totals = votes.sum(axis=-1)
  if np.any(totals <= 0):
    raise ValueError("every sample needs at least one vote")
  picked = np.take_along_axis(votes, np.asarray(reference, np.int64)[:, None], -1)[:, 0]
  return picked / totals


def label_entropy(votes) -> np.ndarray:
  """Shannon entropy (nats) of each sample's label distribution votes / sum(votes).

  votes: [N, C] non-negative (CIFAR-10H's soft_label, or counts). 0 = unanimous,
  log C = uniform. Rows are renormalised, so counts and probabilities both work.
  """
  votes = np.asarray(votes, np.float64)
  import scipy.stats  # pylint: disable=g-import-not-at-top  # ~1.3 s: imported on use
  return scipy.stats.entropy(votes, axis=-1)


def norm_trajectories(records: list, keys=()) -> dict:
  """name -> (steps [T], values [T]) for the norm metrics found in `records`.

  A metric's name is '<kind>/<key>' when records carry a 'kind' ('train' metrics of
  the augmented views in train mode, 'eval' norms of the test split), else '<key>'.
  With `keys` empty, every numeric key containing 'norm' (but not grad / param
  norms; only the '*_mean' ones if there are any) is taken. `keys` may name either
  form; a requested key that no record has raises a ConfigError listing those there.
  """
  def name(record, key):
    return f"{record['kind']}/{key}" if record.get("kind") else key

  series = {}
  for r in records:
    for k, v in r.items():
      if k not in ("step", "kind") and "step" in r and isinstance(v, (int, float)):
        series.setdefault(name(r, k), []).append((r["step"], v))
  available = sorted(series)
  if keys:
    missing = [k for k in keys if not any(n == k or n.endswith("/" + k) for n in series)]
    if missing:
      raise errors.ConfigError(
          f"config.trajectory_keys {missing!r} are not in metrics.jsonl; it has "
          f"{available!r}")
    chosen = [n for n in available if any(n == k or n.endswith("/" + k) for k in keys)]
  else:
    chosen = [n for n in available if "norm" in n and "grad" not in n and "param" not in n]
    if any(n.endswith("_mean") for n in chosen):  # mean/min/max per head: plot the means
      chosen = [n for n in chosen if n.endswith("_mean")]
  out = {}
  for n in chosen:
    steps, values = zip(*series[n])
    out[n] = (np.asarray(steps), np.asarray(values, np.float64))
  return out
