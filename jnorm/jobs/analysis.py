"""The "analysis" job: embedding norms as confidence and novelty signals (docs/paper.md §3).

`analysis_job(config, workdir)` takes a finished training run (`config.train_workdir`)
or first trains one into `<workdir>/train` from the embedded `config.train` (with the
classes in `config.novelty_holdout_classes` removed from its train split; a finished
`<workdir>/train` (it has results.json) is reused, so delete it after changing
`config.train`), then:

1. embeds the train and test splits (eval-mode BatchNorm, `jnorm.training.loop.load_trained`);
2. norm buckets per head: kNN accuracy per min-max-normalised norm bucket,
   leave-one-out on the train split and train bank -> test queries of the trained
   classes, and the Spearman rho of accuracy with the bucket centre;
3. novelty: AUROC of -||z|| for test samples of held-out classes vs test samples of the
   trained classes, train vs test, and another dataset (`config.novelty_other_dataset`);
4. class frequency vs mean class norm (long-tailed training data);
5. human confidence (`config.human_labels`): annotator agreement and label entropy per
   norm bucket (CIFAR-10N / 100N / 10H or a label file);
6. norm trajectories over training from `<train_workdir>/metrics.jsonl`;
7. OOD scores (`jnorm.ood`: -‖z‖, kNN distance, Mahalanobis, CSI, max cosine) with
   AUROC and FPR@95 for the held-out classes and `config.ood.far_sets`;
8. density: Spearman rho of the test norms with the 10th-neighbour distance of the
   normalised test embeddings (`density_spearman`; negative: dense regions, large norms).

It writes `results.json` and PNG figures in `workdir` and returns the headline numbers.
"""

import os

import ml_collections
import numpy as np

from jnorm import data
from jnorm import errors
from jnorm import probes
from jnorm import json_files
from jnorm import norms as norm_lib
from jnorm.data import human_labels
from jnorm.jobs import novelty
from jnorm.plots import analysis as plots
from jnorm.plots.figures import save_figure
from jnorm.training import loop
from jnorm.training import metrics

CLASS_FREQUENCY_MODES = ("auto", "on", "off")


def _validate(config: ml_collections.ConfigDict) -> None:
  errors.check_positive("num_buckets", config.num_buckets)
  errors.check_positive("min_bucket_count", config.min_bucket_count)
  errors.check_int("quantile_buckets", config.quantile_buckets, minimum=3)
  errors.check_int("ood.k", config.ood.k, minimum=1)
  errors.check_int("ood.max_examples", config.ood.max_examples, minimum=1)
  errors.check_positive("batch_size", config.batch_size)
  errors.check_positive("knn.k", config.knn.k)
  errors.check_positive("knn.temperature", config.knn.temperature)
  errors.check_choice("class_frequency", config.class_frequency, CLASS_FREQUENCY_MODES)
  errors.check_choice("human_labels.agreement_reference",
                      config.human_labels.agreement_reference, ("clean", "majority"))
  errors.check_choice("human_labels.split", config.human_labels.split, ("train", "test"))
  for head in config.heads:
    errors.check_choice("heads", head, ("backbone", "projector", "predictor"))
  if config.primary_head not in config.heads:
    raise errors.ConfigError(f"config.primary_head={config.primary_head!r} must be one "
                             f"of config.heads={tuple(config.heads)!r}")
  if not config.train_workdir and "train" not in config:
    raise errors.ConfigError("set config.train_workdir to a finished training run, or "
                             "give an embedded training config in config.train")


