"""GPU readiness: SimCLR ResNet-18 epoch throughput and MFU, then a short Fashion-MNIST run.

Two measurements, meant for a machine with a GPU (everything also runs on CPU, at
`--tiny` sizes, so the test suite can check the script):

1. ResNet-18 SimCLR epoch on CIFAR-sized synthetic data. `--num-images` random images
   (default 50,000, [S, S, 3] uint8 with S = `--image-size`, default 32) are generated
   on the device(s) and split there into the epoch's batches of `--batch` (default 256)
   before any timing: no host-to-device transfer per step. The step is the project's
   own: configs/simclr.py:cifar10 (ResNet-18, CIFAR stem, projector 512-128-128,
   InfoNCE t 0.5, SGD lr 0.6 with warm-up/cosine, the `cifar_reference` augmentations
   inside the step) built by `jnorm.training.build.build_run` on a mesh over all devices,
   i.e. the `jax.shard_map` train step `make_train_step` returns, with the state
   replicated by `step.replicate`. For each `--dtypes` entry (`config.model.compute_dtype`,
   default float32 and bfloat16), the step is compiled once (`lower(...).compile()`, the
   compiled step is what is timed), run `--warmup` untimed steps, then `--steps` timed
   steps dispatched back to back with one sync at the end (as the training loop runs):
   s/step = elapsed / steps. Epoch time = (num_images // batch) x s/step (extrapolated).
   FLOPs per step = XLA's cost analysis of the compiled step (`cost_analysis()['flops']`,
   the per-device SPMD program: everything XLA executes, augmentations and any
   rematerialisation included), so MFU = flops_per_step_per_device / (s/step) / peak of
   one device. Peak: `--peak-tflops float32=X,bfloat16=Y` (TFLOP/s of one device), else
   on a GPU the H100/H200 SXM datasheet values (float32 67 TFLOP/s without tensor cores,
   bfloat16 989 TFLOP/s dense; whatever GPU it is: check `device_kind`); on CPU no
   default, MFU null. Each line names the peak used and where it came from. At JAX's
   default matmul precision XLA:GPU runs float32 convolutions on TF32 tensor cores, so
   float32 MFU against 67 may exceed 1: float32 lines on a GPU also give
   `mfu_vs_tf32_peak` (TF32 dense, 494.5 TFLOP/s); `--matmul-precision highest` times
   true float32.
   `--backbone` and `--augment` override the config's model and recipe.

2. The Fashion-MNIST comparison base (configs/compare_fmnist.py `base_config()`, read as
   the `base` of `jnorm.jobs.load_config_file('configs/compare_fmnist.py')`: SmallResNet
   16 px, 5,000 train images, batch 128, kNN after every epoch) trained for
   `--fmnist-epochs` (default 3) epochs by the training job (`train_and_evaluate`) in a
   temporary workdir, from the idx files in `--fmnist-dir` (default: a folder
   `fashion-mnist` next to this script if it exists, else Debian's
   /usr/share/datasets/fashion-mnist). Reports the whole job's wall time (`wall_s`: data
   loading, initialisation, compilation, every evaluation), `epoch_wall_s`: the wall
   time between consecutive kNN evaluations (one epoch of training + the evaluation
   after it, as a comparison run spends it; the first also compiles the train step),
   `train_s_per_epoch` (the training loop's `train_seconds_per_step` x steps per epoch:
   compile and in-loop evaluations included) and the final kNN accuracy.
   `--skip-fmnist` skips it; without the files it prints a `"skipped": true` line.

`--tiny` (CPU smoke test, what tests/test_gpu_readiness_script.py runs): SmallResNet
with native convolutions, no augmentation, 8x8 images, batch 8, 32 images, 1 warm-up +
2 timed steps per dtype; Fashion-MNIST with 10 train / 10 test images per class, batch
32, one step (0.34 epochs), kNN k 10 at the start and the end only.

Prints one JSON line per measurement (lines starting with '{'; progress goes to stderr)
and exits 0.

  python benchmarks/gpu_readiness.py                    # GPU: 50,000 images, batch 256
  python benchmarks/gpu_readiness.py --tiny             # CPU smoke test (~40 s on 2 busy cores)
  python benchmarks/gpu_readiness.py --dtypes bfloat16 --batch 512 --steps 50
"""

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPT_DIR)
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
DEBIAN_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
# One H100 / H200 SXM (same compute; datasheet, dense): float32 without tensor cores,
# bfloat16 tensor cores without sparsity. TFLOP/s of one device.
GPU_DEFAULT_PEAKS = {"float32": 67.0, "bfloat16": 989.0}
GPU_DEFAULT_SOURCE = "default: H100/H200 SXM datasheet (f32 non-tensor, bf16 dense)"
# TF32 tensor cores, dense: what XLA:GPU uses for float32 convolutions and matmuls at
# JAX's default matmul precision, so float32 MFU is also given against it.
GPU_TF32_PEAK = 494.5


