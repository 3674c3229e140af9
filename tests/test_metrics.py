"""Metrics: planted shifts are found, PSNR/SSIM basics, kernel similarity, error ratio."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from unpaired import metrics


def _blobs(size, shift=(0.0, 0.0), channels=1):
    """A smooth analytic scene sampled at ``p - shift``: moving it is exact, no resampling. (Smooth
    because bicubic resampling, which the alignment uses, itself blurs fine detail at fractional
    shifts, which biases any interpolating registration towards whole pixels.)"""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    yy, xx = yy - shift[0], xx - shift[1]
    img = 0.5 + 0.15 * torch.sin(xx / 4.1) * torch.cos(yy / 5.3)
    for cy, cx, s, a in ((20, 25, 5.0, 0.3), (40, 18, 4.0, -0.25), (33, 44, 7.0, 0.2), (12, 50, 4.0, 0.2)):
        img = img + a * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return img.expand(1, channels, size, size).float()


@given(dy=st.floats(-8.0, 8.0), dx=st.floats(-8.0, 8.0))
@settings(max_examples=15, deadline=None)
def test_align_finds_a_planted_subpixel_shift(dy, dx):
    ref = _blobs(64)
    moved = _blobs(64, shift=(dy, dx))  # moved[p] = ref[p - s]  =>  aligned[p] = moved[p + s]
    aligned, shift = metrics.align(moved, ref, radius=10, border=15)
    assert abs(float(shift[0, 0]) - dy) < 0.08 and abs(float(shift[0, 1]) - dx) < 0.08, (shift, dy, dx)
    inner = (..., slice(15, -15), slice(15, -15))
    assert float(metrics.psnr(aligned[inner], ref[inner])[0]) > 40


def test_levin_scores_forgive_a_shift_but_not_blur():
    ref = _blobs(64)
    shifted = _blobs(64, shift=(3.0, -2.0))
    scores = metrics.levin_scores(shifted, ref)
    assert float(scores["psnr"][0]) > 45 and float(scores["ssim"][0]) > 0.99
    unaligned = metrics.levin_scores(shifted, ref, radius=0, border=15)
    assert float(unaligned["psnr"][0]) < 30


def test_psnr_of_a_known_error():
    ref = torch.full((2, 1, 16, 16), 0.5)
    x = ref + torch.tensor([0.1, 0.01])[:, None, None, None]
    torch.testing.assert_close(metrics.psnr(x, ref), torch.tensor([20.0, 40.0]), atol=1e-3, rtol=0)


def test_ssim_is_one_for_identical_and_lower_for_noise():
    ref = _blobs(48)
    g = torch.Generator().manual_seed(0)
    noisy = ref + 0.05 * torch.randn(ref.shape, generator=g)
    values = metrics.ssim(torch.cat([ref, noisy]), torch.cat([ref, ref]))
    assert values[0] == pytest.approx(1.0, abs=1e-5) and values[1] < 0.9


def test_kernel_similarity():
    k = torch.zeros(15, 15)
    k[4:11, 7] = 1.0
    k[10, 8:11] = 0.5
    k /= k.sum()
    moved = torch.roll(k, shifts=(2, -3), dims=(0, 1))
    sim = metrics.kernel_similarity(torch.stack([moved, k.T]), torch.stack([k, k]))
    assert sim["ncc"][0] == pytest.approx(1.0, abs=1e-5)
    assert sim["centred_error"][0] < 1e-3 * k.square().sum()
    assert sim["ncc"][1] < 0.8 and sim["centred_error"][1] > 0.1 * k.square().sum()
    # different sizes are padded to a common canvas
    small = k[3:12, 3:12] / k[3:12, 3:12].sum()
    assert metrics.kernel_similarity(small, k)["ncc"][0] > 0.99
    # one kernel is compared with each of several; mismatched counts are named (torch's broadcast error was not)
    assert metrics.kernel_similarity(k, torch.stack([k, k.T]))["ncc"].shape == (2,)
    with pytest.raises(ValueError, match="2 estimated kernels against 3 true ones"):
        metrics.kernel_similarity(torch.stack([k, k]), torch.stack([k, k, k]))


def test_error_ratio():
    torch.testing.assert_close(metrics.error_ratio(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 3.0])),
                               torch.tensor([2.0, 1.0]))


def test_bad_input():
    with pytest.raises(ValueError, match="same shape|one shape"):
        metrics.psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="border"):
        metrics.align(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), radius=10, border=5)


def test_psnr_and_ssim_of_an_empty_batch_are_empty():
    """psnr of a batch of no images raised 'stack expects a non-empty TensorList' while ssim gave (0,)."""
    x = torch.rand(0, 3, 16, 16)
    assert metrics.psnr(x, x).shape == (0,) and metrics.ssim(x, x).shape == (0,)
    assert metrics.psnr(x, x).dtype == metrics.psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)).dtype


@pytest.mark.parametrize("size, window", [((8, 20), 11), ((16, 16), 10), ((16, 16), 0)])
def test_ssim_window_that_does_not_fit_is_named(size, window):
    """An image smaller than the SSIM window failed inside kornia with 'narrow(): length must be
    non-negative.'; the error now names window_size and the image size."""
    x = torch.rand(1, 3, *size)
    with pytest.raises(ValueError, match=rf"window_size={window} for {size[0]}x{size[1]} images"):
        metrics.ssim(x, x, window_size=window)
