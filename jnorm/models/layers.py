"""The convolution and BatchNorm layers the models are built from.

Stock Flax by default (`nn.Conv`, `nn.BatchNorm`), on every backend. A backend package
may put drop-in replacements in their place, with the same constructor arguments and
the same variables, so parameters and checkpoints move freely between the two: that is
how `jnorm.cpu.enable()` installs its CPU kernels and BatchNorm gradient. The models
look the layers up when they are traced, so a swap holds for every network traced
after it.

  conv = layers.conv()             # nn.Conv unless replaced
  with layers.using(conv=MyConv):  # a temporary swap (tests, benchmarks)
    ...
"""

import contextlib
from collections.abc import Iterator

import flax.linen as nn

_STOCK = {"conv": nn.Conv, "batch_norm": nn.BatchNorm}
_current = dict(_STOCK)


def conv() -> type[nn.Module]:
  """The convolution class: `nn.Conv`, or its replacement."""
  return _current["conv"]


def batch_norm() -> type[nn.Module]:
  """The BatchNorm class: `nn.BatchNorm`, or its replacement."""
  return _current["batch_norm"]


def is_stock() -> bool:
  """True when the models build from stock Flax layers."""
  return _current == _STOCK


def replace(*, conv: type[nn.Module] | None = None,  # pylint: disable=redefined-outer-name
            batch_norm: type[nn.Module] | None = None) -> dict:  # pylint: disable=redefined-outer-name
  """Installs replacements (None keeps a layer as it is); returns the previous layers."""
  previous = dict(_current)
  for name, layer in (("conv", conv), ("batch_norm", batch_norm)):
    if layer is not None:
      _current[name] = layer
  return previous


def restore(previous: dict | None = None) -> None:
  """Puts back `previous` (a `replace` result), or the stock layers."""
  _current.clear()
  _current.update(_STOCK if previous is None else previous)


@contextlib.contextmanager
def using(**replacements) -> Iterator[None]:
  """`replace(**replacements)` for the duration of a `with` block."""
  previous = replace(**replacements)
  try:
    yield
  finally:
    restore(previous)
