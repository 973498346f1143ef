"""The sharded train step: every method runs, device-count invariance, multi-process."""

import functools
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnorm import methods
from jnorm.models import build
from jnorm.training import step as ts
import multiprocess_worker as mw

# The folder of multiprocess_worker.py (the subprocesses import it from there).
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(method, *, tau_fn=None, lr=0.1):
  net = mw.TinyNet(bn_axis_name=ts.AXIS, predictor=method != "simclr")
  tx = optax.sgd(lr, momentum=0.9)
  state = ts.create_train_state(net=net, tx=tx, seed=0, sample_input=jnp.zeros((2, 4, 4, 1)),
                                with_target=method == "byol")
  mesh = ts.make_mesh()
  spec = methods.MethodSpec(name=method, axis_name=ts.AXIS)
  step = ts.make_train_step(apply_fn=net.apply, tx=tx, spec=spec, schedule=lambda s: lr,
                            mesh=mesh, augment_fn=mw.noise_views, tau_fn=tau_fn)
  return state, step, mesh


@pytest.mark.parametrize("method", ["simclr", "simsiam", "byol"])
def test_every_method_trains_a_few_steps(method):
  tau = 0.9
  state, step, mesh = _setup(method, tau_fn=(lambda s: tau) if method == "byol" else None)
  init_params = jax.device_get(state.params)
  state = ts.replicate(state, mesh)
  batch = ts.shard_batch({"input": mw.global_batch()}, mesh)
  for i in range(3):
    old = ts.local_copy(state)
    state, metrics = step(state, batch)
    assert int(state.step) == i + 1
    assert all(np.isfinite(float(v)) for v in metrics.values())
  assert metrics["norm_projector_v1_min"] <= metrics["norm_projector_v1_mean"] <= metrics[
      "norm_projector_v1_max"]
  new = ts.local_copy(state)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), init_params, new.params)
  assert max(jax.tree.leaves(moved)) > 0
  if method == "byol":  # the target follows the online params by EMA, exactly
    want = jax.tree.map(lambda p, t: t + (1 - tau) * (p - t), new.params, old.target_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 new.target_params, want)
  if method == "simsiam":
    assert "norm_predictor_v2_mean" in metrics


@pytest.mark.slow
def test_initialisation_at_optimisation_level_one_is_bit_identical():
  # create_train_state compiles the initialisers at LLVM level 1 on CPU (half the compile
  # time); the parameters must be XLA's default level's, bit for bit.
  assert ts.init_compiler_options() == {"xla_backend_optimization_level": 1}
  cfg = build.default_model_config()
  cfg.backbone, cfg.projector_dims = "small_resnet", (128, 128)
  init = functools.partial(build.build_ssl_net(cfg).init, train=True)
  key, x = jax.random.key(7), jnp.zeros((2, 16, 16, 1))
  fast = jax.jit(init, compiler_options=ts.init_compiler_options())(key, x)
  default = jax.jit(init)(key, x)
  leaves = jax.tree.leaves(jax.tree.map(np.array_equal, fast, default))
  assert len(leaves) > 40 and all(leaves)


def test_effective_step_is_lr_over_squared_norm():
  lr = 0.1
  state, step, mesh = _setup("simclr", lr=lr)
  params, batch_stats, rng = jax.device_get((state.params, state.batch_stats, state.rng))
  x = mw.global_batch()
  _, metrics = step(ts.replicate(state, mesh), ts.shard_batch({"input": x}, mesh))
  # The projector embeddings the step saw: step 0's key, each view's BatchNorm statistics
  # over the whole batch (synced BatchNorm = one device without an axis).
  key = jax.random.fold_in(jax.random.wrap_key_data(rng), 0)
  net = mw.TinyNet(bn_axis_name=None)
  sq_norms = np.concatenate([
      np.sum(np.square(np.asarray(net.apply({"params": params, "batch_stats": batch_stats}, v,
                                            train=True, mutable=["batch_stats"])[0]["projector"],
                                  np.float64)), axis=-1)
      for v in mw.noise_views(key, jnp.arange(x.shape[0]), jnp.asarray(x))])
  # The mean over both views' rows of lr / ‖z_i‖² (not lr, not lr / ‖z_i‖).
  np.testing.assert_allclose(metrics["effective_step"], np.mean(lr / sq_norms), rtol=1e-6)


