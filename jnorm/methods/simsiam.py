"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): the
symmetric negative cosine of each view's predictor output p against the other view's
projector output z, with z stop-gradient (inside `losses.negative_cosine_loss`)."""

from jnorm import errors
from jnorm import losses
from jnorm.methods import base


def _targets(outs, apply_fn, target_params, target_batch_stats, views):
  del apply_fn, target_params, target_batch_stats, views
  return outs[0]["projector"], outs[1]["projector"]


def negative_cosine(spec: base.MethodSpec, emb: tuple, targets: tuple):
  """Symmetric negative cosine of predictions against the other view's targets."""
  del spec
  (p1, p2), (z1, z2) = emb, targets
  return losses.negative_cosine_loss(p1, p2, z1, z2)


def check_non_contrastive(method: base.Method, config) -> None:
  """SimSiam and BYOL: no negatives, so the contrastive settings must stay at default."""
  if config.negatives != "local":
    raise errors.ConfigError(
        f"config.negatives={config.negatives!r} has no effect for method {method.name!r} "
        "(no negatives); leave it 'local'")
  base.check_predictor(method, config)


SIMSIAM = base.Method(name="simsiam", loss_head="predictor", needs_predictor=True,
                      needs_target_network=False, targets=_targets, loss=negative_cosine,
                      check_config=lambda config: check_non_contrastive(SIMSIAM, config))
