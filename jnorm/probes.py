"""Evaluation of frozen representations: weighted kNN, linear probes, embeddings.

- `knn_predict` / `knn_accuracy`: the reference's weighted kNN monitor (cosine, k=200,
  t=0.1); features are L2-normalised inside, so callers pass raw backbone or
  projector outputs.
- `linear_probe_accuracy`: a linear head trained with optax on frozen features.
- `compute_embeddings` (through an `embed_fn`, e.g. `jnorm.training.loop.load_trained`'s) and
  `extract_features` (through a Flax `apply_fn`, eval- or train-mode BatchNorm): the
  embeddings of a whole split from `jnorm.data.eval_batches`, padded rows dropped.
"""

import functools
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "exclude_self"))
def _knn_chunk_scores(query, bank, bank_labels, query_offset, *, k, temperature,
                      num_classes, exclude_self):
  """Class scores [Q, C] of weighted kNN for one chunk of (normalised) queries."""
  sims = query @ bank.T  # [Q, N] cosine similarities
  if exclude_self:  # leave-one-out: the query is row `query_offset + i` of the bank
    rows = query_offset + jnp.arange(query.shape[0])
    sims = sims.at[jnp.arange(query.shape[0]), rows].set(-jnp.inf)
  top_sims, top_idx = jax.lax.top_k(sims, k)  # [Q, k]
  weights = jnp.exp(top_sims / temperature)
  onehot = jax.nn.one_hot(bank_labels[top_idx], num_classes, dtype=weights.dtype)
  return jnp.einsum("qk,qkc->qc", weights, onehot)


def knn_predict(bank_features, bank_labels, query_features, *, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk_size: int = 1024,
                leave_one_out: bool = False) -> np.ndarray:
  """Weighted kNN on cosine similarity (Wu et al. 2018, as in the reference's monitor).

  Each of the k nearest bank points (by cosine) votes for its label with weight
  exp(cos / temperature); the prediction is the label with the largest total.

  Args:
    bank_features: [N, F] features of the labelled bank (e.g. the train split).
    bank_labels: [N] integer labels in [0, num_classes).
    query_features: [Q, F] features to classify. With `leave_one_out` they must be
      the bank itself, and each point's own vote is removed.
    num_classes: number of classes C.
    k: neighbours (clipped to the bank size, minus one with leave_one_out).
    temperature: weight temperature t.
    chunk_size: queries per device call, so a 50,000-example bank fits in memory.
    leave_one_out: exclude each query from its own neighbours.

  Returns:
    [Q] int32 predicted labels (numpy).
  """
  bank = _normalize(jnp.asarray(bank_features, jnp.float32))
  labels = jnp.asarray(bank_labels, jnp.int32)
  query = _normalize(jnp.asarray(query_features, jnp.float32))
  if leave_one_out and query.shape != bank.shape:
    raise ValueError(f"leave_one_out needs the bank itself as queries; got bank "
                     f"{bank.shape} and queries {query.shape}")
  k = int(min(k, bank.shape[0] - (1 if leave_one_out else 0)))
  preds = []
  for start in range(0, query.shape[0], chunk_size):
    chunk = query[start:start + chunk_size]
    scores = _knn_chunk_scores(chunk, bank, labels, start, k=k, temperature=temperature,
                               num_classes=num_classes, exclude_self=leave_one_out)
    preds.append(np.asarray(jnp.argmax(scores, axis=-1)))
  return np.concatenate(preds).astype(np.int32) if preds else np.zeros([0], np.int32)


def knn_accuracy(bank_features, bank_labels, query_features, query_labels, *,
                 num_classes: int, k: int = 200, temperature: float = 0.1,
                 chunk_size: int = 1024, leave_one_out: bool = False) -> float:
  """Top-1 accuracy of `knn_predict` on labelled queries (see `knn_predict`)."""
  preds = knn_predict(bank_features, bank_labels, query_features, num_classes=num_classes,
                      k=k, temperature=temperature, chunk_size=chunk_size,
                      leave_one_out=leave_one_out)
  return float(np.mean(preds == np.asarray(query_labels)))


# ---------------------------------------------------------------------------------------
# Linear probe.


