"""Orbax checkpoints: exact round trip, atomicity, corruption, and the workdir lock."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm import errors
from jnorm import optim
from jnorm.training import checkpoint
from jnorm.training import step as ts
import multiprocess_worker as mw


def _state():
  tx = optim.make_optimizer(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                            weight_decay=1e-4, accumulation_steps=2)
  return jax.device_get(ts.create_train_state(
      net=mw.TinyNet(), tx=tx, seed=3, sample_input=jnp.zeros((2, 4, 4, 1)), with_target=True))


def test_round_trip_is_exact(tmp_path):
  state = _state()
  state = state.replace(step=np.int32(7), params=jax.tree.map(lambda x: x + 0.5, state.params))
  c = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
  for s in (1, 2, 7):
    c.save(s, state)
  assert c.all_steps() == [2, 7] and c.latest_step() == 7
  fresh = _state()
  got = c.restore(7, fresh)
  assert jax.tree.structure(got) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, b)


def test_partial_write_is_never_picked_up(tmp_path):
  c = checkpoint.Checkpointer(str(tmp_path))
  c.save(3, _state())
  # What a save killed before orbax's final rename leaves behind:
  os.makedirs(os.path.join(c.directory, "6.orbax-checkpoint-tmp-1234", "state"))
  with open(os.path.join(c.directory, "6.orbax-checkpoint-tmp-1234", "state", "x"), "w") as f:
    f.write("half")
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 3


def test_corrupt_checkpoint_names_the_step_dir(tmp_path):
  c = checkpoint.Checkpointer(str(tmp_path))
  c.save(5, _state())
  for root, _, files in os.walk(c.step_dir(5)):
    for name in files:
      with open(os.path.join(root, name), "w") as f:
        f.write("garbage")
  with pytest.raises(errors.CheckpointError) as info:
    checkpoint.Checkpointer(str(tmp_path)).restore(5, _state())
  msg = str(info.value)
  assert c.step_dir(5) in msg and "delete" in msg and "\n" not in msg


def test_structure_mismatch_is_a_checkpoint_error(tmp_path):
  c = checkpoint.Checkpointer(str(tmp_path))
  c.save(1, _state())
  other = jax.device_get(ts.create_train_state(
      net=mw.TinyNet(predictor=True), tx=optim.make_optimizer(
          name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=0.0),
      seed=0, sample_input=jnp.zeros((2, 4, 4, 1))))
  with pytest.raises(errors.CheckpointError):
    c.restore(1, other)


def test_lock_refuses_a_live_run_and_takes_over_a_dead_one(tmp_path):
  workdir = str(tmp_path)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    with open(os.path.join(workdir, checkpoint.LOCK_NAME), "w") as f:
      f.write(f"{sleeper.pid}\n")
    with pytest.raises(errors.CheckpointError, match=f"PID {sleeper.pid}"):
      checkpoint.acquire_lock(workdir)
  finally:
    sleeper.kill()
    sleeper.wait()
  path = checkpoint.acquire_lock(workdir)  # the holder is dead now: stale lock taken over
  with open(path) as f:
    assert int(f.read()) == os.getpid()
  checkpoint.release_lock(path)
  assert not os.path.exists(path)
