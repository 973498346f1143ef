"""jnorm.stats against scipy: t intervals, paired t-tests, detectable differences, curve
summaries."""

import math

import numpy as np
import pytest
import scipy.stats

from jnorm import stats


def test_finite_drops_none_nan_and_inf():
  np.testing.assert_array_equal(stats.finite([1, None, np.nan, 2.5, np.inf, -np.inf, 0]),
                                [1.0, 2.5, 0.0])
  assert stats.finite([]).dtype == np.float64


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_is_scipys_t_interval(confidence):
  values = [0.61, 0.58, 0.66, 0.70, 0.59]
  got = stats.mean_interval(values + [None, float("nan")], confidence=confidence)
  mean, sem = np.mean(values), scipy.stats.sem(values)
  lo, hi = scipy.stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
  assert got["n"] == 5
  assert got["mean"] == pytest.approx(mean, abs=1e-15)
  assert got["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
  assert (got["lo"], got["hi"]) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_interval_with_one_or_no_values():
  assert stats.mean_interval([0.3, None]) == {"mean": 0.3, "lo": None, "hi": None,
                                               "sd": None, "n": 1}
  assert stats.mean_interval([None, np.nan]) == {"mean": None, "lo": None, "hi": None,
                                                 "sd": None, "n": 0}


def test_paired_difference_matches_scipy_ttest_rel():
  rng = np.random.default_rng(0)
  baseline = rng.normal(0.6, 0.05, size=6)
  values = baseline + rng.normal(0.02, 0.01, size=6)
  got = stats.paired_difference(values, baseline)
  diff = values - baseline
  want = scipy.stats.ttest_rel(values, baseline)
  assert got["n"] == 6
  assert got["mean"] == pytest.approx(diff.mean(), rel=1e-12)
  assert got["sd"] == pytest.approx(diff.std(ddof=1), rel=1e-12)
  assert got["p"] == pytest.approx(want.pvalue, rel=1e-9)
  ci = want.confidence_interval(0.95)
  assert (got["lo"], got["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
  assert got["mde"] == pytest.approx(stats.min_detectable_difference(got["sd"], 6))
  # The sign of the difference follows the argument order; p does not.
  swapped = stats.paired_difference(baseline, values)
  assert swapped["mean"] == pytest.approx(-got["mean"]) and swapped["p"] == pytest.approx(
      got["p"])


def test_paired_difference_pairs_by_position_and_drops_incomplete_pairs():
  values = [0.5, None, 0.7, 0.9, np.nan]
  baseline = [0.4, 0.3, np.inf, 0.6, 0.2]
  got = stats.paired_difference(values, baseline)
  assert got["n"] == 2  # seeds 0 and 3 have both sides
  assert got["mean"] == pytest.approx(np.mean([0.1, 0.3]))
  assert got["p"] == pytest.approx(scipy.stats.ttest_rel([0.5, 0.9], [0.4, 0.6]).pvalue)
  with pytest.raises(ValueError, match="equal lengths"):
    stats.paired_difference([1.0, 2.0], [1.0])


def test_paired_difference_without_spread_has_no_p_value():
  same = stats.paired_difference([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])  # all exactly +0.25
  assert same["mean"] == 0.25 and same["sd"] == 0.0 and same["p"] is None
  one = stats.paired_difference([0.5], [0.4])
  assert one["n"] == 1 and one["p"] is None and one["mde"] is None and one["lo"] is None


def test_min_detectable_difference_formula_and_edge_cases():
  n, sd = 8, 0.02
  want = (scipy.stats.t.ppf(0.975, n - 1) + scipy.stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
  assert stats.min_detectable_difference(sd, n) == pytest.approx(want, rel=1e-12)
  assert stats.min_detectable_difference(sd, n, power=0.9) > want
  assert stats.min_detectable_difference(sd, n, alpha=0.01) > want
  assert stats.min_detectable_difference(None, n) is None
  assert stats.min_detectable_difference(sd, 1) is None
  mdes = [stats.min_detectable_difference(sd, k) for k in range(2, 40)]
  assert all(a > b for a, b in zip(mdes, mdes[1:]))  # more seeds, smaller mde


@pytest.mark.parametrize("n", [5, 10, 30])
def test_min_detectable_difference_has_the_stated_power(n):
  """At a true difference of mde (and true sd = the sd given), the two-sided paired
  t-test at alpha 0.05 rejects with probability ~0.8 (exactly: noncentral t)."""
  sd = 1.0
  mde = stats.min_detectable_difference(sd, n)
  crit = scipy.stats.t.ppf(0.975, n - 1)
  noncentrality = mde * math.sqrt(n) / sd
  power = (scipy.stats.nct.sf(crit, n - 1, noncentrality)
           + scipy.stats.nct.cdf(-crit, n - 1, noncentrality))
  assert power == pytest.approx(0.8, abs=0.015)


def test_min_detectable_difference_power_by_simulation():
  rng = np.random.default_rng(1)
  n, sd, reps = 10, 0.03, 4000
  mde = stats.min_detectable_difference(sd, n)
  diffs = rng.normal(mde, sd, size=(reps, n))
  t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
  rejected = np.abs(t) > scipy.stats.t.ppf(0.975, n - 1)
  assert rejected.mean() == pytest.approx(0.8, abs=0.03)
  null = rng.normal(0.0, sd, size=(reps, n))  # and ~alpha without a difference
  t0 = null.mean(1) / (null.std(1, ddof=1) / math.sqrt(n))
  assert (np.abs(t0) > scipy.stats.t.ppf(0.975, n - 1)).mean() == pytest.approx(0.05, abs=0.015)


def test_seeds_needed_is_the_smallest_sufficient_n_and_monotone():
  sd = 0.02
  for effect in (0.005, 0.01, 0.02, 0.05):
    n = stats.seeds_needed(effect, sd)
    assert stats.min_detectable_difference(sd, n) <= effect
    assert n == 2 or stats.min_detectable_difference(sd, n - 1) > effect
  by_effect = [stats.seeds_needed(e, sd) for e in (0.004, 0.008, 0.016, 0.032, 0.064)]
  assert all(a >= b for a, b in zip(by_effect, by_effect[1:])) and by_effect[0] > by_effect[-1]
  by_sd = [stats.seeds_needed(0.01, s) for s in (0.005, 0.01, 0.02, 0.04)]
  assert all(a <= b for a, b in zip(by_sd, by_sd[1:])) and by_sd[0] < by_sd[-1]
  assert stats.seeds_needed(-0.01, sd) == stats.seeds_needed(0.01, sd)  # |effect|
  assert stats.seeds_needed(0.01, 0.0) == 2
  assert stats.seeds_needed(1e-6, sd, max_n=50) is None


def test_curve_auc_is_the_trapezoid_mean_over_the_span():
  epochs, values = [0, 1, 3, 4], [0.1, 0.5, 0.7, 0.9]
  area = (0.1 + 0.5) / 2 * 1 + (0.5 + 0.7) / 2 * 2 + (0.7 + 0.9) / 2 * 1
  assert stats.curve_auc(epochs, values) == pytest.approx(area / 4)
  assert stats.curve_auc([2, 5, 9], [0.3] * 3) == pytest.approx(0.3)
  assert stats.curve_auc([1], [0.5]) is None
  assert stats.curve_auc([0, 1, 2], [0.1, None, 0.3]) is None
  assert stats.curve_auc([0, 1], [0.1, np.nan]) is None
  assert stats.curve_auc([1, 1], [0.1, 0.2]) is None  # no span


def test_epochs_to_threshold_interpolates_between_evaluations():
  epochs, values = [0, 1, 2, 4], [0.1, 0.3, 0.5, 0.9]
  assert stats.epochs_to_threshold(epochs, values, 0.4) == pytest.approx(1.5)
  assert stats.epochs_to_threshold(epochs, values, 0.7) == pytest.approx(3.0)
  assert stats.epochs_to_threshold(epochs, values, 0.5) == pytest.approx(2.0)
  assert stats.epochs_to_threshold(epochs, values, 0.05) == 0.0  # reached at the start
  assert stats.epochs_to_threshold(epochs, values, 0.95) is None  # never reached
  # The first crossing counts even if the curve dips afterwards.
  assert stats.epochs_to_threshold([1, 2, 3], [0.2, 0.6, 0.1], 0.4) == pytest.approx(1.5)
  # No interpolation from a missing evaluation.
  assert stats.epochs_to_threshold([1, 2, 3], [0.2, None, 0.6], 0.4) == 3.0


def test_holm_by_hand_and_its_properties():
  # m = 4; sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(0.06, 0.06), 0.5.
  assert stats.holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
  assert stats.holm([0.4, None, 0.3]) == [pytest.approx(0.6), None, pytest.approx(0.6)]
  assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
  rng = np.random.default_rng(0)
  raw = rng.uniform(size=25)
  adjusted = np.asarray(stats.holm(list(raw)))
  assert np.all(adjusted >= raw)  # never smaller than the raw p
  order = np.argsort(raw)
  assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p
  assert adjusted[order[0]] == pytest.approx(min(1, 25 * raw[order[0]]))  # Bonferroni first
