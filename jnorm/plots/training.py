"""The figure of one training run: kNN accuracy and projector norm vs epoch."""

from jnorm.plots.figures import new_figure, save_figure


def plot_knn_curve(curve: list, workdir: str) -> str:
  """Writes `<workdir>/knn_curve.png` from a run's `knn_curve` records; returns its path."""
  fig, axes = new_figure(1, 2, figsize=(8, 3))
  epochs = [r["epoch"] for r in curve]
  axes[0].plot(epochs, [r["knn_accuracy"] for r in curve], "o-")
  axes[0].set(xlabel="epoch", ylabel="kNN accuracy (test)")
  axes[1].plot(epochs, [r["projector_norm_mean"] for r in curve], "o-")
  axes[1].set(xlabel="epoch", ylabel="mean projector norm (test)")
  return save_figure(fig, workdir, "knn_curve")
