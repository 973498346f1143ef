"""The train state and one pure, per-device train step run with `jax.shard_map`.

The step is written as pmap code would be: it sees this device's slice of the global
batch, names the mesh axis ('batch'), averages gradients and metrics with `lax.pmean`,
and (with synced BatchNorm) shares BatchNorm statistics through the model's
`bn_axis_name`. `shard_map` runs with `check_vma=False`, i.e. pmap's semantics: the
gradient of each device's loss is taken per device and averaged explicitly, and the
transpose of `all_gather` (gathered negatives) is a `psum_scatter`.

The state is replicated on every device (`P()`), the batch split along the mesh axis
(`P('batch')`). Randomness: the key of step s is fold_in(state.rng, s); example i of the
GLOBAL batch is augmented from (step key, i), so augmentations do not depend on the
number of devices or processes.
"""

import functools
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jnorm import augment
from jnorm import methods
from jnorm import optim

AXIS = "batch"
HEADS = ("backbone", "projector", "predictor")


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly (also what a checkpoint holds).

  rng is raw key data (uint32[2] of `jax.random.key_data`) so that it checkpoints as a
  plain array; it is re-wrapped into a typed key inside the step.
  target_params / target_batch_stats: BYOL's EMA network ({} for other methods).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  target_params: Any
  target_batch_stats: Any
  rng: jax.Array


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (global) devices, axis name `AXIS`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def init_compiler_options() -> dict | None:
  """XLA options for compiling a network's initialisation: LLVM optimisation level 1 on CPU.

  The initialisers run once per run, as about 180 random-number fusions that XLA:CPU
  spends 5-9 s optimising at its default level; level 1 compiles them in half the time
  and gives the same parameters bit for bit (tests/training/test_train_step.py;
  benchmarks/README.md). None (XLA's defaults) on other backends.
  """
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def create_train_state(*, net, tx: optax.GradientTransformation, seed: int, sample_input,
                       cut_factor: float = 1.0, cut_scope: str = "all",
                       cut_bn_affine: bool = True, with_target: bool = False) -> TrainState:
  """Initialises the network (then applies cut-initialization, once) and the optimiser.

  Args:
    net: a Flax module called as net.apply(variables, x, train=..., mutable=...).
    tx: the optimiser.
    seed: run seed; parameter init uses split(key(seed))[0], the run's stream [1].
    sample_input: [b, ...] array with the input shape (values unused).
    cut_factor, cut_scope, cut_bn_affine: see `optim.cut_init`.
    with_target: also create BYOL's target network (a copy of the cut params).
  """
  init_key, run_key = jax.random.split(jax.random.key(seed))
  init = jax.jit(functools.partial(net.init, train=True),
                 compiler_options=init_compiler_options())
  variables = init(init_key, sample_input)
  params = optim.cut_init(variables["params"], cut_factor=cut_factor, cut_scope=cut_scope,
                          cut_bn_affine=cut_bn_affine,
                          batch_stats=variables.get("batch_stats", {}))
  batch_stats = variables.get("batch_stats", {})
  return TrainState(
      step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params),
      target_params=jax.tree.map(jnp.copy, params) if with_target else {},
      target_batch_stats=jax.tree.map(jnp.copy, batch_stats) if with_target else {},
      rng=jax.random.key_data(run_key))


def replicate(tree, mesh: Mesh):
  """Places a host pytree on every device of `mesh` (replicated, works multi-process:
  every process must pass the same values)."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from this process's slice (split along `AXIS`)."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def local_copy(tree):
  """A host (numpy) copy of a replicated pytree, readable in any process."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def augment_fn_from_recipe(recipe_name: Optional[str]) -> Callable:
  """(step key, global example ids [B], images [B, ...]) -> (view1, view2).

  Each example's views depend only on (step key, its global position), so they do not
  change with the number of devices or processes. 'none' returns the input twice
  (vector data, tests).
  """
  if recipe_name in (None, "none"):
    return lambda key, ids, images: (images, images)
  if recipe_name == augment.VECTOR_NOISE:
    return lambda key, ids, x: augment.noisy_views(key, x, example_ids=ids)
  recipe = augment.get_recipe(recipe_name)
  return lambda key, ids, images: augment.two_views(key, images, recipe=recipe,
                                                    example_ids=ids)


