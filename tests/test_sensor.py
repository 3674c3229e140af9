"""The sensor pipeline: tone curves, highlight boost, noise statistics, Bayer, quantisation, JPEG."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth import sensor as S


def _params(n=1, **values):
    """SensorParams with everything off, then the given per-field values (scalars broadcast to n)."""
    p = S.SensorModel.off().sample(n, seed=0)
    for key, value in values.items():
        old = getattr(p, key)
        setattr(p, key, torch.full_like(old, value) if not isinstance(value, torch.Tensor) else value.to(old.dtype))
    return p


# --------------------------------------------------------------------------- tone curves


def test_srgb_curve_matches_the_standard_at_known_points():
    # IEC 61966-2-1: linear = ((v + 0.055) / 1.055) ** 2.4 above 0.04045, v / 12.92 below.
    v = torch.tensor([0.0, 0.02, 0.04045, 0.5, 0.8, 1.0]).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    expected = torch.tensor([0.0, 0.02 / 12.92, 0.04045 / 12.92, 0.214041, 0.603827, 1.0])
    assert torch.allclose(S.srgb_to_linear(v)[0, 0, 0], expected, atol=2e-6)


@given(crf=st.sampled_from(S.CRFS), gamma=st.floats(1.5, 3.0), seed=st.integers(0, 2**31))
@settings(max_examples=30, deadline=None)
def test_linear_to_display_to_linear_is_identity(crf, gamma, seed):
    torch.manual_seed(seed % 1000)  # test data only; the package never uses the global RNG
    lin = torch.rand(2, 3, 8, 9)
    p = _params(2, crf=S.CRFS.index(crf), gamma=gamma)
    back = S.to_linear(S.from_linear(lin, p), p)
    # The S-curve is flat at its ends, so its inverse amplifies float32 rounding there.
    tol = 2e-4 if crf == "brooks" else 2e-6
    assert (back - lin).abs().max() <= tol


@given(x=st.lists(st.floats(1e-6, 4.0), min_size=1, max_size=40), p=st.floats(0.1, 5.0))
@settings(max_examples=50, deadline=None)
def test_power_agrees_with_pow(x, p):
    # float64 goes through exp(p log x) (see sensor._power): the relative error is a few ulps of
    # p log x, zero stays zero; float32 is pow itself, bit for bit.
    x64 = torch.tensor(x, dtype=torch.float64)
    exact = x64.pow(p)
    bound = 4 * torch.finfo(torch.float64).eps * (2 + (p * x64.log()).abs()) * exact
    assert ((S._power(x64, p) - exact).abs() <= bound).all()
    gamma = torch.tensor([p], dtype=torch.float64)  # a per-item tensor exponent, as the gamma curve passes
    assert ((S._power(x64, gamma) - exact).abs() <= bound).all()
    assert S._power(torch.zeros(1, dtype=torch.float64), p) == 0
    x32 = torch.tensor(x + [0.0])
    assert torch.equal(S._power(x32, p), x32.pow(p))


def test_power_gradient_at_zero_is_pows():
    x = torch.tensor([0.0, 0.5], dtype=torch.float64, requires_grad=True)
    S._power(x, 2.4).sum().backward()
    assert torch.equal(x.grad, 2.4 * torch.tensor([0.0, 0.5], dtype=torch.float64) ** 1.4)
    # p < 1 (a gamma curve's encoding): pow's slope at 0 is infinite; _power documents 0 there, else
    # the inf met the zero slope of what follows as NaN in --mode reblur
    y = torch.tensor([0.0, 0.5], dtype=torch.float64, requires_grad=True)
    S._power(y, 1 / 2.2).sum().backward()
    assert float(y.grad[0]) == 0.0 and float(y.grad[1]) == pytest.approx(0.5 ** (1 / 2.2 - 1) / 2.2, rel=1e-12)


def test_brooks_curve_gradient_is_finite_next_to_black_and_white():
    """The inverse S-curve's slope is infinite at 0 and 1; under autograd _inverse_smoothstep keeps
    asin's argument inside [-1, 1] by an epsilon, so values within ~3e-8 of black (1 - 2y rounding
    to 1 in float32) and of white get finite gradients (they got NaN, as documented there)."""
    p = _params(1, crf=S.CRFS.index("brooks"))
    for v in (0.0, 1e-9, 3e-8, 1e-7, 1 - 6e-8, 1.0):
        x = torch.full((1, 3, 2, 2), v, requires_grad=True)
        S.to_linear(x, p).sum().backward()
        assert bool(torch.isfinite(x.grad).all()), v


def test_srgb_curves_are_kornias():
    import kornia.color as kc
    torch.manual_seed(0)
    edges = torch.tensor([0.0, 0.0031308, 0.04045, 1.0, 1.5])  # both thresholds, the ends, a highlight
    v = torch.cat([torch.rand(3, 64, 64), edges.expand(3, 64, 5)], -1)
    # float32: the same operations as kornia, so the same bits; float64: a few ulps (exp(p log x))
    assert torch.equal(S.srgb_to_linear(v), kc.rgb_to_linear_rgb(v))
    assert torch.equal(S.linear_to_srgb(v), kc.linear_rgb_to_rgb(v))
    v64 = v.double()
    assert torch.allclose(S.srgb_to_linear(v64), kc.rgb_to_linear_rgb(v64), rtol=1e-14, atol=1e-17)
    assert torch.allclose(S.linear_to_srgb(v64), kc.linear_rgb_to_rgb(v64), rtol=1e-14, atol=1e-17)


def test_curves_at_known_values():
    lin = torch.full((3, 3, 1, 1), 0.5)
    p = _params(3, gamma=2.5)
    p.crf = torch.tensor([S.CRFS.index("gamma"), S.CRFS.index("brooks"), S.CRFS.index("linear")])
    out = S.from_linear(lin, p)[:, 0, 0, 0]
    y = 0.5 ** (1 / 2.2)
    assert torch.allclose(out, torch.tensor([0.5 ** (1 / 2.5), 3 * y * y - 2 * y ** 3, 0.5]), atol=1e-6)


def test_brooks_curve_holds_values_above_white_at_1():
    """from_linear documents that the S-shaped "brooks" curve clamps values above 1 to 1: the smoothstep
    3y^2 - 2y^3 falls past y = 1 (1.2 -> 0.864), so an unclamped highlight with clipping off came out
    darker than white."""
    lin = torch.tensor([0.9, 1.0, 1.2, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = S.from_linear(lin, _params(1, crf=S.CRFS.index("brooks")))[0, 0, 0]
    y = 0.9 ** (1 / 2.2)
    assert torch.allclose(out, torch.tensor([3 * y * y - 2 * y ** 3, 1.0, 1.0, 1.0]), atol=1e-6)


# --------------------------------------------------------------------------- identity and reproducibility


@given(seed=st.integers(0, 2**40), h=st.integers(1, 12), w=st.integers(1, 12))
@settings(max_examples=25, deadline=None)
def test_every_step_off_is_identity(seed, h, w):
    g = torch.Generator().manual_seed(seed % 2**31)
    img = torch.rand(3, 3, h, w, generator=g)
    p = S.SensorModel.off().sample(3, seed)
    assert torch.equal(S.pre_blur(img, p), img)
    assert torch.equal(S.post_blur(img, p, seed, range(3)), img)
    # Values a highlight boost made > 1 survive too when nothing clips.
    assert torch.equal(S.post_blur(img * 3, p, seed, range(3)), img * 3)


@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**6), split=st.integers(1, 7))
@settings(max_examples=25, deadline=None)
def test_params_depend_only_on_seed_and_index(seed, start, split):
    model = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(10, 95))
    whole = model.sample(8, seed, start=start).to_records()
    parts = model.sample(split, seed, start=start).to_records() + model.sample(8 - split, seed, start=start + split).to_records()
    assert whole == parts
    assert model.sample(8, seed + 1, start=start).to_records() != whole


def test_every_choice_is_drawn_about_equally_often():
    """Tone curves and Bayer patterns are drawn uniformly from the lists given, JPEG quality uniformly
    from the integers lo..hi inclusive: over 4000 items each of 4 choices comes ~1000 times (binomial
    std 27; 5 std allowed). Scaling the uniform draw by one choice too few, which never drew the last
    curve or pattern or the top quality, passed every test."""
    n = 4000
    p = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(90, 93)).sample(n, seed=3)
    bound = 5 * math.sqrt(n * 0.25 * 0.75)
    for values, choices in ((p.crf, range(4)), (p.bayer, range(4)), (p.jpeg_quality, range(90, 94))):
        counts = torch.bincount(values - choices[0], minlength=4)
        assert counts.numel() == 4 and values.min() == choices[0] and values.max() == choices[-1]
        assert float((counts - n / 4).abs().max()) <= bound, counts


def test_ranges_are_drawn_uniformly():
    """gamma and highlight_gain are drawn uniformly over their (lo, hi) ranges (shot noise is the one
    log-uniform draw): mean at the middle within 5 standard errors, a quarter of the draws in the
    bottom quarter. A log-uniform gamma passed."""
    n, lo, hi = 4000, 0.5, 8.0
    p = S.SensorModel(gamma=(lo, hi), highlight_gain=(lo, hi)).sample(n, seed=4)
    for values in (p.gamma.double(), p.highlight_gain.double()):
        assert float(values.min()) >= lo and float(values.max()) <= hi
        assert abs(float(values.mean()) - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * n)
        assert abs(float((values < lo + (hi - lo) / 4).double().mean()) - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)


@pytest.mark.parametrize("bits, jpeg", [(None, None), (8, (50, 90))])
def test_item_output_is_the_same_in_any_batch(bits, jpeg):
    # Float output exposes any last-bit dependence on an item's place in the batch; odd sizes make
    # items start at different SIMD alignments.
    model = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, bits=bits, jpeg_quality=jpeg)
    img = torch.rand(6, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    p = model.sample(6, seed=9, start=100)
    whole = S.post_blur(S.pre_blur(img, p), p, 9, range(100, 106))
    for i in range(6):
        one = S.post_blur(S.pre_blur(img[i:i + 1], p[i]), p[i], 9, [100 + i])
        assert torch.equal(one, whole[i:i + 1])


def test_records_are_json_and_restore_the_same_output():
    model = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(40, 95))
    p = model.sample(6, seed=4)
    records = json.loads(json.dumps(p.to_records()))
    assert all(set(r) == set(records[0]) for r in records)
    q = S.SensorParams.from_records(records)
    img = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    assert torch.equal(S.post_blur(S.pre_blur(img, p), p, 4, range(6)), S.post_blur(S.pre_blur(img, q), q, 4, range(6)))
    with pytest.raises(ValueError, match="to_records"):
        S.SensorParams.from_records([{"crf": "srgb"}])


# --------------------------------------------------------------------------- noise


@given(log_a=st.floats(math.log(1e-4), math.log(1.2e-2)), b=st.floats(0.0, 1e-3), x=st.floats(0.02, 0.95),
       seed=st.integers(0, 2**40))
@settings(max_examples=30, deadline=None)
def test_noise_variance_is_a_x_plus_b(log_a, b, x, seed):
    a = math.exp(log_a)
    p = _params(1, shot_noise=a, read_noise=b)
    img = torch.full((1, 3, 64, 64), x)
    residual = (S.add_noise(img, p, seed, [0]) - img).double()
    n = residual.numel()
    var = a * x + b
    # Sample mean and variance of n Gaussian draws: standard errors sqrt(var / n) and var * sqrt(2 / n);
    # 5 standard errors (plus float32 rounding) bound a correct implementation.
    assert abs(float(residual.mean())) <= 5 * math.sqrt(var / n) + 1e-6
    assert abs(float(residual.var()) - var) <= 5 * var * math.sqrt(2 / n) + 1e-9


@given(log_a=st.floats(math.log(1e-4), math.log(1.2e-2)), b=st.floats(0.0, 1e-3), seed=st.integers(0, 2**40))
@settings(max_examples=20, deadline=None)
def test_noise_variance_is_a_x_plus_b_at_every_pixel_of_a_varied_image_highlights_included(log_a, b, seed):
    """Each pixel's noise has the variance of its own value: on an image whose values vary from pixel to
    pixel, up to the 1 + highlight_gain a boost leaves above white, the residual divided by sqrt(a x + b)
    (written out here) is a unit Gaussian, over the whole image and over the pixels below and above white
    alike. A flat image in [0, 1] (the test above) cannot see a variance read at another pixel's value,
    nor one whose value is clamped to white."""
    a = math.exp(log_a)
    p = _params(1, shot_noise=a, read_noise=b)
    x = torch.from_numpy(np.random.default_rng(seed % 2**32).uniform(0.02, 3.0, (1, 3, 64, 64)))
    z = ((S.add_noise(x, p, seed, [0]) - x) / (a * x + b).sqrt()).flatten()
    for part in (z, z[x.flatten() < 1], z[x.flatten() > 1.2]):
        n = part.numel()
        assert n > 2000
        # Standard errors of the sample mean and variance of n unit Gaussians: 1 / sqrt(n) and sqrt(2 / n).
        assert abs(float(part.mean())) <= 5 / math.sqrt(n)
        assert abs(float(part.var()) - 1) <= 5 * math.sqrt(2 / n)


def test_noise_levels_follow_brooks_et_al():
    p = S.SensorModel().sample(4000, seed=11)
    log_a, log_b = p.shot_noise.double().log(), p.read_noise.double().log()
    lo, hi = math.log(1e-4), math.log(1.2e-2)
    assert float(log_a.min()) >= lo - 1e-6 and float(log_a.max()) <= hi + 1e-6
    # Log-uniform: log a has mean (lo + hi) / 2 and variance (hi - lo)^2 / 12.
    assert abs(float(log_a.mean()) - (lo + hi) / 2) < 0.05
    assert abs(float(log_a.var()) - (hi - lo) ** 2 / 12) < 0.1
    scatter = log_b - (2.18 * log_a + 1.20)
    assert abs(float(scatter.mean())) < 0.02 and abs(float(scatter.std()) - 0.26) < 0.015


def test_noise_fields_differ_between_items_and_seeds():
    p = _params(2, shot_noise=0.01, read_noise=1e-4)
    img = torch.full((2, 3, 16, 16), 0.3)
    a = S.add_noise(img, p, 1, [0, 1])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, S.add_noise(img, p, 2, [0, 1]))


def test_noise_then_clip_saturates_at_white():
    p = _params(1, shot_noise=0.01, read_noise=1e-4, clip=True)
    out = S.post_blur(torch.full((1, 3, 32, 32), 1.8), p, 0, [0])
    assert torch.equal(out, torch.ones_like(out))


def test_noise_std_takes_negative_values_as_zero():
    """noise_std is documented as sqrt(a * max(x, 0) + b): a blurred value a little below black (FFT
    rounding, a negative lobe) has the read noise alone, never the square root of a negative variance."""
    p = _params(1, shot_noise=0.01, read_noise=1e-4)
    x = torch.tensor([-0.5, -1e-3, 0.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert torch.allclose(S.noise_std(x, p)[0, 0, 0], torch.full((3,), 1e-2))
    assert bool(torch.isfinite(S.add_noise(x, p, 0, [0])).all())


def test_clip_clamps_below_black_as_well_as_at_white():
    """clip is sensor saturation on [0, 1]: noise around black goes negative and must come back at 0
    (with the linear curve and float output nothing after clip would clamp it)."""
    x = torch.tensor([-0.3, 0.0, 0.5, 1.0, 1.4]).view(1, 1, 1, 5).expand(2, 3, 1, 5)
    p = _params(2, clip=True)
    p.clip = torch.tensor([True, False])
    out = S.clip(x, p)
    assert torch.equal(out[0, :, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]).expand(3, 5))
    assert torch.equal(out[1], x[1])
    q = _params(1, shot_noise=1e-3, read_noise=1e-3, clip=True)
    dark = S.post_blur(torch.zeros(1, 3, 32, 32), q, 0, [0])
    assert float(dark.min()) == 0.0 and float(dark.max()) > 0.0


# --------------------------------------------------------------------------- highlights


def test_highlight_boost_adds_gain_only_to_saturated_values():
    p = _params(1, highlight_gain=1.5, highlight_threshold=0.98)
    lin = torch.tensor([0.2, 0.979, 0.98, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert torch.allclose(S.boost_highlights(lin, p)[0, 0, 0], torch.tensor([0.2, 0.979, 2.48, 2.5]))


def test_boosted_light_blurs_into_a_saturated_streak():
    # A one-pixel light smeared over 5 pixels: without the boost the streak is 1/5 as bright.
    sharp = torch.zeros(1, 3, 1, 9)
    sharp[..., 4] = 1.0
    box = lambda x: torch.nn.functional.avg_pool2d(x, (1, 5), stride=1, padding=(0, 2), count_include_pad=True)  # noqa: E731
    p = _params(1, highlight_gain=4.0, highlight_threshold=0.98, crf=S.CRFS.index("srgb"), clip=True)
    q = _params(1, crf=S.CRFS.index("srgb"), clip=True)
    boosted = S.post_blur(box(S.pre_blur(sharp, p)), p, 0, [0])
    plain = S.post_blur(box(S.pre_blur(sharp, q)), q, 0, [0])
    assert torch.allclose(boosted[0, :, 0, 2:7], torch.ones(3, 5), atol=1e-6)
    assert float(plain[0, 0, 0, 4]) < 0.5


# --------------------------------------------------------------------------- Bayer


def test_mosaic_samples_the_named_pattern():
    rgb = torch.stack([torch.full((4, 4), v) for v in (0.1, 0.5, 0.9)]).unsqueeze(0)
    colour = {"R": 0.1, "G": 0.5, "B": 0.9}
    for pattern in S.BAYER:
        raw = S.mosaic(rgb, pattern)[0, 0]
        cell = [[colour[pattern[0]], colour[pattern[1]]], [colour[pattern[2]], colour[pattern[3]]]]
        assert torch.allclose(raw, torch.tensor(cell).repeat(2, 2))


@pytest.mark.parametrize("h, w", [(5, 7), (4, 7), (5, 6)])
def test_mosaic_of_odd_sizes_samples_each_pixel_in_place(h, w):
    """Raw pixel (i, j) is the colour the pattern names at (i % 2, j % 2) of RGB pixel (i, j), also when
    an odd size is padded (padding on the wrong side shifted every sample by a pixel, which flat-colour
    and even-size tests cannot see)."""
    rgb = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(7))
    for pattern in S.BAYER:
        raw = S.mosaic(rgb, pattern)[0, 0]
        expected = torch.empty(h, w)
        for i in range(h):
            for j in range(w):
                expected[i, j] = rgb[0, "RGB".index(pattern[2 * (i % 2) + j % 2]), i, j]
        assert torch.equal(raw, expected), pattern


@given(pattern=st.sampled_from(S.BAYER), h=st.integers(2, 9), w=st.integers(2, 9))
@settings(max_examples=30, deadline=None)
def test_demosaic_of_flat_colour_is_exact_at_any_size(pattern, h, w):
    rgb = torch.tensor([0.2, 0.6, 0.4]).view(1, 3, 1, 1).expand(2, 3, h, w)
    assert torch.allclose(S.demosaic(S.mosaic(rgb, pattern), pattern), rgb, atol=1e-6)


def test_mosaic_demosaic_keeps_the_sampled_values():
    img = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    p = _params(1, bayer=S.BAYER.index("GRBG"))
    out = S.mosaic_demosaic(img, p)
    assert torch.allclose(S.mosaic(out, "GRBG"), S.mosaic(img, "GRBG"), atol=1e-6)
    assert not torch.allclose(out, img)


# --------------------------------------------------------------------------- quantisation and JPEG


@given(bits=st.sampled_from([8, 16]), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_quantize_lands_on_the_grid_within_half_a_step(bits, seed):
    img = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    q = S.quantize(img, bits)
    levels = 2**bits - 1
    k = q.double() * levels
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert float((q - img).abs().max()) <= 0.5 / levels + 1e-7
    assert torch.equal(S.quantize(q, bits), q)


def test_quantize_per_item_bits_and_float_passthrough():
    img = torch.full((3, 3, 2, 2), 0.3)
    q = S.quantize(img, torch.tensor([8, 16, 0]))
    assert float(q[0, 0, 0, 0]) == pytest.approx(round(0.3 * 255) / 255)
    assert float(q[1, 0, 0, 0]) == pytest.approx(round(0.3 * 65535) / 65535)
    assert torch.equal(q[2], img[2])


@given(bits=st.sampled_from([8, 16]), dtype=st.sampled_from([torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_quantize_half_precision_images_stay_finite_and_near_the_grid(bits, dtype, seed):
    """quantize(float16 image, 16) was all NaN: 2**16 - 1 levels overflow float16 to inf, and
    round(x * inf) / inf is NaN. Half-precision images are now rounded in float32: the result is the
    float32 quantisation rounded to the image's dtype."""
    img = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed)).to(dtype)
    q = S.quantize(img, bits)
    assert q.dtype == dtype and bool(torch.isfinite(q).all())
    assert torch.equal(q, S.quantize(img.float(), bits).to(dtype))


