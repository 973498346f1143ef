"""Statistics of repeated training runs: t intervals, paired differences, power.

Training claims in jnorm are compared across arms (variants) run with the same seeds:
the same seed gives the same initialization (before any cut), data order and
augmentations in every arm, so differences are taken per seed (paired) and their
interval is a paired t interval. `min_detectable_difference` is the smallest true
paired difference that a two-sided paired t-test at level `alpha` detects with
probability `power`, given the observed spread of the differences and n: the number a
reader needs to tell "no effect" from "an effect this design could not see".
"""

import math
from typing import Optional, Sequence

import numpy as np

# scipy.stats is imported where it is used: it takes ~1.3 s to import, which every
# `python -m jnorm.main` would otherwise pay before its first step.


def _student_t():
  """scipy.stats.t (scipy.stats imported on first use)."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  return scipy.stats.t


def spearman(x: Sequence, y: Sequence) -> float:
  """Spearman's rank correlation of `x` and `y` (NaN where it is undefined)."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  return float(scipy.stats.spearmanr(x, y).statistic)


def finite(values: Sequence) -> np.ndarray:
  """The finite entries of `values` (None, NaN and inf dropped) as float64."""
  vals = np.asarray([np.nan if v is None else v for v in values], np.float64)
  return vals[np.isfinite(vals)]


def mean_interval(values: Sequence, *, confidence: float = 0.95,
                  bounds: Optional[tuple] = None) -> dict:
  """{'mean', 'lo', 'hi', 'sd', 'n'}: the mean of the finite values and its t interval.

  sd is the sample standard deviation (ddof 1). With one value the interval and sd are
  None; with none, everything but n is None. `bounds` (lo, hi) clips the interval to
  the range the quantity can take (e.g. (-1, 1) for a correlation).
  """
  vals = finite(values)
  n = int(vals.size)
  if n == 0:
    return {"mean": None, "lo": None, "hi": None, "sd": None, "n": 0}
  mean = float(vals.mean())
  if n == 1:
    return {"mean": mean, "lo": None, "hi": None, "sd": None, "n": 1}
  sd = float(vals.std(ddof=1))
  half = float(_student_t().ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
  lo, hi = mean - half, mean + half
  if bounds is not None:
    lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
  return {"mean": mean, "lo": lo, "hi": hi, "sd": sd, "n": n}


def min_detectable_difference(sd: Optional[float], n: int, *, alpha: float = 0.05,
                              power: float = 0.8) -> Optional[float]:
  """Smallest true mean difference a paired t-test detects (two-sided `alpha`, `power`).

  Uses the standard approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n).
  None when it cannot be computed (n < 2 or no sd).
  """
  if sd is None or n < 2:
    return None
  df = n - 1
  return float((_student_t().ppf(1 - alpha / 2, df) + _student_t().ppf(power, df))
               * sd / math.sqrt(n))


def seeds_needed(effect: float, sd: float, *, alpha: float = 0.05, power: float = 0.8,
                 max_n: int = 10_000) -> Optional[int]:
  """The fewest paired seeds (>= 2) whose detectable difference is <= |effect|."""
  if sd <= 0:
    return 2
  for n in range(2, max_n + 1):
    if min_detectable_difference(sd, n, alpha=alpha, power=power) <= abs(effect):
      return n
  return None


def paired_difference(values: Sequence, baseline: Sequence, *, confidence: float = 0.95,
                      alpha: float = 0.05, power: float = 0.8) -> dict:
  """values - baseline, paired by position (seed): mean, t interval, sd, n, p, mde.

  Pairs where either side is missing or non-finite are dropped. 'p' is the two-sided
  paired t-test p-value; 'mde' the `min_detectable_difference` of this design.
  """
  a = np.asarray([np.nan if v is None else v for v in values], np.float64)
  b = np.asarray([np.nan if v is None else v for v in baseline], np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
  diff = (a - b)[np.isfinite(a) & np.isfinite(b)]
  out = mean_interval(diff, confidence=confidence)
  out["p"] = None
  if out["n"] >= 2 and out["sd"] > 0:
    out["p"] = float(2 * _student_t().sf(abs(out["mean"]) / (out["sd"] / math.sqrt(out["n"])),
                                          out["n"] - 1))
  out["mde"] = min_detectable_difference(out["sd"], out["n"], alpha=alpha, power=power)
  return out


def holm(p_values: Sequence) -> list:
  """Holm's step-down adjusted p-values of a family of tests, in the input order.

  The i-th smallest raw p (i from 0) becomes max over j <= i of min(1, (m - j) p_(j)),
  m the number of tests; rejecting where the adjusted p is below α keeps the chance of
  any false rejection in the family at most α. None entries (no test) stay None and
  do not count in m.
  """
  idx = [i for i, p in enumerate(p_values) if p is not None]
  m = len(idx)
  out = [None] * len(p_values)
  running = 0.0
  for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
    running = max(running, min(1.0, (m - rank) * float(p_values[i])))
    out[i] = running
  return out


def curve_auc(epochs: Sequence[float], values: Sequence[float]) -> Optional[float]:
  """Mean of a curve over its epoch span (trapezoid area / span): one number for
  'how high, how early'. None for fewer than two points or any missing value."""
  x, y = np.asarray(epochs, np.float64), np.asarray(
      [np.nan if v is None else v for v in values], np.float64)
  if x.size < 2 or not np.isfinite(y).all() or x[-1] <= x[0]:
    return None
  return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (x[-1] - x[0]))


def epochs_to_threshold(epochs: Sequence[float], values: Sequence[float],
                        threshold: float) -> Optional[float]:
  """First epoch at which the curve reaches `threshold`, interpolating linearly between
  evaluated epochs; None if it never does."""
  x = np.asarray(epochs, np.float64)
  y = np.asarray([np.nan if v is None else v for v in values], np.float64)
  for i in range(x.size):
    if np.isfinite(y[i]) and y[i] >= threshold:
      if i == 0 or not np.isfinite(y[i - 1]):
        return float(x[i])
      frac = (threshold - y[i - 1]) / (y[i] - y[i - 1])
      return float(x[i - 1] + frac * (x[i] - x[i - 1]))
  return None
