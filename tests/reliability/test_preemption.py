"""SIGTERM (a VM's preemption notice) and SIGINT during a run: the run stops at a step
boundary with a checkpoint of that step, prints one line, exits with
`errors.EXIT_PREEMPTED` (75), and the same command resumes it to the end bit-identical
to an uninterrupted run (results but timings, knn_curve.json, metrics.jsonl, the final
checkpoint).

In-process cases send the signal to this process from inside the run, at a chosen
moment (a metrics line, an evaluation, a save), so the step it stops at is known; the
subprocess cases (slow) send it from outside, as a VM does, to one process or to both of
a two-process run, also twice inside a checkpoint write.
"""

import os
import re
import signal
import threading
import time

import pytest

import reliability_util as ru
from jnorm import errors
from jnorm.jobs import compare
from jnorm.training import checkpoint
from jnorm.training import evaluation
from jnorm.training import metrics as metrics_lib

LINE = re.compile(r"jnorm: preempted \((SIGTERM|SIGINT|preemption notice)\) at step (\d+); "
                  r"checkpoint saved in (\S+); run the same command to resume")
GRACE_S = 30  # a cloud VM's preemption notice
TINY_COMPARE = os.path.join(ru.HERE, "tiny_compare_config.py")


def _user_handler(signum, frame):  # pylint: disable=unused-argument
  """A library user's handler, which a run must leave in place."""


def _preempted_line(err: str, workdir: str, *, step=None, sig=None) -> int:
  """Asserts stderr is the one preemption line for `workdir`; returns its step."""
  assert "Traceback" not in err, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1, err[-3000:]
  return _step_of(lines[0], workdir, step=step, sig=sig)


def _step_of(line: str, workdir: str, *, step=None, sig=None) -> int:
  """The step of the preemption line `line` of the run in `workdir`."""
  match = LINE.fullmatch(line)
  assert match, line
  got = int(match.group(2))
  assert match.group(3) == os.path.join(workdir, "checkpoints", str(got)), line
  if step is not None:
    assert got == step, line
  if sig is not None:
    assert match.group(1) == sig, line
  return got


def _logged_line(log: str) -> str:
  """The one preemption line in a subprocess's log (stdout and stderr together), which
  holds no traceback."""
  text = _read(log)
  assert "Traceback" not in text, text[-3000:]
  lines = [line for line in text.splitlines() if "preempted" in line]
  assert len(lines) == 1, text[-3000:]
  return lines[0]


def _signal_self(sig):
  os.kill(os.getpid(), sig)  # the handler runs in this (the main) thread, before this returns


@pytest.fixture
def main_thread_handlers():
  """A user's SIGTERM handler around the test; checks that the run put it back (and
  left SIGINT's as it was)."""
  assert threading.current_thread() is threading.main_thread()  # else the signal kills us
  old_term = signal.signal(signal.SIGTERM, _user_handler)
  old_int = signal.getsignal(signal.SIGINT)
  yield
  try:
    assert signal.getsignal(signal.SIGTERM) is _user_handler
    assert signal.getsignal(signal.SIGINT) is old_int
  finally:
    signal.signal(signal.SIGTERM, old_term)


def _on_train_line(monkeypatch, step, *signals, where=""):
  """Sends `signals` to this process right after the train metrics line of `step` (of
  the run whose workdir contains `where`) is written."""
  write = metrics_lib.MetricsWriter.write

  def write_then_signal(self, at, scalars, *, kind="train"):
    write(self, at, scalars, kind=kind)
    if kind == "train" and at == step and where in self.path:
      for sig in signals:
        _signal_self(sig)
  monkeypatch.setattr(metrics_lib.MetricsWriter, "write", write_then_signal)


def _on_evaluation(monkeypatch, epoch, sig):
  """Sends `sig` to this process from inside the evaluation at `epoch`."""
  evaluate = evaluation.evaluate_state

  def evaluate_with_signal(*args, **kwargs):
    if kwargs.get("epoch") == epoch:
      _signal_self(sig)
    return evaluate(*args, **kwargs)
  monkeypatch.setattr(evaluation, "evaluate_state", evaluate_with_signal)


def _after_save(monkeypatch, step, sig):
  """Sends `sig` to this process from inside the save of checkpoint `step`, after the
  files are written."""
  save = checkpoint.Checkpointer.save

  def save_with_signal(self, at, state_host, **kwargs):
    save(self, at, state_host, **kwargs)
    if at == step:
      _signal_self(sig)
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_with_signal)


