"""Per-run metrics of training results, their comparison across arms, and tables.

Input: `results.json` dicts of training runs (`jnorm.training.loop.train_and_evaluate`),
grouped as {arm: {seed: results}}. Every arm is run on the same seeds, so an arm is
compared with the baseline arm seed by seed (`jnorm.stats.paired_difference`).

Per-run scalar metrics (`run_metrics`):
  knn@<e>              kNN accuracy after epoch e (e in `report_epochs`)
  knn_auc              mean kNN accuracy over the evaluated epochs (area / span)
  epochs_to_<t>        first epoch the kNN curve reaches t (interpolated; missing if never)
  epochs_to_baseline_final  (`compare_arms(to_baseline_final=True)`) first epoch the
                       kNN curve reaches the baseline arm's final kNN accuracy of the
                       same seed (interpolated; missing if never): "how many epochs to
                       the default's result"
  steps_to_loss_<l>    first logged step at which the training loss is <= l (from the
                       run's 'loss_curve' [(step, loss)], when present)
  knn_accuracy         final kNN accuracy
  every other top-level number of results.json that is a measurement (e.g.
  linear_probe_accuracy, embedding_norm_mean; an analysis job's novelty_auroc)
  <norm key>@first / @last: the first and last value of each norm curve
"""

import csv
import io
from typing import Optional, Sequence

from jnorm import norms
from jnorm import stats

# Keys of a `knn_curve` entry that are not per-epoch measurements.
_CURVE_SKIP = ("epoch", "step")
# Top-level numbers of a results.json that are bookkeeping, not measurements.
_NOT_METRICS = ("steps", "epochs", "steps_per_epoch", "resumed_from_step",
                "train_seconds_per_step", "first_step_seconds", "wall_seconds",
                "num_devices", "xla_cpu_threads", "knn_accuracy_at_init")


def epoch_key(value) -> float:
  """Epochs as floats (runs may stop at fractional epochs), rounded to compare equal."""
  return round(float(value), 6)


def epoch_label(epoch: float) -> str:
  return f"{epoch:g}"


def curve_metrics(results: dict) -> dict:
  """{metric: {epoch: value}} from a run's `knn_curve` (plus epoch 0 from the init kNN)."""
  out = {}
  for entry in results.get("knn_curve", []) or []:
    epoch = epoch_key(entry["epoch"])
    for key, value in entry.items():
      if key in _CURVE_SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
        continue
      out.setdefault(key, {})[epoch] = float(value)
  init = results.get("knn_accuracy_at_init")
  if isinstance(init, (int, float)):
    out.setdefault("knn_accuracy", {}).setdefault(0.0, float(init))
  return out


def threshold_key(threshold: float) -> str:
  return f"epochs_to_{threshold:g}"


def loss_threshold_key(loss: float) -> str:
  return f"steps_to_loss_{loss:g}"


BASELINE_FINAL_KEY = "epochs_to_baseline_final"


def _points(curve: dict) -> tuple:
  """(sorted epochs, values) of a {epoch: value} curve."""
  epochs = sorted(curve)
  return epochs, [curve[e] for e in epochs]


def _knn_curve(results: dict) -> tuple:
  """(epochs, kNN accuracies) of a run's curve, epoch 0 included when measured."""
  return _points(curve_metrics(results).get("knn_accuracy", {}))


def epochs_to_baseline_final(per_arm: dict, *, baseline: str) -> dict:
  """{arm: {seed: first epoch at which the arm's kNN reaches the baseline's final kNN of
  the same seed}} (None where it never does, or the baseline's seed has no curve)."""
  finals = {}
  for seed, results in per_arm.get(baseline, {}).items():
    _, values = _knn_curve(results)
    finals[seed] = values[-1] if values else None
  out = {}
  for arm, runs in per_arm.items():
    out[arm] = {}
    for seed, results in runs.items():
      epochs, values = _knn_curve(results)
      target = finals.get(seed)
      out[arm][seed] = (None if target is None
                        else stats.epochs_to_threshold(epochs, values, target))
  return out


