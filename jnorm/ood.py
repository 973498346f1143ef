"""Out-of-distribution scores on SSL features, and OpenOOD's two metrics.

Every score here is a *novelty* score: higher means "more likely out of distribution".
In-distribution (ID) samples are the test images of the trained classes; the reference
set is the train split's embeddings (the bank).

Scores (`SCORES`, computed by `scores`):
- `neg_norm_projector`, `neg_norm_backbone`: -‖z‖ of the projector output or of the
  backbone features (the paper's claim: novel samples get small norms).
- `knn_distance`: the cosine distance of the normalised backbone feature to its k-th
  nearest normalised train feature (Sun et al., ICML 2022: "Out-of-distribution
  detection with deep nearest neighbors").
- `mahalanobis`: the Mahalanobis distance of the normalised backbone feature to the
  Gaussian of the normalised train features, one class-agnostic cluster (SSD, Sehwag
  et al., ICLR 2021, with one cluster; covariance by Ledoit-Wolf shrinkage).
- `csi`: -‖z‖ · max_m cos(z, z_m) on the projector, z_m the train projector outputs
  (CSI's score, Tack et al., NeurIPS 2020, without its shifted-transformation ensemble).
- `max_cosine`: -max_m cos(z, z_m) on the projector: CSI's score without the norm,
  so `csi` against `max_cosine` asks whether the norm adds to a distance score.

Metrics (OpenOOD's protocol, ID as the accepted class): AUROC of telling OOD from ID by
the score, and FPR@95: the fraction of OOD samples accepted when the threshold accepts
95% of ID samples.
"""

import numpy as np

from jnorm import stats

