"""Is a norm intervention more than a learning rate? Arms x learning rates x paired seeds.

Cut-initialisation and GradScale both change the effective step, so "arm A converges
faster than the default" may hold at one rate and fail at another. A rate grid trains
every arm at several rates with the same seeds (`configs/rate_grid.py`, run by the
compare job with `grid_arms` and `grid_rates` set) and asks three questions of one
score per run, the mean kNN accuracy over the run's epochs (`stats.curve_auc`):

1. per arm and rate: the mean score with its 95% interval, and how many seeds diverged
   (a non-finite loss; never dropped: it is a row of the table);
2. per rate: the paired difference of each arm to `default` at the same rate;
3. best against best: each arm at its own best rate. The rate is chosen by
   leave-one-seed-out cross-fitting: the score of seed s comes from the rate that is
   best on the other seeds, so choosing the winner does not inflate its result, and
   every seed is measured. A diverged run scores chance (1 / classes) in both the
   choice and the measurement.

An arm speeds up convergence as more than a rate change only if (3) shows it.

Sub-run variants are named `<arm>_lr<rate>`, the rate's dot written p (`variant_name`).
"""

import math
from typing import Optional, Sequence

import numpy as np

from jnorm import stats


def variant_name(arm: str, rate: float) -> str:
  """'cut3_all', 0.18 -> 'cut3_all_lr0p18' (a config key: no dots)."""
  return f"{arm}_lr{rate:g}".replace(".", "p")


def run_score(results: Optional[dict]) -> Optional[float]:
  """Mean kNN accuracy over the run's evaluated epochs (None: no finished run)."""
  if results is None:
    return None
  curve = results.get("knn_curve") or []
  return stats.curve_auc([r["epoch"] for r in curve], [r["knn_accuracy"] for r in curve])


def score_table(per_variant: dict, failed: Sequence[str], *, arms: Sequence[str],
                rates: Sequence[float], seeds: Sequence[int],
                score=run_score) -> dict:
  """{arm: {rate: {seed: score | 'diverged' | None (missing)}}} from the compare job's
  `{variant: {seed: results}}` and its failed 'variant/seedK' list; `score(results)`
  gives a finished run's number (default: `run_score`)."""
  failed = set(failed)
  table = {}
  for arm in arms:
    table[arm] = {}
    for rate in rates:
      name = variant_name(arm, rate)
      runs = per_variant.get(name, {})
      table[arm][rate] = {
          s: ("diverged" if f"{name}/seed{s}" in failed
              else score(runs[s]) if s in runs else None)
          for s in seeds}
  return table


def probe_score(results: dict) -> Optional[float]:
  """The run's linear-probe accuracy (None when it has none)."""
  return results.get("linear_probe_accuracy")


def _numeric(cell: dict, chance: float) -> dict:
  """Seed -> score with a diverged run at `chance`; missing runs left out."""
  return {s: (chance if v == "diverged" else v) for s, v in cell.items() if v is not None}


def cross_fitted_best(table: dict, arm: str, seeds: Sequence[int], *, chance: float) -> dict:
  """Leave-one-seed-out: for each seed s, the rate with the highest mean score on the
  other seeds (ties: the lower rate; only rates where every other seed has a result),
  and seed s's score at that rate. {seed: (rate, score)}; a seed whose chosen cell
  lacks it is left out."""
  out = {}
  for s in seeds:
    best_rate, best_mean = None, -math.inf
    for rate in sorted(table[arm]):
      cell = _numeric(table[arm][rate], chance)
      others = [cell[t] for t in seeds if t != s and t in cell]
      if len(others) < len(seeds) - 1:
        continue
      mean = float(np.mean(others))
      if mean > best_mean:
        best_rate, best_mean = rate, mean
    if best_rate is not None and s in _numeric(table[arm][best_rate], chance):
      out[s] = (best_rate, _numeric(table[arm][best_rate], chance)[s])
  return out


