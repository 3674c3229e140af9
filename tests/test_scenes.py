"""Procedural dead-leaves scenes: shapes, determinism, occlusion z-buffer, statistics."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from blursynth import rng
from blursynth.scenes import DeadLeaves, _draw_leaves, _zbuffer, dead_leaves


def _spectrum_slope(images: torch.Tensor, lo: int, hi: int) -> float:
    """Least-squares slope of log radially averaged power vs log frequency (cycles per image)."""
    g = images.mean(1).double()
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    n = g.shape[-1]
    win = torch.hann_window(n, periodic=False, dtype=torch.float64)
    power = torch.fft.fft2(g * win[:, None] * win[None, :]).abs().pow(2).mean(0)
    f = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).round().long()
    bins = np.arange(lo, hi + 1)
    radial = np.array([float(power[radius == b].mean()) for b in bins])
    return float(np.polyfit(np.log(bins), np.log(radial), 1)[0])


def test_shape_range_dtype():
    x = dead_leaves(3, (40, 56), seed=1)
    assert x.shape == (3, 3, 40, 56) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert dead_leaves(2, 17, seed=0).shape == (2, 3, 17, 17)
    assert dead_leaves(0, 8, seed=0).shape == (0, 3, 8, 8)


@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**6), split=st.integers(1, 3))
@settings(max_examples=8, deadline=None)
def test_item_depends_only_on_seed_and_index(seed, start, split):
    whole = dead_leaves(4, (23, 31), seed, start=start)
    parts = torch.cat([dead_leaves(split, (23, 31), seed, start=start),
                       dead_leaves(4 - split, (23, 31), seed, start=start + split)])
    assert torch.equal(whole, parts)
    picked = DeadLeaves().render_at(torch.tensor([start + 3, start]), (23, 31), seed)
    assert torch.equal(picked, whole[[3, 0]])
    assert not torch.equal(whole[0], whole[1])
    assert not torch.equal(whole, dead_leaves(4, (23, 31), seed + 1, start=start))


@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**6), split=st.integers(1, 5))
@settings(max_examples=8, deadline=None)
def test_with_defocus_on_a_fraction_of_images_an_item_still_depends_only_on_seed_and_index(seed, start, split):
    """Which images are defocused, how much and behind which leaf is drawn per item: rendered in one batch,
    in two, or one at a time, every image comes out the same bytes. (With defocus=1 every image is
    defocused, so a draw of whether to defocus keyed by the place in the batch went unseen.)"""
    opt = dict(defocus=0.5, defocus_sigma=(1.0, 2.0))
    whole = dead_leaves(6, (24, 20), seed, start=start, **opt)
    parts = torch.cat([dead_leaves(split, (24, 20), seed, start=start, **opt),
                       dead_leaves(6 - split, (24, 20), seed, start=start + split, **opt)])
    assert torch.equal(whole, parts)
    for i in range(6):
        assert torch.equal(whole[i], dead_leaves(1, (24, 20), seed, start=start + i, **opt)[0])


def test_defocused_images_are_deterministic_and_softer():
    sharp = dead_leaves(4, 96, seed=3)
    soft = dead_leaves(4, 96, seed=3, defocus=1.0)
    assert torch.equal(soft[1:3], dead_leaves(2, 96, seed=3, start=1, defocus=1.0))
    grad = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert grad(soft) < 0.9 * grad(sharp)


def test_power_spectrum_falls_like_natural_images():
    # Photographs: radially averaged power ~ f^-2 (Field 1987; Ruderman 1997). Loose band around it.
    slope = _spectrum_slope(dead_leaves(8, 256, seed=7), 4, 32)
    assert -2.6 < slope < -1.5
    # The same measurement rejects white noise and a heavily smoothed image.
    noise = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    assert _spectrum_slope(noise, 4, 32) > -0.5
    assert _spectrum_slope(dead_leaves(4, 256, seed=7, rmin=12.0, texture=0.0, grating=0.0), 4, 32) < -2.6


def test_colours_vary_like_a_natural_scene():
    x = dead_leaves(6, 128, seed=5)
    # Every image has contrast in each channel, and the channels are not copies (colour, not grey).
    assert float(x.flatten(2).std(dim=2).min()) > 0.08
    chroma = (x - x.mean(1, keepdim=True)).abs().mean()
    assert 0.02 < float(chroma) < 0.25
    grey = dead_leaves(2, 64, seed=5, chroma=0.0, texture=0.0, grating=0.0, shading=0.0)
    assert float((grey - grey.mean(1, keepdim=True)).abs().max()) < 2e-3


def _leaf_lab(**options):
    """CIE Lab (kornia, from sRGB) of 2 x 5001 leaf colours drawn with the given options: (3, N)."""
    import kornia.color as kc

    from blursynth.scenes import _leaf_colours
    from blursynth.sensor import linear_to_srgb
    linear = _leaf_colours(DeadLeaves(**options), 3, rng.as_index(2), 5000)  # (N, k, 3)
    lab = kc.rgb_to_lab(linear_to_srgb(linear).permute(0, 2, 1).unsqueeze(-1))  # (N, 3, k, 1)
    return lab.squeeze(-1).permute(1, 0, 2).reshape(3, -1)


def test_a_vivid_fraction_of_leaves_has_larger_chroma():
    """`vivid` is the fraction of leaves drawn with 2.5x chroma (the sRGB gamut clips some of it): all
    vivid has ~2-2.5x the mean chroma of none, and 15% vivid lies 15% of the way between them."""
    chroma = {v: float(_leaf_lab(vivid=v)[1:].norm(dim=0).mean()) for v in (0.0, 0.15, 1.0)}
    assert 1.8 < chroma[1.0] / chroma[0.0] < 2.6
    assert abs(chroma[0.15] - (0.85 * chroma[0.0] + 0.15 * chroma[1.0])) < 0.03 * chroma[0.0]


def test_leaf_colours_spread_more_in_b_than_a_with_a_warm_bias():
    """As documented: chroma spread larger along blue-yellow (b*) than red-green (a*), and a slight warm
    bias (b* drawn around +4, a* around 0; the gamut clips a little of it). Without vivid leaves."""
    _, a, b = _leaf_lab(vivid=0.0)
    assert abs(float(a.mean())) < 1.0 and 2.5 < float(b.mean()) < 5.5
    assert float(b.std()) > 1.2 * float(a.std())


def test_edges_are_anti_aliased():
    # Intermediate values between two flat leaves appear only on edges, and do appear.
    x = dead_leaves(2, 128, seed=11, texture=0.0, grating=0.0, shading=0.0)
    dx = (x[..., 1:] - x[..., :-1]).abs().amax(1)
    step = (dx[..., :-1] > 0.02) & (dx[..., 1:] > 0.02)  # a change spread over two pixel steps
    assert int(step.sum()) > 100


@given(alpha=st.floats(2.0, 5.0), rmin=st.floats(1.0, 4.0))
@settings(max_examples=10, deadline=None)
def test_radii_follow_the_truncated_power_law(alpha, rmin):
    opt = DeadLeaves(alpha=alpha, rmin=rmin, rmax=64.0)
    radius = _draw_leaves(opt, rng.as_index(2), 3, 20000, 64, 64)["radius"][:, :-1].double()
    for x in (1.5 * rmin, 3 * rmin, 8 * rmin):
        e = 1 - alpha
        expected = (x**e - 64.0**e) / (rmin**e - 64.0**e)  # P(r > x), integrated by hand
        assert abs(float((radius > x).double().mean()) - expected) < 0.015
    assert float(radius.min()) >= rmin - 1e-4 and float(radius.max()) <= 64.0 + 1e-3


@pytest.mark.parametrize("alpha", [1 + 1e-15, 1 + 1e-12, 1 + 1e-8, 1 + 1e-6])
def test_radii_stay_in_range_as_alpha_nears_1(alpha):
    """alpha may be any value in (1, 10]; near 1 the law nears log-uniform, P(r > x) = log(rmax / x) /
    log(rmax / rmin). The inverse CDF raised rmin ** (1 - alpha) and rmax ** (1 - alpha), both about 1, to
    the power 1 / (1 - alpha), which blew their rounding up into radii outside [rmin, rmax] (67 px with
    rmax 64 at alpha = 1 + 1e-15)."""
    opt = DeadLeaves(alpha=alpha, rmin=2.0, rmax=64.0)
    radius = _draw_leaves(opt, rng.as_index(2), 3, 20000, 64, 64)["radius"][:, :-1].double()
    assert float(radius.min()) >= 2.0 - 1e-4 and float(radius.max()) <= 64.0 + 1e-3
    for x in (4.0, 8.0, 32.0):
        assert abs(float((radius > x).double().mean()) - math.log(64.0 / x) / math.log(32.0)) < 0.015


def test_leaf_centres_are_uniform_over_the_image_plus_margin():
    """Centres are uniform over the image plus a margin on every side (so large leaves centred outside
    reach in on all four sides equally), on a non-square image; the background leaf is centred on the
    image. margin = min(rmax, max(h, w) / 4) = 24 here."""
    h, w, margin, m = 48, 96, 24.0, 20000
    leaves = _draw_leaves(DeadLeaves(), rng.as_index(2), 5, m, h, w)
    for key, size in (("cx", w), ("cy", h)):
        c = leaves[key][:, :m].double()
        lo, hi = -margin, size - 1 + margin
        assert float(c.min()) >= lo - 1e-3 and float(c.max()) <= hi + 1e-3
        assert float(c.min()) < lo + 0.01 * (hi - lo) and float(c.max()) > hi - 0.01 * (hi - lo)
        # uniform: mean at the middle (5 standard errors), a quarter of the draws in each quarter
        assert abs(float(c.mean()) - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * c.numel())
        assert abs(float((c < lo + (hi - lo) / 4).double().mean()) - 0.25) < 0.02
    assert torch.equal(leaves["cx"][:, m], torch.full((2,), (w - 1) / 2))
    assert torch.equal(leaves["cy"][:, m], torch.full((2,), (h - 1) / 2))


def test_grating_periods_are_log_uniform_from_3_to_40_px():
    """A grating's period is drawn log-uniformly in 3-40 px: log period uniform on [log 3, log 40]
    (mean at the middle, a quarter of the draws in each quarter, both ends reached)."""
    f = _draw_leaves(DeadLeaves(), rng.as_index(2), 9, 20000, 32, 32)["grating_f"].double()
    t = ((1 / f).log() - math.log(3)) / math.log(40 / 3)  # uniform on [0, 1]
    assert float(t.min()) >= -1e-6 and float(t.max()) <= 1 + 1e-6
    assert float(t.min()) < 0.01 and float(t.max()) > 0.99
    assert abs(float(t.mean()) - 0.5) < 0.01
    assert abs(float((t < 0.25).double().mean()) - 0.25) < 0.02


def test_gratings_are_on_a_fraction_of_leaves_with_amplitude_up_to_a_quarter():
    """A `grating` fraction of leaves carries a grating, of log-brightness amplitude uniform up to 0.25
    (stripes, not a brightness swing of e^2.5); the others none."""
    amp = _draw_leaves(DeadLeaves(grating=0.3), rng.as_index(2), 9, 20000, 32, 32)["grating"].double()
    on = amp > 0
    assert abs(float(on.double().mean()) - 0.3) < 0.02
    assert float(amp.max()) <= 0.25 and float(amp.max()) > 0.24
    assert abs(float(amp[on].mean()) - 0.125) < 0.005


def test_texture_and_shading_amplitudes_are_uniform_up_to_their_options():
    """`texture` and `shading` are the largest amplitudes: per leaf the texture amplitude and the
    shading gradient's size (its direction is drawn apart) are uniform on [0, texture] and [0, shading]
    (mean at the middle, a quarter of the draws in the bottom quarter, both ends reached)."""
    leaves = _draw_leaves(DeadLeaves(texture=0.4, shading=0.6), rng.as_index(2), 9, 20000, 32, 32)
    for values, lo, hi in ((leaves["tex"], 0.0, 0.4), (leaves["grad"].abs(), 0.0, 0.6)):
        t = (values.double() - lo) / (hi - lo)  # uniform on [0, 1]
        assert float(t.min()) >= 0 and float(t.max()) <= 1 + 1e-6
        assert float(t.min()) < 0.01 and float(t.max()) > 0.99
        assert abs(float(t.mean()) - 0.5) < 0.01 and abs(float((t < 0.25).double().mean()) - 0.25) < 0.02


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_zbuffer_matches_brute_force(data):
    h, w = data.draw(st.integers(4, 20)), data.draw(st.integers(4, 20))
    m = data.draw(st.integers(1, 12))
    coords = st.floats(-8, 28, allow_nan=False)
    leaves = {
        "radius": torch.tensor([[data.draw(st.floats(0.3, 15)) for _ in range(m)] + [math.inf]]),
        "cx": torch.tensor([[data.draw(coords) for _ in range(m)] + [0.0]]),
        "cy": torch.tensor([[data.draw(coords) for _ in range(m)] + [0.0]]),
    }
    front = _zbuffer(leaves, 1, h, w, m)
    # Reference: for each pixel, the first leaf whose reach r + 1/2 contains its centre, else m.
    # The z-buffer tests distances in float32: pixels within 1e-4 px of a reach are ambiguous (and
    # have coverage 0 either way), so they are left out.
    r, cx, cy = (leaves[k][0, :m].double().numpy() for k in ("radius", "cx", "cy"))
    for y in range(h):
        for x in range(w):
            d = np.hypot(x - cx, y - cy)
            if np.any(np.abs(d - (r + 0.5)) < 1e-4):
                continue
            cover = [k for k in range(m) if d[k] <= r[k] + 0.5] + [m]
            assert int(front[0, y * w + x]) == cover[0]


def test_leaves_wider_than_every_box_class_render():
    """DeadLeaves(rmin=6e5) is a valid option (rmin up to 1e6 px) but rendering raised 'IndexError:
    list index out of range': a leaf reaching over 522,024 px had no bounding-box size class."""
    img = dead_leaves(2, (9, 12), seed=0, rmin=6e5, rmax=7e5)
    assert img.shape == (2, 3, 9, 12) and bool(((img >= 0) & (img <= 1)).all())
    # The z-buffer against brute force: a giant leaf whose rim crosses the image, in front of one
    # covering it all. float32 distances near 6e5 px resolve the rim to ~0.03 px: pixels within 0.1
    # px of it are left out.
    h, w, r0, cx0 = 9, 12, 6e5, -6e5 + 5.3
    leaves = {"radius": torch.tensor([[r0, 9e5, math.inf]]), "cx": torch.tensor([[cx0, 4.0, 0.0]]),
              "cy": torch.tensor([[4.0, 4.0, 0.0]])}
    front = _zbuffer(leaves, 1, h, w, 2).view(h, w)
    cx0, cy0 = float(leaves["cx"][0, 0]), 4.0
    for y in range(h):
        for x in range(w):
            d = math.hypot(x - cx0, y - cy0) - (r0 + 0.5)
            if abs(d) > 0.1:
                assert int(front[y, x]) == (0 if d < 0 else 1)


