"""jnorm.cpu: the switch and its XLA:CPU flag and malloc settings; and that importing
jnorm (without the switch) changes nothing in the process."""

import os
import platform
import resource
import subprocess
import sys

import numpy as np
import pytest

from jnorm.cpu import flags


def test_appends_flag_to_existing_flags():
  out = flags.cpu_flags("--xla_force_host_platform_device_count=2", jaxlib_version="0.10.2")
  assert out == f"--xla_force_host_platform_device_count=2 {flags.YNN_FLAG}"


def test_keeps_users_own_setting():
  users = "--xla_cpu_experimental_ynn_fusion_type="
  assert flags.cpu_flags(users, jaxlib_version="0.10.2") == users


def test_unmeasured_jaxlib_leaves_flags_alone():
  assert flags.cpu_flags("--a=1", jaxlib_version="0.9.0") == "--a=1"


def test_eigen_convolutions_reads_the_last_ynn_setting():
  assert flags.eigen_convolutions(flags.YNN_FLAG)
  assert flags.eigen_convolutions("--a=1 --xla_cpu_experimental_ynn_fusion_type=")
  assert not flags.eigen_convolutions("")  # XLA's default sends convolutions to YNNPACK
  assert not flags.eigen_convolutions(
      f"{flags.YNN_FLAG} --xla_cpu_experimental_ynn_fusion_type=individual_convolution")


# Prints XLA_FLAGS and glibc's arena count setting after importing every jnorm module
# but jnorm.cpu's switch, and running a computation; then after `jnorm.cpu.enable()`.
_IMPORT_EVERYTHING = """
import os, pkgutil, importlib, jnorm
for m in pkgutil.walk_packages(jnorm.__path__, 'jnorm.'):
  if m.name != 'jnorm.main':
    importlib.import_module(m.name)
import jax.numpy as jnp
from jnorm.models import layers
print(repr(os.environ.get('XLA_FLAGS')), layers.is_stock(), float(jnp.ones(3).sum()))
import jnorm.cpu
print(jnorm.cpu.enable())
"""


def test_importing_jnorm_changes_nothing_until_the_switch():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING], env=env,
                       capture_output=True, text=True, check=True).stdout.splitlines()
  assert out[0] == "None True 3.0", out
  # After a computation XLA has read its flags: the switch says it could not set one.
  assert "xla_flag=False" in out[1] and "allocator=True" in out[1], out


def _enable_then_print_flags(env: dict) -> str:
  code = "import os, jnorm.cpu; t = jnorm.cpu.enable(); print(os.environ.get('XLA_FLAGS', ''), t.xla_flag)"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, check=True)
  return proc.stdout.strip()


def test_switch_sets_the_flag_before_the_first_computation_and_not_on_accelerators():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  assert _enable_then_print_flags(env) == f"{flags.YNN_FLAG} True"
  # JAX_PLATFORMS naming an accelerator first: nothing is set (jax itself is not asked,
  # so no accelerator is needed to check the decision).
  code = ("import os, jnorm.cpu\n"
          "print(jnorm.cpu._cpu_backend(), os.environ.get('XLA_FLAGS'))")
  proc = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "tpu,cpu"},
                        capture_output=True, text=True, check=True)
  assert proc.stdout.split() == ["False", "None"]


@pytest.mark.slow
def test_flag_is_accepted_by_this_jaxlib_and_computes_the_same_function(tmp_path):
  """XLA aborts on an unknown flag; a convolution under the flag matches the default."""
  code = ("import sys, jax, jax.numpy as jnp, numpy as np, jnorm.cpu\n"
          "if sys.argv[2] == 'on': jnorm.cpu.enable(conv='stock', batch_norm=False)\n"
          "x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))\n"
          "w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))\n"
          "y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
          " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
          "np.save(sys.argv[1], np.asarray(y))\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  outs = []
  for switch in ("on", "off"):
    path = tmp_path / f"y_{switch}.npy"
    subprocess.run([sys.executable, "-c", code, str(path), switch], env=env,
                   capture_output=True, check=True)
    outs.append(np.load(path))
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def _page_faults_per_call(switch: str) -> float:
  """Median minor page faults of the last 10 of 20 calls of a jitted op whose output is
  a fresh 64 MiB buffer each time (the heap grows for the first few calls), after
  importing jnorm's command line (and with it nearly every module) and, with 'on',
  calling the switch."""
  code = ("import resource, statistics, sys, jnorm.main, jnorm.cpu, jax, jax.numpy as jnp\n"
          "if sys.argv[1] == 'on': jnorm.cpu.enable(conv='stock', batch_norm=False)\n"
          "f = jax.jit(lambda x: x * 2.0)\n"
          "x = jnp.ones((16, 1024, 1024), jnp.float32)\n"
          "faults = []\n"
          "for _ in range(20):\n"
          "  r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "  f(x).block_until_ready()\n"
          "  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n"
          "print(statistics.median(faults[10:]))\n")
  proc = subprocess.run([sys.executable, "-c", code, switch], capture_output=True,
                        text=True, check=True)
  return float(proc.stdout.strip())


def test_allocator_settings_stop_refaulting_freed_buffers():
  """glibc unmaps a freed 64 MiB block and faults it in again on the next call; with
  the switch's malloc settings the block is kept and reused. Importing jnorm alone
  leaves glibc's defaults (the faults stay)."""
  if platform.libc_ver()[0] != "glibc":
    pytest.fail("this test expects Linux with glibc, as CI has")
  pages = 64 * 2**20 // resource.getpagesize()
  assert _page_faults_per_call("on") < 0.1 * pages
  assert _page_faults_per_call("off") > 0.5 * pages
