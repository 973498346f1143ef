"""SimCLR with the reference's hyperparameters (PAPER.md §4).

    python -m jnorm.main --config configs/simclr.py:cifar10 --workdir /tmp/simclr_c10
    python -m jnorm.main --config configs/simclr.py:cifar100 --workdir /tmp/simclr_c100
    python -m jnorm.main --config configs/simclr.py:digits --workdir /tmp/simclr_digits
    python -m jnorm.main --config configs/simclr.py:cifar10,smoke --workdir /tmp/simclr_smoke

CIFAR: ResNet-18 (CIFAR stem, zero-init residual), projector 512->128->128 without BN,
the reference's one-directional InfoNCE (t = 0.5), batch 256, SGD momentum 0.9, lr 0.6,
weight decay 1e-6 on every parameter, 10 warm-up epochs then cosine to 1e-3, 512 epochs,
the `cifar_reference` augmentations; kNN (k = 200, t = 0.1) at powers-of-two epochs.
Add `--config.optim.schedule_mode=code_faithful` for the reference code's effective
lr² peak. Needs the TFDS dataset prepared (see the error message otherwise).
`digits`: configs/default.py's settings. `smoke`: a few steps on a tiny batch.
"""

from jnorm.training import config as train_config


def _apply_smoke(config):
  config.batch_size = 16
  config.optim.accumulation_steps = 1
  config.num_epochs = 4 * 16 / 50000 if config.data.name.startswith("cifar") else 0.1
  config.optim.warmup_epochs = 0.0
  config.eval.powers_of_two = False
  config.eval.every_epochs = 0
  config.eval.knn_k = 20
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.model.backbone = "small_resnet"
  return config


def get_config(arg=None):
  args = set((arg or "cifar10").split(","))
  config = train_config.defaults()
  config.method = "simclr"
  config.loss.name = "infonce"
  config.loss.temperature = 0.5
  config.model.projector_dims = (128, 128)
  config.model.projector_bn = False
  config.model.predictor_hidden = 0
  dataset = (args & {"cifar10", "cifar100", "digits"} or {"cifar10"}).pop()
  if dataset == "digits":
    config.data.name = "digits"
    config.data.image_size = 16
    config.augment = "digits"
    config.model.backbone = "small_resnet"
    config.batch_size = 128
    config.num_epochs = 32.0
    config.optim.learning_rate = 0.1
    config.optim.warmup_epochs = 2.0
    config.eval.knn_k = 20
  else:
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
    steps_per_epoch = 50000 // config.batch_size  # derived: 195 steps per epoch
    config.checkpoint_every_steps = 10 * steps_per_epoch
    config.log_every_steps = 50
  unknown = args - {"cifar10", "cifar100", "digits", "smoke"}
  if unknown:
    raise ValueError(f"configs/simclr.py: unknown argument(s) {sorted(unknown)}")
  return _apply_smoke(config) if "smoke" in args else config
