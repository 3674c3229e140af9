"""Metrics: planted shifts are found, PSNR/SSIM basics, kernel similarity, error ratio."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth.blur import blur
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
    # ... but not blur: the same shifted scene through a 9x9 box loses ~15 dB however it is aligned
    # (the test once scored no blurred image: a scorer that, once aligned, ignored the restored image passed it)
    blurred = metrics.levin_scores(blur(shifted, torch.ones(9, 9) / 81, "reflect"), ref)
    assert float(blurred["psnr"][0]) < 35 and float(blurred["ssim"][0]) < 0.98


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


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("which", ["x", "ref"])
def test_align_refuses_non_finite_images(bad, which):
    # NaN compares false with every score, so the search returned the shift (-r, -r) as if it were found
    images = {"x": torch.rand(1, 3, 64, 64), "ref": torch.rand(1, 3, 64, 64)}
    images[which][0, 1, 30, 30] = bad
    with pytest.raises(ValueError, match=f"{which} holds NaN or infinite values"):
        metrics.align(images["x"], images["ref"], radius=3, border=8)


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


def test_empty_batches_are_scored_as_empty():
    """align (and so levin_scores with radius > 0) and kernel_similarity raised 'non-positive groups
    is not supported' from conv2d for a batch of no images, while psnr and ssim gave (0,)."""
    x = torch.rand(0, 3, 48, 48)
    aligned, shift = metrics.align(x, x)
    assert aligned.shape == x.shape and shift.shape == (0, 2)
    scores = metrics.levin_scores(x, x)
    assert scores["psnr"].shape == scores["ssd"].shape == (0,) and scores["shift"].shape == (0, 2)
    assert metrics.kernel_similarity(torch.zeros(0, 5, 5), torch.zeros(0, 5, 5))["ncc"].shape == (0,)


@pytest.mark.parametrize("kwargs, message", [
    # conv2d's 'Kernel size can't be greater than actual input size'
    ({"radius": -1, "border": 5}, "radius must be an integer >= 0"),
    # 'slice indices must be integers'
    ({"radius": 2.5, "border": 15}, "radius must be an integer >= 0"),
    # these three cropped to nothing, or to less than the SSIM window, and blamed ssim's window_size
    ({"radius": 0, "border": -2}, r"border must be an integer >= 0 .* 48x48 .* at most 18"),
    ({"radius": 0, "border": 30}, r"border must be .* at most 18"),
    ({"radius": 3, "border": 20}, r"border must be .* at most 18"),
])
def test_levin_scores_names_a_bad_radius_or_border(kwargs, message):
    x = torch.rand(1, 1, 48, 48)
    with pytest.raises(ValueError, match=message):
        metrics.levin_scores(x, x, **kwargs)


def test_levin_scores_take_numpy_integer_radius_and_border():
    x, ref = torch.rand(1, 1, 48, 48), torch.rand(1, 1, 48, 48)
    got = metrics.levin_scores(x, ref, radius=np.int64(2), border=np.int64(5))
    want = metrics.levin_scores(x, ref, radius=2, border=5)
    assert all(torch.equal(got[key], want[key]) for key in want)


def test_shift_image_takes_a_shift_of_another_dtype():
    """A float64 shift with a float32 image failed in grid_sample ('expected scalar type Float but
    found Double')."""
    x = torch.rand(1, 2, 9, 11)
    moved = metrics.shift_image(x, torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    assert moved.dtype == torch.float32
    torch.testing.assert_close(moved[..., :-1, 2:], x[..., 1:, :-2], atol=1e-5, rtol=0)


@given(data=st.data(), double=st.booleans())
@settings(max_examples=25, deadline=None)
def test_a_whole_pixel_shift_is_exact_and_a_perfect_restoration_scores_infinite_psnr(data, double):
    """grid_sample's normalised coordinates round: the zero shift changed the image by ~1e-7 and an image
    scored against itself gave about 127 dB (the README promises the infinite PSNR of a perfect restoration)."""
    dtype = torch.float64 if double else torch.float32
    h, w = data.draw(st.integers(17, 40)), data.draw(st.integers(17, 40))
    x = torch.rand(2, 2, h, w, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16))), dtype=dtype)
    dy, dx = data.draw(st.integers(-h - 2, h + 2)), data.draw(st.integers(-w - 2, w + 2))
    moved = metrics.shift_image(x, torch.tensor([[dy, dx], [0.5, dx]], dtype=dtype))
    rows, cols = (torch.arange(h) + dy).clamp(0, h - 1), (torch.arange(w) + dx).clamp(0, w - 1)
    assert torch.equal(moved[0], x[0][:, rows][:, :, cols])  # x[p + shift], the border repeated beyond it
    torch.testing.assert_close(moved[1], metrics.shift_image(x[1:], torch.tensor([[0.5, dx]], dtype=dtype))[0])
    scores = metrics.levin_scores(x, x, radius=2, border=3)
    assert torch.isinf(scores["psnr"]).all() and (scores["ssd"] == 0).all()