def test_quantize_refuses_integer_images_and_bits_that_are_not_counts():
    """An 8-bit image was clamped to [0, 1] and came back as ones and zeros; fractional or negative
    bits gave a grid of 2**bits - 1 'levels' that is no bit depth."""
    with pytest.raises(TypeError, match=r"float\(\) / 255"):
        S.quantize(torch.full((1, 3, 2, 2), 200, dtype=torch.uint8), 8)
    for bits in (8.5, -1, torch.tensor([8.0]), True, 33, 1000, torch.tensor([200])):  # (1000: a NaN image)
        with pytest.raises(ValueError, match="bits must be non-negative integers"):
            S.quantize(torch.rand(1, 3, 2, 2), bits)


def _textured(n=3, size=48):
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = 0.5 + 0.3 * torch.sin(x / 3.0) * torch.cos(y / 5.0)
    noise = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))
    return (0.7 * base + 0.3 * noise).clamp(0, 1)


def test_jpeg_changes_the_image_and_lower_quality_costs_more():
    img = S.quantize(_textured(), 8)
    errors = [float((S.jpeg(img, q) - img).abs().mean()) for q in (10, 40, 70, 95)]
    assert errors[-1] > 0
    assert errors == sorted(errors, reverse=True)
    out = S.jpeg(img, torch.tensor([0, 50, 0]))
    assert torch.equal(out[0], img[0]) and torch.equal(out[2], img[2]) and not torch.equal(out[1], img[1])
    assert out.dtype == torch.float32 and out.device == img.device


