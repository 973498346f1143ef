"""The CPU convolution layer `jnorm.cpu.enable()` puts in place of `nn.Conv`.

`Conv` is a drop-in for `flax.linen.Conv` (the same parameter names, shapes and
initialisers, so a parameter tree moves between the two) with three implementations:

- 'kernels': the forward pass, the kernel gradient and (when Cin is a multiple of 16)
  the input gradient on jnorm's compiled CPU kernels (`jnorm.cpu.kernels`). XLA:CPU's
  own kernel gradient runs on about one core for the ResNets' small layers. Layers the
  kernels do not handle (not float32, Cout not a multiple of 16, or kernels of more
  than 2^18 elements, where XLA's are as fast) keep XLA's convolution. A
  `jax.custom_vjp`: reverse-mode differentiation only (no `jax.jvp`).
- 'xla': the native convolution, when XLA:CPU runs it with Eigen's kernels (the flag
  `jnorm.cpu.enable()` sets, `jnorm.cpu.flags`).
- 'gemm': the same function as im2col (strided slices) plus one matmul per pass, which
  XLA:CPU runs at GEMM speed; the fast form when XLA sends convolutions to YNNPACK (its
  default without that flag).

'auto' (`resolve`) is 'kernels' where they could be built, else 'xla' or 'gemm' by the
XLA flags. The implementations agree to float32 rounding, not bit for bit (tested).

Where a layer runs on XLA's kernel gradient, its input passes through `fusion_barrier`
first (see there). benchmarks/README.md has the measurements behind each choice.
"""

import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jnorm.cpu import flags
from jnorm.cpu import kernels
from jnorm.errors import check_choice

IMPLEMENTATIONS = ("auto", "kernels", "xla", "gemm")

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
  transpose of the stored values. Passing `y` through a conditional whose predicate is
  always true (it tests a value for being NaN or not) stops that fusion: XLA cannot look
  inside the conditional, so the copy reads the stored `y`. The result and its gradient
  are `y`'s, bit for bit; the branch that adds 1 never runs. jnorm's kernels read their
  input as stored, so layers on them need no barrier.
  """
  first = y.reshape(-1)[0]
  always = jnp.isnan(first) | ~jnp.isnan(first)
  return lax.cond(always, lambda a: a, lambda a: a + 1, y)


def _xla_or_gemm() -> str:
  """XLA's own convolutions on CPU: 'xla' on Eigen, 'gemm' when they go to YNNPACK."""
  return ("xla" if flags.eigen_convolutions(os.environ.get("XLA_FLAGS", ""))
          else "gemm")


def resolve(implementation: str) -> str:
  """The convolution `implementation` runs: 'kernels', 'xla' or 'gemm'.

  'auto': 'kernels' when jnorm's CPU kernels could be built (`kernels.status()`), else
  'gemm' when XLA sends convolutions to YNNPACK (slow there) and 'xla' on Eigen.

  Raises:
    ConfigError: an unknown name, or 'kernels' where they cannot run.
  """
  check_choice("conv", implementation, IMPLEMENTATIONS)
  if implementation == "kernels" and not kernels.available():
    raise kernels.unavailable(kernels.status())
  if implementation != "auto":
    return implementation
  return "kernels" if kernels.available() else _xla_or_gemm()


def _forward(x, kernel, strides, padding):
  out = lax.conv_general_shape_tuple(x.shape, kernel.shape, strides, padding,
                                     ("NHWC", "HWIO", "NHWC"))
  return kernels.conv(x, kernel, out[1:3], strides=strides, padding=padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_kernels(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
              padding: tuple[tuple[int, int], ...]) -> jax.Array:
  return _forward(x, kernel, strides, padding)


def _conv_kernels_fwd(x, kernel, strides, padding):
  return _forward(x, kernel, strides, padding), (x, kernel)


def _conv_kernels_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  dw = kernels.kernel_grad(x, dy, kernel.shape, strides=strides, padding=padding)
  if x.shape[-1] % 16 == 0:  # the correlation's Cout is Cin
    dx = kernels.input_grad(dy, kernel, x.shape, strides=strides, padding=padding)
  else:
    _, x_vjp = jax.vjp(
        lambda x: conv_xla(x, kernel, strides=strides, padding=padding), x)
    (dx,) = x_vjp(dy)
  return dx, dw


_conv_kernels.defvjp(_conv_kernels_fwd, _conv_kernels_bwd)


def conv_kernels(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
                 padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`conv_xla` on jnorm's CPU kernels (`kernels.conv`, `kernels.kernel_grad`).

  The forward pass, the kernel gradient and, when Cin is a multiple of 16, the input
  gradient (`kernels.input_grad`) run on the compiled kernels (else the input gradient
  is XLA's); all agree with `conv_xla` to float32 rounding. Only for layers that
  `kernels.supports`; reverse-mode differentiation only (a `jax.custom_vjp`).
  """
  return _conv_kernels(x, kernel, tuple(strides), tuple(map(tuple, padding)))


_CONVOLUTIONS = {"xla": conv_xla, "gemm": conv_gemm, "kernels": conv_kernels}


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
    implementation: 'kernels' (jnorm's CPU kernels, `conv_kernels`), 'xla'
      (lax.conv), 'gemm' (im2col + matmul) or 'auto' (`resolve`).
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
    implementation = resolve(self.implementation)
    if implementation == "kernels" and not kernels.supports(x, kernel):
      implementation = _xla_or_gemm()
    if implementation != "kernels":
      x = fusion_barrier(x)
    y = _CONVOLUTIONS[implementation](x, kernel, strides=strides, padding=padding)
    if bias is not None:
      y = y + bias
    return y
