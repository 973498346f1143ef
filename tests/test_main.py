"""The command-line driver: bad invocations give one line on stderr and exit code 2."""

import subprocess
import sys
import textwrap

import pytest

_CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config(arg=None):
      if arg not in (None, "small"):
        raise ValueError(f"unknown argument {arg!r}; use ':small' or none")
      c = ml_collections.ConfigDict()
      c.job = "sim_weight_decay"
      c.lr = 0.1
      return c
""")


def _run(*args):
  return subprocess.run([sys.executable, "-m", "jnorm.main", *args], capture_output=True,
                        text=True, timeout=120, check=False)


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(_CONFIG)
  return str(path)


@pytest.mark.parametrize("extra, expected", [
    (["--config.lr_typo=1"], "no field 'lr_typo'"),
    (["--config.lr=abc"], "--config.lr=abc"),
    (["--config.job=nojob"], "config.job='nojob' is not valid"),
    (["--bogus_flag=1"], "bogus_flag"),
])
def test_bad_config_is_one_line_exit_2(config_file, tmp_path, extra, expected):
  result = _run("--config", config_file, "--workdir", str(tmp_path / "w"), *extra)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("jnorm: error:") and expected in lines[0], lines[0]


def test_missing_workdir_and_config_are_named(config_file):
  result = _run("--config", config_file)
  assert result.returncode == 2 and "--workdir is required" in result.stderr
  result = _run("--workdir", "/tmp/unused")
  assert result.returncode == 2 and "--config is required" in result.stderr


def test_bad_config_argument_and_missing_file(config_file, tmp_path):
  result = _run("--config", config_file + ":huge", "--workdir", str(tmp_path / "w"))
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jnorm: error:"), result.stderr
  # The config's own message, with the exception type, reaches the user unchanged.
  assert "ValueError: unknown argument 'huge'; use ':small' or none" in lines[0]
  result = _run("--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w"))
  assert result.returncode == 2 and "missing.py" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_the_cpu_tuning_of_a_config_or_of_the_training_config_it_embeds():
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jnorm import main  # pylint: disable=import-outside-toplevel
  from jnorm.training import config as train_config  # pylint: disable=import-outside-toplevel
  train = train_config.defaults()
  train.cpu_tuning = "off"
  assert main.cpu_tuning_of(train) == ("cpu_tuning", "off")
  comparison = ml_collections.ConfigDict({"job": "compare", "base": train})
  assert main.cpu_tuning_of(comparison) == ("base.cpu_tuning", "off")
  analyses = ml_collections.ConfigDict({"base": {"train": train}})
  assert main.cpu_tuning_of(analyses) == ("base.train.cpu_tuning", "off")
  assert main.cpu_tuning_of(ml_collections.ConfigDict({"job": "sim_gradscale"})) == (
      "cpu_tuning", "auto")

