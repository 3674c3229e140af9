"""Non-blind deconvolution on small synthetic cases with a known kernel and 1% noise."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from blursynth.blur import blur
from unpaired import deconv, metrics


def _scene(size=72, channels=1, seed=0):
    """Piecewise-constant rectangles over a smooth ramp: edges for the deconvolution to recover."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = 0.3 + 0.2 * (xx + yy) / (2 * size)
    img = img.expand(channels, size, size).clone()
    for _ in range(12):
        y0, x0 = torch.randint(0, size - 8, (2,), generator=g).tolist()
        hh, ww = torch.randint(4, 20, (2,), generator=g).tolist()
        img[:, y0:y0 + hh, x0:x0 + ww] = torch.rand(channels, 1, 1, generator=g)
    return img[None].clamp(0, 1)


def _motion_kernel():
    k = torch.zeros(11, 11)
    for i in range(9):  # a diagonal stroke, thicker at one end
        k[1 + i, 1 + i // 2] = 1.0 + 0.2 * i
    k[3, 2] = 0.5
    return k / k.sum()


def _blurred_case(channels=1, noise=0.01, seed=0):
    """Sharp interior, and its blurred + noisy version made by a valid convolution of a larger
    scene (so the blurry image has real, non-periodic borders)."""
    k = _motion_kernel()
    big = _scene(72 + 10, channels, seed)
    sharp = big[..., 5:-5, 5:-5]
    g = torch.Generator().manual_seed(seed + 1)
    blurry = blur(big, k, "valid") + noise * torch.randn(sharp.shape, generator=g)
    return sharp, blurry, k


def _interior_psnr(x, ref, border=8):
    return float(metrics.psnr(x[..., border:-border, border:-border].clamp(0, 1),
                              ref[..., border:-border, border:-border])[0])


@pytest.mark.parametrize("method", ["wiener", "wiener_flat", "rl", "rl_tv", "hyperlaplacian", "hyperlaplacian_half"])
def test_each_method_beats_the_blurry_input(method):
    sharp, blurry, k = _blurred_case()
    run = {
        "wiener": lambda: deconv.wiener(blurry, k),
        "wiener_flat": lambda: deconv.wiener(blurry, k, nsr=0.01, prior="flat"),
        "rl": lambda: deconv.richardson_lucy(blurry, k, iterations=20),
        "rl_tv": lambda: deconv.richardson_lucy(blurry, k, iterations=20, tv=0.005),
        "hyperlaplacian": lambda: deconv.hyper_laplacian(blurry, k, lam=1000),
        "hyperlaplacian_half": lambda: deconv.hyper_laplacian(blurry, k, lam=1000, alpha=0.5),
    }[method]
    restored = run()
    assert restored.shape == blurry.shape
    before, after = _interior_psnr(blurry, sharp), _interior_psnr(restored, sharp)
    assert after > before + 2.0, (before, after)


def test_colour_batch_with_per_item_kernels():
    sharp, blurry, k = _blurred_case(channels=3)
    k2 = k.flip(-1)
    sharp2, blurry2 = sharp.flip(-1), blurry.flip(-1)  # mirrored scene blurred by the mirrored kernel
    y = torch.cat([blurry, blurry2])
    out = deconv.hyper_laplacian(y, torch.stack([k, k2]), lam=1000)
    for i, ref in enumerate((sharp, sharp2)):
        assert _interior_psnr(out[i:i + 1], ref) > _interior_psnr(y[i:i + 1], ref) + 2.0


def test_taper_prevents_ringing_at_non_periodic_borders():
    sharp, blurry, k = _blurred_case(noise=0.0)
    tapered = _interior_psnr(deconv.wiener(blurry, k, nsr=1e-3), sharp, border=2)
    periodic = _interior_psnr(deconv.wiener(blurry, k, nsr=1e-3, taper=False), sharp, border=2)
    assert tapered > periodic + 1.0, (tapered, periodic)


def test_edgetaper_smooths_the_seam_and_keeps_the_centre():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 1, 64, 64, generator=g)
    img[..., :, :32] += 1.0  # a strong left/right jump across the periodic seam
    k = _motion_kernel()
    out = deconv.edgetaper(img, k)
    seam_before = (img[..., :, 0] - img[..., :, -1]).abs().mean()
    seam_after = (out[..., :, 0] - out[..., :, -1]).abs().mean()
    assert seam_after < 0.3 * seam_before
    torch.testing.assert_close(out[..., 24:40, 24:40], img[..., 24:40, 24:40])


