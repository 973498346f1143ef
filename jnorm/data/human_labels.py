"""Human annotations of CIFAR images: CIFAR-10N, CIFAR-100N, CIFAR-10H.

Used to ask whether embedding norms track human confidence (docs/paper.md §3.3): annotator
agreement should rise, and label entropy fall, with the norm.

Every loader returns a `HumanLabels`: per-sample vote counts over the classes, the
clean label and (from TFDS) the images themselves, so the embeddings can be computed
on exactly the annotated images and no index alignment with another copy of CIFAR is
needed.

Sources:
- TFDS (random access with `tfds.data_source`, no TensorFlow):
  - `cifar10_n` (train split): votes = counts of `random_label1..3` (three annotators);
    `aggre_label` and `worse_label` kept in `extra`.
  - `cifar100_n` (train split): votes = one-hot of `noise_label` (one annotator).
  - `cifar10_h` (test split): votes = `soft_label` (the share of about 50 annotators
    per class; renormalised where used).
- Files (`load_label_file`), aligned row by row with the images of a split in the order
  `jnorm.data.eval_batches` yields them:
  - `.npy` integer array [N] or [N, A]: A annotators' labels (-1 = no label);
  - `.npy` float array [N, C]: a soft label / vote distribution per sample
    (e.g. CIFAR-10H's `cifar10h-probs.npy`, if the split's order matches);
  - `.csv` with a header row and one row per sample: a column `label` (optional) is
    the clean label, every other column is one annotator's integer label (-1 or empty
    = no label).
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from jnorm import errors

# name -> (split, num_classes)
TFDS_SOURCES = {"cifar10_n": ("train", 10), "cifar100_n": ("train", 100),
                "cifar10_h": ("test", 10)}


@dataclasses.dataclass
class HumanLabels:
  """Human annotations of N samples.

  Attributes:
    name: the source ('cifar10_n', ..., or the file path).
    votes: [N, C] float64 non-negative votes (counts or a distribution).
    clean_label: [N] int64 ground-truth labels, or None (a file without them).
    images: [N, 32, 32, 3] uint8, or None (labels from a file).
    extra: other per-sample label arrays (e.g. CIFAR-10N's 'aggre_label').
  """
  name: str
  votes: np.ndarray
  clean_label: Optional[np.ndarray] = None
  images: Optional[np.ndarray] = None
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return self.votes.shape[1]

  def __len__(self) -> int:
    return self.votes.shape[0]


def _open_source(name: str, split: str, data_dir: Optional[str]):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  hint = (f"human labels '{name}' are not prepared in data_dir={data_dir!r}; on a machine "
          f"with internet run `python -c \"import tensorflow_datasets as tfds; "
          f"tfds.builder('{name}', data_dir=DIR).download_and_prepare()\"` (CIFAR-N/H "
          f"need their label files placed as the TFDS page says), then set "
          f"config.human_labels.data_dir=DIR, or pass a label file in "
          f"config.human_labels.path")
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as exc:  # tfds raises several types (AssertionError, ValueError...)
    raise errors.DatasetNotFoundError(hint) from exc


def load_tfds_human_labels(name: str, *, data_dir: Optional[str] = None,
                           limit: Optional[int] = None,
                           with_images: bool = True) -> HumanLabels:
  """Loads CIFAR-10N, CIFAR-100N or CIFAR-10H through `tfds.data_source`.

  Args:
    name: 'cifar10_n', 'cifar100_n' or 'cifar10_h'.
    data_dir: TFDS data directory (None = TFDS's default).
    limit: read only the first `limit` records (quick runs).
    with_images: also return the images [N, 32, 32, 3] uint8.

  Raises:
    ConfigError for an unknown name; DatasetNotFoundError if it is not prepared.
  """
  errors.check_choice("human_labels.name", name, TFDS_SOURCES)
  split, num_classes = TFDS_SOURCES[name]
  source = _open_source(name, split, data_dir)
  count = len(source) if limit is None else min(int(limit), len(source))
  records = [source[i] for i in range(count)]
  clean = np.array([int(r["label"]) for r in records], np.int64)
  extra = {}
  if name == "cifar10_n":
    annotators = np.array([[int(r[f"random_label{j}"]) for j in (1, 2, 3)]
                           for r in records], np.int64).reshape(count, 3)
    votes = _votes(annotators, num_classes)
    for key in ("aggre_label", "worse_label"):
      extra[key] = np.array([int(r[key]) for r in records], np.int64)
  elif name == "cifar100_n":
    votes = _votes(np.array([int(r["noise_label"]) for r in records], np.int64),
                   num_classes)
  else:  # cifar10_h
    votes = np.array([np.asarray(r["soft_label"], np.float64) for r in records]
                     ).reshape(count, num_classes)
  images = None
  if with_images:
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records]) if records \
        else np.zeros([0, 32, 32, 3], np.uint8)
  return HumanLabels(name=name, votes=votes, clean_label=clean, images=images,
                     extra=extra)


def _votes(labels: np.ndarray, num_classes: int, source: str = "") -> np.ndarray:
  if labels.size and labels.max() >= num_classes:
    raise errors.ConfigError(
        f"{source}: annotator label {labels.max()} is out of range for {num_classes} "
        f"classes; check the file matches the dataset")
  return votes_from_labels(labels, num_classes=num_classes)


def load_label_file(path: str, *, num_classes: int) -> HumanLabels:
  """Loads human labels from a `.npy` or `.csv` file (formats in the module docstring).

  Raises:
    DatasetNotFoundError if the file does not exist; ConfigError for another suffix or
    a malformed file.
  """
  if not os.path.exists(path):
    raise errors.DatasetNotFoundError(
        f"human label file {path!r} does not exist; check config.human_labels.path")
  suffix = os.path.splitext(path)[1].lower()
  clean = None
  if suffix == ".npy":
    array = np.load(path, allow_pickle=False)
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
      if array.shape[1] != num_classes or np.any(array < 0):
        raise errors.ConfigError(
            f"{path}: a float array must be [N, {num_classes}] non-negative soft labels")
      votes = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.integer) and array.ndim in (1, 2):
      votes = _votes(array.astype(np.int64), num_classes, path)
    else:
      raise errors.ConfigError(
          f"{path}: expected int [N] / [N, A] annotator labels or float [N, C] soft "
          f"labels, got {array.dtype} {array.shape}")
  elif suffix == ".csv":
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64,
                          filling_values=-1, ndmin=1)
    columns = list(table.dtype.names or ())
    annotator_columns = [c for c in columns if c != "label"]
    if not annotator_columns:
      raise errors.ConfigError(f"{path}: needs at least one annotator column besides 'label'")
    annotators = np.stack([table[c] for c in annotator_columns], axis=1)
    votes = _votes(np.nan_to_num(annotators, nan=-1).astype(np.int64), num_classes,
                   path)
    if "label" in columns:
      clean = table["label"].astype(np.int64)
  else:
    raise errors.ConfigError(
        f"config.human_labels.path={path!r}: use a .npy or .csv file (see "
        f"jnorm/data/human_labels.py)")
  if np.any(votes.sum(axis=1) <= 0):
    raise errors.ConfigError(f"{path}: some samples have no annotator label at all")
  return HumanLabels(name=path, votes=votes, clean_label=clean)


def votes_from_labels(labels, *, num_classes: int) -> np.ndarray:
  """Vote counts [N, C] from annotator labels [N] or [N, A] (entries < 0 = missing)."""
  labels = np.asarray(labels, np.int64)
  if labels.ndim == 1:
    labels = labels[:, None]
  votes = np.zeros([labels.shape[0], num_classes])
  rows, cols = np.nonzero(labels >= 0)
  np.add.at(votes, (rows, labels[rows, cols]), 1.0)
  return votes