_DEVICES_SCRIPT = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np, optax
from jnorm import losses, methods
from jnorm.training import step as ts
import multiprocess_worker as mw
assert jax.device_count() == 4
x = mw.global_batch(16)

def step_on(devices, method, negatives):
  net = mw.TinyNet(bn_axis_name=ts.AXIS, predictor=method != "simclr")
  tx = optax.sgd(1.0)  # new params = params - grads
  state = ts.create_train_state(net=net, tx=tx, seed=0, sample_input=jnp.zeros((2, 4, 4, 1)))
  mesh = ts.make_mesh(devices)
  spec = methods.MethodSpec(name=method, negatives=negatives, axis_name=ts.AXIS)
  step = ts.make_train_step(apply_fn=net.apply, tx=tx, spec=spec, schedule=lambda s: 1.0,
                            mesh=mesh, augment_fn=mw.noise_views)
  params = jax.device_get(state.params)
  new, m = step(ts.replicate(state, mesh), ts.shard_batch({"input": x}, mesh))
  grads = jax.tree.map(lambda a, b: a - b, params, ts.local_copy(new.params))
  return float(m["loss"]), grads, params, net, state

def close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-4, atol=2e-6), a, b)

# Gathered negatives on 4 devices == one device on the full batch.
for method in ("simclr", "simsiam"):
  l1, g1, *_ = step_on(jax.devices()[:1], method, "global")
  l4, g4, *_ = step_on(jax.devices(), method, "global")
  assert abs(l1 - l4) < 1e-5 * max(1, abs(l1)), (method, l1, l4)
  close(g1, g4)
  print("global ok", method, l1, l4)

# Local negatives on 4 devices == the mean over 4 chunks of the loss, on one device with
# full-batch BatchNorm (what synced BatchNorm computes), differentiated by jax.grad.
l4, g4, params, net, state = step_on(jax.devices(), "simclr", "local")
ref_net = mw.TinyNet(bn_axis_name=None)
key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0)
v1, v2 = mw.noise_views(key, jnp.arange(16), jnp.asarray(x))
def ref_loss(p):
  z = [ref_net.apply({"params": p, "batch_stats": state.batch_stats}, v, train=True,
                     mutable=["batch_stats"])[0]["projector"] for v in (v1, v2)]
  return jnp.mean(jnp.stack([losses.infonce_loss(z[0][i:i + 4], z[1][i:i + 4], temperature=0.5)
                             for i in range(0, 16, 4)]))
lr, gr = jax.value_and_grad(ref_loss)(params)
assert abs(float(lr) - l4) < 1e-5 * max(1, abs(l4)), (float(lr), l4)
close(jax.device_get(gr), g4)
l1, _, *_ = step_on(jax.devices()[:1], "simclr", "local")
assert abs(l1 - l4) > 1e-4  # local negatives really differ from full-batch ones
print("local ok", l4, float(lr), l1)
"""


@pytest.mark.slow
def test_one_device_equals_four_devices_in_both_negative_modes():
  proc = mw.run_on_cpu_devices(4, _DEVICES_SCRIPT, TESTS_DIR)
  assert "global ok simclr" in proc.stdout and "local ok" in proc.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  worker = os.path.join(TESTS_DIR, "multiprocess_worker.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, worker, outs[i], str(i), "2", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  single = str(tmp_path / "single.npz")
  ref = subprocess.run([sys.executable, worker, single, "0", "1", "0"], env=env,
                       capture_output=True, text=True, timeout=300)
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  assert ref.returncode == 0, ref.stderr[-3000:]
  want = np.load(single)
  for out in outs:
    got = np.load(out)
    assert set(got.files) == set(want.files)
    for name in want.files:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
