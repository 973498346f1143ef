"""Random-access splits, the `Dataset` record, and class-subset selection (long tail).

A split is any object with `__len__`, `labels` (int32 [N], held in memory for every
source: class counts, long-tail subsets and stratification need them) and
`get(indices) -> inputs` returning float32 inputs for the given example indices:
images [B, H, W, C] in [0, 1], vectors [B, D]. `ArraySplit` holds numpy arrays;
`jnorm.data.tfds_source.TfdsSplit` decodes TFDS records on the host per batch.
Subsets (long tail, class filter) are an index array over a parent split (`SubsetSplit`),
so nothing is copied.
"""

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from jnorm import errors


class Split(Protocol):
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    ...

  def get(self, indices: np.ndarray) -> np.ndarray:
    ...


class ArraySplit:
  """A split held in memory: `inputs` [N, ...] (uint8 images or float), `labels` [N]."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray):
    if len(inputs) != len(labels):
      raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    self.inputs = inputs
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def get(self, indices: np.ndarray) -> np.ndarray:
    x = self.inputs[indices]
    if x.dtype == np.uint8:
      return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=False)

  def get_raw(self, indices: np.ndarray) -> np.ndarray:
    """The stored values (uint8 images stay uint8: 4x less host-to-device traffic)."""
    return self.inputs[indices]


class SubsetSplit:
  """The examples `indices` (int [M]) of a parent split, in that order."""

  def __init__(self, parent: Split, indices: np.ndarray):
    self.parent = parent
    self.indices = np.asarray(indices, np.int64)
    self.labels = parent.labels[self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def get(self, indices: np.ndarray) -> np.ndarray:
    return self.parent.get(self.indices[indices])

  def get_raw(self, indices: np.ndarray) -> np.ndarray:
    return getattr(self.parent, "get_raw", self.parent.get)(self.indices[indices])


@dataclasses.dataclass
class Dataset:
  """Train and test splits of one source, and what results.json should record.

  Attributes:
    name: the source's name (`config.data.name`).
    train, test: random-access splits (see the module docstring).
    num_classes: number of label values (labels lie in [0, num_classes)).
    input_shape: one example's shape: (H, W, C) for images, (D,) for vectors.
    info: JSON-ready facts: class_counts (train, after long tail / class filter),
      test_class_counts, sizes, and the settings that produced them.
  """
  name: str
  train: Any
  test: Any
  num_classes: int
  input_shape: tuple
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def num_train(self) -> int:
    return len(self.train)

  @property
  def num_test(self) -> int:
    return len(self.test)

  def split(self, name: str):
    errors.check_choice("split", name, ("train", "test"))
    return self.train if name == "train" else self.test


def class_counts(labels: np.ndarray, num_classes: int) -> list:
  """Number of examples of each class: labels int [N] -> list of `num_classes` ints."""
  return np.bincount(np.asarray(labels), minlength=num_classes).astype(int).tolist()


def long_tail_counts(n_max: int, ratio: float, num_classes: int) -> list:
  """Examples kept per class in a long-tailed variant: class i keeps int(n_max * ratio**-i).

  As the reference (docs/paper.md §4.4): CIFAR-10-LT is long_tail_counts(5000, 1.5, 10)
  (14,736 images), CIFAR-100-LT long_tail_counts(500, 1.03365, 100) (14,750).
  """
  return [int(n_max * ratio ** (-i)) for i in range(num_classes)]


def select_per_class(labels: np.ndarray, counts: Sequence[int], *, seed: int) -> np.ndarray:
  """Indices keeping the first counts[c] examples of each class c in a seeded order.

  Args:
    labels: int [N].
    counts: examples to keep per class (len = num_classes).
    seed: the order within each class is a permutation from default_rng(seed).
  Returns:
    int64 [sum(counts)] sorted indices into `labels` (the subset keeps source order).
  Raises:
    ConfigError: a class has fewer examples than asked for.
  """
  order = np.random.default_rng(seed).permutation(len(labels))
  keep = []
  for c, k in enumerate(counts):
    members = order[labels[order] == c]
    if k > len(members):
      raise errors.ConfigError(
          f"class {c} has {len(members)} train examples but the long tail asks for {k}; "
          "lower config.data.long_tail_max")
    keep.append(members[:k])
  return np.sort(np.concatenate(keep)) if keep else np.zeros([0], np.int64)


def apply_train_subsets(train, *, num_classes: int, long_tail_ratio, long_tail_max,
                        long_tail_seed: int, train_classes,
                        long_tail_order: str = "descending") -> tuple:
  """Applies the class filter, then the long tail, to the train split.

  `long_tail_order` 'descending' gives class 0 the most examples (the reference);
  'ascending' gives the same counts to the classes in reverse order (class C-1 the
  most): the control that separates a class's frequency from its identity.

  Returns:
    (split, info): the (possibly subset) split and the settings for `Dataset.info`.
  """
  info = {}
  if train_classes is not None:
    bad = [c for c in train_classes if not 0 <= c < num_classes]
    if bad:
      raise errors.ConfigError(
          f"config.data.train_classes has labels {bad} outside [0, {num_classes}); "
          "list labels of this dataset")
    keep = np.flatnonzero(np.isin(train.labels, np.asarray(train_classes)))
    train = SubsetSplit(train, keep)
    info["train_classes"] = list(train_classes)
  if long_tail_ratio:
    present = [n for n in class_counts(train.labels, num_classes) if n > 0]
    n_max = long_tail_max if long_tail_max is not None else min(present)
    counts = long_tail_counts(n_max, long_tail_ratio, num_classes)
    if long_tail_order == "ascending":
      counts = counts[::-1]
    if train_classes is not None:
      counts = [k if c in train_classes else 0 for c, k in enumerate(counts)]
    train = SubsetSplit(train, select_per_class(train.labels, counts, seed=long_tail_seed))
    info.update(long_tail_ratio=float(long_tail_ratio), long_tail_max=int(n_max),
                long_tail_seed=int(long_tail_seed), long_tail_order=long_tail_order)
  return train, info
