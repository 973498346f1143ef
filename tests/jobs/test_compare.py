"""The comparison job (jnorm.jobs.compare): config plumbing, host split, the report's
paired statistics, diverged runs, and a smoke run with the real trainer."""

import csv
import json
import os

import ml_collections
import numpy as np
import pytest
import scipy.stats

from jnorm import errors
from jnorm import jobs
from jnorm import tables
from jnorm.jobs import compare
from jnorm.training import config as train_config

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _base():
  """A stand-in training config: the fields the plumbing and `_fake_train` read."""
  return ml_collections.ConfigDict({
      "seed": 0, "optim": {"lr": 0.1, "weight_decay": 0.0}, "cut": {"c": 1.0},
      "eval": {"linear_probe": False}})


def _comparison(**kw):
  config = compare.comparison_config(
      base=_base(), variants={"default": {}, "cut3": {"cut": {"c": 3.0}},
                              "lr_wd": {"optim": {"lr": 0.5, "weight_decay": 1e-4}}},
      run_variants="cut3,default", seeds=(0, 1, 2), report_epochs=(1, 2), title="t",
      baseline="default")
  config.process_index, config.process_count = 0, 1
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
  # Seed-major, arms in table order within a seed: a partial grid holds complete pairs.
  assert [(n, s) for n, s, _ in runs] == [("cut3", 0), ("default", 0), ("cut3", 1),
                                          ("default", 1), ("cut3", 2), ("default", 2)]
  assert [c.seed for _, _, c in runs] == [0, 0, 1, 1, 2, 2]
  assert runs[0][2].cut.c == 3.0 and runs[1][2].cut.c == 1.0
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


def _fake_train(config, workdir):
  """A stand-in trainer for plumbing tests: numbers are a known function of the config.

  kNN accuracy at epoch e: 0.1·c + 0.01·seed·e·c (c the cut factor), so the paired
  difference cut3 - default at epoch e is 0.2 + 0.02·seed·e: it varies by seed.
  """
  c, seed = config.cut.c, config.seed
  acc = [0.1 * c + 0.01 * seed * e * c for e in (1, 2)]
  res = {"knn_curve": [{"epoch": e, "knn_accuracy": a, "projector_norm_mean": 1.0 + e}
                       for e, a in zip((1, 2), acc)],
         "knn_accuracy": acc[-1], "knn_accuracy_at_init": 0.05,
         "embedding_norm_mean": 2.0 * c}
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

  # Host 1 of 3 trains runs 1 and 4 of the list; the table then lists the others missing.
  compare.run_comparison(_comparison(process_index=1, process_count=3), workdir,
                         train_fn=train)
  assert [os.path.relpath(c, workdir) for c in calls] == ["default/seed0", "cut3/seed2"]
  res = _load(workdir)
  assert sorted(res["missing"]) == ["cut3/seed0", "cut3/seed1", "default/seed1",
                                    "default/seed2"]
  # Rerun with one host: only the missing runs train, then the full table.
  calls.clear()
  compare.run_comparison(_comparison(), workdir, train_fn=train)
  assert len(calls) == 4
  calls.clear()
  out = compare.run_comparison(_comparison(), workdir, train_fn=train)
  assert not calls  # everything finished: all skipped
  res = _load(workdir)
  assert res["missing"] == [] and res["variants"] == ["cut3", "default"]
  assert res["baseline"] == "default"
  summary = res["summary"]
  cut_knn1 = [0.3 + 0.03 * s for s in (0, 1, 2)]
  assert summary["cut3"]["knn@1"]["values"] == pytest.approx(
      dict(zip(("0", "1", "2"), cut_knn1)))
  assert summary["cut3"]["knn@1"]["mean"] == pytest.approx(np.mean(cut_knn1))
  default_knn2 = [0.1 + 0.02 * s for s in (0, 1, 2)]
  assert summary["default"]["knn@2"]["mean"] == pytest.approx(0.12)
  assert summary["default"]["knn@2"]["sd"] == pytest.approx(np.std(default_knn2, ddof=1))
  assert summary["default"]["knn@2"]["n"] == 3
  assert summary["cut3"]["embedding_norm_mean"]["mean"] == pytest.approx(6.0)
  # Paired difference to the baseline, seed by seed, as scipy's paired t-test sees it.
  cut_knn2 = [0.3 + 0.06 * s for s in (0, 1, 2)]
  diff = summary["cut3"]["knn@2"]["diff"]
  per_seed = np.subtract(cut_knn2, default_knn2)
  assert diff["mean"] == pytest.approx(per_seed.mean())
  assert diff["sd"] == pytest.approx(per_seed.std(ddof=1))
  assert diff["p"] == pytest.approx(scipy.stats.ttest_rel(cut_knn2, default_knn2).pvalue)
  half = scipy.stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
  assert (diff["lo"], diff["hi"]) == pytest.approx((per_seed.mean() - half,
                                                    per_seed.mean() + half))
  assert "diff" not in summary["default"]["knn@2"]  # the baseline has no difference
  assert out["default/knn_accuracy"] == pytest.approx(0.12)
  assert out["cut3/knn@1"] == pytest.approx(np.mean(cut_knn1))
  with open(os.path.join(workdir, "comparison.csv")) as f:
    table = list(csv.DictReader(f))
  row = next(t for t in table if (t["arm"], t["metric"], t["statistic"]) == (
      "cut3", "knn@2", "diff_mean"))
  assert float(row["value"]) == pytest.approx(per_seed.mean())
  assert [t["arm"] for t in table][0] == "cut3"
  with open(os.path.join(workdir, "comparison.md")) as f:
    md = f.read()
  assert "| cut3 | 3 |" in md and "| default | 3 |" in md  # arm, n
  assert res["table_markdown"] == tables.table_markdown(
      summary, metrics=["knn@1", "knn@2", "knn_auc", "knn_accuracy", "embedding_norm_mean"],
      baseline="default")
  assert res["table_markdown"] in md
  for name in ("knn_accuracy_vs_epoch.png", "norm_vs_epoch.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000


@pytest.mark.slow
def test_smoke_comparison_with_the_real_trainer(tmp_path):
  """configs/compare_reference.py:smoke: 2 variants x 1 seed through the real trainer."""
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", "compare_reference.py"),
                                 "smoke")
  workdir = str(tmp_path)
  headline = jobs.run_job(config, workdir)
  res = _load(workdir)
  assert res["variants"] == ["default", "cut3"] and res["missing"] == []
  summary = res["summary"]
  for name in ("default", "cut3"):
    sub = _load(os.path.join(workdir, name, "seed0"))
    row = summary[name]
    assert row["knn_accuracy"]["mean"] == pytest.approx(sub["knn_accuracy"])
    assert row["knn@0"]["mean"] == pytest.approx(sub["knn_accuracy_at_init"])
    assert row["embedding_norm_mean"]["mean"] == pytest.approx(sub["embedding_norm_mean"])
    assert row["knn_accuracy"]["n"] == 1 and row["knn_accuracy"]["lo"] is None
    assert headline[f"{name}/knn_accuracy"] == pytest.approx(sub["knn_accuracy"])
  # Cut-init divides every initial parameter by 3: the embeddings start smaller.
  key = "projector_norm_mean@first"
  assert summary["cut3"][key]["mean"] < summary["default"][key]["mean"]
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
  summary = res["summary"]
  assert summary["cut3"]["knn_accuracy"]["n"] == 2
  assert summary["default"]["knn_accuracy"]["n"] == 3
  assert summary["cut3"]["knn_accuracy"]["diff"]["n"] == 2  # pairs of the seeds both have
  with open(os.path.join(workdir, "comparison.md")) as f:
    assert "Diverged: cut3/seed1" in f.read()
  # A rerun does not retry the diverged run.
  compare.run_comparison(_comparison(), workdir, train_fn=lambda c, w: pytest.fail("retrained"))


