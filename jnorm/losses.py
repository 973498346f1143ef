"""Self-supervised losses on embeddings, each with a closed-form gradient.

Every loss is a pure function of embeddings `[N, D]` (row i of `z1` and row i of `z2`
are two views of sample i) with keyword-only hyperparameters. Each `X_loss` has an
`X_grad` that takes the same arguments and returns the gradients with respect to the
differentiated inputs, written from the formulas rather than with autodiff, so the tests
can check the theory of Draganov et al. (2025), Sec. 3, against `jax.grad`.

All of them depend on an embedding z only through its direction z/‖z‖, so all of their
gradients go through one map, `normalize_vjp`:

  d<z/‖z‖, g>/dz = (I - ẑ ẑᵀ) g / ‖z‖,

which is orthogonal to z and scales as 1/‖z‖ (e.g. ∇_z cos(z, w) = (I - ẑẑᵀ) ŵ / ‖z‖,
whose size is sin θ / ‖z‖).

Behaviour at z = 0 (the eps clamp). The normalisation is z / max(‖z‖, eps). For
‖z‖ < eps (z = 0 included) it is the linear map z / eps, so a zero row has cosine 0 with
everything, and its gradient is g / eps: finite, no NaN, and equal to what `jax.grad`
returns (the norm is computed as sqrt(max(‖z‖², eps²)) so autodiff never evaluates the
derivative of sqrt at 0). At exactly ‖z‖ = eps autodiff averages the two branches;
that measure-zero tie is the only place the closed forms and `jax.grad` differ.

References:
  Draganov et al., "On the Importance of Embedding Norms in Self-Supervised Learning",
  ICML 2025, arXiv 2502.09252.
  Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations" (SimCLR), ICML 2020, arXiv 2002.05709.
  Chen & He, "Exploring Simple Siamese Representation Learning" (SimSiam), CVPR 2021.
  Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jnorm.errors import ConfigError

DEFAULT_EPS = 1e-8
# Similarity matrices are N x N x D: cheap, so compute them in full float32 even where
# the default matmul precision is lower (TPU bf16 passes, GPU TF32).
_PRECISION = jax.lax.Precision.HIGHEST


def _check_pair(z1, z2, *, min_rows: int = 1, names=("z1", "z2")) -> None:
  """Raises ValueError unless z1, z2 are [N, D] arrays of one shape with N >= min_rows."""
  if z1.ndim != 2 or z1.shape != z2.shape:
    raise ValueError(f"{names[0]} and {names[1]} must both be [N, D] with the same shape, "
                     f"got {z1.shape} and {z2.shape}")
  if z1.shape[0] < min_rows:
    raise ValueError(f"this loss needs a batch of at least {min_rows} rows (negatives "
                     f"come from the other rows), got N={z1.shape[0]}")


def _clamped_norm(z: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  """Returns (max(‖z‖, eps), ‖z‖ > eps), both [..., 1]; NaN-free gradient at z = 0."""
  sq = jnp.sum(z * z, axis=-1, keepdims=True)
  return jnp.sqrt(jnp.maximum(sq, eps**2)), sq > eps**2


def l2_normalize(z: jax.Array, *, eps: float = DEFAULT_EPS) -> jax.Array:
  """z / max(‖z‖, eps) along the last axis. z: [..., D] -> [..., D]."""
  return z / _clamped_norm(z, eps)[0]


def normalize_vjp(z: jax.Array, g: jax.Array, *, eps: float = DEFAULT_EPS) -> jax.Array:
  """Pulls a cotangent on ẑ = l2_normalize(z) back to z (the cosine Jacobian product).

  Args:
    z: [..., D] embeddings.
    g: [..., D] cotangent dL/dẑ.
    eps: the clamp of `l2_normalize`.

  Returns:
    [..., D] dL/dz = (g - ẑ (ẑ·g)) / ‖z‖ per row; g / eps where ‖z‖ <= eps (the
    normalisation is linear there; see the module docstring).
  """
  norm, above = _clamped_norm(z, eps)
  zhat = z / norm
  radial = jnp.where(above, jnp.sum(zhat * g, axis=-1, keepdims=True), 0.0)
  return (g - radial * zhat) / norm


def cosine_similarity(a: jax.Array, b: jax.Array, *, eps: float = DEFAULT_EPS) -> jax.Array:
  """Row-wise cosine similarity. a, b: [..., D] -> [...]."""
  return jnp.sum(l2_normalize(a, eps=eps) * l2_normalize(b, eps=eps), axis=-1)


def cosine_similarity_grad(a: jax.Array, b: jax.Array, *,
                           eps: float = DEFAULT_EPS) -> tuple[jax.Array, jax.Array]:
  """Row i of each output is ∇ cos(a_i, b_i) w.r.t. a_i (resp. b_i); [..., D] each.

  ∇_a cos(a, b) = (I - ââᵀ) b̂ / ‖a‖: orthogonal to a, of size sin θ / ‖a‖.
  """
  return (normalize_vjp(a, l2_normalize(b, eps=eps), eps=eps),
          normalize_vjp(b, l2_normalize(a, eps=eps), eps=eps))


def _offdiag_logits(u: jax.Array, v: jax.Array, temperature) -> jax.Array:
  """[N, N] logits u_i·v_j / t with the diagonal set to -inf (left out of softmaxes)."""
  logits = jnp.matmul(u, v.T, precision=_PRECISION) / temperature
  return jnp.where(jnp.eye(u.shape[0], dtype=bool), -jnp.inf, logits)


# Cotangents dL/dû, dL/dv̂ on the normalised embeddings; the `_grad` functions pull them
# back through `normalize_vjp`.
def _attraction_cotangents(u, v, temperature):
  scale = -1.0 / (u.shape[0] * temperature)
  return scale * v, scale * u


def _repulsion_cotangents(u, v, temperature):
  p = jax.nn.softmax(_offdiag_logits(u, v, temperature), axis=1)  # [N, N], p_ii = 0
  scale = 1.0 / (u.shape[0] * temperature)
  return (scale * jnp.matmul(p, v, precision=_PRECISION),
          scale * jnp.matmul(p.T, u, precision=_PRECISION))


def _pull_back(z1, z2, cotangents, eps):
  return normalize_vjp(z1, cotangents[0], eps=eps), normalize_vjp(z2, cotangents[1], eps=eps)


def attraction_loss(z1: jax.Array, z2: jax.Array, *, temperature,
                    eps: float = DEFAULT_EPS) -> jax.Array:
  """-mean_i cos(z1_i, z2_i) / t: the positive-pair term of the reference's InfoNCE.

  Args:
    z1, z2: [N, D] embeddings of two views.
    temperature: t > 0.
    eps: norm clamp (module docstring).

  Returns:
    Scalar loss.
  """
  _check_pair(z1, z2)
  return -jnp.mean(cosine_similarity(z1, z2, eps=eps)) / temperature


def attraction_grad(z1, z2, *, temperature, eps: float = DEFAULT_EPS):
  """Closed-form (dL/dz1, dL/dz2) of `attraction_loss`, [N, D] each."""
  _check_pair(z1, z2)
  u, v = l2_normalize(z1, eps=eps), l2_normalize(z2, eps=eps)
  return _pull_back(z1, z2, _attraction_cotangents(u, v, temperature), eps)


def repulsion_loss(z1: jax.Array, z2: jax.Array, *, temperature,
                   eps: float = DEFAULT_EPS) -> jax.Array:
  """mean_i log Σ_{j≠i} exp(cos(z1_i, z2_j) / t): the reference's negative-pair term.

  Only cross-view negatives count and the positive j = i is left out (docs/paper.md §5.1).

  Args:
    z1, z2: [N, D] embeddings of two views, N >= 2.
    temperature: t > 0.
    eps: norm clamp (module docstring).

  Returns:
    Scalar loss, computed with logsumexp (stable for large |cos / t|).
  """
  _check_pair(z1, z2, min_rows=2)
  u, v = l2_normalize(z1, eps=eps), l2_normalize(z2, eps=eps)
  return jnp.mean(jax.nn.logsumexp(_offdiag_logits(u, v, temperature), axis=1))


def repulsion_grad(z1, z2, *, temperature, eps: float = DEFAULT_EPS):
  """Closed-form (dL/dz1, dL/dz2) of `repulsion_loss`, [N, D] each.

  With P the row softmax of the off-diagonal logits, dL/dû = P v̂ / (N t) and
  dL/dv̂ = Pᵀ û / (N t), then pulled back through the normalisation.
  """
  _check_pair(z1, z2, min_rows=2)
  u, v = l2_normalize(z1, eps=eps), l2_normalize(z2, eps=eps)
  return _pull_back(z1, z2, _repulsion_cotangents(u, v, temperature), eps)


def infonce_loss(z1: jax.Array, z2: jax.Array, *, temperature,
                 eps: float = DEFAULT_EPS) -> jax.Array:
  """The reference code's "infonce": attraction_loss + repulsion_loss.

  It is one-directional (anchors come from z1 only), only cross-view negatives count,
  and the positive is NOT in the denominator. This differs from SimCLR's NT-Xent
  (`nt_xent_loss`); it is offered as the faithful mode (docs/paper.md §5.1).

  Args:
    z1, z2: [N, D] embeddings of two views, N >= 2.
    temperature: t > 0 (0.5 in the reference's SimCLR config).
    eps: norm clamp (module docstring).

  Returns:
    Scalar loss.
  """
  _check_pair(z1, z2, min_rows=2)
  u, v = l2_normalize(z1, eps=eps), l2_normalize(z2, eps=eps)
  attraction = -jnp.mean(jnp.sum(u * v, axis=-1)) / temperature
  return attraction + jnp.mean(jax.nn.logsumexp(_offdiag_logits(u, v, temperature), axis=1))


def infonce_grad(z1, z2, *, temperature, eps: float = DEFAULT_EPS):
  """Closed-form (dL/dz1, dL/dz2) of `infonce_loss`, [N, D] each."""
  _check_pair(z1, z2, min_rows=2)
  u, v = l2_normalize(z1, eps=eps), l2_normalize(z2, eps=eps)
  cot = jax.tree.map(jnp.add, _attraction_cotangents(u, v, temperature),
                     _repulsion_cotangents(u, v, temperature))
  return _pull_back(z1, z2, cot, eps)


def nt_xent_loss(z1: jax.Array, z2: jax.Array, *, temperature,
                 eps: float = DEFAULT_EPS) -> jax.Array:
  """SimCLR's NT-Xent over the 2N views (Chen et al. 2020, eq. 1).

  With u = normalised concat(z1, z2) [2N, D], anchor a's positive is its other view
  p(a) = (a + N) mod 2N and
    loss_a = -u_a·u_p(a) / t + log Σ_{b≠a} exp(u_a·u_b / t),
  so both directions count, negatives come from both views, and the positive IS in
  the denominator. Returns mean_a loss_a over the 2N anchors.

  Args:
    z1, z2: [N, D] embeddings of two views.
    temperature: t > 0.
    eps: norm clamp (module docstring).

  Returns:
    Scalar loss.
  """
  _check_pair(z1, z2)
  u = l2_normalize(jnp.concatenate([z1, z2], axis=0), eps=eps)  # [2N, D]
  positive = jnp.sum(u * jnp.roll(u, z1.shape[0], axis=0), axis=-1) / temperature
  return jnp.mean(jax.nn.logsumexp(_offdiag_logits(u, u, temperature), axis=1) - positive)


def nt_xent_grad(z1, z2, *, temperature, eps: float = DEFAULT_EPS):
  """Closed-form (dL/dz1, dL/dz2) of `nt_xent_loss`, [N, D] each.

  With P the row softmax of the off-diagonal [2N, 2N] logits and E the permutation
  a -> p(a) (symmetric), dL/dlogits = (P - E) / 2N, and since the logits are symmetric
  in u, dL/du = ((P + Pᵀ) u - 2 E u) / (2N t).
  """
  _check_pair(z1, z2)
  n = z1.shape[0]
  z = jnp.concatenate([z1, z2], axis=0)
  u = l2_normalize(z, eps=eps)
  p = jax.nn.softmax(_offdiag_logits(u, u, temperature), axis=1)
  cot = (jnp.matmul(p + p.T, u, precision=_PRECISION) - 2.0 * jnp.roll(u, n, axis=0))
  dz = normalize_vjp(z, cot / (2 * n * temperature), eps=eps)
  return dz[:n], dz[n:]


def negative_cosine_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array, *,
                         eps: float = DEFAULT_EPS) -> jax.Array:
  """Symmetric negative cosine of SimSiam / BYOL: -(mean cos(p1, z2) + mean cos(p2, z1)) / 2.

  Args:
    p1, p2: [N, D] predictor outputs of views 1 and 2 (differentiated).
    z1, z2: [N, D] target embeddings of views 1 and 2 (not differentiated).
    eps: norm clamp (module docstring).

  Returns:
    Scalar loss in [-1, 1].
  """
  _check_pair(p1, p2, names=("p1", "p2"))
  _check_pair(z1, z2, names=("z1", "z2"))
  _check_pair(p1, z1, names=("p1", "z1"))
  # stop_gradient: the targets are constants. SimSiam's stop-gradient is what prevents
  # collapse; in BYOL the targets come from the EMA network, which gets no gradient.
  z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  return -(jnp.mean(cosine_similarity(p1, z2, eps=eps))
           + jnp.mean(cosine_similarity(p2, z1, eps=eps))) / 2


def negative_cosine_grad(p1, p2, z1, z2, *, eps: float = DEFAULT_EPS):
  """Closed-form (dL/dp1, dL/dp2) of `negative_cosine_loss`, [N, D] each."""
  _check_pair(p1, p2, names=("p1", "p2"))
  _check_pair(z1, z2, names=("z1", "z2"))
  _check_pair(p1, z1, names=("p1", "z1"))
  scale = -1.0 / (2 * p1.shape[0])
  return (normalize_vjp(p1, scale * l2_normalize(z2, eps=eps), eps=eps),
          normalize_vjp(p2, scale * l2_normalize(z1, eps=eps), eps=eps))


LossFn = Callable[..., jax.Array]
_CONTRASTIVE = {
    "infonce": (infonce_loss, infonce_grad),
    "nt_xent": (nt_xent_loss, nt_xent_grad),
    "attraction": (attraction_loss, attraction_grad),
    "repulsion": (repulsion_loss, repulsion_grad),
}
CONTRASTIVE_LOSSES = tuple(sorted(_CONTRASTIVE))


def _lookup(name: str):
  if name not in _CONTRASTIVE:
    raise ConfigError(f"unknown contrastive loss {name!r}; use one of "
                      f"{list(CONTRASTIVE_LOSSES)} (SimSiam/BYOL use negative_cosine_loss)")
  return _CONTRASTIVE[name]


def get_contrastive_loss(name: str) -> LossFn:
  """The loss `fn(z1, z2, *, temperature)` named "infonce", "nt_xent", "attraction" or
  "repulsion". Raises `ConfigError` (a ValueError) for other names."""
  return _lookup(name)[0]


def get_contrastive_loss_grad(name: str) -> Callable:
  """The closed-form gradient `fn(z1, z2, *, temperature) -> (dz1, dz2)` of a loss."""
  return _lookup(name)[1]
