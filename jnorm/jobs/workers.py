"""A comparison's sub-runs in parallel worker processes, each pinned to its own CPU cores.

XLA:CPU runs a step's operations one at a time, and not all of them keep every core
busy: on this project's 2-core machines the kernel gradients of the SmallResNet's
16x16 convolutions run on Eigen at about 1.1 cores (8.2 ms on 2 cores against 9.3 ms
on one, benchmarks/README.md), so a step on 2 cores takes 0.17 s where it takes 0.26 s
on one. Two runs side by side, one core each, keep both cores busy: a Fashion-MNIST
grid finished 1.19x sooner with 2 workers on 2 cores (benchmarks/grid_workers.py).

`config.workers = N` (the compare job) starts N processes with multiprocessing's
'spawn' (a fresh interpreter each) and gives worker k every N-th sub-run of this
process's share. Each worker starts XLA first, with the thread pool it would have in a
single process (XLA:CPU sizes it from the cores the process may use when it starts),
and then pins every thread of its process to the k-th of N disjoint groups of those
cores (`os.sched_setaffinity`, Linux). Their progress bars are off (each prints one
line per sub-run). A worker that stops on an error ends with exit code 1 after one line
naming the error; the others finish, finished sub-runs are kept, and the same command
resumes. SIGTERM or SIGINT to the parent is passed on to the workers as SIGTERM; each
stops at a step boundary with its sub-run's checkpoint saved (exit code 75), and the
parent then raises `errors.Preempted`.

Same numbers: XLA:CPU's float32 results depend on the size of its thread pool (the same
run on a pool of 1 and of 2 threads ends at kNN 0.8189 and 0.8048), not on the cores the
threads then run on. Because a worker keeps the single process's pool, its sub-runs are
bit for bit the sub-runs that `workers = 1` trains (tested), so the setting can change
between the sessions of one grid. Each run records the pool size as `xla_cpu_threads`.
"""

import multiprocessing
from multiprocessing import connection
import os
import signal
import sys
from collections.abc import Callable, Sequence

import jax
import ml_collections

from jnorm import caches
from jnorm import cpu
from jnorm import errors
from jnorm.training import preemption


def core_groups(cores: Sequence[int], workers: int) -> list[list[int]]:
  """`cores` split into `workers` disjoint groups of consecutive cores, sizes within 1."""
  errors.check_positive("workers", workers)
  if workers > len(cores):
    raise errors.ConfigError(
        f"config.workers={workers} is more than the {len(cores)} CPU cores this process "
        f"may use; set --config.workers to at most {len(cores)}")
  size, extra = divmod(len(cores), workers)
  groups, start = [], 0
  for k in range(workers):
    end = start + size + (k < extra)
    groups.append(list(cores[start:end]))
    start = end
  return groups


