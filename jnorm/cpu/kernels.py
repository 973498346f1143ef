"""jnorm's compiled CPU kernels for the ResNets' convolutions (XLA FFI).

XLA:CPU computes a convolution's kernel gradient with Eigen, which splits the work
between threads along the output; for the ResNets' layers that output (kh*kw*Cin x
Cout) is tiny against the contraction (B*Ho*Wo), so the op runs on about one core
(benchmarks/README.md: 8.15 ms on 2 cores, 9.27 ms on one, for the 16 px 32 -> 32 layer
at batch 128). `kernels.cc`, next to this file, has two kernels: `kernel_grad`,
which splits the contraction between threads instead, and `conv`, a direct
convolution (used for the forward pass and, through `input_grad`, the input gradient).
Both keep tiles of the output in vector registers, at the machine's own vector width
(`vector_lanes()`: 16 floats with AVX-512, 8 with AVX2), and share work with XLA's
thread pool; both give the same bits whatever the number of threads.

The kernels are compiled on first use with the machine's C++ compiler (`$CXX`, else
`c++` / `g++`) for the machine's own instruction set (`-march=native`, about 5 s) and
cached in `$JNORM_CACHE_DIR/kernels` (default `~/.cache/jnorm/kernels`) under a hash of
the source, the compiler command, jaxlib's version and the CPU, so a changed source or
a different machine gets its own build. The build writes a temporary file and renames
it, so an interrupted build leaves nothing half-written. Where they cannot be built (no
compiler), `status()` says why and `jnorm.cpu.conv` keeps XLA's convolutions. Nothing
is built until `jnorm.cpu.enable()` (or a call here) asks for the kernels.
"""

import ctypes
import functools
import hashlib
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jnorm import caches
from jnorm.errors import ConfigError

SOURCE = pathlib.Path(__file__).with_name("kernels.cc")
# XLA FFI target name -> the handler's symbol in the built library.
TARGETS = {"jnorm_conv_kernel_grad": "JnormConvKernelGrad",
           "jnorm_conv_forward": "JnormConvForward"}
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")


def cache_dir() -> pathlib.Path:
  """Where built kernels are kept: `$JNORM_CACHE_DIR/kernels` or ~/.cache/jnorm/kernels."""
  return caches.cache_root() / "kernels"


