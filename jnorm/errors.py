"""User-facing errors: each names the problem and the fix in one line.

`jnorm.main` prints these without a traceback. `ConfigError` exits with code 2 (a bad
invocation, like an absl flag error); `Preempted` with `EXIT_PREEMPTED` (75, after its
checkpoint is saved); any other `JnormError` with code 1.
"""

import errno
import math
import numbers
import os
from typing import Optional

# The exit code of a run stopped by SIGTERM / SIGINT after saving its checkpoint: BSD's
# EX_TEMPFAIL ("try again later"), which a scheduler can tell from a failure (1, 2) and
# from a death by the signal itself (143, 130): rerunning the same command resumes.
EXIT_PREEMPTED = 75


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


class Preempted(JnormError):
  """SIGTERM or SIGINT stopped a run at a step boundary after its checkpoint was saved
  (`jnorm.training.loop`); `jnorm.main` prints the message as `jnorm: <message>` and exits
  with `EXIT_PREEMPTED`. Not a failure: the same command resumes.

  Attributes:
    step: the step whose checkpoint was saved (None: stopped between the sub-runs of a
      comparison).
  """

  def __init__(self, message: str, step: Optional[int] = None):
    super().__init__(message)
    self.step = step


# errno values of a disk that cannot take a write, with what to do about each.
_DISK_FIXES = {
    errno.ENOSPC: ("no space left on device", "free space on that disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space on that disk or raise the quota"),
    errno.EROFS: ("read-only file system", "make that file system writable"),
    errno.EACCES: ("permission denied", "make that directory writable"),
    errno.EPERM: ("operation not permitted", "make that directory writable"),
    errno.EIO: ("input/output error", "check that disk"),
}
# The same, as strerror texts: how libraries that wrap the OSError (tensorstore, under
# orbax) report it.
_DISK_TEXTS = {os.strerror(code).lower(): code for code in _DISK_FIXES}


class DiskError(JnormError, RuntimeError):
  """A write into the workdir failed (a full disk, a read-only or unwritable directory);
  what was written before (checkpoints, results) is intact and the same command resumes
  once the cause is fixed. `disk_error` builds one from the underlying exception.

  Attributes:
    errno: the OS error number (e.g. `errno.ENOSPC`).
  """

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.errno = code


def disk_error_code(exc: BaseException) -> Optional[int]:
  """The errno of a disk fault (a full disk or quota, a read-only or unwritable
  directory, an I/O error) behind `exc` (its chain of causes and contexts, and the
  exception groups in it), or None if `exc` is not one.

  Exceptions that only carry the OS error's text (tensorstore's, under orbax) count when
  the text names one of these faults.
  """
  seen, todo = set(), [exc]
  text_code = None
  while todo:
    e = todo.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _DISK_FIXES:
      return e.errno
    message = str(e).lower()
    if text_code is None:
      text_code = next((code for text, code in _DISK_TEXTS.items() if text in message), None)
    todo.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])
  return text_code


def disk_error(exc: BaseException, *, path: str, what: str) -> Optional["DiskError"]:
  """A one-line `DiskError` for the failed write of `what` to `path`, or None if `exc`
  is not a disk fault (`disk_error_code`)."""
  code = disk_error_code(exc)
  if code is None:
    return None
  problem, fix = _DISK_FIXES[code]
  return DiskError(code, f"cannot write {what} {path} ({problem}); {fix}, then run the "
                   "same command again: it resumes from the last checkpoint")


class WorkerError(JnormError, RuntimeError):
  """A worker process of a comparison (`config.workers`) stopped on an error."""


def check_choice(field: str, value, choices) -> None:
  """Raises `ConfigError` unless `value` is one of `choices`."""
  if value not in choices:
    raise ConfigError(
        f"config.{field}={value!r} is not valid; use one of {sorted(choices)!r}")


def check_int(field: str, value, *, minimum: int) -> None:
  """Raises `ConfigError` unless `value` is an integer >= `minimum` (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ConfigError(f"config.{field}={value!r} must be an integer >= {minimum}")


def check_int_tuple(field: str, values, *, minimum: int, allow_empty: bool = True) -> None:
  """Raises `ConfigError` unless `values` is a sequence of integers, each >= `minimum`
  (and, without `allow_empty`, at least one): widths, class labels."""
  fix = f"must be a tuple of integers >= {minimum}, e.g. ({max(minimum, 1)},)"
  if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
    raise ConfigError(f"config.{field}={values!r} {fix}")
  if not values and not allow_empty:
    raise ConfigError(f"config.{field}={values!r} is empty; it {fix}")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
      raise ConfigError(f"config.{field}={values!r} {fix}")


def check_finite_floats(config, prefix: str = "") -> None:
  """Raises `ConfigError` for the first NaN or infinite float anywhere in `config` (a
  nested dict / ConfigDict): no field of jnorm's configs means a non-finite number."""
  for key, value in config.items():
    if hasattr(value, "items"):
      check_finite_floats(value, f"{prefix}{key}.")
    elif isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"config.{prefix}{key}={value!r} must be a finite number")


def check_positive(field: str, value, *, allow_zero: bool = False) -> None:
  """Raises `ConfigError` unless `value` > 0 (or >= 0 with `allow_zero`) and finite (an
  infinite learning rate, epoch count, ... is never meant; NaN fails the bound)."""
  ok = value >= 0 if allow_zero else value > 0
  bound = ">= 0" if allow_zero else "> 0"
  if not ok:
    raise ConfigError(f"config.{field}={value!r} must be {bound}")
  if isinstance(value, float) and not math.isfinite(value):
    raise ConfigError(f"config.{field}={value!r} must be a finite number {bound}")
