"""SSL augmentations in pure JAX: per-example keys, jit- and vmap-able, on the device.

The ops act on ONE image [H, W, C] float in [0, 1] (C = 1 or 3) and follow torchvision's
semantics, which the reference uses (docs/paper.md §4.2):

- `random_resized_crop`: torchvision's RandomResizedCrop box sampling (10 tries of
  area ~ U(scale) * H * W and log-aspect ~ U(log ratio), integer box, centre-crop
  fallback), resampled to the input size with bilinear interpolation (half-pixel
  centres, edge-clamped inside the box). Boxes never exceed the image, so resampling
  only upsamples and PIL's antialiasing would change nothing.
- colour jitter: brightness x*f (multiplicative, as torchvision; dm-pix's
  `adjust_brightness` is ADDITIVE, offered as brightness_mode='additive'), contrast
  blends with the mean grey level (torchvision; dm-pix's `adjust_contrast` uses per-channel
  means), saturation blends with the grey image (torchvision; dm-pix goes through HSV),
  hue shifts the HSV hue by a fraction of a turn (as torchvision; own closed form, since
  dm-pix's `adjust_hue` miscomputed under jit after fused blends, see `adjust_hue`);
  every op clamps to [0, 1] as torchvision does on floats. Factors ~ U[max(0, 1-s), 1+s],
  hue ~ U[-h, h].
  jitter_mode 'random_order' (torchvision RandomApply(ColorJitter, p)): ONE coin with
  jitter_prob for the whole jitter, the four ops in a random order per example.
  jitter_mode 'independent': each op has its own probability (`*_prob`), fixed order
  brightness, contrast, saturation, hue.
- grayscale (a weighted sum with `pix.rgb_to_grayscale`'s weights: 0.2989 R + 0.587 G + 0.114 B, as torchvision on
  tensors; kept 3-channel), Gaussian blur (`gaussian_blur`: torchvision's GaussianBlur,
  separable kernel exp(-x²/2σ²) normalised, reflect padding without repeating the edge,
  sigma ~ U(blur_sigma), kernel ~10% of the side), solarize (`pix.solarize`), additive
  noise.
- One-channel images (digits): saturation, hue and grayscale are no-ops.

`two_views(key, images, *, recipe)` maps [B, H, W, C] (uint8 or float) to two float32
views; example i of view v uses key fold_in(fold_in(key, v), example_ids[i]), so a view
does not depend on how the batch is split over devices if global ids are passed.
"""

import dataclasses
import math
from typing import NamedTuple, Optional, Tuple, Union

import dm_pix as pix
import jax
import jax.numpy as jnp

from jnorm import errors
from jnorm.photometric import _JITTER_UNIFORMS
from jnorm.photometric import blur_kernel_size
from jnorm.photometric import color_jitter_from_uniforms
from jnorm.photometric import gaussian_blur
from jnorm.photometric import grayscale


@dataclasses.dataclass(frozen=True)
class ViewRecipe:
  """Augmentations of one view. Frozen, so it can be a static argument of jit."""
  crop_scale: Optional[Tuple[float, float]] = (0.2, 1.0)  # None: no crop
  crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0
  jitter_mode: str = "random_order"  # or "independent"
  jitter_prob: float = 0.8  # random_order: one coin for the whole jitter
  brightness_prob: float = 0.8  # independent mode only
  contrast_prob: float = 0.8
  saturation_prob: float = 0.8
  hue_prob: float = 0.8
  brightness_mode: str = "multiplicative"  # or "additive" (x + U[-b, b])
  grayscale_prob: float = 0.0
  blur_prob: float = 0.0
  blur_sigma: Tuple[float, float] = (0.1, 2.0)
  solarize_prob: float = 0.0
  solarize_threshold: float = 0.5
  noise_std: float = 0.0


class Recipe(NamedTuple):
  """The two views' augmentations (equal for symmetric recipes)."""
  view1: ViewRecipe
  view2: ViewRecipe


def _symmetric(view: ViewRecipe) -> Recipe:
  return Recipe(view, view)


_CIFAR_REFERENCE = ViewRecipe(
    crop_scale=(0.2, 1.0), flip_prob=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
    hue=0.1, jitter_prob=0.8, grayscale_prob=0.2)
_BYOL = ViewRecipe(
    crop_scale=(0.08, 1.0), flip_prob=0.5, brightness=0.4, contrast=0.4, saturation=0.2,
    hue=0.1, jitter_prob=0.8, grayscale_prob=0.2)