def summarize(table: dict, *, seeds: Sequence[int], baseline: str = "default",
              num_classes: int, probe: Optional[dict] = None) -> dict:
  """The grid's three answers (module docstring), JSON-ready.

  Returns:
    {'cells': [{arm, rate, mean, lo, hi, sd, n, diverged, missing, scores}],
     'paired': [{arm, rate, mean, lo, hi, p, mde, n}] (arm - baseline at each rate, over
       the seeds where both finished),
     'best': [{arm, rates (chosen per seed), scores, mean, lo, hi, n}] and
     'best_vs_baseline': [{arm, mean, lo, hi, p, mde, n}] (cross-fitted, paired by seed),
     'chance': the score of a diverged run}.
    With `probe` (a `score_table` of `probe_score`), each cell and each best row also
    carry 'probe' (mean interval of the linear probe), and 'probe_vs_baseline' the
    paired probe difference at the rates chosen by the kNN score.
  """
  chance = 1.0 / num_classes
  cells, paired, best, best_diff = [], [], [], []
  for arm, by_rate in table.items():
    for rate, cell in by_rate.items():
      finished = [v for v in cell.values() if isinstance(v, float)]
      cells.append({"arm": arm, "rate": rate, **stats.mean_interval(finished),
                    "diverged": sum(v == "diverged" for v in cell.values()),
                    "missing": sum(v is None for v in cell.values()),
                    "scores": [cell[s] for s in seeds]})
      if probe is not None:
        cells[-1]["probe"] = stats.mean_interval(
            [v for v in probe[arm][rate].values() if isinstance(v, float)])
      if arm != baseline and baseline in table:
        base = table[baseline][rate]
        d = stats.paired_difference([_float(cell[s]) for s in seeds],
                                    [_float(base[s]) for s in seeds])
        paired.append({"arm": arm, "rate": rate, **_diff_fields(d)})
  chosen = {arm: cross_fitted_best(table, arm, seeds, chance=chance) for arm in table}
  for arm, per_seed in chosen.items():
    scores = [per_seed[s][1] if s in per_seed else None for s in seeds]
    best.append({"arm": arm, "rates": [per_seed[s][0] if s in per_seed else None
                                       for s in seeds],
                 "scores": scores, **stats.mean_interval([v for v in scores if v is not None])})
  probes = {arm: [_float(probe[arm][per_seed[s][0]][s]) if probe is not None and s in per_seed
                  else None for s in seeds] for arm, per_seed in chosen.items()}
  for row in best:
    if probe is not None:
      row["probe"] = stats.mean_interval([v for v in probes[row["arm"]] if v is not None])
  if baseline in chosen:
    base_scores = [chosen[baseline][s][1] if s in chosen[baseline] else None for s in seeds]
    for arm, per_seed in chosen.items():
      if arm == baseline:
        continue
      d = stats.paired_difference([per_seed[s][1] if s in per_seed else None for s in seeds],
                                  base_scores)
      best_diff.append({"arm": arm, **_diff_fields(d)})
      if probe is not None:
        best_diff[-1]["probe"] = _diff_fields(
            stats.paired_difference(probes[arm], probes[baseline]))
  return {"cells": cells, "paired": paired, "best": best, "best_vs_baseline": best_diff,
          "chance": chance, "seeds": list(seeds), "baseline": baseline}


def _float(v):
  return v if isinstance(v, float) else None


def _diff_fields(d: dict) -> dict:
  return {k: d[k] for k in ("mean", "lo", "hi", "sd", "n", "p", "mde")}


def _pts(x, signed: bool = False) -> str:
  if x is None:
    return "n/a"
  return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _interval(row: dict, signed: bool = False) -> str:
  if row.get("lo") is None:
    return _pts(row["mean"], signed)
  return f"{_pts(row['mean'], signed)} [{_pts(row['lo'], signed)}, {_pts(row['hi'], signed)}]"


def _p(p) -> str:
  return "n/a" if p is None else f"{p:.2g}"


def markdown(summary: dict, *, title: str) -> str:
  """rate_grid.md: the three tables, scores in kNN points (%)."""
  base = summary["baseline"]
  lines = [f"# {title}: arms across learning rates", "",
           "Score: the mean kNN accuracy over the run's epochs (%), mean [95% t interval] "
           f"over seeds {', '.join(map(str, summary['seeds']))} (paired: the same "
           "initialisation, data order and augmentations in every cell). Diverged: seeds "
           "with a non-finite loss.", "",
           "## Score per arm and rate", "",
           "| arm | rate | score | linear probe | n | diverged |", "|---|---|---|---|---|---|"]
  for c in summary["cells"]:
    lines.append(f"| {c['arm']} | {c['rate']:g} | {_interval(c)} | "
                 f"{_interval(c['probe']) if 'probe' in c else 'n/a'} | {c['n']} | "
                 f"{c['diverged']} |")
  lines += ["", f"## Paired difference to `{base}` at the same rate", "",
            "| arm | rate | Δ score [95% CI] | mde | p | n |", "|---|---|---|---|---|---|"]
  for d in summary["paired"]:
    lines.append(f"| {d['arm']} | {d['rate']:g} | {_interval(d, True)} | "
                 f"{_pts(d['mde'])} | {_p(d['p'])} | {d['n']} |")
  lines += ["", "## Best against best (rate chosen on the other seeds)", "",
            "Each seed's score is taken at the rate with the highest mean score on the "
            f"other seeds (a diverged run scores chance, {100 * summary['chance']:.0f}%).", "",
            "| arm | rates chosen (per seed) | score | Δ to default [95% CI] | mde | p | "
            "linear probe | Δ probe [95% CI] |", "|---|---|---|---|---|---|---|---|"]
  diffs = {d["arm"]: d for d in summary["best_vs_baseline"]}
  for b in summary["best"]:
    d = diffs.get(b["arm"])
    rates = ", ".join("–" if r is None else f"{r:g}" for r in b["rates"])
    delta = (f"{_interval(d, True)} | {_pts(d['mde'])} | {_p(d['p'])}" if d
             else "(baseline) | | ")
    probe = _interval(b["probe"]) if "probe" in b else "n/a"
    dprobe = _interval(d["probe"], True) if d and "probe" in d else ""
    lines.append(f"| {b['arm']} | {rates} | {_interval(b)} | {delta} | {probe} | {dprobe} |")
  return "\n".join(lines) + "\n"
