"""Paired seeds across the arms of a comparison: seed k of every arm starts from the same
network (before its cut), sees the same batches and draws the same augmentation keys."""

import jax
import numpy as np

from jnorm import data
from jnorm import optim
from jnorm.jobs import compare
from jnorm.training import build
from jnorm.training import config as train_config


def _comparison():
  base = train_config.defaults()
  base.data.image_size = 8
  base.batch_size = 32
  variants = {"default": {}, "cut3_all": {"norm": {"cut_factor": 3.0}},
              "gradscale1": {"norm": {"gradscale_power": 1.0},
                             "optim": {"learning_rate": 0.01}}}
  return compare.comparison_config(base=base, variants=variants, run_variants=list(variants),
                                   seeds=(3, 4), report_epochs=(1,), title="t")


def _init(run_config):
  ds = data.load_dataset(run_config.data)
  run = build.build_run(run_config, mesh=None, **build.run_info(ds, run_config))
  return ds, jax.device_get(run.init_state())


def test_same_seed_same_init_data_order_and_augmentation_keys_in_every_arm():
  runs = compare.variant_configs(_comparison())
  by_seed = {}
  for arm, seed, cfg in runs:
    by_seed.setdefault(seed, {})[arm] = cfg
  states = {}
  for seed, arms in by_seed.items():
    for arm, cfg in arms.items():
      ds, state = _init(cfg)
      batches = data.train_batches(ds, batch_size=cfg.batch_size, seed=cfg.seed)
      states[(seed, arm)] = (state, [next(batches)["input"] for _ in range(2)])
  for seed in by_seed:
    default, first = states[(seed, "default")]
    for arm in ("cut3_all", "gradscale1"):
      state, batches = states[(seed, arm)]
      np.testing.assert_array_equal(state.rng, default.rng)  # augmentation keys
      for a, b in zip(batches, first):
        np.testing.assert_array_equal(a, b)  # data order
    # The cut arm is the default arm's initial network divided by 3, exactly.
    cut = optim.cut_init(default.params, cut_factor=3.0, cut_scope="all", cut_bn_affine=True)
    jax.tree.map(np.testing.assert_array_equal, states[(seed, "cut3_all")][0].params, cut)
    jax.tree.map(np.testing.assert_array_equal, states[(seed, "gradscale1")][0].params,
                 default.params)
  # Different seeds do differ (the test could fail).
  assert not np.array_equal(states[(3, "default")][0].rng, states[(4, "default")][0].rng)
