"""TFDS image sets through `tfds.data_source`: random access, no TensorFlow at run time.

Records are decoded on the host (TFDS decodes PNG/JPEG with numpy/PIL) and resized to
`image_size` with PIL's bilinear filter (antialiased when shrinking):
'shorter_side_crop' (default: the shorter side to image_size, then a centre crop, so
the aspect ratio is kept, like torchvision's Resize(S) + CenterCrop(S)) or 'direct'.

Memory: when the resized uint8 train split fits in 2 GiB (CIFAR: 150 MB; Flowers-102 /
Cars / Imagenette at 64 px), every image is decoded and resized ONCE at load and held as
a uint8 array (`ArraySplit`): per-step host work is then a numpy gather. Otherwise
(e.g. ImageNet-scale sets at 128 px) a `TfdsSplit` decodes + resizes each batch on the
host. Either way the labels are read once at load (class counts, long tail).

A damaged split (a truncated or corrupt array_record shard) stops the load, or the batch
that reads it, with one line naming the file (`DatasetNotFoundError`: delete it and build
the dataset again).

Splits follow the reference: Flowers-102 trains on its (imbalanced, 6,149 images) `test`
split and evaluates on `validation`; Imagenette evaluates on `validation`.
"""

import glob
import json
import os

import numpy as np

from jnorm import errors
from jnorm.data import dataset as dataset_lib

# name -> (train split, test split, default image size)
SPLITS = {
    "cifar10": ("train", "test", 32),
    "cifar100": ("train", "test", 32),
    "oxford_flowers102": ("test", "validation", 64),
    "cars196": ("train", "test", 64),
    "imagenette": ("train", "validation", 64),
}
_IN_MEMORY_LIMIT_BYTES = 2 * 1024**3


def _not_prepared(name: str, data_dir, hint=None) -> errors.DatasetNotFoundError:
  where = data_dir or os.path.join("~", "tensorflow_datasets")
  hint = hint or (
      f"on a machine with internet run `tfds build {name} --data_dir=DIR "
      "--file_format=array_record`, copy DIR here and pass --config.data.data_dir=DIR")
  return errors.DatasetNotFoundError(
      f"TFDS dataset '{name}' is not prepared (in array_record format) in {where}; {hint}")


def open_source(name: str, split: str, data_dir, *, decoders=None, hint=None):
  """`tfds.data_source(name, split)`, or a one-line DatasetNotFoundError if not prepared.

  decoders: passed to tfds.data_source (e.g. {'image': tfds.decode.SkipDecoding()}).
  hint: how to prepare the dataset, for the error (default: `tfds build ...`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            decoders=decoders)
  except Exception as e:  # TFDS raises several types (AssertionError, NotImplementedError..)
    if _shards(name, split, data_dir)[0]:  # the files are there: one may be damaged
      damaged = _damaged(name, split, data_dir, e)
      if damaged.args[0].startswith("TFDS file "):
        raise damaged from None
    raise _not_prepared(name, data_dir, hint) from e


def _shards(name: str, split: str, data_dir) -> tuple:
  """(the array_record shard files of `split`, their record counts from
  dataset_info.json or None), newest version folder first."""
  root = os.path.join(os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets")),
                      name)
  for version in sorted(glob.glob(os.path.join(root, "*")), reverse=True):
    paths = sorted(glob.glob(os.path.join(version, f"{name}-{split}.array_record-*")))
    if not paths:
      continue
    lengths = None
    try:
      with open(os.path.join(version, "dataset_info.json")) as f:
        info = json.load(f)
      lengths = next([int(n) for n in s.get("shardLengths", [])]
                     for s in info.get("splits", []) if s.get("name") == split)
    except (OSError, ValueError, StopIteration, TypeError):
      pass
    return paths, lengths if lengths and len(lengths) == len(paths) else None
  return [], None


def _shard_problem(path: str, expected) -> str | None:
  """What is wrong with the array_record file `path` (None: it reads completely)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
    try:
      count = reader.num_records()
      if expected is not None and count != expected:
        return f"{count} records where dataset_info.json lists {expected}: cut short?"
      reader.read_all()
    finally:
      reader.close()
  except Exception as exc:  # pylint: disable=broad-except  # riegeli's RuntimeErrors
    return (" ".join(str(exc).split())
            or f"its records cannot be read: {type(exc).__name__}")
  return None


