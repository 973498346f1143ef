"""benchmarks/train_step.py --quick times the SmallResNet step under jnorm.cpu.enable()
with XLA's convolutions and with jnorm's CPU kernels, and reports each one's spread, cores and page faults, and its
ratio to the matmul bound measured in the same run."""

import json
import os
import subprocess
import sys

import pytest

from jnorm.cpu import kernels as cpu_kernels

pytestmark = pytest.mark.slow  # the full suite only (README)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "train_step.py")


def test_quick_small_run_reports_both_convolutions_their_spread_and_bound(tmp_path):
  proc = subprocess.run(
      [sys.executable, SCRIPT, "--quick", "--arch", "small", "--image", "16",
       "--impls", "xla,kernels", "--no-torch"],
      capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert (result["arch"], result["batch"], result["image"]) == ("small", 16, 16)
  assert result["kernel_vector_lanes"] == cpu_kernels.vector_lanes()
  assert "torch" not in result
  assert result["cpu_tuning"] == "on"
  assert "xla_cpu_experimental_ynn_fusion_type=reduce" in result["xla_flags"]
  for impl in ("xla", "kernels"):
    entry = result[f"jnorm_{impl}"]
    assert entry["n"] == 2  # --quick: 1 round x 2 timed steps
    assert 0 < entry["min_step_s"] <= entry["median_step_s"] <= entry["max_step_s"]
    assert entry["cpu_per_wall"] > 0
    assert 0 <= entry["steps_with_page_faults"] <= entry["n"]
    assert any(line.startswith(f"jnorm {impl}") and "cores" in line
               for line in lines[:-1])
  # The same function and the same batches: the two convolutions agree after four
  # SGD steps to float32 rounding.
  losses = [result[f"jnorm_{impl}"]["last_loss"] for impl in ("xla", "kernels")]
  assert abs(losses[0] - losses[1]) < 1e-3, losses

  # The matmul bound: the step's FLOPs at the matmul rate measured in the same run.
  matmul, entry = result["matmul"], result["jnorm_kernels"]
  # The step at batch 16, counted by hand with the padding taps: 18.6 GFLOP at batch 128
  # (forward, input and kernel gradients of both views), so 2.33 at 16. XLA's count
  # leaves out the multiply-adds on padding (at 16, 8 and 4 px, 8-31% of a 3x3 layer's).
  assert 0.8 * 2.33 < matmul["step_gflop"] < 2.33, matmul
  (rate,) = matmul["gflop_per_s"]  # one round
  assert rate > 0
  assert abs(matmul["median_bound_s"] - matmul["step_gflop"] / rate) < 1e-3
  # One round: the ratio is the round's median step over that round's bound.
  assert entry["ratio_to_bound"] == pytest.approx(
      entry["median_step_s"] / matmul["median_bound_s"], rel=0.02)
  assert entry["ratio_to_bound_range"] == [entry["ratio_to_bound"]] * 2
