"""Tests of jnorm.models: presets, zero-init residuals, the GEMM conv, synced BN, heads."""

import functools
import json
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm import models
from jnorm.errors import ConfigError
import multiprocess_worker as mw


def _init_apply(net, x):
  variables = net.init(jax.random.key(0), x, train=True)
  out, mutated = net.apply(variables, x, train=True, mutable=["batch_stats"])
  return variables, out, mutated


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("preset,features", [
    (models.ResNet18, 512), (models.ResNet34, 512), (models.ResNet50, 2048),
    (models.SmallResNet, 128)])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_preset_shapes(preset, features, stem):
  net = models.SSLNet(backbone=preset(stem=stem),
                      projector=models.Projector(features=(32, 16)),
                      predictor=models.Predictor(hidden=8, features=16))
  x = jnp.zeros((2, 16, 16, 3))
  # eval_shape traces init and apply without running the (slow, unjitted) convs.
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=True))
  out, mutated = jax.eval_shape(
      lambda v: net.apply(v, x, train=True, mutable=["batch_stats"]), variables)
  assert set(variables) == {"params", "batch_stats"}
  assert out["backbone"].shape == (2, features)
  assert out["projector"].shape == (2, 16)
  assert out["predictor"].shape == (2, 16)
  assert all(o.dtype == jnp.float32 for o in out.values())
  assert jax.tree.structure(mutated["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"])


def test_resnet18_counts_params_like_torch():
  net = models.SSLNet(backbone=models.ResNet18(),
                      projector=models.Projector(features=(128, 128)))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3))))
  # Counted independently from torch_baseline.simclr_model(): 11,168,832 backbone
  # (convs + BN affine) + Linear(512,128) + Linear(128,128) = 11,251,008.
  stem = 3 * 9 * 64 + 2 * 64
  stage1 = 4 * (9 * 64 * 64 + 2 * 64)
  def stage(ci, co):
    first = 9 * ci * co + 9 * co * co + 4 * co + ci * co + 2 * co
    return first + 2 * (9 * co * co + 2 * co)
  backbone = stem + stage1 + stage(64, 128) + stage(128, 256) + stage(256, 512)
  head = 512 * 128 + 128 + 128 * 128 + 128
  n = sum(p.size for p in jax.tree.leaves(variables["params"]))
  assert backbone == 11_168_832
  assert n == backbone + head


# ---------------------------------------------------------------- init


@pytest.fixture(scope="module")
def small_resnet_params():
  """SmallResNet params with zero_init_residual True and False (jitted init: fast)."""
  x = jnp.zeros((1, 8, 8, 1))
  init = lambda zero: jax.jit(models.SmallResNet(zero_init_residual=zero).init)
  return {zero: init(zero)(jax.random.key(0), x)["params"] for zero in (True, False)}


@pytest.mark.slow
def test_small_resnet_runs_and_outputs_128_features():
  net = models.SSLNet(backbone=models.SmallResNet(),
                      projector=models.Projector(features=(128, 128)))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
  _, out, mutated = jax.jit(_init_apply, static_argnums=0)(net, x)
  assert out["backbone"].shape == (2, 128) and out["projector"].shape == (2, 128)
  assert np.all(np.isfinite(out["projector"]))
  assert "stage3_block1" in mutated["batch_stats"]["backbone"]


@pytest.mark.slow
def test_conv_init_is_kaiming_normal_fan_out(small_resnet_params):
  kernel = np.asarray(small_resnet_params[True]["stage3_block1"]["conv2"]["kernel"])
  assert kernel.shape == (3, 3, 128, 128)
  std = np.sqrt(2.0 / (3 * 3 * 128))  # torch kaiming_normal_(mode='fan_out')
  assert abs(kernel.std() / std - 1) < 0.01
  assert abs(kernel.mean()) < 0.01 * std
  # untruncated normal: about 0.27% of samples beyond 3 sigma (truncated would give 0)
  beyond = np.mean(np.abs(kernel) > 3 * std)
  assert 0.0015 < beyond < 0.004


@pytest.mark.slow
def test_every_block_last_bn_scale_starts_at_zero(small_resnet_params):
  params = small_resnet_params[True]
  blocks = [k for k in params if k.startswith("stage")]
  assert len(blocks) == 3
  for k in blocks:
    assert np.all(params[k]["bn2"]["scale"] == 0)
    assert np.all(params[k]["bn1"]["scale"] == 1)
  off = small_resnet_params[False]
  assert all(np.all(off[k]["bn2"]["scale"] == 1) for k in blocks)


def _init_apply_block(block, x):
  variables = block.init(jax.random.key(1), x)
  return variables, block.apply(variables, x, mutable=["batch_stats"])[0]


def _batch_norm_train(y):
  mean = y.mean(axis=(0, 1, 2))
  var = y.var(axis=(0, 1, 2))
  return (y - mean) / np.sqrt(var + 1e-5)


