"""Evaluation during and after training: kNN accuracy on backbone features, mean norms
in eval and train mode, and the linear probe, with BatchNorm statistics re-estimated on
the train split for the current weights (`config.eval.bn_stats`, docs/paper.md §6.1).

The re-estimation and the kNN bank may each use a class-stratified subset of the train
split (`eval.bn_images`, `eval.bank_images`; benchmarks/eval_protocol.py measures how
small they can be for the same kNN accuracy)."""

import concurrent.futures
import dataclasses
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


def stratified_subset(labels: np.ndarray, n: int, *, num_classes: int) -> np.ndarray:
  """Sorted indices of `n` examples, each class's share proportional to its count
  (largest remainders), the members of a class drawn in a fixed seeded order; all of
  them when `n` is 0 or at least len(labels)."""
  if n <= 0 or n >= len(labels):
    return np.arange(len(labels))
  counts = np.bincount(labels, minlength=num_classes)
  quota = n * counts / counts.sum()
  take = np.floor(quota).astype(int)
  take[np.argsort(take - quota, kind="stable")[:n - take.sum()]] += 1
  return data.select_per_class(labels, take, seed=0)


def train_subset(ds, n: int, idx: np.ndarray = None):
  """`ds` with its train split cut to `idx` (default `stratified_subset(..., n)`); `ds`
  itself when that is the whole split."""
  if idx is None:
    idx = stratified_subset(ds.train.labels, n, num_classes=ds.num_classes)
  if len(idx) == len(ds.train):
    return ds
  return dataclasses.replace(ds, train=data.SubsetSplit(ds.train, idx))


def eval_variables(evaluator: Evaluator, state_host, ds, ecfg) -> dict:
  """The variables an evaluation uses: the parameters with BatchNorm statistics
  re-estimated on the (un-augmented) train split for these weights
  (`ecfg.bn_stats='recompute'`, the default), or the running statistics ('running')."""
  variables = {"params": state_host.params, "batch_stats": state_host.batch_stats}
  if ecfg.bn_stats == "running" or not jax.tree.leaves(state_host.batch_stats):
    return variables
  stats = probes.reestimate_batch_stats(
      None, variables, split_batches(train_subset(ds, ecfg.bn_images), "train", ecfg.batch_size),
      moments_fn=evaluator.moments)
  return {"params": state_host.params, "batch_stats": stats}


def evaluate_state(evaluator: Evaluator, state_host, ds, ecfg, *, epoch: float,
                   final: bool = True):
  """kNN accuracy (backbone features, a bank of `ecfg.bank_images` train images, test
  queries), mean norms of the test split in eval mode and, at every evaluation or only
  the `final` one (`ecfg.train_mode_norms`), in train mode (batch statistics), and the
  collapse monitor `norms.normalized_std` per head; returns (record, train, test): the
  features of the bank (of the whole train split in a `final` evaluation with the linear
  probe on) and of the test split."""
  variables = eval_variables(evaluator, state_host, ds, ecfg)
  bank = stratified_subset(ds.train.labels, ecfg.bank_images, num_classes=ds.num_classes)
  whole = final and ecfg.linear_probe  # the probe trains on the whole train split
  passes = [("train", ds if whole else train_subset(ds, 0, bank), "train", evaluator.embed),
            ("test", ds, "test", evaluator.embed)]
  if final or ecfg.train_mode_norms == "every":
    passes.append(("test_train_mode", ds, "test", evaluator.embed_train_mode))
  feats = {name: probes.extract_features(None, variables,
                                         split_batches(source, split, ecfg.batch_size),
                                         embed_fn=fn)
           for name, source, split, fn in passes}
  train, test = feats["train"], feats["test"]
  rows = bank if whole else slice(None)
  knn = probes.knn_accuracy(train["backbone"][rows], train["label"][rows], test["backbone"],
                              test["label"], num_classes=ds.num_classes,
                              k=ecfg.knn_k, temperature=ecfg.knn_temperature)
  record = {"epoch": epoch, "knn_accuracy": knn}
  for head in ("backbone", "projector", "predictor"):
    if head in test:
      record[f"{head}_norm_mean"] = float(np.linalg.norm(test[head], axis=-1).mean())
      if "test_train_mode" in feats:
        record[f"{head}_norm_mean_train_mode"] = float(
            np.linalg.norm(feats["test_train_mode"][head], axis=-1).mean())
      record[f"{head}_normalized_std"] = norms.normalized_std(test[head])
  return record, train, test


class Evaluations:
  """The evaluations of one run (a context manager): each measured by `evaluate_state`
  inline or, with `ecfg.background`, in a thread beside the training steps (one at a
  time, on a copy of the weights), then passed to `log(step, (record, train, test))` on
  the caller's thread, which returns what `now` returns."""

  def __init__(self, run, ds, ecfg, *, log: Callable):
    """`run`: the run's `build.build_run` result (its eval network and step counts)."""
    self._evaluator = make_evaluator(run.eval_net.apply)
    self._ds, self._ecfg, self._log = ds, ecfg, log
    self._steps_per_epoch, self._total_steps = run.steps_per_epoch, run.total_steps
    self._pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jnorm-eval")
                  if ecfg.background else None)
    self._pending = None  # (step, future) of the evaluation in the background

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._pool is not None:
      self._pool.shutdown(wait=True)  # an evaluation under way ends; nothing is logged

  def _step(self, epoch: float) -> int:
    return round(epoch * self._steps_per_epoch)

  def _measure(self, state_host, epoch: float):
    return evaluate_state(self._evaluator, state_host, self._ds, self._ecfg, epoch=epoch,
                          final=self._step(epoch) == self._total_steps)

  def now(self, state_host, epoch: float):
    """Measures and logs the evaluation at `epoch` before returning `log`'s result."""
    return self._log(self._step(epoch), self._measure(state_host, epoch))

  def start(self, state_host, epoch: float) -> bool:
    """The evaluation at `epoch`: in the background (True) when configured, after the
    one under way is logged; else now (False)."""
    if self._pool is None:
      self.now(state_host, epoch)
      return False
    self.collect(wait=True)
    # A copy: the next step donates the device buffers that a host view may share.
    snapshot = jax.tree.map(np.copy, state_host)
    self._pending = (self._step(epoch), self._pool.submit(self._measure, snapshot, epoch))
    return True

  def collect(self, *, wait: bool) -> None:
    """Logs the evaluation in the background if it is done (or, with `wait`, once it is)."""
    if self._pending is not None and (wait or self._pending[1].done()):
      (step, future), self._pending = self._pending, None
      self._log(step, future.result())


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
