"""`photometric.gaussian_blur` against torchvision's GaussianBlur, computed independently.

torchvision (`F.gaussian_blur` on tensors) builds the 1-D kernel
exp(-0.5 (x / sigma)^2), x = linspace(-(k-1)/2, (k-1)/2, k), normalised to sum 1, pads the
image by k // 2 with `torch.nn.functional.pad(mode='reflect')` and convolves with the
outer product of the 1-D kernel. torch's 'reflect' does not repeat the edge pixel:
[0, 1, 2, 3] padded by 2 is [2, 1, 0, 1, 2, 3, 2, 1]. That is numpy's `np.pad(mode=
'reflect')` and scipy.ndimage's mode='mirror' (scipy's own 'reflect' repeats the edge,
like np.pad's 'symmetric'). The references below are float64 numpy / scipy, with no jax.
"""

import dataclasses

import dm_pix as pix
import jax
import numpy as np
import pytest
from scipy import ndimage

from jnorm import augment
from jnorm import photometric


def _torch_kernel1d(kernel_size, sigma):
  half = (kernel_size - 1) * 0.5
  x = np.linspace(-half, half, kernel_size)
  pdf = np.exp(-0.5 * (x / sigma) ** 2)
  return pdf / pdf.sum()


def _reference_scipy(image, sigma, kernel_size):
  """Separable correlation with scipy.ndimage, mode='mirror' (= torch 'reflect')."""
  w = _torch_kernel1d(kernel_size, sigma)
  out = ndimage.correlate1d(np.asarray(image, np.float64), w, axis=0, mode="mirror")
  return ndimage.correlate1d(out, w, axis=1, mode="mirror")


def _reference_padded_2d(image, sigma, kernel_size):
  """torchvision's order of operations: reflect-pad, then ONE 2-D kernel, 'valid'."""
  w = _torch_kernel1d(kernel_size, sigma)
  kernel = np.outer(w, w)
  r = kernel_size // 2
  x = np.pad(np.asarray(image, np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
  h, wd = image.shape[:2]
  out = np.zeros(image.shape, np.float64)
  for i in range(kernel_size):
    for j in range(kernel_size):
      out += kernel[i, j] * x[i:i + h, j:j + wd]
  return out


def test_the_reference_modes_are_torch_reflect():
  row = np.arange(4.0)
  torch_reflect = [2, 1, 0, 1, 2, 3, 2, 1]  # torch.nn.functional.pad(x, (2, 2), 'reflect')
  np.testing.assert_array_equal(np.pad(row, 2, mode="reflect"), torch_reflect)
  # scipy's 'mirror' extends the same way: correlating with a one-hot tap at offset -2
  # reads the padded value two to the left.
  for shift in (-2, -1, 1, 2):
    tap = np.zeros(5)
    tap[2 + shift] = 1.0
    got = ndimage.correlate1d(row, tap, mode="mirror")
    want = np.pad(row, 2, mode="reflect")[2 + shift:2 + shift + 4]
    np.testing.assert_array_equal(got, want)
  assert not np.array_equal(ndimage.correlate1d(row, [1.0, 0, 0], mode="reflect"),
                            np.pad(row, 1, mode="reflect")[:4])  # scipy 'reflect' differs


@pytest.mark.parametrize("shape, kernel_size, sigma", [
    ((32, 32, 3), 3, 0.1),
    ((32, 32, 3), 3, 1.3),
    ((16, 16, 1), 3, 2.0),
    ((20, 28, 3), 5, 0.8),
    ((64, 64, 3), 7, 1.7),
    ((96, 80, 1), 23, 2.0),  # SimCLR's 224 px kernel size, wider than sigma
])
def test_gaussian_blur_matches_torchvision_reference(shape, kernel_size, sigma):
  image = np.random.default_rng(kernel_size).random(shape).astype(np.float32)
  ref = _reference_scipy(image, sigma, kernel_size)
  np.testing.assert_allclose(_reference_padded_2d(image, sigma, kernel_size), ref,
                             rtol=0, atol=1e-12)
  got = np.asarray(jax.jit(photometric.gaussian_blur, static_argnums=2)(image, sigma, kernel_size))
  assert got.shape == shape and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_a_constant_image_stays_constant_unlike_zero_padding():
  image = np.full((16, 16, 3), 0.75, np.float32)
  np.testing.assert_allclose(np.asarray(photometric.gaussian_blur(image, 2.0, 5)), 0.75, atol=1e-6)
  zero_padded = np.asarray(pix.gaussian_blur(image, 2.0, 5))  # what augment used before
  assert zero_padded[0, 0, 0] < 0.75 - 0.1


def test_augment_image_blurs_like_the_reference():
  """The blur inside `augment_image` (sigma fixed by a degenerate range, no other op)."""
  view = dataclasses.replace(
      augment.ViewRecipe(), crop_scale=None, flip_prob=0.0, blur_prob=1.0,
      blur_sigma=(1.1, 1.1))
  image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
  got = np.asarray(augment.augment_image(jax.random.key(3), image, view=view))
  kernel_size = photometric.blur_kernel_size(40)  # pylint: disable=protected-access
  assert kernel_size == 5
  ref = np.clip(_reference_scipy(image, 1.1, kernel_size), 0.0, 1.0)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
