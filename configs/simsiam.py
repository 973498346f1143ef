"""SimSiam with the reference's hyperparameters (docs/paper.md §4.1).

    python -m jnorm.main --config configs/simsiam.py:cifar10 --workdir /tmp/simsiam_c10
    python -m jnorm.main --config configs/simsiam.py:digits --workdir /tmp/simsiam_digits
    python -m jnorm.main --config configs/simsiam.py:digits,smoke --workdir /tmp/simsiam_smoke

ResNet-18 (CIFAR stem), projector 3 x Dense(2048) with BN after each, predictor
2048->512->2048 (BN + ReLU in the bottleneck), symmetric negative cosine with
stop-gradient targets; batch 128 with 8 accumulation steps (effective 1024), SGD Nesterov
momentum 0.9, lr 0.2, weight decay 5e-4, 10 warm-up epochs then cosine to 1e-3, 512
epochs. GradScale, if on, rescales the predictor outputs' gradients (jnorm.methods).
`digits`: configs/simclr.py:digits with a 128-wide projector (BN) and predictor hidden
32, lr 0.05; `smoke`: a few steps (as configs/simclr.py's).
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
  config = common.simsiam(dataset)
  return common.reference_smoke(config) if "smoke" in words else config
