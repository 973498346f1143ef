"""jnorm.cpu.batchnorm.BatchNorm against flax's nn.BatchNorm: the same variables, the
same forward bits, the same gradients (float32 rounding; float64 to machine precision),
locally and with statistics averaged over a named axis."""

import functools
import json
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnorm.cpu.batchnorm import BatchNorm
import multiprocess_worker as mw

SETTINGS = dict(momentum=0.9, epsilon=1e-5)


def _pair(dtype=jnp.float32, use_running_average=False, **kw):
  return tuple(cls(param_dtype=dtype, use_running_average=use_running_average, **SETTINGS,
                   **kw) for cls in (nn.BatchNorm, BatchNorm))


def _inputs(dtype, shape=(6, 5, 5, 16)):
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), shape, dtype)
  probe = jax.random.normal(jax.random.key(1), shape, dtype)  # a loss's weights
  return x, probe


def _variables(dtype):
  c = 16
  return {"params": {"scale": 1.0 + 0.1 * jax.random.normal(jax.random.key(2), (c,), dtype),
                     "bias": 0.1 * jax.random.normal(jax.random.key(3), (c,), dtype)},
          "batch_stats": {"mean": jnp.linspace(-1, 1, c, dtype=dtype),
                          "var": jnp.linspace(0.5, 2, c, dtype=dtype)}}


def test_same_variables_forward_bits_and_running_statistics():
  x, _ = _inputs(jnp.float32)
  theirs, ours = _pair()
  init = [m.init(jax.random.key(5), x) for m in (theirs, ours)]
  assert jax.tree.structure(init[0]) == jax.tree.structure(init[1])
  jax.tree.map(np.testing.assert_array_equal, init[0], init[1])
  variables = _variables(jnp.float32)
  outs = [jax.jit(functools.partial(m.apply, mutable=["batch_stats"]))(variables, x)
          for m in (theirs, ours)]
  jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])
  assert not np.array_equal(outs[1][1]["batch_stats"]["mean"],
                            variables["batch_stats"]["mean"])  # the update ran
  evals = [jax.jit(m.apply)(variables, x) for m in _pair(use_running_average=True)]
  np.testing.assert_array_equal(evals[0], evals[1])


def _grads(module, variables, x, probe):
  def loss(params, x):
    y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y) * probe)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 2e-5), (jnp.float64, 1e-12)])
def test_gradients_match_flax(dtype, rtol, x64):
  x, probe = _inputs(dtype)
  variables = _variables(dtype)
  theirs, ours = (_grads(m, variables, x, probe) for m in _pair(dtype))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


def test_gradients_match_finite_differences_in_float64(x64):
  x, probe = _inputs(jnp.float64, shape=(3, 2, 2, 16))
  variables = _variables(jnp.float64)
  ours = _pair(jnp.float64)[1]
  gx = _grads(ours, variables, x, probe)[1]

  def loss(x):
    y, _ = ours.apply(variables, x, mutable=["batch_stats"])
    return float(jnp.sum(jnp.sin(y) * probe))
  rng = np.random.default_rng(0)
  for _ in range(5):
    i = tuple(rng.integers(0, n) for n in x.shape)
    h = 1e-6
    fd = (loss(x.at[i].add(h)) - loss(x.at[i].add(-h))) / (2 * h)
    np.testing.assert_allclose(gx[i], fd, rtol=1e-7, atol=1e-9)


_SHARD_MAP_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from jnorm.cpu.batchnorm import BatchNorm
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (8, 3, 3, 16), jnp.float64)
    x = x * jnp.repeat(jnp.arange(1.0, 5.0), 2)[:, None, None, None]  # per-device stats
    probe = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)
    params = {"scale": jnp.linspace(0.5, 1.5, 16), "bias": jnp.linspace(-0.2, 0.2, 16)}
    stats = {"mean": jnp.zeros(16), "var": jnp.ones(16)}

    def grads(cls, axis_name):
      module = cls(use_running_average=False, momentum=0.9, epsilon=1e-5,
                   param_dtype=jnp.float64, axis_name=axis_name)
      def per_device(params, x, probe):
        def loss(params, x):
          y, _ = module.apply({"params": params, "batch_stats": stats}, x,
                              mutable=["batch_stats"])
          return jnp.sum(jnp.sin(y) * probe)
        return jax.grad(loss, argnums=(0, 1))(params, x)
      return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("batch"), P("batch")),
                                   out_specs=(P("batch"), P("batch")), check_vma=False))(
          params, x, probe)
    def rel(a, b):
      return max(float(jnp.max(jnp.abs(u - w)) / jnp.max(jnp.abs(w)))
                 for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    ours, theirs = grads(BatchNorm, "batch"), grads(nn.BatchNorm, "batch")
    print(json.dumps({"synced": rel(ours, theirs), "local": rel(grads(BatchNorm, None), theirs)}))
""")


def test_statistics_averaged_over_a_mesh_axis_give_flaxs_gradients():
  # Four devices under shard_map, as the trainer runs synced BatchNorm, in float64.
  proc = mw.run_on_cpu_devices(4, _SHARD_MAP_SCRIPT)
  diffs = json.loads(proc.stdout.strip().splitlines()[-1])
  assert diffs["synced"] < 1e-12, diffs
  assert diffs["local"] > 1e-3, diffs  # per-device statistics: a different gradient

