"""The training job: `train_and_evaluate(config, workdir)` and `load_trained(workdir)`.

One run: load the data, build the network and optimiser, initialise (cut-init once) or
resume from the newest checkpoint in `<workdir>/checkpoints`, train with the sharded
step over all devices, evaluate with weighted kNN on backbone features, and write
`results.json`, `metrics.jsonl`, TensorBoard events and `config.json`. The config
fields are documented (and validated) in `jnorm.training.config`.

Resume is exact: the state holds params, BatchNorm statistics, optimiser state, the
BYOL target, the step and the RNG key, and batch s of the data stream is a pure function
of (seed, s); a run killed at any step and resumed ends bit-identical (on CPU) to an
uninterrupted one.
"""

import json
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from jnorm import data
from jnorm import errors
from jnorm import evaluate
from jnorm import io
from jnorm.training import build
from jnorm.training import checkpoint as ckpt_lib
from jnorm.training import config as train_config
from jnorm.training import metrics as metrics_lib
from jnorm.training import step as ts

def _batches(ds, split: str, batch_size: int):
  return data.eval_batches(ds, split=split, batch_size=batch_size, process_index=0,
                           process_count=1)


class Evaluator(NamedTuple):
  """The compiled functions of a run's evaluations (built once, reused every time)."""
  embed: Callable
  embed_train_mode: Callable
  moments: Callable


def make_evaluator(apply_fn: Callable) -> Evaluator:
  """`apply_fn`: the run's `eval_net.apply` (local BatchNorm)."""
  return Evaluator(embed=evaluate.make_embed_fn(apply_fn),
                   embed_train_mode=evaluate.make_embed_fn(apply_fn, train_mode_bn=True),
                   moments=evaluate.make_batch_moments_fn(apply_fn))


def eval_variables(evaluator: Evaluator, state_host, ds, ecfg) -> dict:
  """The variables an evaluation uses: the parameters with BatchNorm statistics
  re-estimated on the (un-augmented) train split for these weights
  (`ecfg.bn_stats='recompute'`, the default), or the running statistics ('running')."""
  variables = {"params": state_host.params, "batch_stats": state_host.batch_stats}
  if ecfg.bn_stats == "running" or not jax.tree.leaves(state_host.batch_stats):
    return variables
  stats = evaluate.reestimate_batch_stats(
      None, variables, _batches(ds, "train", ecfg.batch_size), moments_fn=evaluator.moments)
  return {"params": state_host.params, "batch_stats": stats}


def _evaluate(evaluator: Evaluator, state_host, ds, ecfg, *, epoch: float):
  """kNN accuracy (backbone features, train bank, test queries), mean norms of the test
  split in eval mode and in train mode (batch statistics); returns (record, train, test)."""
  variables = eval_variables(evaluator, state_host, ds, ecfg)
  feats = {}
  for name, split, fn in (("train", "train", evaluator.embed), ("test", "test", evaluator.embed),
                          ("test_train_mode", "test", evaluator.embed_train_mode)):
    feats[name] = evaluate.extract_features(None, variables, _batches(ds, split, ecfg.batch_size),
                                            embed_fn=fn)
  train, test = feats["train"], feats["test"]
  knn = evaluate.knn_accuracy(train["backbone"], train["label"], test["backbone"],
                              test["label"], num_classes=ds.num_classes,
                              k=ecfg.knn_k, temperature=ecfg.knn_temperature)
  record = {"epoch": epoch, "knn_accuracy": knn}
  for head in ("backbone", "projector", "predictor"):
    if head in test:
      record[f"{head}_norm_mean"] = float(np.linalg.norm(test[head], axis=-1).mean())
      record[f"{head}_norm_mean_train_mode"] = float(
          np.linalg.norm(feats["test_train_mode"][head], axis=-1).mean())
  return record, train, test


def _linear_probe(train, test, ds, ecfg, seed) -> float:
  return evaluate.linear_probe_accuracy(
      train["backbone"], train["label"], test["backbone"], test["label"],
      num_classes=ds.num_classes, epochs=ecfg.probe_epochs,
      learning_rate=ecfg.probe_learning_rate, batch_size=ecfg.probe_batch_size, seed=seed)


