"""Tests of jnorm.losses: closed-form gradients vs autodiff vs finite differences, and the
properties of Draganov et al. (2025), Sec. 3, in float64 to machine precision."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jnorm import losses
from jnorm.errors import ConfigError

T = 0.5  # the reference SimCLR temperature
# (loss, grad, number of differentiated leading args, total args)
LOSSES = {
    "attraction": (losses.attraction_loss, losses.attraction_grad, 2, 2),
    "repulsion": (losses.repulsion_loss, losses.repulsion_grad, 2, 2),
    "infonce": (losses.infonce_loss, losses.infonce_grad, 2, 2),
    "nt_xent": (losses.nt_xent_loss, losses.nt_xent_grad, 2, 2),
    "negative_cosine": (losses.negative_cosine_loss, losses.negative_cosine_grad, 2, 4),
}
# (N, D): shapes are few since each compiles anew; row-norm scales are looped over inside
# the tests (tiny, unit and huge embeddings), which costs no compilation.
SHAPES = [(2, 3), (7, 16)]
SCALES = [1e-2, 1.0, 1e3]


def _kwargs(name, temperature=T):
  return {} if name == "negative_cosine" else {"temperature": temperature}


def _inputs(name, n, d, scale, seed=0, dtype=jnp.float64):
  """Random [N, D] inputs whose row norms spread over ~e^{±1} around `scale`."""
  key = jax.random.fold_in(jax.random.key(seed), n * 1000 + d)
  args = []
  for i in range(LOSSES[name][3]):
    kd, kn = jax.random.split(jax.random.fold_in(key, i))
    x = jax.random.normal(kd, (n, d), dtype)
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    args.append(scale * jnp.exp(jax.random.normal(kn, (n, 1), dtype)) * x)
  return tuple(args)


@functools.cache
def _jitted(name):
  """(jitted loss, jitted args -> (autodiff grads, closed-form grads)), kwargs fixed.

  One compilation per loss and shape keeps the suite fast: eager mode compiles every
  op, and each jit has a fixed overhead."""
  loss, grad, n_diff, _ = LOSSES[name]
  f = functools.partial(loss, **_kwargs(name))
  auto = jax.grad(f, argnums=tuple(range(n_diff)))
  return jax.jit(f), jax.jit(lambda *a: (auto(*a), grad(*a, **_kwargs(name))))


def _split(name, args):
  """(differentiated args, jitted loss of them alone with the rest closed over)."""
  n_diff = LOSSES[name][2]
  diff, fixed = args[:n_diff], args[n_diff:]
  return diff, lambda *d: _jitted(name)[0](*d, *fixed)


def _rel(a, b):
  a, b = np.concatenate([np.ravel(x) for x in a]), np.concatenate([np.ravel(x) for x in b])
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_closed_form_grad_matches_autodiff(x64, name, shape):
  for scale in SCALES:
    args = _inputs(name, *shape, scale)
    auto, closed = _jitted(name)[1](*args)
    assert len(closed) == LOSSES[name][2] == len(auto)
    assert _rel(closed, auto) < 1e-12


@pytest.mark.parametrize("name", list(LOSSES))
def test_grads_match_finite_differences(x64, name):
  """Autodiff vs FD with check_grads, and the closed form vs Richardson-extrapolated
  central differences along random directions (error O(h^4))."""
  args = _inputs(name, *SHAPES[0], 2.0, seed=1)
  diff, f = _split(name, args)
  check_grads(f, diff, order=1, modes=("rev",))
  closed = _jitted(name)[1](*args)[1]
  for k in range(3):
    keys = jax.random.split(jax.random.key(100 + k), len(diff))
    # Perturb each row in proportion to its norm, so h is a relative step.
    dirs = [jax.random.normal(kk, x.shape, x.dtype) * jnp.linalg.norm(x, axis=-1, keepdims=True)
            for kk, x in zip(keys, diff)]

    def central(h, dirs=dirs):
      plus = f(*[x + h * v for x, v in zip(diff, dirs)])
      minus = f(*[x - h * v for x, v in zip(diff, dirs)])
      return (plus - minus) / (2 * h)

    h = 3e-4  # truncation O(h^4) and rounding O(1e-16 / h) both near 1e-12
    fd = (4 * central(h / 2) - central(h)) / 3
    exact = sum(jnp.vdot(g, v) for g, v in zip(closed, dirs))
    # Relative to ‖∇‖‖v‖, the size a directional derivative can have (its value may be
    # small by cancellation).
    size = jnp.sqrt(sum(jnp.vdot(g, g) for g in closed) * sum(jnp.vdot(v, v) for v in dirs))
    assert float(jnp.abs(fd - exact) / size) < 1e-11


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_grad_is_orthogonal_to_z_and_scales_as_inverse_norm(x64, name, shape):
  """Losses of z/‖z‖ only: ∇L·z = 0 per row, and ∇L(c·z) = ∇L(z)/c."""

  def grad_fn(*a):
    return _jitted(name)[1](*a)[1]

  for scale in SCALES:
    args = _inputs(name, *shape, scale)
    grads = grad_fn(*args)
    for z, g in zip(args, grads):
      cos = jnp.sum(z * g, -1) / (jnp.linalg.norm(z, axis=-1) * jnp.linalg.norm(g, axis=-1))
      assert float(jnp.max(jnp.abs(cos))) < 1e-13
    for c in (1e-3, 0.5, 7.0, 1e4):
      scaled = grad_fn(*[c * a for a in args])
      assert _rel(scaled, [g / c for g in grads]) < 1e-13


@pytest.mark.parametrize("name", list(LOSSES))
def test_plain_step_norm_growth_identity(x64, name):
  """‖z - γ∇‖² = ‖z‖² + γ²‖∇‖² exactly, per row: plain gradient steps only grow norms."""
  args = _inputs(name, *SHAPES[1], 0.3, seed=2)
  grads = _jitted(name)[1](*args)[1]
  for gamma in (0.1, 10.0, 1e3):
    for z, g in zip(args, grads):
      lhs = jnp.sum((z - gamma * g) ** 2, -1)
      rhs = jnp.sum(z**2, -1) + gamma**2 * jnp.sum(g**2, -1)
      np.testing.assert_allclose(lhs, rhs, rtol=1e-13)
      assert bool(jnp.all(lhs >= jnp.sum(z**2, -1)))


def test_cosine_grad_size_is_sin_theta_over_norm(x64):
  rng = np.random.default_rng(3)
  z = rng.normal(size=(64, 10)) * np.exp(rng.normal(size=(64, 1)) * 2)
  w = rng.normal(size=(64, 10)) * np.exp(rng.normal(size=(64, 1)) * 2)
  w[0] = -2.5 * z[0] + 1e-3 * rng.normal(size=10)  # θ near π: the gradient nearly vanishes
  nz, nw = np.linalg.norm(z, axis=1), np.linalg.norm(w, axis=1)
  cos = np.sum(z * w, 1) / (nz * nw)
  dz, dw = jax.jit(losses.cosine_similarity_grad)(z, w)
  np.testing.assert_allclose(jax.jit(losses.cosine_similarity)(z, w), cos, rtol=1e-13,
                             atol=1e-15)
  np.testing.assert_allclose(jnp.linalg.norm(dz, axis=1), np.sqrt(1 - cos**2) / nz, rtol=1e-9)
  np.testing.assert_allclose(jnp.linalg.norm(dw, axis=1), np.sqrt(1 - cos**2) / nw, rtol=1e-9)
  auto = jax.jit(jax.grad(lambda a, b: jnp.sum(losses.cosine_similarity(a, b)), (0, 1)))(z, w)
  assert _rel((dz, dw), auto) < 1e-12


@pytest.mark.parametrize("name", list(LOSSES))
def test_jit_matches_eager(name):
  """In float32, the training dtype (float64 runs jitted elsewhere against autodiff)."""
  dtype, tol = jnp.float32, 1e-5
  args = _inputs(name, *SHAPES[1], 1.0, seed=4, dtype=dtype)
  loss, grad, _, _ = LOSSES[name]

  def both(*a):
    return loss(*a, **_kwargs(name)), grad(*a, **_kwargs(name))

  eager, jitted = both(*args), jax.jit(both)(*args)
  assert len(jax.tree.leaves(eager)) == 3
  for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    assert j.dtype == e.dtype == dtype
    np.testing.assert_allclose(j, e, rtol=tol, atol=tol)


def test_nt_xent_matches_optax_ntxent(x64):
  """optax.losses.ntxent(embeddings, labels, temperature) treats rows with equal labels
  as positives, uses every other row with a different label as a negative, puts the
  positive in the denominator and averages over all (anchor, positive) pairs. With
  embeddings = concat(z1, z2) and labels = concat(arange(N), arange(N)) each label has
  exactly two rows (the two views), so each of the 2N anchors has one positive and the
  other 2N - 2 rows as negatives: that is SimCLR's NT-Xent. optax clamps ‖x‖² at
  float eps; with norms of order 1 the clamp is inactive, so the two must agree."""
  n, d = 7, 5
  z1, z2 = _inputs("nt_xent", n, d, 1.0, seed=5)
  labels = jnp.concatenate([jnp.arange(n), jnp.arange(n)])

  @jax.jit
  def compare(a, b, t):
    ref = jax.value_and_grad(lambda a, b: optax.losses.ntxent(
        jnp.concatenate([a, b]), labels, temperature=t), (0, 1))
    return ref(a, b), (losses.nt_xent_loss(a, b, temperature=t),
                       losses.nt_xent_grad(a, b, temperature=t))

  for t in (0.1, 0.5, 2.0):
    (ref, ref_grad), (ours, our_grad) = compare(z1, z2, t)
    np.testing.assert_allclose(ours, ref, rtol=1e-13)
    assert _rel(our_grad, ref_grad) < 1e-12


def test_losses_match_loop_references(x64):
  """Both contrastive losses against plain-Python loops over the definitions."""
  z1, z2 = (np.asarray(a) for a in _inputs("infonce", 5, 3, 1.0, seed=6))
  n, t = z1.shape[0], 0.3

  def cos(a, b):
    return a @ b / np.sqrt((a @ a) * (b @ b))

  infonce = np.mean([-cos(z1[i], z2[i]) / t + np.log(sum(
      np.exp(cos(z1[i], z2[j]) / t) for j in range(n) if j != i)) for i in range(n)])
  views = np.concatenate([z1, z2])
  nt_xent = np.mean([-cos(views[a], views[(a + n) % (2 * n)]) / t + np.log(sum(
      np.exp(cos(views[a], views[b]) / t) for b in range(2 * n) if b != a))
                     for a in range(2 * n)])
  ours = jax.jit(lambda a, b: {name: losses.get_contrastive_loss(name)(a, b, temperature=t)
                               for name in losses.CONTRASTIVE_LOSSES})(z1, z2)
  np.testing.assert_allclose(ours["infonce"], infonce, rtol=1e-13)
  np.testing.assert_allclose(ours["nt_xent"], nt_xent, rtol=1e-13)
  np.testing.assert_allclose(ours["attraction"] + ours["repulsion"], infonce, rtol=1e-13)
  assert abs(infonce - nt_xent) > 1e-3  # the reference's "infonce" is not NT-Xent


@pytest.mark.parametrize("name", list(LOSSES))
def test_float32_stable_at_small_temperature(x64, name):
  """t = 0.01 makes |cos/t| up to 100 (exp overflows float32 at ~88): logsumexp keeps
  the loss and the closed-form gradient finite and close to float64."""
  z1, *rest = _inputs(name, *SHAPES[1], 1.0, seed=7)
  args64 = (z1, z1 + 1e-3 * rest[0], *rest[1:])  # aligned positives: cos ≈ 1
  args32 = tuple(a.astype(jnp.float32) for a in args64)
  loss, grad, _, _ = LOSSES[name]
  kw = _kwargs(name, temperature=0.01)
  both = jax.jit(lambda *a: (loss(*a, **kw), grad(*a, **kw)))
  (l32, grads32), (l64, grads64) = both(*args32), both(*args64)
  assert l32.dtype == jnp.float32 and bool(jnp.isfinite(l32))
  np.testing.assert_allclose(l32, l64, rtol=1e-4, atol=1e-3)
  for g32, g64 in zip(grads32, grads64):
    assert g32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g32)))
    # Absolute tolerance on the scale 1/t of the logits' gradients: where the positive
    # dominates the softmax the gradient is a cancellation, exactly 0 in float32.
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 / 0.01)


@pytest.mark.parametrize("name", list(LOSSES))
def test_zero_row_gives_documented_finite_gradient(x64, name):
  """At z = 0 the normalisation is z/eps: cos = 0, and the gradient is the cotangent
  on ẑ divided by eps. Both the closed form and autodiff return it, with no NaN."""
  args = list(_inputs(name, *SHAPES[0], 1.0, seed=8))
  args[0] = args[0].at[0].set(0.0)
  diff, f = _split(name, args)
  auto, closed = _jitted(name)[1](*args)
  assert bool(jnp.isfinite(f(*diff)))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in closed)
  assert _rel(closed, auto) < 1e-12
  # Inside the ball ‖z_0‖ < eps the loss is a smooth function of z_0/eps, so central
  # differences with steps of 1e-3 eps measure its gradient there, of order 1/eps.
  h = 1e-3 * losses.DEFAULT_EPS
  fd = []
  for k in range(args[0].shape[1]):
    step = jnp.zeros_like(args[0]).at[0, k].set(h)
    fd.append((f(args[0] + step, *diff[1:]) - f(args[0] - step, *diff[1:])) / (2 * h))
  np.testing.assert_allclose(closed[0][0], jnp.stack(fd), rtol=1e-5)


def test_negative_cosine_stops_gradient_on_targets(x64):
  p1, p2, z1, z2 = _inputs("negative_cosine", 4, 3, 1.0, seed=9)
  dz = jax.jit(jax.grad(losses.negative_cosine_loss, argnums=(2, 3)))(p1, p2, z1, z2)
  assert all(bool(jnp.all(g == 0)) for g in dz)
  np.testing.assert_allclose(losses.negative_cosine_loss(z2, z1, z1, z2), -1.0, rtol=1e-14)


def test_registry():
  for name, (loss, grad, _, _) in LOSSES.items():
    if name != "negative_cosine":
      assert losses.get_contrastive_loss(name) is loss
      assert losses.get_contrastive_loss_grad(name) is grad
  assert set(losses.CONTRASTIVE_LOSSES) == {"infonce", "nt_xent", "attraction", "repulsion"}
  with pytest.raises(ConfigError, match="nt_xent"):
    losses.get_contrastive_loss("ntxent")
  with pytest.raises(ValueError):  # ConfigError is a ValueError
    losses.get_contrastive_loss_grad("negative_cosine")


def test_shape_errors():
  z = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="same shape"):
    losses.infonce_loss(z, jnp.ones((4, 2)), temperature=T)
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    losses.nt_xent_grad(jnp.ones(3), jnp.ones(3), temperature=T)
  with pytest.raises(ValueError, match="at least 2"):
    losses.repulsion_loss(z[:1], z[:1], temperature=T)
  with pytest.raises(ValueError, match="p1 and z1"):
    losses.negative_cosine_loss(z, z, jnp.ones((5, 3)), jnp.ones((5, 3)))
