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

from jnorm.training import config as train_config


def get_config(arg=None):
  config = train_config.defaults()
  config.method = "simclr"
  config.loss.name = "infonce"
  config.loss.temperature = 0.5
  config.model.backbone = "small_resnet"
  config.model.projector_dims = (128, 128)
  config.model.projector_bn = False
  # At SmallResNet's widths XLA's native convolution beats the GEMM form on CPU
  # (benchmarks/README.md); 'auto' would pick GEMM on CPU.
  config.model.conv_impl = "xla"
  config.data.name = "digits"
  config.data.image_size = 16
  config.augment = "digits"
  config.batch_size = 128
  config.num_epochs = 32.0
  config.optim.learning_rate = 0.1
  config.optim.warmup_epochs = 2.0
  config.eval.knn_k = 20
  config.eval.every_epochs = 4
  config.checkpoint_every_steps = 100
  if arg == "smoke":
    config.batch_size = 32
    config.num_epochs = 0.15  # 6 steps of 40 per epoch
    config.optim.warmup_epochs = 0.05
    config.eval.every_epochs = 0
    config.eval.powers_of_two = False
    config.checkpoint_every_steps = 3
    config.log_every_steps = 2
  elif arg:
    raise ValueError(f"configs/default.py: unknown argument {arg!r}; use ':smoke' or none")
  return config
