"""Norm manipulation for the non-contrastive methods: SimSiam and BYOL on Fashion-MNIST.

    python -m jnorm.main --config configs/compare_fmnist_siamese.py:simsiam --workdir docs/findings_data/fmnist_simsiam
    python -m jnorm.main --config configs/compare_fmnist_siamese.py:byol --workdir docs/findings_data/fmnist_byol
    python -m jnorm.main --config configs/compare_fmnist_siamese.py:simsiam,smoke --workdir /tmp/siamese_smoke

Needs the Debian package: `apt-get update && apt-get install -y dataset-fashion-mnist`.

Setting: configs/compare_fmnist.py's data, backbone, augmentations, batch (128), 8
epochs and kNN after every epoch, with the non-contrastive heads of `common.fmnist_siamese`
(projector 128-128-128 with BN, predictor bottleneck 32; SGD Nesterov lr 0.05, weight
decay 5e-4; BYOL's target an EMA with τ 0.99). Every evaluation also logs the collapse
monitor `<head>_normalized_std` (std of the L2-normalized test embeddings per dimension,
averaged; 0 = collapsed, ~1/sqrt(128) = 0.088 when spread).

Arms: `default`; `cut3_all`, `cut9_all` (every initial parameter / 3 or / 9, BN affine
included, as the reference); `gradscale1` (GradScale p 1 at the same rate). Seeds 0-4,
paired. The baseline is `default`; `epochs_to_baseline_final` is the epoch at which a
run first reaches the final kNN accuracy of the default run with the same seed (the
norm-aware recipe's measure: how many epochs an arm needs for the default's result).
`lr0p15` (the default at 3x its rate, 0.15) tests whether a larger step alone gives
what cut and GradScale give; run it with `--config.run_variants=default,lr0p15` (the
SimSiam grid's `default` runs are reused).
"""

import common
from jnorm.jobs import compare

ARMS = {
    "default": {},
    "cut3_all": {"norm": common.CUT3},
    "cut9_all": {"norm": {"cut_factor": 9.0}},
    "gradscale1": {"norm": common.GRADSCALE1},
    # The named confound of cut and GradScale (both act as a larger step): the default
    # at 3x its rate.
    "lr0p15": {"optim": {"learning_rate": 0.15}},
}


def get_config(arg=None):
  choices = ("simsiam", "byol", "smoke")
  words = common.parse_arg(arg, choices, config_file=__file__)
  method = common.pick_one(words, ("simsiam", "byol"), default="simsiam",
                           config_file=__file__)
  base = common.fmnist_siamese(method)
  arms, seeds = ["default", "cut3_all", "cut9_all", "gradscale1"], (0, 1, 2, 3, 4)
  if "smoke" in words:
    arms, seeds = ["default", "cut3_all"], (0,)
    common.fmnist_smoke(base)
  return compare.comparison_config(
      base=base, variants=ARMS, run_variants=arms, seeds=seeds,
      report_epochs=(1, 2, 4, 8), threshold=0.74, baseline="default",
      to_baseline_final=True,
      title=f"{method} Fashion-MNIST 16 px: cut-initialization and GradScale")
