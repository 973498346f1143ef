"""The jobs that `python -m jnorm.main` runs, chosen by `config.job`.

Every job is a function `job(config, workdir) -> dict`: it runs, writes
`<workdir>/results.json` (via `jnorm.json_files.save_results`) and its PNG figures, and returns
the headline numbers that the driver prints.

  train                  jnorm.jobs.train        one training run
  analysis               jnorm.jobs.analysis     norms as confidence and novelty
  compare                jnorm.jobs.compare      arms x paired seeds, with intervals
  geometry               jnorm.jobs.geometry     where trained runs' norms come from
  sim_*                  jnorm.jobs.simulations  the paper's toy simulations
"""

import importlib.util
import os
import sys
from typing import Callable, Optional

import ml_collections

from jnorm import errors
from jnorm.jobs import analysis
from jnorm.jobs import compare
from jnorm.jobs import geometry
from jnorm.jobs import simulations
from jnorm.jobs import train

JobFn = Callable[[ml_collections.ConfigDict, str], dict]

JOBS = {
    "train": train.train_job,
    "analysis": analysis.analysis_job,
    "compare": compare.compare_job,
    "geometry": geometry.geometry_job,
    "sim_norm_convergence": simulations.norm_convergence_job,
    "sim_angle_convergence": simulations.angle_convergence_job,
    "sim_gradscale": simulations.gradscale_job,
    "sim_weight_decay": simulations.weight_decay_job,
    "sim_imbalance": simulations.imbalance_job,
}


def get_job(name: str) -> JobFn:
  """The job function registered under `name`."""
  errors.check_choice("job", name, JOBS)
  return JOBS[name]


def run_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the job that `config.job` names in `workdir`; returns its results."""
  if "job" not in config:
    raise errors.ConfigError(
        "config has no field 'job'; set it to one of " + ", ".join(sorted(JOBS)))
  return get_job(config.job)(config, workdir)


def load_config_file(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path`, as `--config path:arg` loads it.

  The file's directory is put on `sys.path` first, so configs can import their shared
  bases (`import common` for configs/common.py).
  """
  if not os.path.exists(path):
    raise errors.ConfigError(f"config file {path} does not exist; check the path")
  directory = os.path.dirname(os.path.abspath(path))
  if directory not in sys.path:
    sys.path.insert(0, directory)
  name = "_jnorm_cfg_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
