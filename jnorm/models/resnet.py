"""ResNet backbones (He et al., 2016) that return pooled features, no classifier.

The reference trains torchvision-style ResNet-18/50 with zero-init residuals and,
on CIFAR, a 3x3 stride-1 stem without max-pool (docs/paper.md §4.2); the torch
baseline of benchmarks/train_step.py is the same network. Layout is NHWC. Convolutions
and BatchNorm are `jnorm.models.layers`' (stock `nn.Conv` and `nn.BatchNorm` unless
`jnorm.cpu.enable()` replaced them). Convolutions are initialised Kaiming-normal with
fan_out as torch's `kaiming_normal_(mode='fan_out')`. BatchNorm follows torch's
defaults (momentum 0.1 -> Flax momentum 0.9, eps 1e-5) and always runs in float32.

Presets by `functools.partial`: ResNet18, ResNet34, ResNet50, SmallResNet.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnorm.models import layers

# torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu'): untruncated
# normal, std = sqrt(2 / (Cout * kh * kw)).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

STEMS = ("cifar", "imagenet")


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34). x: [B, H, W, C] -> [B, H/s, W/s, filters]."""
  filters: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = self.strides != 1 or x.shape[-1] != self.filters
    residual = x
    # Explicit (1, 1) padding as torch's padding=1; 'SAME' would pad (0, 1) at stride 2.
    y = self.conv(self.filters, (3, 3), self.strides, padding=((1, 1), (1, 1)),
                  name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), 1, padding=((1, 1), (1, 1)),
                  name="conv2")(y)
    last_scale = nn.initializers.zeros_init() if self.zero_init_residual else nn.initializers.ones_init()
    y = self.norm(scale_init=last_scale, name="bn2")(y)
    if shortcut:
      residual = self.conv(self.filters, (1, 1), self.strides, padding="VALID",
                           name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_bn")(residual)
    return nn.relu(y + residual.astype(y.dtype))


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 x4 (ResNet-50)."""
  filters: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool = True
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = self.strides != 1 or x.shape[-1] != self.filters * self.expansion
    residual = x
    y = self.conv(self.filters, (1, 1), 1, padding="VALID", name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), self.strides, padding=((1, 1), (1, 1)),
                  name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.filters * self.expansion, (1, 1), 1, padding="VALID",
                  name="conv3")(y)
    last_scale = nn.initializers.zeros_init() if self.zero_init_residual else nn.initializers.ones_init()
    y = self.norm(scale_init=last_scale, name="bn3")(y)
    if shortcut:
      residual = self.conv(self.filters * self.expansion, (1, 1), self.strides,
                           padding="VALID", name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_bn")(residual)
    return nn.relu(y + residual.astype(y.dtype))


class ResNet(nn.Module):
  """ResNet backbone: stem, stages of residual blocks, global average pool.

  Stage i has `num_filters * 2**i` filters (x4 at the output of a bottleneck
  block) and stride 1 for i = 0, else 2.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block_cls: BasicBlock or BottleneckBlock.
    num_filters: filters of the stem and of the first stage.
    stem: 'cifar' (3x3 stride-1 conv, no max-pool) or 'imagenet' (7x7 stride-2
      conv + 3x3 stride-2 max-pool).
    zero_init_residual: the last BN scale of every block starts at 0, so each
      block starts as relu(shortcut(x)).
    bn_axis_name: named mesh axis over which BatchNorm statistics are averaged
      (inside `jax.shard_map`); None keeps per-device statistics.
    bn_momentum: running-average decay (torch momentum 0.1 == 0.9 here).
    dtype: compute dtype of the convolutions (BatchNorm and the output stay float32).
  """
  stage_sizes: Sequence[int]
  block_cls: Any
  num_filters: int = 64
  stem: str = "cifar"
  zero_init_residual: bool = True
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """x: [B, H, W, C] images -> [B, F] features (F = 8*num_filters*expansion/... )."""
    if self.stem not in STEMS:
      raise ValueError(f"stem={self.stem!r}; use one of {STEMS}")
    conv = functools.partial(layers.conv(), use_bias=False, dtype=self.dtype,
                             kernel_init=kaiming_fan_out)
    norm = functools.partial(layers.batch_norm(), use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=jnp.float32, param_dtype=jnp.float32,
                             axis_name=self.bn_axis_name)
    if self.stem == "cifar":
      x = conv(self.num_filters, (3, 3), 1, padding=((1, 1), (1, 1)),
               name="stem_conv")(x)
    else:
      x = conv(self.num_filters, (7, 7), 2, padding=((3, 3), (3, 3)),
               name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(filters=self.num_filters * 2**i, strides=strides,
                           conv=conv, norm=norm,
                           zero_init_residual=self.zero_init_residual,
                           name=f"stage{i + 1}_block{j + 1}")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock)
# The embedded default (digits, 16x16x1): widths 32/64/128, strides 1/2/2, 128 features.
SmallResNet = functools.partial(ResNet, stage_sizes=(1, 1, 1), block_cls=BasicBlock,
                                num_filters=32)
