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