def test_the_gradient_in_the_shift_does_not_vanish_at_whole_pixels():
    # the exact path for whole-pixel shifts has no gradient in the shift: it gave 0 at the zero shift
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for start in (0.0, 1e-9):
        s = torch.full((1, 2), start, dtype=torch.float64, requires_grad=True)
        (metrics.shift_image(x, s) * torch.arange(16.0, dtype=torch.float64)[:, None]).sum().backward()
        grads.append(s.grad)
    assert grads[0].abs().min() > 1 and torch.allclose(grads[0], grads[1], rtol=1e-6)


@pytest.mark.parametrize("max_val", [255, np.int64(255), 255.0])
def test_an_integer_data_range_scores_as_its_float(max_val):
    """max_val=255 (an int, the natural spelling for 8-bit-range images) stopped ssim and levin_scores
    with kornia's 'Input max_val type is not a float'. SSIM and PSNR are unchanged when the images and
    their data range are scaled together, which is what is checked here."""
    g = torch.Generator().manual_seed(1)
    x, ref = torch.rand(2, 3, 40, 40, generator=g, dtype=torch.float64).unbind(0)
    x, ref = x[None], ref[None]
    torch.testing.assert_close(metrics.ssim(255 * x, 255 * ref, max_val=max_val), metrics.ssim(x, ref))
    torch.testing.assert_close(metrics.psnr(255 * x, 255 * ref, max_val=max_val), metrics.psnr(x, ref))
    scaled = metrics.levin_scores(255 * x, 255 * ref, radius=0, border=5, max_val=max_val)
    plain = metrics.levin_scores(x, ref, radius=0, border=5)
    torch.testing.assert_close(scaled["ssim"], plain["ssim"])
    torch.testing.assert_close(scaled["ssd"], 255 ** 2 * plain["ssd"])


@pytest.mark.parametrize("max_val", [0, -1.0, float("nan"), float("inf")])
def test_a_data_range_that_is_not_positive_is_named(max_val):
    x = torch.rand(1, 1, 16, 16)
    for score in (metrics.psnr, metrics.ssim):
        with pytest.raises(ValueError, match="max_val must be a finite number above 0"):
            score(x, x, max_val=max_val)


def test_subpixel_alignment_resamples_a_row_of_candidates_at_a_time(monkeypatch):
    """align resampled all 49 sub-pixel candidates of every image at once, with as many copies of the
    reference: 2.5 GB for one 1280x720 RGB image. It now holds 7 per image, and finds the same shift
    as the exhaustive search over the 49 candidates, done here by hand."""
    ref, moved = _blobs(48, channels=2), _blobs(48, shift=(1.3, -2.6), channels=2)
    x, refs = torch.cat([moved, ref]), torch.cat([ref, ref])
    batches, real = [], metrics.shift_image

    def spy(images, shift):
        batches.append(images.shape[0])
        return real(images, shift)
    monkeypatch.setattr(metrics, "shift_image", spy)
    _, shift = metrics.align(x, refs, radius=4, border=10, subpixel=(0.25,))
    assert max(batches) <= 7 * x.shape[0]
    monkeypatch.undo()
    integer = torch.stack([metrics.align(x[i:i + 1], refs[i:i + 1], radius=4, border=10, subpixel=())[1][0]
                           for i in range(2)])
    for i in range(2):
        cands = [integer[i] + 0.25 * torch.tensor([dy, dx]) for dy in range(-3, 4) for dx in range(-3, 4)]
        errors = [float((real(x[i:i + 1], c[None]) - refs[i:i + 1])[..., 10:-10, 10:-10].square().sum())
                  for c in cands]
        torch.testing.assert_close(shift[i], cands[int(np.argmin(errors))])


_SHIFTS = st.one_of(st.integers(-6, 6).map(float), st.floats(-6.0, 6.0, allow_nan=False, width=32))


@given(data=st.data(), h=st.integers(1, 23), w=st.integers(1, 23), batch=st.integers(1, 2),
       channels=st.integers(1, 3), double=st.booleans())
