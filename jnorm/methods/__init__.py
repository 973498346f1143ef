"""SSL methods, one module each, and their registry.

  from jnorm import methods
  method = methods.get_method("simsiam")
  loss, grads, aux = methods.loss_and_grads(method, spec, params, batch_stats,
                                            target_params, target_batch_stats, views,
                                            apply_fn=net.apply)

To add a method: write a module defining a `base.Method` and add it to `METHODS`.
"""

from jnorm import errors
from jnorm.methods import byol
from jnorm.methods import simclr
from jnorm.methods import simsiam
from jnorm.methods.base import GRADSCALE_FORMS
from jnorm.methods.base import Method
from jnorm.methods.base import MethodSpec
from jnorm.methods.base import NEGATIVES
from jnorm.methods.base import forward_views
from jnorm.methods.base import loss_and_grads

METHODS = {m.name: m for m in (simclr.SIMCLR, simsiam.SIMSIAM, byol.BYOL)}


def get_method(name: str) -> Method:
  """The registered method called `name`; a one-line ConfigError for any other name."""
  errors.check_choice("method", name, METHODS)
  return METHODS[name]


__all__ = ["GRADSCALE_FORMS", "METHODS", "Method", "MethodSpec", "NEGATIVES",
           "forward_views", "get_method", "loss_and_grads"]
