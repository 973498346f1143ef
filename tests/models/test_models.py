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
from jnorm.models import conv as conv_lib
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


def test_small_resnet_runs_and_outputs_128_features():
  net = models.SSLNet(backbone=models.SmallResNet(),
                      projector=models.Projector(features=(128, 128)))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
  _, out, mutated = jax.jit(_init_apply, static_argnums=0)(net, x)
  assert out["backbone"].shape == (2, 128) and out["projector"].shape == (2, 128)
  assert np.all(np.isfinite(out["projector"]))
  assert "stage3_block1" in mutated["batch_stats"]["backbone"]


def test_conv_init_is_kaiming_normal_fan_out(small_resnet_params):
  kernel = np.asarray(small_resnet_params[True]["stage3_block1"]["conv2"]["kernel"])
  assert kernel.shape == (3, 3, 128, 128)
  std = np.sqrt(2.0 / (3 * 3 * 128))  # torch kaiming_normal_(mode='fan_out')
  assert abs(kernel.std() / std - 1) < 0.01
  assert abs(kernel.mean()) < 0.01 * std
  # untruncated normal: about 0.27% of samples beyond 3 sigma (truncated would give 0)
  beyond = np.mean(np.abs(kernel) > 3 * std)
  assert 0.0015 < beyond < 0.004


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


@pytest.mark.parametrize("block_cls,cin,filters,strides", [
    (models.BasicBlock, 8, 8, 1),        # identity shortcut
    (models.BasicBlock, 4, 8, 2),        # projection shortcut
    (models.BottleneckBlock, 8, 2, 1),   # 8 == 2 * 4: identity
    (models.BottleneckBlock, 4, 2, 2)])  # projection
@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_residual_block_is_relu_of_shortcut(block_cls, cin, filters, strides,
                                                      zero_init):
  conv = lambda *a, **k: models.Conv(*a, use_bias=False, implementation="xla", **k)
  norm = lambda **k: nn.BatchNorm(use_running_average=False, momentum=0.9, **k)
  barrier = functools.partial(conv_lib.barrier_for, implementation="xla")
  block = block_cls(filters=filters, strides=strides, conv=conv, norm=norm,
                    barrier=barrier, zero_init_residual=zero_init)
  # Post-ReLU inputs (non-negative), as every block sees inside the ResNet.
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (4, 6, 6, cin)))
  variables, y = jax.jit(_init_apply_block, static_argnums=0)(block, x)
  params = variables["params"]
  if "shortcut_conv" in params:
    s = conv_lib.conv_xla(x, params["shortcut_conv"]["kernel"], strides=(strides,) * 2,
                          padding=((0, 0), (0, 0)))
    expected = jax.nn.relu(_batch_norm_train(np.asarray(s, np.float64)))
  else:
    expected = np.asarray(x)
  if zero_init:
    np.testing.assert_allclose(y, expected, atol=1e-5)
  else:
    assert np.max(np.abs(np.asarray(y) - expected)) > 0.1


# ---------------------------------------------------------------- the GEMM conv


CONV_CASES = [  # (kernel, stride, padding, H): the ResNets' convs and nn.Conv's modes
    (1, 1, "VALID", 7), (1, 2, "VALID", 8), (1, 2, "SAME", 7),
    (3, 1, ((1, 1), (1, 1)), 6), (3, 2, ((1, 1), (1, 1)), 7), (3, 2, "SAME", 8),
    (7, 2, ((3, 3), (3, 3)), 9), (7, 1, 3, 5), (3, 2, ((0, 1), (2, 0)), 9)]


def _conv_fn(impl, kernel, stride, padding):
  def f(x, w):
    pads = conv_lib.resolve_padding(padding, in_spatial=x.shape[1:3],
                                    kernel_size=(kernel, kernel), strides=(stride, stride))
    fn = conv_lib.conv_gemm if impl == "gemm" else conv_lib.conv_xla
    return fn(x, w, strides=(stride, stride), padding=pads)
  return f