def test_leaf_count_follows_coverage_and_cap():
    opt = DeadLeaves()
    assert opt.leaves(128, 128) < opt.leaves(256, 256)
    assert DeadLeaves(coverage=8.0).leaves(64, 64) == pytest.approx(2 * opt.leaves(64, 64), rel=0.01)
    assert DeadLeaves(max_leaves=50).leaves(256, 256) == 50
    assert dead_leaves(1, 64, seed=0, max_leaves=50).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kwargs, name", [
    ({"alpha": 0.5}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"rmin": 0.0}, "rmin"),
    ({"rmin": 5.0, "rmax": 2.0}, "rmax"), ({"coverage": 0.0}, "coverage"), ({"vivid": 1.5}, "vivid"),
    ({"defocus_sigma": (3.0, 1.0)}, "defocus_sigma"), ({"texture": -0.1}, "texture"),
    ({"defocus_sigma": (0.0, 2.0)}, "defocus_sigma"),  # sigma 0 is no Gaussian (kornia refuses it at render time)
    ({"alpha": 10.5}, "alpha"),  # (rmin ** (1 - alpha) overflows a float for steep laws and small rmin)
])
def test_bad_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DeadLeaves(**kwargs)
    with pytest.raises(ValueError, match=name):
        dead_leaves(1, 8, seed=0, **kwargs)


