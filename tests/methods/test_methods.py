"""jnorm.methods: the registry, each method's config checks, and `loss_and_grads` (the
losses it differentiates, GradScale in both forms)."""

import jax
import numpy as np
import pytest

from jnorm import errors
from jnorm import losses
from jnorm import methods
from jnorm.training import config as train_config
import multiprocess_worker as mw


def _variables(predictor=False):
  net = mw.TinyNet(predictor=predictor)
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  variables = net.init(jax.random.key(0), x, train=True)
  views = (x, x[::-1] * 0.7)
  return net, variables, views


def _grads(spec, predictor=False):
  """(loss, grads) of `spec`'s method; the target network (BYOL) is the online one."""
  net, v, views = _variables(predictor)
  method = methods.get_method(spec.name)
  fn = jax.jit(lambda p, s, views: methods.loss_and_grads(
      method, spec, p, s, p, s, views, apply_fn=net.apply)[:2])
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


def test_registry_names_every_method_and_unknown_name_is_a_config_error():
  assert set(methods.METHODS) == {"simclr", "simsiam", "byol"}
  for name, method in methods.METHODS.items():
    assert methods.get_method(name) is method and method.name == name
  with pytest.raises(errors.ConfigError, match=r"config\.method='swav'.*'byol'"):
    methods.get_method("swav")


def test_method_attributes_match_the_papers():
  simclr, simsiam, byol = (methods.get_method(n) for n in ("simclr", "simsiam", "byol"))
  assert simclr.loss_head == "projector" and not simclr.needs_predictor
  assert simsiam.loss_head == "predictor" and simsiam.needs_predictor
  assert byol.needs_target_network and not simsiam.needs_target_network
  assert not simclr.needs_target_network


def _config(method, **changes):
  """The default training config for `method`, with its predictor set as it needs."""
  config = train_config.defaults()
  config.method = method
  config.model.predictor_hidden = 0 if method == "simclr" else 512
  for field, value in changes.items():
    target = config
    *parents, leaf = field.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


@pytest.mark.parametrize("method", ["simclr", "simsiam", "byol"])
def test_check_config_accepts_the_method_defaults(method):
  methods.get_method(method).check_config(_config(method))


@pytest.mark.parametrize("method, changes, match", [
    ("simclr", {"model.predictor_hidden": 512}, "predictor_hidden must be 0"),
    ("simclr", {"loss.name": "cosine"}, "loss.name"),
    ("simclr", {"loss.temperature": 0.0}, "loss.temperature"),
    ("simsiam", {"negatives": "global"}, "negatives='global'"),
    ("simsiam", {"model.predictor_hidden": 0}, "needs a predictor"),
    ("byol", {"negatives": "global"}, "negatives='global'"),
    ("byol", {"model.predictor_hidden": 0}, "needs a predictor"),
    ("byol", {"byol.tau_base": 1.5}, "byol.tau_base"),
    ("byol", {"byol.tau_schedule": "linear"}, "byol.tau_schedule"),
])
def test_check_config_rejects_what_the_method_cannot_use(method, changes, match):
  config = _config(method, **changes)
  with pytest.raises(errors.ConfigError, match=match):
    methods.get_method(method).check_config(config)
  with pytest.raises(errors.ConfigError, match=match):  # validate runs the same check
    train_config.validate(config)
