"""Fashion-MNIST from the original idx files (Debian's `dataset-fashion-mnist`, MIT).

`apt-get update && apt-get install -y dataset-fashion-mnist` (as root) installs the
70,000 images as gzip'd idx files in `/usr/share/datasets/fashion-mnist/`
(`JNORM_FASHION_MNIST_DIR` points the reader at another folder holding the same four
files, e.g. on a machine that is not Debian):
60,000 train / 10,000 test, 28x28 uint8 greyscale, 10 classes, 6,000 / 1,000 per
class. The official split is kept. Debian recompressed the files, so their `.gz`
checksums differ from the upstream release; the decompressed contents are the same.

Two ways to read them (`config.data.source`):
- 'idx' (default): `load_split` reads the idx files directly (numpy, ~0.5 s).
- 'tfds': `prepare_tfds(DIR)` writes them ONCE as TFDS's `fashion_mnist` dataset
  (version 3.0.1, array_record) in the TFDS data_dir DIR, without TensorFlow or a
  download; `load_split_tfds` then reads it through `tfds.data_source`, as the CIFAR
  sets are read. TFDS's builder is reused for the dataset info and features (same
  names and shapes, and the same record keys, the example's index, as TFDS's own build);
  only where the examples come from changes: from the idx files instead of the upstream URLs, so no `.gz` checksum is
  compared (the idx headers and sizes are checked). TFDS shuffles records by key, so
  the record order is TFDS's, not the idx files': the same `subset_seed` picks different
  examples under the two sources.
"""

import functools
import gzip
import io
import os
from typing import Optional

import numpy as np

from jnorm import errors
from jnorm.data import dataset as dataset_lib
from jnorm.data import tfds_source

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
DIR_ENV = "JNORM_FASHION_MNIST_DIR"
INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
SOURCES = ("idx", "tfds")
TFDS_NAME = "fashion_mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def default_dir() -> str:
  """Where the idx files are read from: `$JNORM_FASHION_MNIST_DIR`, else Debian's folder."""
  return os.environ.get(DIR_ENV) or DEBIAN_DIR


def files_present(directory: Optional[str] = None) -> bool:
  """Whether the four idx files are in `directory` (None: `default_dir()`)."""
  directory = directory or default_dir()
  return all(os.path.exists(os.path.join(directory, name))
             for pair in FILES.values() for name in pair)


def _read_idx(path: str, magic: int) -> np.ndarray:
  """An idx file's array: uint8 [N, 28, 28] (images) or [N] (labels)."""
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as exc:
    raise errors.DatasetNotFoundError(
        f"{path} cannot be read ({' '.join(str(exc).split())}); reinstall with "
        f"`{INSTALL}`") from exc
  dims = 3 if magic == _IMAGE_MAGIC else 1
  if len(raw) < 4 + 4 * dims:  # too short for the header
    raise errors.DatasetNotFoundError(
        f"{path} is not a complete idx file ({len(raw)} bytes); reinstall with `{INSTALL}`")
  header = np.frombuffer(raw[:4 + 4 * dims], ">u4")
  if header[0] != magic or len(raw) != 4 + 4 * dims + int(np.prod(header[1:])):
    raise errors.DatasetNotFoundError(
        f"{path} is not a complete idx file (magic {header[0]}); reinstall with `{INSTALL}`")
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(
      tuple(int(d) for d in header[1:]))