def test_aggregate_only_trains_nothing(tmp_path):
  workdir = str(tmp_path)
  compare.run_comparison(_comparison(process_index=0, process_count=3), workdir,
                         train_fn=_fake_train)
  compare.run_comparison(_comparison(aggregate_only=True), workdir,
                         train_fn=lambda c, w: pytest.fail("trained"))
  # Process 0 of 3 trained runs 0 and 3 of the seed-major list: cut3/seed0, default/seed1.
  assert sorted(_load(workdir)["missing"]) == [
      "cut3/seed1", "cut3/seed2", "default/seed0", "default/seed2"]


def test_unknown_baseline_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match="baseline"):
    compare.run_comparison(_comparison(baseline="lr_wd"), str(tmp_path), train_fn=_fake_train)


_CONFIGS = [("compare_reference.py", a) for a in (None, "digits", "digits16", "smoke")] + [
    ("compare_weight_decay.py", a) for a in (None, "simsiam", "digits", "simsiam,digits",
                                            "smoke", "simsiam,smoke")] + [
    ("compare_attraction.py", a) for a in (None, "digits", "smoke")] + [
    ("compare_investigation.py", a) for a in ("lr_cut", "gradscale", "attraction",
                                              "long_tail")] + [
    ("compare_fmnist.py", a) for a in (None, "scale", "wd", "recipe", "smoke")] + [
    ("compare_fmnist_siamese.py", a) for a in ("simsiam", "byol", "simsiam,smoke")] + [
    ("rate_grid.py", a) for a in ("simclr", "simsiam", "byol", "byol,smoke")]


@pytest.mark.parametrize("filename,arg", _CONFIGS)
def test_every_variant_of_every_comparison_config_is_a_valid_training_config(filename, arg):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", filename), arg)
  assert config.job == "compare"
  config.run_variants = ""  # all variants, not only the default selection
  runs = compare.variant_configs(config)
  assert len(runs) == len(config.variants) * len(compare.parse_list(config.seeds))
  for _, _, run in runs:
    train_config.validate(run)


@pytest.mark.parametrize("filename,arg", _CONFIGS)
def test_the_default_selection_of_every_comparison_config_names_its_own_variants(filename,
                                                                                  arg):
  config = jobs.load_config_file(os.path.join(_ROOT, "configs", filename), arg)
  selected = compare.parse_list(config.run_variants)
  assert selected and set(selected) <= set(config.variants)
  assert (config.baseline or selected[0]) in selected
