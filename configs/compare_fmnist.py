"""Norm manipulation on real data: SimCLR on Fashion-MNIST, arms x paired seeds.

    python -m jnorm.main --config configs/compare_fmnist.py --workdir docs/findings_data/fmnist_simclr
    python -m jnorm.main --config configs/compare_fmnist.py:wd --workdir docs/findings_data/fmnist_wd
    python -m jnorm.main --config configs/compare_fmnist.py:recipe --workdir docs/findings_data/fmnist_recipe
    python -m jnorm.main --config configs/compare_fmnist.py:pilot --workdir /tmp/fmnist_pilot
    python -m jnorm.main --config configs/compare_fmnist.py:lr_pilot --workdir /tmp/fmnist_lr_pilot
    python -m jnorm.main --config configs/compare_fmnist.py:smoke --workdir /tmp/fmnist_smoke
    python -m jnorm.main --config configs/compare_fmnist.py:confidence --workdir docs/findings_data/fmnist_confidence
    python -m jnorm.main --config configs/compare_fmnist.py:long_tail --workdir docs/findings_data/fmnist_long_tail

Needs the Debian package: `apt-get update && apt-get install -y dataset-fashion-mnist`.

Setting (chosen to fit 2 CPU cores; see docs/findings.md): SmallResNet (one basic block
per stage, widths 32/64/128), projector 128-128 without BatchNorm, the reference's
one-directional InfoNCE (t 0.5); a class-balanced subset of 500 train images per class
(5,000) and 200 test images per class (2,000), resized to 16 px; batch 128 (39 steps
per epoch), SGD momentum 0.9, lr 0.1, 1 warm-up epoch then cosine, 8 epochs; kNN
(k 20, t 0.1, backbone features) after every epoch with BatchNorm statistics
re-estimated on the train images for the current weights.

Arms (overrides of the base): `default`; `cut3_all` (every initial parameter / 3, BN
affine included, as the reference); `cut3_last` (the projector's last layer / 3);
`gradscale1` (p 1 at the default rate); `gradscale1_comp` (p 1 at the reference
example's compensated rate: its peak rate is 36x below the SimCLR default's, 0.01 vs
0.36, with warm-up over 20% of training as its 100 of 512 epochs: 1.6 of 8); `gradscale2` (p 2, the
power that removes the norm dependence in the simulation) and `gradscale2_comp` (p 2 at
the compensated rate). Seeds 0-4, paired.
`:wd`: the weight-decay sweep: `default` (no decay, the base) against `wd5e-4` and
`wd5e-3` (coupled decay on every parameter, as torch's SGD).
`:recipe`: a norm-aware recipe from the 1/||z||^2 law, `recipe` (the embeddings started
small, last-layer cut 3, and held small, weight decay 5e-3 on every parameter as in
`wd5e-3`) against `default`; `epochs_to_baseline_final` is the epoch at which a run first
reaches the final kNN accuracy of the default run with the same seed.
`:scale`: the mechanism in a real network: the projector's last layer scaled by 1/9,
1/3, 1 and 3 at initialisation (cut factors 9, 3, 1, 1/3), measured by the training steps
to reach the loss 3.9 and the kNN curve, plus plain SGD (momentum 0, lr 1.0: the same
asymptotic step) to test whether momentum makes the projector norm fall late in training.
`:confidence`: norms as confidence and novelty (the analysis job, configs/analysis.py's
fields) on the base trained without classes 8 and 9, seeds 0-4: norm-bucket Spearman
(train -> test kNN and leave-one-out), novelty AUROC of -||z|| for the held-out classes,
the density statistic, each as mean and 95% interval over seeds
(`:confidence_smoke`: 1 seed, a few steps).
`:long_tail`: class frequency vs mean norm on long-tailed Fashion-MNIST (3000 train
images per class before the tail, ratio 1.5, as CIFAR-10-LT: 3000, 2000, ..., 78), the
analysis job's `class_norm_spearman` per seed; and the same seeds with the counts
reversed over the classes (`data.long_tail_order='ascending'`), so that each class's
norm when frequent is compared with its norm when rare (`frequency_swap` in
results.json: a class's relative mean norm when frequent minus when rare), seeds 0-4
(`:long_tail_smoke`: 1 seed, a few steps).
`:pilot`: default only, 2 seeds (to size the experiment). `:lr_pilot`: the default at
lr 0.1, 0.3 and 0.6 for 16 epochs, seed 0 (the base's learning rate). `:smoke`: 2 arms,
1 seed, 2 steps (CI).
Produces in <workdir> (the compare job, jnorm/jobs/compare.py): one training run per
variant and seed in <variant>/seed<k>, results.json (per-arm kNN accuracy at
`report_epochs` and embedding norms: mean, 95% interval, paired differences to the
baseline arm), comparison.md, comparison.csv, knn_accuracy_vs_epoch.png and
norm_vs_epoch.png.
"""

import ml_collections

import common
from jnorm.jobs import compare

ARMS = {
    "default": {},
    "cut3_all": {"norm": common.CUT3},
    "cut3_last": {"norm": common.CUT3_LAST},
    "gradscale1": {"norm": common.GRADSCALE1},
    "gradscale1_comp": {"norm": common.GRADSCALE1,
                        "optim": {"learning_rate": 0.1 / 36, "warmup_epochs": 1.6}},
    "gradscale2": {"norm": {"gradscale_power": 2.0}},
    "gradscale2_comp": {"norm": {"gradscale_power": 2.0},
                        "optim": {"learning_rate": 0.1 / 36, "warmup_epochs": 1.6}},
    # The norm-aware recipe (docs/findings.md §4.4): start the embeddings small (last-layer cut 3) and
    # hold them small (weight decay 5e-3), so the 1/||z||^2 step of the embedding stays
    # large all run, while the rate of the BatchNorm'd kernels is left at the default.
    "recipe": {"norm": common.CUT3_LAST, "optim": {"weight_decay": 5e-3}},
    "wd5e-4": {"optim": {"weight_decay": 5e-4}},
    "wd5e-3": {"optim": {"weight_decay": 5e-3}},
}


