"""jnorm.caches: the cache root and JAX's persistent compilation cache.

JAX's cache settings are process-wide and take effect once, so each case runs in a
fresh interpreter.
"""

import json
import os
import pathlib
import subprocess
import sys

from jnorm import caches
from jnorm.cpu import kernels as cpu_kernels

# Enables the cache, compiles (or loads) a function whose compilation JAX would cache,
# and prints what it saw: the directory, cache hits, and the result's bytes.
CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from jnorm import caches
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
directory = caches.enable_compilation_cache()
if directory is not None:
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even this
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0) * 1.5)
y = f(jnp.arange(64.0).reshape(8, 8) / 64)
print(json.dumps({"directory": directory, "hits": len(hits),
                  "bits": y.tobytes().hex(), "cache_dir": jax.config.jax_compilation_cache_dir}))
"""


def _child(env_changes: dict) -> tuple[dict, str]:
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", caches.OPT_OUT)}
  env.update(env_changes)
  done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                        text=True, check=True, timeout=300)
  return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_second_process_loads_the_executable_and_gets_the_same_bits(tmp_path):
  first, _ = _child({caches.ROOT_ENV: str(tmp_path)})
  assert first["directory"] == str(tmp_path / "xla")
  assert first["hits"] == 0
  assert any((tmp_path / "xla").iterdir()), "nothing was written to the cache"
  second, _ = _child({caches.ROOT_ENV: str(tmp_path)})
  assert second["hits"] >= 1
  assert second["bits"] == first["bits"]


def test_opt_out_leaves_the_cache_off(tmp_path):
  out, _ = _child({caches.ROOT_ENV: str(tmp_path), caches.OPT_OUT: "0"})
  assert out["directory"] is None and not out["cache_dir"]
  assert not (tmp_path / "xla").exists()


def test_a_directory_the_user_gave_jax_is_kept(tmp_path):
  own = tmp_path / "own"
  out, _ = _child({caches.ROOT_ENV: str(tmp_path / "jnorm"),
                   "JAX_COMPILATION_CACHE_DIR": str(own)})
  assert out["directory"] == str(own) == out["cache_dir"]
  assert not (tmp_path / "jnorm").exists()


def test_unwritable_root_is_one_line_and_the_run_goes_on(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  out, stderr = _child({caches.ROOT_ENV: str(blocker)})
  assert out["directory"] is None and not out["cache_dir"]
  lines = [l for l in stderr.splitlines() if l.startswith("jnorm:")]
  assert len(lines) == 1 and "compilation cache off" in lines[0], stderr
  assert caches.ROOT_ENV in lines[0]


def test_kernels_and_compilation_cache_share_the_root(monkeypatch, tmp_path):
  monkeypatch.setenv(caches.ROOT_ENV, str(tmp_path))
  assert caches.cache_root() == tmp_path
  assert cpu_kernels.cache_dir() == tmp_path / "kernels"
  monkeypatch.delenv(caches.ROOT_ENV)
  assert caches.cache_root() == pathlib.Path.home() / ".cache" / "jnorm"
