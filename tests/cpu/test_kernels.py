"""jnorm's compiled CPU kernels (jnorm.cpu.kernels), the convolution on them
(jnorm.cpu.conv.conv_kernels) and the switch's choice of convolution."""

import functools
import pathlib
import stat
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm import cpu
from jnorm import models
from jnorm.cpu import conv as conv_lib
from jnorm.cpu import kernels as cpu_kernels
from jnorm.errors import ConfigError
from jnorm.models import layers

# (batch, height, width, cin, cout, kernel, strides, padding)
CASES = [
    (8, 16, 16, 32, 32, 3, (1, 1), ((1, 1), (1, 1))),  # the ResNets' 3x3 layer
    (3, 7, 9, 3, 16, 3, (2, 2), ((1, 1), (1, 1))),  # odd sizes, stride 2, batch < chunks
    (4, 8, 8, 1, 32, 3, (1, 1), ((1, 1), (1, 1))),  # the 1-channel stem
    (6, 8, 8, 12, 64, 1, (2, 2), ((0, 0), (0, 0))),  # a 1x1 stride-2 shortcut
    (5, 9, 9, 6, 48, 3, (2, 1), ((0, 1), (1, 0))),  # uneven strides and padding, Cout 48
    (2, 5, 5, 8, 16, 7, (2, 2), ((3, 3), (3, 3))),  # a 7x7 stem on a 5x5 image
    (1, 4, 4, 128, 128, 3, (1, 1), ((1, 1), (1, 1))),  # one image, wide layer
]

# Input gradients on the kernels (Cin a multiple of 16), same fields.
INPUT_GRAD_CASES = [
    (4, 16, 16, 32, 64, 3, (2, 2), ((1, 1), (1, 1))),  # the ResNets' stride-2 3x3 layer
    (3, 16, 16, 32, 64, 3, (2, 2), ((0, 1), (0, 1))),  # 'SAME' at stride 2
    (4, 8, 8, 32, 64, 1, (2, 2), ((0, 0), (0, 0))),  # a 1x1 stride-2 shortcut
    (3, 7, 9, 16, 32, 3, (2, 2), ((1, 1), (1, 1))),  # odd sizes: the last phase overhangs
    (5, 9, 9, 16, 48, 3, (2, 1), ((0, 1), (1, 0))),  # uneven strides and padding
    (2, 11, 10, 16, 16, 3, (3, 3), ((1, 1), (1, 1))),  # stride 3
    (2, 5, 5, 16, 16, 7, (2, 2), ((3, 3), (3, 3))),  # a 7x7 kernel on a 5x5 image
    (3, 6, 6, 16, 16, 1, (2, 2), ((1, 1), (1, 1))),  # a phase with negative low padding
    CASES[0],  # stride 1: one phase
]


def _inputs(case, seed=0):
  batch, h, w, cin, cout, k, strides, padding = case
  kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (batch, h, w, cin))
  kernel = jax.random.normal(kw, (k, k, cin, cout))
  out = jax.eval_shape(
      lambda x, k: conv_lib.conv_xla(x, k, strides=strides, padding=padding), x, kernel)
  return x, kernel, jax.random.normal(kg, out.shape)


def _xla_kernel_grad(x, kernel, dy, strides, padding):
  _, vjp = jax.vjp(
      lambda k: conv_lib.conv_xla(x, k, strides=strides, padding=padding), kernel)
  return vjp(dy)[0]


def _xla_input_grad(x, kernel, dy, strides, padding):
  _, vjp = jax.vjp(
      lambda x: conv_lib.conv_xla(x, kernel, strides=strides, padding=padding), x)
  return vjp(dy)[0]


def test_the_kernel_builds_here():
  # Every other test of the kernels depends on this: CI has a C++ compiler.
  assert cpu_kernels.status() is None, cpu_kernels.status()


