"""The simulation jobs (jnorm.jobs.simulations): results, figures, and the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jnorm import jobs
from jnorm.jobs import simulations

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_norm_convergence_job_writes_results_and_figure(tmp_workdir):
  config = _load_config("sim_norm_convergence", "smoke")
  out = simulations.norm_convergence_job(config, tmp_workdir)
  with open(os.path.join(tmp_workdir, "results.json")) as f:
    results = json.load(f)
  assert set(("norms", "steps", "a", "exponent")) <= set(results)
  assert results["steps"] == out["steps"] and abs(results["exponent"] - 2) < 0.05
  assert os.path.getsize(os.path.join(tmp_workdir, "norm_convergence.png")) > 1000


@pytest.mark.slow
def test_all_jobs_run_through_the_cli(tmp_path):
  """All five smoke configs through `jnorm.main.main` in one subprocess (one jax import)."""
  names = ("norm_convergence", "angle_convergence", "gradscale", "weight_decay", "imbalance")
  script = (
      "import sys\nfrom jnorm import main\n"
      f"for n in {names!r}:\n"
      "  rc = main.main(['jnorm', '--config', f'configs/sim_{n}.py:smoke',\n"
      f"                 '--workdir', '{tmp_path}/' + n])\n"
      "  assert rc == 0, n\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = {
      "norm_convergence": ("norms", "steps", "a", "exponent"),
      "angle_convergence": ("angles", "steps"),
      "gradscale": ("powers", "norms", "steps", "exponents"),
      "weight_decay": ("weight_decays", "equilibrium_norms", "heuristic_norms", "ratios"),
      "imbalance": ("final_mean_norm_per_class", "class_order_by_norm", "class_weights",
                    "mean_norm_per_class_per_epoch"),
  }
  for name, keys in expected.items():
    with open(tmp_path / name / "results.json") as f:
      results = json.load(f)
    assert set(keys) <= set(results), name
    assert any(p.endswith(".png") for p in os.listdir(tmp_path / name)), name
  imb = json.loads((tmp_path / "imbalance" / "results.json").read_text())
  assert sorted(imb["class_order_by_norm"]) == [0, 1, 2, 3]
  assert np.asarray(imb["mean_norm_per_class_per_epoch"]).shape == (4, 4)  # epochs 0..3


def _load_config(name, arg):
  return jobs.load_config_file(os.path.join(REPO, "configs", f"{name}.py"), arg)
