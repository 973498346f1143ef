"""Why do cut-init and GradScale not speed up SimCLR on digits? Short runs, several studies.

    python -m jnorm.main --config configs/compare_investigation.py:lr_cut --workdir runs/inv_lr_cut
    python -m jnorm.main --config configs/compare_investigation.py:gradscale --workdir runs/inv_gradscale
    python -m jnorm.main --config configs/compare_investigation.py:attraction --workdir runs/inv_attraction
    python -m jnorm.main --config configs/compare_investigation.py:long_tail --workdir runs/inv_long_tail

All studies start from configs/default.py (SimCLR, SmallResNet with BatchNorm after every
conv, reference InfoNCE t 0.5, SGD m 0.9, batch 128, kNN k 20 on backbone features) at
digits' native 8 px (for compute: the machine these ran on was shared and ~20x slower than
usual) and train for 4 epochs (40 steps; 1 warm-up epoch + cosine) with kNN after every
epoch: early-epoch kNN accuracy is the paper's convergence-speed measure.
Findings: docs/findings.md.

- `lr_cut`: the BatchNorm hypothesis. A conv followed by BatchNorm is scale-invariant, so
  dividing its kernel by c multiplies its effective step by c² (the 1/‖w‖ law on weights).
  Variants: default and cut 3 (all params) at lr 0.1; cut 3 at lr 0.1/9 (undoes the c²);
  default at lr 0.9 (= 0.1·9, the effective step cut gives the BN-ed convs); cut 3 of
  only the projector's last layer (smaller embeddings, BN-ed convs untouched) at lr 0.1;
  cut 3 of every kernel and bias but not the BN affine parameters (the backbone's output
  is then unchanged at init: only the projector shrinks the embeddings) at lr 0.1.
- `gradscale`: GradScale p = 1 vs default at lr 0.1, 0.03 and 0.9 (where norms grow large).
- `attraction`: the attraction-only loss (the setting where the paper says the norm effect
  is strongest) with default init, last-layer cut 3 and GradScale p = 1.
- `long_tail`: digits long-tailed (class i keeps int(130·1.5^-i) train images; test
  balanced) with default init, last-layer cut 3 and GradScale p = 1.
Seeds: `--config.seeds=0,1` (default 0 only, for compute). No argument: `lr_cut`.
Produces in <workdir> (the compare job, jnorm/jobs/compare.py): one training run per
variant and seed in <variant>/seed<k>, results.json (per-arm kNN accuracy at
`report_epochs` and embedding norms: mean, 95% interval, paired differences to the
baseline arm), comparison.md, comparison.csv, knn_accuracy_vs_epoch.png and
norm_vs_epoch.png.
"""

import common
from jnorm.jobs import compare

CUT3, CUT3_LAST, GS1 = common.CUT3, common.CUT3_LAST, common.GRADSCALE1


def _lr(lr):
  return {"optim": {"learning_rate": lr}}


STUDIES = {
    "lr_cut": {
        "default_lr0p1": {},
        "cut3_lr0p1": {"norm": CUT3},
        "cut3_lr0p011": {"norm": CUT3, **_lr(0.1 / 9)},
        "default_lr0p9": _lr(0.9),
        "cut3last_lr0p1": {"norm": CUT3_LAST},
        "cut3nobn_lr0p1": {"norm": {**CUT3, "cut_bn_affine": False}},
    },
    "gradscale": {
        "default_lr0p1": {},
        "gs1_lr0p1": {"norm": GS1},
        "default_lr0p03": _lr(0.03),
        "gs1_lr0p03": {"norm": GS1, **_lr(0.03)},
        "default_lr0p9": _lr(0.9),
        "gs1_lr0p9": {"norm": GS1, **_lr(0.9)},
    },
    "attraction": {
        "attr_default": {"loss": {"name": "attraction"}},
        "attr_cut3last": {"loss": {"name": "attraction"}, "norm": CUT3_LAST},
        "attr_gs1": {"loss": {"name": "attraction"}, "norm": GS1},
    },
    "long_tail": {
        "lt_default": {"data": {"long_tail_ratio": 1.5}},
        "lt_cut3last": {"data": {"long_tail_ratio": 1.5}, "norm": CUT3_LAST},
        "lt_gs1": {"data": {"long_tail_ratio": 1.5}, "norm": GS1},
    },
}


def get_config(arg=None):
  words = common.parse_arg(arg, tuple(STUDIES), config_file=__file__)
  study = common.pick_one(words, tuple(STUDIES), default="lr_cut", config_file=__file__)
  base = common.short_digits(common.digits_simclr(), num_epochs=4.0, warmup_epochs=1.0)
  variants = STUDIES[study]
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0,),
      report_epochs=(1, 2, 3, 4), title=f"digits investigation: {study}")