def _standardize(train: np.ndarray, test: np.ndarray):
  """z-scores both splits with the train split's per-feature mean and std."""
  mean = train.mean(axis=0, keepdims=True)
  std = train.std(axis=0, keepdims=True)
  std = np.where(std > 1e-8, std, 1.0)  # constant features (dead ReLUs) stay at zero
  return (train - mean) / std, (test - mean) / std


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _fit_linear_head(key, x, y, *, num_classes, epochs, batch_size, learning_rate,
                     weight_decay):
  """Trains a linear head `x @ w + b` with AdamW on softmax cross-entropy.

  x: [N, F] float32, y: [N] int32. Each epoch visits a fresh permutation in
  `N // batch_size` full batches (the remainder, < one batch, is skipped that epoch).
  Returns the params {'w': [F, C], 'b': [C]}.
  """
  num_examples, num_features = x.shape
  steps_per_epoch = num_examples // batch_size
  params = {"w": jnp.zeros([num_features, num_classes], x.dtype),
            "b": jnp.zeros([num_classes], x.dtype)}
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  # Decoupled weight decay on the weights only (a bias needs no shrinkage).
  tx = optax.adamw(schedule, weight_decay=weight_decay,
                   mask={"w": True, "b": False})
  opt_state = tx.init(params)

  def loss_fn(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, idx):
    p, s = carry
    grads = jax.grad(loss_fn)(p, x[idx], y[idx])
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), None

  def epoch(e, carry):
    perm = jax.random.permutation(jax.random.fold_in(key, e), num_examples)
    idx = perm[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    carry, _ = jax.lax.scan(step, carry, idx)
    return carry

  params, _ = jax.lax.fori_loop(0, epochs, epoch, (params, opt_state))
  return params


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, *,
                          num_classes: int, epochs: int = 100,
                          learning_rate: float = 1e-2, batch_size: int = 256,
                          weight_decay: float = 0.0, seed: int = 0,
                          standardize: bool = True) -> float:
  """Top-1 test accuracy of a linear classifier trained on frozen features.

  The head (weights and bias, zero-initialised) is trained with AdamW (optax) on the
  softmax cross-entropy, minibatches of `batch_size` reshuffled every epoch from
  `seed`, learning rate cosine-decayed to zero over all steps, the whole fit in one
  jitted `fori_loop`. Features are standardised with the train split's per-feature
  mean and std unless `standardize=False`: this makes one learning rate work for
  backbone features of any scale (embedding norms grow during SSL training, see
  docs/paper.md §1.3) and does not change which linear classifiers exist.
  Deviation from the reference: its probe is a torch `nn.Linear` trained with SGD on
  features extracted on the fly; here the features are extracted once (eval-mode
  BatchNorm, see `extract_features`) and the head is fit on the stored arrays.

  Args:
    train_features: [N, F] features of the labelled training split.
    train_labels: [N] integer labels in [0, num_classes).
    test_features: [Q, F] features to score.
    test_labels: [Q] integer labels.
    num_classes: number of classes C.
    epochs: passes over the training split.
    learning_rate: peak AdamW learning rate.
    batch_size: minibatch size (clipped to N).
    weight_decay: decoupled weight decay on the weights (not the bias).
    seed: seed of the minibatch order.
    standardize: z-score features with the train statistics.

  Returns:
    Top-1 accuracy on the test split, a Python float in [0, 1].
  """
  x_train = np.asarray(train_features, np.float32)
  x_test = np.asarray(test_features, np.float32)
  y_train = np.asarray(train_labels, np.int32)
  if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
    raise ValueError(f"features must be [N, F] and [Q, F]; got {x_train.shape} and "
                     f"{x_test.shape}")
  if x_train.shape[0] != y_train.shape[0] or x_train.shape[0] == 0:
    raise ValueError(f"{x_train.shape[0]} train features but {y_train.shape[0]} labels")
  if standardize:
    x_train, x_test = _standardize(x_train, x_test)
  batch_size = int(min(batch_size, x_train.shape[0]))
  params = _fit_linear_head(jax.random.key(seed), jnp.asarray(x_train),
                            jnp.asarray(y_train), num_classes=num_classes,
                            epochs=int(epochs), batch_size=batch_size,
                            learning_rate=learning_rate, weight_decay=weight_decay)
  logits = jnp.asarray(x_test) @ params["w"] + params["b"]
  preds = np.asarray(jnp.argmax(logits, axis=-1))
  return float(np.mean(preds == np.asarray(test_labels)))


# ---------------------------------------------------------------------------------------
# Embeddings of a whole split.


def compute_embeddings(embed_fn: Callable[[np.ndarray], Mapping[str, Any]],
                       batches: Iterable[Mapping[str, np.ndarray]]) -> dict:
  """Runs `embed_fn` over every batch of a split and drops the padded rows.

  Args:
    embed_fn: inputs [B, ...] -> dict of arrays [B, F_head] (e.g. `jnorm.training.loop.
      load_trained`'s, with 'backbone', 'projector' and maybe 'predictor').
    batches: iterable of {'input': [B, ...], 'label': [B], 'mask': [B] bool}, as
      `jnorm.data.eval_batches` yields (every example once, last batch padded). A
      batch without 'mask' counts as all valid.

  Returns:
    {head: [N, F_head] float32 numpy for every head, 'label': [N] int32}, rows in
    the order of the batches.
  """
  outputs, labels = {}, []
  for batch in batches:
    inputs = np.asarray(batch["input"])
    mask = np.asarray(batch.get("mask", np.ones(inputs.shape[0], bool)), bool)
    embeddings = embed_fn(inputs)
    for name, value in embeddings.items():
      outputs.setdefault(name, []).append(np.asarray(value, np.float32)[mask])
    labels.append(np.asarray(batch["label"], np.int32)[mask])
  if not labels:
    raise ValueError("compute_embeddings got no batches; the split is empty")
  result = {name: np.concatenate(parts) for name, parts in outputs.items()}
  result["label"] = np.concatenate(labels)
  return result