@pytest.mark.parametrize("block_cls,cin,filters,strides,zero_init", [
    (models.BasicBlock, 8, 8, 1, True),          # identity shortcut
    (models.BasicBlock, 4, 8, 2, True),          # projection shortcut
    (models.BottleneckBlock, 8, 2, 1, True),     # 8 == 2 * 4: identity
    (models.BottleneckBlock, 4, 2, 2, True),     # projection
    (models.BasicBlock, 4, 8, 2, False)] + [     # the control: the same blocks unzeroed
        pytest.param(*case, False, marks=pytest.mark.slow)
        for case in ((models.BasicBlock, 8, 8, 1), (models.BottleneckBlock, 8, 2, 1),
                     (models.BottleneckBlock, 4, 2, 2))])
def test_zero_init_residual_block_is_relu_of_shortcut(block_cls, cin, filters, strides,
                                                      zero_init):
  conv = lambda *a, **k: nn.Conv(*a, use_bias=False, **k)
  norm = lambda **k: nn.BatchNorm(use_running_average=False, momentum=0.9, **k)
  block = block_cls(filters=filters, strides=strides, conv=conv, norm=norm,
                    zero_init_residual=zero_init)
  # Post-ReLU inputs (non-negative), as every block sees inside the ResNet.
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (4, 6, 6, cin)))
  variables, y = jax.jit(_init_apply_block, static_argnums=0)(block, x)
  params = variables["params"]
  if "shortcut_conv" in params:
    s = jax.lax.conv_general_dilated(x, params["shortcut_conv"]["kernel"], (strides,) * 2,
                                     "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    expected = jax.nn.relu(_batch_norm_train(np.asarray(s, np.float64)))
  else:
    expected = np.asarray(x)
  if zero_init:
    np.testing.assert_allclose(y, expected, atol=1e-5)
  else:
    assert np.max(np.abs(np.asarray(y) - expected)) > 0.1


# ---------------------------------------------------------------- heads and builder


def _init_apply_head(head, h):
  variables = head.init(jax.random.key(1), h)
  out, mutated = head.apply(variables, h, mutable=["batch_stats"])
  return variables, out, mutated


def test_projector_and_predictor_structure():
  h = jax.random.normal(jax.random.key(0), (6, 10))
  proj = models.Projector(features=(12, 12, 7), use_bn=True)
  variables, z, _ = jax.jit(_init_apply_head, static_argnums=0)(proj, h)
  p = variables["params"]
  assert set(p) == {"dense1", "bn1", "dense2", "bn2", "dense3", "bn3"}
  assert p["dense1"]["kernel"].shape == (10, 12) and p["dense3"]["kernel"].shape == (12, 7)
  # Last layer: BN but no ReLU -> batch-normalised columns (mean 0, var 1, negatives).
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.var(0), 1, atol=1e-3)
  plain = models.Projector(features=(8, 4), use_bn=False)
  pv = plain.init(jax.random.key(2), h)
  assert set(pv) == {"params"} and set(pv["params"]) == {"dense1", "dense2"}
  # no BN, torch-Linear init: |kernel| and |bias| <= 1/sqrt(fan_in)
  assert np.max(np.abs(pv["params"]["dense1"]["kernel"])) <= 1 / np.sqrt(10)
  assert np.max(np.abs(pv["params"]["dense2"]["bias"])) <= 1 / np.sqrt(8)
  pred = models.Predictor(hidden=3, features=7)
  zz = jax.random.normal(jax.random.key(3), (6, 7))
  q = pred.init(jax.random.key(4), zz)["params"]
  assert set(q) == {"dense1", "bn1", "dense2"}
  assert q["dense1"]["kernel"].shape == (7, 3) and q["dense2"]["kernel"].shape == (3, 7)


def test_build_ssl_net_from_config_and_errors():
  cfg = models.default_model_config()
  cfg.backbone = "small_resnet"
  cfg.projector_dims = (16, 16, 16)
  cfg.projector_bn = True
  cfg.predictor_hidden = 4
  cfg.compute_dtype = "bfloat16"
  net = models.build_ssl_net(cfg)
  x = jnp.zeros((2, 8, 8, 1))
  variables, out, _ = jax.eval_shape(functools.partial(_init_apply, net), x)
  assert out["backbone"].shape == (2, 128) and out["predictor"].shape == (2, 16)
  assert all(o.dtype == jnp.float32 for o in out.values())
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  for field, bad in [("backbone", "resnet19"), ("stem", "tiny"), ("compute_dtype", "float16"),
                     ("predictor_hidden", -1), ("mlp_features", (32, 0))]:
    c = models.default_model_config()
    c[field] = bad
    with pytest.raises(ConfigError, match=field):
      models.check_model_config(c)


