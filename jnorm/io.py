"""Small output helpers shared by every job: atomic JSON writes and figures."""

import json
import os
import tempfile
from typing import Any

import numpy as np


def _to_builtin(obj: Any) -> Any:
  """Converts numpy / jax scalars and arrays into JSON-serialisable Python values."""
  if isinstance(obj, dict):
    return {str(k): _to_builtin(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_builtin(v) for v in obj]
  if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
    return np.asarray(obj).tolist()
  if isinstance(obj, float) and not np.isfinite(obj):
    return None if np.isnan(obj) else (1e308 if obj > 0 else -1e308)
  return obj


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` through a temporary file and an atomic rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(_to_builtin(obj), f, indent=2, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_results(workdir: str, results: dict) -> str:
  """Writes `<workdir>/results.json` atomically and returns its path."""
  path = os.path.join(workdir, "results.json")
  write_json_atomic(path, results)
  return path


def load_results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def new_figure(*args, **kwargs):
  """`plt.subplots` on the non-interactive Agg backend (safe on headless machines)."""
  import matplotlib
  if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt.subplots(*args, **kwargs)


def save_figure(fig, workdir: str, name: str) -> str:
  """Saves `fig` as `<workdir>/<name>.png` (150 dpi), closes it and returns the path."""
  import matplotlib.pyplot as plt
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f"{name}.png")
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path
