"""configs/compare_fmnist.py on the real Fashion-MNIST files (Debian's package, which
.ci/run installs): the CI-sized training comparison through the command line, and the
norms-as-confidence comparison (the analysis job per seed)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jnorm import jobs
from jnorm import ood

pytestmark = [pytest.mark.fashion_mnist, pytest.mark.slow]

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONFIG = os.path.join(_ROOT, "configs", "compare_fmnist.py")


def _load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_smoke_comparison_runs_from_the_command_line(tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.run(
      [sys.executable, "-m", "jnorm.main", "--config", f"{_CONFIG}:smoke", "--workdir",
       workdir], cwd=_ROOT, capture_output=True, text=True, check=False, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = _load(workdir)
  assert res["variants"] == ["default", "cut3_all"] and not res["missing"]
  for arm in res["variants"]:
    sub = _load(os.path.join(workdir, arm, "seed0"))
    assert sub["dataset"]["name"] == "fashion_mnist"
    assert res["summary"][arm]["knn_accuracy"]["mean"] == pytest.approx(sub["knn_accuracy"])


def test_confidence_comparison_reports_the_analysis_numbers_per_seed(tmp_path):
  config = jobs.load_config_file(_CONFIG, "confidence_smoke")
  assert config.sub_job == "analysis" and config.seed_field == "train.seed"
  workdir = str(tmp_path)
  jobs.run_job(config, workdir)
  res = _load(workdir)
  sub = _load(os.path.join(workdir, "simclr", "seed0"))
  assert sub["dataset"]["train_classes"] == list(range(8))  # 8 and 9 held out
  for key in ("novelty_auroc", "norm_bucket_spearman_loo", "knn_accuracy_test"):
    assert res["summary"]["simclr"][key]["mean"] == pytest.approx(sub[key]), key
  with open(os.path.join(workdir, "comparison.md")) as f:
    assert "novelty_auroc" in f.read()
  # Norms next to standard OOD scores: near (held-out classes) and two far sets.
  assert set(sub["ood"]) == {"near", "digits", "uniform_noise"}
  for per_score in sub["ood"].values():
    assert set(per_score) == set(ood.SCORES)
    assert all(0 <= m["auroc"] <= 1 and 0 <= m["fpr95"] <= 1 for m in per_score.values())
  assert sub["ood_auroc_near_neg_norm_projector"] == sub["ood"]["near"]["neg_norm_projector"]["auroc"]
  with open(os.path.join(workdir, "ood.md")) as f:
    assert "| csi | " in f.read()
  assert os.path.getsize(os.path.join(workdir, "ood_auroc.png")) > 1000
  # Equal-count norm buckets: the quantile Spearman and each bucket's accuracy.
  quantile = sub["norm_buckets"]["projector"]["quantile"]["train_to_test"]
  assert len(quantile["value"]) == 10 and quantile["value"][0] == sub[
      "norm_quantile_accuracy_lowest"]


def test_long_tail_comparison_reverses_the_counts_and_reports_the_swap_effect(tmp_path):
  config = jobs.load_config_file(_CONFIG, "long_tail_smoke")
  assert config.frequency_swap == "descending,ascending"
  workdir = str(tmp_path)
  jobs.run_job(config, workdir)
  res = _load(workdir)
  desc, asc = (_load(os.path.join(workdir, arm, "seed0")) for arm in ("descending", "ascending"))
  assert desc["class_norms"]["class_counts"] == asc["class_norms"]["class_counts"][::-1]
  assert desc["class_norms"]["class_counts"][0] == 40  # train_per_class, the head
  for arm, sub in (("descending", desc), ("ascending", asc)):
    assert res["summary"][arm]["class_norm_spearman"]["mean"] == pytest.approx(
        sub["class_norm_spearman"])
  swap = res["frequency_swap"]
  assert swap["arms"] == ["descending", "ascending"] and swap["seeds"] == [0]
  a = np.array(desc["class_norms"]["mean_norm"], float)
  b = np.array(asc["class_norms"]["mean_norm"], float)
  a, b = a / a.mean(), b / b.mean()
  sign = np.sign(np.array(desc["class_norms"]["class_counts"], float)
                 - np.array(asc["class_norms"]["class_counts"], float))
  assert swap["per_seed"][0] == pytest.approx(np.mean((a - b) * sign), rel=1e-9)
