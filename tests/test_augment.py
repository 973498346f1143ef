"""Tests of jnorm.augment against numpy / PIL / colorsys references."""

import colorsys
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jnorm import augment
from jnorm import photometric
from jnorm import errors

_LUMA = np.array([0.2989, 0.587, 0.114])  # torchvision's grey weights


def _image(seed=0, shape=(8, 10, 3)):
  return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_crop_box_respects_torchvision_constraints():
  sample = jax.vmap(lambda k: augment.crop_box(k, 20, 30, scale=(0.2, 1.0), ratio=(0.75, 4 / 3)))
  boxes = jax.jit(sample)(
      jax.random.split(jax.random.key(0), 200))
  top, left, h, w = np.asarray(boxes).T
  assert np.all((h >= 1) & (w >= 1) & (top >= 0) & (left >= 0))
  assert np.all((top + h <= 20) & (left + w <= 30))
  area = h * w / 600
  assert area.min() >= 0.15 and area.max() <= 1.0  # scale range, up to integer rounding
  assert len(set(map(tuple, boxes.tolist()))) > 150  # boxes really vary
  # No try can succeed at scale > 1: torchvision's fallback is the whole (ratio-clamped) image.
  fallback = augment.crop_box(jax.random.key(1), 20, 30, scale=(2.0, 3.0), ratio=(0.75, 4 / 3))
  np.testing.assert_array_equal(fallback, [0, 1, 20, 27])  # w = round(20 * 4/3), centred


def test_resized_crop_matches_pil_bilinear():
  image = _image(1, (12, 10, 3))
  top, left, h, w = 2, 3, 7, 5
  out = np.asarray(augment.resized_crop(jnp.asarray(image), jnp.array([top, left, h, w])))
  for c in range(3):
    patch = Image.fromarray(image[top:top + h, left:left + w, c], mode="F")
    expected = np.asarray(patch.resize((10, 12), Image.BILINEAR))
    np.testing.assert_allclose(out[..., c], expected, atol=1e-5)
  whole = augment.resized_crop(jnp.asarray(image), jnp.array([0, 0, 12, 10]))
  np.testing.assert_allclose(whole, image, atol=1e-6)


def test_flip():
  image = jnp.asarray(_image())
  np.testing.assert_array_equal(augment.random_flip(jax.random.key(0), image, prob=1.0),
                                image[:, ::-1])
  np.testing.assert_array_equal(augment.random_flip(jax.random.key(0), image, prob=0.0), image)


def test_colour_ops_match_torchvision_formulas():
  x = _image(2)
  grey = x @ _LUMA
  np.testing.assert_allclose(photometric.grayscale(x)[..., 0], grey, atol=1e-6)
  np.testing.assert_allclose(photometric.adjust_brightness(x, 1.3), np.clip(1.3 * x, 0, 1), atol=1e-6)
  np.testing.assert_allclose(photometric.adjust_contrast(x, 1.4),
                             np.clip(1.4 * x - 0.4 * grey.mean(), 0, 1), atol=1e-6)
  np.testing.assert_allclose(photometric.adjust_saturation(x, 0.3),
                             np.clip(0.3 * x + 0.7 * grey[..., None], 0, 1), atol=1e-6)
  g = x[..., :1]
  np.testing.assert_array_equal(photometric.adjust_saturation(g, 0.3), g)  # 1 channel: no-op
  np.testing.assert_allclose(photometric.adjust_contrast(g, 0.5), 0.5 * g + 0.5 * g.mean(), atol=1e-6)


def test_hue_on_known_colours_and_colorsys():
  x = _image(3, (4, 4, 3))
  x[0, 0] = [1.0, 0.0, 0.0]  # pure red
  hue = jax.jit(photometric.adjust_hue)
  for delta, colour in [(1 / 3, [0, 1, 0]), (1 / 6, [1, 1, 0]), (-1 / 3, [0, 0, 1])]:
    np.testing.assert_allclose(hue(x, delta)[0, 0], colour, atol=1e-6)
  out = np.asarray(hue(x, 0.07))
  for pixel, got in zip(x.reshape(-1, 3), out.reshape(-1, 3)):
    h, s, v = colorsys.rgb_to_hsv(*pixel)
    np.testing.assert_allclose(got, colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v), atol=1e-5)


@pytest.mark.parametrize("mode", ["random_order", "independent"])
def test_color_jitter_equals_ops_in_sampled_order(mode):
  """The fused jitter equals applying the four ops one by one in the sampled order."""
  view = dataclasses.replace(augment.get_recipe("simclr").view1, jitter_mode=mode,
                             jitter_prob=0.8, brightness_prob=0.5, contrast_prob=0.5,
                             saturation_prob=0.5, hue_prob=0.5)
  x = jnp.asarray(_image(4))
  fused = jax.jit(lambda u: photometric.color_jitter_from_uniforms(u, x, view=view))
  plan = jax.jit(lambda u: photometric.jitter_plan(u, view, 3))
  adjust_hue = jax.jit(photometric.adjust_hue)
  plans = set()
  for seed in range(12):
    u = jnp.asarray(np.random.default_rng(seed).random(12), jnp.float32)
    coefs, hue, position, enabled = plan(u)
    order = np.argsort(np.asarray(position))
    b, c, s = float(coefs[0, 0]), float(coefs[1, 0]), float(coefs[2, 0])
    assert 0.2 <= b <= 1.8 and 0.2 <= c <= 1.8 and 0.2 <= s <= 1.8 and abs(hue) <= 0.2
    ops = [lambda y: photometric.adjust_brightness(y, b), lambda y: photometric.adjust_contrast(y, c),
           lambda y: photometric.adjust_saturation(y, s), lambda y: adjust_hue(y, hue)]
    order, enabled = [int(i) for i in order], [bool(e) for e in enabled]
    assert sorted(order) == [0, 1, 2, 3]
    if mode == "independent":
      assert order == [0, 1, 2, 3]
    else:
      assert len(set(enabled)) == 1  # one coin for the whole jitter
    plans.add((tuple(order), tuple(enabled)))
    expected = x
    for i in order:
      expected = ops[i](expected) if enabled[i] else expected
    # float32 rounding differs between the fused and op-by-op paths (hue divides by the
    # chroma); a wrong order or hue sector would be off by > 1e-2.
    np.testing.assert_allclose(fused(u), expected, atol=1e-5)
  assert len(plans) > 4  # several orders / coin patterns were exercised


