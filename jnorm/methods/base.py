"""What every SSL method shares: the `Method` interface, the two-view forward pass, and
the loss with GradScale in either of its two forms.

A method maps (params, batch_stats, target variables, two views) to a scalar loss and
the embeddings it saw. It knows nothing about optimisers or devices beyond an optional
mesh axis name (for gathered negatives). Shapes: views `[B, H, W, C]` (or `[B, D]`),
embeddings `[B, P]`.

A method is a `Method` object registered in `jnorm.methods.METHODS`; the training code
never branches on a method's name. Adding a method is one module defining a `Method`
and one line in the registry.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jnorm import errors
from jnorm import gradscale

NEGATIVES = ("local", "global")
GRADSCALE_FORMS = ("custom_vjp", "optax")


class MethodSpec(NamedTuple):
  """The static choices of a run's loss (hashable: safe as a jit static argument)."""
  name: str = "simclr"
  loss: str = "infonce"
  temperature: float = 0.5
  gradscale_power: float = 0.0
  gradscale_form: str = "custom_vjp"
  negatives: str = "local"
  axis_name: Any = None


@dataclasses.dataclass(frozen=True)
class Method:
  """One SSL method.

  Attributes:
    name: the registry name (`config.method`).
    loss_head: the network output the loss differentiates and GradScale rescales:
      'projector' (SimCLR's z) or 'predictor' (SimSiam's and BYOL's p, because their
      loss reaches the network only through p: the targets are stop-gradient).
    needs_predictor: the network must have a predictor head.
    needs_target_network: the state holds an EMA target network (BYOL).
    targets: (outs, apply_fn, target_params, target_batch_stats, views) -> the
      constant targets the loss compares against ((None, None) if none).
    loss: (spec, (e1, e2), targets) -> scalar loss.
    check_config: (config) -> None; raises `ConfigError` for fields this method
      cannot use (called once, by `jnorm.training.config.validate`).
  """
  name: str
  loss_head: str
  needs_predictor: bool
  needs_target_network: bool
  targets: Callable
  loss: Callable
  check_config: Callable


def no_targets(outs, apply_fn, target_params, target_batch_stats, views):
  del outs, apply_fn, target_params, target_batch_stats, views
  return (None, None)


def check_predictor(method: Method, config) -> None:
  """The predictor head is present exactly when the method uses one."""
  has = bool(config.model.predictor_hidden)
  if method.needs_predictor and not has:
    raise errors.ConfigError(
        f"config.model.predictor_hidden=0 but method {method.name!r} needs a predictor; "
        "set it (e.g. 512)")
  if has and not method.needs_predictor:
    raise errors.ConfigError(
        f"config.model.predictor_hidden must be 0 for method {method.name!r} (it has no "
        "predictor); remove the override")


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


def _embeddings(method: Method, outs) -> tuple:
  return outs[0][method.loss_head], outs[1][method.loss_head]


def loss_and_grads(method: Method, spec: MethodSpec, params, batch_stats, target_params,
                   target_batch_stats, views, *, apply_fn: Callable):
  """(loss, grads wrt params, aux) of `method`, GradScale in the form `spec.gradscale_form`.

  'custom_vjp': `jax.value_and_grad` through the loss with `gradscale.gradscale` on the
  embeddings. 'optax': `gradscale.embedding_grad_then_vjp` with
  `scale_by_embedding_norm(power)` applied to dL/de. Both compute ‖e_i‖^p · ∂L/∂e_i per
  row before the pullback. GradScale with p = 0 is skipped (bit-identical by design).

  Returns:
    (loss, grads, aux) with aux = {'batch_stats': updated, 'outputs': [view1 dict,
    view2 dict], 'embeddings': the (e1, e2) the loss saw}.
  """
  def embed(p):
    outs, new_stats = forward_views(apply_fn, p, batch_stats, views)
    return _embeddings(method, outs), (outs, new_stats)

  def loss_of(emb, embed_aux):
    outs = embed_aux[0]
    targets = method.targets(outs, apply_fn, target_params, target_batch_stats, views)
    return method.loss(spec, emb, targets)

  if spec.gradscale_form == "optax":
    loss, grads, (outs, new_stats) = gradscale.embedding_grad_then_vjp(
        embed, params, loss_of, has_aux=True,
        transform=gradscale.scale_by_embedding_norm(spec.gradscale_power))
  else:
    def scaled_loss(p):
      emb, embed_aux = embed(p)
      emb = tuple(gradscale.gradscale(e, power=spec.gradscale_power) for e in emb)
      return loss_of(emb, embed_aux), embed_aux
    (loss, (outs, new_stats)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(params)
  return loss, grads, {"batch_stats": new_stats, "outputs": outs,
                       "embeddings": _embeddings(method, outs)}


def gathered(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """x from every device on `axis_name`, tiled [N·B, ...] (x itself without an axis)."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)
