"""Convolutions for the ResNets: a drop-in `nn.Conv` with a GEMM form and a form on
jnorm's CPU kernels, and a CPU fusion barrier.

Under XLA:CPU's default kernels (jaxlib 0.10: YNNPACK convolutions) the native
convolution's gradients are slow (benchmarks/README.md: a Flax ResNet-18 SimCLR step at
0.43x torch). A KxK convolution is the same function as

  patches = concat_{i<kh, j<kw} x_pad[:, i::sh, j::sw, :]     # [B, Ho, Wo, kh*kw*Cin]
  y       = patches @ kernel.reshape(kh*kw*Cin, Cout)          # [B, Ho, Wo, Cout]

("im2col" written as strided slices), so the forward pass and both gradients become
matrix products plus copies, which XLA:CPU runs at GEMM speed. The summation order
differs from the native convolution, so results agree to float32 rounding, not
bit for bit (tested in tests/models/test_models.py).

`Conv(implementation='ffi')` runs the convolution, its kernel gradient and (when Cin is
a multiple of 16) its input gradient on jnorm's compiled CPU kernels
(`jnorm.models.cpu_kernels`): XLA:CPU's own kernel gradient runs on about one core for
the ResNets' small layers, and the kernels took the SmallResNet step from 1.04x to 1.29x
torch (benchmarks/README.md). Layers they do not handle (not float32, Cout not a
multiple of 16, or kernels of more than 2^18 elements, where XLA's are as fast) keep
XLA's convolution. Being a `jax.custom_vjp`, it supports reverse-mode differentiation
only (no `jax.jvp`).

`Conv(implementation='auto')` (`resolve`) keeps the native convolution on GPU/TPU,
where it is fast; on CPU it uses 'ffi' when the kernels could be built, else the native
convolution when XLA runs it with Eigen's kernels (jnorm's default XLA:CPU flag,
`jnorm.xla_cpu`: 0.88x torch against the GEMM's 0.53x on a ResNet-18 step) and the GEMM
when the convolutions go to YNNPACK (XLA's default without that flag). Decided from
`jax.default_backend()`, `XLA_FLAGS` and the kernels' build when the function is traced.
"""

import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jnorm import xla_cpu
from jnorm.errors import check_choice
from jnorm.models import cpu_kernels

IMPLEMENTATIONS = ("auto", "xla", "gemm", "ffi")

Padding = str | int | Sequence[int | tuple[int, int]]


def _pair(value: int | Sequence[int], n: int = 2) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * n
  return tuple(int(v) for v in value)


def resolve_padding(padding: Padding, *, in_spatial: Sequence[int],
                    kernel_size: Sequence[int],
                    strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit (low, high) paddings per spatial dim, with `nn.Conv`'s semantics.

  Args:
    padding: 'SAME', 'VALID', an int (same on both sides of every dim) or a
      sequence of ints / (low, high) pairs, one per spatial dim.
    in_spatial: the input's spatial sizes, e.g. (H, W).
    kernel_size: (kh, kw).
    strides: (sh, sw).
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding={padding!r}: the gemm conv supports 'SAME', "
                       "'VALID' or explicit ints/pairs; use implementation='xla'")
    return tuple(lax.padtype_to_pads(in_spatial, kernel_size, strides,
                                     padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * len(in_spatial)
  return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))
               for p in padding)


def im2col(x: jax.Array, *, kernel_size: Sequence[int], strides: Sequence[int],
           padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Patches of `x` as strided slices, concatenated on the channel axis.

  Args:
    x: [B, H, W, C] (NHWC).
    kernel_size, strides: (kh, kw), (sh, sw).
    padding: ((pt, pb), (pl, pr)) explicit zero padding.

  Returns:
    [B, Ho, Wo, kh*kw*C], ordered (i, j, c) with c fastest, i.e. matching
    `kernel.reshape(kh*kw*C, Cout)` for a kernel [kh, kw, C, Cout].
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_gemm(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
              padding: Sequence[tuple[int, int]],
              save_patches: bool = False) -> jax.Array:
  """2-D convolution (cross-correlation, as `lax.conv`) as im2col + one matmul.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).
    padding: ((pt, pb), (pl, pr)).
    save_patches: keep the [B, Ho, Wo, kh*kw*Cin] patches for the backward pass
      (plain autodiff) instead of rebuilding them from x there. False measured
      5-8% faster per ResNet-18 step on this 2-core CPU (benchmarks/README.md).

  Returns:
    [B, Ho, Wo, Cout], the same function as `lax.conv_general_dilated` with
    NHWC/HWIO dimension numbers.
  """
  if not save_patches:
    # Rematerialise: the backward pass keeps only x and rebuilds the patches for the
    # kernel-gradient GEMM, so a ResNet step holds kh*kw times less activation memory.
    return jax.checkpoint(
        functools.partial(conv_gemm, strides=strides, padding=padding,
                          save_patches=True),
        policy=jax.checkpoint_policies.nothing_saveable)(x, kernel)
  kh, kw, cin, cout = kernel.shape
  patches = im2col(x, kernel_size=(kh, kw), strides=strides, padding=padding)
  return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout),
                 preferred_element_type=x.dtype)


