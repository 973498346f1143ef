"""Orbax checkpoints of the train state, written atomically, and a workdir lock.

A checkpoint holds every leaf of the `TrainState` (params, BatchNorm statistics,
optimiser state, BYOL target, step, RNG key data); the data position is the step
(the batch stream is a pure function of (seed, step)). Leaves are stored flat, in
`jax.tree.leaves` order, and restored into the structure of a freshly created state.
JSON metadata next to them records the state's tree paths, leaf shapes and dtypes, so
that a checkpoint of another config is recognised from the metadata alone
(`structure_mismatch`, which the training loop checks before a run writes anything;
`restore` refuses such a checkpoint too, with a `CheckpointError`), and the train
metrics of the step (a run resumed at its last step reports the same final loss as an
uninterrupted one).

Atomicity: orbax's CheckpointManager writes each step to a temporary directory and
renames it into place only when complete, so a run killed mid-save (SIGKILL
included) leaves no step directory that `latest_step()` would pick up.

A write that fails on the disk (no space left, a read-only or unwritable directory;
orbax wraps the OSError in its own exceptions) raises a one-line `errors.DiskError`
naming the step directory and the fix; the failed save's temporary directory is never
taken for a checkpoint, and the previous checkpoints are intact (orbax deletes old steps
only after a save completes). orbax's own log records of the failure (with tracebacks)
are dropped: the exception reaches the caller anyway (`_DropOrbaxThreadErrors`).

A temporary directory left by a killed save is removed when the next writer opens the
directory (`cleanup_tmp_directories`), and a save of the same step replaces it.

Corrupt checkpoints: restoring a step that cannot be read raises a one-line
`CheckpointError` naming the step directory and the fix (delete that directory to resume
from the previous checkpoint). We do not fall back silently: the user decides whether
losing the newest steps is acceptable.

Test hook: the environment variable `JNORM_TEST_SAVE_DELAY_S` (seconds) makes every save
pause inside the write, while the temporary directory exists, so that tests can kill a
run in the middle of a checkpoint write.
"""

import errno
import logging
import os
import time
from typing import Any, Optional

from absl import logging as absl_logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from jnorm import errors
from jnorm import json_files

LOCK_NAME = "run.lock"
SAVE_DELAY_ENV = "JNORM_TEST_SAVE_DELAY_S"


def _path_names(tree) -> list:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def describe(tree) -> dict:
  """The structure a checkpoint of `tree` records: tree paths, leaf shapes and dtypes."""
  leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
  return {"paths": _path_names(tree), "shapes": [list(x.shape) for x in leaves],
          "dtypes": [x.dtype.name for x in leaves]}


def structure_mismatch(meta: dict, target: Any) -> Optional[str]:
  """How the structure recorded in a checkpoint's `meta` differs from `target`'s, or None.

  Checkpoints written before shapes were recorded are compared by their tree paths only.
  """
  want = describe(target)
  paths = meta.get("paths", [])
  if paths != want["paths"]:
    missing = [p for p in want["paths"] if p not in paths]
    extra = [p for p in paths if p not in want["paths"]]
    first = (f"no {missing[0]}" if missing else f"an unexpected {extra[0]}" if extra
             else "its leaves in another order")
    return f"{len(paths)} arrays instead of {len(want['paths'])} ({first})"
  for key in ("shapes", "dtypes"):
    if key in meta and meta[key] != want[key]:
      i = next(i for i, (a, b) in enumerate(zip(meta[key], want[key])) if a != b)
      return f"{paths[i]} has {key[:-1]} {meta[key][i]} instead of {want[key][i]}"
  return None


def _delay_saves(handler, delay_s: float):
  """Makes `handler`'s saves first sleep `delay_s` (the `SAVE_DELAY_ENV` test hook); the
  handler keeps its class, which orbax's registry of save arguments goes by."""
  save = handler.async_save

  async def delayed_save(*args, **kwargs):
    time.sleep(delay_s)  # blocks the save while its temporary directory exists
    return await save(*args, **kwargs)
  handler.async_save = delayed_save
  return handler


class _DropOrbaxThreadErrors(logging.Filter):
  """Drops orbax's log record of an exception in one of its writer threads. Our saves are
  synchronous, so the same exception reaches `Checkpointer.save`'s caller (as a one-line
  DiskError, or itself); the record would print its traceback too. After a failed save,
  orbax's remaining writer threads fail the same way at exit; those records go too."""

  def filter(self, record: logging.LogRecord) -> bool:
    from_orbax = f"{os.sep}orbax{os.sep}" in (record.pathname or "")
    return not (from_orbax and record.levelno >= logging.ERROR
                and "raised an exception" in record.getMessage())


_DROP_THREAD_ERRORS = _DropOrbaxThreadErrors()


