"""Norm manipulation on real data: SimCLR on Fashion-MNIST, arms x paired seeds.

    python -m jnorm.main --config configs/compare_fmnist.py --workdir docs/findings_data/fmnist_simclr
    python -m jnorm.main --config configs/compare_fmnist.py:pilot --workdir /tmp/fmnist_pilot
    python -m jnorm.main --config configs/compare_fmnist.py:smoke --workdir /tmp/fmnist_smoke

Needs the Debian package: `apt-get update && apt-get install -y dataset-fashion-mnist`.

Setting (chosen to fit 2 CPU cores; see docs/findings.md): SmallResNet (one basic block
per stage, widths 32/64/128), projector 128-128 without BatchNorm, the reference's
one-directional InfoNCE (t 0.5); a class-balanced subset of 500 train images per class
(5,000) and 200 test images per class (2,000), resized to 16 px; batch 128 (39 steps
per epoch), SGD momentum 0.9, lr 0.1, 1 warm-up epoch then cosine, 12 epochs; kNN
(k 20, t 0.1, backbone features) after every epoch with BatchNorm statistics
re-estimated on the train images for the current weights.

Arms (overrides of the base): `default`; `cut3_all` (every initial parameter / 3, BN
affine included, as the reference); `cut3_last` (the projector's last layer / 3);
`gradscale1` (p 1 at the default rate); `gradscale1_comp` (p 1 at the reference
example's compensated rate: its peak rate is 36x below the SimCLR default's, 0.01 vs
0.36, with warm-up over 20% of training, 100 of 512 epochs); `gradscale2` (p 2, the
power that removes the norm dependence in the simulation). Seeds 0-4, paired.
`:pilot`: default only, 2 seeds (to size the experiment). `:smoke`: 2 arms, 1 seed,
2 steps (CI).
"""

from jnorm.jobs import compare
from jnorm.training import config as train_config

ARMS = {
    "default": {},
    "cut3_all": {"norm": {"cut_factor": 3.0}},
    "cut3_last": {"norm": {"cut_factor": 3.0, "cut_scope": "last_layer"}},
    "gradscale1": {"norm": {"gradscale_power": 1.0}},
    "gradscale1_comp": {"norm": {"gradscale_power": 1.0},
                        "optim": {"learning_rate": 0.1 / 36, "warmup_epochs": 2.4}},
    "gradscale2": {"norm": {"gradscale_power": 2.0}},
}


def base_config():
  config = train_config.defaults()
  config.method = "simclr"
  config.loss.name = "infonce"
  config.model.backbone = "small_resnet"
  config.model.projector_dims = (128, 128)
  config.model.conv_impl = "xla"
  config.data.name = "fashion_mnist"
  config.data.image_size = 16
  config.data.train_per_class = 500
  config.data.test_per_class = 200
  config.augment = "fashion_mnist"
  config.batch_size = 128
  config.num_epochs = 12.0
  config.optim.learning_rate = 0.1
  config.optim.warmup_epochs = 1.0
  config.eval.knn_k = 20
  config.eval.every_epochs = 1
  config.checkpoint_every_steps = 200
  config.log_every_steps = 13
  config.progress_bar = False
  return config


def get_config(arg=None):
  base = base_config()
  arms, seeds = list(ARMS), (0, 1, 2, 3, 4)
  if arg == "pilot":
    arms, seeds = ["default"], (0, 1)
  elif arg == "smoke":
    arms, seeds = ["default", "cut3_all"], (0,)
    base.num_epochs = 2 / 39
    base.data.train_per_class = 13
    base.data.test_per_class = 5
    base.batch_size = 64
    base.eval.every_epochs = 0
    base.checkpoint_every_steps = 1
  elif arg:
    raise ValueError(f"configs/compare_fmnist.py: unknown argument {arg!r}; use ':pilot', "
                     "':smoke' or none")
  return compare.comparison_config(
      base=base, variants=ARMS, run_variants=arms, seeds=seeds,
      report_epochs=(1, 2, 4, 8, 12), threshold=0.0, baseline="default",
      title="SimCLR Fashion-MNIST 16 px: cut-initialization and GradScale")
