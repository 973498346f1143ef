"""What JAX's persistent compilation cache saves end to end (jnorm/caches.py).

Runs `python -m jnorm.main` on a config three ways and times each from outside:

- `off`: `JNORM_COMPILATION_CACHE=0`, every computation compiled (jnorm before the cache);
- `cold`: the cache on, in a fresh directory (the first run on a machine; within the run,
  a grid's later seeds load what the first seed compiled);
- `warm`: the same command again with that directory (a rerun, or the next grid with
  the same shapes).

Each measurement gets a fresh temporary workdir. The cache directory is a fresh
`JNORM_CACHE_DIR` per round with jnorm's built CPU kernels copied in, so that no arm
pays for building them. The arms' order alternates between rounds (`off` first, then
last); medians are reported with the ratio `off / cold` and `off / warm` (> 1: sooner
with the cache), and the script checks that every arm gives the same final kNN
accuracy and loss for the run (or every sub-run of a grid).

    python benchmarks/compile_cache.py                                   # README main command
    python benchmarks/compile_cache.py --config configs/compare_fmnist.py:pilot --rounds 2 --set base.num_epochs=8

Prints one line per measurement, then one JSON line.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grid_workers  # this folder is on sys.path when the script runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("off", "cold", "warm")


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/default.py",
                  help="a config, relative to the repository root")
  ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                  help="a --config.FIELD=VALUE override (repeatable)")
  ap.add_argument("--rounds", type=int, default=1)
  return ap.parse_args(argv)


def command(args, workdir: str) -> list[str]:
  """The `python -m jnorm.main` command line of one measurement."""
  from jnorm import jobs  # pylint: disable=import-outside-toplevel
  config = jobs.load_config_file(*os.path.join(REPO_ROOT, args.config).split(":"))
  # A comparison's training settings are under `base`; a single run's at the top.
  progress = ("--config.base.progress_bar=False" if "base" in config
              else "--config.progress_bar=False")
  return [sys.executable, "-m", "jnorm.main", "--config",
          os.path.join(REPO_ROOT, args.config), "--workdir", workdir, progress,
          *(f"--config.{s}" for s in args.set)]


def arm_env(arm: str, cache_root: str) -> dict:
  """The environment of one arm: the cache off, or on under `cache_root`."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  if arm == "off":
    env["JNORM_COMPILATION_CACHE"] = "0"
  else:
    env.pop("JNORM_COMPILATION_CACHE", None)
    env["JNORM_CACHE_DIR"] = cache_root
  return env


def final_results(workdir: str) -> dict:
  """{'run' or 'arm/seedK': (final kNN accuracy, final loss)} of a finished job."""
  with open(os.path.join(workdir, "results.json")) as f:
    top = json.load(f)
  if "variants" not in top:
    return {"run": (top["knn_accuracy"], top["final_loss"])}
  return {key: run[:2] for key, run in grid_workers.sub_runs(workdir).items()}


def measure(args, arm: str, cache_root: str) -> tuple[float, dict]:
  with tempfile.TemporaryDirectory(prefix="jnorm_cache_bench_") as workdir:
    start = time.perf_counter()
    proc = subprocess.run(command(args, workdir), capture_output=True, text=True,
                          cwd=REPO_ROOT, env=arm_env(arm, cache_root))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
      sys.exit(f"compile_cache: the {arm} run failed: {proc.stderr.strip()[-500:]}")
    return wall, final_results(workdir)


def fresh_cache_root(parent: str) -> str:
  """A new cache root holding a copy of the built CPU kernels (none are built here)."""
  from jnorm.cpu import kernels as cpu_kernels  # pylint: disable=import-outside-toplevel
  cpu_kernels.status()  # builds them once, outside the timings
  root = tempfile.mkdtemp(prefix="root_", dir=parent)
  if cpu_kernels.cache_dir().is_dir():
    shutil.copytree(cpu_kernels.cache_dir(), os.path.join(root, "kernels"))
  return root


def main(argv=None):
  args = parse_args(argv)
  walls = {arm: [] for arm in ARMS}
  results = {}
  with tempfile.TemporaryDirectory(prefix="jnorm_cache_roots_") as parent:
    for r in range(args.rounds):
      root = fresh_cache_root(parent)
      for arm in ARMS if r % 2 == 0 else ("cold", "warm", "off"):
        wall, results[arm] = measure(args, arm, root)
        walls[arm].append(wall)
        print(f"round {r} {arm}: {wall:.1f} s", flush=True)
  med = {arm: statistics.median(v) for arm, v in walls.items()}
  print(f"median wall: off {med['off']:.1f} s, cold {med['cold']:.1f} s, warm "
        f"{med['warm']:.1f} s; off/cold {med['off'] / med['cold']:.2f}, "
        f"off/warm {med['off'] / med['warm']:.2f}")
  same = results["off"] == results["cold"] == results["warm"]
  print(f"the same final kNN accuracy and loss in every arm: {same}")
  for key in results["off"]:
    print(f"  {key}: " + " / ".join(f"{arm} {results[arm][key]}" for arm in ARMS))
  print(json.dumps({"config": args.config, "set": args.set, "rounds": args.rounds,
                    "walls": walls, "median_s": med,
                    "ratio_off_cold": med["off"] / med["cold"],
                    "ratio_off_warm": med["off"] / med["warm"],
                    "same_results": same, "results": results}))


if __name__ == "__main__":
  main()
