"""Figure helpers every plot module uses: a headless figure and an atomic PNG save."""

import os


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (headless machines and CI: no
  display), or on a notebook's inline backend. Imported on first use: matplotlib takes
  ~0.8 s to import, which every `python -m jnorm.main` would otherwise pay."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def new_figure(*args, **kwargs):
  """`plt.subplots` on the non-interactive Agg backend (safe on headless machines)."""
  return pyplot().subplots(*args, **kwargs)


def save_figure(fig, workdir: str, name: str) -> str:
  """Saves `fig` as `<workdir>/<name>.png` (150 dpi), closes it and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f"{name}.png")
  tmp = os.path.join(workdir, f".tmp-{name}.png")
  fig.tight_layout()
  fig.savefig(tmp, dpi=150)
  os.replace(tmp, path)  # a killed run never leaves a half-written figure
  pyplot().close(fig)
  return path
