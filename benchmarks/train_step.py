"""Throughput of the SimCLR train step (ResNet-18 on CIFAR-sized inputs, or the experiments'
SmallResNet with --arch small): jnorm, with its CPU tuning on or off, vs torch.

The step (the same as `../shared/bench/torch_baseline.py step`, relative to the
repository root): random images held in memory, both views [B, 32, 32, 3] through
ResNet-18 (CIFAR stem) + projector 512->128->128 (no BN) in two separate forward
passes (BN statistics per view, as the reference), the reference's one-directional
InfoNCE (t = 0.5), backward, SGD (momentum 0.9, lr 0.6, coupled weight decay 1e-6 on
every parameter, as torch.optim.SGD).
No data loading or augmentation is timed.

The torch baseline runs as a subprocess (its own warm-up, its own median) in rounds
interleaved with the jnorm timings, so that the machine's load hits both alike.
Compilation is untimed; every figure is the median over all timed steps.

  python benchmarks/train_step.py --arch small --image 16   # jnorm.cpu.enable() on
  python benchmarks/train_step.py --arch small --image 16 --cpu-tuning off  # stock
  python benchmarks/train_step.py --quick               # batch 16, 2 steps: smoke test
  python benchmarks/train_step.py --impls kernels,xla --rounds 1 --no-torch

`--cpu-tuning on` (the default) calls `jnorm.cpu.enable()` before the first computation
(XLA flag, allocator, BatchNorm gradient) and times each convolution of `--impls`
('kernels', 'xla', 'gemm': `jnorm.cpu.conv`); `off` times stock XLA and Flax. The flag
and the allocator are process-wide, so on and off are two runs, each against torch.

The torch interpreter (a virtual environment with torch 2.13; torch is not a jnorm
dependency) comes from `--torch-python PATH` or the JNORM_TORCH_PYTHON environment
variable; with neither, or without the baseline script, jnorm is timed alone.

Threads: XLA:CPU runs its intra-op (Eigen) pool on every core it sees; with
`--threads 1` this script sets `--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`, otherwise it leaves the default pool (os.cpu_count()
threads) and passes `--threads` to torch.set_num_threads. Prints one line per figure,
then one JSON line.

Each jnorm line also gives the fastest and the slowest step, the cores kept busy (CPU
time over wall time, median over steps) and how many steps took page faults. A slow
step that kept as many cores busy did the same work more slowly: the host was slower
(on this VM the same step ranged 0.118-0.226 s, benchmarks/README.md).

The matmul bound, measured in the same run: each round also times XLA's float32
matmul of two 2048 x 2048 matrices (its GFLOP/s: what this machine's matmul reaches
now), and the bound of a round is the step's FLOPs at that rate. The step's FLOPs are
XLA's count (`cost_analysis()` of the same step lowered with XLA's convolutions, since
jnorm's kernels are custom calls XLA cannot count; the multiply-adds on padding are
not counted). Each jnorm line ends with its step over the bound: the median over
rounds of the round's median step over the round's bound, so that the host's drift
between minutes moves both alike.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# The PyTorch baseline lives next to the repository, outside it: <repo>/../shared/bench.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SCRIPT = os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "bench", "torch_baseline.py"))


# --arch -> (jnorm model.backbone, input channels), as torch_baseline.py's CifarResNet.ARCHS.
ARCHS = {"resnet18": ("resnet18", 3), "small": ("small_resnet", 1)}


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--batch", type=int, default=128, help="pairs per step")
  ap.add_argument("--arch", choices=tuple(ARCHS), default="resnet18",
                  help="resnet18: CIFAR ResNet-18, 3 channels; small: the experiments' "
                       "SmallResNet (widths 32/64/128), 1 channel")
  ap.add_argument("--image", type=int, default=32)
  ap.add_argument("--steps", type=int, default=3, help="timed steps per round and system")
  ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
  ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--cpu-tuning", choices=("on", "off"), default="on",
                  help="on: jnorm.cpu.enable() first; off: stock XLA and Flax")
  ap.add_argument("--impls", default="kernels",
                  help="with --cpu-tuning on: comma list of jnorm.cpu.conv implementations "
                       "(kernels, xla, gemm)")
  ap.add_argument("--torch-python", default=os.environ.get("JNORM_TORCH_PYTHON"),
                  help="python of a venv with torch (default: $JNORM_TORCH_PYTHON)")
  ap.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
  ap.add_argument("--torch-malloc", action="store_true",
                  help="run torch with jnorm's glibc malloc settings too (as environment "
                       "variables, jnorm.cpu.flags.malloc_env), for a like-for-like allocator")
  ap.add_argument("--quick", action="store_true", help="batch 16, 2 steps, 1 round")
  args = ap.parse_args(argv)
  if args.quick:
    args.batch, args.steps, args.rounds, args.warmup = 16, 2, 1, 1
  return args


def configure_xla_threads(threads: int) -> str:
  """Sets XLA_FLAGS for the thread count (before jax is imported); returns the flags."""
  flags = os.environ.get("XLA_FLAGS", "")
  if threads == 1:
    flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  os.environ["XLA_FLAGS"] = flags.strip()
  return os.environ["XLA_FLAGS"]


def make_jnorm_step(impl: str, *, batch: int, image: int, arch: str = "resnet18",
                    seed: int = 0):
  """Returns (step, state, views): the SimCLR step with a donated state, compiled with
  `impl`'s convolution ('stock': `nn.Conv`; else `jnorm.cpu.conv.Conv(implementation=impl)`)
  and the BatchNorm in place now."""
  import functools
  import flax.linen as nn
  import jax
  import optax
  from jnorm import losses, models
  from jnorm.cpu import conv as cpu_conv

  cfg = models.default_model_config()
  backbone, channels = ARCHS[arch]
  cfg.backbone, cfg.stem = backbone, "cifar"
  cfg.projector_dims, cfg.projector_bn, cfg.predictor_hidden = (128, 128), False, 0
  net = models.build_ssl_net(cfg)
  key_init, key_x1, key_x2 = jax.random.split(jax.random.key(seed), 3)
  shape = (batch, image, image, channels)
  views = (jax.random.normal(key_x1, shape), jax.random.normal(key_x2, shape))
  variables = net.init(key_init, views[0][:2], train=True)
  # torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-6): decay added to the gradient
  # of every parameter (BN and biases too), then heavy-ball momentum.
  tx = optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.6, momentum=0.9))
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

  def loss_fn(params, batch_stats, x1, x2):
    out1, mut = net.apply({"params": params, "batch_stats": batch_stats}, x1,
                          train=True, mutable=["batch_stats"])
    # Second view through the updated running stats, as two torch forward passes.
    out2, mut = net.apply({"params": params, "batch_stats": mut["batch_stats"]}, x2,
                          train=True, mutable=["batch_stats"])
    loss = losses.infonce_loss(out1["projector"], out2["projector"], temperature=0.5)
    return loss, mut["batch_stats"]

  def step(state, x1, x2):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, x1, x2)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  conv = (nn.Conv if impl == "stock"
          else functools.partial(cpu_conv.Conv, implementation=impl))
  with models.layers.using(conv=conv):  # the layers are looked up when traced
    step = jax.jit(step, donate_argnums=0).lower(state, *views).compile()
  return step, state, views


MATMUL_N = 2048


def step_flops(*, batch: int, image: int, arch: str) -> float:
  """The step's FLOPs as XLA counts them: the step on XLA's convolutions, lowered (not
  compiled) and cost-analysed."""
  step, _, _ = make_jnorm_step("stock", batch=batch, image=image, arch=arch)
  return float(step.cost_analysis()["flops"])


def make_matmul_probe(n: int = MATMUL_N):
  """Returns rate(calls): the GFLOP/s of XLA's float32 [n, n] x [n, n] matmul now
  (median of `calls` timed calls; compiled and warmed up here)."""
  import jax
  import jax.numpy as jnp
  a, b = (jax.random.normal(jax.random.key(k), (n, n)) for k in (1, 2))
  matmul = jax.jit(jnp.dot)
  jax.block_until_ready(matmul(a, b))

  def rate(calls: int = 5) -> float:
    times = []
    for _ in range(calls):
      t0 = time.perf_counter()
      jax.block_until_ready(matmul(a, b))
      times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9
  return rate


def time_jnorm(runner, steps: int) -> list[float]:
  import jax
  step, state, views = runner["step"], runner["state"], runner["views"]
  times = []
  for _ in range(steps):
    t0, c0 = time.perf_counter(), time.process_time()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    state, loss = step(state, *views)
    jax.block_until_ready((state, loss))
    times.append(time.perf_counter() - t0)
    # CPU seconds of this process (all threads): less sensitive than wall time to
    # other processes competing for the cores, but counts spin-waiting threads. A slow
    # step whose CPU time grew in proportion did the same work more slowly (the host);
    # page faults (memory given back and touched again) are counted apart.
    runner.setdefault("cpu_times", []).append(time.process_time() - c0)
    runner.setdefault("faults", []).append(
        resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
  runner["state"], runner["loss"] = state, float(loss)
  return times


def run_torch(args) -> dict | None:
  cmd = [args.torch_python, TORCH_SCRIPT, "step", "--arch", args.arch,
         "--batch", str(args.batch),
         "--image", str(args.image), "--steps", str(args.steps),
         "--threads", str(args.threads)]
  env = dict(os.environ)
  if args.torch_malloc:
    from jnorm.cpu import flags
    env.update(flags.malloc_env())
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if proc.returncode != 0:
    print(f"torch baseline failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  args = parse_args(argv)
  configure_xla_threads(args.threads)
  import jax
  import jnorm.cpu
  impls = [s for s in args.impls.split(",") if s] if args.cpu_tuning == "on" else ["stock"]
  tuning = jnorm.cpu.enable(conv=impls[0]) if args.cpu_tuning == "on" else None
  print(f"CPU tuning: {tuning}", flush=True)
  xla_flags = os.environ.get("XLA_FLAGS", "")
  print(f"XLA_FLAGS: {xla_flags!r}", flush=True)
  # The kernels' vector width: 16 floats with AVX-512, 8 with AVX2 (figures from machines
  # of different widths do not compare).
  lanes = (jnorm.cpu.kernels.vector_lanes()
           if jax.default_backend() == "cpu" and "kernels" in impls else None)
  print(f"jnorm's CPU kernels: {lanes} floats per vector", flush=True)
  torch_ok = (not args.no_torch and bool(args.torch_python)
              and os.path.exists(args.torch_python)
              and os.path.exists(TORCH_SCRIPT))
  if not args.no_torch and not torch_ok:
    print(f"torch baseline unavailable (--torch-python / JNORM_TORCH_PYTHON: "
          f"{args.torch_python}; {TORCH_SCRIPT}); "
          "reporting jnorm alone")
  runners = {}
  for impl in impls:
    step, state, views = make_jnorm_step(impl, batch=args.batch, image=args.image,
                                         arch=args.arch)
    t0 = time.perf_counter()
    runner = {"step": step, "state": state, "views": views}
    time_jnorm(runner, 1 + args.warmup)  # compile + warm-up, untimed
    runner["compile_s"] = time.perf_counter() - t0
    runner["times"], runner["cpu_times"], runner["faults"] = [], [], []
    runners[impl] = runner
  flops = step_flops(batch=args.batch, image=args.image, arch=args.arch)
  matmul_rate = make_matmul_probe()
  rates, torch_times = [], []
  for r in range(args.rounds):
    if torch_ok:
      res = run_torch(args)
      if res is not None:
        torch_times += res["step_times_s"]
        print(f"round {r}: torch median {res['median_step_s']:.3f} s/step", flush=True)
    for impl, runner in runners.items():
      times = time_jnorm(runner, args.steps)
      runner["times"] += times
      runner.setdefault("round_medians", []).append(statistics.median(times))
      print(f"round {r}: jnorm {impl} median {statistics.median(times):.3f} s/step",
            flush=True)
    rates.append(matmul_rate())
    print(f"round {r}: matmul {MATMUL_N}^3 {rates[-1]:.0f} GFLOP/s, bound "
          f"{flops / 1e9 / rates[-1]:.3f} s/step", flush=True)

  result = {"arch": args.arch, "batch": args.batch, "image": args.image, "threads": args.threads,
            "cpu_count": os.cpu_count(), "xla_flags": xla_flags, "kernel_vector_lanes": lanes,
            "backend": jax.default_backend(), "rounds": args.rounds,
            "steps_per_round": args.steps, "torch_malloc": args.torch_malloc,
            "cpu_tuning": args.cpu_tuning}
  bounds = [flops / 1e9 / rate for rate in rates]
  result["matmul"] = {"n": MATMUL_N, "gflop_per_s": [round(x, 1) for x in rates],
                      "step_gflop": round(flops / 1e9, 3),
                      "median_bound_s": round(statistics.median(bounds), 4)}
  print(f"matmul bound : {statistics.median(bounds):8.3f} s/step  ({flops / 1e9:.2f} "
        f"GFLOP at {statistics.median(rates):.0f} GFLOP/s, rounds "
        f"{min(rates):.0f}-{max(rates):.0f})")
  torch_pps = None
  if torch_times:
    med = statistics.median(torch_times)
    torch_pps = args.batch / med
    result["torch"] = {"median_step_s": round(med, 4), "pairs_per_sec": round(torch_pps, 3),
                       "n": len(torch_times)}
    print(f"torch        : {med:8.3f} s/step  {torch_pps:7.2f} pairs/s")
  for impl, runner in runners.items():
    med = statistics.median(runner["times"])
    pps = args.batch / med
    entry = {"median_step_s": round(med, 4), "pairs_per_sec": round(pps, 3),
             "n": len(runner["times"]), "compile_s": round(runner["compile_s"], 1),
             "min_step_s": round(min(runner["times"]), 4),
             "max_step_s": round(max(runner["times"]), 4),
             "median_cpu_s": round(statistics.median(runner["cpu_times"]), 4),
             "cpu_per_wall": round(statistics.median(
                 c / t for c, t in zip(runner["cpu_times"], runner["times"])), 2),
             "steps_with_page_faults": sum(f > 0 for f in runner["faults"]),
             "last_loss": round(runner["loss"], 4)}
    to_bound = [t / b for t, b in zip(runner["round_medians"], bounds)]
    entry["ratio_to_bound"] = round(statistics.median(to_bound), 3)
    entry["ratio_to_bound_range"] = [round(min(to_bound), 3), round(max(to_bound), 3)]
    line = (f"jnorm {impl:8s}: {med:8.3f} s/step  {pps:7.2f} pairs/s  "
            f"(min {entry['min_step_s']:.3f}, max {entry['max_step_s']:.3f}; "
            f"cpu {entry['median_cpu_s']:.2f} s/step, {entry['cpu_per_wall']:.2f} cores; "
            f"page faults in {entry['steps_with_page_faults']} of {entry['n']} steps; "
            f"{entry['ratio_to_bound']:.2f}x the matmul bound)")
    if torch_pps:
      entry["ratio_to_torch"] = round(pps / torch_pps, 3)
      line += f"  ratio jnorm/torch {pps / torch_pps:.2f}"
    result[f"jnorm_{impl}"] = entry
    print(line)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
