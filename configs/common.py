"""Shared bases of the configs in this folder; not a config itself.

Every config file here defines `get_config(arg=None)` returning an
`ml_collections.ConfigDict` and builds on these functions with `import common`: the
folder is on `sys.path` whenever a config is loaded (`python -m jnorm.main --config
configs/x.py:arg` and `jnorm.jobs.load_config_file(path, arg)` both put it there). No
config loads another config file.

Training bases return a complete `jnorm.training.config.defaults()` dict, so every field
a run uses is visible in `--config` overrides and in the saved config.json.
"""

import os

import ml_collections
from ml_collections import config_dict

from jnorm import errors
from jnorm.training import config as train_config

CIFAR_TRAIN_SIZE = 50000  # CIFAR-10/100 train images: steps per epoch = 50000 // batch

# Norm-control overrides (`config.norm`) shared by the comparisons.
CUT3 = {"cut_factor": 3.0}  # every initial parameter / 3, BN affine included (reference)
CUT3_LAST = {"cut_factor": 3.0, "cut_scope": "last_layer"}  # the projector's last layer / 3
GRADSCALE1 = {"gradscale_power": 1.0}


def parse_arg(arg, choices, *, config_file: str) -> set:
  """The comma-separated words of a config's `:arg` as a set (empty for none).

  Args:
    arg: what follows the colon in `--config configs/x.py:arg` (None or '' for none).
    choices: the words the config accepts.
    config_file: the config's `__file__`, named in the error.

  Raises:
    ConfigError: a word is not one of `choices`.
  """
  words = {w for w in (arg or "").split(",") if w}
  unknown = words - set(choices)
  if unknown:
    raise errors.ConfigError(
        f"unknown argument(s) {sorted(unknown)} after ':'; it accepts "
        f"{', '.join(choices)} (comma-separated) or none, e.g. "
        f"configs/{os.path.basename(config_file)}:{choices[0]}")
  return words


def pick_one(words: set, choices, *, default: str, config_file: str) -> str:
  """The one word of `words` that is in `choices` (`default` when none is).

  Raises:
    ConfigError: two of `choices` are given.
  """
  given = [c for c in choices if c in words]
  if len(given) > 1:
    raise errors.ConfigError(
        f"arguments {' and '.join(given)} exclude each other; give one, e.g. "
        f"configs/{os.path.basename(config_file)}:{given[0]}")
  return given[0] if given else default


def smoke_settings(config: ml_collections.ConfigDict, *, batch_size: int,
                   num_epochs: float, warmup_epochs: float, checkpoint_every_steps: int,
                   log_every_steps: int) -> ml_collections.ConfigDict:
  """A CI-sized training run: a few steps, kNN only at the end; returns `config`."""
  config.batch_size = batch_size
  config.num_epochs = num_epochs
  config.optim.warmup_epochs = warmup_epochs
  config.eval.every_epochs = 0
  config.eval.powers_of_two = False
  config.checkpoint_every_steps = checkpoint_every_steps
  config.log_every_steps = log_every_steps
  return config


def simclr_base() -> ml_collections.ConfigDict:
  """SimCLR with the reference's loss and heads: one-directional InfoNCE (t = 0.5), a
  projector 128 -> 128 without BatchNorm, no predictor; every other field at its default
  (SmallResNet on digits, SGD momentum 0.9, warm-up then cosine)."""
  config = train_config.defaults()
  config.method = "simclr"
  config.loss.name = "infonce"
  config.loss.temperature = 0.5
  config.model.projector_dims = (128, 128)
  config.model.projector_bn = False
  config.model.predictor_hidden = 0
  return config


