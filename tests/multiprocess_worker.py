"""A tiny SSL network for the train-step tests, and the worker of the 2-process test.

As a script: `python multiprocess_worker.py OUT.npz PROCESS_ID NUM_PROCESSES PORT` runs
3 SimCLR steps (global negatives, synced BatchNorm) on a fixed global batch of 16, with
`jax.distributed` over gloo when NUM_PROCESSES > 1, each process feeding its contiguous
slice of the batch, and saves the losses and the final parameters.
"""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax



class _Projector(nn.Module):
  @nn.compact
  def __call__(self, h):
    return nn.Dense(8, name="dense2")(nn.relu(nn.Dense(16, name="dense1")(h)))


class TinyNet(nn.Module):
  """x [B, ...] -> {'backbone' [B, 16], 'projector' [B, 8](, 'predictor' [B, 8])}."""
  bn_axis_name: object = None
  predictor: bool = False

  @nn.compact
  def __call__(self, x, train=True):
    h = nn.Dense(16)(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name,
                     momentum=0.9)(h)
    h = nn.relu(h)
    out = {"backbone": h}
    z = _Projector(name="projector")(h)
    out["projector"] = z
    if self.predictor:
      p = nn.Dense(16)(z)
      p = nn.relu(nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name,
                               momentum=0.9)(p))
      out["predictor"] = nn.Dense(8)(p)
    return out


def run_on_cpu_devices(num_devices: int, script: str, *args: str,
                       **kwargs) -> subprocess.CompletedProcess:
  """Runs `python -c script *args` on `num_devices` virtual CPU devices (a fresh
  interpreter: the flag must be set before jax is imported) and fails the calling test
  with the script's stderr if it exits non-zero. kwargs go to `subprocess.run` (cwd)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  proc = subprocess.run([sys.executable, "-c", script, *args], env=env,
                        capture_output=True, text=True, timeout=300, **kwargs)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def noise_views(key, ids, images):
  """A stand-in augmentation keyed per global example: x ± 0.1·noise(key, id)."""
  noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), images.shape[1:]))(ids)
  return images + 0.1 * noise, images - 0.1 * noise


def global_batch(batch_size=16, shape=(4, 4, 1), seed=0):
  return np.random.default_rng(seed).random((batch_size,) + shape, np.float32)


def run(process_id: int, num_processes: int, port: int):
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id)
  from jnorm import methods
  from jnorm.training import step as ts
  net = TinyNet(bn_axis_name=ts.AXIS)
  tx = optax.sgd(0.5, momentum=0.9)
  state = ts.create_train_state(net=net, tx=tx, seed=0, sample_input=jnp.zeros((2, 4, 4, 1)))
  mesh = ts.make_mesh()
  spec = methods.MethodSpec(negatives="global", axis_name=ts.AXIS)
  step = ts.make_train_step(apply_fn=net.apply, tx=tx, spec=spec, schedule=lambda s: 0.5,
                            mesh=mesh, augment_fn=noise_views)
  state = ts.replicate(state, mesh)
  x = global_batch()
  per = x.shape[0] // num_processes
  local = x[process_id * per:(process_id + 1) * per]
  losses = []
  for _ in range(3):
    state, metrics = step(state, ts.shard_batch({"input": local}, mesh))
    losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))
  leaves = jax.tree.leaves(ts.local_copy(state.params))
  return np.asarray(losses), leaves


if __name__ == "__main__":
  out, pid, nproc, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
  losses, leaves = run(pid, nproc, port)
  np.savez(out, losses=losses, **{f"p{i}": leaf for i, leaf in enumerate(leaves)})
