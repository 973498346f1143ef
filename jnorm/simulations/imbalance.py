"""Class imbalance and embedding norms: frequent classes end with larger norms.

Draganov et al. (ICML 2025), docs/paper.md §2.3: latent classes with weights 1:2:4:8
(`jnorm.data.synthetic.latent_class_data`), an MLP 64 → 64 → 10 trained with a supervised
InfoNCE in which each sample attracts one random same-class partner (re-drawn every
epoch) and repels the other partners of the batch, temperature 1, plain SGD. Samples of
frequent classes are pulled together more often and collect more gradient steps, so
their embeddings' norms grow more (norm growth, docs/paper.md §1.3).

The loss is `jnorm.losses.infonce_loss` (the reference's one-directional variant): for a
batch x_b and its partners x_p, attraction -mean cos(f(x_b), f(x_p))/t and repulsion
mean_i logsumexp_{j≠i} cos(f(x_b)_i, f(x_p)_j)/t. Gradients flow through both sides.

Pure JAX: one `jax.lax.scan` over epochs (each a scan over batches), `jax.vmap` over
seeds; the whole run is one compiled call.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnorm import losses


PARTNERS = ("dataset", "in_batch")
INITS = ("flax", "torch")


def _torch_bias_init(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def _dense(features: int, fan_in: int, init: str) -> nn.Dense:
  if init == "flax":
    return nn.Dense(features)
  # torch.nn.Linear's default: kernel and bias uniform in ±1/sqrt(fan_in)
  # (kaiming_uniform with a = sqrt(5) is variance scaling 1/3, fan_in, uniform).
  return nn.Dense(features, kernel_init=nn.initializers.variance_scaling(
      1 / 3, "fan_in", "uniform"), bias_init=_torch_bias_init(fan_in))


class MLP(nn.Module):
  """Dense(hidden) → ReLU → Dense(embed_dim); init 'flax' (LeCun normal kernels, zero
  biases) or 'torch' (torch.nn.Linear's uniform ±1/sqrt(fan_in) kernels and biases)."""
  hidden_dim: int = 64
  embed_dim: int = 10
  init_scheme: str = "flax"  # (`init` is a Module method)

  @nn.compact
  def __call__(self, x):
    x = nn.relu(_dense(self.hidden_dim, x.shape[-1], self.init_scheme)(x))
    return _dense(self.embed_dim, self.hidden_dim, self.init_scheme)(x)


def in_batch_supcon_loss(key: jax.Array, z: jax.Array, labels: jax.Array, *,
                         temperature: float) -> jax.Array:
  """Each sample's positive is a random OTHER sample of its class in the same batch; the
  loss is -log softmax over all other samples of the batch (the positive included in
  the denominator, as in SupCon with one positive). Samples whose class has no other
  member in the batch are left out. z: [B, D], labels: [B] -> scalar."""
  zn = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  sims = zn @ zn.T / temperature
  eye = jnp.eye(z.shape[0], dtype=bool)
  same = (labels[:, None] == labels[None, :]) & ~eye
  scores = jnp.where(same, jax.random.uniform(key, sims.shape), -1.0)
  partner = jnp.argmax(scores, axis=1)
  valid = same.any(axis=1)
  log_denominator = jax.nn.logsumexp(jnp.where(eye, -jnp.inf, sims), axis=1)
  per_sample = log_denominator - jnp.take_along_axis(sims, partner[:, None], axis=1)[:, 0]
  return jnp.sum(jnp.where(valid, per_sample, 0.0)) / jnp.maximum(valid.sum(), 1)


def same_class_partners(key: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """For each sample, the index of a uniformly random OTHER sample of its class. [N] int32.

  Sorting by label gives each class a contiguous block [start_c, start_c + count_c); a
  sample at rank r in its block picks rank j ∈ {0..count_c - 2}, shifted past itself.
  Classes with one sample pair the sample with itself.
  """
  n = labels.shape[0]
  order = jnp.argsort(labels, stable=True)
  counts = jnp.bincount(labels, length=num_classes)
  starts = jnp.cumsum(counts) - counts
  rank = jnp.empty((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  rank = rank - starts[labels]
  others = jnp.maximum(counts[labels] - 1, 1)
  j = jax.random.randint(key, (n,), 0, others)
  j = jnp.where((j >= rank) & (counts[labels] > 1), j + 1, j)
  j = jnp.where(counts[labels] > 1, j, rank)
  return order[starts[labels] + j].astype(jnp.int32)


def class_mean_norms(z: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """Mean ‖z_i‖ over the samples of each class. z: [N, D], labels: [N] -> [C]."""
  norms = jnp.linalg.norm(z, axis=-1)
  sums = jax.ops.segment_sum(norms, labels, num_segments=num_classes)
  return sums / jnp.bincount(labels, length=num_classes)


def train_norm_curves(*, key: jax.Array, x: jax.Array, y: jax.Array, num_classes: int,
                      hidden_dim: int = 64, embed_dim: int = 10, lr: float, batch_size: int,
                      num_epochs: int, temperature: float, partner: str = "dataset",
                      init: str = "flax"):
  """Trains the MLP on (x, y) and records the mean embedding norm per class per epoch.

  Each epoch: draw partners, shuffle, run floor(N / batch_size) SGD steps (the last
  partial batch is dropped; every epoch reshuffles, so each sample is still used).

  Args:
    key: init, partner and shuffle randomness (`fold_in(key, epoch)` per epoch).
    x: [N, D] inputs; y: [N] int32 labels in [0, num_classes).
    partner: 'dataset' (a random same-class partner from the whole data set, drawn each
      epoch, and the one-directional InfoNCE without the positive in the denominator)
      or 'in_batch' (the reference's setting: `in_batch_supcon_loss`).
    init: the MLP's initialisation, 'flax' or 'torch' (see `MLP`).

  Returns:
    norms: [num_epochs + 1, C] mean norm per class (row 0 at initialisation).
    losses: [num_epochs] mean training loss per epoch.
  """
  model = MLP(hidden_dim=hidden_dim, embed_dim=embed_dim, init_scheme=init)
  key_init, key_train = jax.random.split(key)
  params = model.init(key_init, x[:1])
  optimizer = optax.sgd(lr)
  num_batches = x.shape[0] // batch_size

  def loss_fn(params, idx, partners, pair_key):
    if partner == "in_batch":
      return in_batch_supcon_loss(pair_key, model.apply(params, x[idx]), y[idx],
                                  temperature=temperature)
    return losses.infonce_loss(model.apply(params, x[idx]),
                               model.apply(params, x[partners[idx]]),
                               temperature=temperature)

  def sgd_step(carry, batch):
    params, opt_state, partners, key_partner = carry
    idx, number = batch
    loss, grads = jax.value_and_grad(loss_fn)(params, idx, partners,
                                              jax.random.fold_in(key_partner, number))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, partners, key_partner), loss

  def epoch(carry, epoch_index):
    params, opt_state = carry
    key_partner, key_perm = jax.random.split(jax.random.fold_in(key_train, epoch_index))
    partners = same_class_partners(key_partner, y, num_classes=num_classes)
    perm = jax.random.permutation(key_perm, x.shape[0])[:num_batches * batch_size]
    (params, opt_state, _, _), batch_losses = jax.lax.scan(
        sgd_step, (params, opt_state, partners, key_partner),
        (perm.reshape(num_batches, batch_size), jnp.arange(num_batches)))
    norms = class_mean_norms(model.apply(params, x), y, num_classes=num_classes)
    return (params, opt_state), (norms, jnp.mean(batch_losses))

  init_norms = class_mean_norms(model.apply(params, x), y, num_classes=num_classes)
  _, (norms, epoch_losses) = jax.lax.scan(
      epoch, (params, optimizer.init(params)), jnp.arange(num_epochs))
  return jnp.concatenate([init_norms[None], norms], axis=0), epoch_losses


def imbalance_norm_curves(*, seeds: Sequence[int], xs: np.ndarray, ys: np.ndarray,
                          num_classes: int, **train_kwargs):
  """`train_norm_curves` for each seed, vmapped over seeds (one compiled call).

  xs: [S, N, D], ys: [S, N] (one data set per seed). Returns norms [S, E + 1, C] and
  losses [S, E].
  """
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))

  def run(key, x, y):
    return train_norm_curves(key=key, x=x, y=y, num_classes=num_classes, **train_kwargs)

  return jax.jit(jax.vmap(run))(keys, jnp.asarray(xs), jnp.asarray(ys))
