"""JSON output shared by every job: atomic writes, one convention for non-finite numbers.

JSON has no inf or NaN. Every file jnorm writes stores a non-finite float as `null`
(never as a large number that a reader could mistake for a measurement); runs that
produce non-finite metrics stop before writing results (`jnorm.errors.NonFiniteError`).
A write the disk refuses (full, read-only) raises a one-line `jnorm.errors.DiskError`
and leaves the previous file intact.
"""

import json
import os
import tempfile
from typing import Any

import numpy as np

from jnorm import errors


def to_json(obj: Any) -> Any:
  """Numpy / jax scalars and arrays as JSON-serialisable Python values; inf and NaN as None."""
  if isinstance(obj, dict):
    return {str(k): to_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_json(v) for v in obj]
  if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
    return to_json(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return None
  return obj


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` through a temporary file and an atomic rename.

  Raises:
    errors.DiskError: the disk refused the write (no space left, read-only, not
      writable); the previous file at `path`, if any, is intact.
  """
  try:
    _write_json_atomic(path, obj)
  except OSError as exc:
    error = errors.disk_error(exc, path=path, what="the file")
    if error is None:
      raise
    raise error from None


def _write_json_atomic(path: str, obj: Any) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(to_json(obj), f, indent=2, sort_keys=True, allow_nan=False)
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
