"""benchmarks/train_step.py --quick times the SmallResNet step with XLA's convolutions and
with jnorm's CPU kernels, and reports each one's spread, cores and page faults."""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "train_step.py")


def test_quick_small_run_reports_both_convolutions_and_their_spread(tmp_path):
  proc = subprocess.run(
      [sys.executable, SCRIPT, "--quick", "--arch", "small", "--image", "16",
       "--impls", "xla,ffi", "--no-torch"],
      capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert (result["arch"], result["batch"], result["image"]) == ("small", 16, 16)
  assert "torch" not in result
  for impl in ("xla", "ffi"):
    entry = result[f"jnorm_{impl}"]
    assert entry["n"] == 2  # --quick: 1 round x 2 timed steps
    assert 0 < entry["min_step_s"] <= entry["median_step_s"] <= entry["max_step_s"]
    assert entry["cpu_per_wall"] > 0
    assert 0 <= entry["steps_with_page_faults"] <= entry["n"]
    assert any(line.startswith(f"jnorm {impl}") and "cores" in line
               for line in lines[:-1])
  # The same function and the same batches: the two convolutions agree after four
  # SGD steps to float32 rounding.
  losses = [result[f"jnorm_{impl}"]["last_loss"] for impl in ("xla", "ffi")]
  assert abs(losses[0] - losses[1]) < 1e-3, losses
