"""Training paths the other tests do not reach (issue "Reliability", item 10).

1. Gradient accumulation (`config.optim.accumulation_steps`, optax.MultiSteps inside the
   sharded step): parameters move only every k-th micro-step; without BatchNorm and with
   a per-example-mean loss, k micro-steps of B/k equal one step on the concatenated B;
   with BatchNorm the update is the inner optimiser applied to the MEAN of the k
   micro-gradients; BYOL's EMA target moves only on update steps, with τ of the update
   index.
2. LARS: one/two `optim.make_optimizer(name='lars')` steps equal a hand computation of
   optax.lars (per-leaf trust ratio, masked leaves plain SGD).
3. sync_batchnorm=False on 2 devices (subprocess): the step equals the mean over the
   two halves of a local-BatchNorm step (loss, gradients, running statistics), differs
   from the synced step, and the training job runs.
4. SimSiam and BYOL through the training job (vector data; the digits smoke configs are
   only loaded and validated: training them costs ~35 s each on CPU); BYOL's checkpoint
   holds a target that moved and differs from the online network.
5. bfloat16 compute against float32 on the same init and batch.
6. Resume beyond parameters: mid-accumulation (MultiSteps accumulator, BYOL target)
   after an evaluation newer than the newest checkpoint; rerunning a finished workdir.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnorm import jobs
from jnorm import optim
from jnorm.training import build
from jnorm.training import checkpoint
from jnorm.training import config as train_config
from jnorm.training import loop
from jnorm.training import metrics as metrics_lib
from jnorm.training import step as ts
import paths_support as ps
import multiprocess_worker as mw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VOLATILE = ("train_seconds_per_step", "first_step_seconds", "wall_seconds",
            "resumed_from_step")


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


# --- 1. gradient accumulation -------------------------------------------------------------

def _fixed_views(key, ids, x):
  """Views that depend on the example only (not on the step key or its batch position),
  so that a micro-batch sees exactly the views the concatenated batch gives its rows."""
  del key, ids
  return x, x + 0.3 * jnp.sin(3.0 * x)


def test_accumulation_equals_one_step_on_the_concatenated_batch():
  """No BatchNorm (MLP backbone without hidden layers, projector without BN) and SimCLR's
  'attraction' loss (-mean_i cos(z1_i, z2_i) / t, a per-example mean): k = 4 micro-steps
  of 4 rows == one step on the 16 rows, for two consecutive updates (momentum, weight
  decay and a cosine schedule that counts updates, built by `build_run` for both)."""
  k, rows = 4, 16

  def make(batch, acc, steps_per_epoch):
    c = ps.vector_config("simclr", batch_size=batch, bn=False, accumulation_steps=acc)
    c.loss.name = "attraction"
    c.optim.schedule = "warmup_cosine"
    c.optim.learning_rate = 0.5
    c.optim.weight_decay = 1e-3
    run = build.build_run(c, mesh=None, input_shape=(ps.INPUT_DIM,),
                          steps_per_epoch=steps_per_epoch)
    step = ts.make_train_step(apply_fn=run.net.apply, tx=run.tx, spec=run.spec,
                              schedule=run.schedule, mesh=mesh, augment_fn=_fixed_views,
                              accumulation_steps=acc)
    return run, step

  mesh = ts.make_mesh(jax.devices()[:1])
  run_f, step_f = make(rows, 1, 2)  # 2 epochs of 2 steps: 4 updates
  run_a, step_a = make(rows // k, k, 2 * k)  # the same 4 updates from 16 micro-steps
  assert run_a.total_steps == k * run_f.total_steps
  s0 = _host(run_f.init_state())
  s0_a = _host(run_a.init_state())
  assert not jax.tree.leaves(s0.batch_stats)  # BatchNorm really absent
  ps.assert_tree_equal(s0.params, s0_a.params)

  rng = np.random.default_rng(0)
  batches = [rng.normal(size=(rows, ps.INPUT_DIM)).astype(np.float32) for _ in range(2)]
  full_params, full_lr = [s0.params], []
  state = ts.replicate(s0, mesh)
  for x in batches:
    state, m = step_f(state, ts.shard_batch({"input": x}, mesh))
    full_params.append(_host(ts.local_copy(state.params)))
    full_lr.append(float(m["lr"]))
  assert full_lr[0] != full_lr[1]  # the schedule moved between the two updates
  assert ps.max_abs_diff(full_params[1], full_params[0]) > 1e-3  # a real update

  state = ts.replicate(s0_a, mesh)
  for j, x in enumerate(batches):
    for i in range(k):
      before = _host(ts.local_copy(state.params))
      state, m = step_a(state, ts.shard_batch({"input": x[i * 4:(i + 1) * 4]}, mesh))
      after = _host(ts.local_copy(state.params))
      assert float(m["lr"]) == full_lr[j]  # the lr of the update being accumulated
      if i < k - 1:
        ps.assert_tree_equal(after, before)  # micro-step: parameters untouched
      else:
        ps.assert_tree_close(after, full_params[j + 1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_byol_accumulation_averages_micro_gradients_and_moves_the_target_on_updates():
  """With BatchNorm and the run's own step (BYOL, vector_noise views, k = 3): the update
  after micro-step 3 is the inner optimiser (SGD Nesterov, weight decay) applied to the
  MEAN of the 3 micro-gradients, each taken by a probe step (SGD lr 1, so new = old - g)
  from the state that micro-step saw; the target (params and BatchNorm statistics) is
  untouched on micro-steps 1..k-1 and moves by EMA with τ(update index) at step k."""
  k = 3
  c = ps.vector_config("byol", batch_size=8, accumulation_steps=k)
  c.optim.nesterov = True
  c.optim.weight_decay = 1e-3
  c.byol.tau_base = 0.9
  c.byol.tau_schedule = "cosine"
  mesh = ts.make_mesh(jax.devices()[:1])
  run = build.build_run(c, mesh=mesh, input_shape=(ps.INPUT_DIM,), steps_per_epoch=k)
  assert run.total_steps == 2 * k  # 2 updates: τ(0) = 0.9, τ(1) = 0.95
  tau = optim.ema_decay_schedule(total_steps=2, tau_base=0.9, tau_schedule="cosine")
  taus = [float(tau(0)), float(tau(1))]
  assert taus[0] == pytest.approx(0.9) and taus[1] == pytest.approx(0.95)
  probe_tx = optax.sgd(1.0)
  probe = ts.make_train_step(apply_fn=run.net.apply, tx=probe_tx, spec=run.spec,
                             schedule=run.schedule, mesh=mesh,
                             augment_fn=ts.augment_fn_from_recipe(c.augment))
  inner = optim.make_optimizer(name="sgd", learning_rate=run.schedule, momentum=0.9,
                               nesterov=True, weight_decay=1e-3)

  rng = np.random.default_rng(1)
  host = _host(run.init_state())
  assert jax.tree.leaves(host.batch_stats) and jax.tree.leaves(host.target_batch_stats)
  inner_state = inner.init(host.params)
  for cycle in range(2):
    start = host
    grads = []
    for i in range(k):
      x = ts.shard_batch({"input": rng.normal(size=(8, ps.INPUT_DIM)).astype(np.float32)},
                         mesh)
      probed, _ = probe(ts.replicate(host.replace(opt_state=probe_tx.init(host.params)), mesh),
                        x)
      grads.append(jax.tree.map(lambda a, b: a - b, host.params,
                                _host(ts.local_copy(probed.params))))
      new, _ = run.train_step(ts.replicate(host, mesh), x)
      new = _host(ts.local_copy(new))
      assert int(new.step) == cycle * k + i + 1
      if i < k - 1:
        ps.assert_tree_equal(new.params, start.params)
        ps.assert_tree_equal(new.target_params, start.target_params)
        ps.assert_tree_equal(new.target_batch_stats, start.target_batch_stats)
      host = new
    mean_g = jax.tree.map(lambda *g: sum(g) / k, *grads)
    # Not the last micro-gradient, nor the sum: the mean (checked discriminating).
    for other in (grads[-1], jax.tree.map(lambda g: k * g, mean_g)):
      wrong, _ = inner.update(other, inner_state, start.params)
      assert ps.max_abs_diff(optax.apply_updates(start.params, wrong), start.params) > 0
      assert ps.max_abs_diff(optax.apply_updates(start.params, wrong), host.params) > 1e-4
    updates, inner_state = inner.update(mean_g, inner_state, start.params)
    ps.assert_tree_close(host.params, optax.apply_updates(start.params, updates),
                         rtol=1e-5, atol=1e-6)
    t = taus[cycle]
    ema = lambda new_v, old_v, t=t: old_v + (1 - t) * (new_v - old_v)
    ps.assert_tree_close(host.target_params,
                         jax.tree.map(ema, host.params, start.target_params),
                         rtol=1e-5, atol=1e-7)
    ps.assert_tree_close(host.target_batch_stats,
                         jax.tree.map(ema, host.batch_stats, start.target_batch_stats),
                         rtol=1e-5, atol=1e-7)
    assert ps.max_abs_diff(host.target_params, start.target_params) > 1e-5


# --- 2. LARS --------------------------------------------------------------------------

def _lars_by_hand(params, grads_seq, *, lr_fn, momentum, nesterov, weight_decay, mask,
                  trust_coefficient):
  """optax.lars in float64: per leaf, u = g + wd·w (decayed leaves); u *= tc·‖w‖/‖u‖
  (same leaves; 1 where either norm is 0); u *= -lr(count); trace with momentum."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = ["/".join(str(getattr(k, "key", k)) for k in p) for p, _ in flat]
  names = [p.split("/")[-1] for p in paths]
  w = [np.asarray(x, np.float64) for _, x in flat]
  buf = [np.zeros_like(x) for x in w]
  ratios = []
  for count, grads in enumerate(grads_seq):
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
    step_ratios = []
    for i, name in enumerate(names):
      masked_in = mask == "all" or name not in ("bias", "scale")
      u = g[i] + weight_decay * w[i] if masked_in else g[i]
      r = 1.0
      if masked_in:
        pn, un = np.linalg.norm(w[i]), np.linalg.norm(u)
        r = 1.0 if pn == 0 or un == 0 else trust_coefficient * pn / un
      step_ratios.append(r)
      u = -lr_fn(count) * r * u
      buf[i] = u + momentum * buf[i]
      w[i] = w[i] + (u + momentum * buf[i] if nesterov else buf[i])
    ratios.append(dict(zip(paths, step_ratios)))
  return jax.tree.unflatten(jax.tree.structure(params), w), ratios


