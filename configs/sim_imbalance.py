"""Class imbalance and embedding norms (PAPER.md §2.3): job "sim_imbalance".

Commands:
  python -m jnorm.main --config configs/sim_imbalance.py --workdir /tmp/jnorm_sim_imbalance
  python -m jnorm.main --config configs/sim_imbalance.py:smoke --workdir /tmp/jnorm_sim_imbalance_smoke

4 latent classes on S⁹ with weights 1:2:4:8, noise std 1, 2000 samples mapped to 64-D by
a random matrix ×10 (`jnorm.data.synthetic.latent_class_data`, one data set per seed);
MLP 64 → 64 → 10; supervised InfoNCE (each sample attracts one random same-class partner,
re-drawn each epoch), t = 1; SGD lr 0.01, batch 128, 100 epochs, 5 seeds (vmapped).
Produces results.json (`final_mean_norm_per_class`, `class_order_by_norm`,
`class_weights`, `norm_growth_per_class`, per-epoch curves per seed and averaged, loss)
and imbalance.png. Reference: norms ordered by class frequency (about 8.1 > 7.8 > 7.4 >
7.2 at epoch 50). Measured here (5-seed mean, classes 0..3 = weights 1, 2, 4, 8):
epoch 100 norms 10.18, 10.53, 10.29, 10.94 (order 3 > 1 > 2 > 0), growth since init
0.82, 1.20, 1.14, 1.33: the most frequent class ends largest and the rarest grows
least, but classes 1 and 2 are not separated in this reading of the data (the norms at
initialisation differ by class by about as much as the growth does). About 15 s of CPU.
"""

import ml_collections

from jnorm import errors


def get_config(arg=None) -> ml_collections.ConfigDict:
  errors.check_choice("get_config arg", arg, (None, "smoke"))
  config = ml_collections.ConfigDict()
  config.job = "sim_imbalance"
  config.seeds = (0, 1, 2, 3, 4)
  config.class_weights = (1.0, 2.0, 4.0, 8.0)
  config.num_samples = 2000
  config.latent_dim = 10
  config.observed_dim = 64
  config.noise_std = 1.0
  config.scale = 10.0
  config.hidden_dim = 64
  config.embed_dim = 10
  config.temperature = 1.0
  config.lr = 0.01
  config.batch_size = 128
  config.num_epochs = 100
  if arg == "smoke":
    config.seeds = (0, 1)
    config.num_samples = 200
    config.batch_size = 32
    config.num_epochs = 3
  return config
