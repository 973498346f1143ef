"""Methods, GradScale forms, optimisers, schedules, masks and cut-initialization."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnorm import losses, methods, optim
from jnorm.training import step as ts
import multiprocess_worker as mw


def _variables(predictor=False):
  net = mw.TinyNet(predictor=predictor)
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  variables = net.init(jax.random.key(0), x, train=True)
  views = (x, x[::-1] * 0.7)
  return net, variables, views


def _grads(spec, predictor=False):
  net, v, views = _variables(predictor)
  fn = jax.jit(lambda p, s, views: methods.loss_and_grads(
      p, s, p, s, views, apply_fn=net.apply, spec=spec)[:2])
  return fn(v["params"], v["batch_stats"], views)


def test_simclr_loss_matches_direct_computation():
  net, v, views = _variables()
  spec = methods.MethodSpec(loss="nt_xent", temperature=0.3)

  def direct(p):
    z1 = net.apply({"params": p, "batch_stats": v["batch_stats"]}, views[0], train=True,
                   mutable=["batch_stats"])[0]["projector"]
    stats = net.apply({"params": p, "batch_stats": v["batch_stats"]}, views[0], train=True,
                      mutable=["batch_stats"])[1]["batch_stats"]
    z2 = net.apply({"params": p, "batch_stats": stats}, views[1], train=True,
                   mutable=["batch_stats"])[0]["projector"]
    return losses.nt_xent_loss(z1, z2, temperature=0.3)
  want_loss, want = jax.jit(jax.value_and_grad(direct))(v["params"])
  loss, grads = _grads(spec)
  assert float(loss) == float(want_loss)
  jax.tree.map(np.testing.assert_array_equal, grads, want)


@pytest.mark.parametrize("name", ["simclr", "simsiam"])
def test_gradscale_power_zero_is_bit_identical_in_both_forms(name):
  pred = name != "simclr"
  plain = _grads(methods.MethodSpec(name=name), pred)[1]
  for form in ("custom_vjp", "optax"):
    got = _grads(methods.MethodSpec(name=name, gradscale_power=0.0, gradscale_form=form), pred)[1]
    jax.tree.map(np.testing.assert_array_equal, got, plain)


@pytest.mark.parametrize("name", ["simclr", "simsiam", "byol"])
def test_gradscale_forms_agree(name, x64):
  pred = name != "simclr"
  a = _grads(methods.MethodSpec(name=name, gradscale_power=1.0, gradscale_form="custom_vjp"), pred)
  b = _grads(methods.MethodSpec(name=name, gradscale_power=1.0, gradscale_form="optax"), pred)
  plain = _grads(methods.MethodSpec(name=name), pred)
  assert float(a[0]) == float(b[0]) == float(plain[0])  # forward unchanged
  jax.tree.map(lambda u, w: np.testing.assert_allclose(u, w, rtol=1e-12, atol=1e-14), a[1], b[1])
  diff = max(jax.tree.leaves(jax.tree.map(lambda u, w: np.abs(u - w).max(), a[1], plain[1])))
  assert diff > 1e-6  # p = 1 really changes the gradient


def test_code_faithful_schedule_peaks_at_lr_squared():
  kw = dict(base_lr=0.6, total_steps=100, warmup_steps=10, end_lr=1e-3)
  std = optim.learning_rate_schedule(**kw)
  faithful = optim.learning_rate_schedule(**kw, mode="code_faithful")
  np.testing.assert_allclose(std(10), 0.6, rtol=1e-6)
  np.testing.assert_allclose(faithful(10), 0.36, rtol=1e-6)
  np.testing.assert_allclose(std(100), 1e-3, rtol=1e-5)
  np.testing.assert_allclose(faithful(100), 0.6e-3, rtol=1e-5)
  assert float(std(0)) == 0.0


def test_weight_decay_mask_and_sgd_update():
  _, v, _ = _variables()
  mask = optim.weight_decay_mask(v["params"], mode="exclude_bn_bias")
  assert mask["Dense_0"]["kernel"] and not mask["Dense_0"]["bias"]
  assert not mask["BatchNorm_0"]["scale"]
  tx = optim.make_optimizer(name="sgd", learning_rate=0.5, momentum=0.9, nesterov=False,
                            weight_decay=0.1, weight_decay_mask=mask)
  params = v["params"]
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  k = params["Dense_0"]["kernel"]
  np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.5 * (1 + 0.1 * k), rtol=1e-6)
  np.testing.assert_allclose(updates["Dense_0"]["bias"], -0.5, rtol=1e-6)
  lars = optim.make_optimizer(name="lars", learning_rate=0.5, momentum=0.9, nesterov=False,
                              weight_decay=0.1, weight_decay_mask=mask, accumulation_steps=2)
  state = lars.init(params)
  upd, state = lars.update(grads, state, params)  # first micro-step: no update yet
  assert max(jax.tree.leaves(jax.tree.map(lambda u: np.abs(u).max(), upd))) == 0


def test_cut_init_modes():
  net, v, _ = _variables()
  p, stats = v["params"], v["batch_stats"]
  cut = optim.cut_init(p, factor=3.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / 3, rtol=1e-7), cut, p)
  no_bn = optim.cut_init(p, factor=3.0, include_bn_affine=False, batch_stats=stats)
  np.testing.assert_array_equal(no_bn["BatchNorm_0"]["scale"], p["BatchNorm_0"]["scale"])
  np.testing.assert_allclose(no_bn["Dense_0"]["kernel"], p["Dense_0"]["kernel"] / 3, rtol=1e-7)
  last = optim.cut_init(p, factor=3.0, scope="last_layer")
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
  tau = optim.ema_decay_schedule(tau_base=0.99, total_steps=100, kind="cosine")
  np.testing.assert_allclose(tau(0), 0.99, rtol=1e-7)
  np.testing.assert_allclose(tau(50), 1 - 0.01 * (np.cos(np.pi * 0.5) + 1) / 2, rtol=1e-6)
  np.testing.assert_allclose(tau(100), 1.0, rtol=1e-7)
