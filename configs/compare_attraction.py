"""Attraction-only vs full InfoNCE, on balanced and long-tailed data, with and without norm control.

    python -m jnorm.main --config configs/compare_attraction.py:digits --workdir /tmp/cmp_attr
    python -m jnorm.main --config configs/compare_attraction.py --workdir /tmp/cmp_attr_cifar
    python -m jnorm.main --config configs/compare_attraction.py:smoke --workdir /tmp/cmp_attr_smoke

The paper states the norm effect (and so the benefit of cut-init / GradScale) is strongest
in attraction-only settings and on class-imbalanced data (docs/paper.md §3.5). Variants: loss
{infonce (reference, one-directional), attraction (its positive term only)} x data
{balanced, long-tailed} x norm control {none, cut 3, GradScale p = 1}; `run_variants`
picks which run (all 12 by default at paper scale: CIFAR-10 / CIFAR-10-LT (ratio 1.5,
5000 -> 130 images per class, 14,736 in all), ResNet-18, `configs/simclr.py:cifar10`).

`:digits`: configs/default.py on digits at 8 px, batch 64 (long-tailed: class i keeps
int(126 * 1.5^-i) train images, 368 in all; test balanced), 4 epochs, 1 seed, the 12
variants with last-layer cut instead of all-params cut (docs/findings.md: all-params cut
is slower on this BatchNorm network for a reason unrelated to the embedding norm).
Not timed as a whole here (12 sub-runs of 20-80 steps). `:smoke`: 2 variants, a few steps.
Note that attraction alone has a collapsed optimum (all embeddings equal): its kNN
accuracy is expected to fall once training goes on; early epochs are what is compared.
Produces in <workdir> (the compare job, jnorm/jobs/compare.py): one training run per
variant and seed in <variant>/seed<k>, results.json (per-arm kNN accuracy at
`report_epochs` and embedding norms: mean, 95% interval, paired differences to the
baseline arm), comparison.md, comparison.csv, knn_accuracy_vs_epoch.png and
norm_vs_epoch.png.
"""

import common
from jnorm.jobs import compare

LOSSES = {"infonce": "infonce", "attr": "attraction"}
DATA = {"bal": 0.0, "lt": 1.5}
NORM = {"default": {}, "cut3": common.CUT3, "cut3last": common.CUT3_LAST,
        "gs1": common.GRADSCALE1}


def _variants(norms):
  out = {}
  for lname, loss in LOSSES.items():
    for dname, ratio in DATA.items():
      for nname in norms:
        out[f"{lname}_{dname}_{nname}"] = {
            "loss": {"name": loss}, "data": {"long_tail_ratio": ratio}, "norm": NORM[nname]}
  return out


def get_config(arg=None):
  scale = common.pick_one(common.parse_arg(arg, ("digits", "smoke"), config_file=__file__),
                          ("digits", "smoke"), default="cifar10", config_file=__file__)
  if scale == "cifar10":
    variants = _variants(("default", "cut3", "gs1"))
    return compare.comparison_config(
        base=common.simclr("cifar10"), variants=variants, run_variants=list(variants),
        seeds=(0, 1, 2), report_epochs=(1, 2, 4, 8, 16, 32, 64, 128),
        title="SimCLR CIFAR-10(-LT): attraction-only vs InfoNCE")
  variants = _variants(("default", "cut3last", "gs1"))
  if scale == "smoke":
    base = common.digits_simclr(smoke=True)
    base.progress_bar = False
    return compare.comparison_config(
        base=base, variants=variants, run_variants=("infonce_bal_default", "attr_lt_default"),
        seeds=(0,), report_epochs=(0, base.num_epochs), title="smoke attraction comparison")
  base = common.short_digits(common.digits_simclr(), num_epochs=4.0, warmup_epochs=1.0)
  base.batch_size = 64  # the long-tailed split keeps 368 images: 5 steps per epoch
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0,),
      report_epochs=(1, 2, 3, 4),
      title="SimCLR digits: attraction-only vs InfoNCE, balanced vs long-tailed")
