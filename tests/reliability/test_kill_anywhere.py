"""SIGKILL at random moments, also inside checkpoint writes: every restart resumes from
the newest complete checkpoint, and the run ends bit-identical to an uninterrupted one.

The tiny run (8 steps, a checkpoint every step) is killed at least `MIN_KILLS` times,
alternating two kinds of kill:
  'save'    inside a checkpoint write: `JNORM_TEST_SAVE_DELAY_S` holds every save open
            (its temporary directory exists) for SAVE_DELAY_S; the kill lands at a random
            moment of the process's second save, so each such kill gains one step;
  'random'  after a random delay from the start, up to the time a process took to reach
            its first save: during imports, config checks, restore, metrics truncation,
            config.json, the repeated evaluation, compilation or the first step (these
            kills gain at most a step, which leaves room for all the 'save' kills).
"""

import os
import random
import signal
import time

import pytest

import reliability_util as ru

SAVE_DELAY_S = 0.25
MIN_KILLS = 10


def _kill_in_save(proc, workdir, newest, rng):
  """Kills `proc` inside its write of checkpoint `newest + 2`.

  Returns:
    (the kill's record, seconds from the start to its first save), or (None, None) if
    it ended first.
  """
  start, first_save, target = time.time(), None, newest + 2
  left_over = newest + 1 in ru.temporary_steps(workdir)  # by a kill inside that save
  while target not in (temporary := ru.temporary_steps(workdir)):
    if proc.poll() is not None:
      return None, None
    if newest + 1 not in temporary:
      left_over = False  # cleaned up by this process's checkpointer
    elif first_save is None and not left_over:
      first_save = time.time() - start
    time.sleep(0.01)
  time.sleep(rng.uniform(0.0, 0.75 * SAVE_DELAY_S))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  inside = target in ru.temporary_steps(workdir) and target not in ru.complete_steps(workdir)
  return {"kind": "save", "step": target, "inside_save": inside}, first_save


def _kill_at_random(proc, delay):
  """Kills `proc` `delay` seconds after its start; None if it ended first."""
  deadline = time.time() + delay
  while time.time() < deadline:
    if proc.poll() is not None:
      return None
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return {"kind": "random", "after_s": round(delay, 2), "inside_save": False}


@pytest.mark.slow
def test_kills_anywhere_end_bit_identical(reference_run, cli_env, tmp_path):
  env = dict(cli_env, **{"JNORM_TEST_SAVE_DELAY_S": str(SAVE_DELAY_S)})
  workdir = str(tmp_path / "run")
  rng = random.Random(20240601)
  kills, resumed_from = [], []
  to_first_save = 5.0  # seconds from a start to its first save; measured by 'save' kills
  for attempt in range(4 * MIN_KILLS):
    newest = (ru.complete_steps(workdir) or [0])[-1]
    kind = None
    if len(kills) < MIN_KILLS:
      kind = "save" if len(kills) % 2 == 0 and newest + 2 <= ru.TOTAL_STEPS else "random"
    log = tmp_path / f"attempt{attempt}.log"
    proc = ru.popen(ru.tiny_args(workdir), env, log=str(log))
    if kind == "save":
      kill, first_save = _kill_in_save(proc, workdir, newest, rng)
      to_first_save = first_save or to_first_save
    elif kind == "random":
      kill = _kill_at_random(proc, rng.uniform(0.1, 1.0) * to_first_save)
    else:
      kill = None
    proc.wait(timeout=300)
    text = log.read_text()
    if "jnorm: resuming from" in text:  # printed once the checkpoint is restored
      assert f"checkpoints/{newest} (step {newest})" in text, (newest, text[-2000:])
      resumed_from.append(newest)
    elif "job 'train' finished" in text or proc.returncode == 0:
      assert newest == 0, text[-2000:]  # only a run without checkpoints starts afresh
    if kill is None:
      assert proc.returncode == 0, text[-3000:]
      break
    assert proc.returncode == -signal.SIGKILL, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    kills.append(kill)
  print(f"{len(kills)} kills: {kills}; resumed from {resumed_from}")
  assert len(kills) >= MIN_KILLS
  assert sum(k["inside_save"] for k in kills) >= 3, kills
  assert not ru.temporary_steps(workdir)  # the finished run cleaned up killed saves
  assert not os.path.exists(os.path.join(workdir, "run.lock"))
  ru.assert_same_run(workdir, reference_run)
