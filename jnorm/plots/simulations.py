"""Figures of the paper's toy simulations; each takes the job's `results` dict."""

import math

import numpy as np

from jnorm.plots.figures import new_figure, save_figure

_STEPS_LABEL = "steps to mean cos ≥ 1 - eps"


def plot_norm_convergence(results: dict, workdir: str) -> str:
  norms, steps, a = results["norms"], results["steps"], results["a"]
  fig, ax = new_figure(figsize=(5, 4))
  ax.loglog(norms, steps, "o", label="simulation")
  grid = np.geomspace(min(norms), max(norms), 100)
  ax.loglog(grid, a * grid**2, "-", label=f"fit {a:.1f}·r²")
  ax.set(xlabel="initial norm r", ylabel=_STEPS_LABEL,
         title=f"norm effect: steps ∝ r^{results['exponent']:.2f}")
  ax.legend()
  return save_figure(fig, workdir, "norm_convergence")


def plot_angle_convergence(results: dict, workdir: str) -> str:
  fig, ax = new_figure(figsize=(5, 4))
  ax.plot(results["angles"], results["steps"], "o-", label=f"norm {results['radius']:g}")
  ax.axvline(math.pi / 2, color="gray", ls=":", label="π/2")
  ax.set(xlabel="initial angle θ (rad)", ylabel=_STEPS_LABEL, title="opposite-halves effect")
  ax.legend()
  return save_figure(fig, workdir, "angle_convergence")


def plot_gradscale(results: dict, workdir: str) -> str:
  fig, ax = new_figure(figsize=(5, 4))
  for power, steps, k in zip(results["powers"], results["steps"], results["exponents"]):
    ax.loglog(results["norms"], steps, "o-", label=f"p = {power:g}: steps ∝ r^{k:.2f}")
  ax.set(xlabel="initial norm r", ylabel=_STEPS_LABEL, title="GradScale: gradient × ‖z‖^p")
  ax.legend()
  return save_figure(fig, workdir, "gradscale")


def plot_weight_decay(results: dict, traj: np.ndarray, workdir: str) -> str:
  """traj: [L, T+1, S] norm trajectories (every step); results: the job's results."""
  fig, ax = new_figure(figsize=(6, 4))
  t = np.arange(traj.shape[1])
  stride = max(1, (traj.shape[1] - 1) // 500)
  for i, (lam, h) in enumerate(zip(results["weight_decays"], results["heuristic_norms"])):
    color = f"C{i}"
    for j in range(traj.shape[2]):
      ax.plot(t[::stride], traj[i, ::stride, j], color=color,
              label=f"λ = {lam:g}" if j == 0 else None)
    if h is not None:
      ax.axhline(h, color=color, ls=":", lw=1)
  ax.set(xlabel="step", ylabel="‖z‖ (dotted: (γ sin²θ / 2λ)^¼)",
         title=f"weight decay bounds norm growth (θ = {results['angle']:g} rad)")
  ax.legend()
  return save_figure(fig, workdir, "weight_decay")


def plot_imbalance(results: dict, workdir: str) -> str:
  mean_curve = np.asarray(results["mean_norm_per_class_per_epoch"])
  fig, ax = new_figure(figsize=(6, 4))
  for c, w in enumerate(results["class_weights"]):
    ax.plot(mean_curve[:, c], label=f"class {c} (weight {w:g})")
  ax.set(xlabel="epoch", ylabel=f"mean ‖f(x)‖ over class ({len(results['seeds'])} seeds)",
         title="class imbalance: embedding norms")
  ax.legend()
  return save_figure(fig, workdir, "imbalance")
