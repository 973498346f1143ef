"""Data for jnorm: one interface for every source (digits, spherical, TFDS sets).

    from jnorm import data
    ds = data.load_dataset(config.data)
    ds.num_classes, ds.input_shape, ds.num_train, ds.num_test, ds.info
    it = data.train_batches(ds, batch_size=B, seed=s, start_step=k)  # {'input','label'}
    for batch in data.eval_batches(ds, split='test', batch_size=B):   # + 'mask'
      ...

Inputs are float32 in [0, 1] ([B, H, W, C] images, [B, D] vectors; `raw=True` keeps
stored uint8), labels int32. `batch_size` is the global batch; each process gets its
contiguous slice, and `global_batch(local, mesh)` assembles the global `jax.Array`.
The fields of `config.data` are listed in `jnorm.data.config` (`get_config_defaults()`).
Helper modules `synthetic` (latent-class data) and `human_labels` live here too.
"""

from jnorm.data.config import get_config_defaults
from jnorm.data.dataset import ArraySplit
from jnorm.data.dataset import class_counts
from jnorm.data.dataset import Dataset
from jnorm.data.dataset import long_tail_counts
from jnorm.data.dataset import select_per_class
from jnorm.data.dataset import SubsetSplit
from jnorm.data.pipeline import epoch_permutation
from jnorm.data.pipeline import eval_batches
from jnorm.data.pipeline import global_batch
from jnorm.data.pipeline import train_batches
from jnorm.data.pipeline import train_indices
from jnorm.data.sources import load_dataset