def default_fmnist_dir() -> str:
  local = os.path.join(SCRIPT_DIR, "fashion-mnist")
  return local if os.path.isdir(local) else DEBIAN_FMNIST_DIR


def parse_peaks(text):
  """'float32=67,bfloat16=989' -> {'float32': 67.0, 'bfloat16': 989.0} (None for None)."""
  if not text:
    return None
  peaks = {}
  for item in text.split(","):
    name, sep, value = item.partition("=")
    if not sep:
      raise argparse.ArgumentTypeError(
          f"--peak-tflops item {item!r} is not DTYPE=TFLOPS, e.g. float32=67,bfloat16=989")
    peaks[name.strip()] = float(value)
  return peaks


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--num-images", type=int, default=50000, help="synthetic images per epoch")
  ap.add_argument("--batch", type=int, default=256, help="global batch (images per step)")
  ap.add_argument("--image-size", type=int, default=32)
  ap.add_argument("--steps", type=int, default=30, help="timed steps per dtype")
  ap.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
  ap.add_argument("--dtypes", default="float32,bfloat16",
                  help="comma list of config.model.compute_dtype values")
  ap.add_argument("--backbone", default="resnet18", help="config.model.backbone")
  ap.add_argument("--augment", default=None,
                  help="config.augment of the ResNet step (default: the config's "
                       "'cifar_reference'; 'none' feeds the images as both views)")
  ap.add_argument("--data-dtype", default="uint8", choices=("uint8", "float32"),
                  help="dtype of the device-resident images (the step takes both)")
  ap.add_argument("--peak-tflops", type=parse_peaks, default=None,
                  help="peak TFLOP/s of one device per dtype, e.g. float32=67,bfloat16=989 "
                       "(default on GPU: those H100/H200 values; on CPU: none, MFU null)")
  ap.add_argument("--matmul-precision", default=None,
                  help="sets jax_default_matmul_precision (e.g. 'highest': true float32 "
                       "instead of TF32 on GPU); default: JAX's default")
  ap.add_argument("--fmnist-epochs", type=float, default=3.0)
  ap.add_argument("--fmnist-dir", default=None,
                  help="folder of the four Fashion-MNIST idx .gz files (default: "
                       "./fashion-mnist next to this script if present, else "
                       f"{DEBIAN_FMNIST_DIR})")
  ap.add_argument("--skip-fmnist", action="store_true")
  ap.add_argument("--skip-resnet", action="store_true")
  ap.add_argument("--tiny", action="store_true",
                  help="CPU smoke test: SmallResNet (stock Flax, augment none) at 8x8, "
                       "batch 8, 32 images, 2 timed steps after 1 warm-up; Fashion-MNIST "
                       "10 train / 10 test images per class, batch 32, 1 step (0.34 epochs)")
  args = ap.parse_args(argv)
  if args.fmnist_dir is None:
    args.fmnist_dir = default_fmnist_dir()
  if args.tiny:
    args.num_images, args.batch, args.image_size = 32, 8, 8
    args.backbone, args.augment = "small_resnet", "none"
    args.steps, args.warmup = 2, 1
    args.fmnist_epochs = 0.34  # 1 of 3 steps of 32 on 100 images
  return args


def log(msg: str) -> None:
  print(f"gpu_readiness: {msg}", file=sys.stderr, flush=True)


def emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def flops_of(compiled) -> float:
  """FLOPs of a compiled executable: `cost_analysis()` is a dict in recent JAX, a list of
  one dict per program in older ones (summed)."""
  cost = compiled.cost_analysis()
  if cost is None:
    return float("nan")
  if isinstance(cost, dict):
    cost = [cost]
  return float(sum(c.get("flops", 0.0) for c in cost if c))


def device_info() -> dict:
  import jax
  dev = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "num_devices": jax.device_count(), "jax_version": jax.__version__}


def peak_for(dtype: str, args, backend: str):
  """(peak TFLOP/s of one device or None, where it came from)."""
  if args.peak_tflops is not None:
    if dtype in args.peak_tflops:
      return args.peak_tflops[dtype], "--peak-tflops"
    return None, f"--peak-tflops has no {dtype}"
  if backend == "gpu":
    return GPU_DEFAULT_PEAKS.get(dtype), GPU_DEFAULT_SOURCE
  return None, f"none for {backend} (give --peak-tflops)"


