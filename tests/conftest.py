"""Shared pytest fixtures and paths.

Test files live in folders that mirror the package (tests/methods, tests/training, ...),
without `__init__.py` files: every test file has a unique basename. This conftest puts
the repository root (for `configs.*`) and tests/ (for the shared `multiprocess_worker`
helper) on `sys.path`, so a test in any folder imports them the same way.

Multi-device tests set XLA_FLAGS in a subprocess (the flag must be set before jax is
imported); this process keeps the single CPU device.
"""

import os
import sys

import jax
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _path in (REPO_ROOT, TESTS_DIR):
  if _path not in sys.path:
    sys.path.insert(0, _path)

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats enabled; restores the setting afterwards."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def tmp_workdir(tmp_path):
  return str(tmp_path / "workdir")