RECIPES = {
    # docs/paper.md §4.2: the reference's CIFAR pipeline (no blur, no normalisation).
    "cifar_reference": _symmetric(_CIFAR_REFERENCE),
    # SimCLR's ImageNet recipe (Chen et al. 2020, appendix A).
    "simclr": _symmetric(dataclasses.replace(
        _CIFAR_REFERENCE, crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8,
        saturation=0.8, hue=0.2, blur_prob=0.5)),
    # BYOL's asymmetric views (Grill et al. 2020, table 6): blur 1.0 / 0.1, solarize 0 / 0.2.
    "byol": Recipe(dataclasses.replace(_BYOL, blur_prob=1.0),
                   dataclasses.replace(_BYOL, blur_prob=0.1, solarize_prob=0.2)),
    # An early digits prototype's recipe: crop 0.5-1, no flip, brightness +-0.2, contrast
    # 0.6-1.4 (always), noise 0.05.
    # Greyscale Fashion-MNIST: the reference's crop, flip and brightness/contrast jitter
    # (p 0.8); saturation, hue and grayscale do not apply to one channel.
    "fashion_mnist": _symmetric(ViewRecipe(
        crop_scale=(0.2, 1.0), flip_prob=0.5, brightness=0.4, contrast=0.4,
        jitter_prob=0.8)),
    "digits": _symmetric(ViewRecipe(
        crop_scale=(0.5, 1.0), flip_prob=0.0, brightness=0.2, contrast=0.4,
        jitter_mode="independent", brightness_prob=1.0, contrast_prob=1.0,
        brightness_mode="additive", noise_std=0.05)),
}


def get_recipe(name: Union[str, Recipe]) -> Recipe:
  """The preset `name` (see RECIPES); a `Recipe` passes through unchanged."""
  if isinstance(name, Recipe):
    return name
  errors.check_choice("augment.recipe", name, RECIPES)
  return RECIPES[name]


# ---------------------------------------------------------------- geometry

_CROP_TRIES = 10  # torchvision's RandomResizedCrop tries 10 boxes before its fallback


