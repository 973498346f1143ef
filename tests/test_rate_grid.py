"""jnorm.rate_grid: the score table, cross-fitted best against best, and the grid report
written by the compare job."""

import json
import os

import ml_collections
import numpy as np
import pytest

from jnorm import errors
from jnorm import rate_grid
from jnorm import stats
from jnorm.jobs import compare


def _curve_results(values):
  return {"knn_curve": [{"epoch": e, "knn_accuracy": v} for e, v in enumerate(values)],
          "dataset": {"num_classes": 10}}


def test_variant_names_have_no_dots():
  assert rate_grid.variant_name("cut3_all", 0.18) == "cut3_all_lr0p18"
  assert rate_grid.variant_name("default", 1.62) == "default_lr1p62"


def test_run_score_is_the_mean_of_the_curve_over_epochs():
  assert rate_grid.run_score(_curve_results([0.5, 0.7, 0.7])) == pytest.approx(0.65)
  assert rate_grid.run_score(None) is None


def _table(values: dict) -> dict:
  """{arm: {rate: [score per seed 0..n-1]}} -> the `score_table` form."""
  return {arm: {rate: dict(enumerate(v)) for rate, v in by_rate.items()}
          for arm, by_rate in values.items()}


def test_cross_fitting_chooses_each_seeds_rate_on_the_other_seeds():
  # Seed 0 alone makes rate 1 look best for 'a'; the other seeds prefer rate 2.
  table = _table({"a": {1.0: [0.90, 0.50, 0.50], 2.0: [0.10, 0.60, 0.60]}})
  chosen = rate_grid.cross_fitted_best(table, "a", [0, 1, 2], chance=0.1)
  # Seed 0: others (1, 2) mean 0.5 at rate 1, 0.6 at rate 2 -> rate 2, score 0.10.
  # Seed 1: others (0, 2) mean 0.70 at rate 1, 0.35 at rate 2 -> rate 1, score 0.50.
  # Seed 2: as seed 1 -> rate 1, score 0.50.
  assert chosen == {0: (2.0, 0.10), 1: (1.0, 0.50), 2: (1.0, 0.50)}


def test_a_diverged_run_scores_chance_in_the_choice_and_the_measure():
  table = _table({"a": {1.0: [0.5, 0.5, 0.5], 2.0: ["diverged", 0.9, 0.9]}})
  chosen = rate_grid.cross_fitted_best(table, "a", [0, 1, 2], chance=0.1)
  # Seed 0 measured at rate 2 (others 0.9) where it diverged: chance, not dropped.
  assert chosen[0] == (2.0, 0.1)
  # Seeds 1 and 2: others at rate 2 average (0.1 + 0.9) / 2 = 0.5, a tie with rate 1:
  # the lower rate wins.
  assert chosen[1] == (1.0, 0.5) and chosen[2] == (1.0, 0.5)


