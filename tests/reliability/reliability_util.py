"""Shared helpers of the reliability tests: the tiny run, running the CLI, comparing runs.

A run is driven either through a subprocess (`python -m jnorm.main`, what a user runs;
~4 s of imports each) or in-process (`jnorm.main.main(argv)`, for the many cases that
stop before training).
"""

import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest

from jnorm import main as jmain
from jnorm.training import checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TINY_CONFIG = os.path.join(HERE, "tiny_config.py")
TOTAL_STEPS = 8  # tiny_config: 2 epochs of 4 steps
# Fields that may differ between a resumed and an uninterrupted run.
VOLATILE = ("train_seconds_per_step", "first_step_seconds", "wall_seconds",
            "resumed_from_step")


def tiny_args(workdir: str, *extra: str) -> list:
  """The CLI arguments (without the program) of the tiny run in `workdir`."""
  return ["--config", TINY_CONFIG, "--workdir", workdir, *extra]


def cli(args, env, *, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs `python -m jnorm.main ARGS` to completion."""
  return subprocess.run([sys.executable, "-m", "jnorm.main", *args], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False)


def popen(args, env, *, log: str) -> subprocess.Popen:
  """Starts `python -m jnorm.main ARGS` in the background, its stdout and stderr to the
  file `log`."""
  with open(log, "w") as out:
    return subprocess.Popen([sys.executable, "-m", "jnorm.main", *args], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)


def in_process(argv, capsys) -> tuple:
  """(exit code, stdout, stderr) of `jnorm.main.main(['jnorm', *argv])` in this process."""
  capsys.readouterr()
  try:
    with warnings.catch_warnings():  # absl's config_flags loads files with load_module()
      warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
      code = jmain.main(["jnorm", *argv])
  except SystemExit as exc:
    code = exc.code
  out, err = capsys.readouterr()
  return code, out, err


def assert_one_line_error(code, err: str, expected_code: int, *needles: str) -> str:
  """Exit code `expected_code`, exactly one stderr line `jnorm: error: ...` holding every
  needle (case-insensitive), and no traceback; returns the line."""
  assert "Traceback" not in err, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1, err[-3000:]
  assert lines[0].startswith("jnorm: error: "), lines[0]
  for needle in needles:
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
  assert code == expected_code, (code, lines[0])
  return lines[0]


def snapshot(path: str):
  """{relative path: (size, mtime_ns)} of every file and folder under `path` (None if
  `path` does not exist): equal snapshots mean nothing was written there."""
  if not os.path.exists(path):
    return None
  snap = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      st = os.stat(full)
      snap[os.path.relpath(full, path)] = (st.st_size if name in files else 0, st.st_mtime_ns)
  return snap


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _no_constants(name):
  raise ValueError(f"JSON holds the non-standard constant {name}")


def load_json_strict(path: str):
  """A JSON file, refusing NaN / Infinity tokens."""
  with open(path) as f:
    return json.load(f, parse_constant=_no_constants)


def results(workdir: str) -> dict:
  return load_json_strict(os.path.join(workdir, "results.json"))


def comparable(res: dict) -> dict:
  """`res` without the fields a resume may change (timings, resumed_from_step)."""
  return {k: v for k, v in res.items() if k not in VOLATILE}


def metrics_lines(workdir: str) -> list:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line, parse_constant=_no_constants) for line in f]


def complete_steps(workdir: str) -> list:
  """The finished checkpoints (orbax's step folders; not `*.orbax-checkpoint-tmp*`)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def temporary_steps(workdir: str) -> list:
  """Steps whose checkpoint is being written (or was, by a killed save)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n.split(".")[0]) for n in os.listdir(directory)
                if ".orbax-checkpoint-tmp" in n and n.split(".")[0].isdigit())


def final_leaves(workdir: str) -> tuple:
  """(newest step, its state leaves as numpy arrays), read raw from the checkpoint."""
  c = checkpoint.Checkpointer(workdir, read_only=True)
  step = c.latest_step()
  items = c._manager.restore(step)  # pylint: disable=protected-access  # raw leaves
  c.close()
  return step, [np.asarray(items.state[k]) for k in sorted(items.state)]


def assert_same_run(got: str, want: str, *, lines_in_any_order: bool = False) -> None:
  """The run in `got` ended bit-identical to the one in `want`: results.json (but for
  timings and resumed_from_step), knn_curve.json, metrics.jsonl (its lines in any
  order with `lines_in_any_order`: an evaluation in the background is logged when it
  ends) and the newest checkpoint's every leaf."""
  assert comparable(results(got)) == comparable(results(want))
  assert (load_json_strict(os.path.join(got, "knn_curve.json"))
          == load_json_strict(os.path.join(want, "knn_curve.json")))
  got_lines, want_lines = metrics_lines(got), metrics_lines(want)
  if lines_in_any_order:
    got_lines, want_lines = (sorted(x, key=lambda r: (r["step"], r["kind"]))
                             for x in (got_lines, want_lines))
  assert got_lines == want_lines
  step_a, leaves_a = final_leaves(got)
  step_b, leaves_b = final_leaves(want)
  assert step_a == step_b == TOTAL_STEPS
  assert len(leaves_a) == len(leaves_b)
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)


def require_success(proc, what: str = "run") -> None:
  if proc.returncode != 0:
    pytest.fail(f"{what} failed ({proc.returncode}): {proc.stderr[-3000:]}")


def start_pair(workdir: str, env: dict, logs: list) -> list:
  """The tiny run as two processes (jax.distributed over gloo on localhost, a free
  port), each logging to its file in `logs`; returns the two Popen objects."""
  port = free_port()
  args = tiny_args(workdir, f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                   "--config.distributed.num_processes=2")
  return [popen(args + [f"--config.distributed.process_id={i}"], env, log=logs[i])
          for i in range(2)]