def test_bad_size_and_unknown_option():
    with pytest.raises(ValueError, match="size"):
        dead_leaves(1, (0, 8), seed=0)
    with pytest.raises(TypeError, match="sharpness"):
        dead_leaves(1, 8, seed=0, sharpness=2)


@pytest.mark.parametrize("pixels", [40, 200])  # bands of 1 row, and of 3 rows with a remainder
@pytest.mark.parametrize("options", [{}, {"defocus": 1.0}, {"rmax": 12.0, "texture": 0.6}])
def test_row_bands_and_box_groups_change_no_byte(monkeypatch, pixels, options):
    """An image larger than a chunk is shaded in row bands and its leaves' boxes are enumerated in
    groups, to bound memory; neither may change a pixel (the bands' look-ups reach across them)."""
    import blursynth.scenes as scenes
    whole = dead_leaves(2, (37, 53), seed=4, start=3, **options)
    monkeypatch.setattr(scenes, "_PIXELS_PER_CHUNK", pixels)  # (images 57 px wide with the ring)
    monkeypatch.setattr(scenes, "_PAIRS_PER_CHUNK", 30)  # one leaf per group of boxes
    assert torch.equal(dead_leaves(2, (37, 53), seed=4, start=3, **options), whole)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu = dead_leaves(3, (40, 52), seed=4, defocus=0.5)
    gpu = dead_leaves(3, (40, 52), seed=4, defocus=0.5, device="cuda")
    assert gpu.device.type == "cuda"
    # Leaf geometry is exact; shading may differ in the last bits, which can flip a few edge pixels.
    assert float((gpu.cpu() - cpu).abs().gt(1e-4).float().mean()) < 0.01