# ---------------------------------------------------------------- synced BN


_SHARD_MAP_SCRIPT = textwrap.dedent("""
  import json
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, PartitionSpec as P
  from jnorm import models

  assert jax.device_count() == 2
  def net(axis_name):
    # One basic block with a projection shortcut: every kind of BN the ResNets use.
    backbone = models.ResNet(stage_sizes=(1, 1), block_cls=models.BasicBlock,
                             num_filters=4, bn_axis_name=axis_name)
    return models.SSLNet(
        backbone=backbone,
        projector=models.Projector(features=(8, 8), use_bn=True, bn_axis_name=axis_name),
        predictor=models.Predictor(hidden=4, features=8, bn_axis_name=axis_name))
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
  variables = jax.jit(net(None).init)(jax.random.key(1), x)
  # Perturb the zero-initialised BN scales so every layer matters.
  variables = jax.tree.map(lambda v: v + 0.3, variables)
  mesh = Mesh(np.array(jax.devices()), ("batch",))

  def sharded(axis_name):
    def per_device(v, xs):
      out, mut = net(axis_name).apply(v, xs, train=True, mutable=["batch_stats"])
      return out, mut
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("batch")),
                                 out_specs=(P("batch"), P()), check_vma=False))

  full, full_mut = jax.jit(lambda v, x: net(None).apply(
      v, x, train=True, mutable=["batch_stats"]))(variables, x)
  synced, synced_mut = sharded("batch")(variables, x)
  local, _ = sharded(None)(variables, x)
  def maxdiff(a, b):
    return max(float(jnp.max(jnp.abs(u - w))) for u, w in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  def relmax(a, b):
    return max(float(jnp.max(jnp.abs(u - w)) / jnp.max(jnp.abs(u))) for u, w in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(json.dumps({"synced": maxdiff(full, synced), "stats": relmax(full_mut, synced_mut),
                    "local": maxdiff(full, local)}))
""")


@pytest.mark.slow
def test_bn_axis_name_syncs_statistics_across_two_devices():
  proc = mw.run_on_cpu_devices(2, _SHARD_MAP_SCRIPT)
  diffs = json.loads(proc.stdout.strip().splitlines()[-1])
  assert diffs["synced"] < 1e-4, diffs
  assert diffs["stats"] < 1e-5, diffs  # relative to each statistic's largest entry
  # Per-device statistics give a different function: the test can tell them apart.
  assert diffs["local"] > 1e-2, diffs


def test_mlp_backbone_shapes_and_errors():
  cfg = models.default_model_config()
  cfg.backbone, cfg.mlp_features, cfg.projector_dims = "mlp", (32, 16), (16, 8)
  net = models.build_ssl_net(cfg)
  variables = net.init(jax.random.key(0), jnp.zeros((4, 64)), train=True)
  out = net.apply(variables, jnp.ones((4, 64)), train=False)
  assert out["backbone"].shape == (4, 16) and out["projector"].shape == (4, 8)
  with pytest.raises(ValueError, match="vectors"):
    net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), train=True)


def test_default_model_is_stock_flax_and_jvp_runs_through_it_in_train_mode():
  """Without `jnorm.cpu.enable()` the models are `nn.Conv` and `nn.BatchNorm`, so
  forward-mode autodiff works (a `custom_vjp` layer would raise a TypeError)."""
  assert models.layers.is_stock()
  cfg = models.default_model_config()
  cfg.backbone, cfg.projector_dims = "small_resnet", (16, 8)
  net = models.build_ssl_net(cfg)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  variables = jax.jit(functools.partial(net.init, train=True))(jax.random.key(1), x)
  assert {type(m).__name__ for m in _submodules(net, variables, x)} >= {"Conv", "BatchNorm"}

  def embed(x):
    out, _ = net.apply(variables, x, train=True, mutable=["batch_stats"])
    return out["projector"]

  @jax.jit
  def both_modes(x, t, u):
    # Forward mode agrees with reverse mode: <J t, u> == <t, J^T u>.
    _, jvp = jax.jvp(embed, (x,), (t,))
    (vjp,) = jax.vjp(embed, x)[1](u)
    return jnp.vdot(jvp, u), jnp.vdot(t, vjp)

  tangent = jax.random.normal(jax.random.key(2), x.shape)
  u = jax.random.normal(jax.random.key(3), (4, 8))
  forward, reverse = both_modes(x, tangent, u)
  np.testing.assert_allclose(forward, reverse, rtol=1e-4)


def _submodules(net, variables, x):
  """The modules `net` calls on `x` (flax's interceptor)."""
  seen = []

  def record(next_fun, args, kwargs, context):
    seen.append(context.module)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: net.apply(variables, x, train=False))  # tracing calls them all
  return [m for m in seen if type(m).__module__.startswith("flax.")]
