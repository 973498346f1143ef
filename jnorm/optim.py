"""Optimisers, learning-rate schedules, weight-decay masks and cut-initialization.

Everything here is a pure factory built from optax pieces; only the training loop
reads the config and passes keyword arguments in.

References:
  Draganov et al. 2025, "On the Importance of Embedding Norms in Self-Supervised
  Learning" (ICML): cut-initialization, weight decay as norm control.
  Draganov et al. 2024, "The Hidden Pitfalls of the Cosine Similarity Loss"
  (arXiv 2406.16468): cut-initialization.
  You et al. 2017, "Large Batch Training of Convolutional Networks": LARS.
"""

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


def learning_rate_schedule(*, base_lr: float, total_steps: int, warmup_steps: int,
                           end_lr: float = 1e-3, kind: str = "warmup_cosine",
                           mode: str = "standard") -> optax.Schedule:
  """The learning rate as a function of the optimiser step.

  'warmup_cosine': linear warm-up from 0 to `base_lr` over `warmup_steps`, then a
  cosine decay to the absolute value `end_lr` at `total_steps` (the reference's
  "cosine to 1e-3"). 'constant': `base_lr` throughout.

  mode 'code_faithful' reproduces the reference code (PAPER.md §5): its schedule returns
  an absolute LR that is then applied as a multiplier on the base LR, so the effective
  rate is base_lr * schedule(step) and the peak is base_lr² (0.36 for SimCLR's 0.6).

  Args:
    base_lr: peak learning rate.
    total_steps: optimiser steps of the whole run (> warmup_steps).
    warmup_steps: linear warm-up steps (0 for none).
    end_lr: final absolute learning rate of the cosine.
    kind: one of SCHEDULES.
    mode: one of SCHEDULE_MODES.
  """
  errors.check_choice("optim.schedule", kind, SCHEDULES)
  errors.check_choice("optim.schedule_mode", mode, SCHEDULE_MODES)
  if kind == "constant":
    schedule = optax.constant_schedule(base_lr)
  else:
    warmup_steps = int(min(warmup_steps, max(total_steps - 1, 0)))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base_lr, warmup_steps=warmup_steps,
        decay_steps=max(int(total_steps), warmup_steps + 1), end_value=end_lr)
  if mode == "code_faithful":
    # Deviation kept on purpose (faithful mode only): the reference multiplies its
    # absolute schedule by the base LR, squaring the peak.
    return lambda step: base_lr * schedule(step)
  return schedule


def _leaf_name(path) -> str:
  last = path[-1]
  return str(getattr(last, "key", getattr(last, "name", last)))


def _is_bn_or_bias(path) -> bool:
  """True for biases and BatchNorm affine parameters ('bias' / 'scale' leaves)."""
  return _leaf_name(path) in ("bias", "scale")


def weight_decay_mask(params: Any, *, mode: str) -> Any:
  """A boolean pytree like `params`: True where weight decay applies.

  mode 'all' decays every parameter (the reference); 'exclude_bn_bias' skips biases
  and BatchNorm scales/offsets (common practice, e.g. for LARS).
  """
  errors.check_choice("optim.weight_decay_mask", mode, WEIGHT_DECAY_MASKS)
  if mode == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(lambda p, _: not _is_bn_or_bias(p), params)


def make_optimizer(*, name: str, learning_rate: optax.ScalarOrSchedule, momentum: float,
                   nesterov: bool, weight_decay: float, weight_decay_mask: Any = True,
                   trust_coefficient: float = 0.001,
                   accumulation_steps: int = 1) -> optax.GradientTransformation:
  """SGD (torch-style coupled weight decay) or LARS, optionally with accumulation.

  'sgd': g + wd·w, then heavy-ball / Nesterov momentum and the learning rate: the
  update of torch.optim.SGD(momentum, nesterov, weight_decay) that the reference uses.
  'lars': optax.lars with the same mask for decay and for the trust ratio.
  `accumulation_steps` > 1 wraps the optimiser in optax.MultiSteps, averaging the
  gradients of that many micro-batches into one update (the reference's effective
  batch 1024 for SimSiam/BYOL). The schedule then counts *optimiser* updates.
  """
  errors.check_choice("optim.name", name, OPTIMIZERS)
  errors.check_positive("optim.accumulation_steps", accumulation_steps)
  if name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
  else:
    tx = optax.lars(learning_rate, weight_decay=weight_decay,
                    weight_decay_mask=weight_decay_mask, trust_coefficient=trust_coefficient,
                    trust_ratio_mask=weight_decay_mask, momentum=momentum, nesterov=nesterov)
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
  """Cut-initialization: divides the initial parameters by `factor` (Draganov et al. 2024).

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
  factor = cut_factor
  if factor == 1.0:
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
      lambda p, x: x / jnp.asarray(factor, x.dtype) if should_cut(_keys(p)) else x, params)


TAU_SCHEDULES = ("fixed", "cosine")


def check_tau(*, tau_base: float, tau_schedule: str) -> None:
  """The one check of BYOL's EMA settings."""
  errors.check_choice("byol.tau_schedule", tau_schedule, TAU_SCHEDULES)
  if not 0 <= tau_base <= 1:
    raise errors.ConfigError(f"config.byol.tau_base={tau_base!r} must be in [0, 1]")


def ema_decay_schedule(*, tau_base: float, total_steps: int, tau_schedule: str) -> Callable:
  """BYOL's target decay τ(step): 'fixed' τ_base, or 'cosine' 1-(1-τ_base)(cos(πk/K)+1)/2."""
  check_tau(tau_base=tau_base, tau_schedule=tau_schedule)
  kind = tau_schedule
  if kind == "fixed":
    return lambda step: jnp.asarray(tau_base, jnp.float32)
  # optax's cosine decay from (1 - τ_base) to 0 gives exactly 1 - τ(step).
  one_minus = optax.cosine_decay_schedule(1.0 - tau_base, decay_steps=max(total_steps, 1))
  return lambda step: 1.0 - one_minus(step)
