"""Scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard event files.

TensorBoard files are written with tensorboardX (pure Python; CLU's writers import
TensorFlow). Each jsonl line is {"step": s, "kind": "train"|"eval", ...scalars}; lines
are appended and flushed, so a killed run keeps what it logged. On resume, train lines
from steps after the checkpoint being resumed, and eval lines from its step on, are
dropped: the resumed run logs them again (it repeats the evaluation at the checkpoint's
step, which a kill may have cut short), so the file ends as an uninterrupted run's.
Non-finite values are written as null (the convention of every JSON file jnorm writes).
A line that cannot be written (a full or read-only disk) raises a one-line
`errors.DiskError`; the lines before it stay.
`read_metrics` is the one reader of the file.
"""

import contextlib
import json
import math
import os
from typing import Mapping, Optional

from jnorm import errors


class MetricsWriter:
  """Appends scalar metrics to a jsonl file and (optionally) TensorBoard."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True,
               resume_step: Optional[int] = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    _truncate_after(self.path, resume_step)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], *, kind: str = "train") -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    record = {"step": int(step), "kind": kind}
    record.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError as exc:  # the lines before stay; a cut line is skipped on resume
      error = errors.disk_error(exc, path=self.path, what=f"the step-{step} line of")
      if error is None:
        raise
      raise error from None
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{kind}/{k}", v, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      with self._tensorboard_writes():
        self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      tb, self._tb = self._tb, None
      with self._tensorboard_writes():
        tb.close()

  @contextlib.contextmanager
  def _tensorboard_writes(self):
    """A disk fault of the TensorBoard event file (written on flush) as a DiskError."""
    try:
      yield
    except OSError as exc:
      error = errors.disk_error(exc, path=os.path.join(os.path.dirname(self.path),
                                                       "tensorboard"),
                                what="the TensorBoard events in")
      if error is None:
        raise
      raise error from None


def _truncate_after(path: str, step: Optional[int]) -> None:
  """Keeps train records with step <= `step` and eval records with step < `step`.

  `step` None (a fresh start) removes the file.
  """
  if step is None or not os.path.exists(path):
    if step is None and os.path.exists(path):
      os.remove(path)
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        if record["step"] < step or (record["step"] == step and record.get("kind") != "eval"):
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        continue  # a line cut short by a kill
  tmp = path + ".tmp"  # atomic: a kill here leaves the old file or the new one
  with open(tmp, "w") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_metrics(workdir: str, *, kind: Optional[str] = None) -> list:
  """All records of `<workdir>/metrics.jsonl` (optionally of one kind), in file order.

  A line cut short by a killed run is skipped; a missing file gives [].
  """
  path = os.path.join(workdir, "metrics.jsonl")
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except ValueError:
          continue  # a line cut short by a kill
        if isinstance(rec, dict) and (kind is None or rec.get("kind") == kind):
          records.append(rec)
  return records
