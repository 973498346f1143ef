"""Figures of a comparison: kNN accuracy and embedding norm vs epoch, one line per arm.

Input is `jnorm.tables.aggregate_curves` output per arm:
`{arm: {metric: {'epochs', 'mean', 'lo', 'hi', 'n'}}}`; bands are the 95% t interval of
the mean over seeds (no band where only one seed finished).
"""

import numpy as np

from jnorm import tables
from jnorm.plots.figures import new_figure, save_figure


def _as_array(values, scale: float) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in values], np.float64) * scale


def _band(ax, curve: dict, label: str, *, scale: float = 1.0) -> None:
  epochs = np.asarray(curve["epochs"], np.float64)
  mean = _as_array(curve["mean"], scale)
  lo, hi = _as_array(curve["lo"], scale), _as_array(curve["hi"], scale)
  (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=label)
  if np.isfinite(lo).any():
    ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def _finish(ax, *, xlabel: str, ylabel: str, title: str) -> None:
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend()


def plot_curves(curves: dict, workdir: str, *, norm_key: str = "", title: str = "") -> list:
  """Writes knn_accuracy_vs_epoch.png and norm_vs_epoch.png; returns their paths."""
  fig, ax = new_figure(figsize=(6, 4))
  for name, per_metric in curves.items():
    if "knn_accuracy" in per_metric:
      _band(ax, per_metric["knn_accuracy"], name, scale=100.0)
  _finish(ax, xlabel="epoch", ylabel="kNN accuracy (%)",
          title=title or "kNN accuracy vs epoch (mean, 95% interval)")
  paths = [save_figure(fig, workdir, "knn_accuracy_vs_epoch")]

  fig, ax = new_figure(figsize=(6, 4))
  ylabel = "embedding norm"
  for name, per_metric in curves.items():
    key = tables.pick_norm_key(per_metric, norm_key)
    if key is not None:
      _band(ax, per_metric[key], name)
      ylabel = key
  ax.set_yscale("log")
  _finish(ax, xlabel="epoch", ylabel=ylabel,
          title=title or "embedding norm vs epoch (mean, 95% interval)")
  paths.append(save_figure(fig, workdir, "norm_vs_epoch"))
  return paths


def plot_rate_grid(summary: dict, workdir: str, *, title: str = "") -> str:
  """Writes knn_auc_vs_rate.png: per arm, the mean score (mean kNN over epochs) against
  the learning rate (log scale) with its 95% band; diverged seeds marked with their
  count at the bottom. `summary`: `jnorm.rate_grid.summarize`'s output."""
  fig, ax = new_figure(figsize=(6, 4))
  arms = list(dict.fromkeys(c["arm"] for c in summary["cells"]))
  for arm in arms:
    cells = sorted((c for c in summary["cells"] if c["arm"] == arm), key=lambda c: c["rate"])
    rates = np.asarray([c["rate"] for c in cells])
    mean = _as_array([c["mean"] for c in cells], 100.0)
    lo, hi = _as_array([c["lo"] for c in cells], 100.0), _as_array([c["hi"] for c in cells], 100.0)
    (line,) = ax.plot(rates, mean, marker="o", markersize=3, label=arm)
    if np.isfinite(lo).any():
      ax.fill_between(rates, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    for c in cells:
      if c["diverged"]:
        ax.annotate(f"{c['diverged']}x", (c["rate"], 0.02), xycoords=("data", "axes fraction"),
                    color=line.get_color(), ha="center", fontsize=7)
  ax.set_xscale("log")
  _finish(ax, xlabel="peak learning rate", ylabel="mean kNN accuracy over epochs (%)",
          title=title or "score vs learning rate (mean, 95% interval; Nx: N seeds diverged)")
  return save_figure(fig, workdir, "knn_auc_vs_rate")
