"""The analysis job's novelty sections (jnorm/jobs/analysis.py): -‖z‖ for unseen samples,
and norms against standard OOD scores (`jnorm.ood`) on held-out classes and other data."""

import numpy as np

from jnorm import data
from jnorm import norms as norm_lib
from jnorm import ood
from jnorm import probes
from jnorm.data import sources
from jnorm.plots import analysis as plots
from jnorm.plots.figures import save_figure


def adapt_inputs(x: np.ndarray, input_shape) -> np.ndarray:
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


def array_batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int):
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
    batches.append({"input": adapt_inputs(np.asarray(batch["input"])[keep], input_shape),
                    "label": np.asarray(batch["label"])[keep]})
    if sum(len(b["label"]) for b in batches) >= max_examples:
      break
  emb = probes.compute_embeddings(embed_fn, batches)
  return {k: v[:max_examples] for k, v in emb.items()}


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


def ood_section(embed_fn, train_emb, test_emb, seen_test, *, input_shape, data_dir,
                config) -> dict:
  """AUROC and FPR@95 of every `jnorm.ood` score: the test images of the trained classes
  (ID) against those of the held-out classes ('near') and each of `config.ood.far_sets`.

  Returns {'ood': {set: {score: {'auroc', 'fpr95'}}}, 'ood_<metric>_<set>_<score>': ...}.
  """
  sets = {}
  if (~seen_test).any():
    sets["near"] = {k: v[~seen_test] for k, v in test_emb.items()}
  for name in config.ood.far_sets:
    if name == "uniform_noise":
      x = ood.uniform_noise_images(config.ood.max_examples, input_shape)
      sets[name] = probes.compute_embeddings(
          embed_fn, array_batches(x, np.zeros(len(x), np.int32), config.batch_size))
    else:
      sets[name] = other_dataset_embeddings(
          embed_fn, name=name, input_shape=input_shape, data_dir=data_dir,
          max_examples=config.ood.max_examples, batch_size=config.batch_size)
  if not sets:
    return {}
  id_scores = ood.scores(train_emb, {k: v[seen_test] for k, v in test_emb.items()},
                         k=config.ood.k)
  per_set = {name: ood.evaluate(id_scores, ood.scores(train_emb, emb, k=config.ood.k))
             for name, emb in sets.items()}
  flat = {f"ood_{metric}_{name}_{score}": value
          for name, per_score in per_set.items() for score, m in per_score.items()
          for metric, value in m.items()}
  return {"ood": per_set, **flat}