def base_config():
  return common.fmnist_simclr()


def _confidence(*, smoke: bool):
  """The analysis job (configs/analysis.py's fields) on the Fashion-MNIST base trained
  without classes 8 (Bag) and 9 (Ankle boot), once per seed."""
  analysis = ml_collections.ConfigDict(common.analysis_base())
  analysis.train = base_config()
  analysis.novelty_holdout_classes = (8, 9)
  analysis.ood.far_sets = ("digits", "uniform_noise")
  if smoke:
    analysis.train.num_epochs = 1 / 31
    analysis.train.data.train_per_class = 8
    analysis.train.data.test_per_class = 4
    analysis.train.batch_size = 32
    analysis.train.eval.every_epochs = 0
    analysis.min_bucket_count = 1
  return compare.comparison_config(
      base=analysis, variants={"simclr": {}}, run_variants=["simclr"],
      seeds=(0,) if smoke else (0, 1, 2, 3, 4), report_epochs=(), baseline="simclr",
      sub_job="analysis", seed_field="train.seed",
      title="SimCLR Fashion-MNIST 16 px: norms as confidence and novelty")


def _long_tail(*, smoke: bool):
  """The analysis job on long-tailed Fashion-MNIST (3000 train images per class before
  the tail, ratio 1.5: 3000, 2000, ..., 78), in both class orders, once per seed."""
  analysis = ml_collections.ConfigDict(common.analysis_base())
  analysis.train = base_config()
  analysis.novelty_holdout_classes = ()
  analysis.class_frequency = "on"
  train = analysis.train
  train.data.train_per_class = 3000
  train.data.long_tail_ratio = 1.5
  train.eval.every_epochs = 0
  train.eval.powers_of_two = False
  if smoke:
    train.num_epochs = 1 / 31
    train.data.train_per_class = 40
    train.data.test_per_class = 4
    train.batch_size = 32
    analysis.min_bucket_count = 1
  variants = {"descending": {"train": {"data": {"long_tail_order": "descending"}}},
              "ascending": {"train": {"data": {"long_tail_order": "ascending"}}}}
  return compare.comparison_config(
      base=analysis, variants=variants, run_variants=list(variants),
      seeds=(0,) if smoke else (0, 1, 2, 3, 4), report_epochs=(), baseline="descending",
      sub_job="analysis", seed_field="train.seed",
      frequency_swap_arms="descending,ascending",
      title="SimCLR long-tailed Fashion-MNIST 16 px: class frequency vs mean norm")


def get_config(arg=None):
  choices = ("pilot", "lr_pilot", "scale", "wd", "recipe", "confidence", "confidence_smoke",
             "long_tail", "long_tail_smoke", "smoke")
  scale = common.pick_one(common.parse_arg(arg, choices, config_file=__file__), choices,
                          default="full", config_file=__file__)
  base = base_config()
  arms, seeds = list(ARMS)[:5], (0, 1, 2, 3, 4)
  variants = dict(ARMS)
  loss_threshold = 0.0
  if scale == "pilot":
    arms, seeds = ["default"], (0, 1)
  elif scale == "wd":  # the weight-decay sweep (the base has none)
    arms = ["default", "wd5e-4", "wd5e-3"]
  elif scale == "recipe":  # the norm-aware recipe against the default's final accuracy
    arms = ["default", "recipe"]
  elif scale == "lr_pilot":  # the learning rate of the base, chosen from seed 0 alone
    variants.update({"lr0p3": {"optim": {"learning_rate": 0.3}},
                     "lr0p6": {"optim": {"learning_rate": 0.6}}})
    arms, seeds = ["default", "lr0p3", "lr0p6"], (0,)
    base.num_epochs = 16.0
  elif scale == "scale":  # the mechanism: initial embedding scale vs speed (1/norm^2 law)
    variants = {f"last_x{name}": {"norm": {"cut_factor": c, "cut_scope": "last_layer"}}
                for name, c in (("1_9", 9.0), ("1_3", 3.0), ("1", 1.0), ("3", 1 / 3))}
    variants["momentum0_lr1"] = {"optim": {"momentum": 0.0, "learning_rate": 1.0}}
    arms = list(variants)
    loss_threshold = 3.9
  elif scale in ("confidence", "confidence_smoke"):  # norms as confidence, 5 seeds
    return _confidence(smoke=scale == "confidence_smoke")
  elif scale in ("long_tail", "long_tail_smoke"):  # class frequency vs norm, 5 seeds
    return _long_tail(smoke=scale == "long_tail_smoke")
  elif scale == "smoke":
    arms, seeds = ["default", "cut3_all"], (0,)
    common.fmnist_smoke(base)
  if scale in ("wd", "recipe", "scale"):  # claims-table arms: the linear probe next to kNN
    base.eval.linear_probe = True
  return compare.comparison_config(
      base=base, variants=variants, run_variants=arms, seeds=seeds,
      report_epochs=(1, 2, 4, 8), threshold=0.74, loss_threshold=loss_threshold,
      to_baseline_final=scale == "recipe",
      baseline="last_x1" if scale == "scale" else "default",
      title="SimCLR Fashion-MNIST 16 px: cut-initialization and GradScale")
