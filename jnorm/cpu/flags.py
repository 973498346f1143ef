"""The XLA:CPU flag and the allocator settings of `jnorm.cpu.enable()`.

On this project's CPU path (small ResNets, 2 cores), XLA:CPU's default routes
convolutions through YNNPACK fusions. Measured on the experiments' SmallResNet SimCLR
step (batch 128, 16 px; benchmarks/README.md), Eigen's convolutions are faster, while
YNNPACK stays the faster choice for reductions (BatchNorm statistics). So jnorm sets

  --xla_cpu_experimental_ynn_fusion_type=reduce

i.e. YNNPACK for reductions only. The flag changes which kernels run, not the function
computed (float32 rounding differs in the last bits). It is appended to `XLA_FLAGS`,
never replacing a user's flags: it is skipped when `XLA_FLAGS` already names
`xla_cpu_experimental_ynn_fusion_type`, and for jaxlib versions it was not measured on
(an unknown flag aborts XLA). XLA reads `XLA_FLAGS` when it creates its clients, at the
first computation, so the flag takes effect only when set before that.

Memory: XLA:CPU allocates every step's temporaries and outputs with malloc and frees
them after the step. glibc serves large blocks (above its mmap threshold, at most 32 MB
by default, and any block bigger than a thread arena's 64 MB heap) with fresh `mmap`s
and unmaps them on free, so each step faults its whole working set back in, page by
page: 33,400 page faults (137 MB) per SmallResNet step at 16 px and batch 128, 231,000
(950 MB) at 28 px and batch 256, and first-touch faults are expensive on this
project's VMs (benchmarks/README.md). `apply_allocator` sets glibc's allocator
(`mallopt`) to serve large blocks from the main heap and to keep freed memory for
reuse: no page faults after the first steps, the same results. The cost: the process
keeps its peak heap (resident memory stays at its high-water mark instead of shrinking
between steps) and all threads share one malloc arena, which slows XLA's compilation
(its LLVM threads allocate heavily): 11.0-12.1 s against 9.2-10.2 s to build and
compile the SmallResNet step. End to end it pays: the README's main command 79 s
against 84 s, identical results. glibc (Linux) only. Threads that allocated memory
before the call keep their own arenas. Neither setting can be undone in the process.
"""

import ctypes
import os
import platform

YNN_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"

YNN_FLAG = f"--{YNN_FLAG_NAME}=reduce"
# jaxlib versions on which the flag exists and was measured (XLA aborts on unknown flags).
MEASURED_JAXLIB = ("0.10.",)


def cpu_flags(xla_flags: str, *, jaxlib_version: str) -> str:
  """`xla_flags` with jnorm's CPU flag appended where it applies (pure)."""
  if YNN_FLAG_NAME in xla_flags:
    return xla_flags
  if not jaxlib_version.startswith(MEASURED_JAXLIB):
    return xla_flags
  return f"{xla_flags} {YNN_FLAG}".strip()


def eigen_convolutions(xla_flags: str) -> bool:
  """True when `xla_flags` keep XLA:CPU's convolutions out of YNNPACK (on Eigen).

  That is the case under the flag `jnorm.cpu.enable()` sets (`=reduce`) or any user setting of the
  YNNPACK fusion types that names no convolution; without the flag XLA:CPU (jaxlib
  0.10) sends convolutions to YNNPACK. `jnorm.cpu.conv.resolve('auto')` reads it:
  on Eigen the native convolution beats the GEMM form even on ResNet-18
  (benchmarks/README.md), on YNNPACK it does not.
  """
  value = None
  for flag in xla_flags.split():
    if flag.lstrip("-").startswith(YNN_FLAG_NAME + "="):
      value = flag.split("=", 1)[1]  # the last setting wins, as in XLA's parser
  return value is not None and "convolution" not in value


# glibc's mallopt parameters (<malloc.h>) and jnorm's values: one arena, so that large
# blocks come from the growable main heap; mmap and trim thresholds at the largest C
# int, so that freed blocks stay in the heap for reuse; 64 MiB of slack per heap growth.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
# glibc's environment variable for each setting -> (mallopt parameter, value).
MALLOC_SETTINGS = {
    "MALLOC_ARENA_MAX": (M_ARENA_MAX, 1),
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 2**31 - 1),
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 2**31 - 1),
    "MALLOC_TOP_PAD_": (M_TOP_PAD, 64 << 20),
}


def malloc_env() -> dict[str, str]:
  """The same settings as glibc environment variables, for a process that does not
  run jnorm (benchmarks/train_step.py --torch-malloc gives them to torch)."""
  return {name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()}


def apply_allocator() -> bool:
  """Sets glibc's malloc to keep freed memory for reuse (see the module docstring).

  Returns True when every setting was accepted; False off glibc, or when glibc refused
  one of them (the others stay applied: each changes only how memory is recycled,
  never what is computed).
  """
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all([mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.values()])


def apply_xla_flag() -> str:
  """Appends jnorm's CPU flag to `os.environ['XLA_FLAGS']`; returns the flags."""
  try:
    from jaxlib import version  # pylint: disable=import-outside-toplevel
    jaxlib_version = version.__version__
  except ImportError:
    jaxlib_version = ""
  flags = cpu_flags(os.environ.get("XLA_FLAGS", ""), jaxlib_version=jaxlib_version)
  if flags:
    os.environ["XLA_FLAGS"] = flags
  return flags
