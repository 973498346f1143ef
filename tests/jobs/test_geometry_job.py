"""The geometry job (jnorm.jobs.geometry) on a smoke training run: every checkpoint and
step 0, the same numbers as computing them by hand, and one-line errors."""

import json
import os

import numpy as np
import pytest

from jnorm import data
from jnorm import errors
from jnorm import embedding_geometry
from jnorm import jobs
from jnorm.training import loop

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "default.py"), "smoke")
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.train_and_evaluate(config, workdir)
  return workdir


def _geometry_config(dirs):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "geometry.py"))
  config.train_workdirs = ",".join(dirs)
  return config


@pytest.mark.slow
def test_geometry_of_every_checkpoint_matches_the_final_embeddings(trained, tmp_path):
  jobs.run_job(_geometry_config([trained, trained]), str(tmp_path))
  with open(os.path.join(tmp_path, "results.json")) as f:
    res = json.load(f)
  steps = sorted(int(s) for s in os.listdir(os.path.join(trained, "checkpoints")))
  assert res["steps"] == [0] + steps
  assert os.path.exists(os.path.join(tmp_path, "geometry.png"))
  # The last checkpoint's projector numbers equal the decomposition of the embeddings
  # that load_trained's embedding function gives for the test split.
  config, embed_fn = loop.load_trained(trained)
  ds = data.load_dataset(config.data)
  z = embed_fn(ds.test.get(np.arange(ds.num_test)))["projector"]
  expect = embedding_geometry.norm_decomposition(z)
  last = res["per_run"][trained][str(steps[-1])]
  for key, value in expect.items():
    assert last[f"projector/{key}"] == pytest.approx(value, rel=1e-4), key
    cell = res["summary"][str(steps[-1])][f"projector/{key}"]
    assert cell["mean"] == pytest.approx(last[f"projector/{key}"]) and cell["n"] == 2
  assert res["per_run"][trained]["0"]["kernel/projector/dense1"] > 0
  change = res["changes"][f"{steps[-2] if len(steps) > 1 else 0}->{steps[-1]}"]
  before = res["per_run"][trained][str(steps[-2] if len(steps) > 1 else 0)]
  assert change["projector/mean_norm"]["mean"] == pytest.approx(
      last["projector/mean_norm"] - before["projector/mean_norm"])


@pytest.mark.slow  # shares the trained run with the test above
def test_bad_workdir_and_head_are_config_errors(trained, tmp_path):
  with pytest.raises(errors.ConfigError, match="no config.json"):
    jobs.run_job(_geometry_config([str(tmp_path / "nothing")]), str(tmp_path / "o1"))
  config = _geometry_config([trained])
  config.heads = ("predictor",)
  with pytest.raises(errors.ConfigError, match="not an output"):
    jobs.run_job(config, str(tmp_path / "o2"))
  config.train_workdirs = ""
  with pytest.raises(errors.ConfigError, match="empty"):
    jobs.run_job(config, str(tmp_path / "o3"))
