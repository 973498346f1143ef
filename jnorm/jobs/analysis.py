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
7. density: Spearman rho of the test norms with the 10th-neighbour distance of the
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
from jnorm.data import sources
from jnorm.plots import analysis as plots
from jnorm.plots.figures import save_figure
from jnorm.training import loop
from jnorm.training import metrics

CLASS_FREQUENCY_MODES = ("auto", "on", "off")


def _validate(config: ml_collections.ConfigDict) -> None:
  errors.check_positive("num_buckets", config.num_buckets)
  errors.check_positive("min_bucket_count", config.min_bucket_count)
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


def _bucket_record(stats: dict) -> dict:
  return {"bucket_centre": stats["bucket_centre"].tolist(),
          "value": _nan_to_none(stats["value"]), "count": stats["count"].tolist(),
          "spearman": stats["spearman"]}


def _bucket_stats(norms, per_sample, config) -> dict:
  """Per-bucket mean of `per_sample` and its Spearman rho with the bucket centre."""
  buckets = norm_lib.norm_buckets(norms, num_buckets=config.num_buckets)
  value, count = norm_lib.bucket_mean(buckets, per_sample, num_buckets=config.num_buckets)
  return {"bucket_centre": norm_lib.bucket_centres(config.num_buckets), "value": value,
          "count": count,
          "spearman": norm_lib.bucket_spearman(value, count,
                                               min_count=config.min_bucket_count)}


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
    stats = {"loo_train": _bucket_stats(norm_lib.embedding_norms(x_train), loo, config),
             "train_to_test": _bucket_stats(norm_lib.embedding_norms(x_test), test, config)}
    per_head[head] = {name: _bucket_record(s) for name, s in stats.items()}
    per_head[head]["knn_accuracy_loo_train"] = float(loo.mean())
    per_head[head]["knn_accuracy_test"] = float(test.mean())
    for name, s in stats.items():
      curves[f"{head}, {name.replace('_', ' ')}"] = (s["bucket_centre"], s["value"], s["count"])
  primary = per_head[config.primary_head]
  fig = plots.plot_norm_buckets(curves, ylabel="kNN accuracy", min_count=config.min_bucket_count,
                                title="kNN accuracy per embedding-norm bucket")
  save_figure(fig, workdir, "norm_buckets")
  return {"norm_bucket_spearman": primary["train_to_test"]["spearman"],
          "norm_bucket_spearman_loo": primary["loo_train"]["spearman"],
          "norm_buckets": per_head}


def novelty_section(train_emb, test_emb, seen_test, other_emb, *, config, workdir) -> dict:
  """AUROC of -||z|| for novel classes, train vs test, and another dataset."""
  per_head, out = {}, {}
  for head in config.heads:
    groups = {"train": norm_lib.embedding_norms(train_emb[head]),
              "test (trained classes)": norm_lib.embedding_norms(test_emb[head][seen_test]),
              "test (held-out classes)": norm_lib.embedding_norms(test_emb[head][~seen_test])}
    if other_emb is not None:
      groups[f"other: {config.novelty_other_dataset}"] = norm_lib.embedding_norms(
          other_emb[head])
    seen = groups["test (trained classes)"]
    record = {"mean_norm": {k: (float(v.mean()) if v.size else None)
                            for k, v in groups.items()},
              "auroc_train_vs_test": norm_lib.novelty_auroc(groups["train"], seen)}
    if groups["test (held-out classes)"].size:
      record["auroc_heldout_classes"] = norm_lib.novelty_auroc(
          seen, groups["test (held-out classes)"])
    if other_emb is not None:
      record["auroc_other_dataset"] = norm_lib.novelty_auroc(
          seen, groups[f"other: {config.novelty_other_dataset}"])
    per_head[head] = record
    fig = plots.plot_norm_histograms(groups, title=f"{head} norms: seen vs novel",
                                     xlabel=f"{head} embedding norm")
    save_figure(fig, workdir, f"norm_histogram_{head}")
  primary = per_head[config.primary_head]
  out["novelty"] = per_head
  if "auroc_heldout_classes" in primary:
    out["novelty_auroc"] = primary["auroc_heldout_classes"]
  if "auroc_other_dataset" in primary:
    out["novelty_auroc_other_dataset"] = primary["auroc_other_dataset"]
  return out


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


def _adapt_inputs(x: np.ndarray, input_shape) -> np.ndarray:
  """Images [B, h, w, c] -> the model's [B, H, W, C] (resize; RGB <-> grey by mean / repeat)."""
  if x.ndim != 4 or len(input_shape) != 3:
    return x
  height, width, channels = input_shape
  if x.shape[-1] != channels:
    x = x.mean(axis=-1, keepdims=True) if channels == 1 else np.repeat(
        x[..., :1], channels, axis=-1)
  if x.shape[1:3] != (height, width):
    x = sources.resize_images(x.astype(np.float32), height)
  return x.astype(np.float32)


def _array_batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int):
  for start in range(0, len(inputs), batch_size):
    yield {"input": inputs[start:start + batch_size], "label": labels[start:start + batch_size]}


def other_dataset_embeddings(embed_fn, *, name, input_shape, data_dir, max_examples,
                             batch_size) -> dict:
  """Embeddings of (at most `max_examples` of) another dataset's test split."""
  cfg = {"name": name, "data_dir": data_dir}
  if len(input_shape) == 3:
    cfg["image_size"] = int(input_shape[0])
  other = data.load_dataset(cfg)
  batches = []
  for batch in data.eval_batches(other, split="test", batch_size=batch_size):
    keep = np.asarray(batch["mask"], bool)
    batches.append({"input": _adapt_inputs(np.asarray(batch["input"])[keep], input_shape),
                    "label": np.asarray(batch["label"])[keep]})
    if sum(len(b["label"]) for b in batches) >= max_examples:
      break
  emb = probes.compute_embeddings(embed_fn, batches)
  return {k: v[:max_examples] for k, v in emb.items()}


def human_confidence_section(embed_fn, split_embeddings, *, input_shape, num_classes,
                             config, workdir) -> dict:
  """Annotator agreement and label entropy per norm bucket (docs/paper.md §3.3)."""
  cfg, head = config.human_labels, config.primary_head
  if cfg.name:
    labels = human_labels.load_tfds_human_labels(cfg.name, data_dir=cfg.data_dir,
                                                 limit=cfg.limit)
    inputs = _adapt_inputs(labels.images.astype(np.float32) / 255.0, input_shape)
    feats = probes.compute_embeddings(
        embed_fn, _array_batches(inputs, labels.clean_label, config.batch_size))[head]
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
    other = other_dataset_embeddings(
        embed_fn, name=config.novelty_other_dataset, input_shape=ds.input_shape,
        data_dir=trained_config.data.get("data_dir"),
        max_examples=config.novelty_other_max_examples, batch_size=config.batch_size)
  results.update(novelty_section(embs["train"], embs["test"], seen_test, other,
                                 config=config, workdir=workdir))
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
