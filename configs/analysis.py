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
from ml_collections import config_dict

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  words = common.parse_arg(arg, ("smoke", "cifar10", "cifar100"), config_file=__file__)
  dataset = common.pick_one(words, ("cifar10", "cifar100"), default="digits",
                            config_file=__file__)
  smoke = "smoke" in words
  c = ml_collections.ConfigDict()
  c.job = "analysis"
  c.train_workdir = ""  # a finished training run; empty: train config.train first
  c.novelty_holdout_classes = (8, 9)  # removed from the embedded run's train split
  c.novelty_other_dataset = ""  # a jnorm.data name whose test split is "other data"
  c.novelty_other_max_examples = 2000
  c.heads = ("projector", "backbone")  # embeddings analysed
  c.primary_head = "projector"  # the one behind the headline numbers (paper: projector)
  c.num_buckets = 20  # width 0.05, as the paper
  c.min_bucket_count = 5  # smaller buckets are left out of the Spearman rho and plots
  # The reference monitor's weighted kNN (t = 0.1) with k = 20 on digits (deviation, as
  # configs/default.py: the bank holds ~130 digits per class); k = 200 on CIFAR.
  c.knn = ml_collections.ConfigDict({"k": 20, "temperature": 0.1})
  c.batch_size = 256  # embedding batch
  c.class_frequency = "auto"  # 'auto': when the training data is long-tailed
  c.human_labels = ml_collections.ConfigDict({
      "name": "",  # 'cifar10_n' | 'cifar100_n' | 'cifar10_h' (TFDS, with images)
      "path": "",  # or a .npy / .csv label file aligned with `split` (human_labels.py)
      "split": "train",
      "data_dir": config_dict.placeholder(str),
      "limit": config_dict.placeholder(int),  # read only the first N records
      "agreement_reference": "clean",  # 'clean' label or 'majority' of the votes
  })
  c.trajectory_keys = ()  # metrics.jsonl keys; empty: every embedding-norm key

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