def _digits(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The digits setting: 16 px, the `digits` augmentations, SmallResNet, batch 128,
  32 epochs at lr 0.1 after 2 warm-up epochs, kNN with k = 20 (the bank holds ~130
  digits per class; k = 200 would mix classes in every vote)."""
  config.data.name = "digits"
  config.data.image_size = 16
  config.augment = "digits"
  config.model.backbone = "small_resnet"
  config.batch_size = 128
  config.num_epochs = 32.0
  config.optim.learning_rate = 0.1
  config.optim.warmup_epochs = 2.0
  config.eval.knn_k = 20
  return config


def digits_simclr(*, smoke: bool = False) -> ml_collections.ConfigDict:
  """configs/default.py: SimCLR on the embedded digits, kNN every 4 epochs.

  Args:
    smoke: 6 steps at batch 32 (0.05 warm-up epochs), kNN only at the end.
  """
  config = _digits(simclr_base())
  # cpu_tuning 'auto' (the default): jnorm's CPU kernels where they build. Results in
  # docs/findings_data that record no `cpu_tuning` ran XLA's convolutions; add
  # --config.cpu_tuning=xla to reproduce them bit for bit.
  config.eval.every_epochs = 4
  config.checkpoint_every_steps = 100
  if smoke:
    smoke_settings(config, batch_size=32, num_epochs=0.15,  # 6 steps of 40 per epoch
                   warmup_epochs=0.05, checkpoint_every_steps=3, log_every_steps=2)
  return config


def short_digits(config: ml_collections.ConfigDict, *, num_epochs: float,
                 warmup_epochs=None) -> ml_collections.ConfigDict:
  """A digits config made short for the comparisons (many sub-runs): digits' native
  8 px (4x cheaper convolutions than 16 px), `num_epochs` epochs, kNN after every epoch,
  no progress bar; `warmup_epochs` when given. Returns `config`."""
  config.data.image_size = 8
  config.num_epochs = num_epochs
  if warmup_epochs is not None:
    config.optim.warmup_epochs = warmup_epochs
  config.eval.every_epochs = 1
  config.progress_bar = False
  return config


def reference_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The smoke run of configs/simclr.py, simsiam.py and byol.py: SmallResNet, batch 16
  without accumulation, 4 steps on CIFAR (0.1 epochs on digits), kNN with k = 20 at the
  end. Returns `config`."""
  cifar = config.data.name.startswith("cifar")
  smoke_settings(config, batch_size=16, num_epochs=4 * 16 / CIFAR_TRAIN_SIZE if cifar else 0.1,
                 warmup_epochs=0.0, checkpoint_every_steps=2, log_every_steps=1)
  config.optim.accumulation_steps = 1
  config.eval.knn_k = 20
  config.model.backbone = "small_resnet"
  return config


def simclr(dataset: str) -> ml_collections.ConfigDict:
  """configs/simclr.py: SimCLR with the reference's hyperparameters.

  Args:
    dataset: 'cifar10' | 'cifar100' (ResNet-18, CIFAR stem, batch 256, lr 0.6, weight
      decay 1e-6, 10 warm-up epochs then cosine to 1e-3, 512 epochs) or 'digits'
      (configs/default.py's data, model and optimiser; kNN only at powers-of-two
      epochs).
  """
  config = simclr_base()
  if dataset == "digits":
    return _digits(config)
  config.data.name = dataset
  config.augment = "cifar_reference"
  config.model.backbone = "resnet18"
  config.model.stem = "cifar"
  config.batch_size = 256
  config.num_epochs = 512.0
  config.optim.learning_rate = 0.6
  config.optim.weight_decay = 1e-6
  config.optim.warmup_epochs = 10.0
  config.optim.end_learning_rate = 1e-3
  config.checkpoint_every_steps = 10 * (CIFAR_TRAIN_SIZE // config.batch_size)  # 10 epochs
  config.log_every_steps = 50
  return config


def simsiam(dataset: str) -> ml_collections.ConfigDict:
  """configs/simsiam.py: `simclr(dataset)` turned into SimSiam with the reference's
  hyperparameters (projector 3 x 2048 with BN, predictor 2048 -> 512 -> 2048, batch 128
  x 8 accumulation steps, SGD Nesterov, lr 0.2, weight decay 5e-4); on digits a
  128-wide projector with BN, predictor hidden 32, lr 0.05."""
  config = simclr(dataset)
  config.method = "simsiam"
  if dataset == "digits":
    config.model.projector_dims = (128, 128, 128)
    config.model.predictor_hidden = 32
    config.optim.learning_rate = 0.05
  else:
    config.model.projector_dims = (2048, 2048, 2048)
    config.model.predictor_hidden = 512
    config.batch_size = 128
    config.optim.accumulation_steps = 8
    config.optim.learning_rate = 0.2
    config.optim.weight_decay = 5e-4
    config.optim.nesterov = True
    config.checkpoint_every_steps = 10 * (CIFAR_TRAIN_SIZE // config.batch_size)
  config.model.projector_bn = True
  return config


def byol(dataset: str) -> ml_collections.ConfigDict:
  """configs/byol.py: `simsiam(dataset)` with an EMA target network (τ = 0.99, fixed);
  on CIFAR batch 64 x 16 accumulation steps (effective 1024)."""
  config = simsiam(dataset)
  config.method = "byol"
  config.byol.tau_base = 0.99
  config.byol.tau_schedule = "fixed"
  if dataset != "digits":
    config.batch_size = 64
    config.optim.accumulation_steps = 16
    config.checkpoint_every_steps = 10 * (CIFAR_TRAIN_SIZE // config.batch_size)
  return config


def fmnist_simclr() -> ml_collections.ConfigDict:
  """SimCLR on Fashion-MNIST at 16 px (configs/compare_fmnist.py's base)."""
  config = simclr_base()
  config.model.backbone = "small_resnet"
  config.data.name = "fashion_mnist"
  config.data.image_size = 16
  config.data.train_per_class = 500
  config.data.test_per_class = 200
  config.augment = "fashion_mnist"
  config.batch_size = 128
  config.num_epochs = 8.0
  config.optim.learning_rate = 0.1
  config.optim.warmup_epochs = 1.0
  config.eval.knn_k = 20
  config.eval.every_epochs = 1
  # One evaluation embeds 7,512 images instead of 14,000: BatchNorm re-estimated on 512
  # train images (kNN within 0.03 [-0.08, +0.13] points of the whole split's, 24
  # checkpoints, benchmarks/eval_protocol.py), the whole train split as the kNN bank (any
  # smaller bank costs 0.5 points or more), the test split's train-mode norms at the end.
  config.eval.bn_images = 512
  config.eval.train_mode_norms = "final"
  # Evaluations beside training, not between its steps: the same numbers bit for bit,
  # sooner (benchmarks/README.md, loop.py).
  config.eval.background = True
  config.checkpoint_every_steps = 200
  config.log_every_steps = 13
  config.progress_bar = False
  return config


def fmnist_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A Fashion-MNIST base made CI-sized: 2 steps of 64 on 13 train / 5 test images per
  class, kNN only at the end, a checkpoint every step. Returns `config`."""
  config.num_epochs = 2 / 39
  config.data.train_per_class = 13
  config.data.test_per_class = 5
  config.batch_size = 64
  config.eval.every_epochs = 0
  config.checkpoint_every_steps = 1
  return config


def fmnist_siamese(method: str) -> ml_collections.ConfigDict:
  """SimSiam or BYOL on Fashion-MNIST at 16 px (configs/compare_fmnist_siamese.py's
  base): `fmnist_simclr()` with the non-contrastive heads at this scale (projector
  128-128-128 with BN, predictor 128 -> 32 -> 128, as `simsiam('digits')`), the
  reference's SimSiam optimiser (SGD Nesterov, weight decay 5e-4) at lr 0.05, and for
  BYOL an EMA target with τ = 0.99."""
  config = fmnist_simclr()
  config.method = method
  config.model.projector_dims = (128, 128, 128)
  config.model.projector_bn = True
  config.model.predictor_hidden = 32
  config.optim.learning_rate = 0.05
  config.optim.weight_decay = 5e-4
  config.optim.nesterov = True
  if method == "byol":
    config.byol.tau_base = 0.99
    config.byol.tau_schedule = "fixed"
  return config


def analysis_base() -> ml_collections.ConfigDict:
  """Every field of the analysis job but its embedded `train` config (configs/analysis.py)."""
  c = ml_collections.ConfigDict()
  c.job = "analysis"
  c.train_workdir = ""  # a finished training run; empty: train config.train first
  c.novelty_holdout_classes = (8, 9)  # removed from the embedded run's train split
  c.novelty_other_dataset = ""  # a jnorm.data name whose test split is "other data"
  c.novelty_other_max_examples = 2000
  c.heads = ("projector", "backbone")  # embeddings analysed
  c.primary_head = "projector"  # the one behind the headline numbers (paper: projector)
  c.num_buckets = 20  # width 0.05, as the paper
  c.min_bucket_count = 5  # smaller buckets are left out of the Spearman rho and plots
  c.quantile_buckets = 10  # equal-count norm buckets (no minimum count needed)
  # OOD scores (jnorm/ood.py) for the held-out classes (near) and `far_sets` (far):
  # jnorm.data names resized to the model's input, or 'uniform_noise'.
  c.ood = ml_collections.ConfigDict({"far_sets": (), "k": 10, "max_examples": 2000})
  # The reference monitor's weighted kNN (t = 0.1) with k = 20 on digits (deviation, as
  # configs/default.py: the bank holds ~130 digits per class); k = 200 on CIFAR.
  c.knn = ml_collections.ConfigDict({"k": 20, "temperature": 0.1})
  c.batch_size = 256  # embedding batch
  c.class_frequency = "auto"  # 'auto': when the training data is long-tailed
  c.human_labels = ml_collections.ConfigDict({
      "name": "",  # 'cifar10_n' | 'cifar100_n' | 'cifar10_h' (TFDS, with images)
      "path": "",  # or a .npy / .csv label file aligned with `split` (human_labels.py)
      "split": "train",
      "data_dir": config_dict.placeholder(str),
      "limit": config_dict.placeholder(int),  # read only the first N records
      "agreement_reference": "clean",  # 'clean' label or 'majority' of the votes
  })
  c.trajectory_keys = ()  # metrics.jsonl keys; empty: every embedding-norm key
  return c


def cosine_descent_base(job: str, *, smoke: bool) -> ml_collections.ConfigDict:
  """The setting shared by the cosine-descent simulations (sim_norm_convergence,
  sim_angle_convergence, sim_gradscale): 500 pairs in 20-D, plain gradient descent
  with lr 10 on the mean negative cosine (each pair moves by lr / num_pairs), stop at
  mean cos >= 1 - 1e-3, float32, seed 0.

  Args:
    job: the simulation job (`config.job`).
    smoke: 50 pairs at lr 1 (the same lr / num_pairs, so the same step counts) and
      at most 2,000 steps.
  """
  config = ml_collections.ConfigDict()
  config.job = job
  config.seed = 0
  config.num_pairs = 500
  config.dim = 20
  config.lr = 10.0
  config.eps = 1e-3
  config.max_steps = 200_000
  config.dtype = "float32"
  if smoke:
    config.num_pairs = 50
    config.lr = 1.0
    config.max_steps = 2_000
  return config
