"""Shared pytest fixtures.

Multi-device tests set XLA_FLAGS in a subprocess (the flag must be set before jax is
imported); this process keeps the single CPU device.
"""

import os

import jax
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def x64():
  """Runs a test with 64-bit floats enabled; restores the setting afterwards."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def tmp_workdir(tmp_path):
  return str(tmp_path / "workdir")
