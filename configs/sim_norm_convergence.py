"""Steps to converge vs embedding norm (docs/paper.md §2.1): job "sim_norm_convergence".

Commands:
  python -m jnorm.main --config configs/sim_norm_convergence.py --workdir /tmp/jnorm_sim_norm
  python -m jnorm.main --config configs/sim_norm_convergence.py:smoke --workdir /tmp/jnorm_sim_norm_smoke

500 pairs in 20-D, both points uniform on the sphere of radius r, plain gradient descent
(lr 10) on the mean negative cosine similarity, the reference's first step on
-mean(z·w)/r², stop at mean cos >= 1 - 1e-3. Produces <workdir>/results.json (`norms`,
`steps`, `a` of steps ≈ a·r², `exponent` of steps ∝ r^k) and norm_convergence.png.
Expected: steps ≈ 96·r² (6, 24, 96, 384, 1536, 6144, 9600 for r = 0.25 .. 8, 10; the
PyTorch baseline's `converge` command, see benchmarks/README.md, gives exactly these),
exponent ≈ 2. Measured (float32, seed 0): 6, 24, 95, 383, 1532, 6131, 9579; a = 95.8,
exponent 2.000. A few seconds on 2 CPU cores.

float32 by default, like the PyTorch reference; `--config.dtype=float64` changes the
counts by < 0.5% (about the size of the seed-to-seed spread).
"""

import ml_collections

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  smoke = "smoke" in common.parse_arg(arg, ("smoke",), config_file=__file__)
  config = common.cosine_descent_base("sim_norm_convergence", smoke=smoke)
  config.norms = (0.5, 1.0, 2.0) if smoke else (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)
  config.first_step_quirk = True
  return config
