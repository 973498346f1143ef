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

With `eval.background` the evaluations during training run in a thread beside the
steps (on a snapshot of the weights): the same numbers bit for bit, their lines in
metrics.jsonl written when they end (after later steps' lines), and each one waited for
before the next checkpoint, a stop, or the next evaluation.

Preemption (`jnorm.training.preemption`): SIGTERM or SIGINT during a run finishes the
step in progress, saves its checkpoint and raises `errors.Preempted` (exit code 75 from
`python -m jnorm.main`); the same command resumes bit-identically.

Non-finite values stop the run: every train metric of every step (loss, gradient and
parameter norms, embedding norms, ...) and every evaluation number is checked; the first
non-finite one raises `NonFiniteError` naming it and its step, before anything non-finite
is logged or checkpointed, so the newest checkpoint is the last good one.
"""

import contextlib
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from jnorm import cpu
from jnorm import data
from jnorm import errors
from jnorm import json_files
from jnorm.training import build
from jnorm.training import checkpoint as ckpt_lib
from jnorm.training import config as train_config
from jnorm.training import evaluation
from jnorm.training import guards
from jnorm.training import metrics as metrics_lib
from jnorm.training import preemption
from jnorm.training import step as ts

def _maybe_init_distributed(config) -> None:
  dcfg = config.distributed
  # `jax.process_count()` would initialise the backend, after which initialize() fails.
  if dcfg.coordinator_address and not jax.distributed.is_initialized():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=dcfg.coordinator_address,
                               num_processes=dcfg.num_processes, process_id=dcfg.process_id)


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
  train_config.validate(config)
  _maybe_init_distributed(config)
  primary = is_primary()
  guards.check_layout(config)
  if primary:
    ckpt_lib.check_unlocked(workdir)
  ds = data.load_dataset(config.data)
  info = build.run_info(ds, config)
  mesh = ts.make_mesh()
  run = build.build_run(config, mesh=mesh, **info)
  fresh = jax.device_get(run.init_state())
  guards.check_resumable(config, workdir, fresh)
  lock = ckpt_lib.acquire_lock(workdir) if primary else None
  try:
    with preemption.stop_on_signals():
      return _run(config, workdir, ds=ds, run=run, mesh=mesh, fresh=fresh, info=info,
                  primary=primary)
  finally:
    if lock:
      ckpt_lib.release_lock(lock)


@contextlib.contextmanager
def _closing(thing):
  """Closes `thing` on leaving; when an error is already on its way out, an error of the
  close (a full disk fails the TensorBoard flush too) does not replace it."""
  try:
    yield thing
  except BaseException:
    try:
      thing.close()
    except Exception:  # pylint: disable=broad-except  # the first error is the one to report
      pass
    raise
  thing.close()


def _progress_bar(run, start_step: int, *, enabled: bool) -> tqdm.tqdm:
  return tqdm.tqdm(total=run.total_steps, initial=start_step, disable=not enabled,
                   unit="step", dynamic_ncols=True)


def _open_run(stack, config, workdir: str, *, fresh, info, primary: bool) -> tuple:
  """(checkpointer, metrics writer, state host tree, its step, its saved metrics): the
  run restored (or `fresh`), its config.json written, both closed by `stack`."""
  checkpointer = stack.enter_context(_closing(ckpt_lib.Checkpointer(
      workdir, max_to_keep=config.keep_checkpoints, primary=primary)))
  state_host, start_step, saved_metrics = _restore_or_init(fresh, checkpointer,
                                                           primary=primary)
  if primary:
    json_files.write_json_atomic(os.path.join(workdir, "config.json"),
                                 train_config.to_saved(config, info))
  writer = stack.enter_context(_closing(metrics_lib.MetricsWriter(
      workdir, enabled=primary, resume_step=start_step if start_step else None)))
  return checkpointer, writer, state_host, start_step, saved_metrics


def _run(config, workdir: str, *, ds, run, mesh, fresh, info, primary: bool) -> dict:
  start_time = time.time()
  with contextlib.ExitStack() as stack:  # closes the checkpointer, writer, evaluations
    checkpointer, writer, state_host, start_step, saved_metrics = _open_run(
        stack, config, workdir, fresh=fresh, info=info, primary=primary)
    last_saved = start_step if start_step else None
    curve = _load_curve(workdir, start_step, run.steps_per_epoch)
    eval_epochs = evaluation.eval_epochs(run.num_epochs, config.eval)

    def log_eval(step, measured):  # on this thread: the writer is not shared
      record, train_f, test_f = measured
      guards.check_finite_eval(record, step, last_saved)
      curve.append(record)
      writer.write(step, record, kind="eval")
      if primary:
        json_files.write_json_atomic(os.path.join(workdir, "knn_curve.json"), curve)
      return train_f, test_f

    evals = stack.enter_context(evaluation.Evaluations(run, ds, config.eval, log=log_eval))
    epoch, rest = divmod(start_step, run.steps_per_epoch)
    if start_step < run.total_steps and rest == 0 and epoch in eval_epochs:
      evals.now(state_host, epoch)  # epoch 0, or the evaluation a resumed run repeats
    state = ts.replicate(state_host, mesh)
    batches = data.train_batches(ds, batch_size=config.batch_size, seed=config.seed,
                                 start_step=start_step)
    bar = _progress_bar(run, start_step, enabled=primary and config.progress_bar)
    tracker = guards.FiniteTracker(mesh, start_step + 1)
    stop = preemption.StopSync()
    train_start, metrics, first_step_seconds = time.time(), saved_metrics, None
    try:
      for step in range(start_step, run.total_steps):
        state, device_metrics = run.train_step(state, ts.shard_batch(next(batches), mesh))
        first_step_seconds = first_step_seconds or time.time() - train_start
        tracker.update(device_metrics)
        done = step + 1
        bar.update(1)
        epoch, rest = divmod(done, run.steps_per_epoch)
        needs_eval = rest == 0 and epoch in eval_epochs and done < run.total_steps
        needs_save = done % config.checkpoint_every_steps == 0 or done == run.total_steps
        needs_log = done % config.log_every_steps == 0 or done == run.total_steps
        needs_stop = stop.after_step(done)
        evals.collect(wait=needs_save or needs_eval or needs_stop)  # before a save or a stop
        if not (needs_log or needs_save or needs_eval or needs_stop):
          continue  # no host sync: the next step is dispatched while this one runs
        tracker.check(last_saved)  # every step so far, before anything is logged or saved
        metrics = {k: float(v) for k, v in ts.local_copy(device_metrics).items()}
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if needs_log:
          writer.write(done, metrics)
        if needs_save or needs_eval or needs_stop:
          state_host = ts.local_copy(state)
        if needs_save or needs_stop:
          checkpointer.save(done, state_host, metrics=metrics)
          last_saved = done
        needs_stop = needs_stop or stop.now()  # e.g. a signal during this step's save
        if needs_eval and not needs_stop and not evals.start(state_host, epoch):
          needs_stop = stop.now()  # a signal during the (inline) evaluation
        if needs_stop:  # the resumed run repeats this step's evaluation, if it has one
          if last_saved != done:
            checkpointer.save(done, ts.local_copy(state), metrics=metrics)
            last_saved = done
          raise preemption.preempted_error(done, workdir, stop)
    except BaseException:
      bar.leave = False  # clear the bar, so that the error line stands alone
      bar.close()
      raise
    bar.close()
    evals.collect(wait=True)
    if stop.now():  # before the final evaluation: its checkpoint is saved
      raise preemption.preempted_error(run.total_steps, workdir, stop)
    train_seconds = time.time() - train_start
    if start_step < run.total_steps:
      state_host = ts.local_copy(state)
    elif not metrics:  # resumed at the last step from a checkpoint without metrics
      metrics = _logged_metrics(workdir, run.total_steps)
    train_f, test_f = evals.now(state_host, run.num_epochs)
    timings = (train_seconds, time.time() - start_time, first_step_seconds)
    return _finish(config, workdir, run, ds, curve, metrics, start_step, timings,
                   features=(train_f, test_f), primary=primary)


def _finish(config, workdir, run, ds, curve, metrics, start_step, timings, *, features,
            primary: bool) -> dict:
  """The run's results (with the linear probe, if asked), written by the primary."""
  results = _results(config, run, ds, curve, metrics, start_step, *timings)
  if config.eval.linear_probe:
    results["linear_probe_accuracy"] = evaluation.linear_probe(*features, ds, config.eval,
                                                               config.seed)
  if primary:
    json_files.save_results(workdir, results)
  return results


def _results(config, run, ds, curve, metrics, start_step, train_seconds, wall,
             first_step_seconds) -> dict:
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
      # Until the first step call returned: tracing and compiling (or loading from
      # the compilation cache) this run's step, a once-per-run cost inside
      # train_seconds_per_step. None when no step ran.
      "first_step_seconds": first_step_seconds,
      "wall_seconds": wall,
      "method": config.method,
      "num_devices": jax.device_count(),
      # XLA:CPU's float32 results depend on its thread pool's size (jnorm.cpu).
      "xla_cpu_threads": cpu.thread_pool_size(),
      # What jnorm.cpu.enable() put in place (None: stock XLA and Flax). Tuned and
      # stock runs agree to float32 rounding, not bit for bit.
      "cpu_tuning": _tuning_record(),
      "knn_curve": curve,
      "dataset": ds.info,
  }


def _tuning_record() -> dict | None:
  tuning = cpu.enabled()
  return None if tuning is None or tuning.backend != "cpu" else dataclasses.asdict(tuning)


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
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  variables = evaluation.eval_variables(evaluator, state, data.load_dataset(config.data), config.eval)
  embed = evaluator.embed

  def embed_fn(inputs) -> dict:
    return {k: np.asarray(v) for k, v in embed(variables, jnp.asarray(inputs)).items()}
  return config, embed_fn
