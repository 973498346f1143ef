"""Tests of the comparison job: config plumbing, host split, aggregation, and a smoke run."""

import csv
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from jnorm import jobs
from jnorm.jobs import compare
from jnorm import errors


def _base():
  return ml_collections.ConfigDict({
      "seed": 0, "optim": {"lr": 0.1, "weight_decay": 0.0}, "cut": {"c": 1.0}})


def _comparison(**kw):
  config = ml_collections.ConfigDict({
      "job": "compare", "title": "t", "base": _base(),
      "variants": {"default": {}, "cut3": {"cut": {"c": 3.0}},
                   "lr_wd": {"optim": {"lr": 0.5, "weight_decay": 1e-4}}},
      "run_variants": "cut3,default", "seeds": "0,1,2", "seed_field": "seed",
      "report_epochs": "1,2", "norm_key": "", "process_index": 0, "process_count": 1})
  config.update(kw)
  return config


def test_apply_overrides_sets_nested_fields_and_leaves_base_untouched():
  base = _base()
  out = compare.apply_overrides(base, {"optim": {"lr": 0.5}, "cut": {"c": 3.0}}, where="v")
  assert out.optim.lr == 0.5 and out.cut.c == 3.0 and out.optim.weight_decay == 0.0
  assert base.optim.lr == 0.1 and base.cut.c == 1.0


def test_apply_overrides_rejects_unknown_field_with_its_name():
  with pytest.raises(errors.ConfigError, match=r"config\.variants\.bad\.optim\.lrr"):
    compare.apply_overrides(_base(), {"optim": {"lrr": 0.5}}, where="variants.bad")


def test_variant_configs_order_seeds_and_unknown_variant():
  runs = compare.variant_configs(_comparison())
  assert [(n, s) for n, s, _ in runs] == [("cut3", 0), ("cut3", 1), ("cut3", 2),
                                          ("default", 0), ("default", 1), ("default", 2)]
  assert [c.seed for _, _, c in runs] == [0, 1, 2, 0, 1, 2]
  assert runs[0][2].cut.c == 3.0 and runs[3][2].cut.c == 1.0
  with pytest.raises(errors.ConfigError, match="run_variants"):
    compare.variant_configs(_comparison(run_variants="default,nope"))


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shard_runs_partitions_the_list(count):
  runs = list(range(11))
  shards = [compare.shard_runs(runs, process_index=i, process_count=count)
            for i in range(count)]
  assert sorted(sum(shards, [])) == runs
  assert sum(len(s) for s in shards) == len(runs)
  with pytest.raises(errors.ConfigError):
    compare.shard_runs(runs, process_index=count, process_count=count)


def test_aggregate_curves_mean_and_sample_std():
  results = [{"knn_curve": [{"epoch": 1, "knn_accuracy": a, "norm_mean": n},
                            {"epoch": 2, "knn_accuracy": a + 0.1, "norm_mean": 2 * n}],
              "knn_accuracy_at_init": 0.5}
             for a, n in [(0.2, 1.0), (0.4, 3.0), (0.9, 5.0)]]
  curves = compare.aggregate_curves(results)
  acc = curves["knn_accuracy"]
  assert acc["epochs"] == [0, 1, 2]
  np.testing.assert_allclose(acc["mean"], [0.5, 0.5, 0.6])
  np.testing.assert_allclose(acc["std"][1], np.std([0.2, 0.4, 0.9], ddof=1))
  assert acc["std"][0] == 0.0 and acc["n"] == [3, 3, 3]
  np.testing.assert_allclose(curves["norm_mean"]["mean"], [3.0, 6.0])
  # A single seed has no sample std.
  assert compare.aggregate_curves(results[:1])["knn_accuracy"]["std"][1] is None


def _fake_train(config, workdir):
  """A stand-in trainer for plumbing tests: numbers are a known function of the config."""
  acc = [0.1 * config.cut.c + 0.01 * config.seed * e for e in (1, 2)]
  res = {"knn_curve": [{"epoch": e, "knn_accuracy": a, "projector_norm_mean": 1.0 + e}
                       for e, a in zip((1, 2), acc)],
         "knn_accuracy": acc[-1], "knn_accuracy_at_init": 0.05,
         "embedding_norm_mean": 2.0 * config.cut.c}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(res, f)
  return res


