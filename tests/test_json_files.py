"""jnorm.json_files: JSON conversion (non-finite floats as null) and atomic writes."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jnorm import json_files


def _read(path):
  with open(path) as f:
    return f.read()

def test_to_json_converts_arrays_and_writes_non_finite_as_none():
  obj = {"a": np.float32(1.5), "b": np.arange(3), "c": jnp.asarray([0.5, jnp.inf]),
         "d": (math.nan, -math.inf, 2.0), 3: {"e": np.float64(np.nan)}, "f": "text"}
  assert json_files.to_json(obj) == {"a": 1.5, "b": [0, 1, 2], "c": [0.5, None],
                             "d": [None, None, 2.0], "3": {"e": None}, "f": "text"}


def test_write_json_atomic_writes_null_never_a_large_number(tmp_path):
  path = str(tmp_path / "sub" / "out.json")
  json_files.write_json_atomic(path, {"loss": math.inf, "acc": [0.5, math.nan]})
  text = _read(path)
  assert "null" in text and "1e+308" not in text and "Infinity" not in text
  assert json.loads(text) == {"loss": None, "acc": [0.5, None]}
  assert os.listdir(tmp_path / "sub") == ["out.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "out.json")
  json_files.write_json_atomic(path, {"v": 1})
  with pytest.raises(TypeError):
    json_files.write_json_atomic(path, {"v": object()})  # not serialisable
  assert json.loads(_read(path)) == {"v": 1}
  assert os.listdir(tmp_path) == ["out.json"]


def test_save_and_load_results(tmp_path):
  assert json_files.save_results(str(tmp_path), {"knn_accuracy": 0.5}) == str(tmp_path / "results.json")
  assert json_files.load_results(str(tmp_path)) == {"knn_accuracy": 0.5}
