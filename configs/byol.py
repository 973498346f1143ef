"""BYOL with the reference's hyperparameters (docs/paper.md §4.1).

    python -m jnorm.main --config configs/byol.py:cifar10 --workdir /tmp/byol_c10
    python -m jnorm.main --config configs/byol.py:digits --workdir /tmp/byol_digits
    python -m jnorm.main --config configs/byol.py:digits,smoke --workdir /tmp/byol_smoke

As configs/simsiam.py (same projector, predictor, loss, optimiser), with batch 64 and
16 accumulation steps (effective 1024) and a target network that is an EMA of the online
one with τ = 0.99 (fixed; `--config.byol.tau_schedule=cosine` for BYOL's τ -> 1).
On digits: configs/simsiam.py:digits with the EMA target. `smoke`: a few steps (as
configs/simclr.py's). The reference's BYOL loop crashes (docs/paper.md §5.3); this
one does not.
Produces in <workdir> (the train job): results.json (`knn_accuracy` of backbone
features at the end, `knn_accuracy_at_init`, `embedding_norm_mean`, `knn_curve`),
metrics.jsonl, TensorBoard events, knn_curve.png and checkpoints; rerunning the
command resumes or reports a finished run.
"""

import common

DATASETS = ("cifar10", "cifar100", "digits")


def get_config(arg=None):
  words = common.parse_arg(arg, DATASETS + ("smoke",), config_file=__file__)
  dataset = common.pick_one(words, DATASETS, default="cifar10", config_file=__file__)
  config = common.byol(dataset)
  return common.reference_smoke(config) if "smoke" in words else config
