"""jnorm.training.metrics: the jsonl writer (nulls, resume truncation) and its one reader."""

import json
import math

from jnorm.training import metrics


def test_read_metrics_skips_a_cut_line_and_filters_by_kind(tmp_path):
  lines = [{"step": 1, "kind": "train", "loss": 3.0},
           {"step": 1, "kind": "eval", "knn_accuracy": 0.5},
           {"step": 2, "kind": "train", "loss": 2.5}]
  (tmp_path / "metrics.jsonl").write_text(
      "\n".join(json.dumps(r) for r in lines) + '\n{"step": 3, "lo')
  assert metrics.read_metrics(str(tmp_path)) == lines  # the line cut short is skipped
  assert metrics.read_metrics(str(tmp_path), kind="train") == [lines[0], lines[2]]
  assert metrics.read_metrics(str(tmp_path), kind="eval") == [lines[1]]
  assert metrics.read_metrics(str(tmp_path / "none")) == []


def test_writer_stores_non_finite_as_null_and_truncates_on_resume(tmp_path):
  workdir = str(tmp_path)
  writer = metrics.MetricsWriter(workdir, tensorboard=False)
  for step in (1, 2, 3):
    writer.write(step, {"loss": 1.0 / step, "bad": math.inf if step == 2 else math.nan})
  writer.write(2, {"knn_accuracy": 0.25}, kind="eval")
  writer.close()
  records = metrics.read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 2]
  assert all(r["bad"] is None for r in records[:3])
  assert records[3] == {"step": 2, "kind": "eval", "knn_accuracy": 0.25}
  # Resuming from the checkpoint of step 2 drops the train records of later steps and
  # the evaluation at step 2 (the resumed run repeats it).
  metrics.MetricsWriter(workdir, tensorboard=False, resume_step=2).close()
  assert [(r["step"], r["kind"]) for r in metrics.read_metrics(workdir)] == [
      (1, "train"), (2, "train")]
  # A fresh run (no checkpoint) starts a new file.
  metrics.MetricsWriter(workdir, tensorboard=False).close()
  assert metrics.read_metrics(workdir) == []
  # A disabled writer (not the primary process) writes nothing.
  off = metrics.MetricsWriter(workdir, tensorboard=False, enabled=False)
  off.write(1, {"loss": 1.0})
  assert metrics.read_metrics(workdir) == []
