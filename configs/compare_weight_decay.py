"""Weight-decay sweeps: weight decay bounds the embedding norms (PAPER.md §1, §3-4).

    python -m jnorm.main --config configs/compare_weight_decay.py:digits --workdir /tmp/cmp_wd
    python -m jnorm.main --config configs/compare_weight_decay.py:simsiam,digits --workdir /tmp/cmp_wd_ss
    python -m jnorm.main --config configs/compare_weight_decay.py --workdir /tmp/cmp_wd_cifar
    python -m jnorm.main --config configs/compare_weight_decay.py:simsiam --workdir /tmp/cmp_wd_ss_cifar

The reference's sweeps: SimCLR weight decay {0, 1e-8, 1e-6, 1e-4}; SimSiam {0, 5e-6,
5e-4, 5e-2}. Paper scale (no `digits`): CIFAR-10, ResNet-18 (`configs/simclr.py:cifar10`,
`configs/simsiam.py:cifar10`), 3 seeds. Measures the projector-norm trajectories (the
claim: larger weight decay, smaller norms) and the kNN accuracy at early epochs (the
paper: smaller norms converge faster, up to the point where decay hurts).

`:digits` (SimCLR, configs/default.py at 8 px, 8 epochs, 2 seeds: 10 sub-runs of 80
steps; not timed here, see configs/compare_reference.py for the per-run cost) adds
`wd1e-3`, because over 8 short epochs 1e-4 barely moves the norm; `:simsiam,digits` uses
`configs/simsiam.py:digits`. `:smoke`: 2 variants, a few steps.
"""

import os

from jnorm import jobs
from jnorm.jobs import compare

_HERE = os.path.dirname(os.path.abspath(__file__))

SWEEPS = {
    "simclr": {"wd0": 0.0, "wd1e-8": 1e-8, "wd1e-6": 1e-6, "wd1e-4": 1e-4},
    "simsiam": {"wd0": 0.0, "wd5e-6": 5e-6, "wd5e-4": 5e-4, "wd5e-2": 5e-2},
}


def get_config(arg=None):
  args = set(a for a in (arg or "").split(",") if a)
  unknown = args - {"simclr", "simsiam", "digits", "smoke"}
  if unknown:
    raise ValueError(f"configs/compare_weight_decay.py: unknown argument(s) {sorted(unknown)}; "
                     "use simclr|simsiam, digits, smoke")
  method = "simsiam" if "simsiam" in args else "simclr"
  sweep = dict(SWEEPS[method])
  if "smoke" in args:
    base = jobs.load_config_file(os.path.join(_HERE, "default.py"), "smoke")
    base.progress_bar = False
    return compare.comparison_config(
        base=base, variants={k: {"optim": {"weight_decay": v}} for k, v in sweep.items()},
        run_variants=("wd0", "wd1e-4"), seeds=(0,), report_epochs=(0, base.num_epochs),
        title="smoke weight-decay sweep")
  if "digits" in args:
    if method == "simclr":
      base = jobs.load_config_file(os.path.join(_HERE, "default.py"))
      sweep["wd1e-3"] = 1e-3
    else:
      base = jobs.load_config_file(os.path.join(_HERE, "simsiam.py"), "digits")
    base.data.image_size = 8
    base.num_epochs = 8.0
    base.eval.every_epochs = 1
    base.progress_bar = False
    seeds, epochs = (0, 1), (1, 2, 4, 8)
  else:
    base = jobs.load_config_file(os.path.join(_HERE, f"{method}.py"), "cifar10")
    seeds, epochs = (0, 1, 2), (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
  variants = {k: {"optim": {"weight_decay": v}} for k, v in sweep.items()}
  return compare.comparison_config(
      base=base, variants=variants, run_variants=list(variants), seeds=seeds,
      report_epochs=epochs,
      title=f"{method} {'digits' if 'digits' in args else 'CIFAR-10'}: weight-decay sweep")