def crop_box_from_uniforms(u: jax.Array, height: int, width: int, *, scale, ratio) -> jax.Array:
  """torchvision RandomResizedCrop.get_params from u ~ U[0, 1) [2 * 10 + 2].

  Returns int32 [4] box (top, left, h, w): the first of 10 tries with area ~ U(scale) * H * W
  and log-aspect ~ U(log ratio) that fits, at a uniform integer position; if none fits,
  the largest centred box with the aspect clamped to `ratio`.
  """
  t = _CROP_TRIES
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:t])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[t:2 * t])
  w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = jnp.argmax(ok)  # first valid try (as torchvision's loop)
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fw, fh = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    fw, fh = int(round(height * ratio[1])), height
  else:
    fw, fh = width, height
  found = ok.any()
  h = jnp.where(found, h[first], fh)
  w = jnp.where(found, w[first], fw)
  # torch.randint(0, H - h + 1) as floor(u * (H - h + 1)); centred for the fallback.
  top = jnp.minimum(jnp.floor(u[2 * t] * (height - h + 1)).astype(jnp.int32), height - h)
  left = jnp.minimum(jnp.floor(u[2 * t + 1] * (width - w + 1)).astype(jnp.int32), width - w)
  top = jnp.where(found, top, (height - h) // 2)
  left = jnp.where(found, left, (width - w) // 2)
  return jnp.stack([top, left, h, w]).astype(jnp.int32)


def crop_box(key: jax.Array, height: int, width: int, *, scale, ratio) -> jax.Array:
  """A random torchvision-style crop box, int32 [4] (top, left, h, w)."""
  u = jax.random.uniform(key, [2 * _CROP_TRIES + 2])
  return crop_box_from_uniforms(u, height, width, scale=scale, ratio=ratio)


def _interp_matrix(start, length, in_size: int, out_size: int) -> jax.Array:
  """[out_size, in_size] bilinear weights resampling [start, start+length) to out_size."""
  o = jnp.arange(out_size, dtype=jnp.float32)
  src = start + (o + 0.5) * (length / out_size) - 0.5  # half-pixel centres
  src = jnp.clip(src, start, start + length - 1)  # clamp inside the box (edge replicate)
  grid = jnp.arange(in_size, dtype=jnp.float32)
  return jnp.maximum(0.0, 1.0 - jnp.abs(src[:, None] - grid[None, :]))


def resized_crop(image: jax.Array, box: jax.Array) -> jax.Array:
  """Crops box (top, left, h, w) of image [H, W, C] and resizes it back to [H, W, C]."""
  height, width = image.shape[:2]
  box = box.astype(jnp.float32)
  ry = _interp_matrix(box[0], box[2], height, height)
  rx = _interp_matrix(box[1], box[3], width, width)
  return jnp.einsum("oy,yxc,px->opc", ry, image, rx)


def random_resized_crop(key, image, *, scale, ratio=(3 / 4, 4 / 3)):
  """Random box (torchvision's sampling) resampled to the input size: [H, W, C]."""
  box = crop_box(key, image.shape[0], image.shape[1], scale=scale, ratio=ratio)
  return resized_crop(image, box)


def random_flip(key, image, *, prob=0.5):
  """Mirrors [H, W, C] left-right with probability `prob`."""
  return jnp.where(jax.random.bernoulli(key, prob), image[:, ::-1], image)


# ---------------------------------------------------------------- pipelines

# One uniform draw per example and view, sliced into the ops' fields (one threefry call
# per image instead of one per op: halves the compile time and runs faster).
_U_CROP = slice(0, 2 * _CROP_TRIES + 2)
_U_FLIP = 22
_U_JITTER = slice(23, 23 + _JITTER_UNIFORMS)
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = 35, 36, 37, 38
_NUM_UNIFORMS = 39


def augment_image(key: jax.Array, image: jax.Array, *, view: ViewRecipe) -> jax.Array:
  """One augmented view of one image [H, W, C] float in [0, 1] -> float32 [H, W, C]."""
  u = jax.random.uniform(key, [_NUM_UNIFORMS])
  x = image.astype(jnp.float32)
  if view.crop_scale is not None:
    box = crop_box_from_uniforms(u[_U_CROP], x.shape[0], x.shape[1], scale=view.crop_scale,
                                 ratio=view.crop_ratio)
    x = resized_crop(x, box)
  if view.flip_prob > 0:
    x = jnp.where(u[_U_FLIP] < view.flip_prob, x[:, ::-1], x)
  if max(view.brightness, view.contrast, view.saturation, view.hue) > 0:
    x = color_jitter_from_uniforms(u[_U_JITTER], x, view=view)
  if view.grayscale_prob > 0 and x.shape[-1] == 3:
    x = jnp.where(u[_U_GRAY] < view.grayscale_prob, jnp.broadcast_to(grayscale(x), x.shape), x)
  if view.blur_prob > 0:
    lo, hi = view.blur_sigma
    sigma = lo + (hi - lo) * u[_U_SIGMA]
    blurred = jnp.clip(gaussian_blur(x, sigma, blur_kernel_size(x.shape[0])), 0.0, 1.0)
    x = jnp.where(u[_U_BLUR] < view.blur_prob, blurred, x)
  if view.solarize_prob > 0:
    x = jnp.where(u[_U_SOLARIZE] < view.solarize_prob,
                  pix.solarize(x, view.solarize_threshold), x)
  if view.noise_std > 0:
    noise = jax.random.normal(jax.random.fold_in(key, 1), x.shape)
    x = jnp.clip(x + view.noise_std * noise, 0.0, 1.0)
  return x


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float inputs are cast to float32."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def augment_batch(key, images, *, view: ViewRecipe, example_ids=None):
  """Augments [B, H, W, C]; example i uses fold_in(key, example_ids[i]) (default i)."""
  images = to_float(images)
  if example_ids is None:
    example_ids = jnp.arange(images.shape[0])
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, example_ids)
  return jax.vmap(lambda k, x: augment_image(k, x, view=view))(keys, images)


def two_views(key: jax.Array, images: jax.Array, *, recipe: Union[str, Recipe],
              example_ids: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """Two augmented views of a batch, for SSL.

  Args:
    key: a typed PRNG key (jax.random.key), e.g. fold_in(run_key, step).
    images: [B, H, W, C] uint8 or float in [0, 1].
    recipe: a preset name (see RECIPES) or a `Recipe`; static under jit.
    example_ids: int [B] global example positions (default arange(B)); pass the global
      positions of a device's shard to make views independent of the device count.
  Returns:
    (v1, v2): float32 [B, H, W, C] in [0, 1].
  """
  recipe = get_recipe(recipe)
  v1 = augment_batch(jax.random.fold_in(key, 0), images, view=recipe.view1,
                     example_ids=example_ids)
  v2 = augment_batch(jax.random.fold_in(key, 1), images, view=recipe.view2,
                     example_ids=example_ids)
  return v1, v2


# ---------------------------------------------------------------- vectors

# Name of the view recipe for vector data ([B, D], e.g. data.name='spherical').
VECTOR_NOISE = "vector_noise"


def noisy_views(key: jax.Array, x: jax.Array, *, relative_std: float = 0.5,
                example_ids: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """Two views of vectors by additive Gaussian noise, for SSL on non-image data.

  view = x + relative_std * rms(x) * eps, eps ~ N(0, I), with rms(x) = ‖x‖ / sqrt(D)
  per example, so the noise is scale-free. Keyed per (view, example id) as two_views.

  Args:
    key: a typed PRNG key.
    x: [B, D] vectors.
    relative_std: noise std relative to each vector's root-mean-square entry.
    example_ids: int [B] global example positions (default arange(B)).
  Returns:
    (v1, v2): float32 [B, D].
  """
  x = x.astype(jnp.float32)
  ids = jnp.arange(x.shape[0]) if example_ids is None else example_ids
  rms = jnp.linalg.norm(x, axis=-1, keepdims=True) / jnp.sqrt(x.shape[-1])

  def view(view_key):
    keys = jax.vmap(lambda i: jax.random.fold_in(view_key, i))(ids)
    eps = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(keys)
    return x + relative_std * rms * eps
  return view(jax.random.fold_in(key, 0)), view(jax.random.fold_in(key, 1))
