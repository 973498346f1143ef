"""Fashion-MNIST on the real files: Debian's idx files (`dataset-fashion-mnist`), directly
and as TFDS's prepared `fashion_mnist` read through `tfds.data_source`.

Tests marked `fashion_mnist` need the files (tests/conftest.py: skipped with the install
command where they are missing, failed under JNORM_REQUIRE_DATA=1, as in CI).
"""

import gzip
import os

import numpy as np
import pytest

from jnorm import errors
from jnorm.data import dataset as dataset_lib
from jnorm.data import fashion_mnist as fm
from jnorm.data import load_dataset

needs_files = pytest.mark.fashion_mnist

_SIZES = {"train": 60_000, "test": 10_000}


def _one_line(exc) -> str:
  message = str(exc)
  assert "\n" not in message, message
  return message


def _multiset(images, labels):
  """Each (image, label) as 785 bytes, sorted: equal iff same examples, any order."""
  rows = np.concatenate([images.reshape(len(images), -1),
                         labels.astype(np.uint8)[:, None]], axis=1)
  return np.sort(np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1])))[:, 0])


# ---------------------------------------------------------------- the idx files


@needs_files
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_reads_the_official_split(split):
  images, labels = fm.load_split(split)
  assert images.shape == (_SIZES[split], 28, 28) and images.dtype == np.uint8
  assert labels.shape == (_SIZES[split],) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [_SIZES[split] // 10] * 10)
  assert images.min() == 0 and images.max() == 255
  assert labels[0] == 9  # both splits start with an ankle boot (upstream README's sample)


@needs_files
def test_per_class_subsets_are_balanced_and_fixed_by_subset_seed():
  cfg = {"name": "fashion_mnist", "image_size": 16, "train_per_class": 30,
         "test_per_class": 7}
  ds = load_dataset(cfg)
  assert ds.name == "fashion_mnist" and ds.num_classes == 10
  assert ds.input_shape == (16, 16, 1) and (ds.num_train, ds.num_test) == (300, 70)
  assert ds.info["class_counts"] == [30] * 10 and ds.info["test_class_counts"] == [7] * 10
  assert ds.info["source"] == "idx" and ds.info["subset_seed"] == 0
  x = ds.train.get(np.arange(ds.num_train))
  assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
  again = load_dataset(cfg)
  np.testing.assert_array_equal(again.train.get(np.arange(300)), x)
  np.testing.assert_array_equal(again.test.labels, ds.test.labels)
  other = load_dataset(dict(cfg, subset_seed=1))
  assert other.info["class_counts"] == [30] * 10
  assert not np.array_equal(other.train.get(np.arange(300)), x)


@needs_files
def test_subset_holds_the_selected_raw_images_at_full_size():
  ds = load_dataset({"name": "fashion_mnist", "train_per_class": 5, "test_per_class": 3,
                     "subset_seed": 4, "channels": 3})
  assert ds.input_shape == (28, 28, 3)
  images, labels = fm.load_split("train")
  keep = dataset_lib.select_per_class(labels, [5] * 10, seed=4)
  got = ds.train.get(np.arange(ds.num_train))
  np.testing.assert_array_equal(got[..., 0], images[keep].astype(np.float32) / 255.0)
  np.testing.assert_array_equal(got[..., 0], got[..., 2])
  np.testing.assert_array_equal(ds.train.labels, labels[keep])


@needs_files
def test_long_tail_on_fashion_mnist_keeps_the_test_split():
  cfg = {"name": "fashion_mnist", "long_tail_ratio": 1.5, "long_tail_seed": 2}
  ds = load_dataset(cfg)
  want = dataset_lib.long_tail_counts(6000, 1.5, 10)
  assert want[0] == 6000 and want[-1] == int(6000 * 1.5 ** -9)
  assert ds.info["class_counts"] == want and ds.num_train == sum(want)
  assert ds.info["long_tail_max"] == 6000 and ds.info["long_tail_ratio"] == 1.5
  assert ds.info["test_class_counts"] == [1000] * 10
  _, labels = fm.load_split("train")
  np.testing.assert_array_equal(  # class i keeps its first k in the long_tail_seed order
      ds.train.indices, dataset_lib.select_per_class(labels, want, seed=2))
  # On a class-balanced subset, the subset's size is the tail's head.
  small = load_dataset({"name": "fashion_mnist", "image_size": 16, "train_per_class": 100,
                        "long_tail_ratio": 2.0})
  assert small.info["class_counts"] == [100, 50, 25, 12, 6, 3, 1, 0, 0, 0]
  assert small.input_shape == (16, 16, 1)


@needs_files
def test_asking_for_more_than_a_class_holds_is_a_config_error():
  with pytest.raises(errors.ConfigError) as info:
    load_dataset({"name": "fashion_mnist", "test_per_class": 1001})
  assert "config.data.test_per_class=1001" in _one_line(info.value)


def test_missing_directory_names_the_install_command(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    load_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path / "absent")})
  message = _one_line(info.value)
  assert fm.INSTALL in message and "absent" in message


