"""A comparison of two arms of the tiny run, for the preemption tests (seconds).

Both arms ('a', 'b') are tests/reliability/tiny_config.py unchanged, with seed 0, and
the driver keeps stock XLA and Flax (`cpu_tuning='off'`, as tiny_config): each sub-run
ends bit-identical to the tiny reference run.
"""

import tiny_config
from jnorm.jobs import compare


def get_config(arg=None):
  if arg:
    raise ValueError(f"tiny_compare_config: unknown argument {arg!r}; use none")
  config = compare.comparison_config(
      base=tiny_config.get_config(), variants={"a": {}, "b": {}}, run_variants="a,b",
      seeds=[0], report_epochs=[1, 2], title="tiny")
  config.cpu_tuning = "off"  # as the base: the driver reads the top-level field
  return config