def _train_first(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains `config.train` into <workdir>/train (held-out classes removed); returns it."""
  train_dir = os.path.join(workdir, "train")
  if os.path.exists(os.path.join(train_dir, "results.json")):
    return train_dir  # finished earlier: re-running the analysis reuses it
  train_config = ml_collections.ConfigDict(config.train.to_dict())  # unlocked copy
  holdout = tuple(int(c) for c in config.novelty_holdout_classes)
  if holdout and train_config.data.get("train_classes") is None:
    num_classes = data.load_dataset(train_config.data).num_classes
    train_config.data.train_classes = tuple(
        c for c in range(num_classes) if c not in holdout)
  loop.train_and_evaluate(train_config, train_dir)
  return train_dir


def _embed_split(embed_fn, ds, split: str, batch_size: int) -> dict:
  return probes.compute_embeddings(
      embed_fn, data.eval_batches(ds, split=split, batch_size=batch_size))


def _nan_to_none(values) -> list:
  return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, float)]


def _as_floats(values) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def _bucket_record(stats: dict) -> dict:
  return {"bucket_centre": stats["bucket_centre"].tolist(),
          "value": _nan_to_none(stats["value"]), "count": stats["count"].tolist(),
          "spearman": stats["spearman"]}


def _bucket_stats(norms, per_sample, config, *, quantile: bool = False) -> dict:
  """Per-bucket mean of `per_sample` and its Spearman rho with the bucket order: the
  paper's min-max-normalised buckets (buckets under `min_bucket_count` left out of rho),
  or `quantile` buckets of equal counts."""
  if quantile:
    num = config.quantile_buckets
    buckets, min_count = norm_lib.quantile_buckets(norms, num_buckets=num), 1
  else:
    num, min_count = config.num_buckets, config.min_bucket_count
    buckets = norm_lib.norm_buckets(norms, num_buckets=num)
  value, count = norm_lib.bucket_mean(buckets, per_sample, num_buckets=num)
  return {"bucket_centre": norm_lib.bucket_centres(num), "value": value, "count": count,
          "spearman": norm_lib.bucket_spearman(value, count, min_count=min_count)}


def norm_bucket_section(train_emb, test_emb, seen_test, *, num_classes, config,
                        workdir) -> dict:
  """kNN accuracy per norm bucket for every head: LOO on train, train -> test (seen)."""
  knn = dict(num_classes=num_classes, k=config.knn.k, temperature=config.knn.temperature)
  per_head, curves = {}, {}
  for head in config.heads:
    x_train, y_train = train_emb[head], train_emb["label"]
    x_test, y_test = test_emb[head][seen_test], test_emb["label"][seen_test]
    loo = norm_lib.knn_correct(x_train, y_train, x_train, y_train, leave_one_out=True, **knn)
    test = norm_lib.knn_correct(x_train, y_train, x_test, y_test, **knn)
    norms_train, norms_test = norm_lib.embedding_norms(x_train), norm_lib.embedding_norms(x_test)
    stats = {"loo_train": _bucket_stats(norms_train, loo, config),
             "train_to_test": _bucket_stats(norms_test, test, config)}
    quantile = {"loo_train": _bucket_stats(norms_train, loo, config, quantile=True),
                "train_to_test": _bucket_stats(norms_test, test, config, quantile=True)}
    per_head[head] = {name: _bucket_record(s) for name, s in stats.items()}
    per_head[head]["quantile"] = {name: _bucket_record(s) for name, s in quantile.items()}
    per_head[head]["knn_accuracy_loo_train"] = float(loo.mean())
    per_head[head]["knn_accuracy_test"] = float(test.mean())
    for name, s in stats.items():
      curves[f"{head}, {name.replace('_', ' ')}"] = (s["bucket_centre"], s["value"], s["count"])
  primary = per_head[config.primary_head]
  fig = plots.plot_norm_buckets(curves, ylabel="kNN accuracy", min_count=config.min_bucket_count,
                                title="kNN accuracy per embedding-norm bucket")
  save_figure(fig, workdir, "norm_buckets")
  fig = plots.plot_norm_buckets(
      {f"{head}, {name.replace('_', ' ')}": (np.asarray(r["bucket_centre"]),
                                              _as_floats(r["value"]), r["count"])
       for head in config.heads for name, r in per_head[head]["quantile"].items()},
      ylabel="kNN accuracy", min_count=1, xlabel="norm quantile (bucket centre; 0 = smallest norms)",
      title="kNN accuracy per equal-count norm bucket")
  save_figure(fig, workdir, "norm_quantile_buckets")
  q = primary["quantile"]["train_to_test"]["value"]
  return {"norm_bucket_spearman": primary["train_to_test"]["spearman"],
          "norm_bucket_spearman_loo": primary["loo_train"]["spearman"],
          "norm_quantile_spearman": primary["quantile"]["train_to_test"]["spearman"],
          "norm_quantile_spearman_loo": primary["quantile"]["loo_train"]["spearman"],
          "norm_quantile_accuracy_lowest": q[0], "norm_quantile_accuracy_highest": q[-1],
          "norm_buckets": per_head}


def class_frequency_section(test_emb, class_counts, *, config, workdir) -> dict:
  """Spearman of training class frequency with the mean test norm per class."""
  counts = np.asarray(class_counts, np.float64)
  labels = test_emb["label"]
  keep = counts[labels] > 0  # classes never trained on have no frequency to rank
  norms = norm_lib.embedding_norms(test_emb[config.primary_head])
  means = norm_lib.class_mean_norms(norms[keep], labels[keep], num_classes=counts.size)
  rho = norm_lib.class_norm_spearman(norms[keep], labels[keep], counts)
  present = counts > 0
  fig = plots.plot_class_norms(counts[present], means[present],
                               title=f"class frequency vs mean {config.primary_head} norm")
  save_figure(fig, workdir, "class_norms")
  return {"class_norm_spearman": rho,
          "class_norms": {"class_counts": counts.tolist(), "mean_norm": _nan_to_none(means)}}


def human_confidence_section(embed_fn, split_embeddings, *, input_shape, num_classes,
                             config, workdir) -> dict:
  """Annotator agreement and label entropy per norm bucket (docs/paper.md §3.3)."""
  cfg, head = config.human_labels, config.primary_head
  if cfg.name:
    labels = human_labels.load_tfds_human_labels(cfg.name, data_dir=cfg.data_dir,
                                                 limit=cfg.limit)
    inputs = novelty.adapt_inputs(labels.images.astype(np.float32) / 255.0, input_shape)
    feats = probes.compute_embeddings(
        embed_fn, novelty.array_batches(inputs, labels.clean_label, config.batch_size))[head]
  else:
    labels = human_labels.load_label_file(cfg.path, num_classes=num_classes)
    emb = split_embeddings[cfg.split]
    if len(labels) != len(emb["label"]):
      raise errors.ConfigError(
          f"config.human_labels.path has {len(labels)} rows but the {cfg.split} split has "
          f"{len(emb['label'])} examples; the file must align with that split's order")
    feats = emb[head]
    if labels.clean_label is None:
      labels.clean_label = emb["label"]
  reference = labels.clean_label if cfg.agreement_reference == "clean" else None
  norms = norm_lib.embedding_norms(feats)
  stats = {"agreement": _bucket_stats(norms, norm_lib.annotator_agreement(
               labels.votes, reference), config),
           "entropy": _bucket_stats(norms, norm_lib.label_entropy(labels.votes), config)}
  source = cfg.name or os.path.basename(cfg.path)
  for name, ylabel in (("agreement", f"annotator agreement with the {cfg.agreement_reference}"
                        " label"), ("entropy", "human label entropy (nats)")):
    s = stats[name]
    fig = plots.plot_norm_buckets({f"{source}, {head}": (s["bucket_centre"], s["value"],
                                                         s["count"])},
                                  ylabel=ylabel, min_count=config.min_bucket_count,
                                  title=f"{source}: human {name} per norm bucket")
    save_figure(fig, workdir, f"human_{name}")
  return {"human_agreement_spearman": stats["agreement"]["spearman"],
          "human_entropy_spearman": stats["entropy"]["spearman"],
          "human_confidence": {"source": source, "num_samples": len(labels),
                               **{k: _bucket_record(s) for k, s in stats.items()}}}


def trajectory_section(train_dir: str, *, config, workdir) -> dict:
  records = metrics.read_metrics(train_dir)
  if not records:
    return {}
  traj = norm_lib.norm_trajectories(records, tuple(config.trajectory_keys))
  if not traj:
    return {"norm_trajectories": {}}
  fig = plots.plot_trajectories(traj, title="embedding norms during training", log_y=True)
  save_figure(fig, workdir, "norm_trajectories")
  return {"norm_trajectories": {k: {"step": s.tolist(), "value": v.tolist()}
                                for k, (s, v) in traj.items()}}


def analysis_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs every analysis configured (module docstring); returns the headline numbers."""
  _validate(config)
  train_dir = config.train_workdir or _train_first(config, workdir)
  trained_config, embed_fn = loop.load_trained(train_dir)
  ds = data.load_dataset(trained_config.data)
  embs = {s: _embed_split(embed_fn, ds, s, config.batch_size) for s in ("train", "test")}
  missing = [h for h in config.heads if h not in embs["train"]]
  if missing:
    raise errors.ConfigError(f"config.heads {missing!r} are not outputs of this model; it "
                             f"has {sorted(k for k in embs['train'] if k != 'label')!r}")
  seen_test = np.isin(embs["test"]["label"], np.unique(embs["train"]["label"]))
  results = {"train_workdir": train_dir, "primary_head": config.primary_head,
             "dataset": ds.info}
  results.update(norm_bucket_section(embs["train"], embs["test"], seen_test,
                                     num_classes=ds.num_classes, config=config,
                                     workdir=workdir))
  other = None
  if config.novelty_other_dataset:
    other = novelty.other_dataset_embeddings(
        embed_fn, name=config.novelty_other_dataset, input_shape=ds.input_shape,
        data_dir=trained_config.data.get("data_dir"),
        max_examples=config.novelty_other_max_examples, batch_size=config.batch_size)
  results.update(novelty.novelty_section(embs["train"], embs["test"], seen_test, other,
                                 config=config, workdir=workdir))
  results.update(novelty.ood_section(embed_fn, embs["train"], embs["test"], seen_test,
                             input_shape=ds.input_shape,
                             data_dir=trained_config.data.get("data_dir"), config=config))
  long_tailed = bool(trained_config.data.get("long_tail_ratio"))
  if config.class_frequency == "on" or (config.class_frequency == "auto" and long_tailed):
    results.update(class_frequency_section(embs["test"], ds.info["class_counts"],
                                           config=config, workdir=workdir))
  if config.human_labels.name or config.human_labels.path:
    results.update(human_confidence_section(
        embed_fn, embs, input_shape=ds.input_shape, num_classes=ds.num_classes,
        config=config, workdir=workdir))
  results.update(trajectory_section(train_dir, config=config, workdir=workdir))
  # Density (docs/paper.md §2.4): norm vs the 10th-neighbour distance of the directions.
  results["density_spearman"] = norm_lib.density_spearman(
      embs["test"][config.primary_head], k=10)
  head = results["norm_buckets"][config.primary_head]
  results["knn_accuracy_test"] = head["knn_accuracy_test"]
  results["knn_accuracy_loo_train"] = head["knn_accuracy_loo_train"]
  json_files.save_results(workdir, results)
  return {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
