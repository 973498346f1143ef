"""Command-line entry point: `python -m jnorm.main --config configs/x.py --workdir dir`.

The config file's `get_config(arg)` builds an `ml_collections.ConfigDict`; `configs/x.py:arg`
passes `arg`, and `--config.field=value` overrides a field. `config.job` names the job
(see `jnorm.jobs.JOBS`). Problems with the invocation (unknown field, wrong type,
missing flag) are reported in one line with exit code 2.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from jnorm import errors
from jnorm import jobs

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally `path.py:arg`.", lock_config=True)
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


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  try:
    FLAGS(argv)
  except flags.Error as exc:
    _fail(f"{_one_line(exc)} (see `python -m jnorm.main --helpfull`)", 2)
  except (AttributeError, KeyError) as exc:  # `--config.name=...` for a missing field
    name = _one_line(exc).strip("\"'")
    flag = next((a for a in argv if a.startswith("--config.") and name in a), "--config.*")
    _fail(f"{flag}: the config has no field {name!r}; check its spelling in the config file", 2)
  except (TypeError, ValueError) as exc:  # other bad overrides
    _fail(f"bad --config override: {_one_line(exc)}", 2)
  if _CONFIG.value is None:
    _fail("flag --config is required, e.g. --config configs/default.py", 2)
  try:
    _CONFIG.value.get("job")  # config files load lazily: surface a load error here
  except OSError as exc:
    _fail(_one_line(exc).replace("config_config", "--config"), 2)
  if not _WORKDIR.value:
    _fail("flag --workdir is required, e.g. --workdir /tmp/jnorm_run", 2)

  config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  try:
    os.makedirs(workdir, exist_ok=True)
    results = jobs.run_job(config, workdir)
  except errors.ConfigError as exc:
    _fail(_one_line(exc), 2)
  except errors.JnormError as exc:
    _fail(_one_line(exc), 1)
  except KeyboardInterrupt:
    _fail("interrupted; run the same command again to resume from the last checkpoint", 130)
  print(f"jnorm: job '{config.job}' finished; results in {os.path.join(workdir, 'results.json')}")
  print(_summary(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
