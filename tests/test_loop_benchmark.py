"""benchmarks/loop.py --quick runs the step alone and the whole loop, and prints them."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the full suite only (README)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "loop.py")


def test_quick_run_prints_step_and_loop_rates(tmp_path):
  proc = subprocess.run([sys.executable, SCRIPT, "--quick"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert result["config"] == "digits" and result["batch"] == 64
  for name in ("step_only", "loop_no_eval", "loop_eval_inline", "loop_eval"):
    entry = result[name]
    assert entry["images_per_s"] > 0 and entry["seconds"] > 0
    assert any(line.startswith(name) for line in lines[:-1])  # printed figure
  assert result["step_only"]["ratio_to_step_only"] == 1.0
  for name in ("loop_no_eval", "loop_eval_inline", "loop_eval"):  # the first call timed
    entry = result[name]
    assert entry["first_call_s"] > 0
    assert entry["images_per_s_after_first_call"] > entry["images_per_s"]
  # The loop runs every step of 2 epochs; step-only times all but the first (compiling).
  steps = result["loop_no_eval"]["steps"]
  assert steps == result["loop_eval"]["steps"] == result["step_only"]["steps"] + 1
  assert result["knn_curves_identical"] is True  # evaluations in the background: same numbers
  assert any(line.startswith("kNN curves") and line.endswith("identical") for line in lines)
  assert steps == 2 * (1300 // 64)
  assert "xla_cpu_experimental_ynn_fusion_type=reduce" in result["xla_flags"]
