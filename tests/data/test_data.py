"""Tests of jnorm.data: sources, long tail, resumable sharded batches, exact eval passes."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jnorm import data
from jnorm import errors
from jnorm.data import tfds_source


def _toy_dataset(num_train=23, num_test=10, num_classes=3):
  """Inputs hold their own index, so batches can be traced back to examples."""
  def split(n):
    return data.ArraySplit(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % num_classes)
  return data.Dataset("toy", split(num_train), split(num_test), num_classes, (1,))


# ------------------------------------------------------------------ long tail

def test_long_tail_counts_formula_and_documented_totals():
  counts = data.long_tail_counts(5000, 1.5, 10)
  assert counts == [int(5000 / 1.5**i) for i in range(10)]
  assert counts == [5000, 3333, 2222, 1481, 987, 658, 438, 292, 195, 130]  # docs/paper.md §4.4
  assert sum(counts) == 14736
  assert sum(data.long_tail_counts(500, 1.03365, 100)) == 14750


def test_long_tail_digits_subsets_train_only_and_is_deterministic():
  cfg = {"name": "digits", "long_tail_ratio": 1.5}
  ds = data.load_dataset(cfg)
  full = data.load_dataset({"name": "digits"})
  n_max = min(full.info["class_counts"])
  expected = data.long_tail_counts(n_max, 1.5, 10)
  assert ds.info["class_counts"] == expected
  assert ds.num_train == sum(expected)
  assert ds.info["test_class_counts"] == full.info["test_class_counts"]
  np.testing.assert_array_equal(ds.test.get(np.arange(ds.num_test)),
                                full.test.get(np.arange(full.num_test)))
  again = data.load_dataset(cfg)
  np.testing.assert_array_equal(again.train.indices, ds.train.indices)
  other = data.load_dataset(dict(cfg, long_tail_seed=1))
  assert other.info["class_counts"] == expected
  assert not np.array_equal(other.train.indices, ds.train.indices)
  # The subset's examples really are examples of the full train split.
  np.testing.assert_array_equal(ds.train.get(np.arange(5)), full.train.get(ds.train.indices[:5]))


def test_long_tail_ascending_reverses_the_counts_over_classes():
  full = data.load_dataset({"name": "digits"})
  n_max = min(full.info["class_counts"])
  ds = data.load_dataset({"name": "digits", "long_tail_ratio": 1.5,
                          "long_tail_order": "ascending"})
  assert ds.info["class_counts"] == data.long_tail_counts(n_max, 1.5, 10)[::-1]
  assert ds.info["long_tail_order"] == "ascending"
  with pytest.raises(errors.ConfigError, match="long_tail_order"):
    data.load_dataset({"name": "digits", "long_tail_ratio": 1.5, "long_tail_order": "up"})


def test_long_tail_too_large_and_train_classes():
  with pytest.raises(errors.ConfigError, match="long_tail_max"):
    data.load_dataset({"name": "digits", "long_tail_ratio": 1.5, "long_tail_max": 10_000})
  ds = data.load_dataset({"name": "digits", "train_classes": [0, 1, 2]})
  assert set(np.unique(ds.train.labels)) == {0, 1, 2}
  assert sum(ds.info["class_counts"][3:]) == 0 and ds.num_test == 497
  with pytest.raises(errors.ConfigError, match="train_classes"):
    data.load_dataset({"name": "digits", "train_classes": [12]})


# ------------------------------------------------------------------ sources

def test_digits_source():
  ds = data.load_dataset(None)
  assert (ds.num_train, ds.num_test, ds.num_classes, ds.input_shape) == (1300, 497, 10, (16, 16, 1))
  x = ds.train.get(np.arange(ds.num_train))
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  # Stratified: every class within 1 of its share of the split.
  full = np.bincount(np.concatenate([ds.train.labels, ds.test.labels]))
  np.testing.assert_allclose(ds.info["class_counts"], full * 1300 / 1797, atol=1)
  # At the native size the pixels are load_digits' grey levels / 16, exactly.
  from sklearn import datasets
  raw = data.load_dataset({"name": "digits", "image_size": 8, "channels": 3})
  bunch = datasets.load_digits()
  images = raw.train.get(np.arange(raw.num_train))
  assert images.shape == (1300, 8, 8, 3)
  pool = {im.tobytes() for im in (bunch.images / 16).astype(np.float32)}
  assert all(im[..., 1].tobytes() in pool for im in images[:20])


def test_spherical_source_shares_structure():
  ds = data.load_dataset({"name": "spherical", "spherical_num_train": 300,
                          "spherical_num_test": 150})
  assert ds.input_shape == (64,) and ds.num_classes == 4
  assert (ds.num_train, ds.num_test) == (300, 150)
  counts = ds.info["class_counts"]
  assert counts == sorted(counts) and counts[-1] > 4 * counts[0]  # weights 1:2:4:8
  # Same class means in both splits: class centroids agree far better than across classes.
  xtr, xte = ds.train.get(np.arange(300)), ds.test.get(np.arange(150))
  mtr = np.stack([xtr[ds.train.labels == c].mean(0) for c in range(4)])
  mte = np.stack([xte[ds.test.labels == c].mean(0) for c in range(4)])
  dist = np.linalg.norm(mtr[:, None] - mte[None], axis=-1)
  assert np.all(np.argmin(dist, axis=1) == np.arange(4))


def test_config_errors_are_one_line():
  for cfg, field in [({"name": "mnist_typo"}, "data.name"), ({"nme": "digits"}, "nme"),
                     ({"long_tail_ratio": 0.5}, "long_tail_ratio")]:
    with pytest.raises(errors.ConfigError, match=field) as info:
      data.load_dataset(cfg)
    assert "\n" not in str(info.value)
  assert "long_tail_ratio" in data.get_config_defaults()


# ------------------------------------------------------------------ train / eval streams

def test_train_batches_resume_shards_and_epochs():
  ds = _toy_dataset()
  batch = 6  # 23 // 6 = 3 steps per epoch, 5 examples dropped each epoch
  stream = data.train_batches(ds, batch_size=batch, seed=3, process_index=0, process_count=1)
  first = [next(stream)["input"][:, 0].astype(int) for _ in range(9)]
  resumed = data.train_batches(ds, batch_size=batch, seed=3, start_step=4, process_index=0,
                               process_count=1)
  for step in range(4, 9):
    np.testing.assert_array_equal(next(resumed)["input"][:, 0].astype(int), first[step])
  for epoch in range(3):
    seen = np.concatenate(first[3 * epoch:3 * epoch + 3])
    assert len(set(seen)) == 18  # no repeats within an epoch
    np.testing.assert_array_equal(
        np.sort(seen), np.sort(data.epoch_permutation(23, seed=3, epoch=epoch)[:18]))
  assert not np.array_equal(first[0], first[3])  # reshuffled every epoch
  for count in (2, 3):
    shards = [data.train_batches(ds, batch_size=batch, seed=3, process_index=p,
                                 process_count=count) for p in range(count)]
    for step in range(4):
      parts = [next(s) for s in shards]
      joined = np.concatenate([p["input"][:, 0] for p in parts]).astype(int)
      np.testing.assert_array_equal(joined, first[step])
      np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), joined % 3)


def test_train_batches_errors():
  ds = _toy_dataset()
  with pytest.raises(errors.ConfigError, match="divisible"):
    data.train_batches(ds, batch_size=6, seed=0, process_index=0, process_count=4)
  with pytest.raises(errors.ConfigError, match="exceeds"):
    data.train_batches(ds, batch_size=64, seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_eval_batches_visit_every_example_once(count):
  ds = _toy_dataset(num_test=10)
  seen, batches = [], 0
  for p in range(count):
    for b in data.eval_batches(ds, split="test", batch_size=4, process_index=p,
                               process_count=count):
      assert b["input"].shape == (4 // count, 1) and b["mask"].dtype == bool
      seen.extend(b["input"][b["mask"], 0].astype(int))
      np.testing.assert_array_equal(b["label"], b["input"][:, 0].astype(int) % 3)
      batches += 1
  assert sorted(seen) == list(range(10))
  assert batches == 3 * count  # every process yields the same number of batches
  last = list(data.eval_batches(ds, split="test", batch_size=4, process_index=0,
                                process_count=1))[-1]
  np.testing.assert_array_equal(last["mask"], [True, True, False, False])


def test_global_batch_single_process():
  mesh = jax.make_mesh((1,), ("batch",))
  local = {"input": np.arange(12, dtype=np.float32).reshape(4, 3), "label": np.arange(4)}
  out = data.global_batch(local, mesh)
  np.testing.assert_array_equal(np.asarray(out["input"]), local["input"])
  assert out["label"].shape == (4,)


# ------------------------------------------------------------------ TFDS (mock data only)

def test_tfds_cifar10_in_memory_and_long_tail(tmp_path):
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})
    src = tfds.data_source("cifar10", split="train", data_dir=str(tmp_path))
    assert ds.info["in_memory"] and ds.input_shape == (32, 32, 3) and ds.num_classes == 10
    assert ds.num_train == 40
    np.testing.assert_array_equal(ds.train.get_raw(np.array([3])), src[3]["image"][None])
    assert ds.train.labels[3] == src[3]["label"]
    lt = data.load_dataset({"name": "cifar10", "data_dir": str(tmp_path),
                            "long_tail_ratio": 1.5, "long_tail_max": 1})
  assert lt.info["class_counts"] == data.long_tail_counts(1, 1.5, 10)
  x = next(data.train_batches(ds, batch_size=8, seed=0, process_index=0, process_count=1))
  assert x["input"].shape == (8, 32, 32, 3) and x["input"].dtype == np.float32
  assert 0.0 <= x["input"].min() and x["input"].max() <= 1.0
  raw = next(data.train_batches(ds, batch_size=8, seed=0, process_index=0, process_count=1,
                                raw=True))
  np.testing.assert_array_equal(raw["input"].astype(np.float32) / 255, x["input"])


@pytest.mark.parametrize("in_memory", [True, False])
def test_tfds_flowers_splits_and_resize(tmp_path, in_memory):
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset({"name": "oxford_flowers102", "data_dir": str(tmp_path),
                            "image_size": 12, "in_memory": in_memory})
    assert ds.info["tfds_splits"] == {"train": "test", "test": "validation"}
    assert ds.num_classes == 102 and ds.input_shape == (12, 12, 3)
    batches = list(data.eval_batches(ds, split="test", batch_size=4))
    src = tfds.data_source("oxford_flowers102", split="validation", data_dir=str(tmp_path))
    expected = tfds_source.resize_image(src[5]["image"], 12, "shorter_side_crop")
  assert [b["input"].shape for b in batches] == [(4, 12, 12, 3)] * 2
  np.testing.assert_allclose(batches[1]["input"][1], expected / 255.0, atol=1e-7)


def test_resize_keeps_aspect_ratio_with_centre_crop():
  image = np.zeros([16, 32, 3], np.uint8)
  image[:, :8] = image[:, 24:] = 255  # white outer quarters, black middle half
  crop = tfds_source.resize_image(image, 8, "shorter_side_crop")
  squash = tfds_source.resize_image(image, 8, "direct")
  assert crop.shape == squash.shape == (8, 8, 3)
  assert crop[:, 1:7].max() == 0  # the centre crop sees only the black middle
  assert squash[:, 0].min() == 255 and squash[:, 3:5].max() == 0


def test_missing_tfds_dataset_is_one_line(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load_dataset({"name": "cifar100", "data_dir": str(tmp_path)})
  message = str(info.value)
  assert "\n" not in message and "tfds build cifar100" in message and str(tmp_path) in message