def test_full_pipeline_output_is_8_bit_display_image():
    model = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(60, 95))
    p = model.sample(4, seed=1)
    out = S.post_blur(S.pre_blur(_textured(4, 32), p), p, 1, range(4))
    assert out.shape == (4, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, words", [
    ({"crf": ("srgb", "log")}, "crf"),
    ({"gamma": (3.0, 2.0)}, "gamma"),
    ({"shot_noise": (0.0, 0.01)}, "shot_noise"),
    ({"shot_noise": 0.01}, "shot_noise"),
    ({"highlight_threshold": 1.5}, "highlight_threshold"),
    ({"highlight_threshold": 0.0}, "highlight_threshold must be a number in \\(0.0, 1.0\\]"),  # 0 boosts black
    ({"highlight_gain": (-1.0, 1.0)}, "highlight_gain"),
    ({"bayer": ("RGBG",)}, "bayer"),
    ({"bits": 12}, "bits"),
    ({"jpeg_quality": (0, 90)}, "jpeg_quality"),
    ({"jpeg_quality": (50.5, 90)}, "jpeg_quality"),
    ({"jpeg_quality": (50, 90), "bits": 16}, "bits=8"),
    # wrong types fail when the model is built, never at sample time
    ({"clip": "no"}, "clip must be True, False or None"),
    ({"clip": "yes"}, "clip must be True, False or None"),
    ({"clip": 1}, "clip must be True, False or None"),
    ({"crf": 3}, "crf"),
    ({"crf": ["srgb", None]}, "crf"),
    ({"gamma": None}, "gamma must be a \\(low, high\\) pair of numbers, got None"),
    ({"gamma": "22"}, "gamma"),  # a string is not a pair, even of two characters
    ({"highlight_gain": "ab"}, "highlight_gain"),
    ({"highlight_threshold": None}, "highlight_threshold must be a number"),
    ({"highlight_threshold": "0.5"}, "highlight_threshold must be a number"),
    ({"read_noise_line": None}, "read_noise_line"),
    ({"read_noise_line": "12"}, "read_noise_line"),
    ({"read_noise_line": (2.18, math.inf)}, "read_noise_line"),
    # a variance above the signal range (or inf: exp overflowed), at either end of the shot-noise range
    ({"shot_noise": (1e-12, 1e-2), "read_noise_line": (-10.0, 0.0)}, "variance of 1.*e\\+12.*lower the intercept"),
    ({"shot_noise": (1e-4, 1.0)}, "read_noise_line=\\(2.18, 1.2\\) gives a read-noise variance of 3.32"),
    # just above the bound: log b = 0.5 is b = e^0.5 = 1.65 > 1 (the check must be log b > 0, not > 1)
    ({"read_noise_line": (0.0, 0.5)}, "read_noise_line=\\(0.0, 0.5\\) gives a read-noise variance of 1.65"),
    ({"read_noise_scatter": None}, "read_noise_scatter must be a number"),
    ({"read_noise_scatter": True}, "read_noise_scatter must be a number"),
    ({"bayer": 5}, "bayer"),
    ({"bits": 8.0}, "bits"),
    ({"bits": True}, "bits"),
    ({"jpeg_quality": "79"}, "jpeg_quality"),
])
def test_bad_options_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        S.SensorModel(**kwargs)


