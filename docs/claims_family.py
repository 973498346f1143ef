"""The claims table's training comparisons as one family, Holm-corrected.

    python docs/claims_family.py            # prints the table docs/findings.md carries

Every comparison is a paired t-test over seeds, recomputed here from the per-seed values
in a comparison's raw results (`docs/findings_data/<folder>/results.json`, the compare
job's `summary`) or, for the rate grids, from `rate_grid.best_vs_baseline` (each arm at
its own cross-fitted best rate against `default` at its own). The family's p-values are
adjusted together with Holm's step-down method (`jnorm.stats.holm`); a verdict at α 0.05
uses the adjusted p. A comparison whose folder does not exist yet is listed as missing
and left out of the family (and out of m).
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "docs", "findings_data")

def _knn(claim: str, folder: str, arm: str, reference: str = "default") -> tuple:
  """A mean-kNN comparison, shown in points."""
  return (claim, folder, arm, reference, "knn_auc", 100)


def _best(method: str, arm: str, name: str) -> tuple:
  """A rate grid's best-against-best comparison to `default`, shown in points."""
  return (f"{method} {name}, best rate vs best rate", f"rate_grid_{method.lower()}", arm,
          "default", "best", 100)


# (claim, folder, arm, reference arm, metric, scale of the shown effect)
FAMILY = (
    _knn("SimCLR cut3_all, Fashion-MNIST", "fmnist_simclr", "cut3_all"),
    _knn("SimCLR cut3_all, digits", "digits16_simclr", "cut3_all"),
    _knn("SimCLR cut3_last, Fashion-MNIST", "fmnist_simclr", "cut3_last"),
    _knn("SimCLR cut3_last, digits", "digits16_simclr", "cut3_last"),
    ("SimCLR initial scale x 1/9, steps to loss 3.9", "fmnist_scale", "last_x1_9", "last_x1",
     "steps_to_loss_3.9", 1),
    _knn("SimCLR GradScale p 1", "fmnist_simclr", "gradscale1"),
    _knn("SimCLR GradScale p 1, compensated rate", "fmnist_simclr", "gradscale1_comp"),
    _knn("SimCLR GradScale p 1, digits", "digits16_simclr", "gradscale1"),
    _knn("SimCLR GradScale p 2, compensated rate", "fmnist_simclr", "gradscale2_comp"),
    _knn("SimSiam cut3_all", "fmnist_simsiam", "cut3_all"),
    _knn("SimSiam cut9_all", "fmnist_simsiam", "cut9_all"),
    _knn("SimSiam 3x rate", "fmnist_simsiam", "lr0p15"),
    _knn("SimSiam cut3_all vs 3x rate", "fmnist_simsiam", "cut3_all", "lr0p15"),
    _knn("SimSiam GradScale p 1", "fmnist_simsiam", "gradscale1"),
    _knn("SimSiam GradScale p 1 vs 3x rate", "fmnist_simsiam", "gradscale1", "lr0p15"),
    _knn("BYOL cut3_all", "fmnist_byol", "cut3_all"),
    _knn("BYOL cut9_all", "fmnist_byol", "cut9_all"),
    _knn("BYOL GradScale p 1", "fmnist_byol", "gradscale1"),
    ("weight decay 5e-3, final norm", "fmnist_wd", "wd5e-3", "default", "embedding_norm_mean", 1),
    ("weight decay 5e-4, final norm", "fmnist_wd", "wd5e-4", "default", "embedding_norm_mean", 1),
    _knn("weight decay 5e-3, mean kNN", "fmnist_wd", "wd5e-3"),
    _knn("weight decay 5e-4, mean kNN", "fmnist_wd", "wd5e-4"),
    ("norm-aware recipe, epochs to the default's final", "fmnist_recipe", "recipe", "default",
     "epochs_to_baseline_final", 1),
    _knn("norm-aware recipe, mean kNN", "fmnist_recipe", "recipe"),
    _best("SimCLR", "cut3_all", "cut3_all"),
    _best("SimCLR", "cut3_last", "cut3_last"),
    _best("SimCLR", "gradscale1", "GradScale p 1"),
    _best("SimSiam", "cut3_all", "cut3_all"),
    _best("SimSiam", "gradscale1", "GradScale p 1"),
    _best("BYOL", "cut3_all", "cut3_all"),
    _best("BYOL", "gradscale1", "GradScale p 1"),
)


def comparison(folder: str, arm: str, reference: str, metric: str, *, data: str = DATA):
  """The paired difference (jnorm.stats.paired_difference's dict), or None if missing."""
  from jnorm import stats  # pylint: disable=g-import-not-at-top
  path = os.path.join(data, folder, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  if metric == "best":
    grid = results.get("rate_grid") or {}
    rows = {r["arm"]: r for r in grid.get("best_vs_baseline", [])}
    return rows.get(arm)
  summary = results["summary"]
  values, base = summary[arm][metric]["values"], summary[reference][metric]["values"]
  seeds = sorted(set(values) & set(base), key=int)
  return stats.paired_difference([values[s] for s in seeds], [base[s] for s in seeds])


def family(data: str = DATA) -> list:
  """[{claim, folder, arm, reference, metric, scale, diff, p_holm}] in FAMILY order."""
  from jnorm import stats  # pylint: disable=g-import-not-at-top
  rows = []
  for claim, folder, arm, reference, metric, scale in FAMILY:
    rows.append({"claim": claim, "folder": folder, "arm": arm, "reference": reference,
                 "metric": metric, "scale": scale,
                 "diff": comparison(folder, arm, reference, metric, data=data)})
  adjusted = stats.holm([r["diff"]["p"] if r["diff"] else None for r in rows])
  for row, p in zip(rows, adjusted):
    row["p_holm"] = p
  return rows


def _num(x, scale, signed=True):
  return "n/a" if x is None else (f"{scale * x:+.1f}" if signed else f"{scale * x:.1f}")


def _p(p):
  return "n/a" if p is None else f"{p:.2g}"


def markdown(rows: list) -> str:
  tested = sum(r["p_holm"] is not None for r in rows)
  lines = [f"Family of {tested} comparisons, Holm-adjusted (α 0.05).", "",
           "| comparison | effect [95% CI] | mde | n | p | p (Holm) | at α 0.05 |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    d, s = r["diff"], r["scale"]
    if d is None:
      lines.append(f"| {r['claim']} | missing ({r['folder']}) | | | | | |")
      continue
    verdict = ("n/a" if r["p_holm"] is None else
               "significant" if r["p_holm"] < 0.05 else "not significant")
    lines.append(f"| {r['claim']} | {_num(d['mean'], s)} [{_num(d['lo'], s)}, "
                 f"{_num(d['hi'], s)}] | {_num(d['mde'], s, False)} | {d['n']} | "
                 f"{_p(d['p'])} | {_p(r['p_holm'])} | {verdict} |")
  return "\n".join(lines) + "\n"


def main() -> int:
  sys.path.insert(0, ROOT)
  print(markdown(family()), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