def run_metrics(results: dict, *, report_epochs: Sequence[float] = (),
                threshold: Optional[float] = None,
                loss_threshold: Optional[float] = None) -> dict:
  """The scalar metrics of one run (module docstring); missing ones are None."""
  curves = curve_metrics(results)
  knn = curves.get("knn_accuracy", {})
  epochs, values = _points(knn)
  out = {f"knn@{epoch_label(e)}": knn.get(epoch_key(e)) for e in report_epochs}
  out["knn_auc"] = stats.curve_auc(epochs, values)
  if threshold is not None:
    out[threshold_key(threshold)] = stats.epochs_to_threshold(epochs, values, threshold)
  if loss_threshold is not None:
    steps = [s for s, loss in results.get("loss_curve", []) if loss <= loss_threshold]
    out[loss_threshold_key(loss_threshold)] = float(steps[0]) if steps else None
  for key, value in results.items():  # final numbers: kNN, probe, norms, analysis results
    if (key not in _NOT_METRICS and isinstance(value, (int, float))
        and not isinstance(value, bool)):
      out[key] = float(value)
  for key, curve in curves.items():
    if "norm" in key and curve:
      ordered = sorted(curve)
      out[f"{key}@first"], out[f"{key}@last"] = curve[ordered[0]], curve[ordered[-1]]
  return out


def compare_arms(per_arm: dict, *, baseline: str, report_epochs: Sequence[float] = (),
                 threshold: Optional[float] = None, loss_threshold: Optional[float] = None,
                 to_baseline_final: bool = False, confidence: float = 0.95) -> dict:
  """{arm: {metric: mean_interval (+ 'diff': paired difference to `baseline`)}}.

  Args:
    per_arm: {arm: {seed: results dict}}, arms in table order.
    baseline: the arm every other arm is differenced against, seed by seed.
    report_epochs, threshold, loss_threshold: see `run_metrics`.
    to_baseline_final: add BASELINE_FINAL_KEY (`epochs_to_baseline_final`).
    confidence: of every interval.
  """
  per_run = {arm: {seed: run_metrics(r, report_epochs=report_epochs, threshold=threshold,
                                     loss_threshold=loss_threshold)
                   for seed, r in runs.items()} for arm, runs in per_arm.items()}
  if to_baseline_final:
    for arm, runs in epochs_to_baseline_final(per_arm, baseline=baseline).items():
      for seed, value in runs.items():
        per_run[arm][seed][BASELINE_FINAL_KEY] = value
  base = per_run.get(baseline, {})
  out = {}
  for arm, runs in per_run.items():
    keys = list(dict.fromkeys(k for m in runs.values() for k in m))
    out[arm] = {}
    for key in keys:
      seeds = sorted(runs)
      entry = stats.mean_interval([runs[s].get(key) for s in seeds], confidence=confidence)
      entry["values"] = {str(s): runs[s].get(key) for s in seeds}
      if arm != baseline and base:
        shared = [s for s in seeds if s in base]
        entry["diff"] = stats.paired_difference(
            [runs[s].get(key) for s in shared], [base[s].get(key) for s in shared],
            confidence=confidence)
      out[arm][key] = entry
  return out


def aggregate_curves(per_seed: Sequence[dict], *, confidence: float = 0.95) -> dict:
  """{metric: {'epochs', 'mean', 'lo', 'hi', 'sd', 'n'}} over seeds, on the epochs all
  seeds share (lo/hi: the t interval of the mean)."""
  metrics = [curve_metrics(r) for r in per_seed]
  keys = set().union(*(m.keys() for m in metrics)) if metrics else set()
  out = {}
  for key in sorted(keys):
    epoch_sets = [set(m.get(key, {})) for m in metrics]
    epochs = sorted(set.intersection(*epoch_sets)) if epoch_sets else []
    if not epochs:
      continue
    cells = [stats.mean_interval([m[key][e] for m in metrics], confidence=confidence)
             for e in epochs]
    out[key] = {"epochs": epochs, **{f: [c[f] for c in cells]
                                     for f in ("mean", "lo", "hi", "sd", "n")}}
  return out


