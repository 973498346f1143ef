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
- `process_index`, `process_count`: how the (variant, seed) list is split across hosts
  (-1: `jax.process_index()` / `jax.process_count()`);
- `aggregate_only`: train nothing, only tabulate the sub-runs that exist (the rest are
  listed as missing).

Every (variant, seed) trains with `jnorm.train.train_and_evaluate` into
`<workdir>/<variant>/seed<k>`, one after another. A sub-run that stops on a non-finite
loss (`NonFiniteError`) is recorded as diverged (`failed.json` in its directory, listed
under `failed` in results.json and in comparison.md) and the comparison goes on. A
sub-run whose `results.json` or `failed.json` exists is skipped, so an interrupted
comparison resumes where it stopped (and a sub-run that was killed half-way resumes from
its own checkpoint, by the trainer's resume logic).

Several hosts: the i-th sub-run of the list belongs to process `i % process_count`. The
hosts must share `workdir` (a network filesystem), and should NOT call
`jax.distributed.initialize` (each host trains its share on its own devices). Each
host writes the table of the sub-runs finished so far; once every host is done, run the
same command once more on one host with `--config.aggregate_only=True` (or
`--config.process_count=1`, which also trains whatever is still missing): the complete
table and figures are written.

Outputs in `workdir`: `results.json` (the table as rows, per-variant curves, and which
sub-runs are missing), `comparison.md`, `comparison.csv`, `knn_accuracy_vs_epoch.png`,
`norm_vs_epoch.png`. Std is the sample standard deviation over seeds (ddof = 1; shown as
missing for one seed).
"""

import copy
import csv
import io
import json
import os
from typing import Callable, Optional, Sequence

import ml_collections
import numpy as np

from jnorm import errors
from jnorm.jobs import load_config_file  # re-exported: comparison configs use it
from jnorm import io as jio

TrainFn = Callable[[ml_collections.ConfigDict, str], dict]

# Written into a sub-run's directory when training stopped on a NaN / inf (NonFiniteError):
# the comparison records the variant as diverged and goes on; delete the file to retry.
_FAILED = "failed.json"

# Keys of a `knn_curve` entry that are not per-epoch measurements.
_CURVE_SKIP = ("epoch", "step")


def parse_list(text, cast=str) -> list:
  """'a, b,c' -> ['a', 'b', 'c'] (also accepts a list/tuple); empty items dropped."""
  if isinstance(text, (list, tuple)):
    return [cast(t) for t in text]
  return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def apply_overrides(base: ml_collections.ConfigDict, overrides, *, where: str
                    ) -> ml_collections.ConfigDict:
  """Returns a copy of `base` with the nested `overrides` set; unknown fields raise.

  Args:
    base: the training config.
    overrides: nested ConfigDict / dict; a dict value recurses into a ConfigDict field,
      any other value replaces the field.
    where: a name for error messages (e.g. 'variants.cut3').
  """
  config = copy.deepcopy(base)
  with config.unlocked():
    _merge(config, overrides, where)
  return config


def _merge(target: ml_collections.ConfigDict, overrides, where: str) -> None:
  items = overrides.items() if overrides is not None else ()
  for key, value in items:
    if key not in target:
      raise errors.ConfigError(
          f"config.{where}.{key}: the base training config has no field {key!r}; "
          f"fix the variant's overrides (fields here: {', '.join(sorted(target.keys()))})")
    if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(
        target[key], ml_collections.ConfigDict):
      _merge(target[key], value, f"{where}.{key}")
      continue
    try:
      target[key] = value
    except TypeError as exc:
      raise errors.ConfigError(
          f"config.{where}.{key}={value!r} has the wrong type for the training config "
          f"({' '.join(str(exc).split())}); write it with the field's type") from exc


def variant_configs(config: ml_collections.ConfigDict) -> list:
  """[(variant, seed, train_config)] in table order, from a comparison config."""
  names = parse_list(config.run_variants) or list(config.variants.keys())
  for name in names:
    errors.check_choice("run_variants", name, list(config.variants.keys()))
  seeds = parse_list(config.seeds, int)
  if not seeds:
    raise errors.ConfigError("config.seeds is empty; give at least one seed, e.g. '0,1,2'")
  runs = []
  for name in names:
    variant = apply_overrides(config.base, config.variants[name], where=f"variants.{name}")
    for seed in seeds:
      run = copy.deepcopy(variant)
      with run.unlocked():
        _merge(run, {config.seed_field: seed}, "seed_field")
      runs.append((name, seed, run))
  return runs


def shard_runs(runs: Sequence, *, process_index: int, process_count: int) -> list:
  """The sub-runs this process trains: every `process_count`-th, from `process_index`."""
  errors.check_positive("process_count", process_count)
  if not 0 <= process_index < process_count:
    raise errors.ConfigError(
        f"config.process_index={process_index} must be in [0, {process_count}); "
        "set it to this host's index or -1 for jax.process_index()")
  return [r for i, r in enumerate(runs) if i % process_count == process_index]


def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, variant, f"seed{seed}")


def _mean_std(values: Sequence[float]) -> tuple:
  """(mean, sample std (ddof 1; None for one value), n) of the finite values."""
  vals = np.asarray([v for v in values if v is not None], np.float64)
  vals = vals[np.isfinite(vals)]
  if vals.size == 0:
    return None, None, 0
  std = float(np.std(vals, ddof=1)) if vals.size > 1 else None
  return float(np.mean(vals)), std, int(vals.size)


def _epoch(value) -> float:
  """Epochs as floats (runs may stop at fractional epochs), rounded to compare equal."""
  return round(float(value), 6)


def _epoch_label(epoch: float) -> str:
  return f"{epoch:g}"


def curve_metrics(results: dict) -> dict:
  """{metric: {epoch: value}} from a run's `knn_curve` (plus epoch 0 from the init kNN)."""
  out = {}
  for entry in results.get("knn_curve", []) or []:
    epoch = _epoch(entry["epoch"])
    for key, value in entry.items():
      if key in _CURVE_SKIP or not isinstance(value, (int, float)) or isinstance(value, bool):
        continue
      out.setdefault(key, {})[epoch] = float(value)
  init = results.get("knn_accuracy_at_init")
  if isinstance(init, (int, float)):
    out.setdefault("knn_accuracy", {}).setdefault(0.0, float(init))
  return out


def aggregate_curves(per_seed: Sequence[dict]) -> dict:
  """{metric: {'epochs', 'mean', 'std', 'n'}} over seeds, on the epochs all seeds share."""
  metrics = [curve_metrics(r) for r in per_seed]
  keys = set().union(*(m.keys() for m in metrics)) if metrics else set()
  out = {}
  for key in sorted(keys):
    epoch_sets = [set(m.get(key, {})) for m in metrics]
    epochs = sorted(set.intersection(*epoch_sets)) if epoch_sets else []
    if not epochs:
      continue
    stats = [_mean_std([m[key][e] for m in metrics]) for e in epochs]
    out[key] = {"epochs": epochs, "mean": [s[0] for s in stats],
                "std": [s[1] for s in stats], "n": [s[2] for s in stats]}
  return out


def pick_norm_key(curves: dict, preferred: str = "") -> Optional[str]:
  """The curve metric to plot as 'the embedding norm' (projector norm if present)."""
  if preferred:
    return preferred if preferred in curves else None
  norm_keys = [k for k in curves if "norm" in k]
  for needle in ("projector", "embedding", ""):
    for key in norm_keys:
      if needle in key and "mean" in key:
        return key
  return norm_keys[0] if norm_keys else None


def summarize(per_variant: dict, *, report_epochs: Sequence[int], norm_key: str = "") -> list:
  """Table rows: one per variant, mean/std/n of kNN accuracy at epochs and final numbers.

  Args:
    per_variant: {variant: [results.json dicts of the finished seeds]} (ordered).
    report_epochs: epochs whose kNN accuracy the table reports.
    norm_key: curve metric used as the norm ('' = choose automatically).
  """
  rows = []
  for name, per_seed in per_variant.items():
    curves = aggregate_curves(per_seed)
    row = {"variant": name, "seeds_done": len(per_seed)}
    acc = curves.get("knn_accuracy", {"epochs": [], "mean": [], "std": []})
    for epoch in report_epochs:
      label = f"knn@{_epoch_label(epoch)}"
      if _epoch(epoch) in acc["epochs"]:
        i = acc["epochs"].index(_epoch(epoch))
        row[label], row[f"{label}_std"] = acc["mean"][i], acc["std"][i]
      else:
        row[label], row[f"{label}_std"] = None, None
    for key in ("knn_accuracy", "embedding_norm_mean"):
      mean, std, _ = _mean_std([r.get(key) for r in per_seed])
      row[key], row[f"{key}_std"] = mean, std
    key = pick_norm_key(curves, norm_key)
    if key is not None:
      row["norm_key"] = key
      row["norm_first"], row["norm_last"] = curves[key]["mean"][0], curves[key]["mean"][-1]
    rows.append(row)
  return rows


def _fmt(mean, std, scale=1.0, digits=1) -> str:
  if mean is None:
    return "–"
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def table_markdown(rows: Sequence[dict], *, report_epochs: Sequence[int]) -> str:
  """A markdown table: kNN accuracy (%) at the report epochs, final accuracy and norms."""
  head = (["variant", "seeds"] + [f"kNN@{_epoch_label(e)} (%)" for e in report_epochs]
          + ["final kNN (%)", "test ‖z‖ (final)", "curve norm first → last"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["variant"], str(r["seeds_done"])]
    cells += [_fmt(r[f"knn@{_epoch_label(e)}"], r[f"knn@{_epoch_label(e)}_std"], 100)
              for e in report_epochs]
    cells.append(_fmt(r["knn_accuracy"], r["knn_accuracy_std"], 100))
    cells.append(_fmt(r["embedding_norm_mean"], r["embedding_norm_mean_std"], 1, 3))
    cells.append(f"{r['norm_first']:.3g} → {r['norm_last']:.3g}" if "norm_first" in r else "–")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[dict]) -> str:
  fields = list(dict.fromkeys(k for r in rows for k in r))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
  return buf.getvalue()


def _default_train_fn() -> TrainFn:
  from jnorm import train  # pylint: disable=g-import-not-at-top  (heavy; lazy)
  return train.train_and_evaluate


def _process(config) -> tuple:
  import jax  # pylint: disable=g-import-not-at-top
  index = config.process_index if config.process_index >= 0 else jax.process_index()
  count = config.process_count if config.process_count > 0 else jax.process_count()
  return index, count


def run_comparison(config: ml_collections.ConfigDict, workdir: str, *,
                   train_fn: Optional[TrainFn] = None) -> dict:
  """Trains this process's share of the sub-runs (skipping finished ones), then tabulates.

  Args:
    config: a comparison config (module docstring).
    workdir: output directory; sub-runs go to `<workdir>/<variant>/seed<k>`.
    train_fn: `train_fn(train_config, run_workdir) -> dict` that writes
      `<run_workdir>/results.json`; default `jnorm.train.train_and_evaluate`.

  Returns:
    The headline numbers: per variant the final and report-epoch kNN accuracy means.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from jnorm import compare_plots  # pylint: disable=g-import-not-at-top
  runs = variant_configs(config)
  index, count = _process(config)
  mine = shard_runs(runs, process_index=index, process_count=count)
  todo = [r for r in mine if not any(os.path.exists(
      os.path.join(run_dir(workdir, r[0], r[1]), f)) for f in ("results.json", _FAILED))]
  if config.get("aggregate_only", False):
    todo = []
  train_fn = train_fn or (_default_train_fn() if todo else None)
  for name, seed, run_config in tqdm(todo, desc="compare", unit="run", disable=not todo):
    path = run_dir(workdir, name, seed)
    try:
      train_fn(run_config, path)
    except errors.NonFiniteError as exc:  # a diverged variant is a result, not a crash
      jio.write_json_atomic(os.path.join(path, _FAILED), {"error": " ".join(str(exc).split())})

  names = list(dict.fromkeys(r[0] for r in runs))
  per_variant, missing, failed = {n: [] for n in names}, [], {}
  for name, seed, _ in runs:
    path = run_dir(workdir, name, seed)
    if os.path.exists(os.path.join(path, "results.json")):
      per_variant[name].append(jio.load_results(path))
    elif os.path.exists(os.path.join(path, _FAILED)):
      with open(os.path.join(path, _FAILED)) as f:
        failed[f"{name}/seed{seed}"] = json.load(f)["error"]
    else:
      missing.append(f"{name}/seed{seed}")
  report_epochs = parse_list(config.report_epochs, float)
  rows = summarize(per_variant, report_epochs=report_epochs, norm_key=config.norm_key)
  curves = {n: aggregate_curves(per_variant[n]) for n in names}
  markdown = table_markdown(rows, report_epochs=report_epochs)
  with open(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(f"# {config.get('title', 'Comparison')}\n\n{markdown}")
    if missing:
      f.write(f"\nMissing sub-runs (not run here, or not finished): {', '.join(missing)}\n")
    for run, error in failed.items():
      f.write(f"\nDiverged: {run}: {error}\n")
  with open(os.path.join(workdir, "comparison.csv"), "w") as f:
    f.write(table_csv(rows))
  figures = compare_plots.plot_curves(curves, workdir, norm_key=config.norm_key,
                                      title=config.get("title", ""))
  headline = {}
  for r in rows:
    headline[f"{r['variant']}/knn_accuracy"] = r["knn_accuracy"]
    for e in report_epochs:
      headline[f"{r['variant']}/knn@{_epoch_label(e)}"] = r[f"knn@{_epoch_label(e)}"]
  results = {"title": config.get("title", ""), "variants": names,
             "seeds": parse_list(config.seeds, int), "report_epochs": report_epochs,
             "table": rows, "table_markdown": markdown, "curves": curves,
             "missing": missing, "failed": failed, "process_index": index, "process_count": count,
             "figures": figures, **headline}
  jio.save_results(workdir, _nan_to_none(results))
  return headline


def _nan_to_none(obj):
  if isinstance(obj, dict):
    return {k: _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_nan_to_none(v) for v in obj]
  if isinstance(obj, float) and not np.isfinite(obj):
    return None
  return obj


def compare_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Job "compare": see the module docstring."""
  return run_comparison(config, workdir)


def comparison_config(*, base: ml_collections.ConfigDict, variants: dict, run_variants,
                      seeds, report_epochs, title: str) -> ml_collections.ConfigDict:
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
  config.seed_field = "seed"
  config.report_epochs = ",".join(f"{e:g}" for e in report_epochs)
  config.norm_key = ""
  config.process_index = -1
  config.process_count = -1
  config.aggregate_only = False
  return config