def without_progress_bars(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with every `progress_bar` field (nested ones too) set to False."""
  with config.unlocked():
    for key, value in config.items():
      if key == "progress_bar":
        config[key] = False
      elif isinstance(value, ml_collections.ConfigDict):
        without_progress_bars(value)
  return config


def pin_threads(cores: Sequence[int]) -> None:
  """Pins every thread of this process to `cores` (threads started later inherit it)."""
  if not hasattr(os, "sched_setaffinity"):
    return
  tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
  for tid in tasks:
    try:
      os.sched_setaffinity(int(tid), cores)
    except ProcessLookupError:  # a thread that ended meanwhile
      pass


def _worker(index: int, cores: list[int], todo: list, workdir: str, train_fn,
            train_missing, tuning: cpu.Tuning | None) -> None:
  """One worker process: the parent's CPU tuning, then XLA started with its threads
  pinned to `cores`; trains its sub-runs."""
  if tuning is not None and tuning.backend == "cpu":
    cpu.enable(conv=tuning.conv or "stock", xla_flag=tuning.xla_flag,
               allocator=tuning.allocator, batch_norm=tuning.batch_norm)
  jax.devices()  # XLA's thread pool as in a single process: the same float32 results
  pin_threads(cores)
  caches.enable_compilation_cache()  # a fresh interpreter: the parent's setting is not here
  todo = [(name, seed, without_progress_bars(cfg)) for name, seed, cfg in todo]
  try:
    train_missing(todo, workdir, train_fn, label=f"worker {index}")
  except errors.Preempted as exc:  # its checkpoint is saved: not a failure
    print(f"jnorm compare: worker {index}: {' '.join(str(exc).split())}",
          file=sys.stderr, flush=True)
    sys.exit(errors.EXIT_PREEMPTED)
  except errors.JnormError as exc:
    print(f"jnorm compare: worker {index}: error: {' '.join(str(exc).split())}",
          file=sys.stderr, flush=True)
    sys.exit(1)


def train_in_workers(todo: list, workdir: str, train_fn, *, workers: int,
                     train_missing: Callable) -> None:
  """Trains `todo` ([(arm, seed, config)]) in `workers` pinned processes (module doc).

  `train_missing(todo, workdir, train_fn, label=...)` trains a list in one process;
  it and `train_fn` must be module-level functions (they are pickled for 'spawn').

  Raises:
    errors.ConfigError: `workers` is more than the cores, or the backend is not the CPU.
    errors.WorkerError: a worker stopped with a non-zero exit code (after all ended).
  """
  if jax.default_backend() != "cpu":
    raise errors.ConfigError(
        f"config.workers={workers} splits CPU cores between processes, but JAX runs on "
        f"{jax.default_backend()}; set --config.workers=1")
  groups = core_groups(cpu.available_cores(), workers)
  context = multiprocessing.get_context("spawn")
  procs = [context.Process(target=_worker, name=f"jnorm-worker-{k}",
                           args=(k, groups[k], todo[k::workers], workdir, train_fn,
                                 train_missing, cpu.enabled()))
           for k in range(workers) if todo[k::workers]]
  print(f"jnorm compare: {len(todo)} sub-runs in {len(procs)} workers, cores "
        + " | ".join(",".join(map(str, g)) for g in groups[:len(procs)]), flush=True)
  with preemption.stop_on_signals():
    _run_workers(procs)
  signalled = (errors.EXIT_PREEMPTED, -signal.SIGTERM, -signal.SIGINT)
  preempted = [p for p in procs if p.exitcode == errors.EXIT_PREEMPTED
               or (preemption.stop_requested() and p.exitcode in signalled)]
  stopped = [f"{p.name} (exit code {p.exitcode})" for p in procs
             if p.exitcode != 0 and p not in preempted]
  if stopped:
    raise errors.WorkerError(
        f"{', '.join(stopped)} stopped before its sub-runs were done (its error is "
        "printed above); the finished sub-runs are kept: fix the cause and rerun the "
        "same command to train the rest")
  if preempted:
    raise errors.Preempted(
        f"preempted: {', '.join(p.name for p in preempted)} stopped with their sub-runs' "
        "checkpoints saved; the finished sub-runs are kept; run the same command to resume")


def _run_workers(procs: list) -> None:
  """Starts `procs` and waits for all of them. A SIGTERM or SIGINT to this process
  (inside `preemption.stop_on_signals()`) is passed on to the workers as SIGTERM: each stops at
  a step boundary with its checkpoint saved (exit code `errors.EXIT_PREEMPTED`)."""
  for proc in procs:
    proc.start()
  try:
    forwarded = False
    while running := [p for p in procs if p.exitcode is None]:
      if preemption.stop_requested() and not forwarded:
        for proc in running:
          proc.terminate()  # SIGTERM: the worker saves and stops; repeats are ignored
        forwarded = True
      connection.wait([p.sentinel for p in running], timeout=0.2)  # or a signal's turn
  except BaseException:  # an error here: stop every worker; each resumes from its checkpoint
    for proc in procs:
      proc.terminate()
    raise
  for proc in procs:
    proc.join()
