"""Weight-decay sweeps: weight decay bounds the embedding norms (docs/paper.md §1.5, §3.5, §4.5).

    python -m jnorm.main --config configs/compare_weight_decay.py:digits --workdir /tmp/cmp_wd
    python -m jnorm.main --config configs/compare_weight_decay.py:simsiam,digits --workdir /tmp/cmp_wd_ss
    python -m jnorm.main --config configs/compare_weight_decay.py --workdir /tmp/cmp_wd_cifar
    python -m jnorm.main --config configs/compare_weight_decay.py:simsiam --workdir /tmp/cmp_wd_ss_cifar
    python -m jnorm.main --config configs/compare_weight_decay.py:smoke --workdir /tmp/cmp_wd_smoke

The reference's sweeps: SimCLR weight decay {0, 1e-8, 1e-6, 1e-4}; SimSiam {0, 5e-6,
5e-4, 5e-2}. Paper scale (no `digits`): CIFAR-10, ResNet-18 (`configs/simclr.py:cifar10`,
`configs/simsiam.py:cifar10`), 3 seeds. Measures the projector-norm trajectories (the
claim: larger weight decay, smaller norms) and the kNN accuracy at early epochs (the
paper: smaller norms converge faster, up to the point where decay hurts).

`:digits` (SimCLR, configs/default.py at 8 px, 8 epochs, 2 seeds: 10 sub-runs of 80
steps; not timed here, see configs/compare_reference.py for the per-run cost) adds
`wd1e-3`, because over 8 short epochs 1e-4 barely moves the norm; `:simsiam,digits` uses
`configs/simsiam.py:digits` (at 8 px, 8 epochs). `:smoke`: the sweep's first 2
strengths, a few steps (configs/default.py:smoke; `:simsiam,smoke`:
configs/simsiam.py:smoke on digits).
Produces in <workdir> (the compare job, jnorm/jobs/compare.py): one training run per
variant and seed in <variant>/seed<k>, results.json (per-arm kNN accuracy at
`report_epochs` and embedding norms: mean, 95% interval, paired differences to the
baseline arm), comparison.md, comparison.csv, knn_accuracy_vs_epoch.png and
norm_vs_epoch.png.
"""

import common
from jnorm.jobs import compare

SWEEPS = {
    "simclr": {"wd0": 0.0, "wd1e-8": 1e-8, "wd1e-6": 1e-6, "wd1e-4": 1e-4},
    "simsiam": {"wd0": 0.0, "wd5e-6": 5e-6, "wd5e-4": 5e-4, "wd5e-2": 5e-2},
}


def _variants(sweep):
  return {name: {"optim": {"weight_decay": wd}} for name, wd in sweep.items()}


def get_config(arg=None):
  words = common.parse_arg(arg, ("simclr", "simsiam", "digits", "smoke"), config_file=__file__)
  method = common.pick_one(words, ("simclr", "simsiam"), default="simclr", config_file=__file__)
  scale = common.pick_one(words, ("digits", "smoke"), default="cifar10", config_file=__file__)
  sweep = dict(SWEEPS[method])
  if scale == "smoke":  # the method's first two strengths, a few steps
    if method == "simclr":
      base = common.digits_simclr(smoke=True)
    else:
      base = common.reference_smoke(common.simsiam("digits"))
    base.progress_bar = False
    return compare.comparison_config(
        base=base, variants=_variants(sweep), run_variants=list(sweep)[:2], seeds=(0,),
        report_epochs=(0, base.num_epochs), title=f"smoke {method} weight-decay sweep")
  if scale == "digits":
    if method == "simclr":
      base = common.digits_simclr()
      sweep["wd1e-3"] = 1e-3
    else:
      base = common.simsiam("digits")
    base = common.short_digits(base, num_epochs=8.0)
    seeds, epochs = (0, 1), (1, 2, 4, 8)
  else:
    base = common.simclr("cifar10") if method == "simclr" else common.simsiam("cifar10")
    seeds, epochs = (0, 1, 2), (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
  return compare.comparison_config(
      base=base, variants=_variants(sweep), run_variants=list(sweep), seeds=seeds,
      report_epochs=epochs,
      title=f"{method} {'digits' if scale == 'digits' else 'CIFAR-10'}: weight-decay sweep")
