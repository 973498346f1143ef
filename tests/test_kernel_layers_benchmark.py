"""benchmarks/kernel_layers.py times jnorm's kernel gradient and XLA's on a layer and
reports the same gradient from both."""

import json
import os
import subprocess
import sys

from jnorm.cpu import kernels as cpu_kernels

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "kernel_layers.py")


def test_two_layers_print_times_ratio_and_agreement(tmp_path):
  proc = subprocess.run([sys.executable, SCRIPT, "--batch", "4", "--reps", "3",
                         "--layers", "1,6"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert (result["batch"], result["reps"]) == (4, 3)
  assert result["kernel_vector_lanes"] == cpu_kernels.vector_lanes()
  layers = result["layers"]
  assert [(r["layer"]["size"], r["layer"]["stride"], r["layer"]["cout"]) for r in layers] == [
      (16, 2, 64), (4, 1, 128)]
  for r, line in zip(layers, lines[:-1]):
    assert r["xla_ms"] > 0 and r["jnorm_ms"] > 0
    assert abs(r["ratio"] - r["jnorm_ms"] / r["xla_ms"]) < 1e-9
    assert r["rel_diff"] < 1e-5  # the same gradient, to float32 rounding
    assert "jnorm/XLA" in line


def test_bad_arguments_are_refused():
  proc = subprocess.run([sys.executable, SCRIPT, "--reps", "0"], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2 and "--reps" in proc.stderr and "Traceback" not in proc.stderr