def test_options_round_trip_through_a_dict_and_reject_unknown_keys():
    import json

    opt = DeadLeaves(alpha=3.2, defocus=0.5, defocus_sigma=[1.0, 2.0])
    assert opt.defocus_sigma == (1.0, 2.0)
    assert DeadLeaves.from_dict(json.loads(json.dumps(opt.to_dict()))) == opt
    with pytest.raises(ValueError, match=r"unknown dead-leaves option\(s\) \['sharpness'\]"):
        DeadLeaves.from_dict({"sharpness": 2})


def _flat_leaves(discs, background):
    """Hand-made untextured leaves: discs = [(cx, cy, r, (R, G, B) linear)], front first."""
    m = len(discs)
    col = lambda i: [d[i] for d in discs]  # noqa: E731
    zeros = torch.zeros(1, m + 1)
    return {
        "cx": torch.tensor([col(0) + [0.0]]), "cy": torch.tensor([col(1) + [0.0]]),
        "radius": torch.tensor([col(2) + [math.inf]]),
        "colour": torch.tensor([col(3) + [background]], dtype=torch.float64),
        "grad_dir": zeros, "grad": zeros, "tex": zeros, "tex_dx": zeros, "tex_dy": zeros,
        "grating": zeros, "grating_f": zeros + 0.1, "grating_dir": zeros, "grating_phase": zeros,
    }


