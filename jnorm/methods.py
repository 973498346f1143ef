"""SimCLR, SimSiam and BYOL as pure loss functions of the network parameters.

A method maps (params, batch_stats, target params, two views) to a scalar loss and
the embeddings it saw. It knows nothing about optimisers or devices beyond an optional
mesh axis name (for gathered negatives). Shapes: views `[B, H, W, C]` (or `[B, D]`),
embeddings `[B, P]`.

Which embeddings GradScale sees (`loss_embeddings`): SimCLR's projector output z;
SimSiam's and BYOL's predictor outputs p, because the loss's gradient reaches the
network only through p (the targets z / target-net outputs are stop-gradient), so
rescaling p's gradient by ‖p‖^power is the analogue of SimCLR's rescaling of z.

References:
  Chen et al. 2020, "A Simple Framework for Contrastive Learning" (SimCLR).
  Chen & He 2021, "Exploring Simple Siamese Representation Learning" (SimSiam).
  Grill et al. 2020, "Bootstrap Your Own Latent" (BYOL).
  Draganov et al. 2025 (GradScale, PAPER.md §1).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jnorm import errors

METHODS = ("simclr", "simsiam", "byol")
CONTRASTIVE_LOSSES = ("infonce", "nt_xent", "attraction", "repulsion")
NEGATIVES = ("local", "global")
GRADSCALE_FORMS = ("custom_vjp", "optax")


class MethodSpec(NamedTuple):
  """The static choices of a method (hashable: safe as a jit static argument)."""
  name: str = "simclr"
  loss: str = "infonce"
  temperature: float = 0.5
  gradscale_power: float = 0.0
  gradscale_form: str = "custom_vjp"
  negatives: str = "local"
  axis_name: Any = None


def validate_spec(spec: MethodSpec) -> None:
  errors.check_choice("method", spec.name, METHODS)
  errors.check_choice("negatives", spec.negatives, NEGATIVES)
  errors.check_choice("gradscale.form", spec.gradscale_form, GRADSCALE_FORMS)
  if spec.name == "simclr":
    errors.check_choice("loss.name", spec.loss, CONTRASTIVE_LOSSES)
    errors.check_positive("loss.temperature", spec.temperature)


def forward_views(apply_fn: Callable, params, batch_stats, views):
  """Runs the online network on each view in turn (BatchNorm statistics per view, as
  the reference's separate forward passes), threading the BatchNorm state.

  Returns ([outputs of view 1, outputs of view 2], new batch_stats); outputs are dicts
  {'backbone', 'projector'(, 'predictor')} of float32 `[B, F]` arrays.
  """
  outs = []
  for view in views:
    out, mutated = apply_fn({"params": params, "batch_stats": batch_stats}, view,
                            train=True, mutable=["batch_stats"])
    batch_stats = mutated["batch_stats"]
    # Norms, losses and GradScale run in float32 even for a bfloat16 network.
    outs.append({k: v.astype(jnp.float32) for k, v in out.items()})
  return outs, batch_stats


def target_projections(apply_fn: Callable, target_params, target_batch_stats, views):
  """BYOL's target-network projections [z'_1, z'_2] (train-mode BatchNorm, its
  updated statistics discarded: the target's statistics are an EMA of the online ones)."""
  outs = []
  for view in views:
    out, _ = apply_fn({"params": target_params, "batch_stats": target_batch_stats}, view,
                      train=True, mutable=["batch_stats"])
    # stop_gradient: the target network is never trained by the loss; it only follows
    # the online network by EMA (BYOL).
    outs.append(jax.lax.stop_gradient(out["projector"].astype(jnp.float32)))
  return outs


def loss_embeddings(spec: MethodSpec, outs) -> tuple:
  """The embeddings the loss differentiates: (z1, z2) for SimCLR, (p1, p2) otherwise."""
  head = "projector" if spec.name == "simclr" else "predictor"
  return outs[0][head], outs[1][head]


def loss_from_embeddings(spec: MethodSpec, emb: tuple, targets: tuple):
  """The scalar loss from the differentiated embeddings and the (constant) targets.

  SimCLR with negatives 'global' gathers both views' embeddings from every device on
  `spec.axis_name` (tiled: [N·B, P]) and evaluates the full-batch loss on each device.
  The backward of all_gather is a psum_scatter, so each device's embeddings receive the
  sum over devices of the (identical) loss gradients, i.e. N times the full-batch
  gradient of its own rows; averaging the parameter gradients over devices (the train
  step's pmean) then yields exactly the full-batch gradient. The loss is computed N
  times (cheap next to the network). With 'local' negatives each device contrasts
  only its own rows.
  SimSiam/BYOL: the symmetric negative cosine of p against the other view's target
  (stop-gradient inside `negative_cosine_loss`); negatives do not apply.
  """
  from jnorm import losses  # pylint: disable=g-import-not-at-top
  if spec.name == "simclr":
    z1, z2 = emb
    if spec.negatives == "global" and spec.axis_name is not None:
      z1 = jax.lax.all_gather(z1, spec.axis_name, tiled=True)
      z2 = jax.lax.all_gather(z2, spec.axis_name, tiled=True)
    loss_fn = losses.get_contrastive_loss(spec.loss)
    return loss_fn(z1, z2, temperature=spec.temperature)
  p1, p2 = emb
  z1, z2 = targets
  return losses.negative_cosine_loss(p1, p2, z1, z2)


def _targets(spec, outs, apply_fn, target_params, target_batch_stats, views):
  if spec.name == "simsiam":
    return outs[0]["projector"], outs[1]["projector"]
  if spec.name == "byol":
    return tuple(target_projections(apply_fn, target_params, target_batch_stats, views))
  return (None, None)


def loss_and_embeddings(params, batch_stats, target_params, target_batch_stats, views, *,
                        apply_fn: Callable, spec: MethodSpec):
  """The method's loss, differentiable in `params`, with GradScale in custom_vjp form.

  Args:
    params, batch_stats: the online network's variables.
    target_params, target_batch_stats: BYOL's target network (ignored otherwise).
    views: (v1, v2), each `[B, ...]`.
    apply_fn: the SSLNet's `apply`.
    spec: the method's static choices.

  Returns:
    (loss, aux) with aux = {'batch_stats': updated, 'outputs': [view1 dict, view2 dict],
    'embeddings': the (e1, e2) the loss saw}.
  """
  from jnorm import gradscale  # pylint: disable=g-import-not-at-top
  outs, new_stats = forward_views(apply_fn, params, batch_stats, views)
  emb = loss_embeddings(spec, outs)
  if spec.gradscale_power != 0:  # p = 0: GradScale is skipped, bit-identical by design.
    emb = tuple(gradscale.gradscale(e, power=spec.gradscale_power) for e in emb)
  targets = _targets(spec, outs, apply_fn, target_params, target_batch_stats, views)
  loss = loss_from_embeddings(spec, emb, targets)
  return loss, {"batch_stats": new_stats, "outputs": outs, "embeddings": emb}


def loss_and_grads(params, batch_stats, target_params, target_batch_stats, views, *,
                   apply_fn: Callable, spec: MethodSpec):
  """(loss, grads wrt params, aux), with GradScale in the form `spec.gradscale_form`.

  'custom_vjp': jax.value_and_grad through `loss_and_embeddings` (gradscale inside).
  'optax': the network's forward pass under jax.vjp, dL/de from the loss alone,
  `scale_by_embedding_norm(power)` applied to dL/de, then pulled back through the
  network. Both compute ‖e_i‖^p · ∂L/∂e_i per row before the pullback.
  """
  if spec.gradscale_form == "custom_vjp":
    (loss, aux), grads = jax.value_and_grad(loss_and_embeddings, has_aux=True)(
        params, batch_stats, target_params, target_batch_stats, views,
        apply_fn=apply_fn, spec=spec)
    return loss, grads, aux

  from jnorm import gradscale  # pylint: disable=g-import-not-at-top

  def embed(p):
    outs, new_stats = forward_views(apply_fn, p, batch_stats, views)
    return loss_embeddings(spec, outs), (outs, new_stats)

  emb, pullback, (outs, new_stats) = jax.vjp(embed, params, has_aux=True)
  targets = _targets(spec, outs, apply_fn, target_params, target_batch_stats, views)
  loss, d_emb = jax.value_and_grad(lambda e: loss_from_embeddings(spec, e, targets))(emb)
  scaler = gradscale.scale_by_embedding_norm(spec.gradscale_power)
  d_emb, _ = scaler.update(d_emb, scaler.init(emb), emb)
  (grads,) = pullback(d_emb)
  return loss, grads, {"batch_stats": new_stats, "outputs": outs, "embeddings": emb}