def test_out_of_range_steps_say_none_switches_them_off():
    """shot_noise=(0, 0), the natural way to ask for no noise, said only that it was out of range."""
    for kwargs, name in (({"shot_noise": (0, 0)}, "shot_noise"), ({"highlight_gain": (-1, 0)}, "highlight_gain"),
                         ({"jpeg_quality": (0, 0)}, "jpeg_quality")):
        with pytest.raises(ValueError, match=rf"{name}=.* is out of range: .*; {name}=None switches the step off"):
            S.SensorModel(**kwargs)
    with pytest.raises(ValueError, match=r"out of range: need 0.1 <= low <= high <= 10.0$"):
        S.SensorModel(gamma=(0, 1))  # not a step: None is no choice


def test_none_switches_clip_and_the_tone_curve_off():
    """A recipe's `clip = "off"` is clip=None: no clipping, not a crash when the first item is drawn."""
    model = S.SensorModel(clip=None, crf=None)
    assert model.clip is False and model.crf == ("linear",)
    p = model.sample(2, seed=0)
    assert not bool(p.clip.any()) and p.to_records()[0]["crf"] == "linear"
    assert S.SensorModel.from_dict(model.to_dict()) == model


def test_bad_images_are_refused():
    p = S.SensorModel().sample(2, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        S.pre_blur(torch.rand(2, 1, 4, 4), p)
    with pytest.raises(ValueError, match="2 sensor parameter records for a batch of 3"):
        S.pre_blur(torch.rand(3, 3, 4, 4), p)
    with pytest.raises(ValueError, match="indices"):
        S.add_noise(torch.rand(2, 3, 4, 4), p, 0, [0])
    for hw in ((1, 4), (4, 1)):  # a Bayer cell is 2x2: one row or column holds two colours at most
        with pytest.raises(ValueError, match="at least 2x2 pixels"):
            S.demosaic(torch.rand(1, 1, *hw), "RGGB")


@pytest.mark.parametrize("noise", [0.0, 1e-3])
@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "7"])
def test_add_noise_refuses_a_bad_seed_with_or_without_noise(noise, seed):
    """A bad seed must fail on every batch: with noise off the call used to return before looking at it."""
    with pytest.raises((TypeError, ValueError), match="seed must be an integer"):
        S.add_noise(torch.rand(1, 3, 4, 4), _params(read_noise=noise), seed, [0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, bits=None)
    img = torch.rand(4, 3, 33, 35, generator=torch.Generator().manual_seed(0))
    p = model.sample(4, seed=2)
    q = model.sample(4, seed=2, device="cuda")
    assert q.to_records() == p.to_records()
    cpu = S.post_blur(S.pre_blur(img, p), p, 2, range(4))
    gpu = S.post_blur(S.pre_blur(img.cuda(), q), q, 2, range(4))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    jpeg = S.jpeg(S.quantize(img.cuda(), 8), 80)
    assert jpeg.device.type == "cuda" and torch.equal(jpeg.cpu(), S.jpeg(S.quantize(img, 8), 80))


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    model = S.SensorModel(crf=["srgb", "gamma"], jpeg_quality=[70, 90], bayer=["RGGB"])
    assert model.crf == ("srgb", "gamma") and model.jpeg_quality == (70, 90)
    again = S.SensorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    with pytest.raises(ValueError, match=r"unknown sensor option\(s\) \['iso'\]"):
        S.SensorModel.from_dict({"iso": 800})


def test_integer_images_are_refused():
    """pre_blur(uint8) returned a uint8 image of 0s and 1s without a word."""
    p = S.SensorModel().sample(1, seed=0)
    img = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"float images .*torch.uint8.*x.float\(\) / 255"):
        S.pre_blur(img, p)
    with pytest.raises(TypeError, match="float images"):
        S.post_blur(img, p, 0, [0])