def load_split(split: str, data_dir: Optional[str] = None) -> tuple:
  """(images uint8 [N, 28, 28], labels int32 [N]) of the official `split`."""
  directory = data_dir or default_dir()
  image_file, label_file = FILES[split]
  paths = [os.path.join(directory, image_file), os.path.join(directory, label_file)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise errors.DatasetNotFoundError(
        f"Fashion-MNIST file {missing[0]} not found; install it with `{INSTALL}` (as root) "
        f"or set config.data.data_dir (or {DIR_ENV}) to a folder holding the four idx .gz "
        "files")
  images = _read_idx(paths[0], _IMAGE_MAGIC)
  labels = _read_idx(paths[1], _LABEL_MAGIC).astype(np.int32)
  if images.shape[0] != labels.shape[0]:
    raise errors.DatasetNotFoundError(
        f"{directory}: {images.shape[0]} {split} images but {labels.shape[0]} labels; "
        f"reinstall with `{INSTALL}`")
  return images, labels


def load(split: str, *, source: str = "idx", data_dir: Optional[str] = None,
         per_class: Optional[int] = None, subset_seed: int = 0) -> tuple:
  """(images uint8 [N, 28, 28], labels int32 [N]) of `split` from `source` (see SOURCES).

  Args:
    split: 'train' or 'test'.
    source: 'idx' or 'tfds'.
    data_dir: the folder of the idx files ('idx'; None: DEFAULT_DIR) or the TFDS data_dir
      ('tfds'; None: TFDS's default, ~/tensorflow_datasets).
    per_class: keep this many examples of each class (None: all), chosen by
      `dataset.select_per_class(labels, seed=subset_seed)` in the source's order; with
      'tfds' only those images are decoded.
  """
  errors.check_choice("data.source", source, SOURCES)
  if source == "tfds":
    return load_split_tfds(split, data_dir, per_class=per_class, subset_seed=subset_seed)
  images, labels = load_split(split, data_dir)
  keep = _subset(labels, per_class, subset_seed, split)
  return (images, labels) if keep is None else (images[keep], labels[keep])


def _subset(labels, per_class, seed, split):
  """Indices of `per_class` examples of each class (None: keep all)."""
  if per_class is None:
    return None
  fewest = int(np.bincount(labels, minlength=len(CLASS_NAMES)).min())
  if per_class > fewest:
    raise errors.ConfigError(
        f"config.data.{split}_per_class={per_class} exceeds the {fewest} examples per "
        f"class of Fashion-MNIST's {split} split; lower it")
  return dataset_lib.select_per_class(labels, [per_class] * len(CLASS_NAMES), seed=seed)


# ---------------------------------------------------------------- TFDS


def _prepare_hint(data_dir) -> str:
  where = repr(data_dir) if data_dir else ""
  return (f"prepare it from the idx files (no download, no TensorFlow) with `python -c "
          f"\"from jnorm.data import fashion_mnist; fashion_mnist.prepare_tfds({where})\"`"
          f" (the idx files come from `{INSTALL}`)")


@functools.cache
def _builder_class():
  """TFDS's FashionMNIST builder, fed from arrays instead of the upstream download.

  Defined on first use (importing TFDS takes a second). `skip_registration`: the
  registered `fashion_mnist` stays TFDS's own class, which reads what this one writes.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  class IdxFashionMNIST(mnist.FashionMNIST, skip_registration=True):
    """`fashion_mnist` 3.0.1 generated from in-memory idx arrays."""
    name = TFDS_NAME
    # No download, so no checksums file. (TFDS would look for one next to this module
    # and import `importlib_resources` to do so, which TFDS 4.9.10 requires only on
    # Python < 3.9: not installed here.)
    code_path = None

    def __init__(self, *, arrays: dict, **kwargs):
      self._arrays = arrays  # split -> (images [N, 28, 28], labels [N])
      super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
      del dl_manager  # nothing to download
      return [tfds.core.SplitGenerator(name=split, gen_kwargs={"split": split})
              for split in ("train", "test")]

    def _generate_examples(self, split):
      # Keys and values as TFDS's MNIST builder yields them (index, image, label); the
      # image goes in as a PIL image, which TFDS PNG-encodes with PIL (a numpy array
      # would need tf.image.encode_png, i.e. TensorFlow).
      images, labels = self._arrays[split]
      for index in range(len(labels)):
        yield index, {"image": Image.fromarray(images[index]), "label": int(labels[index])}

  return IdxFashionMNIST


def prepare_tfds(data_dir: Optional[str] = None, idx_dir: Optional[str] = None) -> str:
  """Writes the idx files as TFDS's prepared `fashion_mnist` (array_record) in data_dir.

  Needs neither TensorFlow nor a network; takes ~10 s (70,000 PNG-encoded records,
  ~40 MB). A dataset already prepared there is kept as is.

  Args:
    data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets).
    idx_dir: folder of the four idx .gz files (None: `default_dir()`).
  Returns:
    The prepared dataset's directory (DATA_DIR/fashion_mnist/3.0.1).
  Raises:
    DatasetNotFoundError: the idx files are missing or incomplete.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arrays = {split: load_split(split, idx_dir) for split in FILES}  # checks the files first
  builder = _builder_class()(arrays=arrays, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.fspath(builder.data_dir)


def _decode_png(data: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image, np.uint8).reshape(28, 28)


def load_split_tfds(split: str, data_dir: Optional[str] = None, *,
                    per_class: Optional[int] = None, subset_seed: int = 0) -> tuple:
  """(images uint8 [N, 28, 28], labels int32 [N]) of the prepared TFDS `fashion_mnist`,
  read through `tfds.data_source` (records in TFDS's order; `per_class` as in `load`)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds_source.open_source(
      TFDS_NAME, split, data_dir, decoders={"image": tfds.decode.SkipDecoding()},
      hint=_prepare_hint(data_dir))
  n = len(source)
  try:  # one batched read of the encoded records (much faster than one by one)
    records = source.__getitems__(list(range(n)))
  except Exception:  # pylint: disable=broad-except  # not every backend batches
    records = [source[i] for i in range(n)]
  labels = np.asarray([int(r["label"]) for r in records], np.int32)
  keep = _subset(labels, per_class, subset_seed, split)
  if keep is not None:
    records, labels = [records[i] for i in keep], labels[keep]
  images = np.zeros([len(records), 28, 28], np.uint8)
  for i, record in enumerate(records):
    images[i] = _decode_png(record["image"])
  return images, labels
