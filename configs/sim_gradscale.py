"""Norm-convergence simulation with GradScale on both points: job "sim_gradscale".

Commands:
  python -m jnorm.main --config configs/sim_gradscale.py --workdir /tmp/jnorm_sim_gradscale
  python -m jnorm.main --config configs/sim_gradscale.py:smoke --workdir /tmp/jnorm_sim_gradscale_smoke

The setting of configs/sim_norm_convergence.py, with each point passed through
`jnorm.gradscale.gradscale(z, power=p)` (gradient of row i times ‖z_i‖^p). Produces
results.json (`powers`, `norms`, `steps` per power, `exponents` of steps ∝ r^k per power)
and gradscale.png. Measured (float32, seed 0): exponents 2.00, 1.52, 1.01, 0.00 for
p = 0, 0.5, 1, 2, i.e. k ≈ 2 - p. GradScale p = 1 makes the GRADIENT size independent of
‖z‖, but the angle a step turns is (step size)/‖z‖, so the steps still grow linearly in
r; p = 2 removes the norm dependence of the step count. p = 0 equals the plain
simulation exactly. About 10-30 s on 2 CPU cores (p = 0 runs 9600 steps at r = 10).
"""

import ml_collections

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  smoke = "smoke" in common.parse_arg(arg, ("smoke",), config_file=__file__)
  config = common.cosine_descent_base("sim_gradscale", smoke=smoke)
  config.powers = (0.0, 1.0) if smoke else (0.0, 0.5, 1.0, 2.0)
  config.norms = (0.5, 1.0, 2.0) if smoke else (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)
  config.progress = not smoke
  return config
