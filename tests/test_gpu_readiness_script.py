"""benchmarks/gpu_readiness.py --tiny runs on CPU and prints its JSON lines (~40 s).

The Fashion-MNIST part runs whenever the idx files are there (Debian's package, or
$JNORM_FASHION_MNIST_DIR); without them it is skipped with `--skip-fmnist` (and the test
fails under JNORM_REQUIRE_DATA=1, as in CI).
"""

import json
import os
import subprocess
import sys

import pytest

from data_files import REQUIRE_DATA, missing_data_reason
from jnorm.data import fashion_mnist as fm

pytestmark = pytest.mark.slow  # the full suite only (README)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "gpu_readiness.py")

RESNET_KEYS = {"measurement", "backend", "device_kind", "num_devices", "dtype", "batch",
               "images_per_s", "s_per_step", "s_per_epoch", "steps_per_epoch",
               "timed_steps", "flops_per_step", "flops_per_step_per_device", "mfu",
               "peak_tflops", "peak_source"}
FMNIST_KEYS = {"measurement", "device_kind", "dtype", "batch", "wall_s",
               "train_s_per_epoch", "epoch_wall_s", "images_per_s", "knn_accuracy",
               "steps"}


def test_tiny_run_prints_measurements(tmp_path):
  reason = missing_data_reason()
  if reason is not None and REQUIRE_DATA:
    pytest.fail(f"JNORM_REQUIRE_DATA=1: {reason}", pytrace=False)
  with_fmnist = reason is None
  cmd = [sys.executable, SCRIPT, "--tiny", "--fmnist-dir", fm.default_dir()]
  if not with_fmnist:
    cmd.append("--skip-fmnist")
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  resnet = [r for r in records if r["measurement"] == "simclr_resnet_epoch"]
  assert [r["dtype"] for r in resnet] == ["float32", "bfloat16"]
  for r in resnet:
    assert RESNET_KEYS <= set(r), RESNET_KEYS - set(r)
    assert r["images_per_s"] > 0 and r["s_per_epoch"] > 0
    assert r["flops_per_step"] > 0 and r["flops_per_step_per_device"] > 0
    assert r["timed_steps"] == 2 and r["batch"] == 8
    assert r["mfu"] is None and r["backend"] == "cpu"  # no CPU peak without --peak-tflops
  fmnist = [r for r in records if r["measurement"] == "fmnist_base"]
  if with_fmnist:
    assert len(fmnist) == 1 and not fmnist[0].get("skipped"), fmnist
    r = fmnist[0]
    assert FMNIST_KEYS <= set(r), FMNIST_KEYS - set(r)
    assert r["images_per_s"] > 0 and r["wall_s"] > 0 and r["train_s_per_epoch"] > 0
    assert 0.0 <= r["knn_accuracy"] <= 1.0
    assert r["steps"] == 1 and len(r["epoch_wall_s"]) == 1
  else:
    assert fmnist == []
