"""SimCLR with the reference's hyperparameters (docs/paper.md §4.1).

    python -m jnorm.main --config configs/simclr.py:cifar10 --workdir /tmp/simclr_c10
    python -m jnorm.main --config configs/simclr.py:cifar100 --workdir /tmp/simclr_c100
    python -m jnorm.main --config configs/simclr.py:digits --workdir /tmp/simclr_digits
    python -m jnorm.main --config configs/simclr.py:cifar10,smoke --workdir /tmp/simclr_smoke

CIFAR: ResNet-18 (CIFAR stem, zero-init residual), projector 512->128->128 without BN,
the reference's one-directional InfoNCE (t = 0.5), batch 256, SGD momentum 0.9, lr 0.6,
weight decay 1e-6 on every parameter, 10 warm-up epochs then cosine to 1e-3, 512 epochs,
the `cifar_reference` augmentations; kNN (k = 200, t = 0.1) at powers-of-two epochs.
Add `--config.optim.schedule_mode=code_faithful` for the reference code's effective
lr² peak. Needs the TFDS dataset prepared (see the error message otherwise).
`digits`: configs/default.py's data, model and optimiser settings, with kNN only at
powers-of-two epochs. `smoke`: a few steps on a tiny batch
(SmallResNet, batch 16).
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
  config = common.simclr(dataset)
  return common.reference_smoke(config) if "smoke" in words else config
