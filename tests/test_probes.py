"""jnorm.probes: weighted kNN vs brute force, linear probe, embedding extraction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets, linear_model, model_selection

from jnorm import probes
from jnorm import models


def _brute_force_knn(bank, bank_labels, query, *, num_classes, k, temperature,
                     leave_one_out=False):
  """Independent float64 numpy reference: sort all cosines, vote exp(cos / t)."""
  bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  query = query / np.linalg.norm(query, axis=1, keepdims=True)
  preds = []
  for i, q in enumerate(query):
    sims = bank @ q
    order = [j for j in np.argsort(-sims) if not (leave_one_out and j == i)][:k]
    scores = np.zeros(num_classes)
    for j in order:
      scores[bank_labels[j]] += np.exp(sims[j] / temperature)
    preds.append(int(np.argmax(scores)))
  return np.array(preds)


def _clustered(rng, n, num_classes, dim, spread):
  centres = rng.normal(size=[num_classes, dim])
  labels = rng.integers(0, num_classes, size=n)
  return centres[labels] + spread * rng.normal(size=[n, dim]), labels


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (7, 0.1), (25, 0.5)])
def test_knn_matches_brute_force(k, temperature):
  rng = np.random.default_rng(0)
  bank, bank_labels = _clustered(rng, 120, 4, 6, spread=1.5)
  query, _ = _clustered(rng, 50, 4, 6, spread=1.5)
  ours = probes.knn_predict(bank, bank_labels, query, num_classes=4, k=k,
                              temperature=temperature, chunk_size=16)
  ref = _brute_force_knn(bank, bank_labels, query, num_classes=4, k=k,
                         temperature=temperature)
  np.testing.assert_array_equal(ours, ref)


def test_knn_leave_one_out_matches_brute_force():
  rng = np.random.default_rng(1)
  bank, labels = _clustered(rng, 90, 3, 5, spread=2.0)
  ours = probes.knn_predict(bank, labels, bank, num_classes=3, k=5, temperature=0.1,
                              chunk_size=32, leave_one_out=True)
  ref = _brute_force_knn(bank, labels, bank, num_classes=3, k=5, temperature=0.1,
                         leave_one_out=True)
  np.testing.assert_array_equal(ours, ref)
  # With k=1 and no exclusion, every point is its own neighbour: accuracy 1.
  assert probes.knn_accuracy(bank, labels, bank, labels, num_classes=3, k=1) == 1.0
  # Leave-one-out k=1 is the 1-NN among the others: differs on at least one point here.
  loo = probes.knn_accuracy(bank, labels, bank, labels, num_classes=3, k=1,
                              leave_one_out=True)
  ref_loo = np.mean(_brute_force_knn(bank, labels, bank, num_classes=3, k=1,
                                     temperature=0.1, leave_one_out=True) == labels)
  assert loo == pytest.approx(ref_loo) and loo < 1.0
  with pytest.raises(ValueError, match="leave_one_out"):
    probes.knn_predict(bank, labels, bank[:10], num_classes=3, leave_one_out=True)


def test_knn_is_scale_invariant_and_clips_k():
  rng = np.random.default_rng(2)
  bank, labels = _clustered(rng, 30, 3, 4, spread=1.0)
  query, _ = _clustered(rng, 10, 3, 4, spread=1.0)
  scales = rng.uniform(0.01, 100.0, size=[30, 1])
  a = probes.knn_predict(bank, labels, query, num_classes=3, k=500)  # k > N: clipped
  b = probes.knn_predict(bank * scales, labels, query * 7.0, num_classes=3, k=500)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      a, _brute_force_knn(bank, labels, query, num_classes=3, k=30, temperature=0.1))


def _digits_split():
  x, y = datasets.load_digits(return_X_y=True)
  return model_selection.train_test_split(x, y, test_size=0.277, stratify=y,
                                          random_state=0)


def test_linear_probe_separable_and_close_to_sklearn():
  rng = np.random.default_rng(3)
  x, y = _clustered(rng, 600, 5, 16, spread=0.2)
  acc = probes.linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:], num_classes=5,
                                       epochs=30, batch_size=64)
  assert acc > 0.97
  # Independent reference: sklearn's logistic regression on standardised digits pixels.
  x_train, x_test, y_train, y_test = _digits_split()
  ours = probes.linear_probe_accuracy(x_train, y_train, x_test, y_test, num_classes=10,
                                        epochs=50, batch_size=128, learning_rate=1e-2)
  mean, std = x_train.mean(0), np.where(x_train.std(0) > 1e-8, x_train.std(0), 1.0)
  clf = linear_model.LogisticRegression(max_iter=2000).fit((x_train - mean) / std, y_train)
  ref = clf.score((x_test - mean) / std, y_test)
  assert ours > 0.9 and abs(ours - ref) < 0.04, (ours, ref)


def test_linear_probe_seeded_and_validates_shapes():
  rng = np.random.default_rng(4)
  x, y = _clustered(rng, 200, 3, 8, spread=2.0)
  kwargs = dict(num_classes=3, epochs=5, batch_size=32, seed=7)
  a = probes.linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:], **kwargs)
  b = probes.linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:], **kwargs)
  assert a == b
  with pytest.raises(ValueError):
    probes.linear_probe_accuracy(x[:150], y[:140], x[150:], y[150:], **kwargs)
  with pytest.raises(ValueError):
    probes.linear_probe_accuracy(x[:150], y[:150], x[150:, :4], y[150:], **kwargs)


def test_compute_embeddings_drops_padding_and_keeps_order():
  inputs = np.arange(10, dtype=np.float32)[:, None] * np.ones([1, 3], np.float32)
  labels = np.arange(10) % 3
  batches = []
  for start in range(0, 10, 4):  # 4 + 4 + 2 real rows, last batch padded with row 0
    idx = np.arange(start, start + 4)
    mask = idx < 10
    idx = np.where(mask, idx, 0)
    batches.append({"input": inputs[idx], "label": labels[idx], "mask": mask})
  out = probes.compute_embeddings(lambda x: {"a": x * 2.0, "b": x[:, :1]}, batches)
  np.testing.assert_array_equal(out["a"], inputs * 2.0)
  np.testing.assert_array_equal(out["b"], inputs[:, :1])
  np.testing.assert_array_equal(out["label"], labels)


class _TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(4)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return {"backbone": h, "projector": nn.Dense(2)(h)}


def test_extract_features_eval_and_train_mode_batchnorm():
  net = _TinyNet()
  x = np.random.default_rng(5).normal(size=[8, 3]).astype(np.float32)
  variables = net.init(jax.random.key(0), x, train=False)
  stats = variables["batch_stats"]["BatchNorm_0"]
  variables = {"params": variables["params"], "batch_stats": {"BatchNorm_0": {
      "mean": stats["mean"] + 0.5, "var": stats["var"] * 2.0}}}  # non-trivial running stats
  dense = variables["params"]["Dense_0"]
  bn = variables["params"]["BatchNorm_0"]
  h = x @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
  running = variables["batch_stats"]["BatchNorm_0"]
  expect_eval = (h - running["mean"]) / np.sqrt(running["var"] + 1e-5) * bn["scale"] + bn["bias"]
  expect_train = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * bn["scale"] + bn["bias"]
  batches = [{"input": x, "label": np.zeros(8, np.int32), "mask": np.ones(8, bool)}]
  got_eval = probes.extract_features(net.apply, variables, batches)
  got_train = probes.extract_features(net.apply, variables, batches, train_mode_bn=True)
  np.testing.assert_allclose(got_eval["backbone"], expect_eval, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_train["backbone"], expect_train, rtol=1e-4, atol=1e-4)
  assert got_train["projector"].shape == (8, 2)
  assert not np.allclose(got_eval["backbone"], got_train["backbone"])


class _OneBatchNorm(nn.Module):
  """A single BatchNorm layer in float64 (momentum as given)."""
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                        dtype=jnp.float64, param_dtype=jnp.float64)(x)


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_reestimate_batch_stats_is_the_mean_of_exact_batch_moments(x64, momentum):
  net = _OneBatchNorm(momentum=momentum)
  rng = np.random.default_rng(6)
  scale, shift = np.array([0.5, 2.0, 10.0]), np.array([-3.0, 0.0, 7.0])
  inputs = [rng.normal(size=[8, 3]) * scale + shift for _ in range(3)]
  variables = net.init(jax.random.key(0), inputs[0], train=True)
  # Running statistics that are not the initial ones: they must not leak in.
  variables = {"params": variables["params"],
               "batch_stats": {"BatchNorm_0": {"mean": np.full(3, 5.0), "var": np.full(3, 9.0)}}}
  padded = np.concatenate([rng.normal(size=[5, 3]) * 100.0, np.zeros([3, 3])])
  batches = [{"input": x, "mask": np.ones(8, bool)} for x in inputs]
  batches.append({"input": padded, "mask": np.arange(8) < 5})  # skipped: it is padded
  got = probes.reestimate_batch_stats(net.apply, variables, batches, momentum=momentum)
  want_mean = np.mean([x.mean(0) for x in inputs], axis=0)
  want_var = np.mean([x.var(0) for x in inputs], axis=0)  # biased, per batch
  np.testing.assert_allclose(got["BatchNorm_0"]["mean"], want_mean, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got["BatchNorm_0"]["var"], want_var, rtol=1e-12)
  # Not the variance of all the rows pooled: the per-batch means differ.
  assert not np.allclose(got["BatchNorm_0"]["var"], np.concatenate(inputs).var(0), rtol=1e-3)
  # Only padded batches: their valid rows are used.
  only = probes.reestimate_batch_stats(net.apply, variables, batches[-1:], momentum=momentum)
  np.testing.assert_allclose(only["BatchNorm_0"]["mean"], padded[:5].mean(0), rtol=1e-12)
  np.testing.assert_allclose(only["BatchNorm_0"]["var"], padded[:5].var(0), rtol=1e-12)
  with pytest.raises(ValueError, match="no batches"):
    probes.reestimate_batch_stats(net.apply, variables, [], momentum=momentum)


def _small_ssl_net():
  cfg = models.default_model_config()
  cfg.backbone = "small_resnet"
  cfg.projector_dims, cfg.projector_bn, cfg.predictor_hidden = (16, 8), True, 8
  return models.build_ssl_net(cfg)


@pytest.mark.slow
def test_reestimated_stats_match_each_batchnorm_input_of_an_ssl_net_in_train_mode():
  """Every BatchNorm of an SSLNet: the re-estimated statistics are the batch moments of
  that layer's input when the network runs in train mode (captured by interception)."""
  net = _small_ssl_net()
  rng = np.random.default_rng(7)
  inputs = [rng.random([6, 8, 8, 1]).astype(np.float32) for _ in range(2)]
  variables = net.init(jax.random.key(0), inputs[0], train=True)
  # Move the weights away from init so every layer's statistics are non-trivial.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape),
                        variables["params"])
  variables = {"params": params, "batch_stats": variables["batch_stats"]}
  captured = {}

  def capture(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      x = np.asarray(args[0], np.float64)
      captured.setdefault(context.module.path, []).append(x.reshape(-1, x.shape[-1]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    for x in inputs:
      net.apply(variables, x, train=True, mutable=["batch_stats"])
  got = probes.reestimate_batch_stats(
      net.apply, variables, [{"input": x} for x in inputs])
  paths = {tuple(p.key for p in path[:-1]) for path, _ in
           jax.tree_util.tree_flatten_with_path(got)[0]}
  assert paths == set(captured) and len(paths) >= 4  # backbone, projector and predictor BNs
  for path, xs in captured.items():
    stats = got
    for key in path:
      stats = stats[key]
    want_mean = np.mean([x.mean(0) for x in xs], axis=0)
    want_var = np.mean([x.var(0) for x in xs], axis=0)
    np.testing.assert_allclose(stats["mean"], want_mean, rtol=2e-4, atol=1e-5, err_msg=path)
    np.testing.assert_allclose(stats["var"], want_var, rtol=2e-4, atol=1e-5, err_msg=path)


@pytest.mark.slow
def test_one_batch_eval_mode_with_reestimated_stats_equals_train_mode():
  net = _small_ssl_net()
  x = np.random.default_rng(8).random([6, 8, 8, 1]).astype(np.float32)
  variables = net.init(jax.random.key(0), x, train=True)
  train_out, _ = net.apply(variables, x, train=True, mutable=["batch_stats"])
  stats = probes.reestimate_batch_stats(net.apply, variables, [{"input": x}])
  eval_out = net.apply({"params": variables["params"], "batch_stats": stats}, x, train=False)
  stale = net.apply(variables, x, train=False)  # the initial running statistics
  for head in ("backbone", "projector", "predictor"):
    np.testing.assert_allclose(eval_out[head], train_out[head], rtol=1e-3, atol=1e-4)
  assert not np.allclose(stale["projector"], train_out["projector"], rtol=1e-2, atol=1e-3)
