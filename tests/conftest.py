"""Shared pytest fixtures and paths.

Test files live in folders that mirror the package (tests/methods, tests/training, ...),
without `__init__.py` files: every test file has a unique basename. This conftest puts
the repository root (for `configs.*`) and tests/ (for the shared `multiprocess_worker`
helper) on `sys.path`, so a test in any folder imports them the same way.

Multi-device tests set XLA_FLAGS in a subprocess (the flag must be set before jax is
imported); this process keeps the single CPU device.

The session shares one JAX persistent compilation cache, a fresh temporary folder: both
xdist workers and every subprocess a test starts inherit `JAX_COMPILATION_CACHE_DIR`
(this file runs in pytest's main process before the workers start), so a computation
that several tests compile (the same tiny run, through the CLI and in-process) is
compiled once per session. A loaded executable is the compiled code itself
(tests/test_caches.py checks the bits). Fresh each session, so nothing carries over
between sessions; a cache the user set (`JAX_COMPILATION_CACHE_DIR`) is used instead.
Tests of the cache itself give their subprocesses their own settings.

Tests marked `fashion_mnist` read the real Fashion-MNIST idx files (Debian's
`dataset-fashion-mnist`, or `$JNORM_FASHION_MNIST_DIR`). Where the files are missing they
skip with the install command; with `JNORM_REQUIRE_DATA=1` (as .ci/run sets) they fail
instead, so CI cannot pass without the real files.
"""

import atexit
import os
import shutil
import sys
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_CACHE = tempfile.mkdtemp(prefix="jnorm-tests-xla-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
  atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position  # reads the cache setting
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _path in (REPO_ROOT, TESTS_DIR):
  if _path not in sys.path:
    sys.path.insert(0, _path)

os.environ.setdefault("MPLBACKEND", "Agg")


from data_files import REQUIRE_DATA, missing_data_reason  # pylint: disable=wrong-import-position


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "fashion_mnist: reads the real Fashion-MNIST files (skipped without them, "
      "failed without them under JNORM_REQUIRE_DATA=1)")


def pytest_collection_modifyitems(config, items):
  """Slow tests first (a stable sort): with xdist, the long tests start early and the
  short ones fill the gaps, instead of one worker idling while the other ends on a
  long test."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item):
  if item.get_closest_marker("fashion_mnist") is None:
    return
  dataset_missing = missing_data_reason()
  if dataset_missing is not None:
    if REQUIRE_DATA:
      pytest.fail(f"JNORM_REQUIRE_DATA=1: {dataset_missing}", pytrace=False)
    pytest.skip(dataset_missing)  # the one skip: Fashion-MNIST's files are not installed


@pytest.fixture(scope="session", autouse=True)
def xla_started_stock():
  """Starts XLA before any test runs, without the CPU tuning's flag: a test that runs
  `python -m jnorm.main` in-process (whose `jnorm.cpu.enable()` adds the flag when XLA
  has not started) then leaves every later test in this process on stock XLA, computing
  the same bits as a subprocess of a config with `cpu_tuning='off'`."""
  jax.devices()


@pytest.fixture(autouse=True)
def stock_layers(monkeypatch):
  """Each test starts with the stock Flax layers and no record of `jnorm.cpu.enable()`,
  and leaves them so, also when it ran `python -m jnorm.main` in-process (which calls the
  switch; a later run in the process would write its record into results.json, unlike a
  subprocess); XLA_FLAGS, which the switch may extend, is restored for the subprocesses
  of later tests."""
  from jnorm import cpu  # pylint: disable=import-outside-toplevel
  from jnorm.models import layers  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(cpu, "_enabled", None)
  flags = os.environ.get("XLA_FLAGS")
  monkeypatch.setenv("XLA_FLAGS", flags or "")  # recorded, so undone after the test
  if flags is None:
    monkeypatch.delenv("XLA_FLAGS")
  layers.restore()
  yield
  layers.restore()


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats enabled; restores the setting afterwards."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def tmp_workdir(tmp_path):
  return str(tmp_path / "workdir")
