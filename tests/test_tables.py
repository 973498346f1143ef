"""jnorm.tables: per-run metrics, paired comparison of arms, curves over seeds, tables."""

import csv
import io

import numpy as np
import pytest
import scipy.stats

from jnorm import stats
from jnorm import tables


def _results(accs, *, init=0.1, norms=None, final_norm=2.0, epochs=(1, 2, 4)):
  """A results.json-like dict: kNN accuracy `accs` at `epochs`, optional norm curve."""
  curve = []
  for i, (e, a) in enumerate(zip(epochs, accs)):
    entry = {"epoch": e, "step": 10 * e, "knn_accuracy": a}
    if norms is not None:
      entry["projector_norm_mean"] = norms[i]
      entry["projector_norm_mean_train_mode"] = 2 * norms[i]
    curve.append(entry)
  return {"knn_curve": curve, "knn_accuracy_at_init": init, "knn_accuracy": accs[-1],
          "embedding_norm_mean": final_norm, "method": "simclr", "steps": 40}


# Two arms x three seeds, numbers chosen by hand.
BASE = {0: _results([0.30, 0.50, 0.70], norms=[1.0, 1.5, 2.0]),
        1: _results([0.32, 0.52, 0.66], norms=[1.1, 1.6, 2.1]),
        2: _results([0.28, 0.47, 0.71], norms=[0.9, 1.4, 1.9])}
CUT = {0: _results([0.40, 0.60, 0.75], norms=[0.2, 0.5, 1.0], final_norm=1.0),
       1: _results([0.45, 0.58, 0.74], norms=[0.3, 0.6, 1.1], final_norm=1.1),
       2: _results([0.35, 0.61, 0.72], norms=[0.1, 0.4, 0.9], final_norm=0.9)}


def test_curve_metrics_adds_epoch_zero_from_the_init_knn():
  curves = tables.curve_metrics(BASE[0])
  assert curves["knn_accuracy"] == {0.0: 0.1, 1.0: 0.30, 2.0: 0.50, 4.0: 0.70}
  assert curves["projector_norm_mean"] == {1.0: 1.0, 2.0: 1.5, 4.0: 2.0}
  assert "step" not in curves and "epoch" not in curves


def test_run_metrics_by_hand():
  m = tables.run_metrics(BASE[0], report_epochs=(1, 3, 4), threshold=0.6)
  assert m["knn@1"] == 0.30 and m["knn@3"] is None and m["knn@4"] == 0.70
  area = (0.1 + 0.3) / 2 + (0.3 + 0.5) / 2 + (0.5 + 0.7) / 2 * 2
  assert m["knn_auc"] == pytest.approx(area / 4)
  assert m["epochs_to_0.6"] == pytest.approx(3.0)  # 0.5 at 2, 0.7 at 4
  assert m["knn_accuracy"] == 0.70 and m["embedding_norm_mean"] == 2.0
  assert "linear_probe_accuracy" not in m
  assert m["projector_norm_mean@first"] == 1.0 and m["projector_norm_mean@last"] == 2.0
  assert "steps" not in m and "method" not in m
  assert tables.run_metrics(BASE[0], threshold=0.9)["epochs_to_0.9"] is None


def test_epochs_to_baseline_final_by_hand():
  """Seed 0: the default ends at 0.70; cut reaches it between epochs 2 (0.60) and 4
  (0.75), at 2 + 2 * 0.10 / 0.15."""
  per_arm = {"default": BASE, "cut3": CUT}
  out = tables.epochs_to_baseline_final(per_arm, baseline="default")
  assert out["cut3"][0] == pytest.approx(2 + 2 * (0.70 - 0.60) / (0.75 - 0.60))
  assert out["cut3"][1] == pytest.approx(2 + 2 * (0.66 - 0.58) / (0.74 - 0.58))
  assert out["default"][0] == pytest.approx(4.0)  # the baseline reaches its own final
  slow = {0: _results([0.30, 0.40, 0.50])}  # never reaches 0.70
  assert tables.epochs_to_baseline_final({"default": BASE, "slow": slow},
                                         baseline="default")["slow"][0] is None
  summary = tables.compare_arms(per_arm, baseline="default", to_baseline_final=True)
  diff = summary["cut3"][tables.BASELINE_FINAL_KEY]["diff"]
  assert diff["n"] == 3 and diff["mean"] < 0  # cut reaches the default's result sooner
  assert tables.BASELINE_FINAL_KEY not in tables.compare_arms(per_arm, baseline="default")[
      "cut3"]