def _damaged(name: str, split: str, data_dir, exc: BaseException) -> errors.DatasetNotFoundError:
  """The one-line error for a split that fails to read: the damaged shard file if one of
  them does not read completely, else the split with the error."""
  paths, lengths = _shards(name, split, data_dir)
  for i, path in enumerate(paths):
    problem = _shard_problem(path, lengths[i] if lengths else None)
    if problem:
      return errors.DatasetNotFoundError(
          f"TFDS file {path} is damaged ({problem}); delete {os.path.dirname(path)} and "
          f"prepare '{name}' again (`tfds build {name} --file_format=array_record`)")
  where = data_dir or os.path.join("~", "tensorflow_datasets")
  return errors.DatasetNotFoundError(
      f"TFDS dataset '{name}' split '{split}' in {where} cannot be read "
      f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); prepare it again "
      f"(`tfds build {name} --file_format=array_record`)")


def resize_image(image: np.ndarray, size: int, mode: str) -> np.ndarray:
  """One uint8 image [h, w, C] -> [size, size, 3] uint8 (PIL bilinear)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  # pillow ships with matplotlib
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  pil = Image.fromarray(image)
  if mode == "direct":
    return np.asarray(pil.resize((size, size), Image.BILINEAR))
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  top, left = (nh - size) // 2, (nw - size) // 2
  pil = pil.resize((nw, nh), Image.BILINEAR)
  return np.asarray(pil.crop((left, top, left + size, top + size)))


class TfdsSplit:
  """A TFDS split decoded and resized per batch on the host (labels read once)."""

  def __init__(self, source, *, image_size: int, resize: str, labels: np.ndarray,
               where: tuple = ()):
    self.source = source
    self.image_size = image_size
    self.resize = resize
    self.labels = labels
    self.where = where  # (name, split, data_dir), for the error of a damaged file

  def __len__(self) -> int:
    return len(self.labels)

  def get_raw(self, indices: np.ndarray) -> np.ndarray:
    # One record at a time: TFDS's batched __getitems__ is not supported by every
    # backend (it fails under tfds.testing.mock_data).
    try:
      return np.stack([
          resize_image(self.source[int(i)]["image"], self.image_size, self.resize)
          for i in indices])
    except (RuntimeError, TypeError, ValueError, KeyError, OSError) as exc:
      if not self.where:
        raise
      raise _damaged(*self.where, exc) from None

  def get(self, indices: np.ndarray) -> np.ndarray:
    return self.get_raw(indices).astype(np.float32) / np.float32(255.0)


def _read_split(source, *, image_size: int, resize: str, keep_images: bool,
                where: tuple = ()):
  """One pass over a split: labels int32 [N] and, if keep_images, uint8 [N, S, S, 3].

  A record that cannot be read (a truncated or corrupt shard: riegeli's RuntimeError, or
  a record missing its fields) raises a one-line DatasetNotFoundError naming the damaged
  file, when `where` = (name, split, data_dir) is given.
  """
  try:
    n = len(source)
    labels = np.zeros([n], np.int32)
    images = np.zeros([n, image_size, image_size, 3], np.uint8) if keep_images else None
    for i in range(n):
      record = source[i]
      labels[i] = int(record["label"])
      if keep_images:
        images[i] = resize_image(record["image"], image_size, resize)
  except (RuntimeError, TypeError, ValueError, KeyError, OSError) as exc:
    if not where:
      raise
    raise _damaged(*where, exc) from None
  return labels, images


def load_tfds(cfg) -> dataset_lib.Dataset:
  """Loads a TFDS image set named by `cfg.name` (see SPLITS) as a `Dataset`."""
  train_split, test_split, default_size = SPLITS[cfg.name]
  size = cfg.image_size or default_size
  train_src = open_source(cfg.name, train_split, cfg.data_dir)
  test_src = open_source(cfg.name, test_split, cfg.data_dir)
  num_classes = int(train_src.dataset_info.features["label"].num_classes)
  in_memory = cfg.in_memory
  if in_memory is None:
    in_memory = len(train_src) * size * size * 3 <= _IN_MEMORY_LIMIT_BYTES
  splits = []
  for src, split in ((train_src, train_split), (test_src, test_split)):
    where = (cfg.name, split, cfg.data_dir)
    labels, images = _read_split(src, image_size=size, resize=cfg.resize,
                                 keep_images=in_memory, where=where)
    if in_memory:
      splits.append(dataset_lib.ArraySplit(images, labels))
    else:
      splits.append(TfdsSplit(src, image_size=size, resize=cfg.resize, labels=labels,
                              where=where))
  ds = dataset_lib.Dataset(cfg.name, splits[0], splits[1], num_classes, (size, size, 3))
  ds.info.update(tfds_splits={"train": train_split, "test": test_split},
                 resize=cfg.resize, in_memory=bool(in_memory))
  return ds