@given(cx=st.floats(-4, 36), cy=st.floats(-4, 36), r=st.floats(1.0, 7.0))
@example(cx=8.0, cy=24.0, r=7.0)  # rim on the bottom row: what lies behind is outside the image
@example(cx=-3.0, cy=16.0, r=5.0)  # disc cut by the left edge
@example(cx=14.5355, cy=6.3432, r=7.0)  # rim on the top row: 1 px above (16, 0) is still the leaf, 2 px is not
@settings(max_examples=40, deadline=None)
def test_edge_pixels_mix_leaf_and_background_by_coverage(cx, cy, r):
    # Everywhere, the image border included, an edge pixel blends the leaf and what lies behind.
    from blursynth.scenes import _compose

    fg, bg = (0.8, 0.1, 0.3), (0.05, 0.4, 0.2)
    h = w = 32
    _, img = _compose(_flat_leaves([(cx, cy, r, fg)], bg), torch.zeros(1, h, w, dtype=torch.float64), 1, h, w, 1)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    # Coverage of a pixel by the disc's edge, linearised across the pixel: clamp(r - d + 1/2, 0, 1).
    cover = (r - torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) + 0.5).clamp(0, 1)
    expected = cover * torch.tensor(fg).view(3, 1, 1) + (1 - cover) * torch.tensor(bg).view(3, 1, 1)
    assert torch.allclose(img[0], expected.to(img.dtype), atol=1e-6)


