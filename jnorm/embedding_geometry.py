"""Where an embedding's norm comes from: its shared mean, its spread, and how many
directions the spread uses.

For embeddings z_i (rows of Z) with mean m, E‖z‖² = ‖m‖² + E‖z − m‖²: the mean norm of a
set of embeddings changes through the norm of their common centroid (large at
initialisation, where ReLU features all point into one orthant) or through their spread
around it. The participation ratio (Σλ)² / Σλ² of the spread's covariance eigenvalues λ
counts the directions it uses: a linear map of fixed Frobenius norm has a smaller gain
on inputs spread over more directions than on inputs along its top singular vectors.
`jnorm.jobs.geometry` follows these through a run's checkpoints.
"""

from flax import traverse_util
import numpy as np


def norm_decomposition(embeddings) -> dict:
  """{'mean_norm', 'centroid_norm', 'centred_rms', 'participation_ratio'} of [N, d]
  embeddings (N >= 2): mean ‖z_i‖, ‖mean z‖, sqrt(mean ‖z_i − mean z‖²), and the
  participation ratio of the centred covariance (1 ... d)."""
  z = np.asarray(embeddings, np.float64)
  centre = z.mean(axis=0)
  centred = z - centre
  eig = np.clip(np.linalg.eigvalsh(centred.T @ centred / len(z)), 0.0, None)
  total = eig.sum()
  return {"mean_norm": float(np.linalg.norm(z, axis=1).mean()),
          "centroid_norm": float(np.linalg.norm(centre)),
          "centred_rms": float(np.sqrt((centred ** 2).sum(axis=1).mean())),
          "participation_ratio": float(total ** 2 / (eig ** 2).sum()) if total > 0 else 0.0}


def kernel_norms(params: dict) -> dict:
  """{'<module>/<layer>': Frobenius norm of its 'kernel'} for every Dense/Conv kernel
  in a (nested) Flax parameter dict."""
  flat = traverse_util.flatten_dict(params, sep="/")
  return {path[:-len("/kernel")]: float(np.linalg.norm(np.asarray(value)))
          for path, value in flat.items() if path.endswith("/kernel")}
