"""The fields of a training config, their validation, and saving them with a run.

`defaults()` and `validate()` (the one check of a training config) here, and
`jnorm.training.build.build_run`, are the only places the training job reads its config; everything they build (network, optimiser,
schedule, method, step) takes explicit arguments.

Fields (`defaults()` holds them all; configs/*.py start from it):
  job 'train'; seed (params init, data order, augmentations).
  method 'simclr' | 'simsiam' | 'byol'; negatives 'local' | 'global' (SimCLR only:
    contrast against this device's rows, or against the whole global batch).
  loss.name 'infonce' (reference, one-directional) | 'nt_xent' | 'attraction' |
    'repulsion'; loss.temperature (SimCLR).
  model.*: `jnorm.models.default_model_config()` fields.
  data.*: `jnorm.data.get_config_defaults()` fields.  augment: recipe name ('none' = no
    augmentation: both views are the input; 'vector_noise' for vector data).
  batch_size (global, split over devices and processes); num_epochs (may be fractional:
    steps = round(num_epochs * steps_per_epoch)).
  optim.{name 'sgd'|'lars', learning_rate, momentum, nesterov, weight_decay,
    weight_decay_mask 'all'|'exclude_bn_bias', schedule 'warmup_cosine'|'constant',
    schedule_mode 'standard'|'code_faithful', warmup_epochs, end_learning_rate,
    trust_coefficient (LARS), accumulation_steps (optax.MultiSteps)}: the keyword
    arguments of `optim.learning_rate_schedule` and `optim.make_optimizer`.
  norm.{cut_factor (1 = off), cut_scope 'all'|'last_layer', cut_bn_affine,
    gradscale_power (0 = off), gradscale_form 'custom_vjp'|'optax'}: cut_* are
    `optim.cut_init`'s arguments (via `training.step.create_train_state`), gradscale_*
    `methods.MethodSpec`'s fields.
  byol.{tau_base, tau_schedule 'fixed'|'cosine'}: `optim.ema_decay_schedule`'s
    arguments.  sync_batchnorm: BatchNorm statistics over the whole global batch
    (synced over devices) or per device.
  eval.{every_epochs (0 = only powers of two / end), powers_of_two, knn_k,
    knn_temperature, batch_size, linear_probe, probe_epochs, probe_learning_rate,
    probe_batch_size, bn_stats 'recompute' (BatchNorm statistics re-estimated on the
    train split for the current weights before every evaluation) | 'running',
    bn_images and bank_images (train images for the re-estimation and the kNN bank: a
    class-stratified subset, fixed for the run; 0 = the whole train split),
    train_mode_norms 'every' | 'final' (the test split's norms in train mode at every
    evaluation or at the last only), background (the evaluations during training run
    in a thread while training goes on: the same numbers, sooner where one step does
    not keep every core busy)}.
  checkpoint_every_steps, keep_checkpoints, log_every_steps, progress_bar.
  cpu_tuning 'auto' | 'kernels' | 'xla' | 'gemm' | 'off': on a CPU backend
    `python -m jnorm.main` calls `jnorm.cpu.enable(conv=cpu_tuning)` unless 'off'
    (stock XLA and Flax; the results differ in float32 rounding only).
  distributed.{coordinator_address ('' = single process), num_processes, process_id}.
"""

import ml_collections

from jnorm import augment
from jnorm import data
from jnorm import errors
from jnorm import methods
from jnorm import models
from jnorm import optim
from jnorm.data import config as data_config


# `cpu_tuning`'s values: `jnorm.cpu.enable`'s `conv` choices, or 'off' (stock XLA and Flax).
CPU_TUNINGS = ("auto", "kernels", "xla", "gemm", "off")


def defaults() -> ml_collections.ConfigDict:
  """Every field of a training config with its default (SimCLR, digits, SmallResNet)."""
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
      "probe_learning_rate": 1e-2, "probe_batch_size": 256, "bn_stats": "recompute",
      "bn_images": 0, "bank_images": 0, "train_mode_norms": "every",
      "background": False})
  c.checkpoint_every_steps = 100
  c.keep_checkpoints = 3
  c.log_every_steps = 10
  c.progress_bar = True
  c.cpu_tuning = "auto"
  c.distributed = ml_collections.ConfigDict({
      "coordinator_address": "", "num_processes": 1, "process_id": 0})
  return c


