"""Guards of a training run: checks made before it writes anything (the batch layout, whether a workdir's checkpoints belong to this config) and the
fail-fast check of non-finite values during training and evaluation."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jnorm import errors
from jnorm import json_files
from jnorm.training import checkpoint as ckpt_lib
from jnorm.training import step as ts


def _kept(last_saved) -> str:
  return (f"checkpoint of step {last_saved} kept" if last_saved is not None
          else "no checkpoint written")


def _nonfinite_error(names: list, step: int, where: str, last_saved) -> errors.NonFiniteError:
  shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
  return errors.NonFiniteError(
      f"non-finite {shown} {where} at step {step} ({_kept(last_saved)}); lower "
      "config.optim.learning_rate (or config.norm.gradscale_power) and start again in a "
      "fresh --workdir")


class FiniteTracker:
  """Remembers, on the device, the first step at which each train metric was non-finite.

  `update` runs after every step without a host sync (one small jitted op on the
  replicated metrics); `check` fetches the record where the loop syncs anyway (log,
  checkpoint and eval steps), so no non-finite value of any step, logged or not, goes
  unnoticed, and none gets into a checkpoint: the check runs before every save.
  """

  def __init__(self, mesh, first_step: int):
    self._mesh = mesh
    self._next = first_step  # the step number of the next metrics (1-based, as logged)
    self._keys = None
    self._first_bad = self._count = None
    self._update = jax.jit(self._update_fn)

  @staticmethod
  def _update_fn(first_bad, count, metrics):
    bad = jnp.stack([~jnp.all(jnp.isfinite(metrics[k])) for k in sorted(metrics)])
    return jnp.where((first_bad < 0) & bad, count, first_bad), count + 1

  def update(self, device_metrics) -> None:
    if self._keys is None:
      self._keys = sorted(device_metrics)
      self._first_bad = ts.replicate(np.full([len(self._keys)], -1, np.int32), self._mesh)
      self._count = ts.replicate(np.int32(self._next), self._mesh)
    self._first_bad, self._count = self._update(self._first_bad, self._count, device_metrics)

  def check(self, last_saved) -> None:
    """Raises `NonFiniteError` naming the first non-finite metric(s) and their step."""
    if self._keys is None:
      return
    first_bad = np.asarray(self._first_bad.addressable_data(0))
    if (first_bad >= 0).any():
      step = int(first_bad[first_bad >= 0].min())
      names = [k for k, s in zip(self._keys, first_bad) if s == step]
      raise _nonfinite_error(names, step, "in training", last_saved)


def check_finite_eval(record: dict, step: int, last_saved) -> None:
  bad = [k for k, v in record.items() if not np.all(np.isfinite(v))]
  if bad:
    raise _nonfinite_error(bad, step, "in the evaluation", last_saved)


# Fields a resumed run may change: they change how a run is logged, checkpointed or
# launched, not what it computes.
RESUMABLE_CHANGES = ("progress_bar", "log_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "distributed", "data.data_dir", "data.in_memory",
                     "cpu_tuning", "eval.background")


def _flatten(tree, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _config_differences(saved: dict, config) -> list:
  """'field: saved -> given' for every field (outside `RESUMABLE_CHANGES`) that differs
  between a run's saved config and `config` (fields only one of them has are skipped)."""
  given = _flatten(json.loads(json.dumps(json_files.to_json(config.to_dict()))))
  saved = _flatten(saved)
  diffs = []
  for key in sorted(set(given) & set(saved)):
    if any(key == f or key.startswith(f + ".") for f in RESUMABLE_CHANGES):
      continue
    if given[key] != saved[key]:
      diffs.append(f"{key}: {saved[key]!r} -> {given[key]!r}")
  return diffs


def check_layout(config) -> None:
  """The global batch must split evenly over the processes and the devices."""
  for count, what in ((jax.process_count(), "processes"), (jax.device_count(), "devices")):
    if config.batch_size % count:
      raise errors.ConfigError(
          f"config.batch_size={config.batch_size} is not divisible by the {count} {what}; "
          f"use a multiple of {count}")


def check_resumable(config, workdir: str, fresh_state) -> None:
  """Refuses (before the run writes anything) a workdir whose checkpoints another config
  wrote: its saved config differs in a field outside `RESUMABLE_CHANGES`, or its newest
  checkpoint holds a state of another structure. A workdir without checkpoints passes.

  Raises:
    ConfigError: the checkpoints belong to another config.
    CheckpointError: the newest checkpoint's metadata or config.json cannot be read.
  """
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    latest = checkpointer.latest_step()
    if latest is None:
      return
    fix = "rerun with the config that wrote it, or use a fresh --workdir"
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
      try:
        with open(path) as f:
          saved = json.load(f)["config"]
      except (OSError, ValueError, KeyError, TypeError) as exc:
        raise errors.CheckpointError(
            f"{path} is unreadable ({type(exc).__name__}); restore it, or use a fresh "
            "--workdir") from None
      diffs = _config_differences(saved, config)
      if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise errors.ConfigError(
            f"the checkpoints in {workdir} were written by another config "
            f"({'; '.join(diffs[:3])}{more}); {fix}")
    mismatch = ckpt_lib.structure_mismatch(checkpointer.read_meta(latest), fresh_state)
    if mismatch:
      raise errors.ConfigError(
          f"checkpoint {checkpointer.step_dir(latest)} holds the state of another config "
          f"({mismatch}); {fix}")
  finally:
    checkpointer.close()