@settings(max_examples=60, deadline=None)
def test_separable_translations_match_shift_image(data, h, w, batch, channels, double):
    """align's refinement resamples its candidates with _translations (a 4-tap cubic filter per axis),
    not grid_sample: every copy must be shift_image's, for integer, negative and many-pixel shifts
    (past the image, where border replication decides everything), over the whole image and over any
    inner window (the refinement scores x[border:-border])."""
    dtype = torch.float64 if double else torch.float32
    m, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    dy = torch.tensor(data.draw(st.lists(_SHIFTS, min_size=batch * m, max_size=batch * m)), dtype=dtype)
    dx = torch.tensor(data.draw(st.lists(_SHIFTS, min_size=batch * n, max_size=batch * n)), dtype=dtype)
    dy, dx = dy.reshape(batch, m), dx.reshape(batch, n)
    border = data.draw(st.integers(0, (min(h, w) - 1) // 2))
    x = torch.rand(batch, channels, h, w, generator=torch.Generator().manual_seed(h * 31 + w), dtype=dtype)
    rows = list(metrics._translations(x, dy, dx, border))
    assert len(rows) == m
    tol = 1e-12 if double else 1e-5
    for i, moved in enumerate(rows):
        assert moved.shape == (batch, n, channels, h - 2 * border, w - 2 * border) and moved.dtype == dtype
        for j in range(n):
            want = metrics.shift_image(x, torch.stack([dy[:, i], dx[:, j]], dim=1))
            torch.testing.assert_close(moved[:, j], want[..., border:h - border, border:w - border],
                                       atol=tol, rtol=0)


def test_separable_translation_weights_by_hand():
    """An impulse moved by (+0.3, -0.3): aligned[p] = x[p + shift], so the copy holds, around the impulse,
    Keys' cubic (A = -0.75) weights at distances 1.7, 0.7, 0.3, 1.3 along y and mirrored along x; a filter
    with its taps reversed, its axes swapped or the floor of a negative shift taken wrongly gives other
    numbers. (Worked by hand from torch's get_cubic_upsample_coefficients.)"""
    x = torch.zeros(1, 1, 9, 11, dtype=torch.float64)
    x[0, 0, 4, 5] = 1.0
    profile = torch.tensor([-0.04725, 0.32625, 0.83125, -0.11025], dtype=torch.float64)  # at p = impulse - 2 .. + 1
    want = torch.zeros(9, 11, dtype=torch.float64)
    want[2:6, 5 - 1:5 + 3] = profile[:, None] * profile.flip(0)[None, :]
    moved = next(metrics._translations(x, torch.tensor([[0.3]], dtype=torch.float64),
                                       torch.tensor([[-0.3]], dtype=torch.float64)))[0, 0, 0]
    torch.testing.assert_close(moved, want, atol=1e-12, rtol=0)
    shift = torch.tensor([[0.3, -0.3]], dtype=torch.float64)
    torch.testing.assert_close(metrics.shift_image(x, shift)[0, 0], want, atol=1e-12, rtol=0)  # (the convention is torch's)


def _direct_ssd(x, ref, radius, border):
    """The integer search's SSD map by hand: ``ref[border:-border]`` against ``x`` cut at ``p + (dy, dx)``,
    one slice per shift, row-major, summed over channels, in float64."""
    hh, ww = x.shape[-2:]
    target = ref[..., border:hh - border, border:ww - border].double()
    maps = [(x[..., border + dy:hh - border + dy, border + dx:ww - border + dx].double() - target).square()
            .sum((1, 2, 3)) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    return torch.stack(maps, dim=1).reshape(x.shape[0], 2 * radius + 1, 2 * radius + 1)


@given(data=st.data(), radius=st.integers(0, 4), batch=st.integers(1, 2), channels=st.integers(1, 3),
       double=st.booleans(), alike=st.booleans())
@settings(max_examples=60, deadline=None)
def test_integer_search_ssd_matches_the_direct_sums(data, radius, batch, channels, double, alike):
    """align's integer search takes the SSD of every shift from FFTs (sum x^2 - 2 corr + sum ref^2); it
    must be the direct sum of squared differences, for windows of any size (small odd ones too) and for
    images alike (a shifted copy plus a little noise), where the three terms cancel down to the noise."""
    dtype = torch.float64 if double else torch.float32
    border = radius + 1 + data.draw(st.integers(0, 3))
    h, w = (2 * border + 1 + data.draw(st.integers(0, 12)) for _ in range(2))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    ref = torch.rand(batch, channels, h, w, generator=g, dtype=dtype)
    if alike:
        x = ref.roll((1, -1), (2, 3)) + 1e-3 * torch.randn(ref.shape, generator=g, dtype=dtype)
    else:
        x = torch.rand(batch, channels, h, w, generator=g, dtype=dtype)
    got = metrics._window_ssd(x, ref, radius, border)
    want = _direct_ssd(x, ref, radius, border)
    assert got.shape == want.shape and got.dtype == torch.float64
    energy = (x.double().square() + ref.double().square()).flatten(1).sum(1)  # what cancels in the FFT's sums
    assert ((got - want).abs() <= 1e-12 * energy[:, None, None]).all(), (got - want).abs().max()


@given(data=st.data(), radius=st.integers(1, 4), channels=st.integers(1, 3), double=st.booleans())
@settings(max_examples=30, deadline=None)
def test_align_finds_a_planted_integer_shift_exactly(data, radius, channels, double):
    """Two images cut from one random scene at offsets (dy, dx) apart, each image of the batch its own:
    align must return exactly that shift (aligned[p] = x[p + shift]), the refinement keeping it."""
    dtype = torch.float64 if double else torch.float32
    border = radius + 1 + data.draw(st.integers(0, 3))
    h, w = (2 * border + 1 + data.draw(st.integers(0, 20)) for _ in range(2))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    shifts = [(data.draw(st.integers(-radius, radius)), data.draw(st.integers(-radius, radius))) for _ in range(2)]
    scenes = torch.rand(2, channels, h + 2 * radius, w + 2 * radius, generator=g, dtype=dtype)
    ref = scenes[..., radius:radius + h, radius:radius + w]
    x = torch.stack([scene[..., radius - dy:radius - dy + h, radius - dx:radius - dx + w]
                     for scene, (dy, dx) in zip(scenes, shifts)])  # x[q] = scene[q - shift], so x[p + shift] = ref[p]
    _, shift = metrics.align(x, ref, radius=radius, border=border)
    assert shift.dtype == dtype and shift.tolist() == [[float(dy), float(dx)] for dy, dx in shifts]


def test_integer_search_ties_go_to_the_first_shift_in_row_major_order():
    """A flat image ties every shift exactly (its SSD against ref is the same at each); the FFT's rounding
    must not choose among them: the first, (-radius, -radius), wins, as argmin of direct sums chose. The
    other image of the batch is moved by (2, -1) and must still be found."""
    g = torch.Generator().manual_seed(3)
    scene = torch.rand(1, 2, 44, 44, generator=g, dtype=torch.float64)
    ref = torch.cat([torch.rand(1, 2, 40, 40, generator=g, dtype=torch.float64), scene[..., 2:42, 2:42]])
    x = torch.cat([torch.full((1, 2, 40, 40), 0.3, dtype=torch.float64), scene[..., 0:40, 3:43]])
    _, shift = metrics.align(x, ref, radius=2, border=5, subpixel=())
    assert shift.tolist() == [[-2.0, -2.0], [2.0, -1.0]]



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_flat_restoration_equal_to_its_sharp_image_scores_an_infinite_psnr(dtype):
    """A flat image ties every shift: the integer search takes the first (row-major), a whole pixel, and
    the sub-pixel steps must keep it where their candidates tie too. Each took its first candidate, 3 steps
    off, so the shift ended fractional (-10.9, -10.7) and bicubic rounding scored two equal flat images at
    132 dB, not the infinite PSNR of equal images. Flat images of two levels score their level difference."""
    flat = torch.full((2, 3, 48, 48), 0.4, dtype=dtype)
    scores = metrics.levin_scores(flat, flat)
    assert torch.isinf(scores["psnr"]).all() and (scores["ssd"] == 0).all()
    assert (scores["shift"] == scores["shift"].round()).all()
    darker = metrics.levin_scores(flat - 0.1, flat)
    torch.testing.assert_close(darker["psnr"], torch.full((2,), 20.0, dtype=dtype), rtol=0, atol=1e-3)

def _ssim_reference(x: np.ndarray, y: np.ndarray, max_val: float) -> float:
    """Wang et al.'s SSIM written out: 11x11 Gaussian window (sigma 1.5), constants (0.01 L)^2 and
    (0.03 L)^2, mean over the positions where the whole window fits, then over channels."""
    from scipy.signal import correlate2d
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    values = []
    for a, b in zip(x, y):
        f = lambda z: correlate2d(z, win, mode="valid")  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb, cov = f(a * a) - ma ** 2, f(b * b) - mb ** 2, f(a * b) - ma * mb
        values.append((((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))).mean())
    return float(np.mean(values))


@given(seed=st.integers(0, 1000), h=st.integers(11, 30), w=st.integers(11, 30), noise=st.floats(0.0, 0.3),
       max_val=st.sampled_from([1.0, 255.0]))
@settings(max_examples=15, deadline=None)
def test_ssim_is_wangs_over_the_valid_window_positions(seed, h, w, noise, max_val):
    """ssim's docstring: Gaussian-window SSIM over the positions where the whole window fits (no
    padding, so borders are not invented). Compared with a direct implementation; kornia's 'same'
    padding (zeros invented around the border) passed every earlier test, which only checked SSIM = 1
    for identical images and < 0.9 for noisy ones."""
    g = np.random.default_rng(seed)
    ref = g.random((2, h, w)) * max_val
    x = np.clip(ref + noise * max_val * g.standard_normal((2, h, w)), 0, max_val)
    got = metrics.ssim(torch.from_numpy(x)[None], torch.from_numpy(ref)[None], max_val=max_val)
    assert float(got[0]) == pytest.approx(_ssim_reference(x, ref, max_val), abs=1e-6)


@given(seed=st.integers(0, 1000), scale=st.floats(0.1, 10.0), shift=st.tuples(st.integers(-3, 3), st.integers(-3, 3)))
@settings(max_examples=20, deadline=None)
def test_kernel_ncc_forgives_translation_and_scale_and_never_exceeds_one(seed, scale, shift):
    """kernel_similarity's ncc is 1 for identical kernels 'up to translation and scale', and at most 1
    for any pair (Cauchy-Schwarz). A denominator using one kernel's norm twice passed the suite, whose
    kernels all summed to 1."""
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(15, 15, dtype=torch.float64)
    k[4:11, 4:11] = torch.rand(7, 7, generator=g, dtype=torch.float64)
    other = torch.rand(15, 15, generator=g, dtype=torch.float64)
    moved = scale * torch.roll(k, shifts=shift, dims=(0, 1))
    sim = metrics.kernel_similarity(torch.stack([moved, scale * other]), torch.stack([k, k]))
    assert float(sim["ncc"][0]) == pytest.approx(1.0, abs=1e-9)
    assert float(sim["ncc"][1]) <= 1.0 + 1e-9


def test_levin_scores_clip_the_restoration_to_the_data_range():
    """levin_scores' docstring: x is clipped to [0, max_val] after the alignment, then scored. A
    restoration that overshoots is scored by its clipped values: PSNR and SSD worked out here."""
    ref = _blobs(48).double()
    x = ref.clone()
    x[..., :24, :] += 0.8  # overshoots above 1 in the top half
    x[..., 30:40, :] -= 0.9  # and below 0 in a band
    scores = metrics.levin_scores(x, ref, radius=0, border=5)
    clipped, r = x.clamp(0, 1)[..., 5:-5, 5:-5], ref[..., 5:-5, 5:-5]
    ssd = float((clipped - r).square().sum())
    assert float(scores["ssd"][0]) == pytest.approx(ssd, rel=1e-9)
    assert float(scores["psnr"][0]) == pytest.approx(10 * np.log10(1.0 / (ssd / r.numel())), abs=1e-6)


@pytest.mark.parametrize("dy, dx", [(8.37, -9.62), (-9.88, 6.13)])
def test_align_defaults_reach_10_px_and_refine_to_a_twentieth(dy, dx):
    """With its defaults (radius 10, refinement steps 0.25 then 0.05 px) align finds shifts up to 10 px
    and places them to about 0.05 px: a quarter-pixel grid alone would leave these 0.12 px off."""
    ref = _blobs(64)
    aligned, shift = metrics.align(_blobs(64, shift=(dy, dx)), ref)
    assert abs(float(shift[0, 0]) - dy) < 0.04 and abs(float(shift[0, 1]) - dx) < 0.04, (shift, dy, dx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_align_on_cuda_finds_the_shifts_the_cpu_finds():
    """cuFFT rounds otherwise than the CPU's FFT: on a GPU the integer search must still give a flat
    image's exact ties to the first shift and find a planted one, and the sub-pixel search must land on
    the grid point the CPU lands on for planted shifts up to 10 px, the defaults Levin's scoring uses."""
    g = torch.Generator().manual_seed(3)
    scene = torch.rand(1, 2, 44, 44, generator=g, dtype=torch.float64)
    ref = torch.cat([torch.rand(1, 2, 40, 40, generator=g, dtype=torch.float64), scene[..., 2:42, 2:42]])
    x = torch.cat([torch.full((1, 2, 40, 40), 0.3, dtype=torch.float64), scene[..., 0:40, 3:43]])
    _, shift = metrics.align(x.cuda(), ref.cuda(), radius=2, border=5, subpixel=())
    assert shift.tolist() == [[-2.0, -2.0], [2.0, -1.0]]

    planted = [(8.37, -9.62), (-9.88, 6.13), (0.4, 0.0), (-3.21, 2.77)]
    moved = torch.cat([_blobs(64, shift=s, channels=3) for s in planted])
    ref = _blobs(64, channels=3).expand_as(moved)
    aligned, on_gpu = metrics.align(moved.cuda(), ref.cuda())
    on_cpu = metrics.align(moved, ref)[1]
    assert aligned.is_cuda and on_gpu.is_cuda
    assert (on_gpu.cpu() - torch.tensor(planted)).abs().max() < 0.08, on_gpu
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=0)


def test_align_border_limits_are_exact():
    # Docstring: border >= radius + 1 (so shifted windows stay inside) and sides above 2 * border; one
    # pixel less of either is refused, the limit itself is taken.
    x = _blobs(29)
    metrics.align(x, x, radius=3, border=4, subpixel=())
    with pytest.raises(ValueError, match="must exceed the shift radius"):
        metrics.align(x, x, radius=4, border=4)
    metrics.align(x, x, radius=3, border=14, subpixel=())
    with pytest.raises(ValueError, match="too small"):
        metrics.align(x[..., :28, :28], x[..., :28, :28], radius=3, border=14)


@pytest.mark.parametrize("planted", [(3.7, -2.3), (-3.7, 2.3)])
def test_subpixel_refinement_reaches_three_steps_either_way(planted):
    # Docstring: each refinement step searches +-3 steps around the integer best; with one 0.1 px step the
    # integer best 4 (or -2) of a 3.7 (or -2.3) px shift must still reach 0.3 px below it, and above for -3.7.
    ref = _blobs(64)
    moved = _blobs(64, shift=planted)
    _, shift = metrics.align(moved, ref, radius=6, border=15, subpixel=(0.1,))
    assert abs(float(shift[0, 0]) - planted[0]) < 0.05 and abs(float(shift[0, 1]) - planted[1]) < 0.05, shift


def test_error_ratio_floors_only_a_true_kernel_error_of_zero_at_1e_12():
    # Docstring: a true-kernel error of 0 counts as 1e-12; small non-zero errors are divided as they are.
    est = torch.tensor([2e-9, 3e-7, 5.0], dtype=torch.float64)
    true = torch.tensor([1e-9, 1e-7, 0.0], dtype=torch.float64)
    torch.testing.assert_close(metrics.error_ratio(est, true), torch.tensor([2.0, 3.0, 5e12], dtype=torch.float64))


def test_kernel_ncc_forgives_a_translation_across_the_whole_canvas():
    # "the maximum over all shifts": the same blob in opposite corners of a 15x15 kernel is 12 px away,
    # more than half the canvas, and still correlates perfectly.
    blob = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 0.5], [1.0, 0.0, 3.0]], dtype=torch.float64)
    a = torch.zeros(15, 15, dtype=torch.float64)
    b = torch.zeros(15, 15, dtype=torch.float64)
    a[:3, :3] = blob
    b[-3:, -3:] = blob
    assert abs(float(metrics.kernel_similarity(a, b)["ncc"][0]) - 1.0) < 1e-12
    b2 = torch.zeros(15, 15, dtype=torch.float64)
    b2[-3:, :3] = blob  # 12 px down, 0 across
    assert abs(float(metrics.kernel_similarity(a, b2)["ncc"][0]) - 1.0) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_scored_in_float32(dtype):
    # (scored in float16, a 40 dB pair read 40.19 dB and its SSIM rounded to 1)
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(2, 3, 24, 24, generator=gen).to(dtype)
    x = (ref.float() + 0.01 * torch.randn(2, 3, 24, 24, generator=gen)).to(dtype)
    for score in (metrics.psnr, metrics.ssim):
        got, want = score(x, ref), score(x.float(), ref.float())
        assert got.dtype == torch.float32 and torch.equal(got, want), score
    assert metrics.psnr(x[:0], ref[:0]).dtype == torch.float32
