"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): SimSiam's loss with targets
from an EMA copy of the network (the target network), updated after each optimiser
update in the train step (`jnorm.optim.ema_decay_schedule`)."""

import jax
import jax.numpy as jnp

from jnorm import optim
from jnorm.methods import base
from jnorm.methods import simsiam


def target_projections(outs, apply_fn, target_params, target_batch_stats, views):
  """The target network's projections (z'_1, z'_2): train-mode BatchNorm, its updated
  statistics discarded (the target's statistics are an EMA of the online ones)."""
  del outs
  targets = []
  for view in views:
    out, _ = apply_fn({"params": target_params, "batch_stats": target_batch_stats}, view,
                      train=True, mutable=["batch_stats"])
    # stop_gradient: the target network is never trained by the loss; it only follows
    # the online network by EMA.
    targets.append(jax.lax.stop_gradient(out["projector"].astype(jnp.float32)))
  return tuple(targets)


def _check_config(config) -> None:
  simsiam.check_non_contrastive(BYOL, config)
  optim.check_tau(**config.byol)


BYOL = base.Method(name="byol", loss_head="predictor", needs_predictor=True,
                   needs_target_network=True, targets=target_projections,
                   loss=simsiam.negative_cosine, check_config=_check_config)
