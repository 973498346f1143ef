"""The embedded default: SimCLR on scikit-learn's digits with a small ResNet (offline).

    python -m jnorm.main --config configs/default.py --workdir /tmp/jnorm_default
    python -m jnorm.main --config configs/default.py:smoke --workdir /tmp/jnorm_smoke

Trains SimCLR (the reference's one-directional InfoNCE, t = 0.5; SGD momentum 0.9, lr 0.1,
batch 128, 2 warm-up epochs + cosine) for 32 epochs on the 1,300 training digits
(16x16, 1 channel; 497 held out), with the `digits` augmentations, then reports the
weighted-kNN accuracy of backbone features on the test digits (train split as bank)
next to the same kNN with the untrained network (`knn_accuracy_at_init`), and the mean
projector-embedding norm. Writes results.json, metrics.jsonl, TensorBoard events,
knn_curve.png and checkpoints; rerunning the command resumes or reports a finished run.
Deviation from the reference monitor: k = 20 neighbours instead of 200, because the
bank holds only 130 digits per class (with k = 200 every vote mixes classes).
`:smoke`: a few steps at batch 32 (CI-sized, well under a minute).
"""

import common


def get_config(arg=None):
  words = common.parse_arg(arg, ("smoke",), config_file=__file__)
  return common.digits_simclr(smoke="smoke" in words)
