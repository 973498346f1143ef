"""Job wrappers for the simulations: read the config, validate, run, write results + figures.

Each `<name>_job(config, workdir) -> dict` writes `<workdir>/results.json` and one PNG,
and returns the headline numbers (the driver prints the scalars). The simulation math
lives in `cosine_descent`, `weight_decay` and `imbalance`; only these wrappers read a
config.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from jnorm import errors
from jnorm import json_files
from jnorm import norms as norm_lib
from jnorm import stats
from jnorm.plots import simulations as plots
from jnorm.data import synthetic
from jnorm.simulations import cosine_descent
from jnorm.simulations import imbalance
from jnorm.simulations import weight_decay


def _dtype(config):
  errors.check_choice("dtype", config.dtype, ("float32", "float64"))
  return jnp.float64 if config.dtype == "float64" else jnp.float32


def _check_pairs(config):
  for field in ("num_pairs", "dim", "lr", "eps", "max_steps"):
    errors.check_positive(field, config[field])


def _check_norms(norms):
  if not norms or min(norms) <= 0:
    raise errors.ConfigError(f"config.norms={tuple(norms)!r} must be non-empty and positive, "
                             "e.g. (0.25, 0.5, 1, 2, 4, 8, 10)")


def norm_convergence_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Steps to converge vs initial norm (docs/paper.md §2.1), with the a·r² and r^k fits."""
  _check_pairs(config)
  _check_norms(config.norms)
  norms = [float(r) for r in config.norms]
  with jax.enable_x64(config.dtype == "float64"):
    steps, final_cos = cosine_descent.norm_convergence_steps(
        key=jax.random.key(config.seed), norms=norms, num_pairs=config.num_pairs,
        dim=config.dim, lr=config.lr, eps=config.eps, max_steps=config.max_steps,
        first_step_quirk=config.first_step_quirk, dtype=_dtype(config))
  steps = np.asarray(steps).tolist()
  fit = cosine_descent.fit_power_law(norms, steps)
  results = {"norms": norms, "steps": steps, "final_mean_cos": np.asarray(final_cos).tolist(),
             "a": fit["a"], "exponent": fit["exponent"],
             "converged": all(s < config.max_steps for s in steps)}
  json_files.save_results(workdir, results)
  plots.plot_norm_convergence(results, workdir)
  return {"a": fit["a"], "exponent": fit["exponent"], "steps": steps}


def angle_convergence_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Steps to converge vs initial angle at fixed norm (docs/paper.md §2.2)."""
  _check_pairs(config)
  angles = [float(a) for a in config.angles]
  if not angles or min(angles) <= 0 or max(angles) >= math.pi:
    raise errors.ConfigError(f"config.angles must lie in (0, π), got {tuple(angles)!r}")
  with jax.enable_x64(config.dtype == "float64"):
    steps, final_cos = cosine_descent.angle_convergence_steps(
        key=jax.random.key(config.seed), angles=angles, num_pairs=config.num_pairs,
        dim=config.dim, lr=config.lr, eps=config.eps, max_steps=config.max_steps,
        radius=config.radius, dtype=_dtype(config))
  steps = np.asarray(steps).tolist()
  results = {"angles": angles, "steps": steps, "radius": config.radius,
             "final_mean_cos": np.asarray(final_cos).tolist()}
  json_files.save_results(workdir, results)
  plots.plot_angle_convergence(results, workdir)
  near = int(np.argmin(np.abs(np.asarray(angles) - math.pi / 2)))
  return {"steps_near_half_pi": steps[near], "steps_at_max_angle": steps[-1]}


def gradscale_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The norm-convergence simulation with GradScale power p on both points, per p."""
  _check_pairs(config)
  _check_norms(config.norms)
  norms, powers = [float(r) for r in config.norms], [float(p) for p in config.powers]
  all_steps, exponents = [], []
  for power in tqdm.tqdm(powers, desc="gradscale powers", disable=not config.progress):
    with jax.enable_x64(config.dtype == "float64"):
      steps, _ = cosine_descent.norm_convergence_steps(
          key=jax.random.key(config.seed), norms=norms, num_pairs=config.num_pairs,
          dim=config.dim, lr=config.lr, eps=config.eps, max_steps=config.max_steps,
          power=power, dtype=_dtype(config))
    all_steps.append(np.asarray(steps).tolist())
    exponents.append(cosine_descent.fit_power_law(norms, all_steps[-1])["exponent"])
  results = {"powers": powers, "norms": norms, "steps": all_steps, "exponents": exponents}
  json_files.save_results(workdir, results)
  plots.plot_gradscale(results, workdir)
  return {"exponents": exponents}


