"""Attraction-only vs full InfoNCE, on balanced and long-tailed data, with and without norm control.

    python -m jnorm.main --config configs/compare_attraction.py:digits --workdir /tmp/cmp_attr
    python -m jnorm.main --config configs/compare_attraction.py --workdir /tmp/cmp_attr_cifar

The paper states the norm effect (and so the benefit of cut-init / GradScale) is strongest
in attraction-only settings and on class-imbalanced data (PAPER.md §3). Variants: loss
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
"""

import os

from jnorm import jobs
from jnorm.jobs import compare

_HERE = os.path.dirname(os.path.abspath(__file__))

LOSSES = {"infonce": "infonce", "attr": "attraction"}
DATA = {"bal": 0.0, "lt": 1.5}
NORM = {"default": {}, "cut3": {"cut_factor": 3.0}, "cut3last":
        {"cut_factor": 3.0, "cut_scope": "last_layer"}, "gs1": {"gradscale_power": 1.0}}


def _variants(norms):
  out = {}
  for lname, loss in LOSSES.items():
    for dname, ratio in DATA.items():
      for nname in norms:
        out[f"{lname}_{dname}_{nname}"] = {
            "loss": {"name": loss}, "data": {"long_tail_ratio": ratio}, "norm": NORM[nname]}
  return out


def get_config(arg=None):
  if arg in (None, ""):
    base = jobs.load_config_file(os.path.join(_HERE, "simclr.py"), "cifar10")
    variants = _variants(("default", "cut3", "gs1"))
    return compare.comparison_config(
        base=base, variants=variants, run_variants=list(variants), seeds=(0, 1, 2),
        report_epochs=(1, 2, 4, 8, 16, 32, 64, 128),
        title="SimCLR CIFAR-10(-LT): attraction-only vs InfoNCE")
  if arg not in ("digits", "smoke"):
    raise ValueError(f"configs/compare_attraction.py: unknown argument {arg!r}; use "
                     "':digits', ':smoke' or none")
  base = jobs.load_config_file(os.path.join(_HERE, "default.py"),
                                   "smoke" if arg == "smoke" else None)
  base.progress_bar = False
  variants = _variants(("default", "cut3last", "gs1"))
  if arg == "smoke":
    return compare.comparison_config(
        base=base, variants=variants, run_variants=("infonce_bal_default", "attr_lt_default"),
        seeds=(0,), report_epochs=(0, base.num_epochs), title="smoke attraction comparison")
  base.data.image_size = 8
  base.batch_size = 64  # the long-tailed split keeps 368 images: 5 steps per epoch
  base.num_epochs = 4.0
  base.optim.warmup_epochs = 1.0
  base.eval.every_epochs = 1
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=(0,),
      report_epochs=(1, 2, 3, 4),
      title="SimCLR digits: attraction-only vs InfoNCE, balanced vs long-tailed")