@given(v=st.floats(-3, 3), beta=st.floats(0.5, 500), alpha=st.sampled_from([0.5, 2 / 3, 0.8, 1.0, 2.0]))
@settings(max_examples=150, deadline=None)
def test_shrinkage_is_the_global_minimiser(v, beta, alpha):
    w = float(deconv.shrink_hyper_laplacian(torch.tensor([v], dtype=torch.float64), beta, alpha)[0])
    grid = torch.linspace(-3.5, 3.5, 140001, dtype=torch.float64)
    cost = grid.abs().pow(alpha) + 0.5 * beta * (grid - v) ** 2

    def f(x):
        return abs(x) ** alpha + 0.5 * beta * (x - v) ** 2
    assert f(w) <= float(cost.min()) + 1e-9


@given(v=st.floats(-3, 3), beta=st.floats(0.5, 500), alpha=st.sampled_from([1.1, 1.2, 1.5, 1.8]))
@settings(max_examples=100, deadline=None)
def test_shrinkage_between_one_and_two_is_the_global_minimiser(v, beta, alpha):
    """alpha in (1, 2) is documented as valid, but r_min = (c (1 - alpha))^(1 / (2 - alpha)) has a
    negative base there: alpha 1.2 raised 'clamp is not supported for complex types' (in the solver
    too) and alpha 1.5 clamped the Newton iterates at a wrong bound (w 0.18 off at beta 1)."""
    x = torch.tensor([v], dtype=torch.float64)
    grid = torch.linspace(-3.5, 3.5, 140001, dtype=torch.float64)
    best = float((grid.abs().pow(alpha) + 0.5 * beta * (grid - v) ** 2).min())

    def f(x):
        return abs(x) ** alpha + 0.5 * beta * (x - v) ** 2
    assert f(float(deconv.shrink_hyper_laplacian(x, beta, alpha)[0])) <= best + 1e-9
    assert f(float(deconv.shrink_lut(torch.tensor([v, 3.0], dtype=torch.float64), beta, alpha)[0])) <= best + 1e-6


def test_hyper_laplacian_runs_with_an_exponent_between_one_and_two():
    sharp, blurry, k = _blurred_case()
    for lut in (True, False):
        restored = deconv.hyper_laplacian(blurry, k, lam=1000, alpha=1.2, lut=lut)
        assert _interior_psnr(restored, sharp) > _interior_psnr(blurry, sharp) + 2.0


def test_rl_tv_step_is_dey_et_al():
    """Dey et al. 2006: x' = x * K^T(y / Kx) / (1 - tv * div(grad x / |grad x|)), the TV term of the
    current iterate x. The solver took it of the half-updated x * K^T(y / Kx) instead."""
    g = torch.Generator().manual_seed(5)
    y = 0.2 + 0.6 * torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    k = torch.rand(3, 3, generator=g, dtype=torch.float64)
    k /= k.sum()
    tv = 0.02

    def div_unit_grad(x):  # div(grad x / |grad x|) with forward differences and backward divergence (periodic)
        gx, gy = x.roll(-1, -1) - x, x.roll(-1, -2) - x
        n = torch.sqrt(gx ** 2 + gy ** 2 + 1e-6)
        px, py = gx / n, gy / n
        return (px - px.roll(1, -1)) + (py - py.roll(1, -2))
    x = y.clone()
    for _ in range(3):
        rl = x * blur(y / blur(x, k, "circular"), k.flip(-2, -1), "circular")
        x = rl / (1 - tv * div_unit_grad(x)).clamp_min(0.1)
    torch.testing.assert_close(deconv.richardson_lucy(y, k, iterations=3, tv=tv, taper=False), x)


def test_noise_estimate():
    g = torch.Generator().manual_seed(4)
    clean = _scene(96)
    for sigma in (0.01, 0.03):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        est = float(deconv.estimate_noise(noisy)[0, 0])
        assert abs(est - sigma) < 0.2 * sigma, (est, sigma)