def test_per_item_bits_and_quality_must_match_the_batch():
    """A (3,) quality or bits for a batch of 2 failed with a torch broadcast error."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"quality must be an int or a \(2,\) tensor, one per image .*got shape \(3,\)"):
        S.jpeg(x, torch.tensor([80, 90, 95]))
    with pytest.raises(ValueError, match=r"bits must be an int or a \(2,\) tensor, one per image .*got shape \(3,\)"):
        S.quantize(x, torch.tensor([8, 8, 8]))
    with pytest.raises(ValueError, match=r"quality \(JPEG\) must be integers in 1-100"):
        S.jpeg(x, 90.5)
    with pytest.raises(ValueError, match=r"jpeg codes RGB \(B, 3, H, W\) or grayscale \(B, 1, H, W\) images, got shape \(2, 2, 16, 16\)"):
        S.jpeg(x[:, :2], 90)
    assert torch.equal(S.jpeg(x, torch.tensor([90, 0]))[1], x[1])
    assert torch.equal(S.quantize(x, torch.tensor([8, 0]))[1], x[1])


def test_jpeg_codes_one_channel_images_as_grayscale():
    """A (B, 1, H, W) image failed inside Pillow ("Cannot handle this data type")."""
    g = torch.rand(2, 1, 16, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = S.jpeg(g, 75)
    assert out.shape == g.shape and out.dtype == g.dtype
    assert torch.equal(out * 255, (out * 255).round()) and not torch.equal(out, g)
    # the same coding as the gray image repeated in three channels gives, up to JPEG's colour rounding
    rgb = S.jpeg(g.expand(-1, 3, -1, -1).contiguous(), 75)
    assert (rgb - out).abs().max() <= 3 / 255


def test_jpeg_returns_the_input_dtype_as_its_docstring_says():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = S.jpeg(x, torch.tensor([80, 0]))
    assert out.dtype == torch.float64 and torch.equal(out[1], x[1])
    assert S.jpeg(x, 0) is x
    assert "dtype" in S.jpeg.__doc__ and "float32" not in S.jpeg.__doc__


def test_every_step_off_clamps_in_pre_blur_as_documented():
    """README and SensorModel.off() said pre_blur is then the identity; it clamps to [0, 1]."""
    import pathlib
    img = torch.tensor([-0.5, 0.25, 1.5]).view(1, 3, 1, 1)
    p = S.SensorModel.off().sample(1, 0)
    assert torch.equal(S.pre_blur(img, p), img.clamp(0, 1))
    assert torch.equal(S.post_blur(img, p, 0, [0]), img)
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    said = readme[readme.index("- `SensorModel.off()`"):][:300]
    assert "clamps to [0, 1]" in said and "are then the identity" not in said
    assert "clamps to [0, 1]" in S.SensorModel.off.__doc__


def test_records_round_trip_restores_what_is_applied_and_says_what_it_does_not():
    """README said from_records(to_records()) rebuilds "the exact parameters"; gamma of a non-"gamma"
    item comes back 1.0 (recorded as None): the docs say so, and everything applied is exact."""
    import pathlib
    model = S.SensorModel(crf=S.CRFS, jpeg_quality=(60, 95))
    p = model.sample(8, seed=3)
    back = S.SensorParams.from_records(p.to_records())
    assert back.to_records() == p.to_records()
    used = p.crf == S.CRFS.index("gamma")
    assert torch.equal(back.gamma[used], p.gamma[used]) and bool((back.gamma[~used] == 1.0).all())
    img = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(S.post_blur(S.pre_blur(img, back), back, 3, range(8)),
                       S.post_blur(S.pre_blur(img, p), p, 3, range(8)))
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "rebuilds the exact parameters" not in readme
    assert "comes back as 1.0" in " ".join(S.SensorParams.from_records.__doc__.split())


def test_records_say_none_for_steps_that_are_off():
    """to_records documents that switched-off steps read None (no Bayer, float output, no JPEG) and 0
    (no noise, no boost): a manifest must not say bits 0 for float output. Steps that are on read
    their values."""
    off = S.SensorModel.off().sample(1, seed=0).to_records()[0]
    assert off["bayer"] is None and off["bits"] is None and off["jpeg_quality"] is None
    assert off["shot_noise"] == 0 and off["read_noise"] == 0 and off["highlight_gain"] == 0
    assert off["crf"] == "linear" and off["gamma"] is None and off["clip"] is False
    on = S.SensorModel(bayer=("RGGB",), jpeg_quality=(70, 70)).sample(1, seed=0).to_records()[0]
    assert on["bayer"] == "RGGB" and on["bits"] == 8 and on["jpeg_quality"] == 70


def test_params_index_with_a_numpy_integer_like_an_int():
    """params[np.int64(2)] raised 'IndexError: tuple index out of range' (the 0-d index dropped the
    batch axis, and len() of the result failed): it now selects one item, as params[2] does."""
    params = S.SensorModel(jpeg_quality=(60, 90)).sample(4, seed=1)
    for i in (np.int64(2), np.int32(-1), torch.tensor(2), torch.tensor(-1, dtype=torch.int32)):
        # (a 0-d tensor, as `for i in torch.arange(n)` gives, made 0-d fields too: len() failed)
        one = params[i]
        assert len(one) == 1 and one.to_records() == params[int(i)].to_records()


def test_jpeg_refuses_integer_images_as_quantize_does():
    """jpeg(uint8 image, 90) failed inside torch ('Index put requires the source and destination
    dtypes match'), and with quality 0 returned it as if it held values in [0, 1]; like quantize
    and the other sensor functions it now refuses an integer image and says how to convert it."""
    img = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    for quality in (90, 0):
        with pytest.raises(TypeError, match=r"jpeg takes float images .*torch.uint8.*x.float\(\) / 255"):
            S.jpeg(img, quality)
    assert S.jpeg(img.float() / 255, 90).dtype == torch.float32


def test_from_dict_reads_a_recipes_toml_sensor_table():
    # README: from_dict reads the configuration "as a TOML/JSON table"; TOML has no null, and a recipe's
    # [sensor] table read with tomllib (jpeg_quality = "off") was refused
    import tomllib

    from blursynth.recipe import RECIPE_DIR, load_recipe
    for name in ("default", "gopro-like"):
        table = tomllib.loads((RECIPE_DIR / f"{name}.toml").read_text())["sensor"]
        assert S.SensorModel.from_dict(table) == load_recipe(name).sensor_model()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_images_are_refused(bad):
    """A NaN pixel came out of post_blur as NaN (the clamps keep it), or, with JPEG on, as whatever
    byte the uint8 cast made of it; +inf met the noise as inf - inf = NaN. Each composite, and jpeg,
    now refuses it, naming the image and the fix."""
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    img[1, 2, 3, 4] = bad
    p = S.SensorModel(jpeg_quality=(80, 90)).sample(2, seed=0)
    for call, name in ((lambda: S.pre_blur(img, p), "pre_blur: the sharp image"),
                       (lambda: S.post_blur(img, p, 0, range(2)), "post_blur: the blurred image"),
                       (lambda: S.jpeg(img, 80), "jpeg: the image")):
        with pytest.raises(ValueError, match=rf"{name} holds 1 NaN or infinite value.*torch.nan_to_num"):
            call()


@pytest.mark.parametrize("field, value", [
    ("shot_noise", -0.01), ("read_noise", math.nan), ("read_noise", -1e-4), ("highlight_gain", math.inf),
    ("highlight_threshold", 0.0), ("bits", 12), ("jpeg_quality", 101), ("gamma", -2.2),
    # (int() took these: 8.5 as 8 bits, quality 80.5 as 80, the strings "8" and "80" as numbers)
    ("bits", 8.5), ("bits", "8"), ("jpeg_quality", 80.5), ("jpeg_quality", "80"), ("jpeg_quality", math.nan),
])
def test_records_holding_values_no_model_draws_are_refused(field, value):
    """from_records took a hand-edited record's negative or NaN noise variance, and post_blur then
    made NaN pixels (the square root of a negative variance) without a word; bits 12 or quality 101
    went through too. Each is refused, naming the record and the field."""
    records = S.SensorModel(crf=["gamma"], jpeg_quality=(60, 90)).sample(3, seed=0).to_records()
    records[2][field] = value
    with pytest.raises(ValueError, match=rf"sensor record 2: {field}=.* is out of range"):
        S.SensorParams.from_records(records)


def test_a_gamma_curve_record_needs_its_gamma():
    """gamma is None in a record whose curve does not use it, and comes back 1.0; a "gamma" curve's record with
    gamma None (hand-edited) came back 1.0 too, the identity curve, without a word."""
    records = S.SensorModel(crf=["gamma"]).sample(2, seed=0).to_records()
    records[1]["gamma"] = None
    with pytest.raises(ValueError, match=r'^sensor record 1: gamma=None, but its curve is "gamma"'):
        S.SensorParams.from_records(records)


def test_record_clip_must_be_a_bool():
    """bool("false") is True: a record's clip written as a string flipped on."""
    records = S.SensorModel().sample(1, seed=0).to_records()
    records[0]["clip"] = "false"
    with pytest.raises(ValueError, match="clip must be true or false"):
        S.SensorParams.from_records(records)


def test_sample_refuses_counts_and_indices_that_are_not_non_negative_integers():
    """sample(2.5, 0) failed with range()'s words, naming nothing, and sample(True, 0) drew one item;
    sample_at(tensor([1.7])) drew item 1's values, and sample_at(tensor([-1])) drew values no item has."""
    model = S.SensorModel()
    for n, start in ((2.5, 0), (True, 0), (1, 1.0)):
        with pytest.raises(ValueError, match="SensorModel.sample needs integers n >= 0 and start >= 0"):
            model.sample(n, 0, start=start)
    with pytest.raises(TypeError, match="item indices must be integers"):
        model.sample_at(torch.tensor([1.7]), 0)
    with pytest.raises(ValueError, match="item indices must be >= 0"):
        model.sample_at(torch.tensor([-1]), 0)
    picked = model.sample_at(torch.tensor([3, 1], dtype=torch.int32), 0)
    assert picked.to_records() == model.sample(4, 0)[[3, 1]].to_records()


def test_noise_field_is_the_documented_draw():
    """add_noise's docstring and the README gave the field as rng.normal(seed, i, (3, H, W)), stream 0;
    it is drawn on stream 307, so the documented call gave another field."""
    import pathlib

    from blursynth import rng
    p = _params(2, read_noise=1e-2)
    x = torch.full((2, 3, 5, 6), 0.5, dtype=torch.float64)
    z = (S.add_noise(x, p, 7, [4, 9]) - x) / p.read_noise.double().sqrt().view(-1, 1, 1, 1)
    for k, i in enumerate((4, 9)):
        field = rng.normal(7, torch.tensor([i]), (3, 5, 6), stream=307, dtype=torch.float64)[0]
        assert torch.allclose(z[k], field, rtol=1e-12, atol=1e-12)
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for text in (" ".join(S.add_noise.__doc__.split()), " ".join(readme.split())):
        assert "rng.normal(seed, torch.tensor([i]), (3, H, W), stream=307" in text


def test_params_fields_are_separate_tensors():
    """With noise and the boost off, shot_noise, read_noise and highlight_gain were one tensor, so
    p.read_noise += 1e-3 in place also gave every item shot noise and a highlight boost."""
    p = S.SensorModel.off().sample(3, seed=0)
    p.read_noise += 1e-3
    assert bool((p.shot_noise == 0).all()) and bool((p.highlight_gain == 0).all())


@given(crf=st.sampled_from(S.CRFS), gamma=st.floats(1.5, 3.0), seed=st.integers(0, 2**31))
@settings(max_examples=20, deadline=None)
def test_post_blur_stores_display_values_through_the_items_tone_curve(crf, gamma, seed):
    """post_blur ends with the item's tone curve: with no noise, clipping of values in [0, 1] only,
    and no quantisation, it undoes pre_blur exactly (nothing blurred in between), for every curve;
    and a linear 0.214041 is stored as sRGB 0.5 (IEC 61966-2-1, as in
    test_srgb_curve_matches_the_standard_at_known_points). Dropping from_linear from post_blur (blurry
    images stored as linear light, far too dark) passed every test of the suite."""
    torch.manual_seed(seed % 1000)  # test data only
    sharp = torch.rand(2, 3, 8, 9)
    p = _params(2, crf=S.CRFS.index(crf), gamma=gamma, clip=True)
    back = S.post_blur(S.pre_blur(sharp, p), p, seed, range(2))
    tol = 2e-4 if crf == "brooks" else 2e-6  # (the S-curve's inverse amplifies rounding at its ends)
    assert (back - sharp).abs().max() <= tol
    q = _params(1, crf=S.CRFS.index("srgb"), clip=True)
    assert float(S.post_blur(torch.full((1, 3, 2, 2), 0.214041), q, 0, [0]).sub(0.5).abs().max()) < 2e-6


@pytest.mark.parametrize("offset", [-0.45, -0.2, 0.0, 0.2, 0.45])
def test_jpeg_codes_the_nearest_8_bit_level(offset):
    """jpeg quantises to 8 bits for coding by rounding to the nearest level: a flat grey image, which
    a quality-100 grayscale JPEG stores exactly (DC only, quantiser step 1), comes back on the level
    nearest its value. Truncating instead (darker by half a level on average) went unnoticed."""
    levels = torch.arange(1, 255, dtype=torch.float64)
    img = ((levels + offset) / 255.0).float().view(-1, 1, 1, 1).expand(-1, 1, 16, 16).contiguous()
    out = S.jpeg(img, 100)
    expected = (levels.float() / 255.0).view(-1, 1, 1, 1).expand_as(out)
    assert torch.equal(out, expected)


def test_the_default_highlight_threshold_is_srgb_253():
    """SensorModel documents highlight_threshold 0.98 as 'sRGB 253/255': with the default model a
    sharp sRGB value of 253/255 or more counts as saturated and is boosted, 252/255 is not (linear
    0.9823 and 0.9734 by the sRGB standard)."""
    p = S.SensorModel(shot_noise=None, highlight_gain=(1.0, 1.0)).sample(1, seed=0)
    v = torch.tensor([252.0, 253.0, 255.0]) / 255.0
    lin_standard = ((v + 0.055) / 1.055) ** 2.4
    out = S.pre_blur(v.view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous(), p)[0, 0, 0]
    assert torch.allclose(out, lin_standard + torch.tensor([0.0, 1.0, 1.0]), atol=1e-5)


def test_a_model_or_records_given_for_params_are_named():
    """pre_blur(x, SensorModel()), the configuration in place of the values drawn from it, failed as
    "object of type 'SensorModel' has no len()"; a list of records as "'list' object has no attribute
    'gamma'". Each is a TypeError saying what to pass."""
    x = torch.rand(2, 3, 8, 8)
    model = S.SensorModel()
    for call in (lambda p: S.pre_blur(x, p), lambda p: S.post_blur(x, p, 0, range(2)), lambda p: S.to_linear(x, p),
                 lambda p: S.from_linear(x, p), lambda p: S.boost_highlights(x, p), lambda p: S.add_noise(x, p, 0, [0, 1])):
        with pytest.raises(TypeError, match=r"params must be SensorParams, .* draw the values with "
                                            r"model\.sample\(n, seed\); got SensorModel$"):
            call(model)
        with pytest.raises(TypeError, match=r"SensorParams\.from_records\(records\); got list$"):
            call(model.sample(2, 0).to_records())
        with pytest.raises(TypeError, match=r"params must be SensorParams, the values drawn per item; got dict$"):
            call(model.to_dict())
        assert call(model.sample(2, 0)).shape == x.shape


def test_joining_no_sensor_params_is_named():
    # (torch's "expected a non-empty list of Tensors" named no argument)
    with pytest.raises(ValueError, match=r"^SensorParams\.cat needs at least one SensorParams to join, got none$"):
        S.SensorParams.cat([])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_keep_their_dtype_through_every_step(dtype):
    """The steps take any float dtype and return the image's (their docstrings: "same dtype"): the float32
    parameters promoted a float16 image to float32 in add_noise, noise_std, boost_highlights and the tone
    curves, and with more than one curve in the batch to_linear and from_linear failed with torch's "Index
    put requires the source and destination dtypes match"."""
    p = S.SensorModel(crf=S.CRFS, bayer=S.BAYER).sample(8, seed=1)
    assert len(set(p.crf.tolist())) > 1  # (mixed curves: the case that failed)
    x = torch.rand(8, 3, 6, 7)
    steps = {"to_linear": lambda v: S.to_linear(v, p), "from_linear": lambda v: S.from_linear(v, p),
             "boost_highlights": lambda v: S.boost_highlights(v, p), "noise_std": lambda v: S.noise_std(v, p),
             "add_noise": lambda v: S.add_noise(v, p, 0, range(8)), "clip": lambda v: S.clip(v * 2, p),
             "mosaic_demosaic": lambda v: S.mosaic_demosaic(v, p)}
    for name, step in steps.items():
        out = step(x.to(dtype))
        assert out.dtype == dtype, name
        # the values of the same (rounded) image in float32, to the half-precision type's rounding
        assert torch.allclose(out.float(), step(x.to(dtype).float()), atol=0.02, rtol=0.02), name
    for crf in range(len(S.CRFS)):  # each curve alone (the one-curve shortcut) too
        one = _params(2, crf=crf, gamma=2.2)
        assert S.to_linear(x[:2].to(dtype), one).dtype == dtype
        assert S.from_linear(x[:2].to(dtype), one).dtype == dtype


def test_clip_and_noise_std_check_their_images_as_the_other_steps_do():
    """clip clamped an 8-bit image to 0 and 1 (float32 out) and noise_std took one too, without a word, and
    a batch that did not match the parameters failed with torch's "The size of tensor a (2) must match";
    every other step refuses both, naming what to pass."""
    p = S.SensorModel().sample(2, seed=0)
    for step in (S.clip, S.noise_std):
        with pytest.raises(TypeError, match=r"float images with values in \[0, 1\], got torch.uint8"):
            step(torch.full((2, 3, 4, 4), 200, dtype=torch.uint8), p)
        with pytest.raises(ValueError, match=r"^2 sensor parameter records for a batch of 3 images$"):
            step(torch.rand(3, 3, 4, 4), p)
        assert step(torch.rand(2, 3, 4, 4), p).shape == (2, 3, 4, 4)


def test_demosaicking_keeps_its_precision_under_autocast():
    """kornia's bilinear demosaicking interpolates with conv2d, which autocast (mixed-precision training) ran in
    bfloat16: demosaic and mosaic_demosaic were 3e-3 off a float32 image's values (post_blur, in float64, was
    not). They now compute in the image's dtype whatever autocast says."""
    x = torch.rand(2, 3, 10, 12)
    p = S.SensorModel(bayer=S.BAYER).sample(2, seed=0)
    want, raw = S.mosaic_demosaic(x, p), S.mosaic(x, "GRBG")
    want_raw = S.demosaic(raw, "GRBG")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_raw = S.mosaic_demosaic(x, p), S.demosaic(raw, "GRBG")
    assert got.dtype == got_raw.dtype == torch.float32
    assert torch.equal(got, want) and torch.equal(got_raw, want_raw)