def _load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_run_comparison_resumes_and_splits_hosts(tmp_path):
  workdir = str(tmp_path)
  calls = []

  def train(config, wd):
    calls.append(wd)
    return _fake_train(config, wd)

  # Host 1 of 2 trains runs 1, 3, 5 of the list; the table then lists the others missing.
  out = compare.run_comparison(_comparison(process_index=1, process_count=2), workdir,
                               train_fn=train)
  assert [os.path.relpath(c, workdir) for c in calls] == [
      "cut3/seed1", "default/seed0", "default/seed2"]
  res = _load(workdir)
  assert sorted(res["missing"]) == ["cut3/seed0", "cut3/seed2", "default/seed1"]
  # Rerun with one host: only the missing runs train, then the full table.
  calls.clear()
  out = compare.run_comparison(_comparison(), workdir, train_fn=train)
  assert len(calls) == 3
  calls.clear()
  compare.run_comparison(_comparison(), workdir, train_fn=train)
  assert not calls  # everything finished: all skipped
  res = _load(workdir)
  assert res["missing"] == [] and res["variants"] == ["cut3", "default"]
  rows = {r["variant"]: r for r in res["table"]}
  np.testing.assert_allclose(rows["cut3"]["knn@1"], 0.3 + 0.01 * np.mean([0, 1, 2]))
  np.testing.assert_allclose(rows["default"]["knn@2"], 0.1 + 0.02)
  np.testing.assert_allclose(rows["default"]["knn@2_std"], np.std([0.1, 0.12, 0.14], ddof=1))
  np.testing.assert_allclose(rows["cut3"]["embedding_norm_mean"], 6.0)
  assert rows["cut3"]["norm_key"] == "projector_norm_mean"
  assert out["default/knn_accuracy"] == pytest.approx(0.12)
  with open(os.path.join(workdir, "comparison.csv")) as f:
    table = list(csv.DictReader(f))
  assert [t["variant"] for t in table] == ["cut3", "default"]
  with open(os.path.join(workdir, "comparison.md")) as f:
    md = f.read()
  assert "| cut3 | 3 |" in md and "kNN@2 (%)" in md
  for name in ("knn_accuracy_vs_epoch.png", "norm_vs_epoch.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000


def test_smoke_comparison_with_the_real_trainer(tmp_path):
  """configs/compare_reference.py:smoke: 2 variants x 1 seed through jnorm.train."""
  from jnorm import jobs
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = jobs.load_config_file(os.path.join(root, "configs", "compare_reference.py"), "smoke")
  workdir = str(tmp_path)
  headline = jobs.run_job(config, workdir)
  res = _load(workdir)
  assert res["variants"] == ["default", "cut3"] and res["missing"] == []
  for name in ("default", "cut3"):
    sub = _load(os.path.join(workdir, name, "seed0"))
    row = next(r for r in res["table"] if r["variant"] == name)
    assert row["knn_accuracy"] == pytest.approx(sub["knn_accuracy"])
    assert row["knn@0"] == pytest.approx(sub["knn_accuracy_at_init"])
    assert row["embedding_norm_mean"] == pytest.approx(sub["embedding_norm_mean"])
    assert headline[f"{name}/knn_accuracy"] == pytest.approx(sub["knn_accuracy"])
  rows = {r["variant"]: r for r in res["table"]}
  # Cut-init divides every initial parameter by 3: the embeddings start smaller.
  assert rows["cut3"]["norm_first"] < rows["default"]["norm_first"]
  for name in ("knn_accuracy_vs_epoch.png", "norm_vs_epoch.png", "comparison.md",
               "comparison.csv"):
    assert os.path.getsize(os.path.join(workdir, name)) > 100


def test_a_diverged_sub_run_is_recorded_and_the_rest_still_runs(tmp_path):
  workdir = str(tmp_path)

  def train(config, wd):
    if config.cut.c == 3.0 and config.seed == 1:
      raise errors.NonFiniteError("non-finite loss at step 7")
    return _fake_train(config, wd)

  compare.run_comparison(_comparison(), workdir, train_fn=train)
  res = _load(workdir)
  assert res["failed"] == {"cut3/seed1": "non-finite loss at step 7"}
  assert res["missing"] == []
  rows = {r["variant"]: r for r in res["table"]}
  assert rows["cut3"]["seeds_done"] == 2 and rows["default"]["seeds_done"] == 3
  with open(os.path.join(workdir, "comparison.md")) as f:
    assert "Diverged: cut3/seed1" in f.read()
  # A rerun does not retry the diverged run.
  compare.run_comparison(_comparison(), workdir, train_fn=lambda c, w: pytest.fail("retrained"))


def test_aggregate_only_trains_nothing(tmp_path):
  workdir = str(tmp_path)
  config = _comparison(aggregate_only=False)
  compare.run_comparison(_comparison(process_index=0, process_count=3), workdir,
                         train_fn=_fake_train)
  config.aggregate_only = True
  compare.run_comparison(config, workdir, train_fn=lambda c, w: pytest.fail("trained"))
  assert sorted(_load(workdir)["missing"]) == [
      "cut3/seed1", "cut3/seed2", "default/seed1", "default/seed2"]


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = [("compare_reference.py", a) for a in (None, "digits", "smoke")] + [
    ("compare_weight_decay.py", a) for a in (None, "simsiam", "digits", "simsiam,digits",
                                            "smoke")] + [
    ("compare_attraction.py", a) for a in (None, "digits", "smoke")] + [
    ("compare_investigation.py", a) for a in ("lr_cut", "gradscale", "attraction",
                                              "long_tail")]


@pytest.mark.parametrize("filename,arg", _CONFIGS)
def test_every_variant_of_every_comparison_config_is_a_valid_training_config(filename, arg):
  from jnorm.training import config as train_config
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", filename), arg)
  assert config.job == "compare"
  config.run_variants = ""  # all variants, not only the default selection
  runs = compare.variant_configs(config)
  assert len(runs) == len(config.variants) * len(compare.parse_list(config.seeds))
  for _, _, run in runs:
    train_config.validate(run)
