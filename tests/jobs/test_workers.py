"""A comparison's sub-runs in pinned worker processes (jnorm.jobs.workers,
`config.workers`): core split, progress bars, failures, and the real trainer."""

import json
import os

import ml_collections
import pytest

from jnorm import errors
from jnorm import jobs
from jnorm import cpu
from jnorm.jobs import compare
from jnorm.jobs import workers

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CORES = cpu.available_cores()
# Results that differ between two runs of the same sub-run (timings).
_VOLATILE = ("train_seconds_per_step", "first_step_seconds", "wall_seconds")


@pytest.mark.parametrize("n_cores,count,want", [
    (2, 2, [[0], [1]]), (5, 2, [[0, 1, 2], [3, 4]]), (4, 1, [[0, 1, 2, 3]]),
    (3, 3, [[0], [1], [2]])])
def test_core_groups_are_disjoint_consecutive_and_cover_every_core(n_cores, count, want):
  assert workers.core_groups(list(range(n_cores)), count) == want


def test_more_workers_than_cores_is_a_config_error():
  with pytest.raises(errors.ConfigError, match=r"config\.workers=3 .* 2 CPU cores"):
    workers.core_groups([0, 1], 3)
  with pytest.raises(errors.ConfigError, match="workers"):
    workers.core_groups([0, 1], 0)


def test_zero_workers_is_a_config_error_before_any_training(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"config\.workers"):
    compare.run_comparison(_comparison(workers=0), str(tmp_path), train_fn=fake_train)
  assert not os.path.exists(tmp_path / "default")


def test_without_progress_bars_turns_off_nested_fields_only():
  config = ml_collections.ConfigDict(
      {"progress_bar": True, "train": {"progress_bar": True, "seed": 3}, "lr": 0.1})
  out = workers.without_progress_bars(config)
  assert out.progress_bar is False and out.train.progress_bar is False
  assert out.train.seed == 3 and out.lr == 0.1


def _comparison(**kw):
  base = ml_collections.ConfigDict({"seed": 0, "progress_bar": True, "cut": {"c": 1.0},
                                    "eval": {"linear_probe": False}})
  config = compare.comparison_config(
      base=base, variants={"default": {}, "cut3": {"cut": {"c": 3.0}}},
      run_variants="default,cut3", seeds=(0, 1), report_epochs=(1,), title="t")
  config.process_index, config.process_count = 0, 1
  config.update(kw)
  return config


def fake_train(config, workdir):
  """Module-level (workers pickle it): records where and how the sub-run ran."""
  acc = 0.1 * config.cut.c + 0.01 * config.seed
  res = {"knn_curve": [{"epoch": 1, "knn_accuracy": acc, "projector_norm_mean": 1.0}],
         "knn_accuracy": acc, "knn_accuracy_at_init": 0.05, "embedding_norm_mean": 1.0,
         "affinity": sorted(os.sched_getaffinity(0)), "pid": os.getpid(),
         "progress_bar": config.progress_bar}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(res, f)
  return res


def fake_train_cut3_fails(config, workdir):
  if config.cut.c == 3.0:
    raise errors.ConfigError("config.cut.c=3.0 is refused by this test trainer")
  return fake_train(config, workdir)


def _sub(workdir, name, seed):
  with open(os.path.join(workdir, name, f"seed{seed}", "results.json")) as f:
    return json.load(f)


def _two_cores():
  assert len(_CORES) >= 2, f"these tests need 2 CPU cores; this process may use {_CORES}"
  return workers.core_groups(_CORES, 2)


def test_workers_split_the_sub_runs_and_pin_each_to_its_cores(tmp_path, capfd):
  workdir = str(tmp_path)
  compare.run_comparison(_comparison(workers=2), workdir, train_fn=fake_train)
  out = capfd.readouterr().out
  groups = _two_cores()
  # Sub-run i of [default/0, cut3/0, default/1, cut3/1] goes to worker i % 2.
  for i, (name, seed) in enumerate([("default", 0), ("cut3", 0), ("default", 1),
                                    ("cut3", 1)]):
    sub = _sub(workdir, name, seed)
    assert sub["affinity"] == groups[i % 2] and sub["progress_bar"] is False
    assert sub["pid"] != os.getpid()
    assert f"worker {i % 2}: run {i // 2 + 1}/2: {name}/seed{seed}" in out
  assert _sub(workdir, "default", 0)["pid"] == _sub(workdir, "default", 1)["pid"]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["missing"] == []


@pytest.mark.slow
def test_a_failing_worker_is_one_error_and_the_other_workers_sub_runs_are_kept(
    tmp_path, capfd):
  workdir = str(tmp_path)
  groups = _two_cores()
  with pytest.raises(errors.WorkerError, match=r"jnorm-worker-1 \(exit code 1\).*rerun"):
    compare.run_comparison(_comparison(workers=2), workdir,
                           train_fn=fake_train_cut3_fails)
  err = capfd.readouterr().err
  assert "worker 1: error: config.cut.c=3.0 is refused" in err
  assert "Traceback" not in err
  assert os.path.exists(os.path.join(workdir, "default", "seed0", "results.json"))
  assert os.path.exists(os.path.join(workdir, "default", "seed1", "results.json"))
  # The same command with a working trainer trains only what is missing.
  compare.run_comparison(_comparison(workers=2), workdir, train_fn=fake_train)
  assert _sub(workdir, "cut3", 1)["affinity"] == groups[1]


@pytest.mark.slow
def test_a_worker_sub_run_is_the_sub_run_one_process_trains(tmp_path):
  """The real trainer: a sub-run trained by a pinned worker equals, bit for bit, the same
  sub-run trained by `workers = 1` (here, in this process: the same XLA thread pool)."""
  groups = _two_cores()
  configs = []
  for workers_ in (2, 1):  # one sub-run: with 2 workers, worker 0 alone trains it
    config = jobs.load_config_file(os.path.join(_ROOT, "configs", "compare_reference.py"),
                                   "smoke")
    config.run_variants, config.baseline, config.workers = "cut3", "cut3", workers_
    configs.append(config)
  jobs.run_job(configs[0], str(tmp_path / "workers"))
  jobs.run_job(configs[1], str(tmp_path / "one_process"))
  got, want = _sub(str(tmp_path / "workers"), "cut3", 0), _sub(str(tmp_path / "one_process"),
                                                              "cut3", 0)
  assert got["xla_cpu_threads"] == want["xla_cpu_threads"] == sum(map(len, groups))
  strip = lambda r: {k: v for k, v in r.items() if k not in _VOLATILE}
  assert strip(got) == strip(want)
