"""The comparison job: several training variants x seeds, one table, two figures.

A comparison config (see `configs/compare_*.py`) holds:

- `base`: a complete training config (e.g. `configs/default.py`'s), the starting point
  of every variant;
- `variants`: a ConfigDict `name -> overrides`, where `overrides` is a nested ConfigDict
  of fields to set on a copy of `base` (e.g. `{'norm': {'cut_factor': 3.0}}`); an override of a
  field `base` lacks is a `ConfigError` naming the variant and the field;
- `run_variants`: comma-separated variant names, in table order (a subset may be given
  on the command line, `--config.run_variants=default,cut3`);
- `seeds`: comma-separated integer seeds; each goes into `base.<seed_field>`;
- `report_epochs`: comma-separated epochs at which the table shows kNN accuracy
  (epochs the runs did not evaluate are shown as missing);
- `baseline`: the arm every other arm is compared with, seed by seed ('' = the first);
- `threshold`: a kNN accuracy whose first crossing epoch is a metric (0 = none);
- `loss_threshold`: a training loss whose first crossing step is a metric (0 = none);
- `to_baseline_final`: add the epochs at which each run first reaches the baseline
  arm's final kNN accuracy of the same seed (`epochs_to_baseline_final`);
- `sub_job`: 'train' (each sub-run trains `base`) or 'analysis' (`base` is an analysis
  config whose embedded `train` config is trained and analysed; set `seed_field` to
  'train.seed'); the table then reports the analysis's headline numbers;
- `process_index`, `process_count`: how the (variant, seed) list is split across hosts
  (-1: `jax.process_index()` / `jax.process_count()`);
- `workers`: on a CPU host, train this process's share in that many processes, each
  pinned to its own cores (`jnorm.jobs.workers`: 1.19x sooner on 2 cores, the same
  results as one process; default 1);
- `aggregate_only`: train nothing, only tabulate the sub-runs that exist (the rest are
  listed as missing);
- `grid_arms`, `grid_rates`: a learning-rate grid (variants `<arm>_lr<rate>`,
  `jnorm.rate_grid`): rate_grid.md and knn_auc_vs_rate.png are added, with each arm's
  score per rate, its paired difference to the first grid arm at the same rate and best
  against best ('' = not a grid);
- `frequency_swap`: 'arm,swapped_arm' (analysis sub-runs on long-tailed data whose class
  counts are reversed between the two arms) adds the class-frequency effect with class
  identity held fixed (`frequency_swap` in results.json; '' = none).

Paired seeds: a variant only overrides fields of `base`, and a seed fixes the
initialization (before any cut), the data order and the augmentations of a run, so seed
k of every arm starts from the same network and sees the same batches and views.

Every (variant, seed) trains with `jnorm.training.loop.train_and_evaluate` into
`<workdir>/<variant>/seed<k>`, one after another (per worker). A sub-run that stops on a
non-finite loss (`NonFiniteError`) is recorded as diverged (`failed.json` in its
directory, listed under `failed` in results.json and comparison.md) and the comparison
goes on. A sub-run whose `results.json` or `failed.json` exists is skipped, so an
interrupted comparison resumes where it stopped (a sub-run killed half-way resumes from
its own checkpoint). SIGTERM or SIGINT stops the comparison cleanly: inside a sub-run at
a step boundary with its checkpoint saved, or between sub-runs (`errors.Preempted`, exit
code 75); the stopped sub-run is recorded as neither finished nor failed.

Several hosts: sub-run i belongs to process `i % process_count`; the hosts share
`workdir` (a network filesystem) and do NOT call `jax.distributed.initialize` (each
trains its share on its own devices) and each writes the table of the sub-runs finished
so far. Once all are done, run the same command on one host with
`--config.aggregate_only=True` (or `--config.process_count=1`, which also trains what
is missing) for the complete table and figures.

Outputs in `workdir`: `results.json` (`summary`: per arm and metric the mean, 95% t
interval, sd, n, the per-seed values and the paired difference to the baseline with its
interval, p-value and smallest detectable difference; per-arm curves; missing and
diverged sub-runs), `comparison.md`, `comparison.csv` (long format),
`knn_accuracy_vs_epoch.png` and `norm_vs_epoch.png` (mean with 95% interval bands).
Metrics: `jnorm.tables`.
"""

import json
import os
import time
from typing import Callable, Optional, Sequence

import jax
import ml_collections

