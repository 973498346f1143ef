"""The geometry job: where the embedding norms of trained runs come from, checkpoint by
checkpoint (jnorm.embedding_geometry).

Config (configs/geometry.py):
  train_workdirs: comma-separated training workdirs (e.g. the seeds of one comparison
    arm); each is read, never written.
  heads: the embeddings analysed ('projector', 'backbone', ...).

For each run, at initialisation (the run's seed, before any cut: its step 0) and at every
checkpoint, with the BatchNorm statistics the run's evaluations use: the test split's
`embedding_geometry.norm_decomposition` per head and the Frobenius norm of every projector kernel.
Then, per step present in every run, the mean and 95% t interval over the runs, and
each quantity's change between consecutive steps, paired over runs (interval, p, mde).
Writes results.json (`per_run`, `summary`, `changes`) and geometry.png.
"""

import json
import os

import jax
import ml_collections

from jnorm import data
from jnorm import errors
from jnorm import probes
from jnorm import embedding_geometry
from jnorm import json_files
from jnorm import stats
from jnorm.plots import analysis as analysis_plots
from jnorm.plots import figures
from jnorm.training import build
from jnorm.training import checkpoint as ckpt_lib
from jnorm.training import config as train_config
from jnorm.training import evaluation


def run_geometry(train_dir: str, heads) -> dict:
  """{step: {'<head>/<quantity>': value, 'kernel/<layer>': norm}} for one training run."""
  path = os.path.join(train_dir, "config.json")
  if not os.path.exists(path):
    raise errors.ConfigError(f"config.train_workdirs: {train_dir} holds no config.json; "
                             "give the workdir of a training run")
  with open(path) as f:
    config, run_info = train_config.from_saved(json.load(f))
  ds = data.load_dataset(config.data)
  run = build.build_run(config, mesh=None, **run_info)
  init = jax.device_get(run.init_state())
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  checkpointer = ckpt_lib.Checkpointer(train_dir, read_only=True)
  out = {}
  try:
    for step in [0] + [s for s in checkpointer.all_steps() if s > 0]:
      state = init if step == 0 else checkpointer.restore(step, init)
      variables = evaluation.eval_variables(evaluator, state, ds, config.eval)
      feats = probes.extract_features(
          None, variables, evaluation.split_batches(ds, "test", config.eval.batch_size),
          embed_fn=evaluator.embed)
      record = {}
      for head in heads:
        if head not in feats:
          raise errors.ConfigError(f"config.heads: {head!r} is not an output of {train_dir}'s "
                                   f"model; it has {sorted(k for k in feats if k != 'label')}")
        for key, value in embedding_geometry.norm_decomposition(feats[head]).items():
          record[f"{head}/{key}"] = value
      for layer, value in embedding_geometry.kernel_norms(state.params.get("projector", {})).items():
        record[f"kernel/projector/{layer}"] = value
      out[int(step)] = record
  finally:
    checkpointer.close()
  return out


def geometry_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Job "geometry": see the module docstring."""
  dirs = [d.strip() for d in str(config.train_workdirs).split(",") if d.strip()]
  if not dirs:
    raise errors.ConfigError("config.train_workdirs is empty; give training workdirs, "
                             "e.g. --config.train_workdirs=runs/a/seed0,runs/a/seed1")
  per_run = {d: run_geometry(d, tuple(config.heads)) for d in dirs}
  steps = sorted(set.intersection(*(set(r) for r in per_run.values())))
  keys = sorted(per_run[dirs[0]][steps[0]]) if steps else []
  summary = {str(s): {k: stats.mean_interval([per_run[d][s][k] for d in dirs]) for k in keys}
             for s in steps}
  # Paired over runs: each quantity's change from one saved step to the next.
  changes = {f"{a}->{b}": {k: stats.paired_difference([per_run[d][b][k] for d in dirs],
                                                      [per_run[d][a][k] for d in dirs])
                           for k in keys} for a, b in zip(steps, steps[1:])}
  fig = analysis_plots.plot_geometry(summary, heads=tuple(config.heads))
  figures.save_figure(fig, workdir, "geometry")
  results = {"train_workdirs": dirs, "steps": steps, "summary": summary, "changes": changes,
             "per_run": {d: {str(s): r for s, r in runs.items()} for d, runs in per_run.items()}}
  json_files.save_results(workdir, results)
  last = str(steps[-1]) if steps else None
  return {f"{k}@{last}": summary[last][k]["mean"] for k in keys} if last else {}
