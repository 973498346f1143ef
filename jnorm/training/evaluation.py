"""Evaluation during and after training: kNN accuracy on backbone features, mean norms
in eval and train mode, and the linear probe, with BatchNorm statistics re-estimated on
the train split for the current weights (`config.eval.bn_stats`, docs/paper.md §6.1)."""

from typing import Callable, NamedTuple

import jax
import numpy as np

from jnorm import data
from jnorm import probes
from jnorm import norms


def split_batches(ds, split: str, batch_size: int):
  return data.eval_batches(ds, split=split, batch_size=batch_size, process_index=0,
                           process_count=1)


class Evaluator(NamedTuple):
  """The compiled functions of a run's evaluations (built once, reused every time)."""
  embed: Callable
  embed_train_mode: Callable
  moments: Callable


def make_evaluator(apply_fn: Callable) -> Evaluator:
  """`apply_fn`: the run's `eval_net.apply` (local BatchNorm)."""
  return Evaluator(embed=probes.make_embed_fn(apply_fn),
                   embed_train_mode=probes.make_embed_fn(apply_fn, train_mode_bn=True),
                   moments=probes.make_batch_moments_fn(apply_fn))


def eval_variables(evaluator: Evaluator, state_host, ds, ecfg) -> dict:
  """The variables an evaluation uses: the parameters with BatchNorm statistics
  re-estimated on the (un-augmented) train split for these weights
  (`ecfg.bn_stats='recompute'`, the default), or the running statistics ('running')."""
  variables = {"params": state_host.params, "batch_stats": state_host.batch_stats}
  if ecfg.bn_stats == "running" or not jax.tree.leaves(state_host.batch_stats):
    return variables
  stats = probes.reestimate_batch_stats(
      None, variables, split_batches(ds, "train", ecfg.batch_size), moments_fn=evaluator.moments)
  return {"params": state_host.params, "batch_stats": stats}


def evaluate_state(evaluator: Evaluator, state_host, ds, ecfg, *, epoch: float):
  """kNN accuracy (backbone features, train bank, test queries), mean norms of the test
  split in eval mode and in train mode (batch statistics) and the collapse monitor
  `norms.normalized_std` per head; returns (record, train, test)."""
  variables = eval_variables(evaluator, state_host, ds, ecfg)
  feats = {}
  for name, split, fn in (("train", "train", evaluator.embed), ("test", "test", evaluator.embed),
                          ("test_train_mode", "test", evaluator.embed_train_mode)):
    feats[name] = probes.extract_features(None, variables, split_batches(ds, split, ecfg.batch_size),
                                            embed_fn=fn)
  train, test = feats["train"], feats["test"]
  knn = probes.knn_accuracy(train["backbone"], train["label"], test["backbone"],
                              test["label"], num_classes=ds.num_classes,
                              k=ecfg.knn_k, temperature=ecfg.knn_temperature)
  record = {"epoch": epoch, "knn_accuracy": knn}
  for head in ("backbone", "projector", "predictor"):
    if head in test:
      record[f"{head}_norm_mean"] = float(np.linalg.norm(test[head], axis=-1).mean())
      record[f"{head}_norm_mean_train_mode"] = float(
          np.linalg.norm(feats["test_train_mode"][head], axis=-1).mean())
      record[f"{head}_normalized_std"] = norms.normalized_std(test[head])
  return record, train, test


def linear_probe(train, test, ds, ecfg, seed) -> float:
  return probes.linear_probe_accuracy(
      train["backbone"], train["label"], test["backbone"], test["label"],
      num_classes=ds.num_classes, epochs=ecfg.probe_epochs,
      learning_rate=ecfg.probe_learning_rate, batch_size=ecfg.probe_batch_size, seed=seed)


def eval_epochs(num_epochs: float, ecfg) -> set:
  """Whole epochs after which kNN runs: every `every_epochs` and powers of two (plus
  epoch 0 and the end of training, always)."""
  last, every = int(num_epochs), int(round(ecfg.every_epochs))
  epochs = {0}
  if every > 0:
    epochs |= set(range(every, last + 1, every))
  if ecfg.powers_of_two:
    epochs |= {2**i for i in range(last.bit_length()) if 2**i <= last}
  return epochs
