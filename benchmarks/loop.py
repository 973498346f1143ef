"""Whole training loop vs the train step alone, same config, same batches (CPU or any).

For a training config (default: configs/compare_fmnist.py's base, the experiments'
setting; `--config digits` for configs/default.py), in one process:

1. `step_only`: `build_run`'s jitted train step on the first `--epochs` epochs of the
   run's own batches (`jnorm.data.train_batches`, same seed), every batch placed on the
   device before timing, steps dispatched back to back: images/s.
2. `loop_no_eval`: `jnorm.training.loop.train_and_evaluate` for `--epochs` epochs with
   evaluation only at the end (host batching, transfer, step, logging, checkpoints as
   configured): training images/s over the loop's `train_seconds` (the final evaluation
   is not in it).
3. `loop_eval_inline`: the same with the config's evaluation schedule (kNN after every
   epoch for the Fashion-MNIST base), each evaluation between two steps
   (`eval.background` off): images/s including the periodic evaluations.
4. `loop_eval`: the same with the evaluations in a thread beside the steps
   (`eval.background` on, as in the Fashion-MNIST base). Its kNN curve must equal
   `loop_eval_inline`'s number for number (`knn_curves_identical`; the script fails
   otherwise).

Compilation is kept out of every figure by a persistent compilation cache in a
temporary folder, filled by an untimed warm-up of each variant. What the cache cannot
remove is the loop's first call of its new jitted step (tracing, lowering, loading the
executable: 1-1.4 s on 2 cores, once per run), which `step_only` leaves out by timing
all but its first step: the loop figures are also given without it
(`images_per_s_after_first_call`, from the run's `first_step_seconds`). The four
measurements run in `--rounds` interleaved rounds (medians reported). An image is one
view pair (the batch size counts pairs). Prints one line per round and per figure,
then one JSON line.

    python benchmarks/loop.py                  # Fashion-MNIST base, 3 epochs, 3 rounds (Debian package)
    python benchmarks/loop.py --config digits --epochs 4
    python benchmarks/loop.py --quick          # smoke test: 8 px digits, 2 epochs
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", choices=("fmnist", "digits"), default="fmnist")
  ap.add_argument("--epochs", type=float, default=3.0)
  ap.add_argument("--rounds", type=int, default=3,
                  help="interleaved rounds of the three measurements; medians reported "
                       "(the machine's speed drifts by 10%% and more between minutes)")
  ap.add_argument("--cpu-tuning", choices=("on", "off"), default="on",
                  help="on: jnorm.cpu.enable() first, as python -m jnorm.main does")
  ap.add_argument("--quick", action="store_true",
                  help="digits at their native 8 px, batch 64, 2 epochs, evaluation after "
                       "each: smoke test")
  return ap.parse_args(argv)


def load_config(args):
  from jnorm import jobs
  if args.config == "fmnist" and not args.quick:
    config = jobs.load_config_file(os.path.join(CONFIG_DIR, "compare_fmnist.py")).base
  else:
    config = jobs.load_config_file(os.path.join(CONFIG_DIR, "default.py"))
  config = copy.deepcopy(config)
  config.num_epochs = float(args.epochs)
  config.progress_bar = False
  if args.quick:
    config.data.image_size = 8
    config.batch_size = 64
    config.num_epochs = 2.0
    config.eval.every_epochs = 1
    config.eval.powers_of_two = False
  return config


def step_only(config) -> dict:
  import jax
  from jnorm import data
  from jnorm.training import build
  from jnorm.training import step as ts

  ds = data.load_dataset(config.data)
  info = build.run_info(ds, config)
  mesh = ts.make_mesh()
  run = build.build_run(config, mesh=mesh, **info)
  state = ts.replicate(jax.device_get(run.init_state()), mesh)
  stream = data.train_batches(ds, batch_size=config.batch_size, seed=config.seed)
  batches = [ts.shard_batch(next(stream), mesh) for _ in range(run.total_steps)]
  jax.block_until_ready(batches)
  state, metrics = run.train_step(state, batches[0])  # compile (or load from the cache)
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = run.train_step(state, batch)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - t0
  steps = len(batches) - 1
  return {"steps": steps, "seconds": seconds,
          "images_per_s": steps * config.batch_size / seconds}


def loop(config, *, periodic_eval: bool, background: bool = False) -> dict:
  from jnorm.training import loop as loop_lib
  config = copy.deepcopy(config)
  config.eval.background = background
  if not periodic_eval:
    config.eval.every_epochs = 0
    config.eval.powers_of_two = False
  with tempfile.TemporaryDirectory(prefix="jnorm_loop_bench_") as workdir:
    results = loop_lib.train_and_evaluate(config, workdir)
  steps = results["steps"]
  seconds = results["train_seconds_per_step"] * steps
  steady = seconds - results["first_step_seconds"]
  return {"steps": steps, "seconds": seconds,
          "images_per_s": steps * config.batch_size / seconds,
          "first_call_s": results["first_step_seconds"],
          "images_per_s_after_first_call": steps * config.batch_size / steady,
          "knn_curve": results["knn_curve"]}


def main(argv=None):
  args = parse_args(argv)
  import jax
  import jnorm.cpu
  if args.cpu_tuning == "on":
    jnorm.cpu.enable()  # as `python -m jnorm.main` does, before the first computation
  cache = tempfile.mkdtemp(prefix="jnorm_loop_cache_")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  config = load_config(args)
  warm = copy.deepcopy(config)
  warm.num_epochs = min(1.0, config.num_epochs)
  for periodic, background in ((False, False), (True, False), (True, True)):  # untimed:
    loop(warm, periodic_eval=periodic, background=background)  # fills the cache
  result = {"config": "digits" if args.quick else args.config, "epochs": config.num_epochs,
            "batch": config.batch_size, "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_tuning": args.cpu_tuning}
  names = ("step_only", "loop_no_eval", "loop_eval_inline", "loop_eval")
  rounds = {name: [] for name in names}
  for r in range(1 if args.quick else args.rounds):
    rounds["step_only"].append(step_only(config))
    rounds["loop_no_eval"].append(loop(config, periodic_eval=False))
    rounds["loop_eval_inline"].append(loop(config, periodic_eval=True))
    rounds["loop_eval"].append(loop(config, periodic_eval=True, background=True))
    print(f"round {r}: " + ", ".join(f"{name} {rounds[name][-1]['images_per_s']:.1f}"
                                      for name in names) + " pairs/s", flush=True)
  curves = {name: [x.pop("knn_curve") for x in rounds[name]] for name in names[1:]}
  result["knn_curves_identical"] = curves["loop_eval_inline"] == curves["loop_eval"]
  for name in names:
    result[name] = {key: statistics.median(x[key] for x in rounds[name])
                    for key in rounds[name][0] if key != "steps"}
    result[name]["steps"] = rounds[name][0]["steps"]
    result[name]["rounds"] = [x["images_per_s"] for x in rounds[name]]
  base = result["step_only"]["images_per_s"]
  for name in names:
    r = result[name]
    r["ratio_to_step_only"] = r["images_per_s"] / base
    line = (f"{name:13s}: {r['images_per_s']:8.1f} pairs/s  (median of {len(r['rounds'])}, "
            f"{r['seconds']:.1f} s, {r['ratio_to_step_only']:.2f} of step-only)")
    if "first_call_s" in r:
      r["ratio_after_first_call"] = r["images_per_s_after_first_call"] / base
      line += (f"; without the first call's trace + cache load ({r['first_call_s']:.2f} s): "
               f"{r['images_per_s_after_first_call']:.1f} pairs/s, "
               f"{r['ratio_after_first_call']:.2f}")
    print(line, flush=True)
  evaluations = sum(len(c) for c in curves["loop_eval"])
  print(f"kNN curves, evaluations inline vs in the background ({evaluations} evaluations): "
        f"{'identical' if result['knn_curves_identical'] else 'DIFFERENT'}", flush=True)
  print(json.dumps(result))
  return result if result["knn_curves_identical"] else None


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