def pick_norm_key(curves: dict, preferred: str = "") -> Optional[str]:
  """The curve metric to plot as 'the embedding norm' (projector norm if present)."""
  if preferred:
    return preferred if preferred in curves else None
  norm_keys = [k for k in curves if "norm" in k]
  for needle in ("projector", "embedding", ""):
    for key in norm_keys:
      if needle in key and "mean" in key and "train_mode" not in key:
        return key
  return norm_keys[0] if norm_keys else None


def _cell(entry: Optional[dict], scale: float, digits: int) -> str:
  if not entry or entry.get("mean") is None:
    return "–"
  text = f"{entry['mean'] * scale:.{digits}f}"
  if entry.get("lo") is not None:
    text += f" [{entry['lo'] * scale:.{digits}f}, {entry['hi'] * scale:.{digits}f}]"
  return text


def _scale(metric: str) -> tuple:
  """(scale, digits) for a metric: accuracies in percent, the rest as they are."""
  if metric.startswith("knn") or "accuracy" in metric:
    return 100.0, 1
  return 1.0, 3


def table_markdown(summary: dict, *, metrics: Sequence[str], baseline: str) -> str:
  """Two markdown tables: per arm, each metric's mean [95% CI] and n; then, per arm
  other than the baseline, the paired difference to the baseline [95% CI] and the
  smallest difference the design detects (mde). A cell over fewer runs than its arm
  has (a threshold some runs never reach) says so: "(n=k)"."""
  head = ["arm", "n"] + list(metrics)
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm, per_metric in summary.items():
    ns = [e["n"] for e in per_metric.values()] or [0]
    cells = [arm, str(max(ns))]
    for m in metrics:
      entry = per_metric.get(m)
      text = _cell(entry, *_scale(m))
      if entry and 0 < entry["n"] < max(ns):  # e.g. runs that never reach a threshold
        text += f" (n={entry['n']})"
      cells.append(text)
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"Paired difference to `{baseline}` [95% CI] (mde):", "",
            "| arm | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
            "|" + "---|" * (len(metrics) + 1)]
  for arm, per_metric in summary.items():
    if arm == baseline:
      continue
    cells = [arm]
    for m in metrics:
      diff = (per_metric.get(m) or {}).get("diff")
      scale, digits = _scale(m)
      text = _cell(diff, scale, digits)
      if diff and diff.get("mde") is not None:
        text += f" ({diff['mde'] * scale:.{digits}f})"
      if diff and 0 < diff["n"] < max(e["n"] for e in per_metric.values()):
        text += f" (n={diff['n']})"
      cells.append(text)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def table_csv(summary: dict) -> str:
  """Long format: arm, metric, statistic (mean/lo/hi/sd/n, diff_*), value."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["arm", "metric", "statistic", "value"])
  for arm, per_metric in summary.items():
    for metric, entry in per_metric.items():
      for stat in ("mean", "lo", "hi", "sd", "n"):
        writer.writerow([arm, metric, stat, "" if entry[stat] is None else entry[stat]])
      for stat, value in (entry.get("diff") or {}).items():
        writer.writerow([arm, metric, f"diff_{stat}", "" if value is None else value])
  return buf.getvalue()


def frequency_swap(per_arm: dict, arms: Sequence[str]) -> dict:
  """The class-frequency effect with class identity held fixed, from analysis sub-runs
  on long-tailed data whose class counts are reversed between `arms[0]` and `arms[1]`:
  per seed `norms.frequency_swap_effect` of the mean test norm per class (relative to
  the run's mean; results' `class_norms`), then its mean and 95% interval over seeds."""
  seeds = sorted(set(per_arm[arms[0]]) & set(per_arm[arms[1]]))
  effects = []
  for seed in seeds:
    a, b = (per_arm[arm][seed]["class_norms"] for arm in arms)
    effects.append(norms.frequency_swap_effect(
        [float("nan") if v is None else v for v in a["mean_norm"]], a["class_counts"],
        [float("nan") if v is None else v for v in b["mean_norm"]], b["class_counts"],
        relative=True))
  return {"arms": list(arms), "seeds": seeds, "per_seed": effects,
          "effect": stats.paired_difference(effects, [0.0] * len(effects))}
