"""Command-line entry point: `python -m jnorm.main --config configs/x.py --workdir dir`.

The config file's `get_config(arg)` builds an `ml_collections.ConfigDict`; `configs/x.py:arg`
passes `arg`, and `--config.field=value` overrides a field. `config.job` names the job
(see `jnorm.jobs.JOBS`). Problems with the invocation (a config file that does not
load, an unknown field, a wrong type, a missing flag, a workdir that cannot be created)
are reported in one line, naming the problem and the fix, with exit code 2; other
`jnorm.errors.JnormError`s (a corrupt checkpoint, a live run holding the workdir,
non-finite values, a full disk) in one line with exit code 1. A training run stopped by
SIGTERM or SIGINT saves its checkpoint, says so in one line and exits with code 75
(`errors.EXIT_PREEMPTED`; the same command resumes it). Warnings that libraries log through
absl (TFDS, orbax) are shown only with an explicit `--verbosity` (e.g. `--verbosity=0`).

On a CPU backend the driver turns on jnorm's CPU tuning (`jnorm.cpu.enable()`) before
the first computation, unless the config (or the training config it embeds, e.g. a
comparison's `base`) sets `cpu_tuning='off'` (`cpu_tuning_of`).
"""

import difflib
import importlib.util
import os
import sys
import traceback
from typing import Optional

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from jnorm import caches
from jnorm import cpu
from jnorm import errors
from jnorm import jobs
from jnorm.training import config as train_config

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, figures and checkpoints.")


def _fail(message: str, code: int) -> None:
  print(f"jnorm: error: {message}", file=sys.stderr)
  sys.exit(code)


def _one_line(exc: BaseException) -> str:
  """The exception's message on one line; for a wrapped traceback, its last line."""
  text = str(exc)
  if "Traceback (most recent call last)" in text:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else text
  text = " ".join(text.split())
  return text or type(exc).__name__


def _config_spec(argv: list) -> Optional[str]:
  """The value of the --config flag in `argv` (None if it is absent)."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    for name in ("--config", "-config"):
      if arg.startswith(name + "="):
        return arg[len(name) + 1:]
      if arg == name:
        return argv[i + 1] if i + 1 < len(argv) else None
  return None


def _line_in(exc: BaseException, path: str) -> str:
  """' (line N)' of the innermost traceback frame of `exc` in the file `path`, or ''."""
  frames = [f for f in traceback.extract_tb(exc.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f" (line {frames[-1].lineno})" if frames else ""


def check_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads the config file of `--config spec` (`path` or `path:arg`), once: absl then
  applies the `--config.field=value` overrides to the result (`main` has put the
  file's directory on `sys.path`).

  Raises:
    errors.ConfigError: the file is missing or unreadable, does not compile or import,
      has no get_config(), get_config raises, or returns no ConfigDict; one line
      naming the file and the fix.
  """
  path, has_arg, arg = spec.partition(":")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise errors.ConfigError(
        f"config file {path} {what}; pass a config .py file, e.g. --config configs/default.py")
  fix = "fix the file, or start from configs/default.py"
  try:
    spec_ = importlib.util.spec_from_file_location("_jnorm_config_check", path)
    if spec_ is None or spec_.loader is None:
      raise ImportError(f"not a Python source file: {path}")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
  except SyntaxError as exc:
    where = f" at line {exc.lineno}" if exc.lineno else ""
    raise errors.ConfigError(
        f"config file {path} has a syntax error{where}: {exc.msg}; {fix}") from None
  except ImportError as exc:
    raise errors.ConfigError(
        f"config file {path}{_line_in(exc, path)} cannot import: {_one_line(exc)}; install "
        "the missing module or correct the import") from None
  except (OSError, UnicodeDecodeError) as exc:
    raise errors.ConfigError(
        f"config file {path} cannot be read ({_one_line(exc)}); pass a readable Python "
        "file") from None
  except Exception as exc:  # pylint: disable=broad-except  # any error the file raises
    raise errors.ConfigError(
        f"config file {path}{_line_in(exc, path)} raised {type(exc).__name__}: "
        f"{_one_line(exc)}; {fix}") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise errors.ConfigError(
        f"config file {path} defines no get_config(); add `def get_config(arg=None)` "
        "returning an ml_collections.ConfigDict")
  try:
    config = get_config(arg) if has_arg else get_config()
  except errors.JnormError as exc:  # the config's own one-line report
    message = _one_line(exc)
    raise errors.ConfigError(
        message if path in message else f"config file {path}: {message}") from None
  except Exception as exc:  # pylint: disable=broad-except
    call = f"get_config({arg!r})" if has_arg else "get_config()"
    raise errors.ConfigError(
        f"config file {path}: {call}{_line_in(exc, path)} raised {type(exc).__name__}: "
        f"{_one_line(exc)}; fix the file or the argument after ':'") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.ConfigError(
        f"config file {path}: get_config() returned {type(config).__name__}, not an "
        "ml_collections.ConfigDict; return one (e.g. jnorm.training.config.defaults() "
        "with your changes)")
  return config