@pytest.mark.parametrize("h, w", [(12, 20), (20, 12)])
def test_micro_texture_is_a_wrapped_window_of_the_noise_field(h, w):
    """A leaf's micro-texture is the noise field read through a shifted, wrapped window: on a flat
    background leaf with texture amplitude 1, log(image / colour) is np.roll of the field by some
    offset. Non-square sizes: indexing the flat field with the wrong row length passed on squares."""
    from blursynth.scenes import _compose

    leaves = _flat_leaves([(-100.0, -100.0, 1.0, (0.5, 0.5, 0.5))], (0.5, 0.5, 0.5))
    leaves["tex"] = torch.tensor([[0.0, 1.0]])
    leaves["tex_dx"], leaves["tex_dy"] = torch.tensor([[0.0, 0.3]]), torch.tensor([[0.0, 0.6]])
    field = torch.randn(1, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, img = _compose(leaves, field, 1, h, w, 1)
    seen = (img[0] / 0.5).log().numpy()
    f = field[0].numpy()
    windows = [(dy, dx) for dy in range(h) for dx in range(w)
               if all(np.allclose(seen[c], np.roll(f, (-dy, -dx), (0, 1)), atol=1e-9) for c in range(3))]
    assert len(windows) == 1


def test_shading_changes_brightness_by_the_gradient_across_the_radius():
    """`grad` is the log-brightness change of a leaf's shading across its radius, whatever its size:
    along the gradient's direction a point half a radius from the centre is exp(grad / 2) brighter,
    for a small leaf and a large one alike (a gradient per pixel: 8x brighter at 7 px out)."""
    from blursynth.scenes import _compose

    for r in (6.0, 14.0):
        leaves = _flat_leaves([(16.0, 16.0, r, (0.2, 0.2, 0.2))], (0.5, 0.5, 0.5))
        leaves["grad"] = torch.tensor([[0.3, 0.0]])  # grad_dir 0: along +x
        _, img = _compose(leaves, torch.zeros(1, 32, 32, dtype=torch.float64), 1, 32, 32, 1)
        half = int(r / 2)
        ratio = img[0, :, 16, 16 + half] / img[0, :, 16, 16]
        assert torch.allclose(ratio, torch.full((3,), math.exp(0.3 * half / r), dtype=ratio.dtype), rtol=1e-9)
        assert torch.allclose(img[0, :, 16, 16], torch.full((3,), 0.2, dtype=img.dtype), rtol=1e-9)


def test_edge_over_another_leaf_shows_that_leaf_behind():
    from blursynth.scenes import _compose

    # A small leaf in front of a large one: its rim blends with the large leaf, not the background.
    fg, mid, bg = (0.9, 0.9, 0.9), (0.1, 0.2, 0.7), (0.0, 0.0, 0.0)
    leaves = _flat_leaves([(16.3, 15.6, 4.2, fg), (16.0, 16.0, 14.0, mid)], bg)
    _, img = _compose(leaves, torch.zeros(1, 32, 32, dtype=torch.float64), 1, 32, 32, 2)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    d = torch.sqrt((x - 16.3) ** 2 + (y - 15.6) ** 2)
    rim = (d > 3.7) & (d < 4.7)
    cover = (4.2 - d + 0.5).clamp(0, 1)
    expected = cover * fg[2] + (1 - cover) * mid[2]
    assert torch.allclose(img[0, 2][rim], expected[rim].double(), atol=1e-6)


def test_seeds_beyond_63_bits_and_floats_are_refused():
    with pytest.raises(ValueError, match="seed"):
        dead_leaves(1, 16, seed=2**64)
    with pytest.raises(ValueError, match="seed"):
        dead_leaves(0, 16, seed=2**64)  # checked even when nothing is drawn
    with pytest.raises(TypeError, match="seed must be an integer"):
        dead_leaves(1, 16, seed=0.5)


def test_tiny_and_badly_typed_sizes():
    """dead_leaves(1, 1) gave an all-NaN image; dead_leaves(1, 64.0) "'float' object is not iterable"."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = dead_leaves(2, 1, seed=0)
    assert one.shape == (2, 3, 1, 1) and not bool(one.isnan().any())
    assert bool(((one >= 0) & (one <= 1)).all())
    for bad in (64.0, "64", (64,), (8, 8.0), True):
        with pytest.raises(ValueError, match="size must be a positive int .* or \\(height, width\\)"):
            dead_leaves(1, bad, seed=0)
    with pytest.raises(ValueError, match="defocus.*larger than 9 px.*got 4x4"):
        dead_leaves(1, 4, seed=0, defocus=1.0)
    for n, start in ((2.5, 0), (-1, 0), (1, 1.0), (True, 0)):  # (2.5 gave range()'s words, naming nothing)
        with pytest.raises(ValueError, match=r"dead_leaves needs integers n >= 0 and start >= 0"):
            dead_leaves(n, 16, seed=0, start=start)


def test_numpy_integers_for_sizes_and_options():
    """dead_leaves(1, np.int64(16), 0) said 'scene size must be a positive int', and
    DeadLeaves(max_leaves=np.int64(100)) that 100 'is out of range [1, 100000000]'. NumPy numbers
    now count as the numbers they are, and the options stay JSON-serialisable."""
    import json
    assert torch.equal(dead_leaves(1, np.int64(16), 0), dead_leaves(1, 16, 0))
    assert torch.equal(dead_leaves(1, (np.int32(12), 16), 0), dead_leaves(1, (12, 16), 0))
    opt = DeadLeaves(max_leaves=np.int64(100), alpha=np.float32(3.5))
    assert opt.to_dict() == DeadLeaves(max_leaves=100, alpha=3.5).to_dict()
    json.dumps(opt.to_dict())


def test_rmax_and_max_leaves_must_be_finite_numbers_and_an_integer():
    """DeadLeaves(rmax=inf) was accepted and rendering then failed with 'cannot convert float NaN to
    integer'; rmax="5" raised a bare TypeError comparing float and str; max_leaves=1.5 capped at 1 leaf.
    Each is now refused when the options are built, naming the option."""
    for rmax in (math.inf, "5", True):
        with pytest.raises(ValueError, match="rmax"):
            DeadLeaves(rmax=rmax)
    for cap in (1.5, 1000.0, True):
        with pytest.raises(ValueError, match="max_leaves"):
            DeadLeaves(max_leaves=cap)
    assert torch.equal(DeadLeaves(max_leaves=np.int64(40)).render(1, 16, 0), DeadLeaves(max_leaves=40).render(1, 16, 0))
    opt = DeadLeaves(rmax=np.float32(8.0))
    assert type(opt.rmax) is float and torch.equal(opt.render(1, 16, 0), DeadLeaves(rmax=8.0).render(1, 16, 0))


def test_options_refuse_bools_and_strings():
    """DeadLeaves(chroma=True) was chroma 1 (and wrote true into manifests), defocus_sigma="13" was
    (1.0, 3.0): a string's characters read as numbers."""
    for kwargs in ({"chroma": True}, {"coverage": True}, {"rmin": True}, {"defocus_sigma": "13"},
                   {"defocus_sigma": (True, 2.0)}, {"defocus_sigma": (1.0, "2")}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"dead leaves option {name}="):
            DeadLeaves(**kwargs)
    assert DeadLeaves(defocus_sigma=[np.float32(1.0), 2]).defocus_sigma == (1.0, 2.0)


def test_render_at_refuses_float_and_negative_indices():
    """render_at(tensor([1.7])) rendered item 1, and render_at(tensor([-1])) an image no item has."""
    with pytest.raises(TypeError, match="item indices must be integers"):
        DeadLeaves().render_at(torch.tensor([1.7]), 8, seed=0)
    with pytest.raises(ValueError, match="item indices must be >= 0"):
        DeadLeaves().render_at(torch.tensor([-1]), 8, seed=0)


def test_from_dict_takes_off_for_none_as_in_toml():
    # TOML has no null: "off" stands for None there (as in recipes), e.g. rmax's default
    assert DeadLeaves.from_dict({"rmax": "off", "alpha": 3.5}) == DeadLeaves(rmax=None, alpha=3.5)


@pytest.mark.parametrize("alpha, rmin, rmax, size", [(3.0, 2.0, None, (64, 64)), (2.5, 1.0, 20.0, (48, 80)),
                                                     (4.0, 3.0, None, (100, 60)), (3.0, 5.0, 5.0, (32, 32))])
def test_leaf_count_is_coverage_over_the_mean_leaf_area_of_the_power_law(alpha, rmin, rmax, size):
    """The module docstring: M leaves, enough that the uncovered fraction of the domain (image plus
    margin) is exp(-coverage), i.e. M = ceil(coverage * domain / (pi E[r^2])) with r drawn from the
    truncated density r^-alpha on [rmin, rmax]. E[r^2] is integrated numerically here (scipy), not
    with the module's closed form; halving the count or a wrong moment in that closed form passed
    the suite (test_leaf_count_follows_coverage_and_cap only compares counts with each other)."""
    from scipy.integrate import quad
    h, w = size
    opt = DeadLeaves(alpha=alpha, rmin=rmin, rmax=rmax, coverage=3.0)
    hi = float(max(h, w)) if rmax is None else rmax
    if hi == rmin:
        mean_r2 = rmin ** 2
    else:
        mean_r2 = quad(lambda r: r ** (2 - alpha), rmin, hi)[0] / quad(lambda r: r ** -alpha, rmin, hi)[0]
    margin = min(hi, 0.25 * max(h, w))  # leaves centred up to this far outside can reach in
    domain = (h + 2 * margin) * (w + 2 * margin)
    assert opt.leaves(h, w) == math.ceil(3.0 * domain / (math.pi * mean_r2))


def test_images_are_srgb_encoded():
    """Images are sRGB, not linear light. With grey leaves and no shading, texture or grating, every
    pixel is a leaf's CIE lightness L* ~ N(50, 22) clamped to [3, 97], so the mean L* over the pixels,
    decoded from sRGB by the standard formulas (written out here), is about 50. Returning the linear
    values read as sRGB would put it near 20; that mutation passed the suite."""
    x = dead_leaves(16, 64, seed=3, chroma=0.0, texture=0.0, grating=0.0, shading=0.0).double()
    v = x.mean(1)  # grey: the channels agree to 2e-3
    lin = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    lightness = torch.where(lin > (6 / 29) ** 3, 116 * lin.pow(1 / 3) - 16, lin * (29 / 3) ** 3)
    assert 3 - 0.5 <= float(lightness.min()) and float(lightness.max()) <= 97 + 0.5
    assert abs(float(lightness.mean()) - 50) < 8


@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**6))
@settings(max_examples=5, deadline=None)
def test_the_texture_field_has_a_one_over_f_amplitude_spectrum(seed, start):
    """The micro-texture is a ``1/f`` (amplitude) field: power ~ f^-2, zero mean, unit std; a ``1/f^2``
    field (power ~ f^-4) would be a smooth ripple instead of texture."""
    from blursynth.scenes import _noise_field
    field = _noise_field(seed, torch.arange(start, start + 4), 128, 128)
    assert field.shape == (4, 128, 128)
    assert float(field.mean((-2, -1)).abs().max()) < 1e-9
    assert torch.allclose(field.flatten(1).std(dim=1), torch.ones(4, dtype=field.dtype))
    assert -2.3 < _spectrum_slope(field[:, None], 4, 32) < -1.7