@needs_files
@pytest.mark.parametrize("damage", ["truncated_gz", "truncated_idx", "not_gzip"])
def test_damaged_file_is_a_clear_error(tmp_path, damage):
  for pair in fm.FILES.values():
    for name in pair:
      os.symlink(os.path.join(fm.default_dir(), name), tmp_path / name)
  target = tmp_path / fm.FILES["test"][0]
  data = target.read_bytes()
  target.unlink()
  if damage == "truncated_gz":  # a download or copy cut short
    target.write_bytes(data[:len(data) // 2])
  elif damage == "truncated_idx":  # a complete gzip stream of too few bytes
    target.write_bytes(gzip.compress(gzip.decompress(data)[:-784], compresslevel=1))
  else:
    target.write_bytes(b"<html>not found</html>")
  with pytest.raises(errors.DatasetNotFoundError) as info:
    load_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path), "train_per_class": 1})
  message = _one_line(info.value)
  assert str(target) in message and fm.INSTALL in message


# ---------------------------------------------------------------- through TFDS


# One test: the build takes ~10 s, and a module fixture would be built once per xdist
# worker.
@needs_files
@pytest.mark.slow
def test_prepare_tfds_then_load_through_data_source(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_dir = str(tmp_path / "tfds")
  path = fm.prepare_tfds(tfds_dir)
  assert path == os.path.join(tfds_dir, "fashion_mnist", "3.0.1")
  info = tfds.builder("fashion_mnist", data_dir=tfds_dir).info
  assert {s: info.splits[s].num_examples for s in _SIZES} == _SIZES
  assert info.features["label"].names[0] == fm.CLASS_NAMES[0]

  # The same examples as the idx files, in TFDS's order.
  for split in ("train", "test"):
    images, labels = fm.load_split_tfds(split, tfds_dir)
    assert images.shape == (_SIZES[split], 28, 28) and images.dtype == np.uint8
    idx_images, idx_labels = fm.load_split(split)
    np.testing.assert_array_equal(_multiset(images, labels), _multiset(idx_images, idx_labels))

  # load_dataset through tfds.data_source: subsets, long tail, resizing.
  cfg = {"name": "fashion_mnist", "source": "tfds", "data_dir": tfds_dir,
         "train_per_class": 20, "test_per_class": 10, "long_tail_ratio": 2.0}
  ds = load_dataset(cfg)
  assert ds.info["source"] == "tfds" and ds.input_shape == (28, 28, 1)
  assert ds.info["class_counts"] == [20, 10, 5, 2, 1, 0, 0, 0, 0, 0]
  assert ds.info["test_class_counts"] == [10] * 10
  x = ds.test.get(np.arange(ds.num_test))
  raw = np.round(x[..., 0] * 255).astype(np.uint8)
  known = set(_multiset(idx_images, idx_labels).tolist())  # the idx test split
  assert all(row in known for row in _multiset(raw, ds.test.labels).tolist())
  # Same subset_seed, same examples (the resize acts after the selection).
  small = load_dataset(dict(cfg, image_size=16, long_tail_ratio=0.0))
  assert small.input_shape == (16, 16, 1) and small.info["class_counts"] == [20] * 10
  np.testing.assert_array_equal(small.test.labels, ds.test.labels)
  np.testing.assert_allclose(small.test.get(np.arange(ds.num_test)).mean(axis=(1, 2, 3)),
                             x.mean(axis=(1, 2, 3)), atol=0.02)

  # Preparing again keeps the prepared dataset.
  before = sorted(os.listdir(path))
  assert fm.prepare_tfds(tfds_dir) == path
  assert sorted(os.listdir(path)) == before


def test_tfds_source_not_prepared_says_how(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    load_dataset({"name": "fashion_mnist", "source": "tfds", "data_dir": str(tmp_path)})
  message = _one_line(info.value)
  assert "prepare_tfds" in message and str(tmp_path) in message and fm.INSTALL in message


def test_prepare_tfds_without_idx_files_names_the_install_command(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    fm.prepare_tfds(str(tmp_path / "tfds"), idx_dir=str(tmp_path / "absent"))
  assert fm.INSTALL in _one_line(info.value)


@pytest.mark.parametrize("cfg", [
    {"name": "fashion_mnist", "source": "csv"},
    {"name": "cifar10", "source": "idx"},
    {"name": "digits", "source": "tfds"},
])
def test_source_is_validated(cfg):
  with pytest.raises(errors.ConfigError) as info:
    load_dataset(cfg)
  assert "data.source" in _one_line(info.value)

