"""Where the embedding norms of trained runs come from (jnorm/jobs/geometry.py).

    python -m jnorm.main --config configs/geometry.py --workdir docs/findings_data/fmnist_geometry \
      --config.train_workdirs=RUNS/last_x1/seed0,RUNS/last_x1/seed1,...

For each training workdir (e.g. the five seeds of one arm of configs/compare_fmnist.py),
at initialisation and at every checkpoint: the test embeddings' mean norm, the norm of
their centroid, their spread around it and the participation ratio of that spread, per
head; the Frobenius norms of the projector's kernels. Mean and 95% interval over the runs.
"""

import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.job = "geometry"
  config.train_workdirs = ""
  config.heads = ("projector", "backbone")
  return config
