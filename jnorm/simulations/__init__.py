"""The paper's toy simulations (PAPER.md §2) as pure functions and as jnorm jobs.

Pure simulations: `cosine_descent` (norm, angle and GradScale convergence),
`weight_decay` (norm equilibrium under weight decay), `imbalance` (class-imbalanced MLP).
Jobs (registered in `jnorm.jobs`): the five `*_job(config, workdir) -> dict` below.
"""

from jnorm.simulations.jobs import angle_convergence_job
from jnorm.simulations.jobs import gradscale_job
from jnorm.simulations.jobs import imbalance_job
from jnorm.simulations.jobs import norm_convergence_job
from jnorm.simulations.jobs import weight_decay_job

__all__ = [
    "angle_convergence_job",
    "gradscale_job",
    "imbalance_job",
    "norm_convergence_job",
    "weight_decay_job",
]