def weight_decay_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Norm trajectories under weight decay; measured vs heuristic equilibrium norms."""
  for field in ("dim", "lr", "num_steps", "angle"):
    errors.check_positive(field, config[field])
  lams = [float(v) for v in config.weight_decays]
  if not lams or min(lams) < 0:
    raise errors.ConfigError(f"config.weight_decays={tuple(lams)!r} must be non-empty and >= 0")
  traj = np.asarray(weight_decay.weight_decay_sweep(
      key=jax.random.key(config.seed), weight_decays=lams, init_norms=list(config.init_norms),
      dim=config.dim, angle=config.angle, lr=config.lr, num_steps=config.num_steps))
  tail = max(1, int(config.tail_fraction * config.num_steps))
  measured = traj[:, -tail:, :].mean(axis=(1, 2))  # [L]: the last steps, every start
  kw = dict(lr=config.lr, angle=config.angle)
  heuristic = [weight_decay.heuristic_equilibrium_norm(weight_decay=v, **kw) for v in lams]
  exact = [weight_decay.exact_fixed_point_norm(weight_decay=v, **kw) for v in lams]
  # λ = 0 has no equilibrium: the "equilibrium" entry is the final (still growing) norm.
  ratios = [m / h if math.isfinite(h) else None for m, h in zip(measured.tolist(), heuristic)]
  stride = max(1, config.num_steps // 500)
  results = {"weight_decays": lams, "equilibrium_norms": measured.tolist(),
             "heuristic_norms": [h if math.isfinite(h) else None for h in heuristic],
             "exact_fixed_point_norms": [e if math.isfinite(e) else None for e in exact],
             "ratios": ratios, "init_norms": list(config.init_norms), "angle": config.angle,
             "lr": config.lr, "trajectory_steps": list(range(0, config.num_steps + 1, stride)),
             "trajectories": traj[:, ::stride, :].tolist()}
  json_files.save_results(workdir, results)
  plots.plot_weight_decay(results, traj, workdir)
  return {"ratios": ratios, "equilibrium_norms": measured.tolist()}


def _class_order_stats(norms: np.ndarray, init: np.ndarray, weights, epoch: int) -> dict:
  """Per seed, Spearman's rho of class weight vs mean class norm (and vs its growth since
  initialisation), with mean and 95% t interval over seeds; per class the mean norm and
  its interval. norms, init: [S, C] at the report epoch and at initialisation."""
  rhos = [stats.spearman(weights, n) for n in norms]
  growth = [stats.spearman(weights, n) for n in norms - init]
  ordered = [bool(np.all(np.diff(n[np.argsort(weights, kind="stable")]) > 0)) for n in norms]
  return {"report_epoch": epoch, "class_norms_at_report_epoch": norms.tolist(),
          "class_norm_interval_at_report_epoch": [stats.mean_interval(c) for c in norms.T],
          "spearman_weight_vs_norm_per_seed": rhos,
          "spearman_weight_vs_norm": stats.mean_interval(rhos, bounds=(-1, 1)),
          "spearman_weight_vs_growth_per_seed": growth,
          "spearman_weight_vs_growth": stats.mean_interval(growth, bounds=(-1, 1)),
          "seeds_fully_ordered": int(sum(ordered))}


def _simulate(config, seeds, weights):
  """Norm curves [S, E+1, C] and losses [S, E] of the imbalance simulation; seed s fixes
  the class structure, the samples and the MLP's initialisation."""
  data = [synthetic.latent_class_data(
      seed=s, structure_seed=s, num_samples=config.num_samples, class_weights=weights,
      latent_dim=config.latent_dim, observed_dim=config.observed_dim,
      noise_std=config.noise_std, scale=config.scale) for s in seeds]
  return imbalance.imbalance_norm_curves(
      seeds=seeds, xs=np.stack([d[0] for d in data]), ys=np.stack([d[1] for d in data]),
      num_classes=len(weights), hidden_dim=config.hidden_dim, embed_dim=config.embed_dim,
      lr=config.lr, batch_size=config.batch_size, num_epochs=config.num_epochs,
      temperature=config.temperature, partner=config.partner, init=config.init)