@pytest.mark.parametrize("mask,nesterov", [("all", False), ("exclude_bn_bias", True)])
def test_lars_steps_equal_the_per_leaf_trust_ratio_by_hand(mask, nesterov):
  rng = np.random.default_rng(2)
  params = {"dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
                      "bias": np.zeros(2, np.float32)},  # ‖w‖ = 0: trust ratio 1
            "bn": {"scale": np.array([0.8, 1.1], np.float32),
                   "bias": np.array([0.1, -0.2], np.float32)}}
  grads_seq = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
               for _ in range(2)]
  lr_fn = lambda count: 0.5 / (1.0 + count)  # the schedule is read at the update count
  kw = dict(momentum=0.9, nesterov=nesterov, weight_decay=1e-2, trust_coefficient=0.01)
  tx = optim.make_optimizer(name="lars", learning_rate=lr_fn, weight_decay_mask=mask, **kw)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for g in grads_seq:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
    p = optax.apply_updates(p, updates)
  want, ratios = _lars_by_hand(params, grads_seq, lr_fn=lr_fn, mask=mask, **kw)
  ps.assert_tree_close(_host(p), want, rtol=2e-5, atol=1e-7)
  assert ratios[0]["dense/bias"] == 1.0  # ‖w‖ = 0 (mask 'all') or not trust-scaled
  for r in ratios:
    assert r["dense/kernel"] < 0.05  # the trust ratio really scales (tc = 0.01)
    if mask == "all":  # every leaf decayed and trust-scaled, each by its own norms
      assert r["bn/scale"] != 1.0 and r["bn/bias"] != 1.0 and r["bn/scale"] != r["bn/bias"]
    else:  # biases and BatchNorm scales: neither decay nor trust ratio (plain lr·g)
      assert r["bn/scale"] == r["bn/bias"] == r["dense/bias"] == 1.0
  if mask == "all":  # once the zero bias has moved, it is trust-scaled like the rest
    assert ratios[1]["dense/bias"] != 1.0


