"""Embedding norms as confidence and novelty signals (docs/paper.md §3): job "analysis".

Commands:
  # digits: trains SimCLR (configs/default.py) on classes 0-7 into <workdir>/train, then
  # analyses it (about the default training's time plus ~30 s on 2 CPU cores)
  python -m jnorm.main --config configs/analysis.py --workdir /tmp/jnorm_analysis
  # CI-sized: a few training steps
  python -m jnorm.main --config configs/analysis.py:smoke --workdir /tmp/jnorm_analysis_smoke
  # an existing training run (any dataset), nothing trained
  python -m jnorm.main --config configs/analysis.py --workdir DIR --config.train_workdir=RUN
  # CIFAR-10 / CIFAR-100 with human labels (CIFAR-10N / CIFAR-100N) and the other CIFAR as
  # out-of-distribution data (TFDS sets prepared in --config.train.data.data_dir)
  python -m jnorm.main --config configs/analysis.py:cifar10 --workdir DIR

Produces in <workdir>: results.json with `norm_bucket_spearman` (Spearman rho of the
train -> test kNN accuracy per min-max-normalised norm bucket with the bucket centre,
projector z), `norm_bucket_spearman_loo` (leave-one-out kNN on the train split),
`novelty_auroc` (AUROC of -||z||: test images of the held-out classes 8-9 vs test images
of the trained classes), per-bucket arrays for every head, `class_norm_spearman` for
long-tailed training data, human agreement / entropy per bucket when configured, norm
trajectories; figures norm_buckets.png, norm_histogram_<head>.png (seen vs novel),
class_norms.png, human_agreement.png, human_entropy.png, norm_trajectories.png.
Expected on digits (an early throwaway prototype): bucket Spearman 0.6-0.9, novelty AUROC ~0.8
with projector norms, lower (~0.65) with backbone norms.
"""

import ml_collections

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  words = common.parse_arg(arg, ("smoke", "cifar10", "cifar100"), config_file=__file__)
  dataset = common.pick_one(words, ("cifar10", "cifar100"), default="digits",
                            config_file=__file__)
  smoke = "smoke" in words
  c = common.analysis_base()
  if dataset == "digits":
    c.train = common.digits_simclr(smoke=smoke)  # configs/default.py
  else:
    c.train = common.simclr(dataset)  # configs/simclr.py:<dataset>
    if smoke:
      common.reference_smoke(c.train)
    c.novelty_holdout_classes = ()  # novelty from the other CIFAR instead
    c.novelty_other_dataset = "cifar100" if dataset == "cifar10" else "cifar10"
    c.human_labels.name = f"{dataset}_n"
    c.knn.k = 200
  if smoke:
    c.min_bucket_count = 1
    c.novelty_other_max_examples = 64
    c.human_labels.limit = 64
  return c
