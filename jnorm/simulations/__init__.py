"""The paper's toy simulations as pure functions (no config, no I/O).

  cosine_descent  norm, angle and GradScale convergence of free embeddings
  weight_decay    norm equilibrium under weight decay
  imbalance       norms of a class-imbalanced MLP trained with a supervised InfoNCE

The jobs that read configs and write results are in `jnorm.jobs.simulations`.
"""