def make_embed_fn(apply_fn: Callable[..., Any], *, train_mode_bn: bool = False) -> Callable:
  """Jitted (variables, inputs [B, ...]) -> {head: [B, F] float32} of an SSL net.

  train_mode_bn=False runs BatchNorm in eval mode with the statistics in `variables`;
  True normalises each batch with its own statistics (the statistics are NOT updated),
  which is what the reference's kNN monitor effectively does when it embeds with the
  model left in train mode. Build it once per network: every call of the result reuses
  the compiled function.
  """
  def embed(variables, inputs):
    if train_mode_bn:
      out, _ = apply_fn(variables, inputs, train=True, mutable=["batch_stats"])
    else:
      out = apply_fn(variables, inputs, train=False)
    return {k: v.astype(jnp.float32) for k, v in out.items()}
  return jax.jit(embed)


def extract_features(apply_fn: Callable[..., Any], variables: Mapping[str, Any],
                     batches: Iterable[Mapping[str, np.ndarray]], *,
                     train_mode_bn: bool = False, embed_fn: Callable = None) -> dict:
  """Embeddings of a split straight from a Flax model (no `load_trained` needed).

  Args:
    apply_fn: `net.apply` of an SSL net: `apply_fn(variables, x, train=...)` returns a
      dict of heads, with `mutable=['batch_stats']` also the updated statistics.
    variables: {'params': ..., 'batch_stats': ...}.
    batches: as in `compute_embeddings`.
    train_mode_bn: see `make_embed_fn`. With True, features depend on the batch
      composition, and the padded rows of the last batch enter its statistics: use a
      batch size that divides the split, or accept that small difference.
    embed_fn: a `make_embed_fn(apply_fn, train_mode_bn=...)` result to reuse (saves a
      compilation when called repeatedly); built here when None.

  Returns:
    As `compute_embeddings`.
  """
  embed = embed_fn or make_embed_fn(apply_fn, train_mode_bn=train_mode_bn)
  return compute_embeddings(lambda x: jax.device_get(embed(variables, x)), batches)


def make_batch_moments_fn(apply_fn: Callable[..., Any], *, momentum: float = 0.9) -> Callable:
  """Jitted (variables, inputs) -> each BatchNorm's batch mean and biased variance, in
  the structure of 'batch_stats' (recovered from one running-average update started at
  zero: new = (1 - momentum) * batch value)."""
  def moments(variables, inputs):
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    _, mutated = apply_fn({"params": variables["params"], "batch_stats": zeros}, inputs,
                          train=True, mutable=["batch_stats"])
    return jax.tree.map(lambda v: v / (1.0 - momentum), mutated["batch_stats"])
  return jax.jit(moments)


def reestimate_batch_stats(apply_fn: Callable[..., Any], variables: Mapping[str, Any],
                           batches: Iterable[Mapping[str, np.ndarray]], *,
                           momentum: float = 0.9, moments_fn: Callable = None) -> Any:
  """BatchNorm statistics of the CURRENT weights, re-estimated on `batches`.

  Early in training the running statistics still hold much of their initial values
  (mean 0, variance 1: after 10 steps at momentum 0.9, 35% of the running variance is
  the initial 1), so an eval-mode network describes weights that no longer exist, and a
  cut network (activation variances far below 1) more wrongly than a default one. This
  recomputes them as "precise BatchNorm" does: every batch goes through the network in
  train mode (each layer normalised by its batch statistics), and each BatchNorm's batch
  mean and variance are averaged over the batches with equal weights.

  Args:
    apply_fn: `net.apply` of a network whose BatchNorm layers have no mesh axis
      (`bn_axis_name` None) and use running-average decay `momentum`.
    variables: {'params', 'batch_stats'}; only the structure of 'batch_stats' is used.
    batches: {'input': [B, ...], optionally 'mask': [B]}; batches with padded rows are
      skipped (padding would enter the statistics) unless no full batch exists.
    momentum: the BatchNorm running-average decay of the network.
    moments_fn: a `make_batch_moments_fn` result to reuse; built here when None.

  Returns:
    A 'batch_stats' collection (numpy) with the structure of variables['batch_stats'].
  """
  moments_fn = moments_fn or make_batch_moments_fn(apply_fn, momentum=momentum)
  full, partial = [], []
  for batch in batches:
    mask = np.asarray(batch.get("mask", np.ones(len(batch["input"]), bool)), bool)
    (full if mask.all() else partial).append(np.asarray(batch["input"])[mask])
  inputs = full or partial
  if not inputs:
    raise ValueError("reestimate_batch_stats got no batches; the split is empty")
  total = None
  for x in inputs:
    m = moments_fn(variables, x)
    total = m if total is None else jax.tree.map(jnp.add, total, m)
  return jax.tree.map(lambda t: np.asarray(t / len(inputs)), total)