from jnorm import errors
from jnorm import json_files as jio
from jnorm import ood
from jnorm import rate_grid
from jnorm import tables
from jnorm.plots import analysis as analysis_plots
from jnorm.plots import compare as compare_plots
from jnorm.plots.figures import save_figure
from jnorm.jobs import analysis
from jnorm.jobs import workers
from jnorm.jobs.variants import (apply_overrides, parse_list, shard_runs,  # noqa: F401  (API)
                                 variant_configs)
from jnorm.training import loop
from jnorm.training import preemption
from jnorm.training import metrics

TrainFn = Callable[[ml_collections.ConfigDict, str], dict]

# Written into a sub-run's directory when training stopped on a NaN / inf (NonFiniteError):
# the comparison records the variant as diverged and goes on; delete the file to retry.
_FAILED = "failed.json"

def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, variant, f"seed{seed}")


# What a comparison runs per (arm, seed): a training run, or the analysis job (which
# trains its own run first) for claims about trained embeddings.
SUB_JOBS = {"train": loop.train_and_evaluate, "analysis": analysis.analysis_job}
ANALYSIS_METRICS = ("norm_bucket_spearman", "norm_bucket_spearman_loo",
                    "norm_quantile_spearman", "norm_quantile_spearman_loo",
                    "norm_quantile_accuracy_lowest", "norm_quantile_accuracy_highest",
                    "novelty_auroc",
                    "density_spearman", "class_norm_spearman", "knn_accuracy_test")


def _train_missing(todo: list, workdir: str, train_fn: TrainFn, label: str = "") -> None:
  """Trains each (arm, seed, config) in turn, one progress line per run.

  SIGTERM / SIGINT (`preemption.stop_on_signals`) stop the sub-run in progress at a step
  boundary with its checkpoint saved, or, between sub-runs, before the next one starts:
  `errors.Preempted` either way, and the stopped sub-run is neither finished nor failed
  (no results.json or failed.json), so the same command resumes it.
  """
  with preemption.stop_on_signals():
    _train_each(todo, workdir, train_fn, label)


def _train_each(todo: list, workdir: str, train_fn: TrainFn, label: str) -> None:
  who = f"jnorm compare: {label + ': ' if label else ''}run"
  for i, (name, seed, run_config) in enumerate(todo, start=1):
    path = run_dir(workdir, name, seed)
    if preemption.stop_requested():
      raise errors.Preempted(
          f"preempted ({preemption.stop_requested()}) before sub-run {name}/seed{seed} ({i - 1} "
          f"of {len(todo)} trained here, kept); run the same command to resume")
    print(f"{who} {i}/{len(todo)}: {name}/seed{seed} -> {path}", flush=True)
    start = time.time()
    try:
      out = train_fn(run_config, path)
      knn = out.get("knn_accuracy") if isinstance(out, dict) else None
      shown = f"kNN {knn:.4f}" if isinstance(knn, float) else "done"
      print(f"{who} {i}/{len(todo)}: {name}/seed{seed}: {shown} "
            f"({time.time() - start:.0f} s)", flush=True)
    except errors.NonFiniteError as exc:  # a diverged arm is a result, not a crash
      jio.write_json_atomic(os.path.join(path, _FAILED), {"error": " ".join(str(exc).split())})
      print(f"{who} {i}/{len(todo)}: {name}/seed{seed}: diverged", flush=True)


def _collect(runs: list, workdir: str) -> tuple:
  """({arm: {seed: results}}, missing ['arm/seedK'], failed {'arm/seedK': error})."""
  per_arm, missing, failed = {}, [], {}
  for name, seed, _ in runs:
    per_arm.setdefault(name, {})
    path = run_dir(workdir, name, seed)
    if os.path.exists(os.path.join(path, "results.json")):
      results = jio.load_results(path)
      results["loss_curve"] = [(r["step"], r["loss"]) for r in metrics.read_metrics(
          path, kind="train") if r.get("loss") is not None]
      per_arm[name][seed] = results
    elif os.path.exists(os.path.join(path, _FAILED)):
      with open(os.path.join(path, _FAILED)) as f:
        failed[f"{name}/seed{seed}"] = json.load(f)["error"]
    else:
      missing.append(f"{name}/seed{seed}")
  return per_arm, missing, failed


def _table_metrics(config, report_epochs) -> list:
  if config.sub_job == "analysis":
    return list(ANALYSIS_METRICS)
  metrics = [f"knn@{tables.epoch_label(e)}" for e in report_epochs]
  metrics += ["knn_auc", "knn_accuracy"]
  if config.threshold > 0:
    metrics.append(tables.threshold_key(config.threshold))
  if config.loss_threshold > 0:
    metrics.append(tables.loss_threshold_key(config.loss_threshold))
  if config.get("to_baseline_final", False):
    metrics.append(tables.BASELINE_FINAL_KEY)
  if config.base.eval.linear_probe:
    metrics.append("linear_probe_accuracy")
  return metrics + ["embedding_norm_mean"]


