"""Augmented view pairs per second: jnorm's jitted `two_views` vs a per-image pipeline.

    python benchmarks/augment.py [--batch_size 256] [--repeats 7] [--torch-python PATH]

Both sides augment the same kind of input: a batch of random 32x32x3 uint8 images, two
views each, with the `cifar_reference` recipe (docs/paper.md §4.2: RandomResizedCrop(0.2, 1),
flip 0.5, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2).
- jnorm: `jax.jit(two_views)` on the whole batch; compile and one warm-up call untimed.
- reference kind: torchvision transforms on PIL images, one image at a time (what a
  PyTorch Dataset's __getitem__ does), run by `--torch-python` (default $JNORM_TORCH_PYTHON;
  a venv with torch and torchvision) as a subprocess, since jnorm's venv has no torch. If that
  interpreter is missing, a PIL-only per-image pipeline with the same ops runs instead.
Timings are medians over `--repeats` batches. Prints both rates, the ratio, then JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

_TORCH_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np, torch
from PIL import Image
from torchvision import transforms as T
batch, repeats, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
aug = T.Compose([
    T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(0.5),
    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2),
    T.ToTensor()])
images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
pil = [Image.fromarray(x) for x in images]
def run():
  v1 = torch.stack([aug(im) for im in pil]); v2 = torch.stack([aug(im) for im in pil])
  return v1, v2
run()  # warm-up
times = []
for _ in range(repeats):
  t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(times), "times_s": times,
                  "torch": torch.__version__}))
"""


def time_jnorm(batch_size: int, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jnorm import augment
  images = np.random.default_rng(0).integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
  images = jax.device_put(images)
  fn = jax.jit(lambda key, x: augment.two_views(key, x, recipe="cifar_reference"))
  key = jax.random.key(0)
  start = time.perf_counter()
  jax.block_until_ready(fn(key, images))  # compile
  compile_s = time.perf_counter() - start
  jax.block_until_ready(fn(jax.random.fold_in(key, 1), images))  # warm-up
  times = []
  for step in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(jax.random.fold_in(key, step + 2), images))
    times.append(time.perf_counter() - t)
  return {"median_s": statistics.median(times), "times_s": times, "compile_s": compile_s,
          "jax": jax.__version__, "backend": jax.default_backend()}


def _pil_pipeline(image, rng):
  """The same ops with PIL only (fallback when no torchvision interpreter exists)."""
  from PIL import Image, ImageEnhance  # pylint: disable=g-import-not-at-top
  w, h = image.size
  for _ in range(10):
    area = h * w * rng.uniform(0.2, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:
    top, left, ch, cw = 0, 0, h, w
  image = image.resize((w, h), Image.BILINEAR, box=(left, top, left + cw, top + ch))
  if rng.random() < 0.5:
    image = image.transpose(Image.FLIP_LEFT_RIGHT)
  if rng.random() < 0.8:
    for op in rng.permutation(4):
      if op == 0:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
      elif op == 1:
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 1.4))
      elif op == 2:
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
      else:
        hsv = np.array(image.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-0.1, 0.1) * 255)) % 256
        image = Image.fromarray(hsv, "HSV").convert("RGB")
  if rng.random() < 0.2:
    image = image.convert("L").convert("RGB")
  return np.asarray(image, np.float32) / 255.0


def time_pil(batch_size: int, repeats: int) -> dict:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
  pil = [Image.fromarray(x) for x in images]
  rng = np.random.default_rng(0)

  def run():
    return ([_pil_pipeline(im, rng) for im in pil], [_pil_pipeline(im, rng) for im in pil])

  run()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  return {"median_s": statistics.median(times), "times_s": times}


def time_reference(torch_python: str, batch_size: int, repeats: int, threads: int) -> dict:
  if not torch_python or not os.path.exists(torch_python):
    print(f"no torchvision interpreter at {torch_python}: timing the PIL-only fallback")
    return dict(time_pil(batch_size, repeats), pipeline="PIL per image (fallback)")
  out = subprocess.run(
      [torch_python, "-c", _TORCH_SCRIPT, str(batch_size), str(repeats), str(threads)],
      check=True, capture_output=True, text=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result["pipeline"] = "torchvision on PIL, per image"
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                      help="torch.set_num_threads for the reference side")
  parser.add_argument("--torch-python", "--torch_python", dest="torch_python",
                      default=os.environ.get("JNORM_TORCH_PYTHON"),
                      help="python of a venv with torchvision (default: $JNORM_TORCH_PYTHON)")
  args = parser.parse_args(argv)
  ours = time_jnorm(args.batch_size, args.repeats)
  ref = time_reference(args.torch_python, args.batch_size, args.repeats, args.threads)
  pairs_ours = args.batch_size / ours["median_s"]
  pairs_ref = args.batch_size / ref["median_s"]
  result = {
      "recipe": "cifar_reference", "batch_size": args.batch_size, "image": [32, 32, 3],
      "repeats": args.repeats, "jnorm_pairs_per_s": pairs_ours,
      "reference_pairs_per_s": pairs_ref, "ratio": pairs_ours / pairs_ref,
      "jnorm": ours, "reference": ref, "cpu_count": os.cpu_count(),
  }
  print(f"jnorm two_views (jit, batch {args.batch_size}): {pairs_ours:,.0f} pairs/s")
  print(f"{ref['pipeline']}: {pairs_ref:,.0f} pairs/s")
  print(f"ratio: {result['ratio']:.1f}x")
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
