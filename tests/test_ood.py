"""jnorm.ood: each score against a direct computation, OpenOOD's metrics by hand, and
the OOD table over seeds."""

import os

import numpy as np
import pytest
import scipy.spatial.distance

from jnorm import ood


def _emb(rng, n, scale=1.0, shift=0.0):
  """Gaussian features, scaled by `scale`, then moved by `shift` along the first axis."""
  out = {}
  for head, dim in (("backbone", 6), ("projector", 4)):
    x = rng.normal(size=(n, dim)) * scale
    x[:, 0] += shift
    out[head] = x
  return out


def test_scores_match_direct_computations():
  rng = np.random.default_rng(0)
  bank, query = _emb(rng, 40), _emb(rng, 7)
  s = ood.scores(bank, query, k=3)
  assert set(s) == set(ood.SCORES)
  np.testing.assert_allclose(s["neg_norm_projector"], -np.linalg.norm(query["projector"], axis=1))
  np.testing.assert_allclose(s["neg_norm_backbone"], -np.linalg.norm(query["backbone"], axis=1))
  cos_b = 1 - scipy.spatial.distance.cdist(query["backbone"], bank["backbone"], "cosine")
  np.testing.assert_allclose(s["knn_distance"], 1 - np.sort(cos_b, axis=1)[:, -3], atol=1e-12)
  cos_p = 1 - scipy.spatial.distance.cdist(query["projector"], bank["projector"], "cosine")
  np.testing.assert_allclose(s["max_cosine"], -cos_p.max(axis=1), atol=1e-12)
  np.testing.assert_allclose(s["csi"], -np.linalg.norm(query["projector"], axis=1)
                             * cos_p.max(axis=1), atol=1e-12)
  # Mahalanobis against the bank's shrunk covariance of the unit vectors.
  import sklearn.covariance
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  lw = sklearn.covariance.LedoitWolf().fit(unit(bank["backbone"]))
  d = unit(query["backbone"]) - lw.location_
  expected = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(lw.covariance_), d))
  np.testing.assert_allclose(s["mahalanobis"], expected, rtol=1e-6)


def test_auroc_and_fpr95_by_hand():
  ident = np.arange(100, dtype=float)  # ID novelty scores 0..99
  assert ood.auroc(ident, ident + 1000) == 1.0
  assert ood.auroc(ident, ident - 1000) == 0.0
  assert ood.auroc([0.0, 1.0], [0.5]) == 0.5
  # 95% of ID accepted: threshold 95 (the 96th of 100 values); OOD at or below it pass.
  assert ood.fpr_at_95_tpr(ident, np.array([10.0, 95.0, 96.0, 200.0])) == 0.5
  assert ood.fpr_at_95_tpr(ident, ident + 1000) == 0.0


def test_evaluate_separates_a_shifted_set_and_the_table_reports_it():
  rng = np.random.default_rng(1)
  # ID directions near +e1; the far set's near -e1, with larger norms.
  bank, ident = _emb(rng, 200, shift=3.0), _emb(rng, 100, shift=3.0)
  far = _emb(rng, 100, scale=2.0, shift=-6.0)
  id_scores = ood.scores(bank, ident)
  result = ood.evaluate(id_scores, ood.scores(bank, far))
  assert result["knn_distance"]["auroc"] > 0.95 and result["mahalanobis"]["auroc"] > 0.95
  assert result["neg_norm_backbone"]["auroc"] < 0.5  # the far set has larger norms
  assert result["max_cosine"]["auroc"] > 0.95 and result["max_cosine"]["fpr95"] < 0.05
  per_seed = [{"far": result, "near": result}] * 3
  md = ood.table_markdown(per_seed)
  assert md.index("near AUROC") < md.index("far AUROC")
  assert f"| knn_distance | {result['knn_distance']['auroc']:.3f}" in md
  assert "- far: " in md


def test_uniform_noise_is_seeded():
  a = ood.uniform_noise_images(3, (4, 4, 1), seed=2)
  assert a.shape == (3, 4, 4, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(a, ood.uniform_noise_images(3, (4, 4, 1), seed=2))
  assert 0 <= a.min() and a.max() <= 1


def test_the_ood_figure_draws_every_set_and_score(tmp_path):
  from jnorm.plots import analysis as plots
  from jnorm.plots.figures import save_figure
  auroc = {"near": {"csi": [0.6, 0.7], "max_cosine": [0.5, 0.55]},
           "far": {"csi": [0.9, 0.95], "max_cosine": [0.8, 0.85]}}
  fig = plots.plot_ood_auroc(auroc)
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["near", "far"]
  heights = sorted(round(p.get_height(), 3) for p in ax.patches)
  assert heights == [0.525, 0.65, 0.825, 0.925]
  path = save_figure(fig, str(tmp_path), "ood_auroc")
  assert os.path.getsize(path) > 1000
