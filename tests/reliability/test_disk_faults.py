"""A disk that fills up, turns read-only or refuses permission while a run writes (a
checkpoint, a metrics line, the results file): one line naming the path, what failed and
the fix, exit 1, no traceback; the previous checkpoint and results are intact, and once
the disk is fixed the same command resumes to the end bit-identical to an uninterrupted
run.

The faults are injected (the tests run as any user, root included, on any filesystem) at
the lowest Python-level write each path reaches: `open` inside etils (orbax's file
writes: a checkpoint's metadata), `open` inside jnorm.training.metrics, and `os.replace`
(the rename that commits a JSON file).
"""

import builtins
import errno
import json
import os
import subprocess
import sys

from etils.epath import backend as epath_backend
import pytest

import reliability_util as ru
from jnorm import errors
from jnorm import json_files
from jnorm.training import checkpoint
from jnorm.training import metrics as metrics_lib

FAULTS = {  # errno -> (words of the error line: the problem, the fix)
    errno.ENOSPC: ("no space left on device", "free space on that disk"),
    errno.EROFS: ("read-only file system", "make that file system writable"),
    errno.EACCES: ("permission denied", "make that directory writable"),
}
RESUME = "then run the same command again: it resumes from the last checkpoint"


def _fault(code, path):
  return OSError(code, os.strerror(code), path)


def _assert_disk_line(code, err, path, fault, what):
  problem, fix = FAULTS[fault]
  return ru.assert_one_line_error(code, err, 1, f"cannot write {what} {path} ({problem})",
                                  fix, RESUME)


def _resume_and_compare(workdir, reference_run, capsys, step):
  code, out, err = ru.in_process(ru.tiny_args(workdir), capsys)
  assert code == 0, err[-3000:]
  assert f"checkpoints/{step} (step {step})" in out
  ru.assert_same_run(workdir, reference_run)


@pytest.mark.parametrize("fault", sorted(FAULTS), ids=errno.errorcode.get)
def test_checkpoint_write_fails(fault, reference_run, tmp_path, monkeypatch, capsys):
  """The save of step 5 fails inside orbax (writing its metadata file)."""
  workdir = str(tmp_path / "run")
  real_open = builtins.open
  failed = []

  def open_failing(path, *args, **kwargs):
    parent = os.path.basename(os.path.dirname(os.path.dirname(str(path))))
    if parent.startswith("5.orbax-checkpoint-tmp"):
      failed.append(str(path))
      raise _fault(fault, str(path))
    return real_open(path, *args, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(epath_backend, "open", open_failing, raising=False)
    code, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  assert failed, "the injected fault was not reached"
  _assert_disk_line(code, err, os.path.join(workdir, "checkpoints", "5"), fault,
                    "the checkpoint")
  assert ru.complete_steps(workdir) == [2, 3, 4]  # keep_checkpoints: 3
  assert ru.final_leaves(workdir)[0] == 4  # the previous checkpoint reads back
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert checkpoint.LOCK_NAME not in os.listdir(workdir)
  _resume_and_compare(workdir, reference_run, capsys, 4)
  assert not ru.temporary_steps(workdir)  # the failed save's directory is cleaned up


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EACCES], ids=errno.errorcode.get)
def test_metrics_line_fails(fault, reference_run, tmp_path, monkeypatch, capsys):
  """The train line of step 5 cannot be appended to metrics.jsonl."""
  workdir = str(tmp_path / "run")
  path = os.path.join(workdir, "metrics.jsonl")

  class FailingLine:
    """metrics.jsonl opened for appending; the write of step 5's line fails."""

    def __init__(self, f):
      self._f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

    def write(self, text):
      if json.loads(text)["step"] == 5 and json.loads(text)["kind"] == "train":
        raise _fault(fault, path)
      return self._f.write(text)

  def open_failing(name, mode="r", *args, **kwargs):
    f = builtins.open(name, mode, *args, **kwargs)
    return FailingLine(f) if name == path and "a" in mode else f
  with monkeypatch.context() as patch:
    patch.setattr(metrics_lib, "open", open_failing, raising=False)
    code, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  _assert_disk_line(code, err, path, fault, "the step-5 line of")
  assert [r["step"] for r in metrics_lib.read_metrics(workdir, kind="train")] == [1, 2, 3, 4]
  assert ru.complete_steps(workdir)[-1] == 4
  _resume_and_compare(workdir, reference_run, capsys, 4)


