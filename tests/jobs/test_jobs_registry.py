"""jnorm.jobs: the registry of jobs, `run_job` and `load_config_file`."""

import ml_collections
import pytest

from jnorm import errors
from jnorm import jobs
from jnorm.jobs import analysis
from jnorm.jobs import compare
from jnorm.jobs import simulations
from jnorm.jobs import train


def test_registry_maps_each_job_name_to_its_function():
  assert jobs.JOBS["train"] is train.train_job
  assert jobs.JOBS["analysis"] is analysis.analysis_job
  assert jobs.JOBS["compare"] is compare.compare_job
  assert jobs.JOBS["sim_weight_decay"] is simulations.weight_decay_job
  assert {n for n in jobs.JOBS if n.startswith("sim_")} == {
      "sim_norm_convergence", "sim_angle_convergence", "sim_gradscale", "sim_weight_decay",
      "sim_imbalance"}
  for name, fn in jobs.JOBS.items():
    assert jobs.get_job(name) is fn


def test_run_job_dispatches_on_config_job(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setitem(jobs.JOBS, "train", lambda c, w: calls.append((c.job, w)) or {"ok": 1})
  config = ml_collections.ConfigDict({"job": "train"})
  assert jobs.run_job(config, str(tmp_path)) == {"ok": 1}
  assert calls == [("train", str(tmp_path))]


def test_unknown_or_missing_job_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"config\.job='nojob' is not valid"):
    jobs.run_job(ml_collections.ConfigDict({"job": "nojob"}), str(tmp_path))
  with pytest.raises(errors.ConfigError, match="no field 'job'"):
    jobs.run_job(ml_collections.ConfigDict({"seed": 0}), str(tmp_path))


def test_load_config_file_passes_the_argument_and_names_a_missing_file(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text("import ml_collections\n\n"
                  "def get_config(arg=None):\n"
                  "  return ml_collections.ConfigDict({'job': 'train', 'arg': arg or ''})\n")
  assert jobs.load_config_file(str(path)).arg == ""
  assert jobs.load_config_file(str(path), "small").arg == "small"
  with pytest.raises(errors.ConfigError, match="missing.py"):
    jobs.load_config_file(str(tmp_path / "missing.py"))
