"""Batches: a resumable shuffled train stream and an exact, padded eval pass.

Why a plain numpy sampler and not grain: the stream must be a pure function of
(seed, step) so that a checkpoint's data position is just the step, and each host must
take a fixed contiguous slice of every global batch. That is ten lines of numpy
(`default_rng([seed, epoch]).permutation(N)`), needs no worker processes on 2-core
machines, and grain is not among jnorm's pinned dependencies. Decoding TFDS records is
the only host work that could need parallelism; CIFAR is decoded once into memory.

Multi-host: `batch_size` is always the GLOBAL batch; process p of P gets rows
[p*B/P, (p+1)*B/P) of every global batch. `global_batch` assembles the process-local
slices into one `jax.Array` sharded over a mesh with
`jax.make_array_from_process_local_data`.
"""

from typing import Iterator, Optional

import numpy as np

from jnorm import errors


def _process_slice(batch_size: int, process_index: Optional[int],
                   process_count: Optional[int]) -> slice:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise errors.ConfigError(
        f"batch_size={batch_size} is not divisible by the {process_count} processes; "
        "use a global batch size that is a multiple of the process count")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count})")
  local = batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def _fetch(split, indices: np.ndarray, raw: bool) -> np.ndarray:
  if raw and hasattr(split, "get_raw"):
    return split.get_raw(indices)
  return split.get(indices)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
  """The order of epoch `epoch`: a permutation of range(num_examples) from (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_indices(num_examples: int, *, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Example indices of the GLOBAL batch at `step` (int64 [batch_size]).

  Epoch e = step // steps_per_epoch is shuffled by `epoch_permutation(seed, e)`; the last
  partial batch of each epoch is dropped. A pure function of (seed, step).
  """
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch == 0:
    raise errors.ConfigError(
        f"batch_size={batch_size} exceeds the {num_examples} train examples; "
        "lower the batch size")
  epoch, pos = divmod(step, steps_per_epoch)
  perm = epoch_permutation(num_examples, seed=seed, epoch=epoch)
  return perm[pos * batch_size:(pos + 1) * batch_size]


def train_batches(ds, *, batch_size: int, seed: int, start_step: int = 0,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None,
                  raw: bool = False) -> Iterator[dict]:
  """Infinite stream of this process's slice of each global train batch.

  Args:
    ds: a `Dataset`.
    batch_size: the GLOBAL batch size (divisible by process_count).
    seed: the shuffling seed; epoch e's order comes from default_rng([seed, e]).
    start_step: the first global step to yield (resume: the checkpoint's step).
    process_index, process_count: this host's slice (defaults: jax.process_index(),
      jax.process_count()).
    raw: yield stored values (uint8 images for CIFAR / TFDS in memory) instead of float32
      in [0, 1]; `jnorm.augment.two_views` accepts both.
  Yields:
    {'input': [B/P, ...] float32 (or raw), 'label': [B/P] int32}; the batch at step s is
    a pure function of (seed, s).
  """
  rows = _process_slice(batch_size, process_index, process_count)
  n = len(ds.train)
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    train_indices(n, batch_size=batch_size, seed=seed, step=0)  # raises the ConfigError
  return _train_stream(ds.train, rows, batch_size=batch_size, seed=seed,
                       start_step=start_step, raw=raw)


def _train_stream(data, rows: slice, *, batch_size, seed, start_step, raw):
  n = len(data)
  steps_per_epoch = n // batch_size
  step = start_step
  cached_epoch, perm = None, None
  while True:
    epoch, pos = divmod(step, steps_per_epoch)
    if epoch != cached_epoch:  # one permutation per epoch, not per step
      perm = epoch_permutation(n, seed=seed, epoch=epoch)
      cached_epoch = epoch
    idx = perm[pos * batch_size:(pos + 1) * batch_size][rows]
    yield {"input": _fetch(data, idx, raw), "label": data.labels[idx]}
    step += 1


def eval_batches(ds, *, split: str, batch_size: int,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None,
                 raw: bool = False) -> Iterator[dict]:
  """Every example of `split` exactly once, in order; the last batch padded.

  Padding rows repeat the split's first example (real data, so BatchNorm in train mode
  or norms stay finite) and have mask False. With several processes, each yields its
  slice of every global batch; all processes yield the same number of batches.

  Yields:
    {'input': [B/P, ...], 'label': [B/P] int32, 'mask': [B/P] bool}.
  """
  data = ds.split(split)
  rows = _process_slice(batch_size, process_index, process_count)
  return _eval_stream(data, rows, batch_size=batch_size, raw=raw)


def _eval_stream(data, rows: slice, *, batch_size, raw):
  n = len(data)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = idx < n
    idx = np.where(mask, idx, 0)[rows]
    yield {"input": _fetch(data, idx, raw), "label": data.labels[idx], "mask": mask[rows]}


def global_batch(local_batch: dict, mesh, *, axis_name: str = "batch") -> dict:
  """Assembles process-local slices into global arrays sharded on `axis_name` of `mesh`.

  Each leaf [B/P, ...] of this process becomes one [B, ...] `jax.Array` whose leading axis
  is split over the mesh axis (`jax.make_array_from_process_local_data`). With one
  process this is a device_put with the same sharding.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
