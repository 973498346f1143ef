"""The fields of a training config, their validation, and building a run from them.

This is the only place the training job reads its config; everything it builds
(network, optimiser, schedule, method, step) takes explicit arguments.

Fields (`defaults()` holds them all; configs/*.py start from it):
  job 'train'; seed (params init, data order, augmentations).
  method 'simclr' | 'simsiam' | 'byol'; negatives 'local' | 'global' (SimCLR only:
    contrast against this device's rows, or against the whole global batch).
  loss.name 'infonce' (reference, one-directional) | 'nt_xent' | 'attraction' |
    'repulsion'; loss.temperature (SimCLR).
  model.*: `jnorm.models.default_model_config()` fields (bn_axis_name is set here).
  data.*: `jnorm.data.get_config_defaults()` fields.  augment: recipe name ('none' = no
    augmentation: both views are the input; 'vector_noise' for vector data).
  batch_size (global, split over devices and processes); num_epochs (may be fractional:
    steps = round(num_epochs * steps_per_epoch)).
  optim.{name 'sgd'|'lars', learning_rate, momentum, nesterov, weight_decay,
    weight_decay_mask 'all'|'exclude_bn_bias', schedule 'warmup_cosine'|'constant',
    schedule_mode 'standard'|'code_faithful', warmup_epochs, end_learning_rate,
    trust_coefficient (LARS), accumulation_steps (optax.MultiSteps)}.
  norm.{cut_factor (1 = off), cut_scope 'all'|'last_layer', cut_bn_affine,
    gradscale_power (0 = off), gradscale_form 'custom_vjp'|'optax'}.
  byol.{tau_base, tau_schedule 'fixed'|'cosine'}.  sync_batchnorm.
  eval.{every_epochs (0 = only powers of two / end), powers_of_two, knn_k,
    knn_temperature, batch_size, linear_probe, probe_epochs, probe_learning_rate,
    probe_batch_size}.
  checkpoint_every_steps, keep_checkpoints, log_every_steps, progress_bar.
  distributed.{coordinator_address ('' = single process), num_processes, process_id}.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import ml_collections

from jnorm import errors


def defaults() -> ml_collections.ConfigDict:
  """Every field of a training config with its default (SimCLR, digits, SmallResNet)."""
  from jnorm import models  # pylint: disable=g-import-not-at-top
  from jnorm import data  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.job = "train"
  c.seed = 0
  c.method = "simclr"
  c.negatives = "local"
  c.loss = ml_collections.ConfigDict({"name": "infonce", "temperature": 0.5})
  c.model = models.default_model_config()
  c.model.backbone = "small_resnet"
  c.data = data.get_config_defaults()
  c.augment = "digits"
  c.batch_size = 128
  c.num_epochs = 32.0
  c.optim = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
      "weight_decay": 0.0, "weight_decay_mask": "all", "schedule": "warmup_cosine",
      "schedule_mode": "standard", "warmup_epochs": 2.0, "end_learning_rate": 1e-3,
      "trust_coefficient": 0.001, "accumulation_steps": 1})
  c.norm = ml_collections.ConfigDict({
      "cut_factor": 1.0, "cut_scope": "all", "cut_bn_affine": True,
      "gradscale_power": 0.0, "gradscale_form": "custom_vjp"})
  c.byol = ml_collections.ConfigDict({"tau_base": 0.99, "tau_schedule": "fixed"})
  c.sync_batchnorm = True
  c.eval = ml_collections.ConfigDict({
      "every_epochs": 0, "powers_of_two": True, "knn_k": 200, "knn_temperature": 0.1,
      "batch_size": 512, "linear_probe": False, "probe_epochs": 100,
      "probe_learning_rate": 1e-2, "probe_batch_size": 256})
  c.checkpoint_every_steps = 100
  c.keep_checkpoints = 3
  c.log_every_steps = 10
  c.progress_bar = True
  c.distributed = ml_collections.ConfigDict({
      "coordinator_address": "", "num_processes": 1, "process_id": 0})
  return c


def _check_fields(config, reference, prefix: str = "") -> None:
  """Unknown fields (typos) -> ConfigError naming the field and the known ones."""
  for key in config.keys():
    if key not in reference:
      raise errors.ConfigError(
          f"config.{prefix}{key} is not a known field; use one of {sorted(reference.keys())}")
    sub = config[key]
    if isinstance(sub, ml_collections.ConfigDict) and key not in ("model", "data"):
      _check_fields(sub, reference[key], prefix=f"{prefix}{key}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field the training job reads; raises a one-line ConfigError."""
  from jnorm import methods, optim  # pylint: disable=g-import-not-at-top
  ref = defaults()
  _check_fields(config, ref)
  for key in config.model.keys():
    if key not in ref.model:
      raise errors.ConfigError(
          f"config.model.{key} is not a known field; use one of {sorted(ref.model.keys())}")
  errors.check_choice("method", config.method, methods.METHODS)
  errors.check_choice("negatives", config.negatives, methods.NEGATIVES)
  if config.method == "simclr":
    errors.check_choice("loss.name", config.loss.name, methods.CONTRASTIVE_LOSSES)
    errors.check_positive("loss.temperature", config.loss.temperature)
  from jnorm import augment  # pylint: disable=g-import-not-at-top
  errors.check_choice("augment", config.augment,
                      tuple(augment.RECIPES) + ("none", augment.VECTOR_NOISE))
  errors.check_positive("batch_size", config.batch_size)
  errors.check_positive("num_epochs", config.num_epochs)
  o = config.optim
  errors.check_choice("optim.name", o.name, optim.OPTIMIZERS)
  errors.check_positive("optim.learning_rate", o.learning_rate)
  errors.check_positive("optim.momentum", o.momentum, allow_zero=True)
  errors.check_positive("optim.weight_decay", o.weight_decay, allow_zero=True)
  errors.check_choice("optim.weight_decay_mask", o.weight_decay_mask, optim.WEIGHT_DECAY_MASKS)
  errors.check_choice("optim.schedule", o.schedule, optim.SCHEDULES)
  errors.check_choice("optim.schedule_mode", o.schedule_mode, optim.SCHEDULE_MODES)
  errors.check_positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
  errors.check_positive("optim.end_learning_rate", o.end_learning_rate, allow_zero=True)
  errors.check_positive("optim.accumulation_steps", o.accumulation_steps)
  n = config.norm
  if n.cut_factor < 1:
    raise errors.ConfigError(f"config.norm.cut_factor={n.cut_factor!r} must be >= 1 (1 = off)")
  errors.check_choice("norm.cut_scope", n.cut_scope, optim.CUT_SCOPES)
  errors.check_choice("norm.gradscale_form", n.gradscale_form, methods.GRADSCALE_FORMS)
  errors.check_choice("byol.tau_schedule", config.byol.tau_schedule, ("fixed", "cosine"))
  if not 0 <= config.byol.tau_base <= 1:
    raise errors.ConfigError(f"config.byol.tau_base={config.byol.tau_base!r} must be in [0, 1]")
  e = config.eval
  for field in ("knn_k", "knn_temperature", "batch_size", "probe_epochs",
                "probe_learning_rate", "probe_batch_size"):
    errors.check_positive(f"eval.{field}", e[field])
  errors.check_positive("eval.every_epochs", e.every_epochs, allow_zero=True)
  for field in ("checkpoint_every_steps", "keep_checkpoints", "log_every_steps"):
    errors.check_positive(field, config[field])
  if config.method in ("simsiam", "byol") and not config.model.predictor_hidden:
    raise errors.ConfigError(
        f"config.model.predictor_hidden=0 but method {config.method!r} needs a predictor; "
        "set it (e.g. 512)")
  if config.method == "simclr" and config.model.predictor_hidden:
    raise errors.ConfigError("config.model.predictor_hidden must be 0 for method 'simclr'")


