"""Fixtures of the reliability tests: the subprocess environment and one reference run.

Every subprocess uses the test session's persistent JAX compilation cache
(tests/conftest.py), caching even the fastest compilations, so only the first process
of each kind compiles.
"""

import os
import shutil

import pytest

import reliability_util as ru


@pytest.fixture(scope="session")
def cli_env():
  """The environment of `python -m jnorm.main` subprocesses: CPU, one device, the
  session's compilation cache, no save delay."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             MPLBACKEND="Agg")
  for name in ("XLA_FLAGS", "JNORM_TEST_SAVE_DELAY_S"):
    env.pop(name, None)
  return env


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, cli_env):
  """The workdir of an uninterrupted tiny run (a subprocess); treat it as read-only."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  ru.require_success(ru.cli(ru.tiny_args(workdir), cli_env), "the reference run")
  return workdir


@pytest.fixture
def copy_of(tmp_path):
  """copy_of(workdir) -> a private copy of a run's workdir."""
  def copy(workdir, name="copy"):
    target = str(tmp_path / name)
    shutil.copytree(workdir, target)
    return target
  return copy
