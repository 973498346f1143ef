"""SimSiam with the reference's hyperparameters (PAPER.md §4).

    python -m jnorm.main --config configs/simsiam.py:cifar10 --workdir /tmp/simsiam_c10
    python -m jnorm.main --config configs/simsiam.py:digits,smoke --workdir /tmp/simsiam_smoke

ResNet-18 (CIFAR stem), projector 3 x Dense(2048) with BN after each, predictor
2048->512->2048 (BN + ReLU in the bottleneck), symmetric negative cosine with
stop-gradient targets; batch 128 with 8 accumulation steps (effective 1024), SGD Nesterov
momentum 0.9, lr 0.2, weight decay 5e-4, 10 warm-up epochs then cosine to 1e-3, 512
epochs. GradScale, if on, rescales the predictor outputs' gradients (jnorm.methods).
`digits`: SmallResNet with a 128-wide projector/predictor; `smoke`: a few steps.
"""

import os

from jnorm import jobs

_simclr = jobs.load_config_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "simclr.py"))


def get_config(arg=None):
  args = set((arg or "cifar10").split(","))
  config = _simclr.get_config(",".join(args - {"smoke"}) or None)
  config.method = "simsiam"
  if config.data.name == "digits":
    config.model.projector_dims = (128, 128, 128)
    config.model.predictor_hidden = 32
    config.optim.learning_rate = 0.05
  else:
    config.model.projector_dims = (2048, 2048, 2048)
    config.model.predictor_hidden = 512
    config.batch_size = 128
    config.optim.accumulation_steps = 8
    config.optim.learning_rate = 0.2
    config.optim.weight_decay = 5e-4
    config.optim.nesterov = True
    config.checkpoint_every_steps = 10 * (50000 // 128)
  config.model.projector_bn = True
  return _simclr._apply_smoke(config) if "smoke" in args else config  # pylint: disable=protected-access
