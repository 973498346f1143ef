"""Two processes (jax.distributed over gloo on localhost, one CPU device each, as in
tests/multiprocess_worker.py), both SIGKILLed mid-run and both restarted, end
bit-identical to an uninterrupted two-process run."""

import os
import signal
import time

import pytest

import reliability_util as ru


def _text(path):
  with open(path) as f:
    return f.read()


def _finish(procs, logs):
  for proc, log in zip(procs, logs):
    proc.wait(timeout=400)
    assert proc.returncode == 0, _text(log)[-3000:]


@pytest.mark.slow
def test_two_processes_killed_mid_run_resume_bit_identical(cli_env, tmp_path):
  """The uninterrupted pair runs alongside the victim pair (the processes wait on each
  other's collectives much of the time, so overlapping the two saves wall time)."""
  reference, victim = str(tmp_path / "reference"), str(tmp_path / "victim")
  ref_logs = [str(tmp_path / f"ref{i}.log") for i in range(2)]
  ref_procs = ru.start_pair(reference, cli_env, ref_logs)
  logs = [str(tmp_path / f"victim{i}.log") for i in range(2)]
  procs = ru.start_pair(victim, cli_env, logs)
  deadline = time.time() + 300
  while not ru.complete_steps(victim) or ru.complete_steps(victim)[-1] < 3:
    assert all(p.poll() is None for p in procs), _text(logs[0])[-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  for proc in procs:
    proc.send_signal(signal.SIGKILL)
  for proc in procs:
    proc.wait()
  newest = ru.complete_steps(victim)[-1]
  assert 3 <= newest < ru.TOTAL_STEPS
  assert not os.path.exists(os.path.join(victim, "results.json"))

  logs = [str(tmp_path / f"restart{i}.log") for i in range(2)]
  _finish(ru.start_pair(victim, cli_env, logs), logs)
  _finish(ref_procs, ref_logs)
  assert "num_devices: 2" in _text(ref_logs[0])
  assert f"(step {newest})" in _text(logs[0])
  assert ru.results(victim)["resumed_from_step"] == newest
  ru.assert_same_run(victim, reference)
  # The second process computes the same results (it writes no files): same summary.
  summaries = [[line for line in _text(log).splitlines() if line.startswith("  knn_accuracy")]
               for log in (logs[1], ref_logs[1])]
  assert summaries[0] == summaries[1] and summaries[0]