def test_two_views_shapes_keys_and_dtypes():
  images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
  fn = jax.jit(lambda k, x, ids: augment.two_views(k, x, recipe="cifar_reference",
                                                   example_ids=ids))
  ids = np.arange(6)
  v1, v2 = fn(jax.random.key(0), images, ids)
  assert v1.shape == v2.shape == images.shape and v1.dtype == v2.dtype == jnp.float32
  assert float(jnp.min(v1)) >= 0.0 and float(jnp.max(v1)) <= 1.0
  again = fn(jax.random.key(0), images, ids)
  np.testing.assert_array_equal(v1, again[0])
  np.testing.assert_array_equal(v2, again[1])
  other = fn(jax.random.key(1), images, ids)
  assert not np.allclose(v1, other[0]) and not np.allclose(v1, v2)
  # Views depend on (key, example id, image) only, not on the position in the batch:
  # shards given their global ids reproduce the whole batch's views.
  perm = np.array([3, 0, 5, 1, 4, 2])
  shuffled = fn(jax.random.key(0), images[perm], ids[perm])
  np.testing.assert_allclose(shuffled[1], v2[perm], atol=1e-6)
  np.testing.assert_array_equal(augment.to_float(images), images.astype(np.float32) / 255)


@pytest.mark.parametrize("view,channels", [(augment.get_recipe("byol").view2, 3),
                                           (augment.get_recipe("digits").view1, 1)])
def test_blur_solarize_and_grey_recipes_run_in_range(view, channels):
  images = np.random.default_rng(1).random((4, 16, 16, channels)).astype(np.float32)
  fn = jax.jit(lambda k: augment.augment_batch(k, images, view=view))
  v1, v2 = fn(jax.random.key(0)), fn(jax.random.key(1))
  assert v1.shape == images.shape and v1.dtype == jnp.float32
  for v in (v1, v2):
    assert float(jnp.min(v)) >= 0.0 and float(jnp.max(v)) <= 1.0
  assert not np.allclose(v1, v2) and not np.allclose(v1, images)


def test_recipes_and_unknown_name():
  ref = augment.get_recipe("cifar_reference").view1
  assert (ref.crop_scale, ref.flip_prob, ref.grayscale_prob, ref.blur_prob) == ((0.2, 1.0), 0.5,
                                                                                0.2, 0.0)
  assert (ref.brightness, ref.contrast, ref.saturation, ref.hue, ref.jitter_prob) == (
      0.4, 0.4, 0.4, 0.1, 0.8)
  byol = augment.get_recipe("byol")
  assert (byol.view1.blur_prob, byol.view2.blur_prob) == (1.0, 0.1)
  assert (byol.view1.solarize_prob, byol.view2.solarize_prob) == (0.0, 0.2)
  simclr = augment.get_recipe("simclr").view1
  assert (simclr.crop_scale, simclr.brightness, simclr.hue, simclr.blur_prob) == (
      (0.08, 1.0), 0.8, 0.2, 0.5)
  assert augment.get_recipe("digits").view1.flip_prob == 0.0
  with pytest.raises(errors.ConfigError, match="recipe"):
    augment.get_recipe("simclr_v9")


def test_noisy_views_are_keyed_scale_free_and_per_example():
  x = jax.random.normal(jax.random.key(0), (6, 16)) * 7.0
  key = jax.random.key(1)
  v1, v2 = augment.noisy_views(key, x, relative_std=0.5)
  w1, w2 = augment.noisy_views(key, x, relative_std=0.5)
  np.testing.assert_array_equal(v1, w1)
  np.testing.assert_array_equal(v2, w2)
  assert v1.shape == x.shape and not np.allclose(v1, v2)
  # Scale-free: scaling x scales the views by the same factor.
  s1, _ = augment.noisy_views(key, 3.0 * x, relative_std=0.5)
  np.testing.assert_allclose(s1, 3.0 * v1, rtol=1e-5, atol=1e-5)
  # Noise size: std of (view - x) / rms(x) is about relative_std.
  big = jax.random.normal(jax.random.key(2), (512, 64))
  b1, _ = augment.noisy_views(key, big, relative_std=0.5)
  rms = jnp.linalg.norm(big, axis=-1, keepdims=True) / 8.0
  assert abs(float(jnp.std((b1 - big) / rms)) - 0.5) < 0.02
  # Example i's views depend on its id, not its position in the batch.
  p1, _ = augment.noisy_views(key, x[::-1], example_ids=jnp.arange(6)[::-1])
  np.testing.assert_allclose(p1[::-1], v1, rtol=1e-6)
