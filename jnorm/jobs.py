"""The jobs that `python -m jnorm.main` can run, chosen by `config.job`.

Every job is a function `job(config, workdir) -> dict`: it runs, writes
`<workdir>/results.json` (via `jnorm.io.save_results`) and its PNG figures, and
returns the headline numbers that the driver prints. Modules are imported lazily so
that a simulation does not pay for importing the training stack.
"""

import importlib
import importlib.util
import os
from typing import Callable, Optional

import ml_collections

from jnorm import errors

# job name -> "module:function"
JOBS = {
    "sim_norm_convergence": "jnorm.simulations:norm_convergence_job",
    "sim_angle_convergence": "jnorm.simulations:angle_convergence_job",
    "sim_gradscale": "jnorm.simulations:gradscale_job",
    "sim_weight_decay": "jnorm.simulations:weight_decay_job",
    "sim_imbalance": "jnorm.simulations:imbalance_job",
    "train": "jnorm.train:train_and_evaluate",
    "analysis": "jnorm.analysis_job:analysis_job",
    "compare": "jnorm.compare:compare_job",
}

JobFn = Callable[[ml_collections.ConfigDict, str], dict]


def get_job(name: str) -> JobFn:
  """Returns the job function registered under `name`."""
  errors.check_choice("job", name, JOBS)
  module_name, fn_name = JOBS[name].split(":")
  return getattr(importlib.import_module(module_name), fn_name)


def run_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the job that `config.job` names in `workdir`; returns its results."""
  if "job" not in config:
    raise errors.ConfigError(
        "config has no field 'job'; set it to one of " + ", ".join(sorted(JOBS)))
  return get_job(config.job)(config, workdir)


def load_config_module(path: str):
  """Imports a config file by path (configs/ is not a package); configs build on each
  other with it, e.g. configs/byol.py starts from configs/simsiam.py."""
  if not os.path.exists(path):
    raise errors.ConfigError(f"config file {path} does not exist; check the path")
  name = "_jnorm_cfg_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (`get_config()` when arg is empty)."""
  module = load_config_module(path)
  return module.get_config(arg) if arg else module.get_config()
