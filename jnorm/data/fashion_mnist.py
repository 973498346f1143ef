"""Fashion-MNIST from the original idx files (Debian's `dataset-fashion-mnist`, MIT).

`apt-get update && apt-get install -y dataset-fashion-mnist` (as root) installs the
70,000 images as gzip'd idx files in `/usr/share/datasets/fashion-mnist/`:
60,000 train / 10,000 test, 28x28 uint8 greyscale, 10 classes, 6,000 / 1,000 per
class. The official split is kept. Debian recompressed the files, so their `.gz`
checksums differ from the upstream release; the decompressed contents are the same.
"""

import gzip
import os
from typing import Optional

import numpy as np

from jnorm import errors

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


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
  header = np.frombuffer(raw[:4 + 4 * dims], ">u4")
  if header[0] != magic or len(raw) != 4 + 4 * dims + int(np.prod(header[1:])):
    raise errors.DatasetNotFoundError(
        f"{path} is not a complete idx file (magic {header[0]}); reinstall with `{INSTALL}`")
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(
      tuple(int(d) for d in header[1:]))


def load_split(split: str, data_dir: Optional[str] = None) -> tuple:
  """(images uint8 [N, 28, 28], labels int32 [N]) of the official `split`."""
  directory = data_dir or DEFAULT_DIR
  image_file, label_file = FILES[split]
  paths = [os.path.join(directory, image_file), os.path.join(directory, label_file)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise errors.DatasetNotFoundError(
        f"Fashion-MNIST file {missing[0]} not found; install it with `{INSTALL}` (as root) "
        "or set config.data.data_dir to a folder holding the four idx .gz files")
  images = _read_idx(paths[0], _IMAGE_MAGIC)
  labels = _read_idx(paths[1], _LABEL_MAGIC).astype(np.int32)
  if images.shape[0] != labels.shape[0]:
    raise errors.DatasetNotFoundError(
        f"{directory}: {images.shape[0]} {split} images but {labels.shape[0]} labels; "
        f"reinstall with `{INSTALL}`")
  return images, labels
