"""A comparison's sub-runs: its variants' training configs, seed by seed, and each
host's share (`jnorm.jobs.compare` runs them)."""

import copy
from collections.abc import Sequence

import ml_collections

from jnorm import errors


def parse_list(text, cast=str) -> list:
  """'a, b,c' -> ['a', 'b', 'c'] (also accepts a list/tuple); empty items dropped."""
  if isinstance(text, (list, tuple)):
    return [cast(t) for t in text]
  return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def apply_overrides(base: ml_collections.ConfigDict, overrides, *, where: str
                    ) -> ml_collections.ConfigDict:
  """Returns a copy of `base` with the nested `overrides` set; unknown fields raise.

  Args:
    base: the training config.
    overrides: nested ConfigDict / dict; a dict value recurses into a ConfigDict field,
      any other value replaces the field.
    where: a name for error messages (e.g. 'variants.cut3').
  """
  config = copy.deepcopy(base)
  with config.unlocked():
    _merge(config, overrides, where)
  return config


def _merge(target: ml_collections.ConfigDict, overrides, where: str) -> None:
  items = overrides.items() if overrides is not None else ()
  for key, value in items:
    if key not in target:
      raise errors.ConfigError(
          f"config.{where}.{key}: the base training config has no field {key!r}; "
          f"fix the variant's overrides (fields here: {', '.join(sorted(target.keys()))})")
    if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(
        target[key], ml_collections.ConfigDict):
      _merge(target[key], value, f"{where}.{key}")
      continue
    try:
      target[key] = value
    except TypeError as exc:
      raise errors.ConfigError(
          f"config.{where}.{key}={value!r} has the wrong type for the training config "
          f"({' '.join(str(exc).split())}); write it with the field's type") from exc


def variant_configs(config: ml_collections.ConfigDict) -> list:
  """[(variant, seed, train_config)], seed by seed, arms in table order within a seed."""
  names = parse_list(config.run_variants) or list(config.variants.keys())
  for name in names:
    errors.check_choice("run_variants", name, list(config.variants.keys()))
  seeds = parse_list(config.seeds, int)
  if not seeds:
    raise errors.ConfigError("config.seeds is empty; give at least one seed, e.g. '0,1,2'")
  variants = {name: apply_overrides(config.base, config.variants[name],
                                    where=f"variants.{name}") for name in names}
  runs = []
  for seed in seeds:  # seed-major: a partial grid already holds complete paired sets
    for name in names:
      run = copy.deepcopy(variants[name])
      with run.unlocked():
        nested = seed  # 'train.seed' -> {'train': {'seed': seed}}
        for part in reversed(config.seed_field.split(".")):
          nested = {part: nested}
        _merge(run, nested, "seed_field")
      runs.append((name, seed, run))
  return runs


def shard_runs(runs: Sequence, *, process_index: int, process_count: int) -> list:
  """The sub-runs this process trains: every `process_count`-th, from `process_index`."""
  errors.check_positive("process_count", process_count)
  if not 0 <= process_index < process_count:
    raise errors.ConfigError(
        f"config.process_index={process_index} must be in [0, {process_count}); "
        "set it to this host's index or -1 for jax.process_index()")
  return [r for i, r in enumerate(runs) if i % process_count == process_index]