SCORES = ("neg_norm_projector", "neg_norm_backbone", "knn_distance", "mahalanobis", "csi",
          "max_cosine")


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _max_cosine(bank: np.ndarray, query: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
  bank_u, query_u = _unit(bank), _unit(query)
  return np.concatenate([(query_u[i:i + chunk] @ bank_u.T).max(axis=1)
                         for i in range(0, len(query_u), chunk)])


def knn_distance(bank: np.ndarray, query: np.ndarray, *, k: int) -> np.ndarray:
  """1 - cos to the k-th nearest normalised bank feature, per query row."""
  import sklearn.neighbors  # pylint: disable=g-import-not-at-top  # imported on use
  if not 1 <= k <= len(bank):
    raise ValueError(f"need 1 <= k <= {len(bank)} bank rows, got k={k}")
  dist, _ = sklearn.neighbors.NearestNeighbors(n_neighbors=k).fit(_unit(bank)).kneighbors(
      _unit(query))
  return dist[:, k - 1] ** 2 / 2  # |u - v|² = 2 - 2 cos on the unit sphere


def mahalanobis(bank: np.ndarray, query: np.ndarray) -> np.ndarray:
  """Mahalanobis distance of normalised queries to the normalised bank's Gaussian."""
  import sklearn.covariance  # pylint: disable=g-import-not-at-top  # imported on use
  model = sklearn.covariance.LedoitWolf().fit(_unit(bank))
  return np.sqrt(model.mahalanobis(_unit(query)))


def scores(bank: dict, query: dict, *, k: int = 10) -> dict:
  """{score name: [N] novelty scores} for the `query` embeddings against the train `bank`.

  Args:
    bank, query: {'backbone': [N, F], 'projector': [N, P]} embeddings.
    k: the neighbour of `knn_distance`.
  """
  norm_p = np.linalg.norm(np.asarray(query["projector"], np.float64), axis=-1)
  max_cos = _max_cosine(bank["projector"], query["projector"])
  return {
      "neg_norm_projector": -norm_p,
      "neg_norm_backbone": -np.linalg.norm(np.asarray(query["backbone"], np.float64), axis=-1),
      "knn_distance": knn_distance(bank["backbone"], query["backbone"], k=k),
      "mahalanobis": mahalanobis(bank["backbone"], query["backbone"]),
      "csi": -norm_p * max_cos,
      "max_cosine": -max_cos,
  }


def auroc(id_scores, ood_scores) -> float:
  """P(an OOD sample scores above an ID sample), ties counted half."""
  import sklearn.metrics  # pylint: disable=g-import-not-at-top  # imported on use
  id_scores, ood_scores = np.ravel(id_scores), np.ravel(ood_scores)
  targets = np.concatenate([np.zeros(id_scores.size), np.ones(ood_scores.size)])
  return float(sklearn.metrics.roc_auc_score(targets, np.concatenate([id_scores, ood_scores])))


def fpr_at_95_tpr(id_scores, ood_scores) -> float:
  """Fraction of OOD samples accepted as ID by the threshold that accepts 95% of ID
  samples (accepted: novelty score at or below the threshold)."""
  id_scores, ood_scores = np.ravel(id_scores), np.ravel(ood_scores)
  threshold = np.quantile(id_scores, 0.95, method="higher")
  return float(np.mean(ood_scores <= threshold))


def evaluate(id_scores: dict, ood_scores: dict) -> dict:
  """{score: {'auroc', 'fpr95'}} for one OOD set."""
  return {name: {"auroc": auroc(id_scores[name], ood_scores[name]),
                 "fpr95": fpr_at_95_tpr(id_scores[name], ood_scores[name])}
          for name in id_scores}


def uniform_noise_images(num: int, shape, *, seed: int = 0) -> np.ndarray:
  """The synthetic far-OOD set: `num` images of i.i.d. uniform [0, 1] pixels."""
  return np.random.default_rng(seed).uniform(size=(num, *shape)).astype(np.float32)


def _cell(values) -> str:
  m = stats.mean_interval(values, bounds=(0.0, 1.0))  # both metrics are fractions
  if m["lo"] is None:
    return "n/a" if m["mean"] is None else f"{m['mean']:.3f}"
  return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def ordered_sets(sets) -> list:
  """OOD set names in table order: 'near' (held-out classes) first, then by name."""
  return sorted(sets, key=lambda s: (s != "near", s))


def table_markdown(per_seed: list) -> str:
  """The OOD table over seeds: per set and score, AUROC and FPR@95 as mean [95% t
  interval], and whether the norm adds to a distance (CSI's ‖z‖ · max cos against max
  cos alone: the paired AUROC difference). `per_seed`: the analysis results' 'ood'."""
  per_seed = [r for r in per_seed if r]
  if not per_seed:
    return ""
  sets = ordered_sets(per_seed[0])
  lines = [f"OOD detection on SSL features, {len(per_seed)} seeds: mean [95% t interval]. "
           "AUROC: OOD vs ID (0.5 = chance); FPR@95: OOD accepted at 95% ID accepted "
           "(lower is better).", "",
           "| score | " + " | ".join(f"{s} AUROC | {s} FPR@95" for s in sets) + " |",
           "|---|" + "---|---|" * len(sets)]
  for score in SCORES:
    cells = [_cell([r[s][score][m] for r in per_seed]) for s in sets for m in ("auroc", "fpr95")]
    lines.append(f"| {score} | " + " | ".join(cells) + " |")
  lines += ["", "Does the norm add to the distance? AUROC of csi minus max_cosine, paired by seed:", ""]
  for s in sets:
    d = stats.paired_difference([r[s]["csi"]["auroc"] for r in per_seed],
                                [r[s]["max_cosine"]["auroc"] for r in per_seed])
    interval = "" if d["lo"] is None else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    p = "n/a" if d["p"] is None else f"{d['p']:.2g}"
    mde = "n/a" if d["mde"] is None else f"{d['mde']:.3f}"
    lines.append(f"- {s}: {d['mean']:+.3f}{interval}, p {p}, mde {mde}, n {d['n']}")
  return "\n".join(lines) + "\n"