# --- 3. unsynced BatchNorm on 2 devices ------------------------------------------------

_UNSYNCED_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
import paths_support as ps
from jnorm import methods
from jnorm.training import build, loop, step as ts
assert jax.device_count() == 2
mesh = ts.make_mesh()
x = np.random.default_rng(0).normal(size=(16, ps.INPUT_DIM)).astype(np.float32)

def config(sync):
  c = ps.vector_config("simsiam", batch_size=16)
  c.sync_batchnorm = sync
  return c

def one_step(sync):
  run = build.build_run(config(sync), mesh=mesh, input_shape=(ps.INPUT_DIM,),
                        steps_per_epoch=4)
  s0 = jax.device_get(run.init_state())
  new, m = run.train_step(ts.replicate(s0, mesh), ts.shard_batch({"input": x}, mesh))
  return run, s0, ts.local_copy(new), float(ts.local_copy(m)["loss"])

def local_bn_step(run, s0, halves):
  # The mean over `halves` (row ranges) of one device's step without a mesh axis
  # (local BatchNorm) on those rows of the step's views: loss, new params, batch_stats.
  key = jax.random.fold_in(jax.random.wrap_key_data(s0.rng), 0)
  v1, v2 = ts.augment_fn_from_recipe("vector_noise")(key, jnp.arange(16), jnp.asarray(x))
  f = jax.jit(lambda p, bs, views: methods.loss_and_grads(
      methods.get_method("simsiam"), run.spec, p, bs, {}, {}, views,
      apply_fn=run.eval_net.apply))
  outs = [f(s0.params, s0.batch_stats, (v1[h], v2[h])) for h in halves]
  mean = lambda *t: sum(t) / len(t)
  loss = float(np.mean([o[0] for o in outs]))
  grads = jax.tree.map(mean, *[o[1] for o in outs])
  stats = jax.tree.map(mean, *[o[2]["batch_stats"] for o in outs])
  updates, _ = run.tx.update(grads, run.tx.init(s0.params), s0.params)
  params = jax.tree.map(lambda p, u: p + u, s0.params, updates)
  return loss, params, stats

