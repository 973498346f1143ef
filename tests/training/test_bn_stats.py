"""Evaluation BatchNorm statistics (`config.eval.bn_stats`) on a short real digits run.

'recompute' (the default) re-estimates every BatchNorm's statistics on the train split
for the current weights before an evaluation; 'running' uses the running averages kept
during training. After one epoch (20 steps at momentum 0.9) the running averages still
hold 0.9^20 = 12% of their initial values and lag weights that moved fast, and a cut
network (c = 3: activations far smaller than the initial running variance of 1) makes
that lag large: the two evaluations must differ. Once the running statistics have
converged for fixed weights, they must agree.

Long training is emulated cheaply: the same final weights are run forward in train mode
over the (un-augmented) train split many times, which updates only the running
statistics -- the weights stay fixed, as with a learning rate of 0. After 50 such passes
the initial values weigh 0.9^50 < 1%. (In real training the running statistics come
from augmented views; using the evaluation's own inputs here isolates the lag that
'recompute' removes.)
"""

import jax
import numpy as np
import pytest

from jnorm import data
from jnorm import probes
from jnorm.training import build
from jnorm.training import checkpoint
from jnorm.training import config as train_config
from jnorm.training import evaluation
from jnorm.training import loop

pytestmark = pytest.mark.slow  # the full suite only (README)

EVAL_BATCH = 256


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One epoch of SimCLR on 8x8 digits (cut c = 3) and its final state."""
  config = train_config.defaults()
  config.data.name, config.data.image_size = "digits", 8
  config.batch_size, config.num_epochs, config.optim.warmup_epochs = 64, 1.0, 0.5
  config.norm.cut_factor = 3.0
  config.eval.knn_k, config.eval.batch_size = 20, EVAL_BATCH
  config.progress_bar, config.checkpoint_every_steps, config.log_every_steps = False, 1000, 1000
  assert config.eval.bn_stats == "recompute"  # the default
  workdir = str(tmp_path_factory.mktemp("bn_stats"))
  results = loop.train_and_evaluate(config, workdir)
  ds = data.load_dataset(config.data)
  run = build.build_run(config, mesh=None, **build.run_info(ds, config))
  ckpt = checkpoint.Checkpointer(workdir)
  state = ckpt.restore(ckpt.latest_step(), jax.device_get(run.init_state()))
  ckpt.close()
  return config, ds, run, state, results


def _batches(ds, split):
  return data.eval_batches(ds, split=split, batch_size=EVAL_BATCH, process_index=0,
                           process_count=1)


def _measure(evaluator, ds, variables):
  """(kNN accuracy of backbone features, mean projector norm of the test split)."""
  train = probes.extract_features(None, variables, _batches(ds, "train"),
                                    embed_fn=evaluator.embed)
  test = probes.extract_features(None, variables, _batches(ds, "test"),
                                   embed_fn=evaluator.embed)
  knn = probes.knn_accuracy(train["backbone"], train["label"], test["backbone"],
                              test["label"], num_classes=ds.num_classes, k=20)
  return knn, float(np.linalg.norm(test["projector"], axis=-1).mean())


def _variables(config, evaluator, state, ds, bn_stats):
  ecfg = config.eval.copy_and_resolve_references()
  ecfg.bn_stats = bn_stats
  return evaluation.eval_variables(evaluator, state, ds, ecfg)


def test_the_loop_evaluates_with_recomputed_statistics(trained):
  config, ds, run, state, results = trained
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  knn, norm = _measure(evaluator, ds, _variables(config, evaluator, state, ds, "recompute"))
  last = results["knn_curve"][-1]
  assert last["epoch"] == 1.0
  assert last["knn_accuracy"] == pytest.approx(knn, abs=1e-9)
  assert last["projector_norm_mean"] == pytest.approx(norm, rel=1e-5)
  for head in ("backbone", "projector"):
    assert last[f"{head}_norm_mean_train_mode"] > 0
    assert 0 < last[f"{head}_normalized_std"] < 1  # collapse monitor, in (0, 1)


def test_recompute_and_running_differ_after_one_epoch_and_agree_once_converged(trained):
  config, ds, run, state, _ = trained
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  recomputed = _measure(evaluator, ds, _variables(config, evaluator, state, ds, "recompute"))
  running_vars = _variables(config, evaluator, state, ds, "running")
  running = _measure(evaluator, ds, running_vars)
  # Epoch 1: the lagging running statistics shrink the projector norm and cost accuracy.
  assert abs(running[1] / recomputed[1] - 1) > 0.1, (recomputed, running)
  assert running[0] < recomputed[0] - 0.01, (recomputed, running)

  update = jax.jit(lambda v, x: run.eval_net.apply(v, x, train=True,
                                                   mutable=["batch_stats"])[1]["batch_stats"])
  full = [b["input"] for b in _batches(ds, "train") if np.all(b["mask"])]
  variables = running_vars
  for _ in range(max(1, 50 // len(full))):
    for x in full:
      variables = {"params": variables["params"], "batch_stats": update(variables, x)}
  jax.tree.map(np.testing.assert_array_equal, variables["params"], state.params)
  converged = _measure(evaluator, ds, variables)
  assert abs(converged[0] - recomputed[0]) <= 0.01, (recomputed, converged)
  assert converged[1] == pytest.approx(recomputed[1], rel=0.03), (recomputed, converged)


def test_an_evaluation_on_train_subsets_uses_them_for_the_statistics_and_the_bank(trained):
  config, ds, run, state, _ = trained
  evaluator = evaluation.make_evaluator(run.eval_net.apply)
  ecfg = config.eval.copy_and_resolve_references()
  ecfg.bn_images, ecfg.bank_images, ecfg.train_mode_norms = 128, 300, "final"
  record, bank, _ = evaluation.evaluate_state(evaluator, state, ds, ecfg, epoch=1.0,
                                              final=False)
  variables = evaluation.eval_variables(evaluator, state, evaluation.train_subset(ds, 128),
                                        _with(ecfg, bn_images=0))
  knn, norm = _measure(evaluator, evaluation.train_subset(ds, 300), variables)
  assert len(bank["label"]) == 300
  assert record["knn_accuracy"] == pytest.approx(knn, abs=1e-9)
  assert record["projector_norm_mean"] == pytest.approx(norm, rel=1e-5)
  assert not any(k.endswith("_train_mode") for k in record)  # only the final evaluation
  # The final evaluation with the probe: the whole train split comes back, the kNN
  # still uses the 300-image bank, and the train-mode norms are there.
  ecfg.linear_probe = True
  final, whole, _ = evaluation.evaluate_state(evaluator, state, ds, ecfg, epoch=1.0)
  assert len(whole["label"]) == len(ds.train)
  assert final["knn_accuracy"] == pytest.approx(knn, abs=1e-9)
  assert final["projector_norm_mean_train_mode"] > 0


def _with(ecfg, **fields):
  out = ecfg.copy_and_resolve_references()
  out.update(fields)
  return out
