"""benchmarks/compile_cache.py: its command lines name real config fields, each arm gets
the environment it describes, and it reads a finished run's and grid's final results
(the timed runs take minutes: benchmarks/README.md has their figures)."""

import importlib.util
import json
import os
import sys

from jnorm import jobs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))  # its `import grid_workers`
_SPEC = importlib.util.spec_from_file_location(
    "compile_cache_bench", os.path.join(REPO_ROOT, "benchmarks", "compile_cache.py"))
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_commands_override_fields_the_configs_have():
  for argv in ([], ["--config", "configs/compare_fmnist.py:pilot", "--set",
                    "base.num_epochs=8"]):
    cmd = bench.command(bench.parse_args(argv), "/tmp/w")
    assert cmd[1:3] == ["-m", "jnorm.main"] and cmd[cmd.index("--workdir") + 1] == "/tmp/w"
    path = cmd[cmd.index("--config") + 1]
    config = jobs.load_config_file(*path.split(":"))
    for arg in cmd:
      if arg.startswith("--config."):
        node = config
        for part in arg[len("--config."):].split("=", 1)[0].split("."):
          assert part in node, f"{path}: no field {arg}"
          node = node[part]


def test_arm_environments(monkeypatch):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/users/own")
  off, cold = bench.arm_env("off", "/r"), bench.arm_env("cold", "/r")
  assert off["JNORM_COMPILATION_CACHE"] == "0" and "JAX_COMPILATION_CACHE_DIR" not in off
  assert cold["JNORM_CACHE_DIR"] == "/r" and "JNORM_COMPILATION_CACHE" not in cold
  assert "JAX_COMPILATION_CACHE_DIR" not in cold


def test_final_results_of_a_run_and_of_a_grid(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text(json.dumps({"knn_accuracy": 0.9, "final_loss": 3.5}))
  assert bench.final_results(str(run)) == {"run": (0.9, 3.5)}
  grid = tmp_path / "grid"
  (grid / "a" / "seed1").mkdir(parents=True)
  (grid / "results.json").write_text(json.dumps({"variants": ["a"], "seeds": [1]}))
  (grid / "a" / "seed1" / "results.json").write_text(json.dumps(
      {"knn_accuracy": 0.7, "final_loss": 4.0, "xla_cpu_threads": 2}))
  assert bench.final_results(str(grid)) == {"a/seed1": (0.7, 4.0)}