def _compiler() -> str | None:
  return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _cpu_identity() -> str:
  """The CPU model and instruction-set flags (a -march=native build is specific to them)."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return platform.machine() + platform.processor()
  keys = ("model name", "flags", "Features")
  return "\n".join(sorted({l for l in lines if l.split(":")[0].strip() in keys}))


def build(compiler: str, out_dir: pathlib.Path) -> pathlib.Path:
  """Compiles `kernels.cc` into `out_dir` (once per source, compiler, jaxlib, CPU).

  Raises:
    RuntimeError: the compiler failed (its last line in the message).
  """
  command = [compiler, *FLAGS, "-isystem", jax.ffi.include_dir()]
  key = hashlib.sha256("\0".join(
      [SOURCE.read_text(), " ".join(command), jax.lib.__version__,
       _cpu_identity()]).encode()).hexdigest()[:20]
  path = out_dir / f"cpu_kernels-{key}.so"
  if path.exists():
    return path
  out_dir.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  try:
    done = subprocess.run([*command, str(SOURCE), "-o", tmp], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
      last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise RuntimeError(f"{compiler} failed on {SOURCE.name}: {last}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return path


def _library() -> ctypes.CDLL:
  """The built kernels, loaded (built first where this source, compiler and CPU have no
  build yet)."""
  compiler = _compiler()
  if compiler is None:
    raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
  return ctypes.CDLL(str(build(compiler, cache_dir())))


@functools.cache
def status() -> str | None:
  """None when the kernels are built and registered with XLA, else why they are not.

  When they cannot be built (no compiler, a failed build), says so once on stderr:
  'auto' then runs XLA's slower convolutions.
  """
  if platform.system() != "Linux":
    return "built on Linux only"
  try:
    library = _library()
  except (OSError, RuntimeError) as error:
    reason = str(error).splitlines()[0]
    print(f"jnorm: CPU kernels not available ({reason}); using XLA's convolutions "
          "(slower; jnorm.cpu.enable(conv='xla') silences this)", file=sys.stderr)
    return reason
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")
  return None


def available() -> bool:
  """True when the kernels can run (built and registered with XLA)."""
  return status() is None


def vector_lanes() -> int | None:
  """Floats per vector register in the build (16 with AVX-512, 8 with AVX2, else 4),
  or None where the kernels are not available."""
  return _library().JnormVectorLanes() if available() else None


# The largest kernel (kh*kw*Cin*Cout elements) the kernels are used for. Measured per
# layer (benchmarks/README.md): faster than XLA's up to ResNet-18's 16x16x128 layers
# (3*3*128*128 = 147,456), slower at 256 -> 512 and 512 -> 512 channels, where their
# kernel gradient's output no longer fits in cache and Eigen's splits well anyway.
MAX_KERNEL_SIZE = 2**18


def supports_kernel(kernel_shape: Sequence[int], dtype) -> bool:
  """True for the kernels the CPU kernels are used for: float32 [kh, kw, Cin, Cout], Cout
  a multiple of 16, at most `MAX_KERNEL_SIZE` elements."""
  return (dtype == jnp.float32 and kernel_shape[-1] % 16 == 0
          and math.prod(kernel_shape) <= MAX_KERNEL_SIZE)


def supports(x: jax.Array, kernel: jax.Array) -> bool:
  """True for the convolutions the kernels are used for: float32 NHWC input, and a
  kernel `supports_kernel` accepts."""
  return (x.ndim == 4 and x.dtype == kernel.dtype
          and supports_kernel(kernel.shape, kernel.dtype))


def unavailable(reason: str) -> ConfigError:
  """The one-line error for the kernels asked for where they cannot run."""
  return ConfigError(f"jnorm's CPU kernels cannot run here ({reason}); use "
                     "jnorm.cpu.enable(conv='auto') or conv='xla'")


def _call(target: str, a: jax.Array, b: jax.Array, out_shape: tuple[int, ...], *,
          strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  if (reason := status()) is not None:
    raise unavailable(reason)
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")
  return call(a, b, sh=int(strides[0]), sw=int(strides[1]), pt=int(padding[0][0]),
              pl=int(padding[1][0]))


def conv(x: jax.Array, kernel: jax.Array, out_hw: tuple[int, int], *,
         strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """The convolution `conv_xla(x, kernel)` (cross-correlation), as jnorm's CPU kernel.

  Args:
    x: [B, H, W, Cin] float32.
    kernel: [kh, kw, Cin, Cout] float32, Cout a multiple of 16.
    out_hw: (Ho, Wo), the output's spatial size (it fixes the high paddings).
    strides: (sh, sw).
    padding: ((pt, pb), (pl, pr)); only the low sides are read.

  Returns:
    [B, Ho, Wo, Cout] float32; each output element is summed in one fixed order, so the
    result does not depend on the number of threads (it differs from XLA's convolution
    in float32 rounding).

  Raises:
    ConfigError: the kernel cannot run here (`status()` says why).
  """
  out_shape = (x.shape[0], *out_hw, kernel.shape[-1])
  return _call("jnorm_conv_forward", x, kernel, out_shape, strides=strides,
               padding=padding)


def kernel_grad(x: jax.Array, dy: jax.Array, kernel_shape: tuple[int, ...], *,
                strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
                ) -> jax.Array:
  """d(loss)/d(kernel) of `conv_xla(x, kernel)` given dy = d(loss)/d(output).

  Args:
    x: [B, H, W, Cin] float32, the convolution's input.
    dy: [B, Ho, Wo, Cout] float32, the gradient at its output.
    kernel_shape: (kh, kw, Cin, Cout).
    strides: (sh, sw).
    padding: ((pt, pb), (pl, pr)); the high sides follow from the shapes.

  Returns:
    [kh, kw, Cin, Cout] float32. The sum runs over four fixed chunks of the batch, so
    the result does not depend on the number of threads (it differs from XLA's own
    kernel gradient in float32 rounding).

  Raises:
    ConfigError: the kernel cannot run here (`status()` says why).
  """
  return _call("jnorm_conv_kernel_grad", x, dy, tuple(kernel_shape), strides=strides,
               padding=padding)


def _phase_taps(k: int, stride: int, phase: int, pad: int) -> tuple[int, int]:
  """For one spatial axis: the largest tap t < k that reaches input positions congruent
  to `phase` (mod `stride`) (taps t, t - stride, ... all do), or -1 when none does; and
  the low padding of that phase's correlation."""
  taps = [t for t in range(k) if (t - phase - pad) % stride == 0]
  return (taps[-1], (taps[-1] - phase - pad) // stride) if taps else (-1, 0)


def input_grad(dy: jax.Array, kernel: jax.Array, x_shape: Sequence[int], *,
               strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """d(loss)/dx of `conv_xla(x, kernel)` given dy, on the `conv` kernel.

  Input row i = s * m + r (s the stride, r its phase) receives dy[o] * w[t] from the taps
  t = i + p - s * o (p the low padding), so t = r + p (mod s): each phase is a stride-1
  correlation of dy with those taps, flipped in space and transposed (Cout <-> Cin).
  At stride 1 that is the one correlation with the whole flipped kernel; at stride 2 a
  3x3 kernel splits into 2x2, 2x1, 1x2 and 1x1 taps, and the phases are interleaved
  (XLA computes it as a convolution of dy dilated with zeros: 1.4-1.8x slower for the
  SmallResNet's 32 -> 64 stride-2 layer, 1.0-1.3x for its 64 -> 128 one; 2% of the
  whole step at 16 px, benchmarks/README.md).

  Args:
    dy: [B, Ho, Wo, Cout] float32, the gradient at the convolution's output.
    kernel: [kh, kw, Cin, Cout] float32, Cin a multiple of 16 (the correlation's Cout).
    x_shape: (B, H, W, Cin), the convolution's input shape.
    strides: (sh, sw).
    padding: ((pt, pb), (pl, pr)); the high sides follow from the shapes.

  Returns:
    [B, H, W, Cin] float32, equal to XLA's input gradient to float32 rounding.
  """
  batch, h, w, cin = x_shape
  (kh, kw), (sh, sw) = kernel.shape[:2], strides
  mh, mw = -(-h // sh), -(-w // sw)  # rows and columns per phase (the last may overhang)
  phases = []
  for ry in range(sh):
    row = []
    for rx in range(sw):
      (ty, pt), (tx, pl) = (_phase_taps(kh, sh, ry, padding[0][0]),
                            _phase_taps(kw, sw, rx, padding[1][0]))
      if ty < 0 or tx < 0:  # no tap reaches this phase (a 1x1 kernel at stride 2)
        row.append(jnp.zeros((batch, mh, mw, cin), dy.dtype))
        continue
      taps = kernel[ty::-sh, tx::-sw].transpose(0, 1, 3, 2)
      row.append(conv(dy, taps, (mh, mw), strides=(1, 1), padding=((pt, 0), (pl, 0))))
    phases.append(row)
  if sh == sw == 1:
    return phases[0][0]
  # [B, mh, sh, mw, sw, Cin]: row m of phase r is input row sh * m + r.
  dx = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)
  return dx.reshape(batch, mh * sh, mw * sw, cin)[:, :h, :w]
