"""The "train" job: one training run (`jnorm.training.loop`) and its figure."""

import ml_collections

from jnorm.plots import training as training_plots
from jnorm.training import loop


def train_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates the configured run; writes knn_curve.png next to its results."""
  results = loop.train_and_evaluate(config, workdir)
  if loop.is_primary():
    training_plots.plot_knn_curve(results["knn_curve"], workdir)
  return results