# Each kernel: its call on (x, kernel, dy), the function of XLA's it computes (on the same
# arguments), and which argument a misaligned kernel (or phases interleaved in the wrong
# order) would read one column off.
KERNELS = {
    "conv": (lambda x, k, dy, **kw: cpu_kernels.conv(x, k, dy.shape[1:3], **kw),
             lambda x, k, dy, **kw: conv_lib.conv_xla(x, k, **kw), 0),
    "kernel_grad": (lambda x, k, dy, **kw: cpu_kernels.kernel_grad(x, dy, k.shape, **kw),
                    _xla_kernel_grad, 0),
    "input_grad": (lambda x, k, dy, **kw: cpu_kernels.input_grad(dy, k, x.shape, **kw),
                   _xla_input_grad, 2),
}


def _slow_after(first: int, cases: list) -> list:
  """`cases` with all but the first `first` marked slow (the full suite runs them all)."""
  return [c if i < first else pytest.param(*c, marks=pytest.mark.slow)
          for i, c in enumerate(cases)]


@pytest.mark.parametrize("name, case", _slow_after(2, [("conv", c) for c in CASES])
                         + _slow_after(2, [("kernel_grad", c) for c in CASES])
                         + _slow_after(2, [("input_grad", c) for c in INPUT_GRAD_CASES]))
def test_kernel_matches_xla_in_float64(name, case):
  ours, xlas, shifted = KERNELS[name]
  args = _inputs(case)
  geometry = {"strides": case[6], "padding": case[7]}
  got = jax.jit(functools.partial(ours, **geometry))(*args)
  with jax.enable_x64(True):
    args64 = [jnp.asarray(np.asarray(a), jnp.float64) for a in args]
    want = np.asarray(xlas(*args64, **geometry))
    args64[shifted] = jnp.roll(args64[shifted], 1, axis=2)
    off = np.asarray(xlas(*args64, **geometry))
  assert got.shape == want.shape and got.dtype == jnp.float32
  scale = np.abs(want).max()
  # float32 sums of up to 2,048 terms: the kernel and XLA's own float32 result within a
  # few ulps of the scale, and a tolerance that discriminates.
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)
  np.testing.assert_allclose(xlas(*args, **geometry), want, rtol=0, atol=2e-6 * scale)
  assert np.abs(off - want).max() > 0.1 * scale


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4], INPUT_GRAD_CASES[0]])
def test_conv_kernels_value_and_gradients_match_float64(case):
  # Input gradients on the kernels (stride 1 and 2) and XLA's (Cin 3 and 6).
  x, kernel, dy = _inputs(case, seed=1)
  strides, padding = case[6], case[7]

  def value_and_grads(conv, x, kernel, dy):
    y, vjp = jax.vjp(lambda x, k: conv(x, k, strides=strides, padding=padding),
                     x, kernel)
    return (y, *vjp(dy))

  got = jax.jit(functools.partial(value_and_grads, conv_lib.conv_kernels))(x, kernel, dy)
  with jax.enable_x64(True):
    want = value_and_grads(conv_lib.conv_xla, *(
        jnp.asarray(np.asarray(a), jnp.float64) for a in (x, kernel, dy)))
  for name, a, b in zip(("value", "input gradient", "kernel gradient"), got, want):
    assert a.dtype == jnp.float32
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * np.abs(b).max(), err_msg=name)


@pytest.mark.slow
def test_layers_the_kernels_do_not_take_run_xlas_convolution_bit_for_bit(x64, monkeypatch):
  # float64, Cout not a multiple of 16, and kernels above MAX_KERNEL_SIZE; under the
  # switch's flag (Eigen convolutions) XLA's own form is the fallback.
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=reduce")
  for dtype, cin, cout in [(jnp.float64, 3, 16), (jnp.float32, 3, 5),
                           (jnp.float32, 512, 512)]:
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, cin), dtype)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, cin, cout), dtype)
    assert not cpu_kernels.supports(x, kernel)

    def grads(implementation):
      layer = conv_lib.Conv(cout, (3, 3), use_bias=False, dtype=dtype, param_dtype=dtype,
                            implementation=implementation)
      loss = lambda k, x: jnp.sum(jnp.sin(layer.apply({"params": {"kernel": k}}, x)))
      return jax.jit(jax.grad(loss, (0, 1)))(kernel, x)
    for a, b in zip(grads("kernels"), grads("xla")):
      np.testing.assert_array_equal(a, b)
  assert cpu_kernels.supports(x[..., :128], kernel[:, :, :128, :128])


