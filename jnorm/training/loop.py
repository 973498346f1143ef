"""The training job: `train_and_evaluate(config, workdir)` and `load_trained(workdir)`.

One run: load the data, build the network and optimiser, initialise (cut-init once) or
resume from the newest checkpoint in `<workdir>/checkpoints`, train with the sharded
step over all devices, evaluate with weighted kNN on backbone features, and write
`results.json`, `metrics.jsonl`, TensorBoard events and `config.json`. The config
fields are documented (and validated) in `jnorm.training.config`.

Invocation errors write nothing: the config, the batch layout, a live run holding the
workdir, the dataset, and whether the workdir's checkpoints were written by this config
(`check_resumable`) are all checked before the run takes its lock, its first file.

Resume is exact: the state holds params, BatchNorm statistics, optimiser state, the
BYOL target, the step and the RNG key, and batch s of the data stream is a pure function
of (seed, s); a resumed run repeats the evaluation at its checkpoint's step and takes
the final loss from the checkpoint, so a run killed at any step (also after its last
checkpoint, before results.json) and resumed ends bit-identical (on CPU) to an
uninterrupted one, results included (but for timings and `resumed_from_step`).

Non-finite values stop the run: every train metric of every step (loss, gradient and
parameter norms, embedding norms, ...) and every evaluation number is checked; the first
non-finite one raises `NonFiniteError` naming it and its step, before anything non-finite
is logged or checkpointed, so the newest checkpoint is the last good one.
"""

import contextlib
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


def _kept(last_saved) -> str:
  return (f"checkpoint of step {last_saved} kept" if last_saved is not None
          else "no checkpoint written")


def _nonfinite_error(names: list, step: int, where: str, last_saved) -> errors.NonFiniteError:
  shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
  return errors.NonFiniteError(
      f"non-finite {shown} {where} at step {step} ({_kept(last_saved)}); lower "
      "config.optim.learning_rate (or config.norm.gradscale_power) and start again in a "
      "fresh --workdir")


class _FiniteTracker:
  """Remembers, on the device, the first step at which each train metric was non-finite.

  `update` runs after every step without a host sync (one small jitted op on the
  replicated metrics); `check` fetches the record where the loop syncs anyway (log,
  checkpoint and eval steps), so no non-finite value of any step, logged or not, goes
  unnoticed, and none gets into a checkpoint: the check runs before every save.
  """

  def __init__(self, mesh, first_step: int):
    self._mesh = mesh
    self._next = first_step  # the step number of the next metrics (1-based, as logged)
    self._keys = None
    self._first_bad = self._count = None
    self._update = jax.jit(self._update_fn)

  @staticmethod
  def _update_fn(first_bad, count, metrics):
    bad = jnp.stack([~jnp.all(jnp.isfinite(metrics[k])) for k in sorted(metrics)])
    return jnp.where((first_bad < 0) & bad, count, first_bad), count + 1

  def update(self, device_metrics) -> None:
    if self._keys is None:
      self._keys = sorted(device_metrics)
      self._first_bad = ts.replicate(np.full([len(self._keys)], -1, np.int32), self._mesh)
      self._count = ts.replicate(np.int32(self._next), self._mesh)
    self._first_bad, self._count = self._update(self._first_bad, self._count, device_metrics)

  def check(self, last_saved) -> None:
    """Raises `NonFiniteError` naming the first non-finite metric(s) and their step."""
    if self._keys is None:
      return
    first_bad = np.asarray(self._first_bad.addressable_data(0))
    if (first_bad >= 0).any():
      step = int(first_bad[first_bad >= 0].min())
      names = [k for k, s in zip(self._keys, first_bad) if s == step]
      raise _nonfinite_error(names, step, "in training", last_saved)


def _check_finite_eval(record: dict, step: int, last_saved) -> None:
  bad = [k for k, v in record.items() if not np.all(np.isfinite(v))]
  if bad:
    raise _nonfinite_error(bad, step, "in the evaluation", last_saved)


def _maybe_init_distributed(config) -> None:
  dcfg = config.distributed
  # `jax.process_count()` would initialise the backend, after which initialize() fails.
  if dcfg.coordinator_address and not jax.distributed.is_initialized():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=dcfg.coordinator_address,
                               num_processes=dcfg.num_processes, process_id=dcfg.process_id)


