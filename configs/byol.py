"""BYOL with the reference's hyperparameters (PAPER.md §4).

    python -m jnorm.main --config configs/byol.py:cifar10 --workdir /tmp/byol_c10
    python -m jnorm.main --config configs/byol.py:digits,smoke --workdir /tmp/byol_smoke

As configs/simsiam.py (same projector, predictor, loss, optimiser), with batch 64 and
16 accumulation steps (effective 1024) and a target network that is an EMA of the online
one with τ = 0.99 (fixed; `--config.byol.tau_schedule=cosine` for BYOL's τ -> 1).
The reference's BYOL loop crashes (PAPER.md §5); this one does not.
"""

import os

from jnorm import jobs

_simsiam = jobs.load_config_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "simsiam.py"))


def get_config(arg=None):
  config = _simsiam.get_config(arg)
  config.method = "byol"
  config.byol.tau_base = 0.99
  config.byol.tau_schedule = "fixed"
  if config.data.name != "digits" and "smoke" not in (arg or ""):
    config.batch_size = 64
    config.optim.accumulation_steps = 16
    config.checkpoint_every_steps = 10 * (50000 // 64)
  return config
