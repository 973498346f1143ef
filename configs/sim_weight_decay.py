"""Embedding-norm equilibrium under weight decay: job "sim_weight_decay".

Commands:
  python -m jnorm.main --config configs/sim_weight_decay.py --workdir /tmp/jnorm_sim_wd
  python -m jnorm.main --config configs/sim_weight_decay.py:smoke --workdir /tmp/jnorm_sim_wd_smoke

Points trained by gradient descent (step γ = lr) on -cos(z, w) plus L2 weight decay λ,
the positive re-drawn every step at the fixed angle θ from z (see
jnorm/simulations/weight_decay.py for the setting and the derivation). Starts at norms
1 and 12 (below and above every equilibrium). Produces results.json (`weight_decays`,
`equilibrium_norms` = mean norm over the last 10% of steps, `heuristic_norms` =
(γ sin²θ/(2λ))^¼, `exact_fixed_point_norms` = (γ sin²θ/(2λ - γλ²))^¼, `ratios` =
measured/heuristic, trajectories) and weight_decay.png. With λ = 0 the norm only grows
(no equilibrium; its ratio is null). Expected: ratio = (1 - γλ/2)^(-¼) ≈ 1 + γλ/8.
Measured (float32): ratios 1.0000, 1.0001, 1.0013 for λ = 1e-4, 1e-3, 1e-2. A few
seconds on 2 CPU cores.
"""

import ml_collections

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  smoke = "smoke" in common.parse_arg(arg, ("smoke",), config_file=__file__)
  config = ml_collections.ConfigDict()
  config.job = "sim_weight_decay"
  config.seed = 0
  config.weight_decays = (0.0, 1e-4, 1e-3, 1e-2)
  config.init_norms = (1.0, 12.0)
  config.angle = 1.0  # θ in radians
  config.lr = 1.0
  config.dim = 20
  config.num_steps = 30_000  # ≈ 12 relaxation times 1/(4γλ) for the smallest λ > 0
  config.tail_fraction = 0.1
  if smoke:
    config.weight_decays = (0.0, 1e-2)
    config.dim = 8
    config.num_steps = 2_000
  return config
