"""Figure helpers every plot module uses: a headless figure and an atomic PNG save."""

import os

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
  matplotlib.use("Agg")  # headless machines and CI: no display
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def new_figure(*args, **kwargs):
  """`plt.subplots` on the non-interactive Agg backend (safe on headless machines)."""
  return plt.subplots(*args, **kwargs)


def save_figure(fig, workdir: str, name: str) -> str:
  """Saves `fig` as `<workdir>/<name>.png` (150 dpi), closes it and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f"{name}.png")
  tmp = os.path.join(workdir, f".tmp-{name}.png")
  fig.tight_layout()
  fig.savefig(tmp, dpi=150)
  os.replace(tmp, path)  # a killed run never leaves a half-written figure
  plt.close(fig)
  return path
