"""Helpers of tests/training/test_paths.py (also imported by its 2-device subprocess).

Tiny vector-data configs (the MLP backbone on 'spherical' data, `vector_noise` views)
for every method, and small tree utilities.
"""

import json
import math
import os

import jax
import numpy as np

from jnorm.training import config as train_config

INPUT_DIM = 16


def vector_config(method: str = "simclr", *, batch_size: int = 16, bn: bool = True,
                  accumulation_steps: int = 1):
  """A complete, valid training config: `method` on 64 train / 64 test 16-D vectors,
  an MLP backbone (16 wide; none with bn=False), projector (16, 8) (BN with bn=True,
  for SimSiam/BYOL), predictor 8 for SimSiam/BYOL, SGD momentum 0.9, constant lr 0.1."""
  c = train_config.defaults()
  c.method = method
  c.loss.name = "infonce"
  c.data.name = "spherical"
  c.data.spherical_num_train = 64
  c.data.spherical_num_test = 64
  c.data.spherical_latent_dim = 4
  c.data.spherical_observed_dim = INPUT_DIM
  c.model.backbone = "mlp"
  c.model.mlp_features = (16,) if bn else ()
  c.model.projector_dims = (16, 8)
  c.model.projector_bn = bn and method != "simclr"
  c.model.predictor_hidden = 8 if method != "simclr" else 0
  c.augment = "vector_noise"
  c.batch_size = batch_size
  c.num_epochs = 2.0
  c.optim.learning_rate = 0.1
  c.optim.schedule = "constant"
  c.optim.warmup_epochs = 0.0
  c.optim.accumulation_steps = accumulation_steps
  c.eval.every_epochs = 1
  c.eval.powers_of_two = False
  c.eval.knn_k = 10
  c.eval.batch_size = 64
  c.checkpoint_every_steps = 1
  c.log_every_steps = 1
  c.progress_bar = False
  train_config.validate(c)
  return c


def leaves(tree) -> list:
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def flat(tree) -> np.ndarray:
  return np.concatenate([x.ravel() for x in leaves(tree)])


def max_abs_diff(a, b) -> float:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max((float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b))),
             default=0.0)


def assert_tree_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_tree_close(a, b, *, rtol: float, atol: float) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def numbers(obj):
  """Every int/float inside a JSON-like object (bools excluded)."""
  if isinstance(obj, bool):
    return
  if isinstance(obj, (int, float)):
    yield obj
  elif isinstance(obj, dict):
    for v in obj.values():
      yield from numbers(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from numbers(v)


def _no_constants(name):
  raise ValueError(f"JSON holds the non-standard constant {name}")


def load_json_strict(path: str):
  with open(path) as f:
    return json.load(f, parse_constant=_no_constants)


def metrics_lines(workdir: str) -> list:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line, parse_constant=_no_constants) for line in f]


def all_finite(obj) -> bool:
  return all(math.isfinite(v) for v in numbers(obj))
