"""jnorm.plots: every figure module draws from plain inputs and writes a PNG."""

import os

import numpy as np

from jnorm import norms
from jnorm import tables
from jnorm.plots import analysis
from jnorm.plots import compare
from jnorm.plots import figures
from jnorm.plots import training


def test_analysis_plots_write_pngs(tmp_path):
  centres = norms.bucket_centres(20)
  values = np.where(np.arange(20) % 7 == 0, np.nan, np.linspace(0.5, 1.0, 20))
  figs = {
      "buckets": analysis.plot_norm_buckets(
          {"projector": (centres, values, np.arange(20)), "backbone": (centres, values[::-1],
                                                                       np.arange(20))},
          min_count=2, title="t"),
      "hist": analysis.plot_norm_histograms(
          {"seen": np.random.default_rng(0).normal(5, 1, 100), "novel": np.ones(5),
           "empty": np.zeros(0)}),
      "classes": analysis.plot_class_norms([5000, 3333, 2222], [3.0, 2.5, 2.0]),
      "traj": analysis.plot_trajectories({"n": (np.arange(5), np.arange(1.0, 6.0))},
                                               log_y=True),
  }
  for name, fig in figs.items():
    path = figures.save_figure(fig, str(tmp_path), name)
    assert os.path.getsize(path) > 1000
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def _run(seed_shift):
  return {"knn_curve": [{"epoch": e, "knn_accuracy": 0.1 * e + seed_shift,
                         "projector_norm_mean": 1.0 + e + seed_shift,
                         "projector_norm_mean_train_mode": 2.0 + e}
                        for e in (1, 2, 3)]}


def test_compare_plots_write_both_figures_with_one_or_more_seeds(tmp_path):
  curves = {"a": tables.aggregate_curves([_run(0.0), _run(0.02)]),
            "b": tables.aggregate_curves([_run(0.05)])}  # one seed: no band
  paths = compare.plot_curves(curves, str(tmp_path), title="t")
  assert [os.path.basename(p) for p in paths] == ["knn_accuracy_vs_epoch.png",
                                                  "norm_vs_epoch.png"]
  for path in paths:
    assert os.path.getsize(path) > 1000


def test_training_plot_writes_knn_curve(tmp_path):
  path = training.plot_knn_curve(_run(0.0)["knn_curve"], str(tmp_path))
  assert path == os.path.join(str(tmp_path), "knn_curve.png") and os.path.getsize(path) > 1000