def frequency_swap(config, per_arm: dict) -> Optional[dict]:
  """`tables.frequency_swap` for the arms named by `config.frequency_swap` (or None)."""
  arms = parse_list(config.get("frequency_swap", ""))
  if not arms:
    return None
  if len(arms) != 2 or any(a not in per_arm for a in arms):
    raise errors.ConfigError(
        f"config.frequency_swap={config.frequency_swap!r} must name two arms that ran "
        f"({', '.join(per_arm)}), e.g. 'descending,ascending'")
  return tables.frequency_swap(per_arm, arms)


def write_report(config, workdir: str, runs: list) -> dict:
  """Tabulates the finished sub-runs of `runs`: results.json, comparison.md/.csv, figures."""
  per_arm, missing, failed = _collect(runs, workdir)
  names = list(per_arm)
  baseline = config.baseline or names[0]
  errors.check_choice("baseline", baseline, names)
  report_epochs = parse_list(config.report_epochs, float)
  threshold = config.threshold if config.threshold > 0 else None
  summary = tables.compare_arms(
      per_arm, baseline=baseline, report_epochs=report_epochs, threshold=threshold,
      loss_threshold=config.loss_threshold if config.loss_threshold > 0 else None,
      to_baseline_final=config.get("to_baseline_final", False))
  curves = {n: tables.aggregate_curves(list(per_arm[n].values())) for n in names}
  metrics = _table_metrics(config, report_epochs)
  markdown = tables.table_markdown(summary, metrics=metrics, baseline=baseline)
  title = config.get("title", "") or "Comparison"
  with open(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(f"# {title}\n\nMean [95% t interval] over paired seeds; Δ: paired difference "
            f"to `{baseline}` [95% interval]; mde: the smallest difference this design "
            f"detects (paired t-test, α 0.05, power 0.8). Accuracies in %.\n\n{markdown}")
    if missing:
      f.write(f"\nMissing sub-runs (not run here, or not finished): {', '.join(missing)}\n")
    for run, error in failed.items():
      f.write(f"\nDiverged: {run}: {error}\n")
    swap = frequency_swap(config, per_arm)
    if swap:
      e = {k: float("nan") if v is None else v for k, v in swap["effect"].items()}
      f.write(f"\nClass frequency with class identity fixed ({' vs '.join(swap['arms'])}): "
              f"a class's relative mean norm when frequent minus when rare, "
              f"{e['mean']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}], n {e['n']:.0f}, "
              f"p {e['p']:.2g}, mde {e['mde']:.4f}\n")
  with open(os.path.join(workdir, "comparison.csv"), "w") as f:
    f.write(tables.table_csv(summary))
  figures = compare_plots.plot_curves(curves, workdir, norm_key=config.norm_key,
                                      title=config.get("title", ""))
  headline = {f"{arm}/{m}": summary[arm][m]["mean"] for arm in names for m in metrics
              if m in summary[arm]}
  results = {"title": config.get("title", ""), "variants": names, "baseline": baseline,
             "seeds": parse_list(config.seeds, int), "report_epochs": report_epochs,
             "threshold": threshold, "summary": summary, "table_markdown": markdown,
             "curves": curves, "missing": missing, "failed": failed, "figures": figures,
             "frequency_swap": swap, **headline}
  ood_runs = [r["ood"] for runs in per_arm.values() for r in runs.values() if r.get("ood")]
  if ood_runs:
    with open(os.path.join(workdir, "ood.md"), "w") as f:
      f.write(f"# {title}: norms against standard OOD scores\n\n{ood.table_markdown(ood_runs)}")
    auroc = {s: {k: [r[s][k]["auroc"] for r in ood_runs] for k in ood.SCORES}
             for s in ood.ordered_sets(ood_runs[0])}
    save_figure(analysis_plots.plot_ood_auroc(auroc), workdir, "ood_auroc")
  if parse_list(config.get("grid_rates", "")):
    results["rate_grid"] = _rate_grid_report(config, workdir, per_arm, failed)
  jio.save_results(workdir, results)
  return headline


def _rate_grid_report(config, workdir: str, per_arm: dict, failed: dict) -> dict:
  """rate_grid.md and knn_auc_vs_rate.png (`jnorm.rate_grid`); returns its summary."""
  seeds = parse_list(config.seeds, int)
  grid = dict(arms=parse_list(config.grid_arms), rates=parse_list(config.grid_rates, float),
              seeds=seeds)
  table = rate_grid.score_table(per_arm, list(failed), **grid)
  probe = (rate_grid.score_table(per_arm, list(failed), score=rate_grid.probe_score, **grid)
           if config.base.eval.linear_probe else None)
  num_classes = next((r["dataset"]["num_classes"] for runs in per_arm.values()
                      for r in runs.values()), 10)
  summary = rate_grid.summarize(table, seeds=seeds, baseline=parse_list(config.grid_arms)[0],
                                num_classes=num_classes, probe=probe)
  title = config.get("title", "") or "Rate grid"
  with open(os.path.join(workdir, "rate_grid.md"), "w") as f:
    f.write(rate_grid.markdown(summary, title=title))
  summary["figure"] = compare_plots.plot_rate_grid(summary, workdir, title=title)
  return summary


def run_comparison(config: ml_collections.ConfigDict, workdir: str, *,
                   train_fn: Optional[TrainFn] = None) -> dict:
  """Trains this process's share of the sub-runs (skipping finished ones), then tabulates.

  Args:
    config: a comparison config (module docstring).
    workdir: output directory; sub-runs go to `<workdir>/<variant>/seed<k>`.
    train_fn: `train_fn(train_config, run_workdir) -> dict` writing its results.json
      (default: `SUB_JOBS[config.sub_job]`; module-level when `config.workers` > 1).

  Returns:
    The headline numbers: per arm the mean of each table metric.
  """
  errors.check_choice("sub_job", config.sub_job, SUB_JOBS)
  runs = variant_configs(config)
  names = list(dict.fromkeys(r[0] for r in runs))
  if config.baseline and config.baseline not in names:  # checked before any training
    raise errors.ConfigError(
        f"config.baseline={config.baseline!r} is not among the variants run "
        f"({', '.join(names)}); add it to --config.run_variants or set --config.baseline")
  index = config.process_index if config.process_index >= 0 else jax.process_index()
  count = config.process_count if config.process_count > 0 else jax.process_count()
  todo = [] if config.aggregate_only else [r for r in shard_runs(
      runs, process_index=index, process_count=count) if not any(os.path.exists(
          os.path.join(run_dir(workdir, r[0], r[1]), f)) for f in ("results.json", _FAILED))]
  train_fn, n_workers = train_fn or SUB_JOBS[config.sub_job], config.get("workers", 1)
  errors.check_positive("workers", n_workers)  # (configs saved before `workers` lack it)
  if n_workers > 1 and todo:
    workers.train_in_workers(todo, workdir, train_fn, workers=n_workers, train_missing=_train_missing)
  else:
    _train_missing(todo, workdir, train_fn)
  return write_report(config, workdir, runs)


def compare_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Job "compare": see the module docstring."""
  return run_comparison(config, workdir)


def comparison_config(*, base: ml_collections.ConfigDict, variants: dict, run_variants,
                      seeds, report_epochs, title: str, baseline: str = "",
                      threshold: float = 0.0, loss_threshold: float = 0.0,
                      sub_job: str = "train", seed_field: str = "seed",
                      frequency_swap_arms: str = "",
                      to_baseline_final: bool = False, grid_arms: Sequence[str] = (),
                      grid_rates: Sequence[float] = ()) -> ml_collections.ConfigDict:
  """A comparison config (module docstring) from its parts; configs/compare_*.py use it."""
  config = ml_collections.ConfigDict()
  config.job = "compare"
  config.title = title
  config.base = base
  config.variants = ml_collections.ConfigDict(variants)
  if not isinstance(run_variants, str):
    run_variants = ",".join(run_variants)
  config.run_variants = run_variants
  config.seeds = ",".join(str(s) for s in seeds) if not isinstance(seeds, str) else seeds
  config.seed_field = seed_field
  config.sub_job = sub_job
  config.report_epochs = ",".join(f"{e:g}" for e in report_epochs)
  config.baseline = baseline
  config.threshold = float(threshold)
  config.loss_threshold = float(loss_threshold)
  config.norm_key = ""
  config.process_index = -1
  config.process_count = -1
  config.aggregate_only = False
  config.workers = 1
  config.frequency_swap = frequency_swap_arms
  config.to_baseline_final = to_baseline_final
  config.grid_arms = ",".join(grid_arms)
  config.grid_rates = ",".join(f"{r:g}" for r in grid_rates)
  return config
