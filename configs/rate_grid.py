"""Is a norm intervention more than a learning rate? Arms x 5 rates x 5 paired seeds.

    python -m jnorm.main --config configs/rate_grid.py:simclr --workdir docs/findings_data/rate_grid_simclr
    python -m jnorm.main --config configs/rate_grid.py:simsiam --workdir docs/findings_data/rate_grid_simsiam
    python -m jnorm.main --config configs/rate_grid.py:byol --workdir docs/findings_data/rate_grid_byol
    python -m jnorm.main --config configs/rate_grid.py:simclr,smoke --workdir /tmp/rate_grid_smoke

Needs the Debian package: `apt-get update && apt-get install -y dataset-fashion-mnist`.
Add `--config.workers=2` on a 2-core machine (the same results, sooner); rerun a command
with `--config.aggregate_only=True` to rebuild its tables from the raw runs.

Setting: the Fashion-MNIST bases of configs/compare_fmnist.py (SimCLR) and
configs/compare_fmnist_siamese.py (SimSiam, BYOL), trained for 4 epochs instead of 8
(1 warm-up epoch, then cosine), kNN after every epoch with the evaluation protocol of
the bases, and the linear probe on the final weights. Five peak learning rates, 3x
apart, placed by this batch size's equivalent of the reference's effective rate (its
configured rate squared, linearly scaled to batch 128): SimCLR 0.6² x 128/256 = 0.18,
the centre of 0.02, 0.06, 0.18, 0.54, 1.62; SimSiam and BYOL 0.2² x 128/1024 = 0.005,
the lowest of 0.005, 0.015, 0.045, 0.135, 0.405 (the bases run at 0.1 and 0.05).
Arms: SimCLR `default`, `cut3_all`, `cut3_last`, `gradscale1`; SimSiam and BYOL
`default`, `cut3_all`, `gradscale1` (configs/compare_fmnist.py's arms).
Seeds 0-4, paired across every arm and rate.

Produces, besides the compare job's tables (jnorm/jobs/compare.py; one sub-run per
`<arm>_lr<rate>` and seed), rate_grid.md and knn_auc_vs_rate.png (jnorm/rate_grid.py):
the score (mean kNN accuracy over epochs 0-4) per arm and rate with diverged seeds
counted, the paired difference to `default` at each rate, and best against best, each
arm at the rate that is best on the other seeds (leave-one-seed-out).
"""

import common
from jnorm import rate_grid
from jnorm.jobs import compare

SIMCLR_RATES = (0.02, 0.06, 0.18, 0.54, 1.62)
SIAMESE_RATES = (0.005, 0.015, 0.045, 0.135, 0.405)
ARMS = {"default": {}, "cut3_all": {"norm": common.CUT3},
        "cut3_last": {"norm": common.CUT3_LAST}, "gradscale1": {"norm": common.GRADSCALE1}}
EPOCHS = 4.0


def get_config(arg=None):
  choices = ("simclr", "simsiam", "byol", "smoke")
  words = common.parse_arg(arg, choices, config_file=__file__)
  method = common.pick_one(words, ("simclr", "simsiam", "byol"), default="simclr",
                           config_file=__file__)
  if method == "simclr":
    base, rates, arms = common.fmnist_simclr(), SIMCLR_RATES, list(ARMS)
  else:
    base, rates = common.fmnist_siamese(method), SIAMESE_RATES
    arms = ["default", "cut3_all", "gradscale1"]
  base.num_epochs = EPOCHS
  base.eval.linear_probe = True  # next to kNN, on the final weights
  seeds = (0, 1, 2, 3, 4)
  if "smoke" in words:
    arms, rates, seeds = arms[:2], rates[2:4], (0, 1, 2)
    common.fmnist_smoke(base)
  variants = {}
  for arm in arms:
    for rate in rates:
      overrides = {key: dict(value) for key, value in ARMS[arm].items()}
      overrides.setdefault("optim", {})["learning_rate"] = rate
      variants[rate_grid.variant_name(arm, rate)] = overrides
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=seeds,
      report_epochs=(1, 2, 4), baseline=rate_grid.variant_name("default", rates[0]),
      grid_arms=arms, grid_rates=rates,
      title=f"{method} Fashion-MNIST 16 px")