def _eval_epochs(num_epochs: float, ecfg) -> set:
  """Whole epochs after which kNN runs: every `every_epochs` and powers of two (plus
  epoch 0 and the end of training, always)."""
  last, every = int(num_epochs), int(round(ecfg.every_epochs))
  epochs = {0}
  if every > 0:
    epochs |= set(range(every, last + 1, every))
  if ecfg.powers_of_two:
    epochs |= {2**i for i in range(last.bit_length()) if 2**i <= last}
  return epochs


def _check_finite(metrics: dict, step: int, last_saved) -> None:
  bad = [k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(metrics[k])]
  if bad:
    kept = f"checkpoint of step {last_saved} kept" if last_saved is not None else "no checkpoint"
    raise errors.NonFiniteError(
        f"non-finite {', '.join(bad)} detected at step {step} ({kept}); lower optim.learning_rate "
        "or the GradScale power, then rerun (it resumes from the kept checkpoint)")


def _maybe_init_distributed(config) -> None:
  dcfg = config.distributed
  if dcfg.coordinator_address and jax.process_count() == 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=dcfg.coordinator_address,
                               num_processes=dcfg.num_processes, process_id=dcfg.process_id)


def _restore_or_init(run, checkpointer, *, primary: bool):
  """The state to start from (host tree) and its step: newest checkpoint, or fresh init."""
  fresh = run.init_state()
  latest = checkpointer.latest_step()
  if latest is None:
    return fresh, 0, None
  restored = checkpointer.restore(latest, jax.device_get(fresh))
  if primary:
    print(f"jnorm: resuming from {checkpointer.step_dir(latest)} (step {latest})")
  return restored, latest, latest


