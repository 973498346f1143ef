"""jnorm.xla_cpu: the XLA:CPU flag and malloc settings jnorm applies on import, and when not."""

import os
import platform
import resource
import subprocess
import sys

import numpy as np
import pytest

from jnorm import xla_cpu


def test_appends_flag_to_existing_flags():
  out = xla_cpu.cpu_flags("--xla_force_host_platform_device_count=2",
                          jaxlib_version="0.10.2", opt_out=None)
  assert out == f"--xla_force_host_platform_device_count=2 {xla_cpu.YNN_FLAG}"


def test_keeps_users_own_setting():
  users = "--xla_cpu_experimental_ynn_fusion_type="
  assert xla_cpu.cpu_flags(users, jaxlib_version="0.10.2", opt_out=None) == users


def test_opt_out_and_unmeasured_jaxlib_leave_flags_alone():
  assert xla_cpu.cpu_flags("", jaxlib_version="0.10.2", opt_out="0") == ""
  assert xla_cpu.cpu_flags("--a=1", jaxlib_version="0.9.0", opt_out=None) == "--a=1"


def test_eigen_convolutions_reads_the_last_ynn_setting():
  assert xla_cpu.eigen_convolutions(xla_cpu.YNN_FLAG)
  assert xla_cpu.eigen_convolutions("--a=1 --xla_cpu_experimental_ynn_fusion_type=")
  assert not xla_cpu.eigen_convolutions("")  # XLA's default sends convolutions to YNNPACK
  assert not xla_cpu.eigen_convolutions(
      f"{xla_cpu.YNN_FLAG} --xla_cpu_experimental_ynn_fusion_type=individual_convolution")


def _flags_after_import(env: dict) -> str:
  code = "import os, jnorm; print(os.environ.get('XLA_FLAGS', ''))"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, check=True)
  return proc.stdout.strip()


def test_import_sets_the_flag_in_a_fresh_process():
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  assert _flags_after_import(env) == xla_cpu.YNN_FLAG
  assert _flags_after_import({**env, xla_cpu.OPT_OUT: "0"}) == ""


def test_flag_is_accepted_by_this_jaxlib_and_computes_the_same_function(tmp_path):
  """XLA aborts on an unknown flag; a convolution under the flag matches the default."""
  code = ("import sys, jnorm, jax, jax.numpy as jnp, numpy as np\n"
          "x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))\n"
          "w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))\n"
          "y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
          " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
          "np.save(sys.argv[1], np.asarray(y))\n")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  outs = []
  for i, extra in enumerate(({}, {xla_cpu.OPT_OUT: "0"})):
    path = tmp_path / f"y{i}.npy"
    subprocess.run([sys.executable, "-c", code, str(path)], env={**env, **extra},
                   capture_output=True, check=True)
    outs.append(np.load(path))
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def _page_faults_per_call(env: dict) -> float:
  """Median minor page faults of the last 10 of 20 calls of a jitted op whose output is
  a fresh 64 MiB buffer each time (the heap grows for the first few calls)."""
  code = ("import resource, statistics, jnorm, jax, jax.numpy as jnp\n"
          "f = jax.jit(lambda x: x * 2.0)\n"
          "x = jnp.ones((16, 1024, 1024), jnp.float32)\n"
          "faults = []\n"
          "for _ in range(20):\n"
          "  r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "  f(x).block_until_ready()\n"
          "  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n"
          "print(statistics.median(faults[10:]))\n")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, check=True)
  return float(proc.stdout.strip())


def test_malloc_defaults_stop_refaulting_freed_buffers():
  """glibc unmaps a freed 64 MiB block and faults it in again on the next call; with
  jnorm's malloc settings the block is kept and reused."""
  if platform.libc_ver()[0] != "glibc":
    pytest.fail("this test expects Linux with glibc, as CI has")
  pages = 64 * 2**20 // resource.getpagesize()
  env = {k: v for k, v in os.environ.items()
         if k not in (xla_cpu.OPT_OUT, xla_cpu.MALLOC_OPT_OUT)}
  assert _page_faults_per_call(env) < 0.1 * pages
  assert _page_faults_per_call({**env, xla_cpu.MALLOC_OPT_OUT: "0"}) > 0.5 * pages
  assert _page_faults_per_call({**env, xla_cpu.OPT_OUT: "0"}) > 0.5 * pages


def test_malloc_defaults_respect_the_opt_outs(monkeypatch):
  monkeypatch.setenv(xla_cpu.MALLOC_OPT_OUT, "0")
  assert xla_cpu.apply_malloc_defaults() is False
  monkeypatch.delenv(xla_cpu.MALLOC_OPT_OUT)
  monkeypatch.setenv(xla_cpu.OPT_OUT, "0")
  assert xla_cpu.apply_malloc_defaults() is False
