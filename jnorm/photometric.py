"""Photometric image ops of the SSL augmentations, in pure JAX on ONE image [H, W, C]
float in [0, 1]: colour jitter (brightness, contrast, saturation, hue, with torchvision's
semantics), grayscale and Gaussian blur. `jnorm.augment` composes them into views; its
docstring describes the semantics and where they differ from dm-pix.

The jitter functions read a view's settings (`jnorm.augment.ViewRecipe`) by attribute.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

from jnorm import errors


def grayscale(image: jax.Array) -> jax.Array:
  """Luma 0.2989 R + 0.587 G + 0.114 B [H, W, 1] of RGB [H, W, 3]; 1 channel: unchanged.

  Written as a weighted sum rather than with `pix.rgb_to_grayscale` (same weights): its
  `tensordot` with a 3-vector becomes a dot that XLA:CPU does not fuse under vmap, and
  the CIFAR recipe ran 2.8x slower with it (37.8 vs 13.5 ms for 2 x 256 views).
  """
  if image.shape[-1] == 1:
    return image
  return (0.2989 * image[..., 0:1] + 0.587 * image[..., 1:2] + 0.114 * image[..., 2:3])


def adjust_brightness(image, factor):
  """torchvision: clamp(x * factor) (multiplicative, unlike dm-pix's additive delta)."""
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
  """torchvision: blend with the mean grey level of the whole image, then clamp."""
  mean = jnp.mean(grayscale(image))
  return jnp.clip(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image, factor):
  """torchvision: blend with the grey image, then clamp; no-op for 1 channel."""
  if image.shape[-1] == 1:
    return image
  return jnp.clip(factor * image + (1.0 - factor) * grayscale(image), 0.0, 1.0)


def adjust_hue(image, delta, *, channel_axis: int = -1):
  """Shifts HSV hue by `delta` turns (torchvision's hue_factor); no-op for 1 channel.

  HSV -> RGB uses the closed form channel_n = V - C clip(min(k, 4 - k), 0, 1),
  k = (n + 6 h) mod 6, n = 5, 3, 1. The hue sector comes from ONE decision per pixel
  (r >= g, b; else g >= b), not from
  equality tests against a separately computed max (as dm-pix's `adjust_hue` does):
  under jit, XLA:CPU may fuse and round the max and the channels differently, and those
  equality tests then picked wrong sectors (colours off by 0.5, seen in a test).
  """
  if image.shape[channel_axis] == 1:
    return image
  r, g, b = jnp.split(image, 3, axis=channel_axis)
  v = jnp.maximum(jnp.maximum(r, g), b)
  c = v - jnp.minimum(jnp.minimum(r, g), b)
  inv_c = 1.0 / jnp.where(c > 0, c, 1.0)
  r_max = (r >= g) & (r >= b)  # one sector decision per pixel
  g_max = ~r_max & (g >= b)
  h6 = jnp.where(r_max, (g - b) * inv_c,
                 jnp.where(g_max, (b - r) * inv_c + 2.0, (r - g) * inv_c + 4.0))
  h6 = jnp.where(c > 0, h6, 0.0) + 6.0 * delta
  h6 = h6 - 6.0 * jnp.floor(h6 / 6.0)  # mod 6 (jnp.mod is slower on XLA:CPU)
  shape = [1] * image.ndim
  shape[channel_axis] = 3
  k = jnp.reshape(jnp.array([5.0, 3.0, 1.0]), shape) + h6  # in [1, 11]
  k = jnp.where(k >= 6.0, k - 6.0, k)
  return jnp.clip(v - c * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0), 0.0, 1.0)


_JITTER_UNIFORMS = 12  # 4 strengths, 4 coins, 4 order keys


def _jitter_coefficients(u: jax.Array, view):
  """Sampled jitter as blend coefficients [3, 4] and a hue shift, from u [4] ~ U[0, 1).

  Brightness, contrast and saturation are each y = clip(a x + b mean(grey) + c grey + d)
  (a clamped affine blend): brightness (f, 0, 0, 0) or additive (1, 0, 0, delta),
  contrast (f, 1-f, 0, 0), saturation (f, 0, 1-f, 0). Rows: brightness, contrast,
  saturation. Factors ~ U[max(0, 1-s), 1+s], hue ~ U[-h, h] (torchvision ColorJitter).
  """
  def factor(v, s):
    lo = max(0.0, 1.0 - s)
    return lo + (1.0 + s - lo) * v

  errors.check_choice("augment.brightness_mode", view.brightness_mode,
                      ("multiplicative", "additive"))
  if view.brightness_mode == "additive":
    bright = jnp.stack([1.0, 0.0, 0.0, view.brightness * (2.0 * u[0] - 1.0)])
  else:
    bright = jnp.stack([factor(u[0], view.brightness), 0.0, 0.0, 0.0])
  fc, fs = factor(u[1], view.contrast), factor(u[2], view.saturation)
  contrast = jnp.stack([fc, 1.0 - fc, 0.0, 0.0])
  saturation = jnp.stack([fs, 0.0, 1.0 - fs, 0.0])
  hue = view.hue * (2.0 * u[3] - 1.0)
  return jnp.stack([bright, contrast, saturation]), hue


def _grey_planar(planes):
  """Grey [1, H, W] of planar [C, H, W] (C = 1 or 3), torchvision's weights."""
  if planes.shape[0] == 1:
    return planes
  return (0.2989 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2])[None]


