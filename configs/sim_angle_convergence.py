"""Steps to converge vs initial angle at unit norm (docs/paper.md §2.2): job "sim_angle_convergence".

Commands:
  python -m jnorm.main --config configs/sim_angle_convergence.py --workdir /tmp/jnorm_sim_angle
  python -m jnorm.main --config configs/sim_angle_convergence.py:smoke --workdir /tmp/jnorm_sim_angle_smoke

500 pairs in 20-D at norm 1, every pair starting at exactly the angle θ (the positive is
a spherical interpolation from a random orthogonal direction toward -z), plain gradient
descent (lr 10) on the mean negative cosine, stop at mean cos >= 1 - 1e-3. Produces
results.json (`angles`, `steps`) and angle_convergence.png. Expected (reference): about
96-99 steps near π/2 and about 187 at 3.10 rad -- the opposite-halves slowdown is mild
next to the norm effect. Measured (float32, seed 0): 95 at 1.6 rad, 187 at 3.10 rad.
A few seconds on 2 CPU cores.
"""

import ml_collections
import numpy as np

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  smoke = "smoke" in common.parse_arg(arg, ("smoke",), config_file=__file__)
  config = common.cosine_descent_base("sim_angle_convergence", smoke=smoke)
  if smoke:
    config.angles = (1.0, 1.5708, 3.0)
  else:
    config.angles = tuple(float(a) for a in np.round(np.linspace(0.1, 3.0, 30), 4)) + (3.05, 3.10)
  config.radius = 1.0
  return config
