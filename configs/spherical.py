"""SimCLR on the synthetic latent-class data (docs/paper.md §2.3) with an MLP backbone.

    python -m jnorm.main --config configs/spherical.py --workdir /tmp/jnorm_spherical
    python -m jnorm.main --config configs/spherical.py:smoke --workdir /tmp/jnorm_spherical_smoke

4 latent classes on S⁹ with weights 1:2:4:8, observed in 64-D (`data.name='spherical'`,
2,000 train / 1,000 test vectors); an MLP backbone 64 -> 64 -> 64 (Dense + BatchNorm +
ReLU), projector 64 -> 64 -> 32; two views by additive Gaussian noise (std 0.5 of each
vector's RMS entry, `augment='vector_noise'`); the reference's InfoNCE (t = 0.5); SGD
momentum 0.9, lr 0.1, batch 128, 20 epochs. Reports kNN accuracy on backbone features
(k = 20) and the embedding norms; `python -m jnorm.main --config configs/analysis.py
--workdir W --config.train_workdir=RUN` then gives mean norm per class
(`class_norm_spearman`, the frequency-vs-norm claim on trained SSL embeddings).
A vector-data setting: no convolutions, so the norm effects are not mixed with
BatchNorm'd conv kernels (docs/findings.md §4). `:smoke`: a few steps.
Produces in <workdir> (the train job): results.json (`knn_accuracy` of backbone
features at the end, `knn_accuracy_at_init`, `embedding_norm_mean`, `knn_curve`),
metrics.jsonl, TensorBoard events, knn_curve.png and checkpoints; rerunning the
command resumes or reports a finished run.
"""

import common


def get_config(arg=None):
  words = common.parse_arg(arg, ("smoke",), config_file=__file__)
  config = common.simclr_base()
  config.data.name = "spherical"
  config.model.backbone = "mlp"
  config.model.mlp_features = (64, 64)
  config.model.projector_dims = (64, 32)
  config.augment = "vector_noise"
  config.batch_size = 128
  config.num_epochs = 20.0
  config.optim.learning_rate = 0.1
  config.optim.warmup_epochs = 1.0
  config.eval.knn_k = 20
  config.eval.every_epochs = 2
  config.checkpoint_every_steps = 100
  if "smoke" in words:
    common.smoke_settings(config, batch_size=32, num_epochs=0.05, warmup_epochs=0.0,
                          checkpoint_every_steps=2, log_every_steps=1)
  return config
