"""A run killed after its last checkpoint but before results.json resumes to the same
results as an uninterrupted run (every field but timings and resumed_from_step)."""

import os

import pytest

import reliability_util as ru
from jnorm.training import checkpoint


def test_results_json_lost_after_the_last_checkpoint(reference_run, copy_of, capsys):
  """What a kill between knn_curve.json and results.json leaves behind."""
  workdir = copy_of(reference_run)
  os.remove(os.path.join(workdir, "results.json"))
  code, out, err = ru.in_process(ru.tiny_args(workdir), capsys)
  assert code == 0, err
  assert f"(step {ru.TOTAL_STEPS})" in out  # resumed at the last step: no training
  resumed = ru.results(workdir)
  assert resumed["resumed_from_step"] == ru.TOTAL_STEPS
  assert resumed["final_loss"] is not None
  ru.assert_same_run(workdir, reference_run)


class _Killed(BaseException):
  """Stands for SIGKILL: no handler of the loop catches a BaseException subclass."""


def test_exception_right_after_the_final_save(reference_run, tmp_path, monkeypatch, capsys):
  """The run dies right after writing its last checkpoint: before the final evaluation,
  knn_curve.json, metrics' eval line and results.json."""
  workdir = str(tmp_path / "run")
  save = checkpoint.Checkpointer.save

  def save_then_die(self, step, state_host, **kwargs):
    save(self, step, state_host, **kwargs)
    if step == ru.TOTAL_STEPS:
      raise _Killed()

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(_Killed):
    ru.in_process(ru.tiny_args(workdir), capsys)
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert ru.complete_steps(workdir)[-1] == ru.TOTAL_STEPS
  assert os.listdir(workdir).count("run.lock") == 0  # released on the way out
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  code, out, err = ru.in_process(ru.tiny_args(workdir), capsys)
  assert code == 0, err
  assert f"(step {ru.TOTAL_STEPS})" in out
  ru.assert_same_run(workdir, reference_run)
