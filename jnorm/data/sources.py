"""`load_dataset(config.data)`: one entry point for every source.

- `digits`: scikit-learn's embedded 8x8 digits (1,797 images, 16 grey levels), scaled to
  [0, 1], resized once at load with bilinear interpolation (`jax.image.resize`), stratified
  1300 / 497 train/test split. Runs offline everywhere: the default.
- `spherical`: `jnorm.data.synthetic.latent_class_data` (docs/paper.md §2.3). Train
  and test share the observation matrix and class means (one `structure_seed`) and
  draw different samples and noise: same distribution, same class weights.
- TFDS sets: `jnorm.data.tfds_source`.
The long tail and the class filter then act on the train split; the test split is
never touched.
"""

import jax
import numpy as np

from jnorm.data import config as data_config
from jnorm.data import dataset as dataset_lib
from jnorm.data import fashion_mnist
from jnorm.data import synthetic
from jnorm.data import tfds_source

_DIGITS_LEVELS = 16.0  # load_digits' pixels are integers 0..16


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize (half-pixel centres, as PIL): [N, h, w, C] -> [N, size, size, C]."""
  if images.shape[1:3] == (size, size):
    return images
  out = jax.image.resize(images, (len(images), size, size, images.shape[-1]), "linear")
  return np.clip(np.asarray(out), 0.0, 1.0).astype(np.float32)


def _stratified_split(n: int, labels: np.ndarray, *, test_fraction: float, seed: int):
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top  # ~1.8 s: imported on use
  idx = np.arange(n)
  train_idx, test_idx = model_selection.train_test_split(
      idx, test_size=test_fraction, stratify=labels, random_state=seed)
  return np.sort(train_idx), np.sort(test_idx)


def load_digits(cfg) -> dataset_lib.Dataset:
  """scikit-learn digits as [N, S, S, C] float32 images in [0, 1] (S = image_size, default 16)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  bunch = datasets.load_digits()
  images = (bunch.images.astype(np.float32) / _DIGITS_LEVELS)[..., None]  # [1797, 8, 8, 1]
  size = cfg.image_size or 16
  images = resize_images(images, size)
  if (cfg.channels or 1) == 3:
    images = np.repeat(images, 3, axis=-1)
  labels = bunch.target.astype(np.int32)
  train_idx, test_idx = _stratified_split(
      len(labels), labels, test_fraction=cfg.test_fraction, seed=cfg.split_seed)
  train = dataset_lib.ArraySplit(images[train_idx], labels[train_idx])
  test = dataset_lib.ArraySplit(images[test_idx], labels[test_idx])
  return dataset_lib.Dataset("digits", train, test, 10, images.shape[1:])


def load_fashion_mnist(cfg) -> dataset_lib.Dataset:
  """Fashion-MNIST's official split from the Debian package's idx files (or
  `cfg.data_dir`), or with cfg.source='tfds' from TFDS's prepared `fashion_mnist` (see
  `jnorm.data.fashion_mnist`), as [N, S, S, C] float32 images in [0, 1] (S =
  image_size, default 28).

  `train_per_class` / `test_per_class` keep a class-balanced subset (the same examples
  for every run with the same `subset_seed`), chosen before resizing.
  """
  source = cfg.source or "idx"
  splits = []
  for split, per_class in (("train", cfg.train_per_class), ("test", cfg.test_per_class)):
    images, labels = fashion_mnist.load(split, source=source, data_dir=cfg.data_dir,
                                        per_class=per_class, subset_seed=cfg.subset_seed)
    x = images.astype(np.float32)[..., None] / 255.0
    size = cfg.image_size or 28
    if size != x.shape[1]:
      x = resize_images(x, size)
    if (cfg.channels or 1) == 3:
      x = np.repeat(x, 3, axis=-1)
    splits.append(dataset_lib.ArraySplit(x, labels))
  ds = dataset_lib.Dataset("fashion_mnist", splits[0], splits[1], 10, splits[0].inputs.shape[1:])
  ds.info.update(source=source, train_per_class=cfg.train_per_class,
                 test_per_class=cfg.test_per_class, subset_seed=cfg.subset_seed)
  return ds


def load_spherical(cfg) -> dataset_lib.Dataset:
  """Latent classes on S^(latent_dim-1) mapped to observed_dim (`synthetic.latent_class_data`).

  Train and test share the class means and observation matrix (`structure_seed`) and
  draw their own samples: seeds 2*spherical_seed (train) and 2*spherical_seed + 1 (test),
  so no two runs' splits coincide.
  """
  weights = tuple(float(w) for w in cfg.spherical_class_weights)
  common = dict(
      class_weights=weights, latent_dim=cfg.spherical_latent_dim,
      observed_dim=cfg.spherical_observed_dim, noise_std=cfg.spherical_noise_std,
      scale=cfg.spherical_scale, structure_seed=cfg.spherical_structure_seed)
  splits = []
  for offset, n in ((0, cfg.spherical_num_train), (1, cfg.spherical_num_test)):
    x, y = synthetic.latent_class_data(seed=2 * cfg.spherical_seed + offset, num_samples=n,
                                       **common)
    splits.append(dataset_lib.ArraySplit(np.asarray(x, np.float32), np.asarray(y, np.int32)))
  ds = dataset_lib.Dataset("spherical", splits[0], splits[1], len(weights),
                           (cfg.spherical_observed_dim,))
  ds.info["class_weights"] = list(weights)
  return ds


def load_dataset(cfg=None) -> dataset_lib.Dataset:
  """Loads the source `cfg.name` with its train subsets; see `jnorm.data.config`.

  Args:
    cfg: `config.data` (ConfigDict or dict; missing fields take the defaults).
  Returns:
    A `Dataset` with `num_classes`, `input_shape`, `num_train`, `num_test` and `info`
    (JSON-ready: sizes, class_counts of the train split, test_class_counts, settings).
  Raises:
    ConfigError: unknown field or bad value. DatasetNotFoundError: TFDS set not prepared.
  """
  cfg = data_config.resolve_config(cfg)
  if cfg.name == "digits":
    ds = load_digits(cfg)
  elif cfg.name == "fashion_mnist":
    ds = load_fashion_mnist(cfg)
  elif cfg.name == "spherical":
    ds = load_spherical(cfg)
  else:
    ds = tfds_source.load_tfds(cfg)
  ds.train, subset_info = dataset_lib.apply_train_subsets(
      ds.train, num_classes=ds.num_classes, long_tail_ratio=cfg.long_tail_ratio,
      long_tail_max=cfg.long_tail_max, long_tail_seed=cfg.long_tail_seed,
      train_classes=cfg.train_classes, long_tail_order=cfg.long_tail_order)
  ds.info.update(subset_info)
  ds.info.update(
      name=ds.name, num_classes=ds.num_classes, input_shape=list(ds.input_shape),
      num_train=ds.num_train, num_test=ds.num_test,
      class_counts=dataset_lib.class_counts(ds.train.labels, ds.num_classes),
      test_class_counts=dataset_lib.class_counts(ds.test.labels, ds.num_classes))
  return ds