def test_compare_arms_means_and_paired_differences_per_seed():
  summary = tables.compare_arms({"default": BASE, "cut3": CUT}, baseline="default",
                                report_epochs=(1, 2), threshold=0.5)
  assert list(summary) == ["default", "cut3"]
  for arm, runs in (("default", BASE), ("cut3", CUT)):
    knn1 = [runs[s]["knn_curve"][0]["knn_accuracy"] for s in (0, 1, 2)]
    entry = summary[arm]["knn@1"]
    assert entry["values"] == {"0": knn1[0], "1": knn1[1], "2": knn1[2]}
    want = stats.mean_interval(knn1)
    assert {k: entry[k] for k in want} == pytest.approx(want)
  assert all("diff" not in e for e in summary["default"].values())
  for metric in ("knn@1", "knn@2", "knn_auc", "knn_accuracy", "epochs_to_0.5",
                 "embedding_norm_mean", "projector_norm_mean@first"):
    per_seed = [tables.run_metrics(CUT[s], report_epochs=(1, 2), threshold=0.5)[metric]
                - tables.run_metrics(BASE[s], report_epochs=(1, 2), threshold=0.5)[metric]
                for s in (0, 1, 2)]
    diff = summary["cut3"][metric]["diff"]
    assert diff["n"] == 3
    assert diff["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12), metric
    assert diff["sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12), metric
  knn2 = summary["cut3"]["knn@2"]["diff"]
  cut2 = [CUT[s]["knn_curve"][1]["knn_accuracy"] for s in (0, 1, 2)]
  base2 = [BASE[s]["knn_curve"][1]["knn_accuracy"] for s in (0, 1, 2)]
  assert knn2["p"] == pytest.approx(scipy.stats.ttest_rel(cut2, base2).pvalue, rel=1e-9)
  assert knn2["mde"] == pytest.approx(stats.min_detectable_difference(knn2["sd"], 3))


def test_compare_arms_pairs_only_the_seeds_both_arms_have():
  partial = {0: CUT[0], 2: CUT[2], 5: CUT[1]}  # seed 5 has no baseline partner
  summary = tables.compare_arms({"default": BASE, "cut3": partial}, baseline="default")
  assert summary["cut3"]["knn_accuracy"]["n"] == 3
  diff = summary["cut3"]["knn_accuracy"]["diff"]
  assert diff["n"] == 2
  assert diff["mean"] == pytest.approx(np.mean([0.75 - 0.70, 0.72 - 0.71]))


def test_aggregate_curves_mean_interval_on_shared_epochs():
  runs = [{"knn_curve": [{"epoch": 1, "knn_accuracy": a, "norm_mean": n},
                         {"epoch": 2, "knn_accuracy": a + 0.1, "norm_mean": 2 * n}],
           "knn_accuracy_at_init": 0.5}
          for a, n in [(0.2, 1.0), (0.4, 3.0), (0.9, 5.0)]]
  runs[2]["knn_curve"].append({"epoch": 3, "knn_accuracy": 0.99})  # only one seed has it
  curves = tables.aggregate_curves(runs)
  acc = curves["knn_accuracy"]
  assert acc["epochs"] == [0, 1, 2] and acc["n"] == [3, 3, 3]
  np.testing.assert_allclose(acc["mean"], [0.5, 0.5, 0.6])
  np.testing.assert_allclose(acc["sd"][1], np.std([0.2, 0.4, 0.9], ddof=1))
  assert acc["sd"][0] == 0.0
  lo, hi = scipy.stats.t.interval(0.95, 2, loc=0.5, scale=scipy.stats.sem([0.2, 0.4, 0.9]))
  assert (acc["lo"][1], acc["hi"][1]) == pytest.approx((lo, hi))
  np.testing.assert_allclose(curves["norm_mean"]["mean"], [3.0, 6.0])
  one = tables.aggregate_curves(runs[:1])["knn_accuracy"]  # a single seed: no interval
  assert one["sd"][1] is None and one["lo"][1] is None and one["n"][1] == 1
  assert tables.aggregate_curves([]) == {}


def test_pick_norm_key_prefers_the_eval_mode_projector_norm():
  curves = {"knn_accuracy": {}, "backbone_norm_mean": {},
            "projector_norm_mean_train_mode": {}, "projector_norm_mean": {}}
  assert tables.pick_norm_key(curves) == "projector_norm_mean"
  assert tables.pick_norm_key(curves, "backbone_norm_mean") == "backbone_norm_mean"
  assert tables.pick_norm_key(curves, "missing") is None
  assert tables.pick_norm_key({"knn_accuracy": {}}) is None


def _summary():
  return tables.compare_arms({"default": BASE, "cut3": CUT}, baseline="default",
                             report_epochs=(1,))


def _table_rows(lines, header_start):
  """{first cell: cells} of the markdown table whose header starts with `header_start`."""
  start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
  rows = {}
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows[cells[0]] = cells
  return lines[start], rows


def test_table_markdown_means_and_paired_differences():
  summary = _summary()
  metrics = ["knn@1", "embedding_norm_mean", "nope"]
  lines = tables.table_markdown(summary, metrics=metrics, baseline="default").splitlines()
  header, means = _table_rows(lines, "| arm | n |")
  assert header == "| arm | n | knn@1 | embedding_norm_mean | nope |"
  assert list(means) == ["default", "cut3"]
  entry = summary["cut3"]["knn@1"]
  # Accuracies in percent with one decimal, other metrics with three; '–' when missing.
  assert means["cut3"][1:3] == [
      "3", f"{entry['mean'] * 100:.1f} [{entry['lo'] * 100:.1f}, {entry['hi'] * 100:.1f}]"]
  norm = summary["cut3"]["embedding_norm_mean"]
  assert means["cut3"][3] == f"{norm['mean']:.3f} [{norm['lo']:.3f}, {norm['hi']:.3f}]"
  assert means["cut3"][4] == "–"
  _, diffs = _table_rows(lines, "| arm | Δ")
  assert list(diffs) == ["cut3"]  # the baseline has no difference to itself
  diff = entry["diff"]
  assert diffs["cut3"][1] == (f"{diff['mean'] * 100:.1f} [{diff['lo'] * 100:.1f}, "
                              f"{diff['hi'] * 100:.1f}] ({diff['mde'] * 100:.1f})")
  assert diffs["cut3"][3] == "–"


def test_table_csv_long_format_round_trips_every_number():
  summary = _summary()
  rows = list(csv.DictReader(io.StringIO(tables.table_csv(summary))))
  assert list(rows[0]) == ["arm", "metric", "statistic", "value"]
  got = {(r["arm"], r["metric"], r["statistic"]): r["value"] for r in rows}
  for arm, per_metric in summary.items():
    for metric, entry in per_metric.items():
      for stat in ("mean", "lo", "hi", "sd", "n"):
        value = got[(arm, metric, stat)]
        assert (value == "") if entry[stat] is None else float(value) == pytest.approx(
            entry[stat])
      for stat, value in (entry.get("diff") or {}).items():
        cell = got[(arm, metric, f"diff_{stat}")]
        assert (cell == "") if value is None else float(cell) == pytest.approx(value)
  assert ("default", "knn@1", "diff_mean") not in got
  assert float(got[("cut3", "knn@1", "diff_p")]) == pytest.approx(
      summary["cut3"]["knn@1"]["diff"]["p"])
