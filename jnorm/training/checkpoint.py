"""Orbax checkpoints of the train state, written atomically, and a workdir lock.

A checkpoint holds every leaf of the `TrainState` (params, BatchNorm statistics,
optimiser state, BYOL target, step, RNG key data); the data position is the step
(the batch stream is a pure function of (seed, step)). Leaves are stored flat, in
`jax.tree.leaves` order, with their tree paths as JSON metadata, and restored into the
structure of a freshly created state; a mismatch (e.g. a checkpoint of another config)
is reported as a `CheckpointError`.

Atomicity: orbax's CheckpointManager writes each step to a temporary directory and
renames it into place only when complete, so a run killed mid-save (SIGKILL
included) leaves no step directory that `latest_step()` would pick up.

Corrupt checkpoints: restoring a step that cannot be read raises a one-line
`CheckpointError` naming the step directory and the fix (delete that directory to resume
from the previous checkpoint). We do not fall back silently: the user decides whether
losing the newest steps is acceptable.
"""

import errno
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from jnorm import errors

LOCK_NAME = "run.lock"


def _path_names(tree) -> list:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


class Checkpointer:
  """Saves and restores the train state under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, primary: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.primary = primary
    # Each process checkpoints on its own (the state is replicated, its host copy is the
    # same everywhere): no cross-process barriers; only the primary process writes.
    mp = ocp.options.MultiprocessingOptions()
    if jax.process_count() > 1:
      mp = ocp.options.MultiprocessingOptions(
          primary_host=None, active_processes={jax.process_index()})
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False,
        multiprocessing_options=mp)
    handlers = {"state": ocp.StandardCheckpointHandler(multiprocessing_options=mp),
                "meta": ocp.JsonCheckpointHandler(multiprocessing_options=mp)}
    os.makedirs(self.directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list:
    return list(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state_host: Any) -> None:
    """Saves a host (numpy) copy of the state as checkpoint `step` (primary only)."""
    if not self.primary:
      return
    leaves = jax.tree.leaves(state_host)
    items = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = {"step": int(step), "paths": _path_names(state_host)}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> Any:
    """Restores checkpoint `step` into the structure (and dtypes) of `target` (host tree)."""
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
    return jax.tree.unflatten(treedef, values)

  def close(self) -> None:
    self._manager.close()


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as exc:
    return exc.errno == errno.EPERM
  return True


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
      try:
        with open(path) as f:
          pid = int(f.read().strip() or "0")
      except (OSError, ValueError):
        pid = 0
      if pid and pid != os.getpid() and _pid_alive(pid):
        raise errors.CheckpointError(
            f"workdir {workdir} is in use by a live run (PID {pid}); wait for it to finish, "
            "stop it, or use another --workdir") from None
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