def _unknown_override(config: ml_collections.ConfigDict, argv: list) -> Optional[str]:
  """The error line for the first `--config.a.b=...` naming a field `config` lacks."""
  for arg in argv[1:]:
    if arg == "--":
      break
    if not arg.startswith(("--config.", "-config.")):
      continue
    flag = arg.split("=", 1)[0]
    node, walked = config, []
    for part in flag.split(".", 1)[1].split("."):
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        break  # a field of a plain value: absl reports it
      if part not in node:
        close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1)
        hint = f" (did you mean {'.'.join(walked + close)!r}?)" if close else ""
        return (f"{flag}: the config has no field {'.'.join(walked + [part])!r}{hint}; "
                "check its spelling in the config file")
      node, walked = node[part], walked + [part]
  return None


def check_workdir(workdir: str) -> None:
  """Raises `errors.ConfigError` unless `workdir` is, or can be created as, a writable
  directory; creates nothing."""
  fix = "pass a directory path that exists or can be created, e.g. --workdir /tmp/jnorm_run"
  if os.path.exists(workdir):
    if not os.path.isdir(workdir):
      raise errors.ConfigError(f"--workdir {workdir} is an existing file, not a directory; {fix}")
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise errors.ConfigError(f"--workdir {workdir} is not writable; {fix}")
    return
  parent = os.path.dirname(workdir)
  while parent and not os.path.exists(parent) and parent != os.path.dirname(parent):
    parent = os.path.dirname(parent)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise errors.ConfigError(
        f"--workdir {workdir} cannot be created: {parent} is a file, not a directory; {fix}")
  if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
    raise errors.ConfigError(
        f"--workdir {workdir} cannot be created: {parent} is not writable; {fix}")


def _about(exc: OSError, workdir: str) -> bool:
  """Whether the OSError `exc` concerns `workdir` (a path inside it, or above it)."""
  name = exc.filename if isinstance(exc.filename, str) else ""
  if not name:
    return False
  name, workdir = os.path.abspath(name), os.path.abspath(workdir)
  return (name == workdir or name.startswith(workdir + os.sep)
          or workdir.startswith(name + os.sep))


def cpu_tuning_of(config: ml_collections.ConfigDict) -> tuple:
  """(field, value) of the `cpu_tuning` that governs the process: the config's own, or
  that of the training config it embeds (a comparison's `base`, an analysis's `train`,
  a comparison of analyses' `base.train`); 'auto' where none has one (simulations)."""
  for path in ("", "base.", "train.", "base.train."):
    node = config
    for part in path.split(".")[:-1]:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if isinstance(node, ml_collections.ConfigDict) and "cpu_tuning" in node:
      return f"{path}cpu_tuning", node.cpu_tuning
  return "cpu_tuning", "auto"


def _summary(results: dict) -> str:
  lines = []
  for key, value in results.items():
    if isinstance(value, float):
      lines.append(f"  {key}: {value:.4g}")
    elif isinstance(value, (int, str, bool)) or value is None:
      lines.append(f"  {key}: {value}")
    elif isinstance(value, (list, tuple)) and len(value) <= 12 and all(
        isinstance(v, (int, float, str)) for v in value):
      shown = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in value]
      lines.append(f"  {key}: [{', '.join(shown)}]")
  return "\n".join(lines)


def _config_dir_on_path(argv) -> None:
  """Puts the --config file's directory on `sys.path` before the flags load the file,
  so a config imports its folder's shared bases (`import common`), as
  `jnorm.jobs.load_config_file` allows."""
  path = (_config_spec(argv) or "").partition(":")[0]
  if path:
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
      sys.path.insert(0, directory)