def _check_fields(config, reference, prefix: str = "") -> None:
  """A missing field, an unknown one (a typo) or a field group given as a plain value
  -> ConfigError naming it. `data` fields are `data.config.resolve_config`'s to check."""
  fix = "start the config from jnorm.training.config.defaults() (as configs/default.py does)"
  for key in reference.keys():
    if key not in config:
      raise errors.ConfigError(f"config.{prefix}{key} is missing; {fix}")
  for key in config.keys():
    if key not in reference:
      raise errors.ConfigError(f"config.{prefix}{key} is not a known field; use one of "
                               f"{sorted(reference.keys())}")
    if isinstance(reference[key], ml_collections.ConfigDict) and key != "data":
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise errors.ConfigError(
            f"config.{prefix}{key}={config[key]!r} must be a ConfigDict of fields; {fix}")
      _check_fields(config[key], reference[key], prefix=f"{prefix}{key}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field the training job reads, in one pass; raises a one-line ConfigError.

  Each value is checked by the library that uses it (`models.check_model_config`,
  `data.config.resolve_config`, `optim.check_*`, the method's `check_config`); the
  bounds live there only.
  """
  _check_fields(config, defaults())
  errors.check_finite_floats(config)
  errors.check_int("seed", config.seed, minimum=0)
  method = methods.get_method(config.method)
  errors.check_choice("negatives", config.negatives, methods.NEGATIVES)
  method.check_config(config)
  errors.check_choice("augment", config.augment,
                      tuple(augment.RECIPES) + ("none", augment.VECTOR_NOISE))
  errors.check_positive("batch_size", config.batch_size)
  errors.check_positive("num_epochs", config.num_epochs)
  models.check_model_config(config.model)
  data_config.resolve_config(config.data)
  o = config.optim
  optim.check_schedule(learning_rate=o.learning_rate, warmup_epochs=o.warmup_epochs,
                       end_learning_rate=o.end_learning_rate, schedule=o.schedule,
                       schedule_mode=o.schedule_mode)
  optim.check_optimizer(name=o.name, momentum=o.momentum, weight_decay=o.weight_decay,
                        weight_decay_mask=o.weight_decay_mask,
                        trust_coefficient=o.trust_coefficient,
                        accumulation_steps=o.accumulation_steps)
  n = config.norm
  optim.check_cut(cut_factor=n.cut_factor, cut_scope=n.cut_scope)
  errors.check_choice("norm.gradscale_form", n.gradscale_form, methods.GRADSCALE_FORMS)
  e = config.eval
  for field in ("knn_k", "knn_temperature", "batch_size", "probe_epochs",
                "probe_learning_rate", "probe_batch_size"):
    errors.check_positive(f"eval.{field}", e[field])
  errors.check_positive("eval.every_epochs", e.every_epochs, allow_zero=True)
  errors.check_choice("eval.bn_stats", e.bn_stats, ("recompute", "running"))
  for field in ("bn_images", "bank_images"):
    errors.check_int(f"eval.{field}", e[field], minimum=0)
  errors.check_choice("eval.train_mode_norms", e.train_mode_norms, ("every", "final"))
  for field in ("checkpoint_every_steps", "keep_checkpoints", "log_every_steps"):
    errors.check_positive(field, config[field])
  errors.check_choice("cpu_tuning", config.cpu_tuning, CPU_TUNINGS)


def to_saved(config, info: dict) -> dict:
  return {"config": config.to_dict(), "run_info": dict(info)}


def from_saved(saved: dict):
  """(config, run_info) from `to_saved`'s JSON."""
  config = defaults()
  config.update(ml_collections.ConfigDict(saved["config"]))
  info = dict(saved["run_info"])
  info["input_shape"] = tuple(info["input_shape"])
  return config, info
