"""Build an `SSLNet` from a model config (the only place the model config is read)."""

import jax.numpy as jnp
import ml_collections

from jnorm.errors import check_choice, check_int_tuple, check_positive
from jnorm.models.heads import Predictor, Projector, SSLNet
from jnorm.models.mlp import MLPBackbone
from jnorm.models.resnet import STEMS, ResNet18, ResNet34, ResNet50, SmallResNet

BACKBONES = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "small_resnet": SmallResNet,
    "mlp": MLPBackbone,  # vector inputs (data.name='spherical'); widths: mlp_features
}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def default_model_config() -> ml_collections.ConfigDict:
  """The model fields of a training config, with the SimCLR CIFAR reference values.

  Fields:
    backbone: 'resnet18' | 'resnet34' | 'resnet50' | 'small_resnet' | 'mlp' (vectors).
    mlp_features: hidden widths of the 'mlp' backbone (Dense + BN + ReLU each).
    stem: 'cifar' (3x3 stride 1, no max-pool) | 'imagenet' (7x7 stride 2 + max-pool).
    zero_init_residual: last BN scale of each residual block starts at 0.
    projector_dims: Dense widths of the projector ((128, 128) SimCLR; (2048,)*3 SimSiam).
    projector_bn: BN after each projector layer (False SimCLR; True SimSiam/BYOL).
    predictor_hidden: predictor bottleneck width; 0 = no predictor (SimCLR).
    compute_dtype: 'float32' | 'bfloat16' (convolutions only; BN and outputs stay f32).

  Whether BatchNorm statistics are synced over devices is the training config's
  `sync_batchnorm`, passed to `build_ssl_net` as `bn_axis_name`.
  """
  cfg = ml_collections.ConfigDict()
  cfg.backbone = "resnet18"
  cfg.mlp_features = (64, 64)
  cfg.stem = "cifar"
  cfg.zero_init_residual = True
  cfg.projector_dims = (128, 128)
  cfg.projector_bn = False
  cfg.predictor_hidden = 0
  cfg.compute_dtype = "float32"
  return cfg


def check_model_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises `jnorm.errors.ConfigError` on an unknown name or a bad width in `cfg`."""
  check_choice("model.backbone", cfg.backbone, BACKBONES)
  check_choice("model.stem", cfg.stem, STEMS)
  check_choice("model.compute_dtype", cfg.compute_dtype, COMPUTE_DTYPES)
  check_int_tuple("model.projector_dims", cfg.projector_dims, minimum=1, allow_empty=False)
  check_positive("model.predictor_hidden", cfg.predictor_hidden, allow_zero=True)
  check_int_tuple("model.mlp_features", cfg.mlp_features, minimum=1)  # () : no hidden layer


def build_ssl_net(cfg: ml_collections.ConfigDict, *, bn_axis_name: str | None = None) -> SSLNet:
  """The SSL network described by `cfg` (fields of `default_model_config`, checked by
  `check_model_config`).

  Args:
    cfg: the model config.
    bn_axis_name: the mesh axis over which BatchNorm statistics are averaged (inside
      `jax.shard_map`); None keeps each device's own statistics.

  The predictor, when `predictor_hidden > 0`, maps back to `projector_dims[-1]`.
  """
  dims = tuple(int(d) for d in cfg.projector_dims)
  extra = {}
  if cfg.backbone == "mlp":
    extra["features"] = tuple(int(w) for w in cfg.mlp_features)
  backbone = BACKBONES[cfg.backbone](
      **extra, stem=cfg.stem, zero_init_residual=bool(cfg.zero_init_residual),
      bn_axis_name=bn_axis_name, dtype=COMPUTE_DTYPES[cfg.compute_dtype])
  projector = Projector(features=dims, use_bn=bool(cfg.projector_bn),
                        bn_axis_name=bn_axis_name)
  predictor = None
  if cfg.predictor_hidden:
    predictor = Predictor(hidden=int(cfg.predictor_hidden), features=dims[-1],
                          bn_axis_name=bn_axis_name)
  return SSLNet(backbone=backbone, projector=projector, predictor=predictor)