def test_defocus_needs_images_larger_than_its_reach():
    """Defocus pads by reflection 3 x the top sigma (6 px for sigma up to 2), which needs a side
    longer than that: a 6-px side is refused with the documented message, 7 px renders."""
    opt = DeadLeaves(defocus=1.0, defocus_sigma=(1.0, 2.0))
    for size in ((6, 20), (20, 6)):
        with pytest.raises(ValueError, match="larger than 6 px a side"):
            opt.render(1, size, seed=0)
    assert opt.render(1, (7, 20), seed=0).shape == (1, 3, 7, 20)


def test_the_texture_field_is_isotropic():
    """A 1/f amplitude field has power ~ 1/|f|^2 with |f| the Euclidean frequency, the same in every
    direction: power * |f|^2 averages alike near the axes and near the diagonals. (An L1 |f| made
    diagonal power half the axial one, at the same radial slope; thousands of bins per group, so the
    mean of the exponentially distributed bin powers is known to a few percent.)"""
    from blursynth.scenes import _noise_field
    n = 128
    field = _noise_field(7, torch.arange(8), n, n)
    power = torch.fft.fft2(field).abs().pow(2).mean(0)
    f = torch.fft.fftfreq(n, dtype=torch.float64)
    fy, fx = f.view(-1, 1).expand(n, n), f.view(1, -1).expand(n, n)
    radius2 = fx ** 2 + fy ** 2
    angle = torch.rad2deg(torch.atan2(fy.abs(), fx.abs()))  # 0-90 degrees
    ring = (radius2.sqrt() > 4 / n) & (radius2.sqrt() < 40 / n)
    axial = float((power * radius2)[ring & ((angle < 10) | (angle > 80))].mean())
    diagonal = float((power * radius2)[ring & ((angle - 45).abs() < 10)].mean())
    assert 0.85 < diagonal / axial < 1.15


