"""jnorm's CPU tuning, in one place and off until `enable()` is called.

On the CPUs this project's experiments run on (2 cores, small ResNets), stock XLA runs
the SmallResNet SimCLR step at about 0.6x torch's speed; with this package's tuning on,
about 1.5x (benchmarks/README.md). The tuning is four independent parts:

- an XLA:CPU flag that keeps convolutions on Eigen's kernels (`flags.apply_xla_flag`);
- glibc allocator settings that stop each step from faulting its memory back in
  (`flags.apply_allocator`);
- compiled C++ kernels for the convolutions and their gradients (`kernels`, used by the
  `conv.Conv` layer), built with the machine's compiler on first use;
- a BatchNorm whose gradient is written out (`batchnorm.BatchNorm`).

The last two replace the models' stock `nn.Conv` and `nn.BatchNorm` through
`jnorm.models.layers`, with the same variables, so checkpoints move freely between
tuned and stock runs. Nothing here runs on import. `python -m jnorm.main` calls
`enable()` when the backend is CPU (the config field `cpu_tuning='off'` turns it off);
library users call it themselves, before their first JAX computation:

  import jnorm.cpu
  jnorm.cpu.enable()    # no effect off CPU

Results differ from stock XLA's in float32 rounding only. What `enable()` changes in
the process (the allocator, `XLA_FLAGS`) cannot be undone; the layer swap can
(`jnorm.models.layers.restore()`).
"""

import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import pkgutil

import jax

from jnorm.cpu import batchnorm
from jnorm.cpu import conv as conv_lib
from jnorm.cpu import flags
from jnorm.cpu import kernels
from jnorm.errors import check_choice
from jnorm.models import layers


@dataclasses.dataclass(frozen=True)
class Tuning:
  """What `enable()` put in place.

  Attributes:
    backend: JAX's default backend ('cpu' unless enable() found an accelerator, in
      which case nothing else is set).
    xla_flag: the CPU flag was added to `XLA_FLAGS` before XLA read it.
    allocator: glibc accepted the allocator settings.
    conv: the convolution implementation the models use ('kernels', 'xla', 'gemm'),
      or None when the layers stay stock.
    batch_norm: the models use the BatchNorm with the written-out gradient.
  """
  backend: str
  xla_flag: bool = False
  allocator: bool = False
  conv: str | None = None
  batch_norm: bool = False


_enabled: Tuning | None = None


def _accelerator_plugins() -> bool:
  """True where a JAX accelerator plugin (CUDA, ROCm, TPU) is installed."""
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  try:
    import jax_plugins  # pylint: disable=import-outside-toplevel  # namespace package
  except ImportError:
    jax_plugins = None
  if jax_plugins is not None and any(pkgutil.iter_modules(jax_plugins.__path__)):
    return True
  return importlib.util.find_spec("libtpu") is not None


def _cpu_backend() -> bool:
  """Whether JAX's default backend is the CPU, decided without starting XLA's clients
  where possible (so that the XLA flag can still take effect)."""
  platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  if not _accelerator_plugins():
    return True
  return jax.default_backend() == "cpu"


def _clients_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def enable(*, conv: str = "auto", xla_flag: bool = True, allocator: bool = True,
           batch_norm: bool = True) -> Tuning:
  """Turns on jnorm's CPU tuning for this process; a no-op off CPU.

  Call it before the first JAX computation: XLA reads its flags when it starts, so a
  later call sets everything but the flag (`Tuning.xla_flag` says which).

  Args:
    conv: the models' convolution: 'auto' (jnorm's kernels where they can be built,
      else XLA's), 'kernels', 'xla' or 'gemm' (`jnorm.cpu.conv`); 'stock' keeps
      `nn.Conv`.
    xla_flag: add the XLA:CPU flag (`flags.YNN_FLAG`) to `XLA_FLAGS`.
    allocator: apply glibc's allocator settings (`flags.MALLOC_SETTINGS`).
    batch_norm: use the BatchNorm with the written-out gradient.

  Returns:
    A `Tuning` saying what was put in place.

  Raises:
    ConfigError: an unknown `conv`, or 'kernels' where they cannot be built.
  """
  global _enabled
  check_choice("conv", conv, conv_lib.IMPLEMENTATIONS + ("stock",))
  if not _cpu_backend():
    _enabled = Tuning(backend=jax.default_backend())
    return _enabled
  flag_set = False
  if xla_flag and not _clients_started():
    flag_set = flags.YNN_FLAG in flags.apply_xla_flag().split()
  allocator_set = flags.apply_allocator() if allocator else False
  implementation = None
  if conv != "stock":
    implementation = conv_lib.resolve(conv)
    layers.replace(conv=functools.partial(conv_lib.Conv, implementation=implementation))
  if batch_norm:
    layers.replace(batch_norm=batchnorm.BatchNorm)
  _enabled = Tuning(backend="cpu", xla_flag=flag_set, allocator=allocator_set,
                    conv=implementation, batch_norm=batch_norm)
  return _enabled


def enabled() -> Tuning | None:
  """What the last `enable()` put in place (None before any call)."""
  return _enabled


def available_cores() -> list[int]:
  """The CPU cores this process may run on (all of them where affinity is unknown)."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


# XLA:CPU sizes its thread pool from the cores the process may use when it starts, and
# its float32 results depend on that size: a run on a pool of 1 thread and of 2 differs
# in the last bits, then in its kNN accuracy (jnorm.jobs.workers). Training runs record
# it as `xla_cpu_threads`. Read when this module is first imported (before the pool).
_CORES_AT_IMPORT = len(available_cores())


def thread_pool_size() -> int:
  """XLA:CPU's thread pool size: the cores this process could use when jnorm.cpu was
  first imported."""
  return _CORES_AT_IMPORT


__all__ = ["Tuning", "available_cores", "enable", "enabled", "kernels",
           "thread_pool_size"]