def test_delta_kernel_with_tiny_regularisation_is_identity():
    x = _scene(40)
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1.0
    torch.testing.assert_close(deconv.wiener(x, delta, nsr=1e-8), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(deconv.richardson_lucy(x, delta, iterations=5), x, atol=1e-4, rtol=0)


def test_differentiable_through_the_solvers():
    sharp, blurry, k = _blurred_case()
    y = blurry.double().requires_grad_(True)
    kk = k.double().requires_grad_(True)
    for fn in (lambda: deconv.wiener(y, kk, nsr=0.01),
               lambda: deconv.hyper_laplacian(y, kk, lam=1000, beta_max=16),
               lambda: deconv.richardson_lucy(y, kk, iterations=3, tv=0.002)):
        loss = (fn() - sharp.double()).square().mean()
        gy, gk = torch.autograd.grad(loss, (y, kk))
        assert torch.isfinite(gy).all() and torch.isfinite(gk).all() and gk.abs().sum() > 0


def test_bad_arguments():
    x = _scene(32)
    k = _motion_kernel()
    with pytest.raises(ValueError, match="prior"):
        deconv.wiener(x, k, prior="pink")
    with pytest.raises(ValueError, match="alpha"):
        deconv.shrink_hyper_laplacian(x, 1.0, alpha=0.0)
    with pytest.raises(ValueError, match="iterations"):
        deconv.richardson_lucy(x, k, iterations=-1)


SOLVERS = {"wiener": deconv.wiener, "rl": deconv.richardson_lucy, "hyperlaplacian": deconv.hyper_laplacian}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_refuse_inputs_that_would_give_garbage(name):
    # Once: kernel * 0.5 doubled the brightness, kernel * 11 gave negative means, a zero kernel NaN or an
    # IndexError in shrink_lut, a (C, H, W) image came back (1, C, H, W), uint8 failed inside torch.mean.
    solver, x, k = SOLVERS[name], torch.cat([_scene(32), _scene(32, seed=1)]), _motion_kernel()
    nan = k.clone()
    nan[5, 3] = float("nan")
    for kernel, message in ((k * 0.5, "sums to 0.5, not 1"), (k * 11, "sums to 11, not 1"),
                            (torch.zeros(5, 5), "sums to 0, not 1"), (torch.stack([k, 2 * k]), "sums to 2, not 1"),
                            (2 * k - k.max() * (k > 0), "negative"), (nan, "NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            solver(x, kernel)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        solver(x[0], k)
    with pytest.raises(ValueError, match="float32 or float64"):
        solver((x * 255).to(torch.uint8), k)
    # a NaN image was blamed on the estimated lam / nsr, or (rl) came back non-finite without a word
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[1, 0, 7, 9] = bad
        with pytest.raises(ValueError, match="^y has NaN or infinite values"):
            solver(y, k)
    # 1x1 and empty images raised IndexError from median() in the noise estimate
    for shape in ((1, 1, 1, 1), (1, 1, 0, 0), (1, 1, 1, 32)):
        with pytest.raises(ValueError, match=r"^y is \d+x\d+ pixels, smaller than 2x2"):
            solver(torch.rand(shape), k)
    with pytest.raises(ValueError, match=r"^y is 8x32 pixels, smaller than the 11x11 kernel"):
        solver(x[..., :8, :], k)
    noisy = k + 1e-5 * torch.rand(k.shape, generator=torch.Generator().manual_seed(0))  # float rounding is no fault
    assert solver(x, noisy / noisy.sum()).shape == x.shape


@pytest.mark.parametrize("call, message", [
    (lambda x, k: deconv.wiener(x, k, nsr=-1.0), "nsr"),
    (lambda x, k: deconv.wiener(x, k, nsr=torch.tensor([[[[0.01]]], [[[float("nan")]]]])), "nsr"),
    (lambda x, k: deconv.richardson_lucy(x, k, tv=-0.01), "tv"),
    (lambda x, k: deconv.richardson_lucy(x, k, eps=0.0), "eps"),
    (lambda x, k: deconv.hyper_laplacian(x, k, lam=-5.0), "lam"),
    (lambda x, k: deconv.hyper_laplacian(x, k, alpha=3.0), "alpha"),
    (lambda x, k: deconv.hyper_laplacian(x, k, beta0=0.0), "beta0"),
    (lambda x, k: deconv.hyper_laplacian(x, k, beta_rate=1.0), "beta_rate"),  # once an endless loop
    (lambda x, k: deconv.hyper_laplacian(x, k, inner=0), "inner"),
])
def test_solver_parameters_out_of_range(call, message):
    with pytest.raises(ValueError, match=message):
        call(_scene(32), _motion_kernel())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    sharp, blurry, k = _blurred_case()
    for fn in (deconv.wiener, deconv.hyper_laplacian, deconv.richardson_lucy):
        ref = fn(blurry, k)
        out = fn(blurry.cuda(), k.cuda())
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), ref, atol=1e-3, rtol=1e-3)


@given(beta=st.floats(0.5, 500), alpha=st.sampled_from([0.5, 2 / 3]), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_lookup_table_matches_the_exact_shrinkage(beta, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(2000, generator=g, dtype=torch.float64) * 0.3
    exact = deconv.shrink_hyper_laplacian(v, beta, alpha)
    table = deconv.shrink_lut(v, beta, alpha)

    def cost(w):
        return w.abs().pow(alpha) + 0.5 * beta * (w - v) ** 2
    # Away from the threshold the two agree; at it, the table's cost is within one cell's slack.
    cell = float(v.abs().max()) / 4096
    assert (cost(table) - cost(exact)).max() <= beta * cell * (v.abs().max() + 1) + 1e-9
    assert ((table - exact).abs() > 1e-3).float().mean() < 0.01


@given(h=st.integers(3, 20), w=st.integers(3, 20), seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_gradient_operator_adjointness_and_spectra(h, w, seed):
    # The x-step of the splitting uses grad^T in space and |D|^2 in frequency: both must be exact.
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, h, w, generator=g, dtype=torch.float64)
    gx, gy = torch.randn(2, 1, 2, h, w, generator=g, dtype=torch.float64)
    dx, dy = deconv._grad(x)
    lhs = (dx * gx).sum() + (dy * gy).sum()
    rhs = (x * deconv._grad_adjoint(gx, gy)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    fdx, fdy = deconv._gradient_spectra((h, w), x)
    torch.testing.assert_close(torch.fft.irfft2(torch.fft.rfft2(x) * fdx, s=(h, w)), dx)
    torch.testing.assert_close(torch.fft.irfft2(torch.fft.rfft2(x) * fdy, s=(h, w)), dy)


@pytest.mark.parametrize("name", sorted(deconv.METHODS))
@pytest.mark.parametrize("planes", [(0, 3), (2, 0)])
def test_empty_batch_gives_an_empty_result(name, planes):
    """A batch of no images raised 'MKL FFT error: Inconsistent configuration parameters' from the
    first transform; it now gives the empty (B, C, H, W) result."""
    k = torch.full((1, 3, 3), 1 / 9)
    y = torch.rand(*planes, 12, 10)
    assert deconv.METHODS[name](y, k).shape == y.shape
    # and its options are still checked: an empty batch returned before them, so alpha=5 passed there only
    bad = {"wiener": {"nsr": -1.0}, "rl": {"eps": 0.0}, "hyperlaplacian": {"alpha": 5.0, "lam": -1.0}}[name]
    for key, value in bad.items():
        with pytest.raises(ValueError, match=key):
            deconv.METHODS[name](y, k, **{key: value})


@pytest.mark.parametrize("beta_max", [1.0, 0.5, float("nan")])
def test_hyper_laplacian_refuses_a_schedule_with_no_step(beta_max):
    """beta_max at or below beta0 (or NaN) ran no splitting step and returned the blurry input
    unchanged, without a word."""
    with pytest.raises(ValueError, match="beta_max must be finite and above 1"):
        deconv.hyper_laplacian(_scene(32), _motion_kernel(), beta0=1.0, beta_max=beta_max)


def test_noise_estimate_refuses_integer_images():
    """uint8 images were accepted and their Haar differences wrapped around (0 - 1 = 255), so the
    noise level came out wrong (97 instead of 77 for one random 16x16 image of 0-255 values)."""
    y = (_scene(16) * 255).round().to(torch.uint8)
    with pytest.raises(ValueError, match=r"y must be a float tensor.*y\.float\(\) / 255"):
        deconv.estimate_noise(y)
    with pytest.raises(ValueError, match="y must be a float tensor"):
        deconv.auto_lambda(y)


@pytest.mark.parametrize("call, message", [
    (lambda v: deconv.shrink_hyper_laplacian(v, 0.0, 0.5), "beta must be finite and above 0"),  # ZeroDivisionError
    (lambda v: deconv.shrink_hyper_laplacian(v, -1.0, 2 / 3), "beta must be finite and above 0"),  # 'clamp ... complex'
    (lambda v: deconv.shrink_lut(v, 0.0, 0.5), "beta must be finite and above 0"),
    (lambda v: deconv.shrink_lut(v, 2.0, 0.5, size=1), "size must be an integer >= 2"),  # returned all zeros
])
def test_shrinkage_refuses_bad_parameters(call, message):
    v = torch.tensor([-0.9, 0.1, 0.8], dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        call(v)


@pytest.mark.parametrize("call, message", [
    # a (B,) tensor failed inside the division: 'The size of tensor a (2) must match the size of tensor b (13)'
    (lambda x, k: deconv.wiener(x, k, nsr=torch.full((2,), 0.01)), r"nsr must be .* \(B, C, 1, 1\) = \(2, 1, 1, 1\)"),
    (lambda x, k: deconv.hyper_laplacian(x, k, lam=torch.full((3, 1, 1, 1), 1e3)), r"lam must be .*\(2, 1, 1, 1\)"),
    # TypeErrors from range(): "'float' object cannot be interpreted as an integer"
    (lambda x, k: deconv.richardson_lucy(x, k, iterations=2.5), "iterations must be an integer >= 0"),
    (lambda x, k: deconv.hyper_laplacian(x, k, inner=1.5), "inner must be an integer >= 1"),
    # a negative margin gave a padded frame smaller than the image
    (lambda x, k: deconv.prepare(x, k, margin=-30), "margin must be an integer >= 0"),
    # IndexErrors from the sum check
    (lambda x, k: deconv.check_kernel(torch.full((3,), 1 / 3)), r"kernel must be \(h, w\)"),
])
def test_bad_parameters_are_named(call, message):
    x = torch.cat([_scene(32), _scene(32, seed=1)])
    with pytest.raises(ValueError, match=message):
        call(x, _motion_kernel())


def test_per_image_parameters_and_empty_kernel_batches_are_accepted():
    x = torch.cat([_scene(32), _scene(32, seed=1)])
    per_image = deconv.wiener(x, _motion_kernel(), nsr=torch.tensor([1e-3, 1e-1]).view(-1, 1, 1, 1))
    each = [deconv.wiener(x[i:i + 1], _motion_kernel(), nsr=v) for i, v in enumerate((1e-3, 1e-1))]
    torch.testing.assert_close(per_image, torch.cat(each))
    # no kernels for no images: check_kernel raised IndexError from argmax of an empty tensor
    deconv.check_kernel(torch.ones(0, 3, 3))
    assert deconv.wiener(torch.rand(0, 1, 12, 10), torch.ones(0, 3, 3) / 9).shape == (0, 1, 12, 10)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_image_parameters_of_another_dtype_keep_the_images_dtype(dtype):
    """One nsr or lam per image as a float64 tensor (NumPy's default, through torch.from_numpy) made a
    float32 image's solution float64: the solvers return ``y``'s dtype, with the values of the
    parameters given in it."""
    x = torch.cat([_scene(32), _scene(32, seed=1)]).to(dtype)
    other = torch.float64 if dtype == torch.float32 else torch.float32
    values = torch.tensor([1e-3, 1e-1]).view(-1, 1, 1, 1)
    for solve, name in ((deconv.wiener, "nsr"), (deconv.hyper_laplacian, "lam")):
        given = solve(x, _motion_kernel(), **{name: values.to(other) * (1 if name == "nsr" else 1e4)})
        want = solve(x, _motion_kernel(), **{name: values.to(dtype) * (1 if name == "nsr" else 1e4)})
        assert given.dtype == dtype
        torch.testing.assert_close(given, want, rtol=0, atol=1e-6)

def test_hyper_laplacian_restores_each_image_as_if_alone():
    # the w-step's table spanned max |v| over the whole batch: an image came back up to 2.7e-3 different beside others
    y = torch.cat([_scene(48, seed=s) for s in range(3)])
    y = blur(y * torch.tensor([1.0, 0.3, 0.6])[:, None, None, None], _motion_kernel(), "reflect")
    batched = deconv.hyper_laplacian(y, _motion_kernel())
    alone = torch.cat([deconv.hyper_laplacian(y[i:i + 1], _motion_kernel()) for i in range(3)])
    assert torch.equal(batched, alone)
    v = torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v[1] *= 5
    per_item = torch.stack([deconv.shrink_lut(v[:, i], 4.0, 0.5) for i in range(2)], dim=1)
    assert torch.equal(deconv.shrink_lut(v, 4.0, 0.5, dim=1), per_item)
    assert torch.equal(deconv.shrink_lut(torch.zeros(2, 3), 4.0, 0.5, dim=0), torch.zeros(2, 3))
    # any shape, 0-d and 1-D included (flatten(1) failed on them)
    assert torch.equal(deconv.shrink_lut(v[0, 0, 7], 4.0, 0.5), deconv.shrink_lut(v[0, 0, 7:8], 4.0, 0.5)[0])
    one_d = deconv.shrink_lut(v[0, 0], 4.0, 0.5, dim=0)
    assert torch.equal(one_d, torch.stack([deconv.shrink_lut(e, 4.0, 0.5) for e in v[0, 0]]))


@given(h=st.integers(8, 40), w=st.integers(8, 40), kh=st.integers(1, 4), kw=st.integers(1, 4),
       margin=st.none() | st.integers(0, 12), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_prepare_pads_every_side_and_leaves_the_image_itself_untouched(h, w, kh, kw, margin, seed):
    """prepare pads 'with at least margin pixels per side' (default: the kernel's larger side), and the
    edge taper only blends within about one kernel length of the padded frame's border, so the image
    comes back from crop() unchanged. Padding all on the bottom/right (top = left = 0) tapered the
    image's own top rows and left columns towards their blurred copy; that passed the suite."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(1, 2, h, w, generator=g, dtype=torch.float64)
    k = torch.rand(2 * kh + 1, 2 * kw + 1, generator=g, dtype=torch.float64)
    k = k / k.sum()
    padded, (top, left) = deconv.prepare(y, k, margin=margin)
    need = max(k.shape) if margin is None else margin
    hp, wp = padded.shape[-2:]
    assert min(top, left, hp - h - top, wp - w - left) >= need
    if need >= max(k.shape):  # the taper's reach: the image lies wholly where its weight is 1
        assert torch.allclose(deconv.crop(padded, (top, left), (h, w)), y, atol=1e-12)


@pytest.mark.parametrize("total, ok", [(1.0 + 5e-4, True), (1.0 - 5e-4, True), (1.0 + 2e-3, False),
                                       (1.0 - 2e-3, False), (1.05, False)])
def test_kernel_sum_tolerance_is_one_thousandth(total, ok):
    """check_kernel: kernels must sum to 1 within KERNEL_SUM_TOLERANCE = 1e-3 (the module docstring: the
    solvers take the kernel as the whole blur, so its sum scales the brightness of the result)."""
    k = torch.full((3, 3), total / 9, dtype=torch.float64)
    if ok:
        deconv.check_kernel(k)
    else:
        with pytest.raises(ValueError, match="not 1"):
            deconv.check_kernel(k)


@given(sigma=st.floats(0.004, 0.03), factor=st.floats(1.2, 3.0), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_auto_lambda_falls_as_the_noise_to_the_power_1_5(sigma, factor, seed):
    """The data weight is ``0.8 * sigma^-1.5``: the same noise pattern ``factor`` times stronger (no
    clipping, above the 8-bit floor) divides it by ``factor^1.5``."""
    z = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).clamp(-5, 5)
    weak, strong = 0.5 + sigma * z, 0.5 + factor * sigma * z
    assert float(strong.min()) >= 0 and float(strong.max()) <= 1
    ratio = deconv.auto_lambda(weak) / deconv.auto_lambda(strong)
    assert ratio.shape == (2, 3, 1, 1)
    assert torch.allclose(ratio, torch.full_like(ratio, factor ** 1.5), rtol=1e-9)


@pytest.mark.parametrize("name", ["wiener", "rl", "hyperlaplacian"])
def test_on_the_cpu_each_image_is_deconvolved_alone(name, monkeypatch):
    # README: an image's result does not depend on its batch. On an H200 machine's CPU (torch 2.11) a
    # 255x255 image deconvolved alone and in a batch of 4 differed by up to 4e-7 (wiener, hyper_laplacian)
    # and 1e-5 (richardson_lucy), also with each plane transformed on its own: element-wise loops and
    # transforms round by where an element falls in the tensor. On the CPU the solvers now run image by
    # image, so every tensor they transform holds one image, as when it is deconvolved alone.
    batches = []
    for fn in ("rfft", "irfft", "fft", "rfft2", "irfft2"):
        def record(x, *args, _fn=getattr(torch.fft, fn), **kwargs):
            if x.dim() > 2:  # (B, C, ...) images, spectra, kernels or kernel profiles
                batches.append(x.shape[0])
            return _fn(x, *args, **kwargs)
        monkeypatch.setattr(torch.fft, fn, record)
    y = torch.cat([_scene(24, channels=3, seed=s) for s in range(3)])
    k = torch.stack([_motion_kernel(), _motion_kernel().flip(-1), _motion_kernel().T])
    param = {"wiener": "nsr", "rl": "tv", "hyperlaplacian": "lam"}[name]
    values = {"wiener": torch.tensor([1e-3, 1e-2, 1e-1]).view(-1, 1, 1, 1), "rl": 0.003, "hyperlaplacian": torch.tensor([500.0, 2e3, 1e4]).view(-1, 1, 1, 1)}[name]
    out = deconv.METHODS[name](y, k, **{param: values})
    assert out.shape == y.shape and batches and set(batches) == {1}
    monkeypatch.undo()
    alone = [deconv.METHODS[name](y[i:i + 1], k[i], **{param: values[i:i + 1] if torch.is_tensor(values) else values})
             for i in range(3)]
    assert torch.equal(out, torch.cat(alone))


@pytest.mark.parametrize("lut", [True, False])
def test_hyper_laplacian_with_alpha_2_is_the_closed_form_splitting(lut):
    """alpha = 2: w = beta / (beta + 2) grad x, then X = (conj(Dx) Wx + conj(Dy) Wy + lam/beta conj(K) Y) /
    (|Dx|^2 + |Dy|^2 + lam/beta |K|^2), once for each beta = beta0 * rate^i below beta_max (here 1, 2, 4),
    written out with numpy's FFT."""
    import numpy as np
    rs = np.random.default_rng(7)
    y = rs.random((10, 12))
    k = rs.random((3, 3))
    k /= k.sum()
    lam, (h, w) = 30.0, y.shape
    kpad = np.zeros((h, w))
    kpad[:3, :3] = k
    fk = np.fft.fft2(np.roll(kpad, (-1, -1), axis=(0, 1)))  # kernel centre at the origin: true convolution
    fdx = (np.exp(2j * np.pi * np.arange(w) / w) - 1)[None, :]  # x[j + 1] - x[j] in frequency
    fdy = (np.exp(2j * np.pi * np.arange(h) / h) - 1)[:, None]
    x = y.copy()
    for beta in (1.0, 2.0, 4.0):
        wx = (np.roll(x, -1, axis=1) - x) * beta / (beta + 2)
        wy = (np.roll(x, -1, axis=0) - x) * beta / (beta + 2)
        num = np.conj(fdx) * np.fft.fft2(wx) + np.conj(fdy) * np.fft.fft2(wy) + lam / beta * np.conj(fk) * np.fft.fft2(y)
        x = np.fft.ifft2(num / (abs(fdx) ** 2 + abs(fdy) ** 2 + lam / beta * abs(fk) ** 2)).real
    got = deconv.hyper_laplacian(torch.from_numpy(y)[None, None], torch.from_numpy(k), lam=lam, alpha=2.0,
                                 beta0=1.0, beta_max=8.0, beta_rate=2.0, taper=False, lut=lut)
    torch.testing.assert_close(got[0, 0], torch.from_numpy(x), rtol=0, atol=1e-9)


def test_rl_starts_from_the_input_clamped_at_eps_and_clamps_negative_input_to_zero():
    # Docstring: 0 iterations return the input clamped at eps (a black pixel must not start at 0, where
    # the multiplicative update could never lift it), and negative input values are clamped to 0.
    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 1, 12, 12, generator=g, dtype=torch.float64) - 0.2
    y[0, 0, 4, 4] = 0.0
    k = torch.rand(3, 3, generator=g, dtype=torch.float64)
    k /= k.sum()
    assert torch.equal(deconv.richardson_lucy(y, k, iterations=0, taper=False, eps=1e-6), y.clamp_min(1e-6))
    torch.testing.assert_close(deconv.richardson_lucy(y, k, iterations=3, taper=False),
                               deconv.richardson_lucy(y.clamp_min(0.0), k, iterations=3, taper=False), rtol=0, atol=0)


def test_shrinkage_threshold_is_the_closed_form_one():
    # For min |w|^p + beta/2 (w - v)^2 (lam = 1/beta) w jumps from 0 at tau = (2 lam (1 - p))^(1 / (2 - p)) +
    # lam p (2 lam (1 - p))^((p - 1) / (2 - p)), to r = (2 lam (1 - p))^(1 / (2 - p)) (Zuo et al. 2013).
    for p, beta in ((0.5, 1.0), (2 / 3, 4.0)):
        lam = 1.0 / beta
        base = 2 * lam * (1 - p)
        tau, r = base ** (1 / (2 - p)) + lam * p * base ** ((p - 1) / (2 - p)), base ** (1 / (2 - p))
        v = torch.tensor([tau - 1e-5, -(tau - 1e-5), tau + 1e-5], dtype=torch.float64)
        w = deconv.shrink_hyper_laplacian(v, beta, p)
        assert w[0] == 0 and w[1] == 0 and abs(float(w[2]) - r) < 1e-2, (p, beta, w)


@pytest.mark.parametrize("alpha, beta", [(0.5, 2.0), (2 / 3, 10.0)])
def test_lookup_table_interpolates_its_points_and_takes_the_cheaper_end_at_the_jump(alpha, beta):
    """Docstring of shrink_lut: the exact w at `size` points of |v| in [0, max|v|], interpolated linearly,
    except in the cell where w jumps from 0, where the cheaper of 0 and the cell's upper end is taken. The
    table points here are minimised by scipy, independently of shrink_hyper_laplacian."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    size, top = 9, 2.0

    def cost(w, v):
        return abs(w) ** alpha + 0.5 * beta * (w - v) ** 2

    def exact(a):
        if a == 0:
            return 0.0
        r = minimize_scalar(lambda t: cost(t, a), bounds=(0.0, a), method="bounded", options={"xatol": 1e-13}).x
        return r if cost(r, a) < cost(0.0, a) else 0.0
    grid = np.linspace(0.0, top, size)
    table = np.array([exact(a) for a in grid])
    v = np.concatenate([np.linspace(0.0, top, 401), [top]])
    got = deconv.shrink_lut(torch.from_numpy(v), beta, alpha, size=size).numpy()
    jump = int(np.argmax(table > 0))  # the table's first non-zero point: the jump is in the cell below it
    for vi, gi in zip(v, got):
        cell = min(int(vi / top * (size - 1)), size - 2)
        if cell == jump - 1:
            want = table[jump] if cost(table[jump], vi) < cost(0.0, vi) else 0.0
        else:
            want = np.interp(vi, grid, table)
        assert abs(gi - want) < 1e-6, (vi, gi, want)


def test_shrinkage_between_one_and_two_has_the_implicit_function_gradient():
    # Differentiable (module docstring): r = |w| solves r - |v| + c r^(alpha - 1) = 0 (c = alpha / beta), so
    # dw/dv = 1 / (1 + c (alpha - 1) r^(alpha - 2)); the root here by scipy's brentq.
    from scipy.optimize import brentq
    alpha, beta = 1.5, 2.0
    c = alpha / beta
    for v0 in (0.7, -1.3):
        r = brentq(lambda t: t - abs(v0) + c * t ** (alpha - 1), 0.0, abs(v0), xtol=1e-15)
        v = torch.tensor(v0, dtype=torch.float64, requires_grad=True)
        w = deconv.shrink_hyper_laplacian(v, beta, alpha)
        (grad,) = torch.autograd.grad(w, v)
        assert abs(float(w.detach()) - (r if v0 > 0 else -r)) < 1e-9
        assert abs(float(grad) - 1 / (1 + c * (alpha - 1) * r ** (alpha - 2))) < 1e-8


def test_kernels_negative_beyond_float_rounding_are_refused():
    # check_kernel forgives -1e-6 (float rounding), not a real negative tap of -1e-3.
    k = torch.full((3, 3), 1 / 9, dtype=torch.float64)
    k[0, 0] -= 1e-3 + 1 / 9
    k[1, 1] += 1e-3 + 1 / 9
    with pytest.raises(ValueError, match="negative"):
        deconv.check_kernel(k)
    k[0, 0], k[1, 1] = -5e-7, 2 / 9 + 5e-7
    deconv.check_kernel(k)
