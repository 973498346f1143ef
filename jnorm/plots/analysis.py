"""Figures of the norm analyses, in the paper's style (docs/paper.md §3).

Each function takes plain arrays and returns a matplotlib Figure (Agg backend, via
`jnorm.plots.figures.new_figure`); the job saves it with `save_figure`.
"""

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from jnorm import stats
from jnorm.plots.figures import new_figure

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_norm_buckets(curves: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                      ylabel: str = "kNN accuracy", title: str = "",
                      min_count: int = 1, counts_of: Optional[str] = None,
                      xlabel: str = "normalised embedding norm (bucket centre)"):
  """Per-bucket value vs normalised embedding norm, one line per model / variant.

  Args:
    curves: label -> (bucket_centre [B], value [B] (NaN = empty), count [B]).
      Buckets with fewer than `min_count` samples are not drawn.
    ylabel: what the value is (accuracy, agreement, entropy).
    title: the axes title.
    min_count: smallest bucket drawn.
    counts_of: label of the curve whose sample counts are drawn as grey bars on a
      second y axis (None: the first curve).
    xlabel: what the bucket centres in [0, 1] are.

  Returns:
    The figure.
  """
  fig, ax = new_figure(figsize=(6.0, 4.0))
  if curves:
    counts_label = counts_of if counts_of in curves else next(iter(curves))
    centres, _, counts = curves[counts_label]
    bars = ax.twinx()
    width = (centres[1] - centres[0]) * 0.9 if len(centres) > 1 else 0.05
    bars.bar(centres, counts, width=width, color="0.85", zorder=0,
             label=f"samples ({counts_label})")
    bars.set_ylabel("samples per bucket", color="0.4")
    bars.tick_params(axis="y", colors="0.4")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
  for i, (label, (centres, values, counts)) in enumerate(curves.items()):
    values = np.asarray(values, np.float64)
    shown = np.isfinite(values) & (np.asarray(counts) >= max(min_count, 1))
    ax.plot(np.asarray(centres)[shown], values[shown], marker=_MARKERS[i % len(_MARKERS)],
            label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_xlim(0.0, 1.0)
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  if curves:
    ax.legend(loc="best", fontsize="small")
  return fig


def plot_norm_histograms(groups: Mapping[str, np.ndarray], *, title: str = "",
                         xlabel: str = "embedding norm ||z||", bins: int = 40):
  """Overlaid density histograms of norms (e.g. train, test, novel classes, other data)."""
  fig, ax = new_figure(figsize=(6.0, 4.0))
  nonempty = {k: np.asarray(v, np.float64) for k, v in groups.items() if np.size(v)}
  if nonempty:
    everything = np.concatenate(list(nonempty.values()))
    edges = np.linspace(everything.min(), everything.max() + 1e-12, bins + 1)
    for label, norms in nonempty.items():
      ax.hist(norms, bins=edges, density=True, histtype="stepfilled", alpha=0.35,
              label=f"{label} (n={norms.size}, mean {norms.mean():.3g})")
      ax.hist(norms, bins=edges, density=True, histtype="step", linewidth=1.2,
              color=ax.patches[-1].get_facecolor()[:3])
    ax.legend(loc="best", fontsize="small")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  if title:
    ax.set_title(title)
  return fig


def plot_class_norms(class_counts: Sequence[int], mean_norms: Sequence[float], *,
                     title: str = ""):
  """Mean embedding norm of each class vs its number of training examples (log x)."""
  fig, ax = new_figure(figsize=(5.0, 4.0))
  counts = np.asarray(class_counts, np.float64)
  means = np.asarray(mean_norms, np.float64)
  ax.scatter(counts, means)
  for c, (x, y) in enumerate(zip(counts, means)):
    ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(3, 3),
                fontsize="x-small")
  if np.all(counts > 0):
    ax.set_xscale("log")
  ax.set_xlabel("training examples of the class")
  ax.set_ylabel("mean embedding norm (test)")
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  return fig


def plot_trajectories(trajectories: Mapping[str, Tuple[np.ndarray, np.ndarray]], *,
                      title: str = "", log_y: bool = False):
  """Metric value vs training step, one line per metric (e.g. norm/projector_mean)."""
  fig, ax = new_figure(figsize=(6.0, 4.0))
  for label, (steps, values) in trajectories.items():
    ax.plot(steps, values, label=label)
  ax.set_xlabel("training step")
  ax.set_ylabel("embedding norm")
  if log_y:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  if trajectories:
    ax.legend(loc="best", fontsize="small")
  if title:
    ax.set_title(title)
  return fig


def plot_geometry(summary: Mapping, *, heads: Sequence[str]):
  """The geometry job's figure: per head, the mean norm, the centroid norm and the
  centred spread (left axis) and the participation ratio (right axis) against the
  training step, mean over runs with 95% interval bars."""
  steps = sorted(int(s) for s in summary)
  fig, axes = new_figure(1, len(heads), figsize=(5 * len(heads), 3.6), squeeze=False)
  for ax, head in zip(axes[0], heads):
    for key, style in (("mean_norm", "o-"), ("centroid_norm", "s--"), ("centred_rms", "^-")):
      cells = [summary[str(s)][f"{head}/{key}"] for s in steps]
      mean = np.array([c["mean"] for c in cells], float)
      err = np.array([[c["mean"] - c["lo"], c["hi"] - c["mean"]] for c in cells], float).T
      ax.errorbar(steps, mean, yerr=np.nan_to_num(err), fmt=style, capsize=3, label=key)
    ax.set_xlabel("training step")
    ax.set_ylabel("norm")
    ax.set_title(head)
    twin = ax.twinx()
    pr = [summary[str(s)][f"{head}/participation_ratio"]["mean"] for s in steps]
    twin.plot(steps, pr, "k:", label="participation ratio")
    twin.set_ylabel("participation ratio")
    ax.legend(loc="upper left", fontsize=8)
  return fig


def plot_ood_auroc(auroc: Mapping[str, Mapping[str, Sequence[float]]], *, title: str = ""):
  """Grouped bars: per OOD set, each score's mean AUROC over seeds with its 95% t
  interval, and chance (0.5) as a line. `auroc`: {set: {score: [AUROC per seed]}}."""
  fig, ax = new_figure(figsize=(7.0, 4.0))
  sets = list(auroc)
  scores = list(dict.fromkeys(k for per in auroc.values() for k in per))
  width = 0.8 / max(len(scores), 1)
  for j, score in enumerate(scores):
    m = [stats.mean_interval(auroc[s].get(score, [])) for s in sets]
    mean = np.asarray([np.nan if x["mean"] is None else x["mean"] for x in m])
    err = np.asarray([0.0 if x["lo"] is None else x["mean"] - x["lo"] for x in m])
    ax.bar(np.arange(len(sets)) + (j - (len(scores) - 1) / 2) * width, mean, width,
           yerr=err, capsize=2, label=score)
  ax.axhline(0.5, color="0.3", linestyle="--", linewidth=1)
  ax.set_xticks(np.arange(len(sets)), sets)
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("AUROC (OOD vs ID; 0.5 = chance)")
  ax.set_title(title or "OOD detection: mean AUROC over seeds, 95% interval")
  ax.legend(fontsize="x-small", ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
  ax.grid(alpha=0.3, axis="y")
  return fig