# Fields a resumed run may change: they change how a run is logged, checkpointed or
# launched, not what it computes.
RESUMABLE_CHANGES = ("progress_bar", "log_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "distributed", "data.data_dir", "data.in_memory")


def _flatten(tree, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _config_differences(saved: dict, config) -> list:
  """'field: saved -> given' for every field (outside `RESUMABLE_CHANGES`) that differs
  between a run's saved config and `config` (fields only one of them has are skipped)."""
  given = _flatten(json.loads(json.dumps(io.to_json(config.to_dict()))))
  saved = _flatten(saved)
  diffs = []
  for key in sorted(set(given) & set(saved)):
    if any(key == f or key.startswith(f + ".") for f in RESUMABLE_CHANGES):
      continue
    if given[key] != saved[key]:
      diffs.append(f"{key}: {saved[key]!r} -> {given[key]!r}")
  return diffs


def _check_complete(config) -> None:
  """Raises `ConfigError` for a field the training job reads that the config lacks."""
  ref = train_config.defaults()
  fix = "start the config from jnorm.training.config.defaults() (as configs/default.py does)"
  for key in ref.keys():
    if key not in config:
      raise errors.ConfigError(f"config.{key} is missing; {fix}")
    if isinstance(ref[key], ml_collections.ConfigDict) and key != "data":
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise errors.ConfigError(
            f"config.{key}={config[key]!r} must be a ConfigDict of fields; {fix}")
      for sub in ref[key].keys():
        if sub not in config[key] and sub != "bn_axis_name":
          raise errors.ConfigError(f"config.{key}.{sub} is missing; {fix}")


def _check_layout(config) -> None:
  """The global batch must split evenly over the processes and the devices."""
  for count, what in ((jax.process_count(), "processes"), (jax.device_count(), "devices")):
    if config.batch_size % count:
      raise errors.ConfigError(
          f"config.batch_size={config.batch_size} is not divisible by the {count} {what}; "
          f"use a multiple of {count}")


def check_resumable(config, workdir: str, fresh_state) -> None:
  """Refuses (before the run writes anything) a workdir whose checkpoints another config
  wrote: its saved config differs in a field outside `RESUMABLE_CHANGES`, or its newest
  checkpoint holds a state of another structure. A workdir without checkpoints passes.

  Raises:
    ConfigError: the checkpoints belong to another config.
    CheckpointError: the newest checkpoint's metadata or config.json cannot be read.
  """
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    latest = checkpointer.latest_step()
    if latest is None:
      return
    fix = "rerun with the config that wrote it, or use a fresh --workdir"
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
      try:
        with open(path) as f:
          saved = json.load(f)["config"]
      except (OSError, ValueError, KeyError, TypeError) as exc:
        raise errors.CheckpointError(
            f"{path} is unreadable ({type(exc).__name__}); restore it, or use a fresh "
            "--workdir") from None
      diffs = _config_differences(saved, config)
      if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise errors.ConfigError(
            f"the checkpoints in {workdir} were written by another config "
            f"({'; '.join(diffs[:3])}{more}); {fix}")
    mismatch = ckpt_lib.structure_mismatch(checkpointer.read_meta(latest), fresh_state)
    if mismatch:
      raise errors.ConfigError(
          f"checkpoint {checkpointer.step_dir(latest)} holds the state of another config "
          f"({mismatch}); {fix}")
  finally:
    checkpointer.close()


def _restore_or_init(fresh, checkpointer, *, primary: bool):
  """(state host tree, its step, the metrics saved with it): newest checkpoint or `fresh`."""
  latest = checkpointer.latest_step()
  if latest is None:
    return fresh, 0, {}
  restored, meta = checkpointer.restore_with_meta(latest, fresh)
  if primary:
    print(f"jnorm: resuming from {checkpointer.step_dir(latest)} (step {latest})")
  return restored, latest, dict(meta.get("metrics") or {})


def _load_curve(workdir: str, start_step: int, steps_per_epoch: int) -> list:
  """The kNN records of evaluations before `start_step` (the resumed run repeats the one
  at `start_step`, which a kill may have cut short)."""
  path = os.path.join(workdir, "knn_curve.json")
  if not start_step or not os.path.exists(path):
    return []
  with open(path) as f:
    curve = json.load(f)
  return [r for r in curve if round(r["epoch"] * steps_per_epoch) < start_step]


def _logged_metrics(workdir: str, step: int) -> dict:
  """The train metrics logged at `step` (checkpoints written before they held metrics)."""
  records = [r for r in metrics_lib.read_metrics(workdir, kind="train") if r["step"] == step]
  if not records:
    return {}
  return {k: v for k, v in records[-1].items() if k not in ("step", "kind")}


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the configured SSL method and evaluates it; returns the headline results.

  Everything that can reject the invocation (config fields, batch layout, a live run
  holding the workdir, the dataset, a batch larger than the data, checkpoints of
  another config) is checked before the run writes its first file (the lock).
  """
  _check_complete(config)
  train_config.validate(config)
  _maybe_init_distributed(config)
  primary = is_primary()
  _check_layout(config)
  if primary:
    ckpt_lib.check_unlocked(workdir)
  ds = data.load_dataset(config.data)
  info = build.run_info(ds, config)
  mesh = ts.make_mesh()
  run = build.build_run(config, mesh=mesh, **info)
  fresh = jax.device_get(run.init_state())
  check_resumable(config, workdir, fresh)
  lock = ckpt_lib.acquire_lock(workdir) if primary else None
  try:
    return _run(config, workdir, ds=ds, run=run, mesh=mesh, fresh=fresh, info=info,
                primary=primary)
  finally:
    if lock:
      ckpt_lib.release_lock(lock)


def _run(config, workdir: str, *, ds, run, mesh, fresh, info, primary: bool) -> dict:
  start_time = time.time()
  with contextlib.ExitStack() as stack:  # closes the checkpointer and writer
    checkpointer = stack.enter_context(contextlib.closing(ckpt_lib.Checkpointer(
        workdir, max_to_keep=config.keep_checkpoints, primary=primary)))
    state_host, start_step, saved_metrics = _restore_or_init(fresh, checkpointer,
                                                             primary=primary)
    last_saved = start_step if start_step else None
    if primary:
      io.write_json_atomic(os.path.join(workdir, "config.json"),
                           train_config.to_saved(config, info))
    writer = stack.enter_context(contextlib.closing(
        metrics_lib.MetricsWriter(workdir, enabled=primary, resume_step=last_saved)))
    curve = _load_curve(workdir, start_step, run.steps_per_epoch)
    eval_epochs = _eval_epochs(run.num_epochs, config.eval)
    evaluator = make_evaluator(run.eval_net.apply)

    def evaluate_now(state_host, epoch):
      step = round(epoch * run.steps_per_epoch)
      record, train_f, test_f = _evaluate(evaluator, state_host, ds, config.eval, epoch=epoch)
      _check_finite_eval(record, step, last_saved)
      curve.append(record)
      writer.write(step, record, kind="eval")
      if primary:
        io.write_json_atomic(os.path.join(workdir, "knn_curve.json"), curve)
      return train_f, test_f

    epoch, rest = divmod(start_step, run.steps_per_epoch)
    if start_step < run.total_steps and rest == 0 and epoch in eval_epochs:
      evaluate_now(state_host, epoch)  # epoch 0, or the evaluation a resumed run repeats
    state = ts.replicate(state_host, mesh)
    batches = data.train_batches(ds, batch_size=config.batch_size, seed=config.seed,
                                 start_step=start_step)
    bar = tqdm.tqdm(total=run.total_steps, initial=start_step, disable=not (
        primary and config.progress_bar), unit="step", dynamic_ncols=True)
    tracker = _FiniteTracker(mesh, start_step + 1)
    train_start, metrics = time.time(), saved_metrics
    try:
      for step in range(start_step, run.total_steps):
        state, device_metrics = run.train_step(state, ts.shard_batch(next(batches), mesh))
        tracker.update(device_metrics)
        done = step + 1
        bar.update(1)
        epoch, rest = divmod(done, run.steps_per_epoch)
        needs_eval = rest == 0 and epoch in eval_epochs and done < run.total_steps
        needs_save = done % config.checkpoint_every_steps == 0 or done == run.total_steps
        needs_log = done % config.log_every_steps == 0 or done == run.total_steps
        if not (needs_log or needs_save or needs_eval):
          continue  # no host sync: the next step is dispatched while this one runs
        tracker.check(last_saved)  # every step so far, before anything is logged or saved
        metrics = {k: float(v) for k, v in ts.local_copy(device_metrics).items()}
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if needs_log:
          writer.write(done, metrics)
        if needs_save or needs_eval:
          state_host = ts.local_copy(state)
        if needs_save:
          checkpointer.save(done, state_host, metrics=metrics)
          last_saved = done
        if needs_eval:
          evaluate_now(state_host, epoch)
    except BaseException:
      bar.leave = False  # clear the bar, so that the error line stands alone
      bar.close()
      raise
    bar.close()
    train_seconds = time.time() - train_start
    if start_step < run.total_steps:
      state_host = ts.local_copy(state)
    elif not metrics:  # resumed at the last step from a checkpoint without metrics
      metrics = _logged_metrics(workdir, run.total_steps)
    train_f, test_f = evaluate_now(state_host, run.num_epochs)
    results = _results(config, run, ds, curve, metrics, start_step, train_seconds,
                       time.time() - start_time)
    if config.eval.linear_probe:
      results["linear_probe_accuracy"] = _linear_probe(train_f, test_f, ds, config.eval,
                                                       config.seed)
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
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)  # a live run may write there
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