# (id, where the signal arrives, the step the run stops at, its checkpoints then).
# The runs checkpoint every 3 steps, so a stop at 2 or 4 saves a step of its own.
IN_PROCESS_CASES = [
    ("sigterm-between-checkpoints", lambda mp: _on_train_line(mp, 2, signal.SIGTERM),
     "SIGTERM", 2, [2]),
    ("sigterm-then-sigint-repeated", lambda mp: _on_train_line(
        mp, 2, signal.SIGTERM, signal.SIGINT, signal.SIGTERM), "SIGTERM", 2, [2]),
    ("sigint-inside-an-evaluation", lambda mp: _on_evaluation(mp, 1, signal.SIGINT),
     "SIGINT", 4, [3, 4]),
    ("sigterm-in-a-periodic-save", lambda mp: _after_save(mp, 3, signal.SIGTERM),
     "SIGTERM", 3, [3]),
    ("sigterm-in-the-final-save", lambda mp: _after_save(mp, 8, signal.SIGTERM),
     "SIGTERM", 8, [3, 6, 8]),
]


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("name, arrange, sig, step, steps", IN_PROCESS_CASES,
                         ids=[c[0] for c in IN_PROCESS_CASES])
def test_signal_stops_at_a_step_with_its_checkpoint_and_resumes_exactly(
    name, arrange, sig, step, steps, background, main_thread_handlers, reference_run,
    tmp_path, monkeypatch, capsys):
  """Also with `eval.background` (against the reference run, which evaluates inline):
  the same numbers, and a signal inside a background evaluation stops the run at
  whichever later step the main thread has reached, after recording it."""
  del main_thread_handlers
  if background and name == "sigint-inside-an-evaluation":
    step = steps = None  # the evaluation runs beside steps 5 to 8
  workdir = str(tmp_path / "run")
  args = ru.tiny_args(workdir, "--config.checkpoint_every_steps=3",
                      f"--config.eval.background={background}")
  with monkeypatch.context() as patch:
    arrange(patch)
    code, _, err = ru.in_process(args, capsys)
  assert code == errors.EXIT_PREEMPTED == 75, err[-3000:]
  step = _preempted_line(err, workdir, step=step, sig=sig)
  if steps is None:
    assert 4 < step <= ru.TOTAL_STEPS
    steps = [s for s in (3, 6) if s < step] + [step]
    epochs = [r["epoch"] for r in ru.load_json_strict(os.path.join(workdir, "knn_curve.json"))]
    assert epochs == [0, 1]  # recorded before the stop's checkpoint
  assert ru.complete_steps(workdir) == steps
  assert not ru.temporary_steps(workdir)
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert checkpoint.LOCK_NAME not in os.listdir(workdir)
  code, out, err = ru.in_process(args, capsys)
  assert code == 0, err[-3000:]
  assert f"checkpoints/{step} (step {step})" in out
  assert ru.results(workdir)["resumed_from_step"] == step
  ru.assert_same_run(workdir, reference_run, lines_in_any_order=background)


def test_compare_stops_between_and_inside_sub_runs(main_thread_handlers, reference_run,
                                                    tmp_path, monkeypatch, capsys):
  """A signal after sub-run a stops the comparison before b; one inside b stops b at a
  step with its checkpoint; neither stop marks b finished or failed; the rerun trains
  the rest, and each sub-run ends as the tiny run does."""
  del main_thread_handlers
  workdir = str(tmp_path / "compare")
  args = ["--config", TINY_COMPARE, "--workdir", workdir]
  a_dir, b_dir = (compare.run_dir(workdir, arm, 0) for arm in ("a", "b"))
  train = compare.SUB_JOBS["train"]

  def train_then_signal(config, path):
    out = train(config, path)
    _signal_self(signal.SIGTERM)
    return out
  with monkeypatch.context() as patch:
    patch.setitem(compare.SUB_JOBS, "train", train_then_signal)
    code, _, err = ru.in_process(args, capsys)
  assert code == errors.EXIT_PREEMPTED, err[-3000:]
  assert err.strip() == ("jnorm: preempted (SIGTERM) before sub-run b/seed0 (1 of 2 trained "
                         "here, kept); run the same command to resume"), err[-3000:]
  assert os.path.exists(os.path.join(a_dir, "results.json"))
  assert not os.path.exists(b_dir)
  assert not os.path.exists(os.path.join(workdir, "results.json"))

  with monkeypatch.context() as patch:
    _on_train_line(patch, 5, signal.SIGTERM, where=b_dir)
    code, _, err = ru.in_process(args, capsys)
  assert code == errors.EXIT_PREEMPTED, err[-3000:]
  _preempted_line(err, b_dir, step=5, sig="SIGTERM")
  assert ru.complete_steps(b_dir)[-1] == 5
  assert not any(os.path.exists(os.path.join(b_dir, f)) for f in ("results.json", "failed.json"))

  code, out, err = ru.in_process(args, capsys)
  assert code == 0, err[-3000:]
  assert "run 1/1: b/seed0" in out and "(step 5)" in out
  for path in (a_dir, b_dir):
    ru.assert_same_run(path, reference_run)
  assert ru.results(workdir)["missing"] == [] and ru.results(workdir)["failed"] == {}