def main(argv=None) -> int:
  """Runs the job of `argv` (default `sys.argv`); returns 0 or exits with 1, 2, 75
  (`errors.EXIT_PREEMPTED`: stopped by SIGTERM / SIGINT, checkpoint saved) or 130."""
  argv = list(sys.argv if argv is None else argv)
  saved_argv, sys.argv = sys.argv, argv  # config_flags reads overrides from sys.argv
  try:
    return _main(argv)
  finally:
    sys.argv = saved_argv


def _without_config_flag(argv: list) -> list:
  """`argv` less its `--config spec` (the overrides `--config.a=b` stay)."""
  out, skip = [], False
  for i, arg in enumerate(argv):
    if skip:
      skip = False
      continue
    if i and arg in ("--config", "-config"):
      skip = True
      continue
    if i and arg.startswith(("--config=", "-config=")):
      continue
    out.append(arg)
  return out


def _main(argv: list) -> int:
  _config_dir_on_path(argv)
  for name in [n for n in FLAGS if n == "config" or n.startswith("config.")]:
    delattr(FLAGS, name)  # the config flags of an earlier call in this process (tests)
  if FLAGS.is_parsed():
    FLAGS.unparse_flags()
  spec = _config_spec(argv)
  if not spec:
    _fail("flag --config is required, e.g. --config configs/default.py", 2)
  try:  # absl would raise the file's own errors with a traceback: load it here
    loaded = check_config_file(spec)
  except errors.ConfigError as exc:
    _fail(_one_line(exc), 2)
  unknown = _unknown_override(loaded, argv)
  if unknown:
    _fail(unknown, 2)
  argv = _without_config_flag(argv)
  config_flag = config_flags.DEFINE_config_dict("config", loaded, lock_config=True,
                                                sys_argv=argv)
  try:
    FLAGS(argv)
  except flags.Error as exc:
    message = _one_line(exc)
    fix = ("remove it or correct its spelling" if "Unknown command line flag" in message
           else "pass a value of the flag's type")
    _fail(f"{message}; {fix} (see `python -m jnorm.main --helpfull`)", 2)
  except (AttributeError, KeyError) as exc:  # `--config.name=...` for a missing field
    name = _one_line(exc).strip("\"'")
    flag = next((a for a in argv if a.startswith("--config.") and name in a), "--config.*")
    _fail(f"{flag}: the config has no field {name!r}; check its spelling in the config file", 2)
  except (TypeError, ValueError) as exc:  # other bad overrides
    _fail(f"bad --config override: {_one_line(exc)}", 2)
  if not _WORKDIR.value:
    _fail("flag --workdir is required, e.g. --workdir /tmp/jnorm_run", 2)
  if not FLAGS["verbosity"].present:  # library warnings (TFDS, orbax) only on request
    logging.set_verbosity(logging.ERROR)

  config, workdir = config_flag.value, os.path.abspath(_WORKDIR.value)
  try:
    check_workdir(workdir)
    field, tuning = cpu_tuning_of(config)
    errors.check_choice(field, tuning, train_config.CPU_TUNINGS)
    job = config.get("job")
    if job in jobs.JOBS and job != "train":  # the train job creates it once checks pass
      os.makedirs(workdir, exist_ok=True)
    caches.enable_compilation_cache()
    if tuning != "off":
      cpu.enable(conv=tuning)  # before the first computation; a no-op off CPU
    results = jobs.run_job(config, workdir)
  except errors.ConfigError as exc:
    _fail(_one_line(exc), 2)
  except errors.Preempted as exc:  # not an error: its checkpoint is saved
    print(f"jnorm: {_one_line(exc)}", file=sys.stderr)
    sys.exit(errors.EXIT_PREEMPTED)
  except errors.JnormError as exc:
    _fail(_one_line(exc), 1)
  except OSError as exc:
    if not _about(exc, workdir):
      raise
    _fail(f"cannot write {exc.filename} ({exc.strerror or type(exc).__name__}); make "
          f"--workdir {workdir} a writable directory with free space, or choose another", 2)
  except KeyboardInterrupt:
    _fail("interrupted; run the same command again to resume from the last checkpoint", 130)
  print(f"jnorm: job '{config.job}' finished; results in {os.path.join(workdir, 'results.json')}")
  print(_summary(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
