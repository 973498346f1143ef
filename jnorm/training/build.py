"""Building a run from a validated training config: network, optimiser, schedule,
method and the sharded train step (`build_run`).

Each field of `config.optim`, `config.norm` and `config.byol` is passed to the
`jnorm.optim` / `jnorm.training.step` keyword argument of the same name.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp

from jnorm import errors
from jnorm import methods
from jnorm import models
from jnorm import optim
from jnorm.training import step as ts


class Run(NamedTuple):
  """Everything built from a config for one run.

  `net` is the training network (BatchNorm synced over the mesh axis when
  `config.sync_batchnorm`); `eval_net` the same network with local BatchNorm, for
  evaluation on the host (same variables).
  """
  net: Any
  eval_net: Any
  tx: Any
  schedule: Callable
  spec: Any
  steps_per_epoch: int
  total_steps: int
  num_epochs: float
  init_state: Callable
  train_step: Optional[Callable]


def run_info(ds, config) -> dict:
  """The dataset facts a run is built from (also saved, for `load_trained`)."""
  steps_per_epoch = ds.num_train // config.batch_size
  if steps_per_epoch == 0:
    raise errors.ConfigError(
        f"config.batch_size={config.batch_size} exceeds the {ds.num_train} train examples; "
        "lower it")
  return {"input_shape": tuple(int(d) for d in ds.input_shape),
          "steps_per_epoch": int(steps_per_epoch)}


def build_run(config, *, mesh, input_shape, steps_per_epoch) -> Run:
  """The network, optimiser, method spec, initial state and (with a mesh) the train step."""
  net = models.build_ssl_net(config.model,
                             bn_axis_name=ts.AXIS if config.sync_batchnorm else None)
  eval_net = models.build_ssl_net(config.model)
  o = config.optim
  total_steps = max(1, round(config.num_epochs * steps_per_epoch))
  opt_steps = max(1, total_steps // o.accumulation_steps)
  schedule = optim.learning_rate_schedule(
      learning_rate=o.learning_rate, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
      warmup_epochs=o.warmup_epochs, end_learning_rate=o.end_learning_rate,
      schedule=o.schedule, schedule_mode=o.schedule_mode,
      accumulation_steps=o.accumulation_steps)
  tx = optim.make_optimizer(
      name=o.name, learning_rate=schedule, momentum=o.momentum, nesterov=o.nesterov,
      weight_decay=o.weight_decay, weight_decay_mask=o.weight_decay_mask,
      trust_coefficient=o.trust_coefficient, accumulation_steps=o.accumulation_steps)
  spec = methods.MethodSpec(
      name=config.method, loss=config.loss.name, temperature=float(config.loss.temperature),
      gradscale_power=float(config.norm.gradscale_power),
      gradscale_form=config.norm.gradscale_form, negatives=config.negatives,
      axis_name=ts.AXIS)
  n = config.norm
  init_state = functools.partial(
      ts.create_train_state, net=net, tx=tx, seed=config.seed,
      sample_input=jnp.zeros((2,) + tuple(input_shape), jnp.float32),
      cut_factor=float(n.cut_factor), cut_scope=n.cut_scope,
      cut_bn_affine=bool(n.cut_bn_affine),
      with_target=methods.get_method(config.method).needs_target_network)
  train_step = None
  if mesh is not None:
    tau_fn = None
    if methods.get_method(config.method).needs_target_network:
      tau_fn = optim.ema_decay_schedule(total_steps=opt_steps, **config.byol)
    train_step = ts.make_train_step(
        apply_fn=net.apply, tx=tx, spec=spec, schedule=schedule, mesh=mesh,
        augment_fn=ts.augment_fn_from_recipe(config.augment), tau_fn=tau_fn,
        accumulation_steps=o.accumulation_steps, sync_batchnorm=config.sync_batchnorm)
  return Run(net=net, eval_net=eval_net, tx=tx, schedule=schedule, spec=spec,
             steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_epochs=total_steps / steps_per_epoch,
             init_state=init_state, train_step=train_step)
