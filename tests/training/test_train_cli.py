"""The training job end to end through `python -m jnorm.main` (subprocesses)."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jnorm import json_files
from jnorm.training import checkpoint
from jnorm.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 12 steps of batch 64 on 8x8 digits, cut-init c = 2, a checkpoint every 2 steps.
COMMON = ["--config", os.path.join(ROOT, "configs/default.py:smoke"),
          "--config.data.image_size=8", "--config.batch_size=64", "--config.num_epochs=0.6",
          "--config.checkpoint_every_steps=2", "--config.norm.cut_factor=2.0",
          "--config.progress_bar=False", "--config.eval.batch_size=1024"]


@pytest.fixture(scope="module")
def env():
  # The session's compilation cache (tests/conftest.py): later runs reuse the compilations.
  e = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  e.pop("XLA_FLAGS", None)
  return e


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "jnorm.main", *COMMON, "--workdir", workdir, *extra]


def _run(env, workdir, *extra):
  return subprocess.run(_cmd(workdir, *extra), env=env, capture_output=True, text=True,
                        timeout=600, cwd=ROOT)


def _final_state(workdir):
  c = checkpoint.Checkpointer(workdir)
  step = c.latest_step()
  items = c._manager.restore(step)  # raw leaves, no target needed  # pylint: disable=protected-access
  c.close()
  return step, [np.asarray(items.state[k]) for k in sorted(items.state)]


def test_bad_config_value_exits_2_with_one_line(env, tmp_path):
  proc = _run(env, str(tmp_path / "w"), "--config.optim.name=adam")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "config.optim.name" in lines[0] and "'sgd'" in lines[0]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(env, tmp_path):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  proc = _run(env, full)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json_files.load_results(full)
  for key in ("knn_accuracy", "knn_accuracy_at_init", "embedding_norm_mean", "steps",
              "wall_seconds", "knn_curve", "dataset"):
    assert key in results
  assert results["steps"] == 12 and "class_counts" in results["dataset"]
  assert os.path.exists(os.path.join(full, "metrics.jsonl"))

  victim = subprocess.Popen(_cmd(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  deadline = time.time() + 500
  while not os.path.isdir(os.path.join(killed, "checkpoints", "4")):
    assert victim.poll() is None and time.time() < deadline, "run ended before the kill"
    time.sleep(0.05)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert not os.path.exists(os.path.join(killed, "results.json"))
  proc = _run(env, killed)  # resumes; the dead run's lock is taken over
  assert proc.returncode == 0, proc.stderr[-3000:]
  resumed = json_files.load_results(killed)
  assert resumed["resumed_from_step"] >= 4
  step_a, leaves_a = _final_state(full)
  step_b, leaves_b = _final_state(killed)
  assert step_a == step_b == 12
  for a, b in zip(leaves_a, leaves_b):  # cut-init is not re-applied on resume either
    np.testing.assert_array_equal(a, b)

  config, embed_fn = loop.load_trained(full)
  out = embed_fn(np.zeros((3, 8, 8, 1), np.float32))
  assert out["backbone"].shape[0] == 3 and out["projector"].shape == (3, 128)
  assert config.norm.cut_factor == 2.0


def test_second_live_run_is_refused(env, tmp_path):
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    with open(os.path.join(workdir, checkpoint.LOCK_NAME), "w") as f:
      f.write(f"{holder.pid}\n")
    proc = _run(env, workdir)
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 1
  assert "in use by a live run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(env, tmp_path):
  workdir = str(tmp_path / "w")
  proc = _run(env, workdir, "--config.optim.learning_rate=1e30",
              "--config.checkpoint_every_steps=1")
  assert proc.returncode == 1
  assert "non-finite" in proc.stderr and "at step" in proc.stderr
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  c = checkpoint.Checkpointer(workdir)
  for step in c.all_steps():
    items = c._manager.restore(step)  # pylint: disable=protected-access
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(items.state)
               if np.asarray(v).dtype.kind == "f")
