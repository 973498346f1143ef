"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning"): a
contrastive loss on the projector outputs z of two views.

Losses (`jnorm.losses`): 'infonce' (the reference's one-directional form, positive
left out of the denominator), 'nt_xent' (standard SimCLR), 'attraction', 'repulsion'.

Negatives 'global' gathers both views' embeddings from every device on the mesh axis
(tiled: [N·B, P]) and evaluates the full-batch loss on each device. The backward of
all_gather is a psum_scatter, so each device's embeddings receive the sum over devices
of the (identical) loss gradients, i.e. N times the full-batch gradient of its own rows;
averaging the parameter gradients over devices (the train step's pmean) then yields
exactly the full-batch gradient. With 'local' negatives each device contrasts only its
own rows.
"""

from jnorm import errors
from jnorm import losses
from jnorm.methods import base

CONTRASTIVE_LOSSES = ("infonce", "nt_xent", "attraction", "repulsion")


def _loss(spec: base.MethodSpec, emb: tuple, targets: tuple):
  del targets  # contrastive: the two views are each other's targets
  z1, z2 = emb
  if spec.negatives == "global":
    z1, z2 = base.gathered(z1, spec.axis_name), base.gathered(z2, spec.axis_name)
  return losses.get_contrastive_loss(spec.loss)(z1, z2, temperature=spec.temperature)


def _check_config(config) -> None:
  errors.check_choice("loss.name", config.loss.name, CONTRASTIVE_LOSSES)
  errors.check_positive("loss.temperature", config.loss.temperature)
  base.check_predictor(SIMCLR, config)


SIMCLR = base.Method(name="simclr", loss_head="projector", needs_predictor=False,
                     needs_target_network=False, targets=base.no_targets, loss=_loss,
                     check_config=_check_config)
