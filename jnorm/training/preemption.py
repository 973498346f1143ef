"""Preemption: SIGTERM or SIGINT stops a training run at a step, with its checkpoint.

SIGTERM (a cloud VM's preemption notice) or SIGINT (Ctrl-C) during a run
does not end the process at once. The run finishes the step in progress, saves a
checkpoint of it (unless that step's periodic one is already saved) and raises
`errors.Preempted`, which `jnorm.main` prints as one line and turns into exit code
`errors.EXIT_PREEMPTED` (75); the same command resumes bit-identically. Repeated signals
while it stops are ignored (the save is never cut short; checkpoint writes are atomic
anyway, `jnorm.training.checkpoint`). A signal during the final evaluation lets the run
finish, unless it arrived before that evaluation began (then the run stops with its final
checkpoint saved, and the rerun only evaluates). With several processes (jax.distributed)
every process must stop at the same step: the stop step is agreed with JAX's preemption
sync point (`multihost_utils.reached_preemption_sync_point`, asked after every step), whose
notifier, installed by `jax.distributed.initialize`, catches SIGTERM itself; SIGINT is
passed on to it as a SIGTERM. Without JAX's preemption service
(`jax_enable_preemption_service=False`) a multi-process run keeps the default handlers.
The handlers are installed only in the main thread and only while `train_and_evaluate`
runs (or inside an enclosing `stop_on_signals()`, as a comparison's); the previous
handlers are put back afterwards.
"""

import contextlib
import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from jnorm import errors

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The innermost stop_on_signals() scope's state: how deep the scopes are nested, the
# first signal received (its name) and whether SIGTERM belongs to JAX's notifier.
_stop = {"depth": 0, "received": None, "to_jax": False}


def _record_signal(signum, frame) -> None:  # pylint: disable=unused-argument
  if _stop["received"] is None:  # repeated signals: already stopping
    _stop["received"] = signal.Signals(signum).name
  if _stop["to_jax"] and signum != signal.SIGTERM:
    signal.raise_signal(signal.SIGTERM)  # JAX's notifier (C++) holds SIGTERM's handler


def _preemption_service() -> bool:
  """Whether this is a multi-process run with JAX's preemption sync manager."""
  # reached_preemption_sync_point raises without the manager; jax has no public test.
  from jax._src import distributed  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return (jax.process_count() > 1 and getattr(
      distributed.global_state, "preemption_sync_manager", None) is not None)


@contextlib.contextmanager
def stop_on_signals():
  """While inside, SIGTERM and SIGINT request a stop (`stop_requested()`) instead of
  ending the process; nested scopes share the outermost one's handlers, which are put
  back on leaving it. A no-op outside the main thread (Python handles signals there
  only), and for SIGTERM of a multi-process run, which JAX's notifier handles."""
  installed = {}
  if _stop["depth"] == 0:
    _stop["received"] = None
    _stop["to_jax"] = False
    if threading.current_thread() is threading.main_thread():
      multi = jax.process_count() > 1
      if not multi or _preemption_service():
        _stop["to_jax"] = multi
        for sig in _STOP_SIGNALS:
          if not (multi and sig == signal.SIGTERM):
            installed[sig] = signal.signal(sig, _record_signal)
  _stop["depth"] += 1
  try:
    yield
  finally:
    _stop["depth"] -= 1
    for sig, previous in installed.items():  # None: a handler not set from Python
      signal.signal(sig, signal.SIG_DFL if previous is None else previous)
    if _stop["depth"] == 0:
      _stop["to_jax"] = False


def stop_requested() -> str | None:
  """The signal (its name, e.g. 'SIGTERM') that asked this process to stop inside the
  current (or, after it, the last) outermost `stop_on_signals()`, or None. A
  multi-process run stops where `StopSync` says, which agrees on the step."""
  return _stop["received"]


class StopSync:
  """Whether to stop after a step: this process's signal, or (several processes) JAX's
  preemption sync point, which every process reaches at the same step."""

  def __init__(self):
    self.sync = _preemption_service()

  def after_step(self, step: int) -> bool:
    """Asked after every step (every process, the same steps: the sync point needs it)."""
    if self.sync:
      return multihost_utils.reached_preemption_sync_point(step)
    return stop_requested() is not None

  def now(self) -> bool:
    """Whether this process was asked to stop, for the checks between a step's save, its
    evaluation and the final evaluation (one process only: several processes agree on
    the step with the sync point after each step, and on nothing in between)."""
    return not self.sync and stop_requested() is not None


def preempted_error(step: int, workdir: str, stop: StopSync) -> errors.Preempted:
  # Several processes: the notice may have reached another process first.
  how = stop_requested() or ("preemption notice" if stop.sync else "signal")
  return errors.Preempted(
      f"preempted ({how}) at step {step}; checkpoint saved in "
      f"{os.path.join(workdir, 'checkpoints', str(step))}; run the same command to resume",
      step=step)