class Checkpointer:
  """Saves and restores the train state under `<workdir>/checkpoints/<step>`.

  `read_only=True` opens the directory without creating, cleaning or saving anything (to
  check a workdir before a run takes its lock, or to read a live run's checkpoints); a
  missing directory then has no steps. (orbax's own read-only mode logs warnings.)
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 3, primary: bool = True,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.primary = primary and not read_only
    self._manager = None
    if read_only and not os.path.isdir(self.directory):
      return
    # Each process checkpoints on its own (the state is replicated, its host copy is the
    # same everywhere): no cross-process barriers; only the primary process writes.
    mp = ocp.options.MultiprocessingOptions()
    if jax.process_count() > 1:
      mp = ocp.options.MultiprocessingOptions(
          primary_host=None, active_processes={jax.process_index()})
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False,
        multiprocessing_options=mp, cleanup_tmp_directories=self.primary)
    delay = float(os.environ.get(SAVE_DELAY_ENV, "0") or 0)
    meta_handler = ocp.JsonCheckpointHandler(multiprocessing_options=mp)
    if delay > 0:
      meta_handler = _delay_saves(meta_handler, delay)
    handlers = {"state": ocp.StandardCheckpointHandler(multiprocessing_options=mp),
                "meta": meta_handler}
    if not read_only:
      os.makedirs(self.directory, exist_ok=True)
      absl_logging.get_absl_logger().addFilter(_DROP_THREAD_ERRORS)  # once: a set
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return None if self._manager is None else self._manager.latest_step()

  def all_steps(self) -> list:
    return [] if self._manager is None else list(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state_host: Any, *, metrics: Optional[dict] = None) -> None:
    """Saves a host (numpy) copy of the state as checkpoint `step` (primary only).

    Args:
      step: the state's step (the directory name).
      state_host: the train state as a host tree.
      metrics: the train metrics of this step (JSON scalars), kept in the metadata.
    """
    if not self.primary:
      return
    leaves = jax.tree.leaves(state_host)
    items = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = {"step": int(step), **describe(state_host),
            "metrics": json_files.to_json(dict(metrics or {}))}
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()
    except Exception as exc:  # orbax wraps the OSError (or tensorstore's text of it)
      error = errors.disk_error(exc, path=self.step_dir(step), what="the checkpoint")
      if error is None:
        raise
      raise error from None

  def read_meta(self, step: int) -> dict:
    """The JSON metadata of checkpoint `step` (step, paths, shapes, dtypes, metrics)."""
    try:
      return dict(self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
    except Exception as exc:  # orbax raises many types for unreadable files
      raise errors.CheckpointError(
          f"checkpoint {self.step_dir(step)} is unreadable ({type(exc).__name__}); delete "
          "that directory to resume from the previous checkpoint, or use a fresh "
          "--workdir") from None

  def restore(self, step: int, target: Any) -> Any:
    """Restores checkpoint `step` into the structure (and dtypes) of `target` (host tree)."""
    return self.restore_with_meta(step, target)[0]

  def restore_with_meta(self, step: int, target: Any) -> tuple:
    """(state, metadata) of checkpoint `step`; the state in the structure of `target`."""
    leaves, treedef = jax.tree.flatten(target)
    abstract = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    where = self.step_dir(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as exc:  # orbax raises many types for unreadable files
      raise errors.CheckpointError(
          f"checkpoint {where} is unreadable ({type(exc).__name__}); delete that directory "
          "to resume from the previous checkpoint, or use a fresh --workdir") from None
    if restored.meta["paths"] != _path_names(target):
      raise errors.CheckpointError(
          f"checkpoint {where} holds a different state structure (another method/model?); "
          "use a fresh --workdir or the config that wrote it")
    values = [np.asarray(restored.state[f"{i:05d}"]).astype(np.asarray(x).dtype)
              for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, values), dict(restored.meta)

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as exc:
    return exc.errno == errno.EPERM
  return True


def _holder(path: str) -> int:
  """The PID written in the lock file `path` (0 if unreadable or empty)."""
  try:
    with open(path) as f:
      return int(f.read().strip() or "0")
  except (OSError, ValueError):
    return 0


def _in_use(workdir: str, pid: int) -> errors.CheckpointError:
  return errors.CheckpointError(
      f"workdir {workdir} is in use by a live run (PID {pid}); wait for it to finish, "
      "stop it, or use another --workdir")


def check_unlocked(workdir: str) -> None:
  """Raises `CheckpointError` if a live run holds `<workdir>/run.lock` (writes nothing)."""
  pid = _holder(os.path.join(workdir, LOCK_NAME))
  if pid and pid != os.getpid() and _pid_alive(pid):
    raise _in_use(workdir, pid)


def acquire_lock(workdir: str) -> str:
  """Creates `<workdir>/run.lock` holding this PID; refuses if a live run holds it.

  A lock left by a dead process (crash, SIGKILL) is taken over. Returns the lock path.
  """
  path = os.path.join(workdir, LOCK_NAME)
  os.makedirs(workdir, exist_ok=True)
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      pid = _holder(path)
      if pid and pid != os.getpid() and _pid_alive(pid):
        raise _in_use(workdir, pid) from None
      try:  # stale lock of a dead process (or our own): take it over
        os.remove(path)
      except FileNotFoundError:
        pass
      continue
    with os.fdopen(fd, "w") as f:
      f.write(f"{os.getpid()}\n")
    return path
  raise errors.CheckpointError(f"could not lock {path}; remove it if no run is using {workdir}")


def release_lock(path: str) -> None:
  try:
    with open(path) as f:
      if int(f.read().strip() or "0") != os.getpid():
        return
    os.remove(path)
  except (OSError, ValueError):
    pass