def conv_xla(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The native convolution, NHWC input and HWIO kernel (as `nn.Conv`)."""
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=tuple(padding),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fusion_barrier(y: jax.Array) -> jax.Array:
  """`y` unchanged; on XLA:CPU, materialised where XLA would recompute it.

  For each kernel gradient XLA:CPU copies the layer's input into a batch-minor layout.
  When that input is a ReLU(BatchNorm(.)) output, XLA fuses the BatchNorm and ReLU into
  the transposing copy and recomputes them there, in an order that reads memory at a
  stride of the whole feature map: 4.4 ms for [128, 16, 16, 32] against 0.8 ms for the
  transpose of the stored values (benchmarks/README.md). Passing `y` through a
  conditional whose predicate is always true (it tests a value for being NaN or not)
  stops that fusion: XLA cannot look inside the conditional, so the copy reads the
  stored `y`. The result and its gradient are `y`'s, bit for bit; the branch that adds
  1 never runs. A no-op off CPU, where the convolutions need no such copies.
  """
  if jax.default_backend() != "cpu":
    return y
  first = y.reshape(-1)[0]
  always = jnp.isnan(first) | ~jnp.isnan(first)
  return lax.cond(always, lambda a: a, lambda a: a + 1, y)


def barrier_for(x: jax.Array, *kernel_shapes: Sequence[int], implementation: str = "auto",
                dtype: Any = None) -> jax.Array:
  """`fusion_barrier(x)` where it pays, else `x`: before convolutions that read `x`.

  The barrier saves the transposing copies of XLA's kernel gradient; jnorm's CPU kernels
  read their input as stored, so before convolutions that all run on them it would only
  add a copy of `x` (3.4% of the SmallResNet step, benchmarks/README.md).

  Args:
    x: the activation the convolutions read.
    *kernel_shapes: each reading convolution's kernel shape [kh, kw, Cin, Cout].
    implementation: their `Conv.implementation`.
    dtype: their computation dtype (None: x's).
  """
  dtype = x.dtype if dtype is None else dtype
  on_kernels = resolve(implementation) == "ffi" and all(
      cpu_kernels.supports_kernel(shape, dtype) for shape in kernel_shapes)
  return x if on_kernels else fusion_barrier(x)


def _xla_or_gemm() -> str:
  """XLA's own convolutions on CPU: 'xla' on Eigen, 'gemm' when they go to YNNPACK."""
  return ("xla" if xla_cpu.eigen_convolutions(os.environ.get("XLA_FLAGS", ""))
          else "gemm")


def resolve(implementation: str) -> str:
  """The convolution `implementation` runs on the current backend: 'xla', 'gemm' or 'ffi'.

  'auto': on GPU/TPU 'xla' (cuDNN / the MXU convolution); on CPU 'ffi' when jnorm's CPU
  kernels could be built (`cpu_kernels.status()`), else 'gemm' when XLA sends
  convolutions to YNNPACK (slow there) and 'xla' on Eigen.

  Raises:
    ConfigError: an unknown name, or 'ffi' where the CPU kernels cannot run.
  """
  check_choice("conv_impl", implementation, IMPLEMENTATIONS)
  on_cpu = jax.default_backend() == "cpu"
  if implementation == "ffi" and not (on_cpu and cpu_kernels.available()):
    reason = cpu_kernels.status() if on_cpu else f"backend is {jax.default_backend()}"
    raise cpu_kernels.unavailable(reason)
  if implementation != "auto":
    return implementation
  if not on_cpu:
    return "xla"
  return "ffi" if cpu_kernels.available() else _xla_or_gemm()


def use_gemm(implementation: str) -> bool:
  """True when `implementation` selects the GEMM path on the current backend."""
  return resolve(implementation) == "gemm"


def _forward(x, kernel, strides, padding):
  out = lax.conv_general_shape_tuple(x.shape, kernel.shape, strides, padding,
                                     ("NHWC", "HWIO", "NHWC"))
  return cpu_kernels.conv(x, kernel, out[1:3], strides=strides, padding=padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_ffi(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
              padding: tuple[tuple[int, int], ...]) -> jax.Array:
  return _forward(x, kernel, strides, padding)


def _conv_ffi_fwd(x, kernel, strides, padding):
  return _forward(x, kernel, strides, padding), (x, kernel)


def _conv_ffi_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  dw = cpu_kernels.kernel_grad(x, dy, kernel.shape, strides=strides, padding=padding)
  if x.shape[-1] % 16 == 0:  # the correlation's Cout is Cin
    dx = cpu_kernels.input_grad(dy, kernel, x.shape, strides=strides, padding=padding)
  else:
    _, x_vjp = jax.vjp(
        lambda x: conv_xla(x, kernel, strides=strides, padding=padding), x)
    (dx,) = x_vjp(dy)
  return dx, dw


_conv_ffi.defvjp(_conv_ffi_fwd, _conv_ffi_bwd)


def conv_ffi(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`conv_xla` on jnorm's CPU kernels (`cpu_kernels.conv`, `cpu_kernels.kernel_grad`).

  The forward pass, the kernel gradient and, when Cin is a multiple of 16, the input
  gradient (`cpu_kernels.input_grad`) run on the compiled kernels (else the input
  gradient is XLA's); all agree with `conv_xla` to float32 rounding. Layers the kernels
  do not handle (`cpu_kernels.supports`: not float32, Cout not a multiple of 16, or a
  kernel of more than `cpu_kernels.MAX_KERNEL_SIZE` elements) get XLA's convolution
  (`conv_xla`, or `conv_gemm` when XLA sends convolutions to YNNPACK).
  Reverse-mode differentiation only (a `jax.custom_vjp`).
  """
  if not cpu_kernels.supports(x, kernel):
    fallback = conv_gemm if _xla_or_gemm() == "gemm" else conv_xla
    return fallback(x, kernel, strides=strides, padding=padding)
  return _conv_ffi(x, kernel, tuple(strides), tuple(map(tuple, padding)))


_CONVOLUTIONS = {"xla": conv_xla, "gemm": conv_gemm, "ffi": conv_ffi}


class Conv(nn.Module):
  """2-D convolution, a drop-in for `flax.linen.Conv` (NHWC, kernel [kh, kw, Cin, Cout]).

  Same parameter names, shapes and initialisers as `nn.Conv`, so a parameter
  tree trained with one implementation loads into the other. Supports what the
  ResNets need: no dilation, no feature groups.

  Attributes:
    features: Cout.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: 'SAME', 'VALID', int, or per-dim ints / (low, high) pairs.
    use_bias: add a bias [Cout] (the ResNets use False).
    dtype: computation dtype (inputs and kernel are promoted to it).
    param_dtype: parameter dtype.
    kernel_init, bias_init: as `nn.Conv`.
    implementation: 'xla' (lax.conv), 'gemm' (im2col + matmul), 'ffi' (jnorm's CPU
      kernels, `conv_ffi`) or 'auto' (`resolve`: xla on GPU/TPU; on CPU ffi
      where the kernels build, else xla, or gemm when XLA sends convolutions to
      YNNPACK).
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, Cin] -> [B, Ho, Wo, Cout]."""
    kernel_size = _pair(self.kernel_size)
    strides = _pair(self.strides)
    kernel = self.param("kernel", self.kernel_init,
                        (*kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    padding = resolve_padding(self.padding, in_spatial=x.shape[1:3],
                              kernel_size=kernel_size, strides=strides)
    conv = _CONVOLUTIONS[resolve(self.implementation)]
    y = conv(x, kernel, strides=strides, padding=padding)
    if bias is not None:
      y = y + bias
    return y
