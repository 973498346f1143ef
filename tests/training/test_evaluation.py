"""jnorm.training.evaluation: the class-stratified train subsets an evaluation may use."""

import numpy as np
import pytest

from jnorm import data
from jnorm.training import evaluation


def test_stratified_subset_keeps_each_class_share_and_is_fixed():
  labels = np.repeat(np.arange(4), [400, 300, 200, 100])
  idx = evaluation.stratified_subset(labels, 100, num_classes=4)
  assert len(idx) == 100 and np.all(np.diff(idx) > 0)
  assert np.bincount(labels[idx], minlength=4).tolist() == [40, 30, 20, 10]
  np.testing.assert_array_equal(idx, evaluation.stratified_subset(labels, 100, num_classes=4))
  # Largest remainders: 7 of 10 classes-in-proportion 4:3:2:1 -> 2.8, 2.1, 1.4, 0.7.
  assert np.bincount(labels[evaluation.stratified_subset(labels, 7, num_classes=4)],
                     minlength=4).tolist() == [3, 2, 1, 1]
  for n in (0, 1000, 5000):  # 0 or at least the split: all of it
    np.testing.assert_array_equal(evaluation.stratified_subset(labels, n, num_classes=4),
                                  np.arange(1000))


def test_train_subset_cuts_only_the_train_split():
  rng = np.random.default_rng(0)
  train = data.ArraySplit(rng.normal(size=(60, 2)).astype(np.float32), np.arange(60) % 3)
  test = data.ArraySplit(rng.normal(size=(9, 2)).astype(np.float32), np.arange(9) % 3)
  ds = data.Dataset("toy", train, test, 3, (2,))
  sub = evaluation.train_subset(ds, 12)
  assert len(sub.train) == 12 and sub.test is ds.test
  assert np.bincount(sub.train.labels).tolist() == [4, 4, 4]
  assert evaluation.train_subset(ds, 0) is ds
