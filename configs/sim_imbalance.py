"""Class imbalance and embedding norms (docs/paper.md §2.3): job "sim_imbalance".

Commands:
  python -m jnorm.main --config configs/sim_imbalance.py --workdir /tmp/jnorm_sim_imbalance
  python -m jnorm.main --config configs/sim_imbalance.py:reference --workdir docs/findings_data/sim_imbalance_reference
  python -m jnorm.main --config configs/sim_imbalance.py:reference,powered --workdir docs/findings_data/sim_imbalance_reference_powered
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

`:reference`: the reference's setting instead of the default's: each sample's positive
is a random other sample of its class in the same batch, the loss has the positive in
its denominator (SupCon with one positive), the MLP starts from torch.nn.Linear's
initialisation, and the norms are read at epoch 50 (`report_epoch`). results.json then
also holds, per seed, Spearman's rho of class weight vs mean class norm at the report
epoch, its mean and 95% interval over the 5 seeds, and how many seeds are fully ordered.

Both settings also run each seed a second time with the class weights reversed (the
same class means, samples' seed and initialisation: `frequency_swap`), so a class's norm
when it is frequent is compared with its own norm when it is rare: the frequency effect
with the class geometry held fixed (`frequency_effect`: mean over seeds, 95% interval).
`:powered` (with or without `reference`): 20 seeds instead of 5.
"""

import ml_collections

import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  words = common.parse_arg(arg, ("smoke", "reference", "powered"), config_file=__file__)
  smoke = "smoke" in words
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
  config.partner = "dataset"  # or 'in_batch' (jnorm.simulations.imbalance)
  config.init = "flax"  # or 'torch'
  config.report_epoch = 0  # 0: the last epoch
  # Also run every seed with the class weights reversed (same class geometry) and
  # measure each class's norm when frequent minus when rare.
  config.frequency_swap = True
  if "powered" in words:  # 20 seeds: the 5-seed frequency effect has p ~ 0.07
    config.seeds = tuple(range(20))
  if "reference" in words:
    config.partner, config.init, config.report_epoch = "in_batch", "torch", 50
  if smoke:
    config.seeds = (0, 1)
    config.num_samples = 200
    config.batch_size = 32
    config.num_epochs = 3
    config.report_epoch = 0
  return config