halves = [slice(0, 8), slice(8, 16)]
run_u, s0, new_u, loss_u = one_step(False)
run_s, s0_s, new_s, loss_s = one_step(True)
ps.assert_tree_equal(s0.params, s0_s.params)
loss, params, stats = local_bn_step(run_u, s0, halves)
assert abs(loss - loss_u) < 1e-5 * max(1.0, abs(loss)), (loss, loss_u)
ps.assert_tree_close(new_u.batch_stats, stats, rtol=1e-5, atol=1e-6)
ps.assert_tree_close(new_u.params, params, rtol=1e-5, atol=1e-6)
loss_full, params_full, stats_full = local_bn_step(run_s, s0, [slice(0, 16)])
assert abs(loss_full - loss_s) < 1e-5 * max(1.0, abs(loss_full)), (loss_full, loss_s)
ps.assert_tree_close(new_s.batch_stats, stats_full, rtol=1e-5, atol=1e-6)
ps.assert_tree_close(new_s.params, params_full, rtol=1e-5, atol=1e-6)
diff_stats = ps.max_abs_diff(new_u.batch_stats, new_s.batch_stats)
diff_params = ps.max_abs_diff(new_u.params, new_s.params)
assert abs(loss_u - loss_s) > 1e-5 and diff_stats > 1e-4 and diff_params > 1e-6, (
    loss_u, loss_s, diff_stats, diff_params)
