"""Synthetic class-imbalanced data: latent classes on a sphere, seen through a random map.

The class-imbalance simulation of Draganov et al. (ICML 2025, §"Embedding norms and
class imbalance"; docs/paper.md §2.3) draws 4 latent classes on S⁹ with weights 1:2:4:8,
adds Gaussian noise of std 1, and maps the points to 64 dimensions with a random
matrix scaled by 10. This module generates that data, deterministically for a seed.

How a sample is drawn (the reading chosen here, stated because the paper is brief):

1. Structure (a function of `structure_seed` only): one class mean per class, drawn
   uniformly on the unit sphere S^{latent_dim - 1} (a normalised Gaussian vector), and
   an observation matrix `A: [latent_dim, observed_dim]` with i.i.d. N(0, 1/observed_dim)
   entries, so that ‖uA‖ ≈ ‖u‖ (a random near-isometry; deviation note: the paper does
   not give the matrix's entry scale, only the factor 10 applied after it).
2. Samples (a function of `seed`): class counts follow the weights exactly (largest
   remainder rounding of num_samples · w_c / Σw), labels are shuffled; the latent point
   is `mean_y + noise_std · ε` with ε ~ N(0, I_latent) -- the noise is added in the
   ambient latent space and the point is NOT projected back onto the sphere, so with
   noise_std 1 in 10 dimensions a latent point has norm ≈ sqrt(1 + 10).
3. Observation: `x = scale · latent @ A`.

Train and test sets that share the same classes and observation matrix use the same
`structure_seed` and different `seed`s.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def class_counts(*, num_samples: int, class_weights: Sequence[float]) -> np.ndarray:
  """Splits `num_samples` over classes in proportion to `class_weights`.

  Largest-remainder rounding: the counts sum to `num_samples` exactly and each is within
  one of num_samples · w_c / Σw. Returns int64 [C].
  """
  weights = np.asarray(class_weights, dtype=np.float64)
  if weights.ndim != 1 or weights.size == 0 or np.any(weights <= 0):
    raise ValueError(f"class_weights must be a non-empty list of positive numbers, got {class_weights!r}")
  exact = num_samples * weights / weights.sum()
  counts = np.floor(exact).astype(np.int64)
  remainder = num_samples - counts.sum()
  # Ties broken by class index (stable sort), so the result is deterministic.
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:remainder]] += 1
  return counts


def latent_structure(*, structure_seed: int, num_classes: int, latent_dim: int = 10,
                     observed_dim: int = 64):
  """The class means on the unit sphere and the observation matrix of a data set.

  Returns:
    means: [C, latent_dim] float32, unit rows.
    matrix: [latent_dim, observed_dim] float32, entries N(0, 1/observed_dim).
  """
  key_means, key_matrix = jax.random.split(jax.random.key(structure_seed))
  means = jax.random.normal(key_means, (num_classes, latent_dim), jnp.float32)
  means = means / jnp.linalg.norm(means, axis=-1, keepdims=True)
  matrix = jax.random.normal(key_matrix, (latent_dim, observed_dim), jnp.float32)
  matrix = matrix / np.sqrt(observed_dim)
  return np.asarray(means), np.asarray(matrix)


def latent_class_data(*, seed: int, num_samples: int, class_weights: Sequence[float],
                      latent_dim: int = 10, observed_dim: int = 64, noise_std: float = 1.0,
                      scale: float = 10.0, structure_seed: int = 0, return_latent: bool = False):
  """Class-imbalanced samples of latent classes on S^{latent_dim-1}, mapped to observed_dim.

  Args:
    seed: chooses the samples (labels' order and noise); same seed, same arrays.
    num_samples: N, the total number of samples.
    class_weights: relative class frequencies, e.g. (1, 2, 4, 8); class c gets about
      N · w_c / Σw samples (exactly as `class_counts`).
    latent_dim: dimension of the latent space (the class means lie on its unit sphere).
    observed_dim: D, dimension of the observed data.
    noise_std: std of the isotropic Gaussian noise added to the class mean in latent space.
    scale: the factor applied after the observation matrix.
    structure_seed: chooses the class means and the observation matrix; keep it fixed
      (and change `seed`) for train/test splits of one data set.
    return_latent: also return the noisy latent points [N, latent_dim].

  Returns:
    x: [N, D] float32, y: [N] int32 (and latent: [N, latent_dim] float32 if requested).
  """
  counts = class_counts(num_samples=num_samples, class_weights=class_weights)
  means, matrix = latent_structure(structure_seed=structure_seed, num_classes=len(counts),
                                   latent_dim=latent_dim, observed_dim=observed_dim)
  key_perm, key_noise = jax.random.split(jax.random.key(seed))
  labels = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
  labels = np.asarray(jax.random.permutation(key_perm, labels)).astype(np.int32)
  noise = np.asarray(jax.random.normal(key_noise, (num_samples, latent_dim), jnp.float32))
  latent = (means[labels] + noise_std * noise).astype(np.float32)
  x = (scale * latent @ matrix).astype(np.float32)
  if return_latent:
    return x, labels, latent
  return x, labels
