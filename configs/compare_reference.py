"""The reference's norm-manipulation comparison: default vs cut-init (c = 3) vs GradScale (p = 1).

    python -m jnorm.main --config configs/compare_reference.py:digits --workdir /tmp/cmp_ref
    python -m jnorm.main --config configs/compare_reference.py:digits16 --workdir docs/findings_data/digits16_simclr
    python -m jnorm.main --config configs/compare_reference.py --workdir /tmp/cmp_ref_cifar
    python -m jnorm.main --config configs/compare_reference.py:smoke --workdir /tmp/cmp_smoke

Paper scale (no argument; GPU/TPU): SimCLR, ResNet-18, CIFAR-10 (`configs/simclr.py:cifar10`:
the reference's lr 0.6, 10 warm-up epochs, wd 1e-6) at batch 512, 3 seeds. Variants
(docs/paper.md §3.5, §4.5): `default`; `cut3` (every initial parameter / 3, BN affine
included, as the reference); `gradscale1` (p = 1 on the projector output, with the
reference's GradScale example settings lr 0.1 and 100 warm-up epochs);
`default_lr0p1_wu100` (the same lr and warm-up without GradScale, so the GradScale
effect is not confounded with the schedule).
Measures kNN accuracy (backbone features, cosine, k 200) at early epochs -- the paper's
convergence-speed measure -- and the projector-embedding norms over training; the paper
reports cut and GradScale converging faster (accuracy tables not recovered, docs/paper.md §3.5).

`:digits16`: the Fashion-MNIST grid's arms (configs/compare_fmnist.py: default, cut 3 of
every parameter, cut 3 of the projector's last layer, GradScale p 1 at the default rate and
at the reference example's compensated rate) on the embedded digits at 16 px
(configs/default.py, 16 epochs of 10 steps, kNN after every epoch), 5 paired seeds.
`:digits`: the same comparison on the embedded digits (configs/default.py: SmallResNet,
lr 0.1, 2 warm-up epochs) at their native 8 px for 8 epochs (80 steps), 2 seeds; GradScale
with 3 warm-up epochs and its matched control `default_wu3`. 8 sub-runs; on the shared,
loaded 2-core machine comparable 40-step runs took 40-180 s each (compile and kNN
included), so expect roughly 5-15 minutes depending on load (not timed on an idle machine).
docs/findings.md explains why cut-init of every parameter is slower on this BatchNorm
network. `:smoke`: 2 variants, 1 seed, 2 steps at 8 px (tests).
Several hosts: see jnorm/jobs/compare.py (`--config.process_index/process_count`).
Produces in <workdir> (the compare job, jnorm/jobs/compare.py): one training run per
variant and seed in <variant>/seed<k>, results.json (per-arm kNN accuracy at
`report_epochs` and embedding norms: mean, 95% interval, paired differences to the
baseline arm), comparison.md, comparison.csv, knn_accuracy_vs_epoch.png and
norm_vs_epoch.png.
"""

import common
from jnorm.jobs import compare


def _digits16():
  """The Fashion-MNIST grid's arms on the embedded digits at 16 px (configs/default.py's
  setting, 16 of its 32 epochs), 5 paired seeds."""
  base = common.digits_simclr()
  base.num_epochs = 16.0
  base.eval.every_epochs = 1
  base.progress_bar = False
  variants = {
      "default": {},
      "cut3_all": {"norm": common.CUT3},
      "cut3_last": {"norm": common.CUT3_LAST},
      "gradscale1": {"norm": common.GRADSCALE1},
      # The reference example's rate compensation (configs/compare_fmnist.py): 36x lower
      # peak rate, warm-up over 20% of training.
      "gradscale1_comp": {"norm": common.GRADSCALE1,
                          "optim": {"learning_rate": 0.1 / 36, "warmup_epochs": 3.2}},
  }
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0, 1, 2, 3, 4),
      report_epochs=(1, 2, 4, 8, 16), baseline="default",
      title="SimCLR digits 16 px: default vs cut-init vs GradScale")


def get_config(arg=None):
  choices = ("digits", "digits16", "smoke")
  scale = common.pick_one(common.parse_arg(arg, choices, config_file=__file__),
                          choices, default="cifar10", config_file=__file__)
  if scale == "cifar10":
    base = common.simclr("cifar10")
    base.batch_size = 512  # the reference's GradScale example
    reference_gradscale_schedule = {"learning_rate": 0.1, "warmup_epochs": 100.0}
    variants = {
        "default": {},
        "cut3": {"norm": common.CUT3},
        "gradscale1": {"norm": common.GRADSCALE1, "optim": reference_gradscale_schedule},
        "default_lr0p1_wu100": {"optim": reference_gradscale_schedule},
    }
    return compare.comparison_config(
        base=base, variants=variants, run_variants=list(variants), seeds=(0, 1, 2),
        report_epochs=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        title="SimCLR CIFAR-10: default vs cut-init vs GradScale")
  variants = {
      "default": {},
      "cut3": {"norm": common.CUT3},
      "gradscale1": {"norm": common.GRADSCALE1, "optim": {"warmup_epochs": 3.0}},
      "default_wu3": {"optim": {"warmup_epochs": 3.0}},
  }
  if scale == "smoke":
    base = common.digits_simclr(smoke=True)
    base.progress_bar = False
    base.num_epochs = 0.05  # 2 steps at batch 32
    base.data.image_size = 8
    return compare.comparison_config(
        base=base, variants=variants, run_variants=("default", "cut3"), seeds=(0,),
        report_epochs=(0, base.num_epochs), title="smoke comparison")
  if scale == "digits16":
    return _digits16()
  base = common.short_digits(common.digits_simclr(), num_epochs=8.0)
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0, 1),
      report_epochs=(1, 2, 4, 8), title="SimCLR digits: default vs cut-init vs GradScale")
