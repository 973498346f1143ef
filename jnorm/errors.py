"""User-facing errors: each names the problem and the fix in one line.

`jnorm.main` prints these without a traceback. `ConfigError` exits with code 2 (a bad
invocation, like an absl flag error); any other `JnormError` exits with code 1.
"""


class JnormError(Exception):
  """Base class of the errors jnorm reports to a user in one line."""


class ConfigError(JnormError, ValueError):
  """A bad invocation: a config file that does not load; a config field that is unknown,
  missing, of the wrong type or out of range; an impossible combination of fields; a
  workdir that cannot be created; or a workdir whose checkpoints another config wrote."""


class DatasetNotFoundError(JnormError, FileNotFoundError):
  """A dataset is not prepared (downloaded / built) where jnorm looks for it."""


class NonFiniteError(JnormError, FloatingPointError):
  """Training produced a NaN or an infinity; the last good checkpoint is kept."""


class CheckpointError(JnormError, RuntimeError):
  """A checkpoint (or the run's config.json) cannot be read, or a workdir is locked by
  another live run."""


class WorkerError(JnormError, RuntimeError):
  """A worker process of a comparison (`config.workers`) stopped on an error."""


def check_choice(field: str, value, choices) -> None:
  """Raises `ConfigError` unless `value` is one of `choices`."""
  if value not in choices:
    raise ConfigError(
        f"config.{field}={value!r} is not valid; use one of {sorted(choices)!r}")


def check_positive(field: str, value, *, allow_zero: bool = False) -> None:
  """Raises `ConfigError` unless `value` > 0 (or >= 0 with `allow_zero`)."""
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    bound = ">= 0" if allow_zero else "> 0"
    raise ConfigError(f"config.{field}={value!r} must be {bound}")