def _wait_for(predicate, proc, log, timeout=120):
  """Polls until `predicate()` holds; fails if `proc` ends first."""
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, f"ended early ({proc.returncode}): {_read(log)[-3000:]}"
    assert time.time() < deadline, _read(log)[-3000:]
    time.sleep(0.01)


def _read(path):
  with open(path) as f:
    return f.read()


def _train_lines(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  return sum('"kind": "train"' in line for line in _read(path).splitlines())


def _stop_and_time(procs, sig=signal.SIGTERM):
  """Sends `sig` to every process; returns (seconds until the last exit)."""
  start = time.time()
  for proc in procs:
    proc.send_signal(sig)
  for proc in procs:
    proc.wait(timeout=GRACE_S + 30)
  return time.time() - start


@pytest.mark.slow
def test_sigterm_from_outside_mid_run(reference_run, cli_env, tmp_path):
  """`python -m jnorm.main` gets SIGTERM after its first logged step (saves are slowed
  to 0.3 s so that the run is still going): exit 75 within the grace period."""
  workdir, log = str(tmp_path / "run"), str(tmp_path / "run.log")
  env = dict(cli_env, **{checkpoint.SAVE_DELAY_ENV: "0.3"})
  proc = ru.popen(ru.tiny_args(workdir), env, log=log)
  _wait_for(lambda: _train_lines(workdir) >= 1, proc, log)
  seconds = _stop_and_time([proc])
  print(f"SIGTERM to exit: {seconds:.2f} s")
  assert proc.returncode == errors.EXIT_PREEMPTED, _read(log)[-3000:]
  assert seconds < GRACE_S
  step = _step_of(_logged_line(log), workdir, sig="SIGTERM")
  assert 1 <= step < ru.TOTAL_STEPS
  _saved_then_resumed_exactly(workdir, step, cli_env, reference_run)


@pytest.mark.slow
def test_sigterm_twice_inside_a_checkpoint_write(reference_run, cli_env, tmp_path):
  """Both signals land while a save's temporary directory exists (saves held open for
  2 s): the save completes, the run stops at that step, nothing is cut short."""
  workdir, log = str(tmp_path / "run"), str(tmp_path / "run.log")
  env = dict(cli_env, **{checkpoint.SAVE_DELAY_ENV: "2"})
  proc = ru.popen(ru.tiny_args(workdir), env, log=log)
  _wait_for(lambda: ru.temporary_steps(workdir), proc, log)
  target = ru.temporary_steps(workdir)[0]
  start = time.time()
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGINT)
  inside = target in ru.temporary_steps(workdir) and target not in ru.complete_steps(workdir)
  proc.wait(timeout=GRACE_S + 30)
  seconds = time.time() - start
  print(f"SIGTERM inside save of step {target} to exit: {seconds:.2f} s")
  assert inside  # the signals came during the write (2 s long)
  assert proc.returncode == errors.EXIT_PREEMPTED, _read(log)[-3000:]
  assert seconds < GRACE_S
  # Python runs the handlers of signals pending together in signal-number order, so
  # the line may name SIGINT (2) though SIGTERM (15) was sent first.
  _step_of(_logged_line(log), workdir, step=target)
  _saved_then_resumed_exactly(workdir, target, cli_env, reference_run)