def resnet_config(args, compute_dtype: str):
  """configs/simclr.py:cifar10 at the benchmark's batch, image size and dtype."""
  from jnorm import jobs
  config = jobs.load_config_file(os.path.join(CONFIG_DIR, "simclr.py"), "cifar10")
  config.batch_size = args.batch
  config.model.backbone = args.backbone
  config.model.compute_dtype = compute_dtype
  config.data.image_size = args.image_size
  if args.augment is not None:
    config.augment = args.augment
  return config


def synthetic_batches(mesh, *, num_images, batch, image_size, data_dtype, seed=0):
  """The epoch's batches, [B, S, S, 3] each, sliced on the device(s) from one
  device-resident random array, placed as the train step takes them (split along the
  mesh axis). No image comes from the host (only the slice indices, before timing)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from jnorm.training import step as ts

  steps = num_images // batch
  shape = (steps, batch, image_size, image_size, 3)

  def make(key):
    if data_dtype == "uint8":
      return jax.random.bits(key, shape, jnp.uint8)
    return jax.random.uniform(key, shape, jnp.float32)

  data = jax.jit(make, out_shardings=NamedSharding(mesh, P(None, ts.AXIS)))(
      jax.random.key(seed))
  batch_sharding = NamedSharding(mesh, P(ts.AXIS))
  take = jax.jit(lambda d, i: d[i], out_shardings=batch_sharding)
  batches = [take(data, i) for i in range(steps)]  # one slice per step, before timing
  jax.block_until_ready(batches)
  del data
  return batches


def bench_resnet(args, compute_dtype: str, info: dict) -> dict:
  import jax
  from jnorm.training import build
  from jnorm.training import step as ts

  config = resnet_config(args, compute_dtype)
  mesh = ts.make_mesh()
  if args.batch % jax.device_count():
    raise SystemExit(f"--batch {args.batch} is not divisible by the {jax.device_count()} "
                     "devices")
  steps_per_epoch = args.num_images // args.batch
  if steps_per_epoch == 0:
    raise SystemExit(f"--num-images {args.num_images} < --batch {args.batch}")
  run = build.build_run(config, mesh=mesh,
                        input_shape=(args.image_size, args.image_size, 3),
                        steps_per_epoch=steps_per_epoch)
  state = ts.replicate(jax.device_get(run.init_state()), mesh)
  batches = synthetic_batches(mesh, num_images=args.num_images, batch=args.batch,
                              image_size=args.image_size, data_dtype=args.data_dtype)
  t0 = time.perf_counter()
  compiled = run.train_step.lower(state, {"input": batches[0]}).compile()
  compile_s = time.perf_counter() - t0
  flops = flops_of(compiled)
  n = len(batches)
  metrics = None
  for i in range(args.warmup):
    state, metrics = compiled(state, {"input": batches[i % n]})
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for i in range(args.warmup, args.warmup + args.steps):
    state, metrics = compiled(state, {"input": batches[i % n]})
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - t0
  s_per_step = elapsed / args.steps
  peak, peak_source = peak_for(compute_dtype, args, info["backend"])
  achieved_tflops = flops / s_per_step / 1e12
  mfu = achieved_tflops / peak if peak else None
  precision = jax.config.jax_default_matmul_precision
  extra = {}
  if (compute_dtype == "float32" and info["backend"] == "gpu" and precision is None
      and args.peak_tflops is None):
    extra = {"tf32_peak_tflops": GPU_TF32_PEAK,
             "mfu_vs_tf32_peak": achieved_tflops / GPU_TF32_PEAK}
  return {
      "measurement": "simclr_resnet_epoch", **info, "dtype": compute_dtype,
      "backbone": args.backbone,
      "augment": config.augment, "batch": args.batch, "image_size": args.image_size,
      "data_dtype": args.data_dtype, "num_images": args.num_images,
      "steps_per_epoch": steps_per_epoch, "timed_steps": args.steps,
      "warmup_steps": args.warmup, "compile_s": round(compile_s, 2),
      "s_per_step": s_per_step, "images_per_s": args.batch / s_per_step,
      "s_per_epoch": steps_per_epoch * s_per_step,
      "flops_per_step_per_device": flops,
      "flops_per_step": flops * info["num_devices"],
      "achieved_tflops_per_device": achieved_tflops,
      "peak_tflops": peak, "peak_source": peak_source, "mfu": mfu, **extra,
      "matmul_precision": precision or "default",
      "loss": float(ts.local_copy(metrics)["loss"]),
  }


def fmnist_config(args):
  """configs/compare_fmnist.py's base_config(), with the run's length and data folder."""
  from jnorm import jobs
  config = copy.deepcopy(
      jobs.load_config_file(os.path.join(CONFIG_DIR, "compare_fmnist.py")).base)
  config.num_epochs = float(args.fmnist_epochs)
  config.data.data_dir = args.fmnist_dir
  if args.tiny:
    config.data.train_per_class = 10
    config.data.test_per_class = 10
    config.batch_size = 32
    config.optim.warmup_epochs = 0.0
    config.eval.knn_k = 10
    config.eval.every_epochs = 0
    config.eval.powers_of_two = False
  return config


@contextlib.contextmanager
def eval_timestamps():
  """Records time.perf_counter() at every kNN evaluation the training loop logs (its
  `MetricsWriter.write(..., kind='eval')` calls), to split the run into epochs; the
  writer is restored afterwards."""
  from jnorm.training import metrics as metrics_lib
  stamps = []
  original = metrics_lib.MetricsWriter.write

  def write(self, step, scalars, *, kind="train"):
    if kind == "eval":
      stamps.append(time.perf_counter())
    return original(self, step, scalars, kind=kind)
  metrics_lib.MetricsWriter.write = write
  try:
    yield stamps
  finally:
    metrics_lib.MetricsWriter.write = original


def bench_fmnist(args, info: dict) -> dict:
  from jnorm.data import fashion_mnist
  from jnorm.training import loop

  config = fmnist_config(args)
  with tempfile.TemporaryDirectory(prefix="gpu_readiness_fmnist_") as workdir, \
       eval_timestamps() as stamps:
    t0 = time.perf_counter()
    results = loop.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - t0
  steps_per_epoch = results["steps_per_epoch"]
  epochs = [r["epoch"] for r in results["knn_curve"]]
  # Wall time between consecutive kNN evaluations: the epoch's training steps plus the
  # evaluation after it (the first one also compiles the train step).
  epoch_wall = [{"epochs": f"{a:g}-{b:g}", "wall_s": t1 - t0_}
                for a, b, t0_, t1 in zip(epochs, epochs[1:], stamps, stamps[1:])]
  return {
      "measurement": "fmnist_base", **info, "dtype": config.model.compute_dtype,
      "backbone": config.model.backbone,
      "batch": config.batch_size, "image_size": config.data.image_size,
      "fmnist_dir": args.fmnist_dir,
      "data_dir_is_debian": os.path.abspath(args.fmnist_dir) == fashion_mnist.DEBIAN_DIR,
      "train_images": steps_per_epoch * config.batch_size, "epochs": results["epochs"],
      "steps": results["steps"], "steps_per_epoch": steps_per_epoch,
      "wall_s": wall,
      "train_s_per_epoch": results["train_seconds_per_step"] * steps_per_epoch,
      "images_per_s": config.batch_size / results["train_seconds_per_step"],
      "epoch_wall_s": epoch_wall,
      "knn_accuracy": results["knn_accuracy"], "final_loss": results["final_loss"],
      "knn_curve": [{"epoch": r["epoch"], "knn_accuracy": r["knn_accuracy"]}
                    for r in results["knn_curve"]],
  }


def fmnist_files_present(directory: str) -> bool:
  from jnorm.data import fashion_mnist
  return all(os.path.exists(os.path.join(directory, f))
             for pair in fashion_mnist.FILES.values() for f in pair)


def main(argv=None) -> int:
  args = parse_args(argv)
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  if args.matmul_precision:
    import jax
    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
  info = device_info()
  log(f"{info['num_devices']} x {info['device_kind']} ({info['backend']})")
  if not args.skip_resnet:
    for dtype in [d for d in args.dtypes.split(",") if d]:
      log(f"{args.backbone} {dtype}: batch {args.batch}, {args.image_size} px, "
          f"{args.num_images} images, {args.warmup} warm-up + {args.steps} timed steps")
      record = bench_resnet(args, dtype, info)
      mfu = "null" if record["mfu"] is None else f"{record['mfu']:.3f}"
      log(f"{dtype}: {record['images_per_s']:.1f} images/s, {record['s_per_epoch']:.2f} "
          f"s/epoch, {record['achieved_tflops_per_device']:.3f} TFLOP/s, MFU {mfu} "
          f"(peak {record['peak_tflops']} TFLOP/s, {record['peak_source']})")
      emit(record)
  if not args.skip_fmnist:
    if fmnist_files_present(args.fmnist_dir):
      log(f"Fashion-MNIST base config, {args.fmnist_epochs} epochs from {args.fmnist_dir}")
      record = bench_fmnist(args, info)
      log(f"Fashion-MNIST: {record['train_s_per_epoch']:.1f} s/epoch, "
          f"kNN {record['knn_accuracy']:.4f}")
      emit(record)
    else:
      emit({"measurement": "fmnist_base", **info, "skipped": True,
            "reason": f"no Fashion-MNIST idx files in {args.fmnist_dir}"})
  return 0


if __name__ == "__main__":
  sys.exit(main())
