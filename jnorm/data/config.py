"""The fields `config.data` accepts, their defaults, and their validation.

Only `load_dataset` reads a config; everything below it takes explicit arguments.
Fields (every one optional; a missing field takes the default below):

  name               'digits' (embedded, offline default) | 'fashion_mnist' (Debian's
                     dataset-fashion-mnist: jnorm.data.fashion_mnist) | 'spherical' |
                     'cifar10' | 'cifar100' | 'oxford_flowers102' | 'cars196' | 'imagenette'.
  source             how the data are read (None: the dataset's only or default way).
                     fashion_mnist: 'idx' (the idx .gz files; the default) or 'tfds'
                     (TFDS's prepared `fashion_mnist`, read with tfds.data_source; write
                     it once with `jnorm.data.fashion_mnist.prepare_tfds(DIR)`). TFDS
                     sets: 'tfds' only. digits, spherical: must stay None.
  data_dir           TFDS data directory (None: TFDS's default, ~/tensorflow_datasets);
                     fashion_mnist with source 'idx': the folder of the idx .gz files
                     (None: /usr/share/datasets/fashion-mnist, Debian's package).
  image_size         output side in pixels (None: the source's default: digits 16,
                     fashion_mnist 28, CIFAR 32, other TFDS sets 64).
  channels           1 or 3 for digits and fashion_mnist (None: 1); TFDS images are always 3.
  resize             'shorter_side_crop' (shorter side to image_size, then a centre
                     crop: keeps the aspect ratio; the default) or 'direct' (squash).
  in_memory          TFDS only: decode + resize every image once at load and hold
                     uint8 arrays (None: auto, when the train split fits in 2 GiB).
  test_fraction      digits: fraction of examples held out as the test
                     split (stratified); 0.2766 gives digits' 1300 / 497.
  split_seed         seed of the stratified train/test split (digits).
  train_per_class,   fashion_mnist: keep this many examples of each class in the train /
  test_per_class     test split (None: all), chosen before resizing; the same examples
                     for the same subset_seed (and source: the TFDS records' order differs).
  subset_seed        seed of that class-balanced choice.
  long_tail_ratio    imbalance ratio r: class i keeps int(long_tail_max * r**-i) train
                     examples (0 or None: off). CIFAR-10-LT: 1.5; CIFAR-100-LT: 1.03365.
  long_tail_max      n_max (None: the smallest class count of the train split).
  long_tail_seed     seed of the order in which each class's first k are kept.
  long_tail_order    'descending' (class 0 the most examples, the reference) or
                     'ascending' (the same counts over the classes in reverse order).
  train_classes      list of labels kept in the TRAIN split only (None: all); the test
                     split is untouched, for novelty analyses ("train on 0-7").
  spherical_*        the synthetic source (docs/paper.md §2.3): class_weights (1:2:4:8),
                     num_train (2000), num_test (1000), latent_dim, observed_dim,
                     noise_std, scale, seed (samples), structure_seed (class means and
                     observation matrix, shared by train and test).
"""

import ml_collections
from ml_collections import config_dict

from jnorm import errors

TFDS_NAMES = ("cifar10", "cifar100", "oxford_flowers102", "cars196", "imagenette")
NAMES = ("digits", "fashion_mnist", "spherical") + TFDS_NAMES
SOURCES = ("idx", "tfds")
RESIZE_MODES = ("shorter_side_crop", "direct")


def get_config_defaults() -> ml_collections.ConfigDict:
  """Returns a ConfigDict holding every field `config.data` accepts, with defaults."""
  return ml_collections.ConfigDict({
      "name": "digits",
      "source": config_dict.placeholder(str),
      "data_dir": config_dict.placeholder(str),
      "image_size": config_dict.placeholder(int),
      "channels": config_dict.placeholder(int),
      "resize": "shorter_side_crop",
      "in_memory": config_dict.placeholder(bool),
      "test_fraction": 497 / 1797,
      "split_seed": 0,
      "train_per_class": config_dict.placeholder(int),
      "test_per_class": config_dict.placeholder(int),
      "subset_seed": 0,
      "long_tail_ratio": 0.0,
      "long_tail_max": config_dict.placeholder(int),
      "long_tail_seed": 0,
      "long_tail_order": "descending",
      "train_classes": config_dict.placeholder(tuple),
      "spherical_class_weights": (1.0, 2.0, 4.0, 8.0),
      "spherical_num_train": 2000,
      "spherical_num_test": 1000,
      "spherical_latent_dim": 10,
      "spherical_observed_dim": 64,
      "spherical_noise_std": 1.0,
      "spherical_scale": 10.0,
      "spherical_seed": 0,
      "spherical_structure_seed": 0,
  })


def resolve_config(cfg) -> ml_collections.ConfigDict:
  """Merges `cfg` (ConfigDict, dict or None) onto the defaults and validates it.

  Raises:
    ConfigError: a field is unknown or a value is out of range (one line, with the fix).
  """
  merged = get_config_defaults().to_dict()
  given = {} if cfg is None else dict(cfg.items())
  for key, value in given.items():
    if key not in merged:
      raise errors.ConfigError(
          f"config.data.{key} is not a known field; use one of {sorted(merged)!r}")
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    merged[key] = value
  if merged["train_classes"] is not None:
    errors.check_int_tuple("data.train_classes", merged["train_classes"], minimum=0)
    merged["train_classes"] = tuple(int(c) for c in merged["train_classes"])
  out = ml_collections.ConfigDict(merged)
  errors.check_choice("data.name", out.name, NAMES)
  if out.source is not None:
    errors.check_choice("data.source", out.source, SOURCES)
    allowed = {"fashion_mnist": SOURCES}.get(
        out.name, ("tfds",) if out.name in TFDS_NAMES else ())
    if out.source not in allowed:
      raise errors.ConfigError(
          f"config.data.source={out.source!r} does not apply to data.name={out.name!r}; "
          f"use one of {list(allowed)!r} or leave it unset")
  errors.check_choice("data.resize", out.resize, RESIZE_MODES)
  if out.image_size is not None:
    errors.check_positive("data.image_size", out.image_size)
  if out.channels is not None:
    errors.check_choice("data.channels", out.channels, (1, 3))
  if not 0.0 < out.test_fraction < 1.0:
    raise errors.ConfigError(
        f"config.data.test_fraction={out.test_fraction!r} must be in (0, 1), e.g. 0.2766")
  if out.long_tail_ratio:
    if out.long_tail_ratio < 1.0:
      raise errors.ConfigError(
          f"config.data.long_tail_ratio={out.long_tail_ratio!r} must be >= 1 "
          "(e.g. 1.5 for CIFAR-10-LT) or 0 to turn the long tail off")
  errors.check_choice("data.long_tail_order", out.long_tail_order,
                      ("descending", "ascending"))
  for field in ("train_per_class", "test_per_class"):
    if out[field] is not None:
      errors.check_positive(f"data.{field}", out[field])
  if out.long_tail_max is not None:
    errors.check_positive("data.long_tail_max", out.long_tail_max)
  return out