def test_summarize_pairs_by_rate_and_best_against_best():
  table = _table({"default": {1.0: [0.5, 0.6, 0.7], 2.0: [0.6, 0.7, 0.8]},
                  "cut": {1.0: [0.7, 0.8, 0.9], 2.0: ["diverged", 0.5, 0.5]}})
  s = rate_grid.summarize(table, seeds=[0, 1, 2], baseline="default", num_classes=10)
  cells = {(c["arm"], c["rate"]): c for c in s["cells"]}
  assert cells[("cut", 2.0)]["diverged"] == 1 and cells[("cut", 2.0)]["n"] == 2
  paired = {(d["arm"], d["rate"]): d for d in s["paired"]}
  assert paired[("cut", 1.0)]["mean"] == pytest.approx(0.2)
  assert paired[("cut", 2.0)]["n"] == 2  # the diverged seed has no paired value here
  best = {b["arm"]: b for b in s["best"]}
  assert best["default"]["rates"] == [2.0, 2.0, 2.0]
  assert best["cut"]["rates"] == [1.0, 1.0, 1.0]
  expected = stats.paired_difference([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
  (diff,) = s["best_vs_baseline"]
  assert diff["mean"] == pytest.approx(expected["mean"])
  assert diff["n"] == 3
  md = rate_grid.markdown(s, title="t")
  assert "| cut | 1, 1, 1 | 80.0 [" in md and "| cut | 2 | 50.0" in md


def test_the_linear_probe_is_read_at_the_rates_the_knn_score_chose():
  table = _table({"default": {1.0: [0.5, 0.6, 0.7], 2.0: [0.6, 0.7, 0.8]},
                  "cut": {1.0: [0.7, 0.8, 0.9], 2.0: [0.1, 0.2, 0.3]}})
  probe = _table({"default": {1.0: [0.9, 0.9, 0.9], 2.0: [0.80, 0.81, 0.82]},
                  "cut": {1.0: [0.85, 0.87, 0.89], 2.0: [0.99, 0.99, 0.99]}})
  s = rate_grid.summarize(table, seeds=[0, 1, 2], num_classes=10, probe=probe)
  best = {b["arm"]: b for b in s["best"]}
  assert best["default"]["probe"]["mean"] == pytest.approx(0.81)  # at rate 2, as kNN chose
  assert best["cut"]["probe"]["mean"] == pytest.approx(0.87)  # at rate 1
  (diff,) = s["best_vs_baseline"]
  assert diff["probe"]["mean"] == pytest.approx(0.06)
  cells = {(c["arm"], c["rate"]): c for c in s["cells"]}
  assert cells[("cut", 2.0)]["probe"]["mean"] == pytest.approx(0.99)
  assert "| 87.0 [" in rate_grid.markdown(s, title="t")


def _grid_config(rates=(0.1, 0.3), arms=("default", "cut3")):
  base = ml_collections.ConfigDict({"seed": 0, "optim": {"learning_rate": 0.1},
                                    "cut": {"c": 1.0}, "eval": {"linear_probe": False}})
  variants = {}
  for arm in arms:
    for rate in rates:
      variants[rate_grid.variant_name(arm, rate)] = {
          "optim": {"learning_rate": rate}, "cut": {"c": 3.0 if arm == "cut3" else 1.0}}
  config = compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0, 1, 2),
      report_epochs=(1,), title="grid", baseline=rate_grid.variant_name(arms[0], rates[0]),
      grid_arms=arms, grid_rates=rates)
  config.process_index, config.process_count = 0, 1
  return config


def _fake_train(config, workdir):
  """Score = 0.5 + lr * (0.2 if cut) + 0.01 * seed; cut at lr 0.3 diverges for seed 2."""
  lr, cut, seed = config.optim.learning_rate, config.cut.c == 3.0, config.seed
  if cut and lr == 0.3 and seed == 2:
    raise errors.NonFiniteError("non-finite loss at step 3")
  acc = 0.5 + lr * (0.2 if cut else 0.0) + 0.01 * seed
  res = _curve_results([acc, acc])
  res["knn_accuracy"] = acc
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(res, f)
  return res


def _read(path):
  with open(path) as f:
    return f.read()


def test_the_compare_job_writes_the_grid_report_and_rebuilds_it_from_the_runs(tmp_path):
  workdir = str(tmp_path)
  compare.run_comparison(_grid_config(), workdir, train_fn=_fake_train)
  with open(os.path.join(workdir, "results.json")) as f:
    grid = json.load(f)["rate_grid"]
  cells = {(c["arm"], c["rate"]): c for c in grid["cells"]}
  assert cells[("cut3", 0.3)]["diverged"] == 1
  assert cells[("cut3", 0.1)]["mean"] == pytest.approx(0.52 + 0.01)
  # Seeds 0 and 1: the other seeds' mean at 0.3 holds seed 2's divergence (chance), so
  # 0.1 wins; seed 2: seeds 0 and 1 finished at 0.3 (0.565 > 0.525), so 0.3 is chosen
  # and seed 2's own divergence there scores chance.
  best = {b["arm"]: b for b in grid["best"]}
  assert best["cut3"]["rates"] == [0.1, 0.1, 0.3]
  assert best["cut3"]["scores"][2] == pytest.approx(0.1)  # seed 2 diverged there: chance
  assert os.path.getsize(os.path.join(workdir, "knn_auc_vs_rate.png")) > 1000
  before = _read(os.path.join(workdir, "rate_grid.md"))
  os.remove(os.path.join(workdir, "rate_grid.md"))
  config = _grid_config()
  config.aggregate_only = True
  compare.run_comparison(config, workdir, train_fn=lambda c, w: pytest.fail("trained"))
  assert _read(os.path.join(workdir, "rate_grid.md")) == before
  assert np.isfinite(grid["best_vs_baseline"][0]["mean"])
