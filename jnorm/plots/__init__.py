"""Every figure jnorm draws. Jobs call these; nothing below `jnorm.jobs` draws.

  analysis     norm buckets, norm histograms, class norms, norm trajectories
  compare      kNN accuracy and norm vs epoch per arm, with interval bands
  simulations  the paper's toy simulations
  training     one run's kNN and norm curve
  figures      `new_figure` / `save_figure` (Agg backend, atomic PNG writes)
"""