def _saved_then_resumed_exactly(workdir, step, env, reference_run):
  """The stopped run's newest checkpoint is `step`, complete; the rerun resumes there
  and ends bit-identical to the uninterrupted reference run."""
  assert ru.complete_steps(workdir)[-1] == step and not ru.temporary_steps(workdir)
  proc = ru.cli(ru.tiny_args(workdir), env)
  ru.require_success(proc, "the rerun")
  assert f"(step {step})" in proc.stdout
  ru.assert_same_run(workdir, reference_run)


@pytest.mark.slow
def test_two_processes_sigterm_both_save_the_same_step(cli_env, tmp_path):
  """As a VM preemption does, SIGTERM to both processes of a two-process run: JAX's
  preemption sync point has both stop at the same step, which is saved; both exit 75;
  the restarted pair ends bit-identical to an uninterrupted pair (run alongside)."""
  reference, victim = str(tmp_path / "reference"), str(tmp_path / "victim")
  ref_logs = [str(tmp_path / f"ref{i}.log") for i in range(2)]
  ref_procs = ru.start_pair(reference, cli_env, ref_logs)
  logs = [str(tmp_path / f"victim{i}.log") for i in range(2)]
  env = dict(cli_env, **{checkpoint.SAVE_DELAY_ENV: "0.5"})
  procs = ru.start_pair(victim, env, logs)
  _wait_for(lambda: _train_lines(victim) >= 1, procs[0], logs[0], timeout=300)
  seconds = _stop_and_time(procs)
  print(f"SIGTERM to both exits: {seconds:.2f} s")
  for proc, log in zip(procs, logs):
    assert proc.returncode == errors.EXIT_PREEMPTED, _read(log)[-3000:]
  assert seconds < GRACE_S
  steps = [_step_of(_logged_line(log), victim) for log in logs]
  assert steps[0] == steps[1] < ru.TOTAL_STEPS, steps
  assert ru.complete_steps(victim)[-1] == steps[0] and not ru.temporary_steps(victim)

  logs = [str(tmp_path / f"restart{i}.log") for i in range(2)]
  for proc, log in zip(ru.start_pair(victim, cli_env, logs), logs):
    proc.wait(timeout=400)
    assert proc.returncode == 0, _read(log)[-3000:]
  for proc, log in zip(ref_procs, ref_logs):
    proc.wait(timeout=400)
    assert proc.returncode == 0, _read(log)[-3000:]
  assert f"(step {steps[0]})" in _read(logs[0])
  ru.assert_same_run(victim, reference)


@pytest.mark.slow
def test_compare_with_workers_parent_sigterm(reference_run, cli_env, tmp_path):
  """`kill PID` of a comparison that trains in two worker processes: the parent passes
  SIGTERM on, each worker stops its sub-run at a step with its checkpoint saved (exit
  75), the parent exits 75; the rerun finishes both sub-runs as the tiny run ends."""
  workdir, log = str(tmp_path / "compare"), str(tmp_path / "compare.log")
  args = ["--config", TINY_COMPARE, "--workdir", workdir, "--config.workers=2"]
  env = dict(cli_env, **{checkpoint.SAVE_DELAY_ENV: "0.3"})
  proc = ru.popen(args, env, log=log)
  dirs = [compare.run_dir(workdir, arm, 0) for arm in ("a", "b")]
  _wait_for(lambda: all(_train_lines(d) >= 1 for d in dirs), proc, log, timeout=300)
  seconds = _stop_and_time([proc])
  print(f"SIGTERM to the parent to its exit: {seconds:.2f} s")
  text = _read(log)
  assert proc.returncode == errors.EXIT_PREEMPTED, text[-3000:]
  assert seconds < GRACE_S
  assert "Traceback" not in text, text[-3000:]
  for k, path in enumerate(dirs):
    prefix = f"jnorm compare: worker {k}: "
    lines = [l[len(prefix):] for l in text.splitlines() if l.startswith(prefix + "preempted")]
    assert len(lines) == 1, text[-3000:]
    step = _step_of("jnorm: " + lines[0], path, sig="SIGTERM")
    assert ru.complete_steps(path)[-1] == step < ru.TOTAL_STEPS
    assert not any(os.path.exists(os.path.join(path, f)) for f in ("results.json", "failed.json"))
  assert text.strip().splitlines()[-1].startswith("jnorm: preempted: jnorm-worker-0, "
                                                  "jnorm-worker-1 stopped"), text[-3000:]
  proc = ru.cli(args, cli_env)
  ru.require_success(proc, "the rerun")
  for path in dirs:
    ru.assert_same_run(path, reference_run)