def _blend(image, coef):
  """clip(a x + b mean(grey) + c grey + d) for coef = (a, b, c, d); planar [C, H, W]."""
  grey = _grey_planar(image)
  out = coef[0] * image + coef[1] * jnp.mean(grey) + coef[2] * grey + coef[3]
  return jnp.clip(out, 0.0, 1.0)


_IDENTITY = (1.0, 0.0, 0.0, 0.0)  # blend coefficients of the identity


def jitter_plan(u: jax.Array, view, num_channels: int):
  """The sampled jitter from u [12] ~ U[0, 1): (coefs [3, 4], hue, position [4], enabled [4]).

  position[i] is the step (0-3) at which op i (0 brightness, 1 contrast, 2 saturation,
  3 hue) acts; enabled[i] says whether it acts. 'random_order': position = the rank of
  u[8 + i] among u[8:12] (a uniform random permutation), enabled = strength > 0 and ONE
  coin u[4] < jitter_prob for all four; 'independent': positions 0, 1, 2, 3 and op i's
  own coin u[4 + i] < its probability.
  """
  errors.check_choice("augment.jitter_mode", view.jitter_mode, ("random_order", "independent"))
  coefs, hue = _jitter_coefficients(u[:4], view)
  strengths = jnp.array([view.brightness, view.contrast, view.saturation, view.hue])
  if view.jitter_mode == "random_order":
    keys = u[8:12]
    # Rank by counting (ties have probability ~0): no sort, which is slow on XLA:CPU.
    position = jnp.sum(keys[None, :] < keys[:, None], axis=1)
    enabled = (strengths > 0) & (u[4] < view.jitter_prob)
  else:
    position = jnp.arange(4)
    probs = jnp.array([view.brightness_prob, view.contrast_prob, view.saturation_prob,
                       view.hue_prob])
    enabled = (strengths > 0) & (u[4:8] < probs)
  if num_channels == 1:  # saturation and hue do nothing to a grey image
    enabled = enabled & jnp.array([True, True, False, False])
  return coefs, hue, position, enabled


def color_jitter_from_uniforms(u: jax.Array, image: jax.Array, *, view):
  """Colour jitter of [H, W, C] per `view.jitter_mode`, from u [12] ~ U[0, 1).

  Equal, op for op, to applying adjust_brightness / contrast / saturation / hue in the
  order of `jitter_plan`, but cheap under vmap: the three blends share one formula with
  per-example coefficients (`_blend`), so a per-example random order needs no
  all-branches `lax.switch`. The blends, in their order without hue, fill three slots;
  the slots run in two passes, the first doing those before hue and the second those
  after it (identity coefficients elsewhere: clip(x) = x on [0, 1]); hue is computed
  once. Without hue (strength 0 or one channel) a single pass runs.
  """
  coefs, hue_delta, position, enabled = jitter_plan(u, view, image.shape[-1])
  use_hue = view.hue > 0 and image.shape[-1] == 3
  # Planar [C, H, W] inside: the blends then run on contiguous planes (~1.5x faster on
  # XLA:CPU than channels-last, where every op strides over C = 3).
  image = jnp.moveaxis(image, -1, 0)
  hue_pos = position[3]  # number of ops before hue
  blend_pos = position[:3] - (position[3] < position[:3])  # rank among the blends, 0-2
  # slot s holds the enabled blend of rank s (one-hot: no gather); else the identity.
  onehot = ((blend_pos[None, :] == jnp.arange(3)[:, None]) & enabled[None, :3])
  onehot = onehot.astype(coefs.dtype)  # [slot, op]
  identity = jnp.asarray(_IDENTITY)
  slot_coefs = onehot @ coefs + (1.0 - onehot.sum(1, keepdims=True)) * identity  # [3, 4]
  x = image
  if not use_hue:
    for slot in range(3):
      x = _blend(x, slot_coefs[slot])
    return jnp.moveaxis(x, 0, -1)
  for slot in range(3):  # blends before hue
    x = _blend(x, jnp.where(slot < hue_pos, slot_coefs[slot], identity))
  x = jnp.where(enabled[3], adjust_hue(x, hue_delta, channel_axis=0), x)
  for slot in range(3):  # blends after hue
    x = _blend(x, jnp.where(slot >= hue_pos, slot_coefs[slot], identity))
  return jnp.moveaxis(x, 0, -1)


def color_jitter(key, image, *, view):
  """Colour jitter of [H, W, C] (see `color_jitter_from_uniforms`)."""
  u = jax.random.uniform(key, [_JITTER_UNIFORMS])
  return color_jitter_from_uniforms(u, image, view=view)


def blur_kernel_size(height: int) -> int:
  return max(3, 2 * (height // 20) + 1)  # odd, ~10% of the side (SimCLR: 23 px at 224)


def gaussian_blur(image: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """torchvision's GaussianBlur of [H, W, C] (odd kernel_size < 2 min(H, W)).

  The 1-D kernel exp(-x²/(2 sigma²)), x = -r..r (r = kernel_size // 2), normalised to sum
  1 (torchvision's `_get_gaussian_kernel1d`, as dm-pix's), applied along H and W after
  padding r pixels with torch's 'reflect' mode (numpy's 'reflect': the edge pixel is not
  repeated, [a b c] -> [b a b c b]); dm-pix's own SAME padding is zeros, which darkens
  the border. tests/test_blur_reference.py checks it against scipy.ndimage.
  """
  r = int(kernel_size) // 2
  padded = jnp.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
  return pix.gaussian_blur(padded, sigma, 2 * r + 1, padding="VALID")
