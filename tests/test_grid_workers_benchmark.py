"""benchmarks/grid_workers.py: the command lines it times name real config fields, and it
reads a finished grid's sub-runs (the timed grids themselves run in
tests/jobs/test_workers.py's real-trainer test; a --quick run takes a minute)."""

import importlib.util
import json
import os

from jnorm import jobs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location(
    "grid_workers", os.path.join(REPO_ROOT, "benchmarks", "grid_workers.py"))
grid_workers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(grid_workers)


def _overrides(cmd):
  return dict(a[len("--config."):].split("=", 1) for a in cmd if a.startswith("--config."))


def test_commands_override_fields_the_configs_have():
  for argv in (["--seeds", "0,1,2", "--epochs", "3"], ["--quick"]):
    args = grid_workers.parse_args(argv)
    cmd = grid_workers.command(args, "/tmp/w", 2)
    assert cmd[1:3] == ["-m", "jnorm.main"] and cmd[cmd.index("--workdir") + 1] == "/tmp/w"
    path = cmd[cmd.index("--config") + 1]
    config = jobs.load_config_file(*path.split(":"))
    for field, value in _overrides(cmd).items():
      node = config
      for part in field.split("."):
        assert part in node, f"{path}: no field {field}"
        node = node[part]
    assert _overrides(cmd)["workers"] == "2"
  assert _overrides(grid_workers.command(grid_workers.parse_args(["--seeds", "0,1,2"]),
                                         "/w", 1))["seeds"] == "0,1,2"


def test_sub_runs_reads_each_arm_and_seed(tmp_path):
  grid = {"variants": ["a", "b"], "seeds": [0, 3]}
  (tmp_path / "results.json").write_text(json.dumps(grid))
  for arm in grid["variants"]:
    for seed in grid["seeds"]:
      os.makedirs(tmp_path / arm / f"seed{seed}")
      (tmp_path / arm / f"seed{seed}" / "results.json").write_text(
          json.dumps({"knn_accuracy": seed / 10, "final_loss": 4.0, "xla_cpu_threads": 2}))
  assert grid_workers.sub_runs(str(tmp_path)) == {
      "a/seed0": (0.0, 4.0, 2), "a/seed3": (0.3, 4.0, 2), "b/seed0": (0.0, 4.0, 2),
      "b/seed3": (0.3, 4.0, 2)}