def _load_curve(workdir: str, resume_step, steps_per_epoch: int) -> list:
  path = os.path.join(workdir, "knn_curve.json")
  if resume_step is None or not os.path.exists(path):
    return []
  with open(path) as f:
    curve = json.load(f)
  return [r for r in curve if r["epoch"] * steps_per_epoch <= resume_step]


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the configured SSL method and evaluates it; returns the headline results."""
  train_config.validate(config)
  _maybe_init_distributed(config)
  primary = jax.process_index() == 0
  lock = ckpt_lib.acquire_lock(workdir) if primary else None
  try:
    return _run(config, workdir, primary=primary)
  finally:
    if lock:
      ckpt_lib.release_lock(lock)


def _run(config, workdir: str, *, primary: bool) -> dict:
  start_time = time.time()
  ds = data.load_dataset(config.data)
  mesh = ts.make_mesh()
  run = build.build_run(config, mesh=mesh, **build.run_info(ds, config))
  if primary:
    io.write_json_atomic(os.path.join(workdir, "config.json"), train_config.to_saved(
        config, build.run_info(ds, config)))
  checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints,
                                       primary=primary)
  state_host, start_step, last_saved = _restore_or_init(run, checkpointer, primary=primary)
  writer = metrics_lib.MetricsWriter(workdir, enabled=primary, resume_step=last_saved)
  curve = _load_curve(workdir, last_saved, run.steps_per_epoch)
  eval_epochs = _eval_epochs(run.num_epochs, config.eval)
  evaluator = make_evaluator(run.eval_net.apply)

  def evaluate_now(state_host, epoch):
    record, train_f, test_f = _evaluate(evaluator, state_host, ds, config.eval, epoch=epoch)
    curve.append(record)
    writer.write(epoch * run.steps_per_epoch, record, kind="eval")
    if primary:
      io.write_json_atomic(os.path.join(workdir, "knn_curve.json"), curve)
    return train_f, test_f

  if start_step == 0:
    evaluate_now(state_host, 0)
  state = ts.replicate(state_host, mesh)
  batches = data.train_batches(ds, batch_size=config.batch_size, seed=config.seed,
                               start_step=start_step)
  bar = tqdm.tqdm(total=run.total_steps, initial=start_step, disable=not (
      primary and config.progress_bar), unit="step", dynamic_ncols=True)
  train_start, metrics = time.time(), {}
  for step in range(start_step, run.total_steps):
    state, device_metrics = run.train_step(state, ts.shard_batch(next(batches), mesh))
    done = step + 1
    bar.update(1)
    epoch, rest = divmod(done, run.steps_per_epoch)
    needs_eval = rest == 0 and epoch in eval_epochs and done < run.total_steps
    needs_save = done % config.checkpoint_every_steps == 0 or done == run.total_steps
    needs_log = done % config.log_every_steps == 0 or done == run.total_steps
    if not (needs_log or needs_save or needs_eval):
      continue  # no host sync: the next step is dispatched while this one runs
    # A non-finite step leaves non-finite parameters behind (param_norm stays NaN/inf),
    # so checking whenever metrics are fetched, and always before a save, is enough to
    # never write a bad checkpoint.
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    _check_finite(metrics, step, last_saved)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
    if needs_log:
      writer.write(done, metrics)
    if needs_save or needs_eval:
      state_host = ts.local_copy(state)
    if needs_save:
      checkpointer.save(done, state_host)
      last_saved = done
    if needs_eval:
      evaluate_now(state_host, epoch)
  bar.close()
  train_seconds = time.time() - train_start
  if start_step < run.total_steps or not curve or curve[-1]["epoch"] != run.num_epochs:
    state_host = ts.local_copy(state)
    train_f, test_f = evaluate_now(state_host, run.num_epochs)
  else:
    train_f, test_f = _evaluate(evaluator, state_host, ds, config.eval, epoch=run.num_epochs)[1:]
  results = _results(config, run, ds, curve, metrics, start_step, train_seconds,
                     time.time() - start_time)
  if config.eval.linear_probe:
    results["linear_probe_accuracy"] = _linear_probe(train_f, test_f, ds, config.eval,
                                                     config.seed)
  writer.close()
  checkpointer.close()
  if primary:
    io.save_results(workdir, results)
  return results


def _results(config, run, ds, curve, metrics, start_step, train_seconds, wall) -> dict:
  steps_run = run.total_steps - start_step
  final = curve[-1]
  return {
      "knn_accuracy": final["knn_accuracy"],
      "knn_accuracy_at_init": curve[0]["knn_accuracy"] if curve[0]["epoch"] == 0 else None,
      "embedding_norm_mean": final["projector_norm_mean"],
      "backbone_norm_mean": final["backbone_norm_mean"],
      "final_loss": metrics.get("loss"),
      "steps": run.total_steps,
      "epochs": run.num_epochs,
      "steps_per_epoch": run.steps_per_epoch,
      "resumed_from_step": start_step,
      "train_seconds_per_step": train_seconds / steps_run if steps_run else None,
      "wall_seconds": wall,
      "method": config.method,
      "num_devices": jax.device_count(),
      "knn_curve": curve,
      "dataset": ds.info,
  }


def load_trained(workdir: str):
  """The config of a finished (or checkpointed) run and an eval-mode embedding function.

  Returns:
    (config, embed_fn) where embed_fn(inputs: numpy [B, ...]) -> dict of numpy arrays
    {'backbone': [B, F], 'projector': [B, P](, 'predictor': [B, P])}, computed with
    the newest checkpoint's parameters and the BatchNorm statistics the run's
    evaluations use (`config.eval.bn_stats`: re-estimated on the train split, or the
    running statistics).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise errors.CheckpointError(f"{workdir} holds no config.json; train there first")
  with open(path) as f:
    config, run_info = train_config.from_saved(json.load(f))
  checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is None:
    raise errors.CheckpointError(f"{workdir}/checkpoints holds no checkpoint; train first")
  run = build.build_run(config, mesh=None, **run_info)
  state = checkpointer.restore(latest, jax.device_get(run.init_state()))
  checkpointer.close()
  evaluator = make_evaluator(run.eval_net.apply)
  variables = eval_variables(evaluator, state, data.load_dataset(config.data), config.eval)
  embed = evaluator.embed

  def embed_fn(inputs) -> dict:
    return {k: np.asarray(v) for k, v in embed(variables, jnp.asarray(inputs)).items()}
  return config, embed_fn