def test_results_file_fails_and_the_previous_one_stays(reference_run, copy_of, monkeypatch,
                                                       capsys):
  """A finished run, rerun (it evaluates its final checkpoint again), on a disk turned
  read-only: results.json cannot be replaced; the previous one is kept as it was."""
  workdir = copy_of(reference_run)
  path = os.path.join(workdir, "results.json")
  with open(path) as f:
    before = f.read()
  real_replace = os.replace

  def replace_failing(src, dst, *args, **kwargs):
    if os.path.abspath(dst) == path:
      raise _fault(errno.EROFS, src)
    return real_replace(src, dst, *args, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(os, "replace", replace_failing)
    code, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  _assert_disk_line(code, err, path, errno.EROFS, "the file")
  with open(path) as f:
    assert f.read() == before
  assert not [n for n in os.listdir(workdir) if n.startswith(".tmp-")]
  _resume_and_compare(workdir, reference_run, capsys, ru.TOTAL_STEPS)


def test_results_file_of_a_fresh_run_fails_then_resumes(reference_run, tmp_path,
                                                        monkeypatch, capsys):
  """No space for results.json at the end of a run: its final checkpoint is kept, the
  rerun only evaluates it."""
  workdir = str(tmp_path / "run")
  path = os.path.join(workdir, "results.json")
  real_fsync, failed = os.fsync, []

  curve = os.path.join(workdir, "knn_curve.json")

  def fsync_failing(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if (os.path.dirname(name) == workdir and os.path.basename(name).startswith(".tmp-")
        and os.path.exists(curve) and len(ru.load_json_strict(curve)) == 3):
      failed.append(name)  # a JSON file after the final evaluation: results.json
      raise _fault(errno.ENOSPC, name)
    return real_fsync(fd)
  with monkeypatch.context() as patch:
    patch.setattr(os, "fsync", fsync_failing)
    code, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  assert failed
  _assert_disk_line(code, err, path, errno.ENOSPC, "the file")
  assert not os.path.exists(path)
  assert not [n for n in os.listdir(workdir) if n.startswith(".tmp-")]
  assert ru.complete_steps(workdir)[-1] == ru.TOTAL_STEPS
  _resume_and_compare(workdir, reference_run, capsys, ru.TOTAL_STEPS)


# `python -c` of a CLI run whose save of checkpoint 5 finds the disk full (the fault
# injected as in test_checkpoint_write_fails).
_FULL_AT_SAVE_5 = """
import builtins, errno, os, sys
from etils.epath import backend
real_open = builtins.open
def open_failing(path, *args, **kwargs):
  if os.path.basename(os.path.dirname(os.path.dirname(str(path)))).startswith(
      "5.orbax-checkpoint-tmp"):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
  return real_open(path, *args, **kwargs)
backend.open = open_failing
from jnorm import main
sys.exit(main.main(["jnorm", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_checkpoint_write_fails_in_the_cli(reference_run, cli_env, tmp_path):
  """As a user sees it: orbax's writer threads log the failure with a traceback through
  absl, which the run must not print next to its one line."""
  workdir = str(tmp_path / "run")
  proc = subprocess.run([sys.executable, "-c", _FULL_AT_SAVE_5, *ru.tiny_args(workdir)],
                        env=cli_env, cwd=ru.ROOT, capture_output=True, text=True,
                        timeout=300, check=False)
  _assert_disk_line(proc.returncode, proc.stderr, os.path.join(workdir, "checkpoints", "5"),
                    errno.ENOSPC, "the checkpoint")
  assert ru.complete_steps(workdir) == [2, 3, 4]
  proc = ru.cli(ru.tiny_args(workdir), cli_env)
  ru.require_success(proc, "the rerun")
  assert "checkpoints/4 (step 4)" in proc.stdout
  ru.assert_same_run(workdir, reference_run)


class _OrbaxLike(Exception):
  """Stands for orbax's wrapper exceptions."""


@pytest.mark.parametrize("exc, code", [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (_OrbaxLike("save failed"), None),
    (ValueError("Error writing local file \"/w/ocdbt.process_0/d/x\": "
                "[OS error: Read-only file system]"), errno.EROFS),  # tensorstore's text
    (ExceptionGroup("commit", [ValueError("x"), PermissionError(errno.EACCES, "denied")]),
     errno.EACCES),
    (FileNotFoundError(errno.ENOENT, "gone"), None),  # not a disk fault
], ids=["oserror", "unrelated", "tensorstore-text", "group", "enoent"])
def test_disk_error_code_looks_through_wrappers(exc, code):
  try:
    try:
      raise exc
    except Exception as inner:  # pylint: disable=broad-except
      raise _OrbaxLike("checkpoint save failed") from inner
  except _OrbaxLike as outer:
    assert errors.disk_error_code(outer) == code


def test_write_json_atomic_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
  path = str(tmp_path / "out.json")
  json_files.write_json_atomic(path, {"v": 1})

  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", no_space)
  with pytest.raises(errors.DiskError, match=r"cannot write the file .*out.json \(no space"):
    json_files.write_json_atomic(path, {"v": 2})
  monkeypatch.undo()
  assert json.loads((tmp_path / "out.json").read_text()) == {"v": 1}
  assert os.listdir(tmp_path) == ["out.json"]