class Run(NamedTuple):
  """Everything built from a config for one run."""
  net: Any
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
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jnorm import methods, models, optim  # pylint: disable=g-import-not-at-top
  from jnorm import train_step as ts  # pylint: disable=g-import-not-at-top
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  model_cfg.bn_axis_name = ts.AXIS if config.sync_batchnorm else None
  net = models.build_ssl_net(model_cfg)
  o = config.optim
  total_steps = max(1, round(config.num_epochs * steps_per_epoch))
  opt_steps = max(1, total_steps // o.accumulation_steps)
  schedule = optim.learning_rate_schedule(
      base_lr=o.learning_rate, total_steps=opt_steps,
      warmup_steps=round(o.warmup_epochs * steps_per_epoch) // o.accumulation_steps,
      end_lr=o.end_learning_rate, kind=o.schedule, mode=o.schedule_mode)
  tx = optim.make_optimizer(
      name=o.name, learning_rate=schedule, momentum=o.momentum, nesterov=o.nesterov,
      weight_decay=o.weight_decay,
      weight_decay_mask=functools.partial(optim.weight_decay_mask, mode=o.weight_decay_mask),
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
      cut_bn_affine=bool(n.cut_bn_affine), with_target=config.method == "byol")
  train_step = None
  if mesh is not None:
    tau_fn = None
    if config.method == "byol":
      tau_fn = optim.ema_decay_schedule(tau_base=config.byol.tau_base, total_steps=opt_steps,
                                        kind=config.byol.tau_schedule)
    train_step = ts.make_train_step(
        apply_fn=net.apply, tx=tx, spec=spec, schedule=schedule, mesh=mesh,
        augment_fn=ts.augment_fn_from_recipe(config.augment), tau_fn=tau_fn,
        accumulation_steps=o.accumulation_steps, sync_batchnorm=config.sync_batchnorm)
  return Run(net=net, tx=tx, schedule=schedule, spec=spec, steps_per_epoch=steps_per_epoch,
             total_steps=total_steps, num_epochs=total_steps / steps_per_epoch,
             init_state=init_state, train_step=train_step)


def to_saved(config, info: dict) -> dict:
  return {"config": config.to_dict(), "run_info": dict(info)}


def from_saved(saved: dict):
  """(config, run_info) from `to_saved`'s JSON."""
  config = defaults()
  config.update(ml_collections.ConfigDict(saved["config"]))
  info = dict(saved["run_info"])
  info["input_shape"] = tuple(info["input_shape"])
  return config, info
