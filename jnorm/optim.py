"""Optimisers, learning-rate schedules, weight-decay masks and cut-initialization.

Everything here is a pure factory built from optax pieces. Only
`jnorm.training.build` reads a config: it passes each field of `config.optim`,
`config.norm` and `config.byol` to the keyword argument of the same name here, and
`jnorm.training.config.validate` calls the `check_*` functions (the one check of each
field).

References:
  Draganov et al. 2025, "On the Importance of Embedding Norms in Self-Supervised
  Learning" (ICML): cut-initialization, weight decay as norm control.
  Draganov et al. 2024, "The Hidden Pitfalls of the Cosine Similarity Loss"
  (arXiv 2406.16468): cut-initialization.
  You et al. 2017, "Large Batch Training of Convolutional Networks": LARS.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jnorm import errors

SCHEDULES = ("warmup_cosine", "constant")
SCHEDULE_MODES = ("standard", "code_faithful")
OPTIMIZERS = ("sgd", "lars")
WEIGHT_DECAY_MASKS = ("all", "exclude_bn_bias")
CUT_SCOPES = ("all", "last_layer")


def check_schedule(*, learning_rate: float, warmup_epochs: float, end_learning_rate: float,
                   schedule: str, schedule_mode: str) -> None:
  """The one check of the learning-rate schedule settings (`config.optim`)."""
  errors.check_positive("optim.learning_rate", learning_rate)
  errors.check_positive("optim.warmup_epochs", warmup_epochs, allow_zero=True)
  errors.check_positive("optim.end_learning_rate", end_learning_rate, allow_zero=True)
  errors.check_choice("optim.schedule", schedule, SCHEDULES)
  errors.check_choice("optim.schedule_mode", schedule_mode, SCHEDULE_MODES)


def learning_rate_schedule(*, learning_rate: float, total_steps: int, steps_per_epoch: int,
                           warmup_epochs: float, end_learning_rate: float = 1e-3,
                           schedule: str = "warmup_cosine", schedule_mode: str = "standard",
                           accumulation_steps: int = 1) -> optax.Schedule:
  """The learning rate as a function of the optimiser update.

  'warmup_cosine': linear warm-up from 0 to `learning_rate` over `warmup_epochs`, then a
  cosine decay to the absolute value `end_learning_rate` at the end of the run (the
  reference's "cosine to 1e-3"). 'constant': `learning_rate` throughout.

  schedule_mode 'code_faithful' reproduces the reference code (docs/paper.md §5.2): its
  schedule returns an absolute LR that is then applied as a multiplier on the base LR,
  so the effective rate is learning_rate * schedule(step) and the peak is learning_rate²
  (0.36 for SimCLR's 0.6).

  The keyword arguments other than `total_steps` and `steps_per_epoch` are the fields of
  `config.optim` of the same names.

  Args:
    learning_rate: peak learning rate.
    total_steps: training steps (batches) of the whole run.
    steps_per_epoch: training steps per epoch (converts `warmup_epochs` to steps).
    warmup_epochs: linear warm-up length in epochs (0 for none; may be fractional).
    end_learning_rate: final absolute learning rate of the cosine.
    schedule: one of SCHEDULES.
    schedule_mode: one of SCHEDULE_MODES.
    accumulation_steps: batches per optimiser update (`make_optimizer`). The schedule
      counts updates: max(1, total_steps // accumulation_steps) of them, of which
      round(warmup_epochs * steps_per_epoch) // accumulation_steps warm up.
  """
  check_schedule(learning_rate=learning_rate, warmup_epochs=warmup_epochs,
                 end_learning_rate=end_learning_rate, schedule=schedule,
                 schedule_mode=schedule_mode)
  errors.check_positive("optim.accumulation_steps", accumulation_steps)
  num_updates = max(1, int(total_steps) // accumulation_steps)
  warmup_steps = round(warmup_epochs * steps_per_epoch) // accumulation_steps
  if schedule == "constant":
    fn = optax.constant_schedule(learning_rate)
  else:
    warmup_steps = int(min(warmup_steps, max(num_updates - 1, 0)))
    fn = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
        decay_steps=max(num_updates, warmup_steps + 1), end_value=end_learning_rate)
  if schedule_mode == "code_faithful":
    # Deviation kept on purpose (faithful mode only): the reference multiplies its
    # absolute schedule by the base LR, squaring the peak.
    return lambda step: learning_rate * fn(step)
  return fn


def _leaf_name(path) -> str:
  last = path[-1]
  return str(getattr(last, "key", getattr(last, "name", last)))


def _is_bn_or_bias(path) -> bool:
  """True for biases and BatchNorm affine parameters ('bias' / 'scale' leaves)."""
  return _leaf_name(path) in ("bias", "scale")


def decay_mask(params: Any, *, weight_decay_mask: str) -> Any:
  """A boolean pytree like `params`: True where weight decay applies.

  weight_decay_mask 'all' decays every parameter (the reference); 'exclude_bn_bias'
  skips biases and BatchNorm scales/offsets (common practice, e.g. for LARS).
  """
  errors.check_choice("optim.weight_decay_mask", weight_decay_mask, WEIGHT_DECAY_MASKS)
  if weight_decay_mask == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(lambda p, _: not _is_bn_or_bias(p), params)


def check_optimizer(*, name: str, momentum: float, weight_decay: float,
                    weight_decay_mask: str, trust_coefficient: float,
                    accumulation_steps: int) -> None:
  """The one check of the optimiser settings (`config.optim`)."""
  errors.check_choice("optim.name", name, OPTIMIZERS)
  errors.check_positive("optim.momentum", momentum, allow_zero=True)
  errors.check_positive("optim.weight_decay", weight_decay, allow_zero=True)
  errors.check_choice("optim.weight_decay_mask", weight_decay_mask, WEIGHT_DECAY_MASKS)
  errors.check_positive("optim.trust_coefficient", trust_coefficient)
  errors.check_positive("optim.accumulation_steps", accumulation_steps)


def make_optimizer(*, name: str, learning_rate: optax.ScalarOrSchedule, momentum: float,
                   nesterov: bool, weight_decay: float, weight_decay_mask: str = "all",
                   trust_coefficient: float = 0.001,
                   accumulation_steps: int = 1) -> optax.GradientTransformation:
  """SGD (torch-style coupled weight decay) or LARS, optionally with accumulation.

  'sgd': g + wd·w, then heavy-ball / Nesterov momentum and the learning rate: the
  update of torch.optim.SGD(momentum, nesterov, weight_decay) that the reference uses.
  'lars': optax.lars with the same mask for decay and for the trust ratio.
  `accumulation_steps` > 1 wraps the optimiser in optax.MultiSteps, averaging the
  gradients of that many micro-batches into one update (the reference's effective
  batch 1024 for SimSiam/BYOL). The schedule then counts *optimiser* updates.

  The keyword arguments other than `learning_rate` (a number or a
  `learning_rate_schedule`) are the fields of `config.optim` of the same names;
  `weight_decay_mask` is one of WEIGHT_DECAY_MASKS (see `decay_mask`).
  """
  check_optimizer(name=name, momentum=momentum, weight_decay=weight_decay,
                  weight_decay_mask=weight_decay_mask, trust_coefficient=trust_coefficient,
                  accumulation_steps=accumulation_steps)
  mask = functools.partial(decay_mask, weight_decay_mask=weight_decay_mask)
  if name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
  else:
    tx = optax.lars(learning_rate, weight_decay=weight_decay,
                    weight_decay_mask=mask, trust_coefficient=trust_coefficient,
                    trust_ratio_mask=mask, momentum=momentum, nesterov=nesterov)
  if accumulation_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accumulation_steps)
  return tx


def last_projector_layer_name(params: Any) -> str:
  """Name of the projector's final Dense submodule (the highest-numbered one holding a
  'kernel', e.g. 'dense2' of SimCLR's 2-layer projector)."""
  projector = params.get("projector", {})
  dense = [k for k, v in projector.items() if isinstance(v, dict) and "kernel" in v]
  if not dense:
    raise errors.ConfigError(
        "config.norm.cut_scope='last_layer' needs a projector with Dense layers; use 'all'")
  number = lambda name: int("".join(c for c in name if c.isdigit()) or 0)
  return max(dense, key=number)


def _keys(path) -> tuple:
  return tuple(str(getattr(k, "key", k)) for k in path)


def check_cut(*, cut_factor: float, cut_scope: str) -> None:
  """The one check of the cut settings: c > 0 (c < 1 scales up) and a known scope."""
  errors.check_choice("norm.cut_scope", cut_scope, CUT_SCOPES)
  errors.check_positive("norm.cut_factor", cut_factor)


def cut_init(params: Any, *, cut_factor: float, cut_scope: str = "all",
             cut_bn_affine: bool = True, batch_stats: Any = None) -> Any:
  """Cut-initialization: divides the initial parameters by `cut_factor` (Draganov et al. 2024).

  Applied ONCE to freshly initialised parameters, never on resume (the reference
  re-applies it on resume: a bug not reproduced here).

  Args:
    params: the network's 'params' collection (BatchNorm running statistics live in
      'batch_stats' and are never touched).
    cut_factor: c > 0; 1 is a no-op, c < 1 multiplies the parameters by 1/c (an
      initial-scale sweep).
    cut_scope: 'all' divides every parameter; 'last_layer' only the projector's final
      Dense layer (kernel and bias), which scales the embeddings by 1/c directly.
    cut_bn_affine: with scope 'all', also divide BatchNorm scale/bias. True is the
      reference's (faithful) behaviour: it divides every parameter.
    batch_stats: the 'batch_stats' collection; needed with cut_bn_affine=False to
      tell BatchNorm modules (those with running statistics) from the others.
  """
  check_cut(cut_factor=cut_factor, cut_scope=cut_scope)
  if cut_factor == 1.0:
    return params
  if cut_scope == "last_layer":
    last = ("projector", last_projector_layer_name(params))
    should_cut = lambda keys: keys[:2] == last
  elif cut_bn_affine:
    should_cut = lambda keys: True
  else:
    bn_modules = {_keys(p)[:-1] for p, _ in
                  jax.tree_util.tree_flatten_with_path(batch_stats or {})[0]}
    should_cut = lambda keys: keys[:-1] not in bn_modules
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x / jnp.asarray(cut_factor, x.dtype) if should_cut(_keys(p)) else x, params)


TAU_SCHEDULES = ("fixed", "cosine")


def check_tau(*, tau_base: float, tau_schedule: str) -> None:
  """The one check of BYOL's EMA settings."""
  errors.check_choice("byol.tau_schedule", tau_schedule, TAU_SCHEDULES)
  if not 0 <= tau_base <= 1:
    raise errors.ConfigError(f"config.byol.tau_base={tau_base!r} must be in [0, 1]")


def ema_decay_schedule(*, tau_base: float, total_steps: int, tau_schedule: str) -> Callable:
  """BYOL's target decay τ(step): 'fixed' τ_base, or 'cosine' 1-(1-τ_base)(cos(πk/K)+1)/2."""
  check_tau(tau_base=tau_base, tau_schedule=tau_schedule)
  if tau_schedule == "fixed":
    return lambda step: jnp.asarray(tau_base, jnp.float32)
  # optax's cosine decay from (1 - τ_base) to 0 gives exactly 1 - τ(step).
  one_minus = optax.cosine_decay_schedule(1.0 - tau_base, decay_steps=max(total_steps, 1))
  return lambda step: 1.0 - one_minus(step)
