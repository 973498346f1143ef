"""jnorm's CPU kernel gradient against XLA's, layer by layer (the SmallResNet's layers).

For each convolution of the SmallResNet at 16 px (stem excluded: its 1-channel kernel
gradient is small either way), times `jnorm.cpu.kernels.kernel_grad` and XLA's own kernel
gradient (the VJP of `conv_xla` with respect to the kernel), each jitted on its own,
on the same random input and output gradient. Calls alternate between the two (A B,
then B A) for `--reps` repetitions; medians are reported with the ratio jnorm / XLA
(below 1: the kernels are faster) and the largest difference relative to XLA's largest
entry (float32 rounding: about 1e-6). This is the measurement behind a per-layer choice
between the two; whole steps are timed by train_step.py.

    python benchmarks/kernel_layers.py                  # batch 128, 31 repetitions
    python benchmarks/kernel_layers.py --batch 256 --reps 21

Prints one line per layer, then one JSON line. Needs jnorm's CPU kernels
(`jnorm.cpu.kernels.status()` says why they cannot run where they cannot).
"""

import argparse
import json
import statistics
import sys
import time

# (spatial size of the input, Cin, Cout, kernel size, stride): the SmallResNet's layers
# at 16 px, in the network's order.
LAYERS = ((16, 32, 32, 3, 1), (16, 32, 64, 3, 2), (16, 32, 64, 1, 2), (8, 64, 64, 3, 1),
          (8, 64, 128, 3, 2), (8, 64, 128, 1, 2), (4, 128, 128, 3, 1))


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--batch", type=int, default=128, help="images per call")
  ap.add_argument("--reps", type=int, default=31, help="timed calls of each function")
  ap.add_argument("--layers", default=None,
                  help="comma-separated indices into the layer list (default: all)")
  args = ap.parse_args(argv)
  if args.batch < 1 or args.reps < 1:
    ap.error("--batch and --reps must be at least 1")
  return args


def time_layer(layer, *, batch: int, reps: int, seed: int = 0) -> dict:
  """Median seconds of XLA's and jnorm's kernel gradient for one layer."""
  import jax
  import numpy as np
  from jnorm.cpu import conv
  from jnorm.cpu import kernels as cpu_kernels

  size, cin, cout, k, stride = layer
  strides, pad = (stride, stride), ((k // 2, k // 2),) * 2
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, size, size, cin)).astype(np.float32)
  w = (0.1 * rng.standard_normal((k, k, cin, cout))).astype(np.float32)
  dy = rng.standard_normal(conv.conv_xla(x, w, strides=strides, padding=pad).shape)
  dy = dy.astype(np.float32)

  def xla_grad(x, dy):
    _, vjp = jax.vjp(lambda w: conv.conv_xla(x, w, strides=strides, padding=pad), w)
    return vjp(dy)[0]

  fns = {"xla": jax.jit(xla_grad),
         "jnorm": jax.jit(lambda x, dy: cpu_kernels.kernel_grad(
             x, dy, w.shape, strides=strides, padding=pad))}
  want, got = (np.asarray(fns[name](x, dy)) for name in ("xla", "jnorm"))  # compile
  times = {name: [] for name in fns}
  for rep in range(reps):
    for name in (("xla", "jnorm") if rep % 2 == 0 else ("jnorm", "xla")):
      start = time.perf_counter()
      jax.block_until_ready(fns[name](x, dy))
      times[name].append(time.perf_counter() - start)
  xla_s, jnorm_s = (statistics.median(times[name]) for name in ("xla", "jnorm"))
  return {"layer": {"size": size, "cin": cin, "cout": cout, "kernel": k, "stride": stride},
          "xla_ms": 1e3 * xla_s, "jnorm_ms": 1e3 * jnorm_s, "ratio": jnorm_s / xla_s,
          "rel_diff": float(np.max(np.abs(got - want)) / np.max(np.abs(want)))}


def main(argv=None):
  args = parse_args(argv)
  import jnorm.cpu
  from jnorm.cpu import kernels as cpu_kernels
  jnorm.cpu.enable()  # the XLA flag and allocator, before the first computation

  if not cpu_kernels.available():
    print(f"kernel_layers: jnorm's CPU kernels cannot run here: {cpu_kernels.status()}",
          file=sys.stderr)
    return None
  chosen = (range(len(LAYERS)) if args.layers is None
            else [int(i) for i in args.layers.split(",")])
  records = []
  for i in chosen:
    r = time_layer(LAYERS[i], batch=args.batch, reps=args.reps)
    size, cin, cout, k, stride = LAYERS[i]
    print(f"{size:2d} px {cin:3d} -> {cout:3d} {k}x{k} stride {stride}: XLA {r['xla_ms']:7.2f} ms"
          f"  jnorm {r['jnorm_ms']:7.2f} ms  jnorm/XLA {r['ratio']:.2f}"
          f"  rel. diff {r['rel_diff']:.1e}", flush=True)
    records.append(r)
  result = {"batch": args.batch, "reps": args.reps,
            "kernel_vector_lanes": cpu_kernels.vector_lanes(), "layers": records}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