def _norm_stats(x, axis_name, prefix):
  n = jnp.linalg.norm(x.astype(jnp.float32), axis=-1)
  return {f"{prefix}_mean": jax.lax.pmean(jnp.mean(n), axis_name),
          f"{prefix}_min": jax.lax.pmin(jnp.min(n), axis_name),
          f"{prefix}_max": jax.lax.pmax(jnp.max(n), axis_name)}


def _per_device_step(state: TrainState, batch, *, apply_fn, tx, method, spec, schedule,
                     augment_fn, tau_fn, accumulation_steps, sync_batchnorm):
  axis = AXIS
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  images = batch["input"]
  local_b = images.shape[0]
  global_ids = jax.lax.axis_index(axis) * local_b + jnp.arange(local_b)
  views = augment_fn(step_key, global_ids, images)

  loss, grads, aux = methods.loss_and_grads(
      method, spec, state.params, state.batch_stats, state.target_params,
      state.target_batch_stats, views, apply_fn=apply_fn)
  # Average over devices: each device's gradient already holds, through the transposes
  # of BatchNorm's pmean and all_gather, its share of every device's loss.
  grads = jax.lax.pmean(grads, axis)
  loss = jax.lax.pmean(loss, axis)
  batch_stats = aux["batch_stats"]
  if not sync_batchnorm:  # per-device statistics: average the running estimates.
    batch_stats = jax.lax.pmean(batch_stats, axis)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  opt_step = state.step // accumulation_steps
  target_params, target_batch_stats = state.target_params, state.target_batch_stats
  if tau_fn is not None:  # BYOL: EMA of the online network after each optimiser update.
    tau = tau_fn(opt_step)
    updated = (state.step + 1) % accumulation_steps == 0
    ema = lambda new, old: jnp.where(updated, optax.incremental_update(new, old, 1.0 - tau), old)
    target_params = jax.tree.map(ema, params, target_params)
    target_batch_stats = jax.tree.map(ema, batch_stats, target_batch_stats)

  lr = jnp.asarray(schedule(opt_step), jnp.float32)
  metrics = {"loss": loss, "lr": lr, "grad_norm": optax.tree.norm(grads),
             "param_norm": optax.tree.norm(params)}
  for v, out in enumerate(aux["outputs"], start=1):
    for head in HEADS:
      if head in out:
        metrics.update(_norm_stats(out[head], axis, f"norm_{head}_v{v}"))
  sq_norms = jnp.concatenate([jnp.sum(jnp.square(e), axis=-1) for e in aux["embeddings"]])
  # The paper's effective step size of an embedding, lr / ‖z‖² (docs/paper.md §1).
  metrics["effective_step"] = jax.lax.pmean(jnp.mean(lr / sq_norms), axis)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, target_params=target_params,
                            target_batch_stats=target_batch_stats)
  return new_state, metrics


def make_train_step(*, apply_fn: Callable, tx: optax.GradientTransformation,
                    spec: methods.MethodSpec, schedule: Callable, mesh: Mesh,
                    augment_fn: Callable, tau_fn: Optional[Callable] = None,
                    accumulation_steps: int = 1, sync_batchnorm: bool = True) -> Callable:
  """Returns the jitted `train_step(state, batch) -> (state, metrics)`.

  `batch` is {'input': [global B, ...]} sharded along the mesh axis; `state` is
  replicated and donated. `spec.axis_name` must be `AXIS` for gathered negatives;
  the model's `bn_axis_name` must be `AXIS` when `sync_batchnorm`.
  """
  per_device = functools.partial(
      _per_device_step, apply_fn=apply_fn, tx=tx, method=methods.get_method(spec.name),
      spec=spec, schedule=schedule,
      augment_fn=augment_fn, tau_fn=tau_fn, accumulation_steps=accumulation_steps,
      sync_batchnorm=sync_batchnorm)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)
