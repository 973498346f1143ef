"""jnorm.optim: schedules, weight-decay masks, optimisers, cut-initialization, BYOL's
EMA decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnorm import errors
from jnorm import optim
from jnorm.training import step as ts
import multiprocess_worker as mw


def _variables():
  net = mw.TinyNet()
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  return net, net.init(jax.random.key(0), x, train=True)


def test_code_faithful_schedule_peaks_at_lr_squared():
  kw = dict(learning_rate=0.6, total_steps=100, steps_per_epoch=10, warmup_epochs=1.0,
            end_learning_rate=1e-3)
  std = optim.learning_rate_schedule(**kw)
  faithful = optim.learning_rate_schedule(**kw, schedule_mode="code_faithful")
  np.testing.assert_allclose(std(10), 0.6, rtol=1e-6)  # warm-up: 1 epoch = 10 steps
  np.testing.assert_allclose(std(5), 0.3, rtol=1e-6)
  np.testing.assert_allclose(faithful(10), 0.36, rtol=1e-6)
  np.testing.assert_allclose(std(100), 1e-3, rtol=1e-5)
  np.testing.assert_allclose(faithful(100), 0.6e-3, rtol=1e-5)
  assert float(std(0)) == 0.0
  const = optim.learning_rate_schedule(**kw, schedule="constant")
  np.testing.assert_allclose([const(0), const(50), const(100)], 0.6, rtol=1e-7)


def test_schedule_counts_optimiser_updates_with_accumulation():
  kw = dict(learning_rate=0.6, total_steps=100, steps_per_epoch=10, warmup_epochs=1.0,
            end_learning_rate=1e-3)
  acc = optim.learning_rate_schedule(**kw, accumulation_steps=2)
  # 50 updates, 10 // 2 = 5 of them warm-up: the peak at update 5, the end at 50.
  np.testing.assert_allclose(acc(5), 0.6, rtol=1e-6)
  np.testing.assert_allclose(acc(50), 1e-3, rtol=1e-5)
  assert float(acc(4)) < 0.6


@pytest.mark.parametrize("field, value", [
    ("schedule", "linear"), ("schedule_mode", "faithful"), ("learning_rate", 0.0),
    ("warmup_epochs", -1.0), ("end_learning_rate", -1e-3)])
def test_check_schedule_names_the_bad_field(field, value):
  kw = dict(learning_rate=0.6, warmup_epochs=1.0, end_learning_rate=1e-3,
            schedule="warmup_cosine", schedule_mode="standard")
  kw[field] = value
  with pytest.raises(errors.ConfigError, match=f"optim.{field}"):
    optim.check_schedule(**kw)


def test_weight_decay_mask_and_sgd_update():
  _, v = _variables()
  mask = optim.decay_mask(v["params"], weight_decay_mask="exclude_bn_bias")
  assert mask["Dense_0"]["kernel"] and not mask["Dense_0"]["bias"]
  assert not mask["BatchNorm_0"]["scale"]
  tx = optim.make_optimizer(name="sgd", learning_rate=0.5, momentum=0.9, nesterov=False,
                            weight_decay=0.1, weight_decay_mask="exclude_bn_bias")
  params = v["params"]
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  k = params["Dense_0"]["kernel"]
  np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.5 * (1 + 0.1 * k), rtol=1e-6)
  np.testing.assert_allclose(updates["Dense_0"]["bias"], -0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["BatchNorm_0"]["scale"], -0.5, rtol=1e-6)
  all_decay = optim.make_optimizer(name="sgd", learning_rate=0.5, momentum=0.9,
                                   nesterov=False, weight_decay=0.1, weight_decay_mask="all")
  updates, _ = all_decay.update(grads, all_decay.init(params), params)
  scale = params["BatchNorm_0"]["scale"]  # ones: decayed only with mask 'all'
  np.testing.assert_allclose(updates["BatchNorm_0"]["scale"], -0.5 * (1 + 0.1 * scale),
                             rtol=1e-6)
  lars = optim.make_optimizer(name="lars", learning_rate=0.5, momentum=0.9, nesterov=False,
                              weight_decay=0.1, weight_decay_mask="exclude_bn_bias",
                              accumulation_steps=2)
  state = lars.init(params)
  upd, state = lars.update(grads, state, params)  # first micro-step: no update yet
  assert max(jax.tree.leaves(jax.tree.map(lambda u: np.abs(u).max(), upd))) == 0


def test_cut_init_modes():
  _, v = _variables()
  p, stats = v["params"], v["batch_stats"]
  cut = optim.cut_init(p, cut_factor=3.0, cut_scope="all")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / 3, rtol=1e-7), cut, p)
  no_bn = optim.cut_init(p, cut_factor=3.0, cut_bn_affine=False, batch_stats=stats)
  np.testing.assert_array_equal(no_bn["BatchNorm_0"]["scale"], p["BatchNorm_0"]["scale"])
  np.testing.assert_allclose(no_bn["Dense_0"]["kernel"], p["Dense_0"]["kernel"] / 3, rtol=1e-7)
  last = optim.cut_init(p, cut_factor=3.0, cut_scope="last_layer")
  proj, old = last["projector"], p["projector"]
  np.testing.assert_allclose(proj["dense2"]["kernel"], old["dense2"]["kernel"] / 3, rtol=1e-7)
  np.testing.assert_array_equal(proj["dense1"]["kernel"], old["dense1"]["kernel"])
  np.testing.assert_array_equal(last["Dense_0"]["kernel"], p["Dense_0"]["kernel"])


def test_cut_init_applied_once_by_create_train_state():
  tx = optax.sgd(0.1)
  kw = dict(net=mw.TinyNet(), tx=tx, seed=0, sample_input=jnp.zeros((2, 4, 4, 1)))
  plain = ts.create_train_state(**kw)
  cut = ts.create_train_state(**kw, cut_factor=3.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / 3, rtol=1e-7),
               cut.params, plain.params)
  jax.tree.map(np.testing.assert_array_equal, cut.batch_stats, plain.batch_stats)


def test_byol_cosine_tau():
  tau = optim.ema_decay_schedule(tau_base=0.99, total_steps=100, tau_schedule="cosine")
  np.testing.assert_allclose(tau(0), 0.99, rtol=1e-7)
  np.testing.assert_allclose(tau(50), 1 - 0.01 * (np.cos(np.pi * 0.5) + 1) / 2, rtol=1e-6)
  np.testing.assert_allclose(tau(100), 1.0, rtol=1e-7)
  fixed = optim.ema_decay_schedule(tau_base=0.9, total_steps=100, tau_schedule="fixed")
  np.testing.assert_allclose([fixed(0), fixed(50), fixed(100)], 0.9, rtol=1e-7)


def test_cut_factor_below_one_scales_up_and_one_is_the_identity():
  _, v = _variables()
  p = v["params"]
  assert optim.cut_init(p, cut_factor=1.0) is p
  up = optim.cut_init(p, cut_factor=0.5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 2 * b, rtol=1e-7), up, p)


@pytest.mark.parametrize("kwargs, field", [
    (dict(cut_factor=0.0, cut_scope="all"), "norm.cut_factor"),
    (dict(cut_factor=-2.0, cut_scope="all"), "norm.cut_factor"),
    (dict(cut_factor=3.0, cut_scope="first_layer"), "norm.cut_scope"),
])
def test_check_cut_rejects_bad_settings(kwargs, field):
  with pytest.raises(errors.ConfigError, match=field):
    optim.check_cut(**kwargs)
  _, v = _variables()
  with pytest.raises(errors.ConfigError, match=field):
    optim.cut_init(v["params"], **kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(tau_base=1.5, tau_schedule="fixed"), "byol.tau_base"),
    (dict(tau_base=-0.1, tau_schedule="cosine"), "byol.tau_base"),
    (dict(tau_base=0.99, tau_schedule="linear"), "byol.tau_schedule"),
])
def test_check_tau_rejects_bad_settings(kwargs, field):
  with pytest.raises(errors.ConfigError, match=field):
    optim.check_tau(**kwargs)
  with pytest.raises(errors.ConfigError, match=field):
    optim.ema_decay_schedule(total_steps=10, **kwargs)
