"""Damaged dataset files stop the load with one line naming the file: a TFDS
array_record shard cut short or corrupted, a Fashion-MNIST idx file too short for its
header.

The TFDS cases build a real array_record dataset of 16 + 8 random 8x8 images with a
TFDS builder (no TensorFlow needed: the images are a Tensor feature), then damage one
shard of a copy of it and load it with `jnorm.data.tfds_source.load_tfds`.
"""

import gzip
import os
import shutil
import types

import numpy as np
import pytest

from jnorm import errors
from jnorm.data import fashion_mnist
from jnorm.data import tfds_source

NAME = "tiny_images"


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A data_dir holding the prepared `tiny_images` (array_record); treat as read-only."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(16), "test": self._generate_examples(8)}

    def _generate_examples(self, n):  # pylint: disable=arguments-differ
      rng = np.random.default_rng(n)
      for i in range(n):
        yield i, {"image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "label": i % 2}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  TinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


@pytest.fixture
def copy_and_config(tiny_tfds, tmp_path, monkeypatch):
  """(a private copy of the data_dir, the train shard's path, a data config for it)."""
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(tiny_tfds, data_dir)
  monkeypatch.setitem(tfds_source.SPLITS, NAME, ("train", "test", 8))
  shard = os.path.join(data_dir, NAME, "1.0.0", f"{NAME}-train.array_record-00000-of-00001")
  assert os.path.exists(shard)
  cfg = types.SimpleNamespace(name=NAME, image_size=8, data_dir=data_dir, in_memory=True,
                              resize="direct")
  return data_dir, shard, cfg


def _cut(shard, keep):
  with open(shard, "rb") as f:
    data = f.read()
  with open(shard, "wb") as f:
    f.write(data[:keep(len(data))])


def _garble(shard, start, size=64):
  with open(shard, "r+b") as f:
    f.seek(start)
    f.write(b"\xff" * size)


# damage -> (how, what the line may say of the file: any of these). A shard cut in half
# fails in riegeli without a message (or reads with too few records).
DAMAGE = {
    "cut-in-half": (lambda shard: _cut(shard, lambda n: n // 2),
                    ("records where dataset_info.json lists 16", "cannot be read")),
    "cut-to-10-bytes": (lambda shard: _cut(shard, lambda n: 10), ("at least 64KB",)),
    "garbled-chunk-header": (lambda shard: _garble(shard, 100), ("hash mismatch",)),
}


def test_intact_copy_loads(copy_and_config):
  _, _, cfg = copy_and_config
  ds = tfds_source.load_tfds(cfg)
  assert len(ds.train) == 16 and len(ds.test) == 8


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "per-batch"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_shard_is_one_line_naming_it(damage, in_memory, copy_and_config):
  data_dir, shard, cfg = copy_and_config
  cfg.in_memory = in_memory
  apply, problem = DAMAGE[damage]
  apply(shard)
  with pytest.raises(errors.DatasetNotFoundError) as info:
    tfds_source.load_tfds(cfg)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith(f"TFDS file {shard} is damaged ("), message
  assert any(words in message for words in problem), message
  assert f"delete {os.path.dirname(shard)} and prepare '{NAME}' again" in message
  assert data_dir in message


def test_idx_file_shorter_than_its_header(tmp_path):
  path = str(tmp_path / "train-images-idx3-ubyte.gz")
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00")
  with pytest.raises(errors.DatasetNotFoundError, match="is not a complete idx file"):
    fashion_mnist._read_idx(path, fashion_mnist._IMAGE_MAGIC)  # pylint: disable=protected-access


def test_shard_damaged_after_loading_fails_the_batch_in_one_line(copy_and_config):
  """Per-batch decoding (`in_memory=False`): the file goes bad after the load (a disk
  fault); the batch that reads it names the file."""
  _, shard, cfg = copy_and_config
  cfg.in_memory = False
  ds = tfds_source.load_tfds(cfg)
  assert ds.train.get(np.arange(4)).shape == (4, 8, 8, 3)
  _garble(shard, 100)
  with pytest.raises(errors.DatasetNotFoundError) as info:
    ds.train.get(np.arange(16))
  assert str(info.value).startswith(f"TFDS file {shard} is damaged (")
