"""Models: ResNet backbones, projector/predictor heads and the SSL network, in stock
Flax layers (`jnorm.models.layers`; `jnorm.cpu.enable()` swaps in CPU-tuned ones).

  from jnorm import models
  net = models.SSLNet(backbone=models.ResNet18(stem='cifar'),
                      projector=models.Projector(features=(128, 128), use_bn=False))
  variables = net.init(jax.random.key(0), x, train=True)  # {'params', 'batch_stats'}
  out, mutated = net.apply(variables, x, train=True, mutable=['batch_stats'])
  # out: {'backbone': [B, F], 'projector': [B, P], ('predictor': [B, P])}
  net = models.build_ssl_net(models.default_model_config())
"""

from jnorm.models import layers
from jnorm.models.build import (BACKBONES, build_ssl_net, check_model_config,
                                default_model_config)
from jnorm.models.heads import Predictor, Projector, SSLNet
from jnorm.models.resnet import (BasicBlock, BottleneckBlock, ResNet, ResNet18,
                                 ResNet34, ResNet50, SmallResNet)

__all__ = [
    "BACKBONES", "BasicBlock", "BottleneckBlock", "Predictor", "Projector", "ResNet",
    "ResNet18", "ResNet34", "ResNet50", "SSLNet", "SmallResNet", "build_ssl_net",
    "check_model_config", "default_model_config", "layers",
]
