"""A comparison grid end to end: one process on every core against `--workers` pinned
worker processes (`config.workers`, jnorm/jobs/workers.py), same grid, same run.

Each measurement runs `python -m jnorm.main` on a comparison config into a fresh
temporary workdir (compilation, training, the config's evaluations, the report: what a
researcher waits for) and times it from outside. The arms alternate within each of
`--rounds` rounds (the machine's speed drifts between minutes); medians are reported,
and the ratio of the single process's wall time to the workers' (> 1: the workers
finish sooner). It also checks that both give every sub-run the same final kNN accuracy
and loss (a worker keeps XLA's thread pool of a single process: jnorm/jobs/workers.py).
JAX's persistent compilation cache is off in every measurement
(`JNORM_COMPILATION_CACHE=0`), so each compiles as the first run on a machine would and
no arm loads what an earlier measurement compiled (benchmarks/compile_cache.py measures
the cache itself).

    python benchmarks/grid_workers.py                         # Fashion-MNIST pilot grid (2 seeds), 8 epochs
    python benchmarks/grid_workers.py --seeds 0,1,2,3 --epochs 4 --rounds 2
    python benchmarks/grid_workers.py --quick                 # digits smoke grid, 2 steps

Prints one line per measurement, then one JSON line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/compare_fmnist.py:pilot",
                  help="a comparison config, relative to the repository root")
  ap.add_argument("--epochs", type=float, default=8.0, help="config.base.num_epochs")
  ap.add_argument("--seeds", default="", help="config.seeds ('' keeps the config's)")
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--rounds", type=int, default=1)
  ap.add_argument("--quick", action="store_true",
                  help="configs/compare_reference.py:smoke as it is (smoke test)")
  return ap.parse_args(argv)


def command(args, workdir: str, workers: int) -> list[str]:
  """The `python -m jnorm.main` command line of one measurement."""
  config = "configs/compare_reference.py:smoke" if args.quick else args.config
  cmd = [sys.executable, "-m", "jnorm.main", "--config", os.path.join(REPO_ROOT, config),
         "--workdir", workdir, f"--config.workers={workers}",
         "--config.base.progress_bar=False"]
  if not args.quick:
    cmd.append(f"--config.base.num_epochs={args.epochs:g}")
  if args.seeds:
    cmd.append(f"--config.seeds={args.seeds}")
  return cmd


def sub_runs(workdir: str) -> dict:
  """{'arm/seedK': (final kNN accuracy, final loss, xla_cpu_threads)} of a finished grid."""
  with open(os.path.join(workdir, "results.json")) as f:
    grid = json.load(f)
  out = {}
  for arm in grid["variants"]:
    for seed in grid["seeds"]:
      with open(os.path.join(workdir, arm, f"seed{seed}", "results.json")) as f:
        res = json.load(f)
      out[f"{arm}/seed{seed}"] = (res["knn_accuracy"], res["final_loss"],
                                  res.get("xla_cpu_threads"))
  return out


def measure(args, workers: int) -> tuple[float, dict]:
  with tempfile.TemporaryDirectory(prefix="jnorm_grid_bench_") as workdir:
    start = time.perf_counter()
    proc = subprocess.run(command(args, workdir, workers), capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "JNORM_COMPILATION_CACHE": "0"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
      sys.exit(f"grid_workers: the grid with workers={workers} failed: "
               f"{proc.stderr.strip()[-500:]}")
    return wall, sub_runs(workdir)


def main(argv=None):
  args = parse_args(argv)
  walls = {1: [], args.workers: []}
  runs = {}
  for r in range(args.rounds):
    for workers in (1, args.workers) if r % 2 == 0 else (args.workers, 1):
      wall, runs[workers] = measure(args, workers)
      walls[workers].append(wall)
      print(f"round {r} workers={workers}: {wall:.1f} s", flush=True)
  one, many = statistics.median(walls[1]), statistics.median(walls[args.workers])
  print(f"median wall: 1 process {one:.1f} s, {args.workers} workers {many:.1f} s: "
        f"ratio {one / many:.2f}")
  same = runs[1] == runs[args.workers]
  print(f"every sub-run's final kNN accuracy and loss the same both ways: {same}")
  for key in runs[1]:
    print(f"  {key}: (kNN, loss, XLA threads) {runs[1][key]} / {runs[args.workers][key]}")
  print(json.dumps({"config": args.config if not args.quick else "smoke",
                    "epochs": None if args.quick else args.epochs,
                    "workers": args.workers, "rounds": args.rounds,
                    "wall_s_one_process": one, "wall_s_workers": many,
                    "ratio": one / many, "same_results": same, "walls": {str(k): v for k, v in walls.items()},
                    "sub_runs": {str(k): v for k, v in runs.items()}}))


if __name__ == "__main__":
  main()
