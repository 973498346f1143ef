"""How few train images an evaluation needs: kNN accuracy of cheaper protocols against
the whole-split protocol, paired on the same checkpoints.

Trains Fashion-MNIST runs of the experiments' setting (configs/compare_fmnist.py's
SimCLR base and configs/compare_fmnist_siamese.py's SimSiam base, 8 epochs, a
checkpoint after every epoch), then for every checkpoint computes the kNN accuracy
(k 20, t 0.1, backbone features, the 2,000 test images as queries) with the BatchNorm
statistics re-estimated on `bn` train images and a bank of `bank` train images (both
class-stratified subsets, `jnorm.training.evaluation.stratified_subset`; 0 = the whole
5,000). Prints, per protocol, the paired difference to (bn 0, bank 0) in points: mean,
95% interval, largest absolute difference, and the images one evaluation embeds (the
test split once, without the train-mode pass). Writes the per-checkpoint accuracies as
JSON to `--out`.

    python benchmarks/eval_protocol.py --out /tmp/eval_protocol.json   # ~8 min on 2 cores
    python benchmarks/eval_protocol.py --quick                          # smoke test
"""

import argparse
import copy
import json
import os
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")

BN_CHOICES = (512, 1024, 2048, 0)
BANK_CHOICES = (1000, 2000, 3000, 4000, 0)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--runs", default="simclr:default:0,simclr:cut3_all:0,simsiam:default:0",
                  help="method:arm:seed, comma-separated (arms of the two comparison configs)")
  ap.add_argument("--out", default="", help="JSON of every checkpoint's accuracies")
  ap.add_argument("--quick", action="store_true", help="one tiny run: smoke test")
  return ap.parse_args(argv)


def run_config(method: str, arm: str, seed: int, *, quick: bool):
  from jnorm import jobs
  if method == "simclr":
    cmp = jobs.load_config_file(os.path.join(CONFIG_DIR, "compare_fmnist.py"))
  else:
    cmp = jobs.load_config_file(os.path.join(CONFIG_DIR, "compare_fmnist_siamese.py"), method)
  from jnorm.jobs import variants
  config = variants.apply_overrides(cmp.base, cmp.variants[arm], where=f"variants.{arm}")
  config.seed = seed
  config.eval.every_epochs = 0  # evaluations happen here, on the checkpoints
  if quick:
    config.data.train_per_class, config.data.test_per_class = 40, 20
    config.num_epochs = 2.0
  config.checkpoint_every_steps = 39 if not quick else 6
  config.keep_checkpoints = 100
  return config


def checkpoint_accuracies(config, workdir: str, bn_choices, bank_choices) -> list:
  """[{step, acc: {"bn,bank": accuracy}}] for every checkpoint of the run in `workdir`."""
  import jax
  import numpy as np
  from jnorm import data
  from jnorm import probes
  from jnorm.training import build
  from jnorm.training import checkpoint as ckpt_lib
  from jnorm.training import evaluation
  with open(os.path.join(workdir, "config.json")) as f:
    from jnorm.training import config as train_config
    _, run_info = train_config.from_saved(json.load(f))
  ds = data.load_dataset(config.data)
  run = build.build_run(config, mesh=None, **run_info)
  target = jax.device_get(run.init_state())
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  ecfg = copy.deepcopy(config.eval)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  out = []
  for step in steps:
    state = checkpointer.restore(step, target)
    acc = {}
    for bn in bn_choices:
      ecfg.bn_images = bn
      variables = evaluation.eval_variables(evaluator, state, ds, ecfg)
      feats = {split: probes.extract_features(
          None, variables, evaluation.split_batches(ds, split, ecfg.batch_size),
          embed_fn=evaluator.embed) for split in ("train", "test")}
      for bank in bank_choices:
        rows = evaluation.stratified_subset(ds.train.labels, bank, num_classes=ds.num_classes)
        acc[f"{bn},{bank}"] = probes.knn_accuracy(
            feats["train"]["backbone"][rows], feats["train"]["label"][rows],
            feats["test"]["backbone"], feats["test"]["label"], num_classes=ds.num_classes,
            k=ecfg.knn_k, temperature=ecfg.knn_temperature)
    out.append({"step": int(step), "acc": acc})
    print(f"  step {step}: whole-split kNN {acc['0,0']:.4f}", flush=True)
  checkpointer.close()
  return out, len(ds.train), len(ds.test)


def summarize(records, bn_choices, bank_choices, num_train: int, num_test: int) -> list:
  from jnorm import stats
  rows = []
  for bn in bn_choices:
    for bank in bank_choices:
      key = f"{bn},{bank}"
      diffs = [100 * (r["acc"][key] - r["acc"]["0,0"]) for r in records]
      d = stats.mean_interval(diffs)
      images = (bn or num_train) + (bank or num_train) + num_test
      rows.append({"bn_images": bn, "bank_images": bank, "mean": d["mean"],
                   "lo": d["lo"], "hi": d["hi"], "n": d["n"],
                   "max_abs": max(abs(x) for x in diffs), "images_embedded": images})
  return rows


def _num(x) -> str:
  return "n/a" if x is None else f"{x:+.2f}"


def main(argv=None):
  args = parse_args(argv)
  from jnorm import cpu
  cpu.enable()
  from jnorm.training import loop
  bn_choices = (8, 0) if args.quick else BN_CHOICES
  bank_choices = (100, 0) if args.quick else BANK_CHOICES
  specs = ["simclr:default:0"] if args.quick else args.runs.split(",")
  records, per_run = [], {}
  for spec in specs:
    method, arm, seed = spec.split(":")
    config = run_config(method, arm, int(seed), quick=args.quick)
    with tempfile.TemporaryDirectory() as workdir:
      print(f"{spec}: training {config.num_epochs:g} epochs", flush=True)
      loop.train_and_evaluate(config, workdir)
      recs, num_train, num_test = checkpoint_accuracies(config, workdir, bn_choices,
                                                        bank_choices)
    per_run[spec] = recs
    records += recs
  rows = summarize(records, bn_choices, bank_choices, num_train, num_test)
  print(f"\n{len(records)} checkpoints; kNN difference to the whole-split protocol, points")
  print("bn_images bank_images  mean [95% interval]   max|diff|  images embedded")
  for r in rows:
    print(f"{r['bn_images'] or 'all':>9} {r['bank_images'] or 'all':>11}  {r['mean']:+.2f} "
          f"[{_num(r['lo'])}, {_num(r['hi'])}]  {r['max_abs']:8.2f}  {r['images_embedded']:>6}")
  result = {"summary": rows, "checkpoints": per_run}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  print(json.dumps({"summary": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