print("step ok", loss_u, loss_s, diff_stats, diff_params)

c = config(False)
c.num_epochs = 0.5
res = loop.train_and_evaluate(c, sys.argv[2])
assert res["num_devices"] == 2 and res["steps"] == 2, res
assert ps.all_finite(ps.load_json_strict(sys.argv[2] + "/results.json"))
assert np.isfinite(res["final_loss"]) and 0 <= res["knn_accuracy"] <= 1
print("job ok", res["final_loss"], res["knn_accuracy"])
"""


@pytest.mark.slow
def test_unsynced_batchnorm_on_two_devices_is_the_mean_of_local_steps(tmp_path):
  proc = mw.run_on_cpu_devices(2, _UNSYNCED_SCRIPT, HERE, str(tmp_path / "run"), cwd=ROOT)
  assert "step ok" in proc.stdout and "job ok" in proc.stdout, proc.stdout


# --- 4. SimSiam and BYOL through the job ------------------------------------------------

_HEADLINE = ("knn_accuracy", "knn_accuracy_at_init", "embedding_norm_mean",
             "backbone_norm_mean", "final_loss")


def _check_results(workdir, method, steps):
  on_disk = ps.load_json_strict(os.path.join(workdir, "results.json"))  # no NaN tokens
  assert on_disk["method"] == method and on_disk["steps"] == steps
  for key in _HEADLINE:
    assert np.isfinite(on_disk[key]), (key, on_disk[key])
  assert ps.all_finite(on_disk)
  assert len(on_disk["knn_curve"]) >= 2 and "predictor_norm_mean" in on_disk["knn_curve"][-1]
  return on_disk


def test_simsiam_job_finishes_with_finite_results(tmp_path):
  c = ps.vector_config("simsiam")
  c.num_epochs = 1.0
  c.checkpoint_every_steps = 2
  workdir = str(tmp_path / "run")
  results = loop.train_and_evaluate(c, workdir)
  on_disk = _check_results(workdir, "simsiam", 4)
  assert on_disk["final_loss"] == results["final_loss"]


def _restore_newest(workdir):
  config, info = train_config.from_saved(ps.load_json_strict(os.path.join(workdir,
                                                                        "config.json")))
  run = build.build_run(config, mesh=None, **info)
  fresh = _host(run.init_state())
  c = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    step = c.latest_step()
    return step, fresh, c.restore(step, fresh)
  finally:
    c.close()


@pytest.mark.parametrize("name", ["simsiam", "byol"])
def test_smoke_configs_are_complete_and_valid(name):
  """configs/{simsiam,byol}.py:digits,smoke as the job reads them (training them costs
  ~35 s each here, so the job tests below use the vector setting)."""
  c = jobs.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), "digits,smoke")
  train_config.validate(c)
  assert c.method == name and c.model.predictor_hidden > 0 and c.optim.accumulation_steps == 1


def test_byol_job_finishes_and_checkpoints_a_moved_target(finished_run):
  """The BYOL run of `finished_run` (vector data, 8 steps, 2 accumulation steps)."""
  _check_results(finished_run, "byol", 8)
  step, fresh, state = _restore_newest(finished_run)
  assert step == 8 and int(state.step) == 8
  assert jax.tree.leaves(state.target_params) and jax.tree.leaves(state.target_batch_stats)
  assert jax.tree.structure(state.target_params) == jax.tree.structure(state.params)
  ps.assert_tree_equal(fresh.target_params, fresh.params)  # starts as a copy
  assert ps.max_abs_diff(state.target_params, state.params) > 1e-6  # not the online net
  assert ps.max_abs_diff(state.target_params, fresh.target_params) > 1e-6  # moved (EMA)
  assert ps.max_abs_diff(state.target_batch_stats, fresh.target_batch_stats) > 1e-6


# --- 5. bfloat16 ------------------------------------------------------------------------

def _digits_step(compute_dtype, x):
  c = train_config.defaults()  # SimCLR, SmallResNet on digits
  c.data.image_size = 8
  c.model.compute_dtype = compute_dtype
  c.augment = "none"
  c.batch_size = 8
  c.optim.momentum = 0.0  # SGD lr 1, no decay: new params = params - grads
  c.optim.learning_rate = 1.0
  c.optim.schedule = "constant"
  c.optim.warmup_epochs = 0.0
  train_config.validate(c)
  mesh = ts.make_mesh(jax.devices()[:1])
  run = build.build_run(c, mesh=mesh, input_shape=x.shape[1:], steps_per_epoch=10)
  s0 = _host(run.init_state())
  new, m = run.train_step(ts.replicate(s0, mesh), ts.shard_batch({"input": x}, mesh))
  grads = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, s0.params,
                       _host(ts.local_copy(new.params)))
  return s0, float(ts.local_copy(m)["loss"]), grads


def _cosine(a, b):
  a, b = ps.flat(a), ps.flat(b)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32_but_not_equal():
  x = np.random.default_rng(3).uniform(size=(8, 8, 8, 1)).astype(np.float32)
  s32, loss32, g32 = _digits_step("float32", x)
  s16, loss16, g16 = _digits_step("bfloat16", x)
  ps.assert_tree_equal(s16.params, s32.params)  # same init (parameters stay float32)
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(s16.params))
  assert abs(loss16 - loss32) <= 2e-2 * abs(loss32), (loss16, loss32)
  assert _cosine(g16, g32) > 0.99
  # The backbone alone (bf16 convolutions, then BatchNorm) agrees a little less (0.989
  # measured; 0.99997 for the float32 projector).
  assert _cosine(g16["backbone"], g32["backbone"]) > 0.97
  # bf16 really ran: the backbone gradients differ by far more than float32 rounding.
  rel = (np.linalg.norm(ps.flat(g16["backbone"]) - ps.flat(g32["backbone"]))
         / np.linalg.norm(ps.flat(g32["backbone"])))
  assert rel > 1e-4, rel
  assert loss16 != loss32


# --- 6. resume beyond parameters ---------------------------------------------------------

class _Killed(BaseException):
  """Stands for SIGKILL: no handler of the loop catches a BaseException subclass."""


def _resume_config():
  """BYOL on vectors, 8 steps of 16 with 2 accumulation steps (4 updates), BatchNorm,
  a cosine τ, kNN at epochs 0/1/2 (steps 0/4/8) and a checkpoint every 3 steps: the
  checkpoint at step 3 holds a half-accumulated gradient."""
  c = ps.vector_config("byol", batch_size=16, accumulation_steps=2)
  c.byol.tau_base = 0.9
  c.byol.tau_schedule = "cosine"
  c.optim.weight_decay = 1e-3
  c.optim.schedule = "warmup_cosine"
  c.checkpoint_every_steps = 3
  return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("paths_reference") / "run")
  loop.train_and_evaluate(_resume_config(), workdir)
  return workdir


def _keys(lines):
  return [(r["step"], r["kind"]) for r in lines]


def _comparable(res):
  return {k: v for k, v in res.items() if k not in VOLATILE}


def test_resume_mid_accumulation_after_an_uncheckpointed_eval(finished_run, tmp_path,
                                                              monkeypatch):
  """Killed right after logging step 5: the newest checkpoint is step 3 (mid-accumulation),
  but metrics.jsonl and knn_curve.json already hold the evaluation at step 4. The resumed
  run drops them, repeats steps 4-5, and ends identical to the uninterrupted run: metrics
  lines (no duplicate (step, kind), ending at step 8), kNN curve, results and every leaf
  of the final checkpoint (optimiser accumulator, BYOL target, BatchNorm statistics)."""
  config, workdir = _resume_config(), str(tmp_path / "victim")
  write = metrics_lib.MetricsWriter.write

  def write_then_die(self, step, scalars, *, kind="train"):
    write(self, step, scalars, kind=kind)
    if step == 5 and kind == "train":
      raise _Killed()

  monkeypatch.setattr(metrics_lib.MetricsWriter, "write", write_then_die)
  with pytest.raises(_Killed):
    loop.train_and_evaluate(config, workdir)
  monkeypatch.setattr(metrics_lib.MetricsWriter, "write", write)

  left = ps.metrics_lines(workdir)
  assert (4, "eval") in _keys(left) and _keys(left)[-1] == (5, "train")
  assert [r["epoch"] for r in ps.load_json_strict(os.path.join(workdir, "knn_curve.json"))
          ] == [0, 1]
  step, fresh, at3 = _restore_newest(workdir)
  assert step == 3
  assert int(at3.opt_state.mini_step) == 1  # one micro-gradient accumulated
  assert ps.max_abs_diff(at3.opt_state.acc_grads, fresh.opt_state.acc_grads) > 0

  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed["resumed_from_step"] == 3
  lines = ps.metrics_lines(workdir)
  keys = _keys(lines)
  assert len(keys) == len(set(keys)), keys
  assert [s for s, kind in keys if kind == "train"] == list(range(1, 9))
  assert [s for s, kind in keys if kind == "eval"] == [0, 4, 8]
  assert keys[-1][0] == 8
  assert lines == ps.metrics_lines(finished_run)
  assert (ps.load_json_strict(os.path.join(workdir, "knn_curve.json"))
          == ps.load_json_strict(os.path.join(finished_run, "knn_curve.json")))
  assert _comparable(ps.load_json_strict(os.path.join(workdir, "results.json"))) == _comparable(
      ps.load_json_strict(os.path.join(finished_run, "results.json")))
  step_a, _, got = _restore_newest(workdir)
  step_b, _, want = _restore_newest(finished_run)
  assert step_a == step_b == 8
  ps.assert_tree_equal(got, want)


def _snapshot(path):
  snap = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      st = os.stat(full)
      snap[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
  return snap


def test_rerunning_a_finished_workdir_returns_its_results_without_training(
    finished_run, tmp_path, monkeypatch):
  workdir = str(tmp_path / "copy")
  shutil.copytree(finished_run, workdir)
  before = ps.load_json_strict(os.path.join(workdir, "results.json"))
  lines, curve = (ps.metrics_lines(workdir),
                  ps.load_json_strict(os.path.join(workdir, "knn_curve.json")))
  checkpoints = _snapshot(os.path.join(workdir, "checkpoints"))
  calls = []
  real_build = build.build_run

  def counting_build(*args, **kwargs):
    run = real_build(*args, **kwargs)
    if run.train_step is None:
      return run
    def counted(state, batch):
      calls.append(1)
      return run.train_step(state, batch)
    return run._replace(train_step=counted)

  monkeypatch.setattr(build, "build_run", counting_build)
  again = loop.train_and_evaluate(_resume_config(), workdir)
  assert calls == []  # no train step ran
  assert again["resumed_from_step"] == before["steps"] == 8
  assert again["train_seconds_per_step"] is None
  assert _comparable(again) == _comparable(before)
  assert again["final_loss"] == before["final_loss"] is not None
  assert _comparable(ps.load_json_strict(os.path.join(workdir, "results.json"))) == _comparable(
      before)
  assert ps.metrics_lines(workdir) == lines  # the final eval line replaced, not duplicated
  assert ps.load_json_strict(os.path.join(workdir, "knn_curve.json")) == curve
  assert _snapshot(os.path.join(workdir, "checkpoints")) == checkpoints  # nothing saved
