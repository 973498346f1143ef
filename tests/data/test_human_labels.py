"""jnorm.data.human_labels: CIFAR-10N / 100N / 10H loaders (mock TFDS) and label files."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jnorm import errors
from jnorm.data import human_labels


@pytest.mark.parametrize("name", ["cifar10_n", "cifar100_n", "cifar10_h"])
def test_human_label_loaders_under_mock_data(name):
  split = human_labels.TFDS_SOURCES[name][0]
  with tfds.testing.mock_data(num_examples=7):
    labels = human_labels.load_tfds_human_labels(name)
    records = [tfds.data_source(name, split=split)[i] for i in range(7)]
  assert len(labels) == 7 and labels.images.shape == (7, 32, 32, 3)
  np.testing.assert_array_equal(labels.clean_label, [r["label"] for r in records])
  np.testing.assert_array_equal(labels.images[3], records[3]["image"])
  for row, r in zip(labels.votes, records):
    if name == "cifar10_n":
      expect = np.bincount([r[f"random_label{j}"] for j in (1, 2, 3)], minlength=10)
    elif name == "cifar100_n":
      expect = np.eye(100)[r["noise_label"]]
    else:
      expect = r["soft_label"]
    np.testing.assert_allclose(row, expect)


def test_human_labels_missing_and_files(tmp_path):
  with pytest.raises(errors.DatasetNotFoundError) as info:
    human_labels.load_tfds_human_labels("cifar10_n", data_dir=str(tmp_path))
  assert "\n" not in str(info.value) and "download_and_prepare" in str(info.value)
  with pytest.raises(errors.DatasetNotFoundError):
    human_labels.load_label_file(str(tmp_path / "none.npy"), num_classes=10)
  np.save(tmp_path / "ann.npy", np.array([[1, 1, 2], [0, -1, 0]]))
  np.testing.assert_array_equal(
      human_labels.load_label_file(str(tmp_path / "ann.npy"), num_classes=3).votes,
      [[0, 2, 1], [2, 0, 0]])
  soft = np.array([[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
  np.save(tmp_path / "soft.npy", soft)
  np.testing.assert_array_equal(
      human_labels.load_label_file(str(tmp_path / "soft.npy"), num_classes=3).votes, soft)
  (tmp_path / "ann.csv").write_text("label,a1,a2\n2,2,1\n0,0,\n")
  from_csv = human_labels.load_label_file(str(tmp_path / "ann.csv"), num_classes=3)
  np.testing.assert_array_equal(from_csv.votes, [[0, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(from_csv.clean_label, [2, 0])
  with pytest.raises(errors.ConfigError):
    human_labels.load_label_file(str(tmp_path / "ann.npy"), num_classes=2)  # label 2 >= 2
  with pytest.raises(errors.ConfigError):
    human_labels.load_label_file(str(tmp_path / "soft.npy"), num_classes=4)