_POOL_SCRIPT = textwrap.dedent("""
    import os, sys
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
    import jax, numpy as np
    import jnorm.cpu
    from jnorm.cpu import kernels as cpu_kernels
    x = jax.random.normal(jax.random.key(0), (16, 12, 12, 32))
    dy = jax.random.normal(jax.random.key(1), (16, 12, 12, 32))
    kw = dict(strides=(1, 1), padding=((1, 1), (1, 1)))
    g = jax.jit(lambda x, dy: cpu_kernels.kernel_grad(x, dy, (3, 3, 32, 32), **kw))(x, dy)
    y = jax.jit(lambda x, k: cpu_kernels.conv(x, k, (12, 12), **kw))(x, g)
    print(jnorm.cpu.thread_pool_size(), np.asarray(g).tobytes().hex(),
          np.asarray(y).tobytes().hex())
""")


def test_kernels_do_not_depend_on_the_thread_pool_size():
  # XLA's own kernel gradient does: the same script with it gives other bits with a pool
  # of 1 thread than with 2 (checked when this test was written).
  cores = cpu.available_cores()
  assert len(cores) >= 2, "this check needs 2 cores (CI has them)"
  outputs = []
  for group in (cores[:1], cores):
    done = subprocess.run([sys.executable, "-c", _POOL_SCRIPT,
                           ",".join(map(str, group))],
                          capture_output=True, text=True, check=True, timeout=300)
    outputs.append(done.stdout.split())
  (pool_one, *bits_one), (pool_all, *bits_all) = outputs
  assert (int(pool_one), int(pool_all)) == (1, len(cores))
  assert bits_one == bits_all and len(bits_one) == 2


def test_auto_resolves_to_the_kernels(monkeypatch):
  for flags in ("--xla_cpu_experimental_ynn_fusion_type=reduce",  # Eigen convolutions
                "--xla_force_host_platform_device_count=2"):  # YNNPACK convolutions
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert conv_lib.resolve("auto") == "kernels"
  assert [conv_lib.resolve(n) for n in ("xla", "gemm", "kernels")] == ["xla", "gemm", "kernels"]


def test_without_the_kernels_auto_is_xla_or_gemm_by_the_flags(monkeypatch):
  monkeypatch.setattr(cpu_kernels, "status", lambda: "no C++ compiler found")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=reduce")
  assert conv_lib.resolve("auto") == "xla"  # the switch's flag: Eigen convolutions
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert conv_lib.resolve("auto") == "gemm"  # XLA's default: YNNPACK convolutions
  with pytest.raises(ConfigError, match=r"CPU kernels cannot run here.*no C\+\+ compiler") as info:
    conv_lib.resolve("kernels")
  assert "\n" not in str(info.value)
  with pytest.raises(ConfigError, match="conv='winograd' is not valid"):
    conv_lib.resolve("winograd")
  with pytest.raises(ConfigError, match="no C\\+\\+ compiler"):
    cpu_kernels.kernel_grad(jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 4, 4, 16)),
                            (3, 3, 8, 16), strides=(1, 1), padding=((1, 1), (1, 1)))


def test_status_names_why_the_kernel_is_off(monkeypatch, capsys):
  monkeypatch.delenv("CXX", raising=False)
  monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: None)
  assert "no C++ compiler" in cpu_kernels.status.__wrapped__()
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "using XLA's convolutions" in err