@given(seed=st.integers(0, 2**40), index=st.integers(0, 10**6))
@settings(max_examples=10, deadline=None)
def test_defocus_blurs_the_leaves_behind_the_focus_depth_and_keeps_the_near_ones_sharp(seed, index):
    """Leaf numbers count from the front (0) back to the background (m); the focus depth lies in the
    front 2-30% of the stack. Left half: the front leaf, in focus, untouched; right half: background,
    out of focus, blurred (a noise image loses most of its variance under a sigma-2 Gaussian)."""
    from blursynth.scenes import _defocus
    m, h, w = 100, 40, 80
    linear = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(index % 1000), dtype=torch.float64)
    front = torch.full((1, 1, h, w), m, dtype=torch.int64)
    front[..., : w // 2] = 0
    out = _defocus(DeadLeaves(defocus=1.0, defocus_sigma=(2.0, 2.0)), linear, front, torch.tensor([index]), seed, m)
    assert torch.equal(out[..., : w // 2], linear[..., : w // 2])
    inner = (..., slice(8, h - 8), slice(w // 2 + 8, w - 8))  # (away from the halves' seam and the border)
    assert float(out[inner].std()) < 0.4 * float(linear[inner].std())


def test_defocus_focus_depth_lies_in_the_front_2_to_30_percent_of_the_leaves():
    """The focus depth is drawn uniformly in the front 2-30% of the m leaves: on an image whose row y
    shows leaf y, rows up to the depth stay exactly sharp and the rest are blurred; over 200 items
    the depth spans 2..30 (of m = 100) and no further."""
    from blursynth.scenes import _defocus
    m, n = 100, 200
    noise = torch.rand(n, 1, m, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    linear = noise.expand(n, 3, m, 16)
    front = torch.arange(m).view(1, 1, m, 1).expand(n, 1, m, 16)
    out = _defocus(DeadLeaves(defocus=1.0), linear, front, torch.arange(n), 5, m)
    sharp_rows = (out == linear).all(dim=-1).all(dim=1)  # (n, m)
    depth = sharp_rows.sum(dim=1) - 1
    assert bool((sharp_rows == (torch.arange(m) <= depth.view(-1, 1))).all())  # the front rows, and only them
    assert int(depth.min()) >= 2 and int(depth.max()) <= 30
    assert int(depth.min()) <= 4 and int(depth.max()) >= 28


def test_defocus_blur_is_a_gaussian_of_the_drawn_sigma():
    """Out-of-focus leaves get a Gaussian blur of sigma pixels: a point spreads with variance sigma^2
    along each axis (the kernel reaches 3 sigma, which drops 2.7% of the variance) and keeps its mass.
    A kernel cut at 1 sigma still blurred, softer than the sharp image, and passed."""
    from blursynth.scenes import _defocus
    m, h, w, sigma = 100, 41, 41, 2.0
    linear = torch.zeros(1, 3, h, w, dtype=torch.float64)
    linear[..., 20, 20] = 1.0
    front = torch.full((1, 1, h, w), m, dtype=torch.int64)
    out = _defocus(DeadLeaves(defocus=1.0, defocus_sigma=(sigma, sigma)), linear, front, torch.tensor([3]), 0, m)[0, 0]
    assert abs(float(out.sum()) - 1.0) < 1e-9
    x = torch.arange(w, dtype=torch.float64) - 20
    var_x, var_y = float((out.sum(0) * x * x).sum()), float((out.sum(1) * x * x).sum())
    assert abs(var_x / sigma ** 2 - 1) < 0.04 and abs(var_y / sigma ** 2 - 1) < 0.04
