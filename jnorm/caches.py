"""Where jnorm keeps what it builds once per machine, and JAX's compilation cache.

Both live under one root, `$JNORM_CACHE_DIR` (default `~/.cache/jnorm`):

- `kernels/`: jnorm's compiled CPU kernels (`jnorm.cpu.kernels`);
- `xla/`: JAX's persistent compilation cache, which `python -m jnorm.main` (and each
  worker process of a comparison) turns on with `enable_compilation_cache`.

Without that cache every run compiles its train step and evaluation functions again:
the README's main command spends about 13 s of its ~82 s compiling, and every sub-run
of a comparison grid compiles the same step that the previous seed compiled
(benchmarks/README.md). With the cache, a run whose computations were compiled before
(same shapes, same XLA flags, same jax and jaxlib: JAX's cache key covers them) loads
the executables from disk instead. The key also covers the cache's own path (JAX puts
a GPU autotuning directory inside it into the compile options), so a different
`$JNORM_CACHE_DIR` starts an empty cache rather than reusing another's entries. A
loaded executable is the compiled code itself, so results are bit for bit those of a
fresh compilation (tested). The cache keeps at most
`MAX_BYTES` on disk, evicting the least recently used entries.

`JNORM_COMPILATION_CACHE=0` leaves the cache off; a cache directory the user gave JAX
(`JAX_COMPILATION_CACHE_DIR`, `jax.config.update('jax_compilation_cache_dir', ...)`)
is kept as it is.
"""

import os
import pathlib
import sys

import jax

ROOT_ENV = "JNORM_CACHE_DIR"
OPT_OUT = "JNORM_COMPILATION_CACHE"
# Disk the compilation cache may use (a Fashion-MNIST run's train step takes 0.37 MB).
MAX_BYTES = 2 << 30
# Computations that compile faster than this are not worth a disk entry.
MIN_COMPILE_SECONDS = 0.5


def cache_root() -> pathlib.Path:
  """`$JNORM_CACHE_DIR`, or ~/.cache/jnorm."""
  return pathlib.Path(os.environ.get(ROOT_ENV) or pathlib.Path.home() / ".cache" / "jnorm")


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache in `cache_root() / 'xla'`.

  Call it before the first computation to be cached. Returns the cache directory in
  use (the user's own, if JAX already has one), or None when it stays off:
  `JNORM_COMPILATION_CACHE=0`, or a directory that cannot be created or written (then
  one line on stderr says so; the run goes on, compiling as usual).
  """
  if os.environ.get(OPT_OUT) == "0":
    return None
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  directory = cache_root() / "xla"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
      raise PermissionError(f"{directory} is not writable")
  except OSError as error:
    print(f"jnorm: compilation cache off ({error}); every run compiles anew "
          f"(set {ROOT_ENV} to a writable directory, or {OPT_OUT}=0 to silence this)",
          file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  return str(directory)
