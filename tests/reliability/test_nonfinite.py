"""Non-finite values stop a run: one line naming the metric and the step, exit 1, the
last good checkpoint kept, and no JSON file holding an inf turned into a number."""

import json
import math
import os

import jax
import numpy as np
import pytest

import reliability_util as ru
from jnorm import errors
from jnorm import json_files
from jnorm.training import evaluation
from jnorm.training import guards
from jnorm.training import metrics as metrics_lib
from jnorm.training import step as ts

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _json_files(workdir):
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if name.endswith((".json", ".jsonl")) or name == "metadata":
        yield path


def _numbers(obj):
  if isinstance(obj, dict):
    for v in obj.values():
      yield from _numbers(v)
  elif isinstance(obj, list):
    for v in obj:
      yield from _numbers(v)
  elif isinstance(obj, float):
    yield obj


def assert_no_inf_as_number(workdir):
  """Every JSON file parses without NaN / Infinity and holds no float32-max stand-in."""
  checked = 0
  for path in _json_files(workdir):
    with open(path) as f:
      text = f.read()
    docs = text.splitlines() if path.endswith(".jsonl") else [text]
    for doc in docs:
      value = json.loads(doc, parse_constant=lambda c: pytest.fail(f"{path} holds {c}"))
      assert all(math.isfinite(x) and abs(x) < FLOAT32_MAX for x in _numbers(value)), path
    checked += 1
  assert checked, f"no JSON under {workdir}"


def test_tracker_names_the_first_non_finite_metric_and_its_step():
  mesh = ts.make_mesh(jax.devices()[:1])
  tracker = guards.FiniteTracker(mesh, first_step=5)
  finite = {"loss": 1.0, "grad_norm": 2.0, "norm_projector_v1_max": 3.0}
  for step, overrides in ((5, {}), (6, {"norm_projector_v1_max": np.inf}),
                          (7, {"loss": np.nan})):
    metrics = {k: np.float32(overrides.get(k, v)) for k, v in finite.items()}
    tracker.update(ts.replicate(metrics, mesh))
    if step == 5:
      tracker.check(last_saved=5)  # all finite so far: passes
  with pytest.raises(errors.NonFiniteError) as info:
    tracker.check(last_saved=5)
  message = str(info.value)
  assert "norm_projector_v1_max" in message and "at step 6" in message
  assert "loss" not in message.split(" at step")[0]  # loss turned NaN later, at step 7
  assert "checkpoint of step 5 kept" in message and "\n" not in message


def test_non_finite_evaluation_numbers_are_refused():
  with pytest.raises(errors.NonFiniteError, match="knn_accuracy in the evaluation at step 4"):
    guards.check_finite_eval(
        {"epoch": 1, "knn_accuracy": float("nan"), "projector_norm_mean": 1.0}, 4, None)
  with pytest.raises(errors.NonFiniteError, match="projector_norm_mean_train_mode"):
    guards.check_finite_eval(
        {"epoch": 1, "knn_accuracy": 0.5, "projector_norm_mean_train_mode": float("inf")},
        4, 4)


def test_json_writers_store_non_finite_numbers_as_null(tmp_path):
  json_files.write_json_atomic(str(tmp_path / "a.json"), {
      "inf": float("inf"), "f32": np.float32(-np.inf), "arr": np.array([1.0, np.nan])})
  assert ru.load_json_strict(str(tmp_path / "a.json")) == {
      "inf": None, "f32": None, "arr": [1.0, None]}
  writer = metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False)
  writer.write(1, {"loss": np.float32(np.inf), "lr": 0.1})
  assert metrics_lib.read_metrics(str(tmp_path)) == [
      {"step": 1, "kind": "train", "loss": None, "lr": 0.1}]


def test_overflow_keeps_the_last_good_checkpoint(tmp_path, capsys):
  """lr 1e12, as in the issue (whose command, on SmallResNet, now fails the same way):
  the embedding norms overflow at step 3."""
  workdir = str(tmp_path / "w")
  code, _, err = ru.in_process(ru.tiny_args(workdir, "--config.optim.learning_rate=1e12"),
                               capsys)
  line = ru.assert_one_line_error(code, err, 1, "non-finite", "at step 3",
                                  "checkpoint of step 2 kept")
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert ru.complete_steps(workdir) == [1, 2], line
  _, leaves = ru.final_leaves(workdir)
  assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f")
  assert max(r["step"] for r in ru.metrics_lines(workdir)) == 2  # step 3 is not logged
  assert_no_inf_as_number(workdir)


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_non_finite_evaluation_stops_the_run(background, tmp_path, monkeypatch, capsys):
  """kNN of the mid-run evaluation (epoch 1 = step 4) comes out NaN; in the background
  it is found before the next checkpoint, so step 4's is still the newest."""
  evaluate = evaluation.evaluate_state

  def nan_at_epoch_1(*args, epoch, **kwargs):
    record, train, test = evaluate(*args, epoch=epoch, **kwargs)
    if epoch == 1:
      record = dict(record, knn_accuracy=float("nan"))
    return record, train, test

  monkeypatch.setattr(evaluation, "evaluate_state", nan_at_epoch_1)
  workdir = str(tmp_path / "w")
  code, _, err = ru.in_process(
      ru.tiny_args(workdir, f"--config.eval.background={background}"), capsys)
  ru.assert_one_line_error(code, err, 1, "non-finite knn_accuracy in the evaluation at step 4",
                           "checkpoint of step 4 kept")
  assert ru.complete_steps(workdir)[-1] == 4
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert [r["epoch"] for r in ru.load_json_strict(os.path.join(workdir, "knn_curve.json"))] == [0]
  assert_no_inf_as_number(workdir)