def _conv_value_and_grads(impl, kernel, stride, padding, x, w, cotangent):
  f = _conv_fn(impl, kernel, stride, padding)
  y, vjp = jax.vjp(f, x, w)
  return (y, *vjp(cotangent))


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES)
def test_gemm_conv_matches_xla_float32(kernel, stride, padding, size):
  kx, kw, kc = jax.random.split(jax.random.key(kernel * 10 + stride), 3)
  x = jax.random.normal(kx, (3, size, size, 5))
  w = jax.random.normal(kw, (kernel, kernel, 5, 6)) / kernel
  out_shape = jax.eval_shape(_conv_fn("xla", kernel, stride, padding), x, w).shape
  g = jax.random.normal(kc, out_shape)

  @jax.jit
  def both(x, w, g):
    return [_conv_value_and_grads(impl, kernel, stride, padding, x, w, g)
            for impl in ("gemm", "xla")]
  got, want = both(x, w, g)
  for a, b in zip(got, want):
    assert a.shape == b.shape and a.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES[1::2])
def test_gemm_conv_matches_xla_float64(x64, kernel, stride, padding, size):
  rng = np.random.default_rng(kernel + 7 * stride)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)))
  ref = _conv_fn("xla", kernel, stride, padding)(x, w)
  g = jnp.asarray(rng.normal(size=ref.shape))

  @jax.jit
  def both(x, w, g):
    return [_conv_value_and_grads(impl, kernel, stride, padding, x, w, g)
            for impl in ("gemm", "xla")]
  got, want = both(x, w, g)
  for a, b in zip(got, want):
    assert a.dtype == jnp.float64
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_module_is_a_drop_in_for_nn_conv():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  kw = dict(features=4, kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)))
  ref_vars = nn.Conv(**kw).init(jax.random.key(1), x)
  for impl in ("gemm", "xla", "auto"):
    mine = models.Conv(**kw, implementation=impl)
    variables = mine.init(jax.random.key(1), x)
    # Same parameter names, shapes and initial values as nn.Conv with the same key.
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, ref_vars))
    np.testing.assert_allclose(mine.apply(variables, x), nn.Conv(**kw).apply(ref_vars, x),
                               atol=1e-5)


def test_auto_uses_gemm_on_cpu_only_under_ynnpack_convolutions(monkeypatch):
  # Without jnorm's CPU kernels (tests/models/test_cpu_kernels.py covers them).
  assert jax.default_backend() == "cpu"
  monkeypatch.setattr(conv_lib.cpu_kernels, "status", lambda: "turned off")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=reduce")
  assert not conv_lib.use_gemm("auto")  # jnorm's default: Eigen convolutions
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert conv_lib.use_gemm("auto")  # XLA's default: YNNPACK convolutions


def test_explicit_implementations_and_bad_name_is_a_config_error():
  assert conv_lib.use_gemm("gemm")
  assert not conv_lib.use_gemm("xla")
  with pytest.raises(ConfigError, match="conv_impl"):
    conv_lib.use_gemm("winograd")


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
  for field, bad in [("backbone", "resnet19"), ("stem", "tiny"), ("conv_impl", "fft"),
                     ("compute_dtype", "float16"), ("predictor_hidden", -1)]:
    c = models.default_model_config()
    c[field] = bad
    with pytest.raises(ConfigError, match=field):
      models.build_ssl_net(c)


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
                             num_filters=4, bn_axis_name=axis_name, conv_impl="xla")
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
  cfg.mlp_features = (32, 0)
  with pytest.raises(ConfigError, match="mlp_features"):
    models.build_ssl_net(cfg)


def test_fusion_barrier_is_the_identity_and_survives_xla_optimisation():
  """Bit-identical values and gradients, and XLA:CPU keeps the conditional (if a future
  XLA folds the always-true predicate, the barrier no longer stops the fusion)."""
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))

  def loss(kernel, x, barrier):
    y = jax.nn.relu(x)
    y = conv_lib.fusion_barrier(y) if barrier else y
    return jnp.sum(conv_lib.conv_xla(y, kernel, strides=(1, 1),
                                     padding=((1, 1), (1, 1))) ** 2)

  grads = [jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(kernel, x, b)
           for b in (False, True)]
  for plain, barred in zip(*grads):
    np.testing.assert_array_equal(plain, barred)
  np.testing.assert_array_equal(conv_lib.fusion_barrier(x), x)
  nan = x.at[0, 0, 0, 0].set(jnp.nan)  # the predicate is true for NaN too
  np.testing.assert_array_equal(conv_lib.fusion_barrier(nan), nan)
  hlo = jax.jit(jax.grad(loss), static_argnums=2).lower(kernel, x, True).compile().as_text()
  assert "conditional(" in hlo