def _script(path: pathlib.Path, body: str) -> str:
  path.write_text("#!/bin/sh\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def test_build_is_cached_and_a_failed_build_leaves_nothing(tmp_path):
  real = cpu_kernels._compiler()  # pylint: disable=protected-access
  calls = tmp_path / "calls"
  counting = _script(tmp_path / "cxx", f'echo x >> "{calls}"\nexec "{real}" "$@"\n')
  out = tmp_path / "kernels"
  first = cpu_kernels.build(counting, out)
  second = cpu_kernels.build(counting, out)
  assert first == second and first.exists()
  assert calls.read_text().count("x") == 1  # the second call found the build
  assert sorted(p.name for p in out.iterdir()) == [first.name]  # no temporaries
  failing = _script(tmp_path / "bad", 'echo "x.cc:1: error: boom" >&2\nexit 1\n')
  with pytest.raises(RuntimeError, match="boom"):
    cpu_kernels.build(failing, tmp_path / "other")
  assert list((tmp_path / "other").iterdir()) == []


@pytest.mark.slow
def test_switch_swaps_the_layers_and_gradients_match_stock_flax():
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
  net = models.SSLNet(backbone=models.SmallResNet(stem="cifar"),
                      projector=models.Projector(features=(16, 16), use_bn=False))
  variables = net.init(jax.random.key(1), x, train=True)  # stock: the same variables

  def grads():
    def loss(params):
      out, _ = net.apply({**variables, "params": params}, x, train=True,
                         mutable=["batch_stats"])
      return jnp.sum(jnp.tanh(out["projector"]))
    compiled = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
    return compiled(variables["params"]), compiled.as_text()

  want, stock_hlo = grads()
  previous = dict(layers._current)  # pylint: disable=protected-access
  try:
    tuning = cpu.enable(xla_flag=False, allocator=False)
    assert tuning.conv == "kernels" and tuning.batch_norm
    assert layers.conv().func is conv_lib.Conv and not layers.is_stock()
    tuned_vars = net.init(jax.random.key(1), x, train=True)
    assert jax.tree.all(jax.tree.map(np.array_equal, tuned_vars, variables))
    got, tuned_hlo = grads()
  finally:
    layers.restore(previous)
  assert "jnorm_conv_kernel_grad" in tuned_hlo and "jnorm_conv" not in stock_hlo
  # Every convolution of the SmallResNet runs on the kernels: no fusion barrier.
  assert "conditional(" not in tuned_hlo
  leaves = jax.tree_util.tree_leaves_with_path(got)
  assert len(leaves) > 10
  for (path, a), b in zip(leaves, jax.tree.leaves(want)):
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_the_barrier_stands_only_before_layers_on_xlas_kernel_gradient():
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 4, 4, 32)))

  def barriers(features, implementation, dtype=jnp.float32):
    layer = conv_lib.Conv(features, (3, 3), implementation=implementation, dtype=dtype)
    variables = layer.init(jax.random.key(0), x)
    fn = jax.jit(lambda x: layer.apply(variables, x))
    return fn.lower(x).compile().as_text().count("conditional(")

  assert barriers(32, "kernels") == 0
  # A layer the kernels do not take keeps XLA's kernel gradient and the barrier:
  # bfloat16, Cout not a multiple of 16, or XLA's convolution asked for.
  assert barriers(32, "kernels", dtype=jnp.bfloat16) == 1
  assert barriers(8, "kernels") == 1
  assert barriers(32, "xla") == 1


def test_the_build_runs_at_the_machines_vector_width():
  # GCC lowers a vector wider than the machine's registers element by element: a build
  # fixed at AVX-512's width ran 25-30x slower than XLA on an AVX2 machine.
  flags = set()
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("flags"):
      flags = set(line.split(":", 1)[1].split())
      break
  expected = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
  assert cpu_kernels.vector_lanes() == expected
