"""Figures of a comparison: kNN accuracy and embedding norm vs epoch, one line per variant.

Input is `jnorm.compare.aggregate_curves` output per variant:
`{variant: {metric: {'epochs', 'mean', 'std', 'n'}}}`; bands are mean ± std over seeds
(no band where only one seed finished).
"""

from typing import Optional

import numpy as np

from jnorm import io as jio


def _band(ax, curve: dict, label: str, *, scale: float = 1.0) -> None:
  epochs = np.asarray(curve["epochs"], np.float64)
  mean = np.asarray([np.nan if m is None else m for m in curve["mean"]], np.float64) * scale
  std = np.asarray([np.nan if s is None else s for s in curve["std"]], np.float64) * scale
  (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=label)
  if np.isfinite(std).any():
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                    linewidth=0)


def _norm_key(per_metric: dict, preferred: str) -> Optional[str]:
  from jnorm import compare  # pylint: disable=g-import-not-at-top  (avoid a cycle)
  return compare.pick_norm_key(per_metric, preferred)


def plot_curves(curves: dict, workdir: str, *, norm_key: str = "", title: str = "") -> list:
  """Writes knn_accuracy_vs_epoch.png and norm_vs_epoch.png; returns their paths."""
  paths = []
  fig, ax = jio.new_figure(figsize=(6, 4))
  for name, per_metric in curves.items():
    if "knn_accuracy" in per_metric:
      _band(ax, per_metric["knn_accuracy"], name, scale=100.0)
  ax.set_xlabel("epoch")
  ax.set_ylabel("kNN accuracy (%)")
  ax.set_title(title or "kNN accuracy vs epoch (mean ± std over seeds)")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend()
  paths.append(jio.save_figure(fig, workdir, "knn_accuracy_vs_epoch"))

  fig, ax = jio.new_figure(figsize=(6, 4))
  ylabel = "embedding norm"
  for name, per_metric in curves.items():
    key = _norm_key(per_metric, norm_key)
    if key is not None:
      _band(ax, per_metric[key], name)
      ylabel = key
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.set_yscale("log")
  ax.set_title(title or "embedding norm vs epoch (mean ± std over seeds)")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend()
  paths.append(jio.save_figure(fig, workdir, "norm_vs_epoch"))
  return paths
