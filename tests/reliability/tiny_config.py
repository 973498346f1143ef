"""The smallest complete training run, for the reliability tests (a few seconds).

SimCLR with an MLP backbone (16 wide) on 64 synthetic 16-D vectors (`data.name =
'spherical'`), batch 16: 4 steps per epoch, 2 epochs = 8 steps, a checkpoint and a log
line every step, kNN at epochs 0, 1 (mid-run, at a checkpoint) and 2 (the end). Small
enough that a process spends its time starting, which is what kill tests repeat.
Stock XLA and Flax (`cpu_tuning='off'`): a run in the test process (which started XLA
without the tuning's flag) then computes the same bits as one in a subprocess.
"""

from jnorm.training import config as train_config


def get_config(arg=None):
  config = train_config.defaults()
  config.method = "simclr"
  config.loss.name = "infonce"
  config.data.name = "spherical"
  config.data.spherical_num_train = 64
  config.data.spherical_num_test = 64
  config.data.spherical_latent_dim = 4
  config.data.spherical_observed_dim = 16
  config.model.backbone = "mlp"
  config.model.mlp_features = (16,)
  config.model.projector_dims = (16, 8)
  config.model.projector_bn = False
  config.augment = "vector_noise"
  config.batch_size = 16
  config.num_epochs = 2.0
  config.optim.warmup_epochs = 0.5
  config.eval.every_epochs = 1
  config.eval.powers_of_two = False
  config.eval.knn_k = 10
  config.eval.batch_size = 64
  config.checkpoint_every_steps = 1
  config.log_every_steps = 1
  config.progress_bar = False
  config.cpu_tuning = "off"
  if arg:
    raise ValueError(f"tiny_config: unknown argument {arg!r}; use none")
  return config
