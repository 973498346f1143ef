"""The reference's norm-manipulation comparison: default vs cut-init (c = 3) vs GradScale (p = 1).

    python -m jnorm.main --config configs/compare_reference.py:digits --workdir /tmp/cmp_ref
    python -m jnorm.main --config configs/compare_reference.py --workdir /tmp/cmp_ref_cifar
    python -m jnorm.main --config configs/compare_reference.py:smoke --workdir /tmp/cmp_smoke

Paper scale (no argument; GPU/TPU): SimCLR, ResNet-18, CIFAR-10 (`configs/simclr.py:cifar10`:
the reference's lr 0.6, 10 warm-up epochs, wd 1e-6) at batch 512, 3 seeds. Variants (PAPER.md §3-4):
`default`; `cut3` (every initial parameter / 3, BN affine included, as the reference);
`gradscale1` (p = 1 on the projector output, with the reference's GradScale example
settings lr 0.1 and 100 warm-up epochs); `default_lr0p1_wu100` (the same lr and warm-up
without GradScale, so the GradScale effect is not confounded with the schedule).
Measures kNN accuracy (backbone features, cosine, k 200) at early epochs -- the paper's
convergence-speed measure -- and the projector-embedding norms over training; the paper
reports cut and GradScale converging faster (accuracy tables not recovered, PAPER.md §3).

`:digits`: the same comparison on the embedded digits (configs/default.py: SmallResNet,
lr 0.1, 2 warm-up epochs) at their native 8 px for 8 epochs (80 steps), 2 seeds; GradScale
with 3 warm-up epochs and its matched control `default_wu3`. 8 sub-runs; on the shared,
loaded 2-core machine comparable 40-step runs took 40-180 s each (compile and kNN
included), so expect roughly 5-15 minutes depending on load (not timed on an idle machine).
docs/findings.md explains why cut-init of every parameter is slower on this BatchNorm
network. `:smoke`: 2 variants, 1 seed, 2 steps at 8 px (tests).
Several hosts: see jnorm/compare.py (`--config.process_index/process_count`).
"""

import os

from jnorm import jobs
from jnorm.jobs import compare

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
  if arg in (None, ""):
    base = jobs.load_config_file(os.path.join(_HERE, "simclr.py"), "cifar10")
    base.batch_size = 512  # the reference's GradScale example
    variants = {
        "default": {},
        "cut3": {"norm": {"cut_factor": 3.0}},
        "gradscale1": {"norm": {"gradscale_power": 1.0},
                       "optim": {"learning_rate": 0.1, "warmup_epochs": 100.0}},
        "default_lr0p1_wu100": {"optim": {"learning_rate": 0.1, "warmup_epochs": 100.0}},
    }
    return compare.comparison_config(
        base=base, variants=variants, run_variants=list(variants), seeds=(0, 1, 2),
        report_epochs=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        title="SimCLR CIFAR-10: default vs cut-init vs GradScale")
  if arg not in ("digits", "smoke"):
    raise ValueError(f"configs/compare_reference.py: unknown argument {arg!r}; use "
                     "':digits', ':smoke' or none")
  base = jobs.load_config_file(os.path.join(_HERE, "default.py"),
                                   "smoke" if arg == "smoke" else None)
  base.progress_bar = False
  variants = {
      "default": {},
      "cut3": {"norm": {"cut_factor": 3.0}},
      "gradscale1": {"norm": {"gradscale_power": 1.0}, "optim": {"warmup_epochs": 3.0}},
      "default_wu3": {"optim": {"warmup_epochs": 3.0}},
  }
  if arg == "smoke":
    base.num_epochs = 0.05  # 2 steps at batch 32
    base.data.image_size = 8
    return compare.comparison_config(
        base=base, variants=variants, run_variants=("default", "cut3"), seeds=(0,),
        report_epochs=(0, base.num_epochs), title="smoke comparison")
  base.data.image_size = 8  # digits' native size: 4x cheaper than 16 px
  base.num_epochs = 8.0
  base.eval.every_epochs = 1  # kNN after every epoch
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0, 1),
      report_epochs=(1, 2, 4, 8), title="SimCLR digits: default vs cut-init vs GradScale")
