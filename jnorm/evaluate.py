"""Evaluation of frozen representations: weighted kNN and linear probes.

Pure functions on feature arrays. Features are L2-normalised here, so callers pass raw
backbone or projector outputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


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
                 chunk_size: int = 1024) -> float:
  """Top-1 accuracy of `knn_predict` on labelled queries."""
  preds = knn_predict(bank_features, bank_labels, query_features, num_classes=num_classes,
                      k=k, temperature=temperature, chunk_size=chunk_size)
  return float(np.mean(preds == np.asarray(query_labels)))