def _frequency_swap(config, seeds, weights, norms, epoch: int) -> dict:
  """The frequency effect with the class geometry held fixed: each seed is run again
  with the class weights reversed (same class means, samples' seed and initialisation),
  and each class's norm when frequent is compared with its norm when rare.

  effect per seed = mean over classes of (norm - norm_swapped) * sign(w - w_swapped):
  positive when classes get larger norms when they are more frequent.
  """
  swapped_weights = list(reversed(weights))
  swapped, _ = _simulate(config, seeds, swapped_weights)
  a, b = norms[:, epoch], np.asarray(swapped)[:, epoch]  # [S, C]
  effect = np.asarray([norm_lib.frequency_swap_effect(a_s, weights, b_s, swapped_weights)
                       for a_s, b_s in zip(a, b)])
  return {"swapped_class_weights": swapped_weights,
          "swapped_class_norms_at_report_epoch": b.tolist(),
          "frequency_effect_per_seed": effect.tolist(),
          "frequency_effect": stats.paired_difference(effect, np.zeros_like(effect))}


def imbalance_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Mean embedding norm per class over training on class-imbalanced data (§2.3)."""
  for field in ("num_samples", "lr", "batch_size", "num_epochs", "temperature"):
    errors.check_positive(field, config[field])
  if config.batch_size > config.num_samples:
    raise errors.ConfigError(f"config.batch_size={config.batch_size} exceeds "
                             f"config.num_samples={config.num_samples}; lower batch_size")
  seeds = [int(s) for s in config.seeds]
  weights = [float(w) for w in config.class_weights]
  partner, init = config.partner, config.init
  errors.check_choice("partner", partner, imbalance.PARTNERS)
  errors.check_choice("init", init, imbalance.INITS)
  if config.frequency_swap and len(seeds) < 2:
    raise errors.ConfigError("config.frequency_swap needs at least 2 seeds for an interval; "
                             "add seeds")
  report_epoch = int(config.report_epoch) or config.num_epochs
  if not 0 < report_epoch <= config.num_epochs:
    raise errors.ConfigError(f"config.report_epoch={report_epoch} must be in "
                             f"[1, num_epochs={config.num_epochs}] (0 = the last epoch)")
  norms, epoch_losses = _simulate(config, seeds, weights)
  norms, epoch_losses = np.asarray(norms), np.asarray(epoch_losses)  # [S, E+1, C], [S, E]
  mean_curve = norms.mean(axis=0)  # [E+1, C]
  final = mean_curve[-1]
  results = {"class_weights": weights, "seeds": seeds, "partner": partner, "init": init,
             **_class_order_stats(norms[:, report_epoch], norms[:, 0], weights, report_epoch),
             "final_mean_norm_per_class": final.tolist(),
             "class_order_by_norm": np.argsort(-final, kind="stable").tolist(),
             "norm_growth_per_class": (final - mean_curve[0]).tolist(),
             "mean_norm_per_class_per_epoch": mean_curve.tolist(),
             "norm_per_seed_per_epoch_per_class": norms.tolist(),
             "loss_per_epoch": epoch_losses.mean(axis=0).tolist()}
  if config.frequency_swap:
    results.update(_frequency_swap(config, seeds, weights, norms, report_epoch))
  json_files.save_results(workdir, results)
  plots.plot_imbalance(results, workdir)
  return {"final_mean_norm_per_class": final.tolist(),
          "frequency_effect": (results.get("frequency_effect") or {}).get("mean"),
          "class_order_by_norm": results["class_order_by_norm"],
          "spearman_weight_vs_norm": results["spearman_weight_vs_norm"]["mean"],
          "seeds_fully_ordered": results["seeds_fully_ordered"]}
