"""Uniform blur: true convolution against scipy, exact adjoints, conventions, bad input."""

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings, strategies as st

from blursynth.blur import _slab_plan, _split_plan, blur, blur_adjoint, fast_length, kernel_spectrum

NP_MODE = {"reflect": "reflect", "circular": "wrap"}


def _scipy_blur(x: np.ndarray, k: np.ndarray, boundary: str) -> np.ndarray:
    """Reference: pad as documented (kernel centre at (h//2, w//2)), then scipy's valid convolution."""
    h, w = k.shape
    if boundary != "valid":
        pads = ((h - 1 - h // 2, h // 2), (w - 1 - w // 2, w // 2))
        x = np.pad(x, pads, mode=NP_MODE[boundary])
    return scipy.signal.convolve2d(x, k, mode="valid")


sizes = st.tuples(st.integers(8, 26), st.integers(8, 26), st.integers(1, 8), st.integers(1, 8))


@given(size=sizes, boundary=st.sampled_from(["valid", "reflect", "circular"]),
       method=st.sampled_from(["fft", "direct"]), shared=st.booleans(), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_matches_scipy_convolve2d(size, boundary, method, shared, seed):
    hh, ww, h, w = size
    rng = np.random.default_rng(seed)
    x = rng.random((2, 3, hh, ww)).astype(np.float32)
    k = rng.random((1 if shared else 2, h, w)).astype(np.float32)
    k /= k.sum(axis=(-2, -1), keepdims=True)
    y = blur(torch.from_numpy(x), torch.from_numpy(k), boundary, method=method).numpy()
    for b in range(2):
        for c in range(3):
            ref = _scipy_blur(x[b, c].astype(np.float64), k[0 if shared else b].astype(np.float64), boundary)
            np.testing.assert_allclose(y[b, c], ref, atol=1e-5, rtol=0)


@given(size=sizes, boundary=st.sampled_from(["valid", "reflect", "circular"]),
       method=st.sampled_from(["fft", "direct"]), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_adjoint_identity(size, boundary, method, seed):
    hh, ww, h, w = size
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 2, hh, ww, generator=g, dtype=torch.float64)
    k = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64)
    ax = blur(x, k, boundary, method=method)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    aty = blur_adjoint(y, k, boundary, method=method)
    assert aty.shape == x.shape
    lhs, rhs = (ax * y).sum(), (x * aty).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


@pytest.mark.parametrize("shape", [(24, 30), (16, 32)])
def test_circular_at_fast_sizes_matches_scipy(shape):
    # Fast image sizes take the exact-size circular FFT path (no padding): check it on its own.
    rng = np.random.default_rng(1)
    x = rng.random(shape)
    k = rng.random((7, 6))
    y = blur(torch.from_numpy(x)[None, None], torch.from_numpy(k), "circular", method="fft")[0, 0].numpy()
    np.testing.assert_allclose(y, _scipy_blur(x, k, "circular"), atol=1e-10)
    yy = torch.randn(1, 1, *shape, dtype=torch.float64)
    xx = torch.from_numpy(x)[None, None]
    lhs = (blur(xx, torch.from_numpy(k), "circular", method="fft") * yy).sum()
    rhs = (xx * blur_adjoint(yy, torch.from_numpy(k), "circular", method="fft")).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-10)


@pytest.mark.parametrize("shape, ksize, split", [
    ((40, 60), (5, 5), -1),     # split columns, FFT sizes equal to the slabs
    ((200, 40), (9, 9), -2),    # tall image: split rows
    ((97, 101), (5, 7), -1),    # non-fast height (padded) and odd valid width (halves differ by one)
    ((61, 9), (4, 9), -2),      # kernel as wide as the image: one output column
    ((30, 12), (21, 9), None),  # large kernel: one real transform of the whole image instead
])
@pytest.mark.parametrize("whole_batch", [False, True])  # True: the one-call path GPUs take
def test_slab_transform_matches_scipy(shape, ksize, split, whole_batch, monkeypatch):
    # The valid FFT packs pairs of slabs of each image into complex transforms; check every layout
    # (which axis, padding, unequal halves, the fallback) against scipy, per item and per channel,
    # on small images (which otherwise keep the real transform), and its batch invariance. With
    # the threshold at 0 every boundary also takes the one-image-at-a-time path of large images.
    assert _split_plan(*shape, *ksize) is None  # small images: real transform by default
    monkeypatch.setattr("blursynth.blur.LARGE_PIXELS", 0)
    monkeypatch.setattr("blursynth.blur._whole_batch", lambda x: whole_batch)
    plan = _split_plan(*shape, *ksize)
    assert (plan and plan[0]) == split
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, *shape))
    k = rng.random((2, 3, *ksize))
    slabs = _slab_plan(torch.from_numpy(x), torch.from_numpy(k), "valid")
    assert slabs == (None if whole_batch else plan)  # off the CPU: one real transform of the batch
    for boundary in ("valid", "reflect", "circular"):
        y = blur(torch.from_numpy(x), torch.from_numpy(k), boundary, method="fft").numpy()
        for b in range(2):
            for c in range(3):
                np.testing.assert_allclose(y[b, c], _scipy_blur(x[b, c], k[b, c], boundary), atol=1e-10)
        xt, kt = torch.from_numpy(x).float(), torch.from_numpy(k).float()
        assert torch.equal(blur(xt[1:], kt[1:], boundary, method="fft"), blur(xt, kt, boundary, method="fft")[1:])
        # one kernel per item, shared by its channels (each item's spectrum is made once)
        y1 = blur(torch.from_numpy(x), torch.from_numpy(k[:, :1]), boundary, method="fft").numpy()
        np.testing.assert_allclose(y1[1, 2], _scipy_blur(x[1, 2], k[1, 0], boundary), atol=1e-10)
        yy = torch.from_numpy(rng.random(y.shape))
        lhs = (torch.from_numpy(y) * yy).sum()
        rhs = (torch.from_numpy(x) * blur_adjoint(yy, torch.from_numpy(k), boundary, method="fft")).sum()
        assert torch.isclose(lhs, rhs, rtol=1e-10)


@pytest.mark.parametrize("slabs", [2, 4, 6, 8])
@pytest.mark.parametrize("dim", [-1, -2])
def test_every_slab_count_matches_scipy(slabs, dim, monkeypatch):
    # Force each layout the planner can choose: valid lengths not divisible by the slab count
    # (unequal last part), a last slab moved back inside the image, a padded other axis.
    from blursynth import blur as blur_module
    shape, ksize = ((37, 83), (5, 7)) if dim == -1 else ((83, 37), (7, 5))

    def plan(hh, ww, h, w):
        size, k = (ww, w) if dim == -1 else (hh, h)
        slab = fast_length(-(-(size - k + 1) // slabs) + k - 1)
        return (dim, fast_length(hh), slab, slabs) if dim == -1 else (dim, slab, fast_length(ww), slabs)

    monkeypatch.setattr(blur_module, "_split_plan", plan)
    rng = np.random.default_rng(slabs)
    x, k = rng.random((2, 3, *shape)), rng.random((2, 3, *ksize))
    for boundary in ("valid", "reflect", "circular"):
        y = blur(torch.from_numpy(x), torch.from_numpy(k), boundary, method="fft").numpy()
        for b in range(2):
            for c in range(3):
                np.testing.assert_allclose(y[b, c], _scipy_blur(x[b, c], k[b, c], boundary), atol=1e-10)


@pytest.mark.parametrize("dim", [-1, -2])
def test_slab_transform_longer_than_the_image_matches_scipy(dim, monkeypatch):
    # A 14-wide image and a 13-wide kernel: 2 valid outputs, one per slab, each needing 13 columns,
    # and 13 rounds up to a 16-point FFT, longer than the image; the slab is cut to the image and
    # _pack zero-pads it (reading 16 columns of 14 failed).
    from blursynth import blur as blur_module
    shape, ksize = ((9, 14), (3, 13)) if dim == -1 else ((14, 9), (13, 3))

    def plan(hh, ww, h, w):
        size, k = (ww, w) if dim == -1 else (hh, h)
        slab = fast_length(-(-(size - k + 1) // 2) + k - 1)
        return (dim, fast_length(hh), slab, 2) if dim == -1 else (dim, slab, fast_length(ww), 2)

    assert plan(*shape, *ksize)[2 if dim == -1 else 1] == 16 > 14
    monkeypatch.setattr(blur_module, "_split_plan", plan)
    rng = np.random.default_rng(11)
    x, k = rng.random((1, 2, *shape)), rng.random((1, 2, *ksize))
    for boundary in ("valid", "reflect", "circular"):
        y = blur(torch.from_numpy(x), torch.from_numpy(k), boundary, method="fft").numpy()
        for c in range(2):
            np.testing.assert_allclose(y[0, c], _scipy_blur(x[0, c], k[0, c], boundary), atol=1e-10)


def test_slab_transform_is_differentiable(monkeypatch):
    monkeypatch.setattr("blursynth.blur.LARGE_PIXELS", 0)
    assert _split_plan(16, 30, 3, 3) is not None
    x = torch.rand(1, 2, 16, 30, dtype=torch.float64, requires_grad=True)
    k = torch.rand(1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: blur(a, b, "valid", method="fft"), (x, k))


def test_wide_padding_beyond_image_size():
    # Kernels larger than the image under reflect/circular use the generic index path.
    rng = np.random.default_rng(2)
    x, k = rng.random((5, 6)), rng.random((13, 11))
    # also a kernel wider, not taller, than a fast-sized 8x6 image: the exact-size circular FFT must not take it
    cases = [("reflect", x, k), ("circular", x, k), ("circular", rng.random((8, 6)), rng.random((3, 11)))]
    for boundary, x, k in cases:
        y = blur(torch.from_numpy(x)[None, None], torch.from_numpy(k), boundary, method="fft")[0, 0].numpy()
        np.testing.assert_allclose(y, _scipy_blur(x, k, boundary), atol=1e-10)
        yy = torch.randn(1, 1, *x.shape, dtype=torch.float64)
        xx = torch.from_numpy(x)[None, None]
        kk = torch.from_numpy(k)
        assert torch.isclose((blur(xx, kk, boundary) * yy).sum(), (xx * blur_adjoint(yy, kk, boundary)).sum())


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_reflect_padding_as_wide_as_the_image(method):
    """A reflect pad exactly the image's size (3 rows padded by 3, 4 columns by 4) is one step past
    what F.pad's reflect takes: blur and its adjoint must take the generic path there, as numpy's
    reflect does (the cases either side of it were tested, this one was not)."""
    rng = np.random.default_rng(4)
    x, k = rng.random((3, 4)), rng.random((7, 9))
    xx, kk = torch.from_numpy(x)[None, None], torch.from_numpy(k)
    y = blur(xx, kk, "reflect", method=method)[0, 0].numpy()
    np.testing.assert_allclose(y, _scipy_blur(x, k, "reflect"), atol=1e-10)
    yy = torch.from_numpy(rng.standard_normal((1, 1, 3, 4)))
    lhs = (blur(xx, kk, "reflect", method=method) * yy).sum()
    rhs = (xx * blur_adjoint(yy, kk, "reflect", method=method)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


@pytest.mark.parametrize("hw", [(1, 6), (5, 1), (1, 1)])
def test_reflect_blur_of_a_one_pixel_wide_image(hw):
    """Mirroring a single row or column repeats it (numpy's reflect); the mirror's period 2 (size - 1)
    is 0 there, so that case needs its own branch: blur and adjoint checked against numpy + scipy."""
    rng = np.random.default_rng(6)
    x, k = rng.random(hw), rng.random((3, 5))
    xx, kk = torch.from_numpy(x)[None, None], torch.from_numpy(k)
    for method in ("fft", "direct"):
        y = blur(xx, kk, "reflect", method=method)
        np.testing.assert_allclose(y[0, 0].numpy(), _scipy_blur(x, k, "reflect"), atol=1e-10)
        yy = torch.from_numpy(rng.standard_normal((1, 1, *hw)))
        rhs = (xx * blur_adjoint(yy, kk, "reflect", method=method)).sum()
        assert torch.isclose((y * yy).sum(), rhs, rtol=1e-10, atol=1e-10)


def test_mass_right_of_centre_moves_content_right():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    k = torch.zeros(3, 3)
    k[1, 2] = 1.0  # one tap right of the centre (1, 1)
    y = blur(x, k, "circular")
    assert y[0, 0, 4, 5] == pytest.approx(1.0) and y.sum() == pytest.approx(1.0)


def test_centred_delta_is_identity_and_valid_is_interior():
    x = torch.rand(2, 3, 20, 17)
    k = torch.zeros(5, 7)
    k[2, 3] = 1.0
    for boundary in ("reflect", "circular"):
        torch.testing.assert_close(blur(x, k, boundary), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(blur(x, k, "valid"), x[..., 2:-2, 3:-3], atol=1e-6, rtol=0)


def test_per_item_kernels_and_broadcasting():
    x = torch.rand(3, 2, 16, 16)
    k = torch.rand(3, 5, 5)
    batched = blur(x, k, "reflect")
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], blur(x[i:i + 1], k[i], "reflect"))
    per_channel = torch.rand(1, 2, 5, 5)
    y = blur(x, per_channel, "valid")
    torch.testing.assert_close(y[:, 1:], blur(x[:, 1:], per_channel[0, 1], "valid"))


def test_fft_and_direct_agree_and_auto_picks_one():
    x = torch.rand(2, 3, 40, 40)
    for size in (3, 15):
        k = torch.rand(2, size, size)
        ref = blur(x, k, "reflect", method="fft")
        torch.testing.assert_close(blur(x, k, "reflect", method="direct"), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(blur(x, k, "reflect"), ref, atol=1e-5, rtol=1e-5)


def test_kernel_takes_the_images_dtype():
    """The kernel is moved to the image's dtype (as documented): a float64 kernel on a float32 image
    and the reverse blur (and adjoint) in the image's dtype; values checked against scipy."""
    rng = np.random.default_rng(9)
    x, k = rng.random((1, 2, 20, 20)), rng.random((7, 7))  # 7x7: direct by default; 15x15 below: FFT
    big = rng.random((15, 15))
    k, big = k / k.sum(), big / big.sum()
    for img_dtype, k_dtype in ((torch.float32, torch.float64), (torch.float64, torch.float32)):
        for kern in (k, big):
            xt, kt = torch.from_numpy(x).to(img_dtype), torch.from_numpy(kern).to(k_dtype)
            y = blur(xt, kt, "reflect")
            assert y.dtype == img_dtype and blur_adjoint(y, kt, "reflect").dtype == img_dtype
            ref = _scipy_blur(x[0, 1], kt.double().numpy(), "reflect")
            tol = 1e-5 if img_dtype == torch.float32 else 1e-10
            np.testing.assert_allclose(y[0, 1].double().numpy(), ref, atol=tol)


def test_differentiable_in_image_and_kernel():
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    k = torch.rand(1, 5, 5, dtype=torch.float64, requires_grad=True)
    for method in ("fft", "direct"):
        assert torch.autograd.gradcheck(lambda a, b: blur(a, b, "reflect", method=method), (x, k))


def test_auto_takes_the_fft_for_float64_images():
    """method="auto" convolved float64 images directly for kernels of up to 100 taps, but torch's float64
    conv2d has no fast depthwise kernel and unfolds the image into an array taps times its size: a 9x9 kernel
    on a 2000x3000 plane took 4.3 GB and 45x the FFT's time. float64 now always takes the FFT (and float32
    still the direct convolution for small kernels)."""
    x = torch.rand(2, 3, 24, 20, dtype=torch.float64)
    k = torch.rand(2, 5, 5, dtype=torch.float64)
    for boundary in ("valid", "reflect", "circular"):
        assert torch.equal(blur(x, k, boundary), blur(x, k, boundary, method="fft"))
        y = torch.rand_like(blur(x, k, boundary))
        assert torch.equal(blur_adjoint(y, k, boundary), blur_adjoint(y, k, boundary, method="fft"))
        assert torch.equal(blur(x.float(), k.float(), boundary), blur(x.float(), k.float(), boundary, method="direct"))


@pytest.mark.parametrize("boundary", ["valid", "reflect", "circular"])
def test_blur_keeps_the_images_dtype_under_autocast(boundary):
    """blur returns "the same dtype ... as image", but under autocast (mixed-precision training) the direct
    convolution of small kernels ran in bfloat16 and returned a bfloat16 image, 3e-3 off; the FFT kept
    float32. Both now run in the image's dtype, with the same values as without autocast."""
    x = torch.rand(2, 3, 20, 24)
    k = torch.rand(2, 5, 5)
    want, back = blur(x, k, boundary), blur_adjoint(blur(x, k, boundary), k, boundary)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_back = blur(x, k, boundary), blur_adjoint(blur(x, k, boundary), k, boundary)
    assert got.dtype == got_back.dtype == torch.float32
    assert torch.equal(got, want) and torch.equal(got_back, back)


def test_kernel_spectrum_is_circular_blur():
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)
    k = torch.rand(2, 5, 3, dtype=torch.float64)
    via_otf = torch.fft.irfft2(torch.fft.rfft2(x) * kernel_spectrum(k, (12, 10)), s=(12, 10))
    torch.testing.assert_close(via_otf, blur(x, k, "circular", method="direct"))
    for bad in (torch.rand(5), torch.rand(1, 1, 1, 5, 5), torch.rand(0, 5)):  # (a 1-D one failed to unpack)
        with pytest.raises(ValueError, match=r"kernel must be (\(h, w\), \(B, h, w\) or \(B, C, h, w\)|at least 1x1)"):
            kernel_spectrum(bad, (12, 10))
    for big in (torch.rand(13, 3), torch.rand(3, 11), torch.rand(2, 5, 11)):  # too tall, too wide
        with pytest.raises(ValueError, match="larger than the 12x10 grid"):
            kernel_spectrum(big, (12, 10))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int64, torch.float64])
def test_kernel_spectrum_is_complex64_for_every_kernel_dtype_but_float64(dtype):
    """Documented: complex128 for a float64 kernel, else complex64. float16 and bfloat16 kernels failed in
    torch's CPU FFT with "Unsupported dtype Half"."""
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]])  # (exact in every dtype tried)
    k = (k * 4).to(dtype)
    spec = kernel_spectrum(k, (8, 6))
    assert spec.dtype == (torch.complex128 if dtype == torch.float64 else torch.complex64)
    torch.testing.assert_close(spec.to(torch.complex128), kernel_spectrum(k.double(), (8, 6)))


def test_kernel_spectrum_takes_one_int_for_a_square_and_names_a_bad_size():
    """One int is a square grid, as for the package's other sizes: it was "'int' object is not
    subscriptable"; a float or a 1-element size failed inside torch without naming ``size``."""
    k = torch.rand(5, 3, dtype=torch.float64)
    assert torch.equal(kernel_spectrum(k, 12), kernel_spectrum(k, (12, 12)))
    assert torch.equal(kernel_spectrum(k, np.int64(12)), kernel_spectrum(k, [12, 12]))
    for bad in (12.0, (12,), (12, 10, 3), (12, 0), (12.0, 10), "12", None, True):
        with pytest.raises(ValueError, match=r"size \(the grid of the spectrum\) must be an int or \(H, W\)"):
            kernel_spectrum(k, bad)


@pytest.mark.parametrize("kshape", [(4, 6), (2, 3), (5, 8)])
def test_kernel_spectrum_of_even_kernels_centres_them_at_h2_w2(kshape):
    """kernel_spectrum places tap (h // 2, w // 2) at the origin for even sizes too (the convention
    of blur): its product with rfft2(x) is numpy's wrap-padded convolution with that centre. Only odd
    kernels were tested, where (w - 1) - w // 2 is the same number."""
    rng = np.random.default_rng(8)
    x, k = rng.random((12, 10)), rng.random(kshape)
    otf = kernel_spectrum(torch.from_numpy(k), (12, 10))
    via_otf = torch.fft.irfft2(torch.fft.rfft2(torch.from_numpy(x)) * otf, s=(12, 10))[0, 0].numpy()
    np.testing.assert_allclose(via_otf, _scipy_blur(x, k, "circular"), atol=1e-10)


def test_fast_length():
    for n in (1, 7, 11, 97, 721, 1310):
        m = fast_length(n)
        assert m >= n and all(fast_length(j) != j for j in range(n, m))
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        assert r == 1
    assert fast_length(1310, 8) % 8 == 0 and fast_length(750) % 4 == 0


def test_bad_input_errors_name_the_fix():
    x = torch.rand(1, 3, 10, 10)
    with pytest.raises(ValueError, match="boundary"):
        blur(x, torch.ones(3, 3) / 9, "zeros")
    for bad_method in ("fast", "FFT"):  # (an unknown method silently took the FFT)
        with pytest.raises(ValueError, match="method must be one of"):
            blur(x, torch.ones(3, 3) / 9, method=bad_method)
        with pytest.raises(ValueError, match="method must be one of"):
            blur_adjoint(x, torch.ones(3, 3) / 9, method=bad_method)
    with pytest.raises(ValueError, match="at least as large as the kernel"):
        blur(x, torch.ones(11, 11), "valid")
    with pytest.raises(ValueError, match="at least as large as the kernel"):  # too wide only
        blur(x, torch.ones(3, 11), "valid")
    with pytest.raises(ValueError, match="does not match the image batch"):
        blur(torch.rand(2, 3, 10, 10), torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        blur(torch.rand(10, 10), torch.ones(3, 3))
    with pytest.raises(TypeError, match="float"):
        blur(torch.zeros(1, 1, 10, 10, dtype=torch.uint8), torch.ones(3, 3))
    for half in (torch.float16, torch.bfloat16):  # documented float32/float64 only (CPU FFTs take no half)
        with pytest.raises(TypeError, match="float32 or float64"):
            blur(torch.zeros(1, 1, 10, 10, dtype=half), torch.ones(3, 3))
        with pytest.raises(TypeError, match="float32 or float64"):
            blur_adjoint(torch.zeros(1, 1, 8, 8, dtype=half), torch.ones(3, 3))
    with pytest.raises(TypeError, match=r"kernel must be real, got torch.complex64"):  # (its imaginary part was dropped)
        blur(x, torch.full((3, 3), 1 / 9 + 0.1j, dtype=torch.complex64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    # FFT round-off is relative to the largest value, not to each pixel's (a corner pixel of the
    # adjoint, 2 against 3e4 elsewhere, was 8e-4 off on an H100), hence tolerances scaled to the max
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 48, generator=g)
    k = torch.rand(2, 21, 17, generator=g)
    for boundary in ("valid", "reflect", "circular"):
        ref = blur(x, k, boundary)
        out = blur(x.cuda(), k.cuda(), boundary)
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), ref, atol=1e-6 * float(ref.abs().max()), rtol=0)
        back = blur_adjoint(ref, k, boundary)
        torch.testing.assert_close(blur_adjoint(out, k.cuda(), boundary).cpu(), back,
                                   atol=1e-6 * float(back.abs().max()), rtol=0)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_item_is_bitwise_independent_of_the_batch(method):
    # Datasets rely on pair i being identical whatever batch it was made in.
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 60, 50, generator=g)
    k = torch.rand(4, 9, 7, generator=g)
    for boundary in ("valid", "reflect", "circular"):
        full = blur(x, k, boundary, method=method)
        for i in range(4):
            assert torch.equal(blur(x[i:i + 1], k[i], boundary, method=method), full[i:i + 1])
        assert torch.equal(blur(x[1:3], k[1:3], boundary, method=method), full[1:3])


def test_kernel_batch_mismatch_names_both_batches():
    """blur(x[:1], 3 kernels) said 'give one kernel per item (B=1) or one shared kernel (B=1)'."""
    x = torch.rand(1, 3, 16, 16)
    k = torch.full((3, 5, 5), 1 / 25)
    with pytest.raises(ValueError, match=r"kernel batch \(3, .*does not match the image batch \(1\)"):
        blur(x, k)
    with pytest.raises(ValueError, match=r"kernel channels \(2, .*do not match the image's \(3\)"):
        blur(x, torch.full((1, 2, 5, 5), 1 / 25))


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
@pytest.mark.parametrize("boundary", ["valid", "reflect", "circular"])
@pytest.mark.parametrize("planes", [(0, 3), (2, 0)])
def test_empty_batch_gives_an_empty_result(planes, boundary, method):
    """A batch of no images (or of no channels) crashed: with small kernels ("auto" takes the direct
    path) conv2d raised 'non-positive groups is not supported', and the FFT adjoint raised an MKL
    error; it now gives the empty result of the documented shape, like any other batch size."""
    b, c = planes
    k = torch.rand(1, 3, 5)
    out = blur(torch.rand(b, c, 12, 10), k, boundary, method=method)
    assert out.shape == ((b, c, 10, 6) if boundary == "valid" else (b, c, 12, 10))
    back = blur_adjoint(out, k, boundary, method=method)
    assert back.shape == (b, c, 12, 10)


@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided"])
@pytest.mark.parametrize("boundary", ["valid", "reflect", "circular"])
def test_memory_layout_does_not_change_the_bytes(layout, boundary):
    """An image stored column-major (a transposed view) blurred by the slab transform gave other
    bytes (3e-5 apart at 400x500) than its contiguous copy: the packed slabs inherited its strides
    and MKL rounds column-major transforms differently. Every layout now gives the same bytes."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(1, 2, 400, 500, generator=g)
    k = torch.rand(1, 13, 13, generator=g)
    assert _slab_plan(x, k[None], boundary) is not None  # the large-image path is the one under test
    if layout == "transposed":
        view = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == "channels_last":
        view = x.contiguous(memory_format=torch.channels_last)
    else:
        view = torch.zeros(1, 2, 400, 1000).index_copy_(-1, torch.arange(0, 1000, 2), x)[..., ::2]
    assert torch.equal(view, x) and not view.is_contiguous()
    assert torch.equal(blur(view, k, boundary), blur(x, k, boundary))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("boundary", ["reflect", "circular"])
@pytest.mark.parametrize("hw", [(0, 10), (12, 0)])
def test_image_of_no_pixels_gives_an_empty_result(hw, boundary, method):
    """An image with no rows (or no columns) raised torch's internal index_select or modulo error
    under "reflect"/"circular" (nothing to pad from), and "circular" by FFT never returned (a size-0
    check looped); like an empty batch it now gives the empty result of the documented size, and
    so does the adjoint (also of an empty "valid" output)."""
    k = torch.rand(1, 3, 5)
    out = blur(torch.rand(2, 3, *hw), k, boundary, method=method)
    assert out.shape == (2, 3, *hw)
    assert blur_adjoint(out, k, boundary, method=method).shape == (2, 3, *hw)
    back = blur_adjoint(torch.rand(2, 3, 0, 6), k, "valid", method=method)
    assert back.shape == (2, 3, 2, 10) and not back.any()


def _random_kernel(rng, h, w):
    k = rng.random((h, w)) ** 3  # (lopsided, so that its centre of mass is off its centre pixel)
    return k / k.sum()


@given(size=sizes, boundary=st.sampled_from(["reflect", "circular"]), method=st.sampled_from(["fft", "direct"]),
       level=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_a_flat_image_stays_flat_and_circular_blur_keeps_the_mass(size, boundary, method, level, seed):
    """Mass is conserved: a kernel summing to 1 keeps a flat image flat (reflect and circular, up to the
    border) and, with circular boundaries, keeps every image's total."""
    hh, ww, h, w = size
    rng = np.random.default_rng(seed)
    k = torch.from_numpy(_random_kernel(rng, h, w))
    flat = torch.full((2, 3, hh, ww), level, dtype=torch.float64)
    torch.testing.assert_close(blur(flat, k, boundary, method=method), flat, atol=1e-12 * (1 + level), rtol=0)
    x = torch.from_numpy(rng.random((2, 3, hh, ww)))
    if boundary == "circular":
        torch.testing.assert_close(blur(x, k, boundary, method=method).sum((-2, -1)), x.sum((-2, -1)),
                                   atol=1e-10, rtol=0)


@given(size=sizes, boundary=st.sampled_from(["reflect", "circular", "valid"]), method=st.sampled_from(["fft", "direct"]),
       seed=st.integers(0, 2**31 - 1), data=st.data())
@settings(max_examples=60, deadline=None)
def test_a_point_becomes_the_kernel_placed_on_it_and_moves_by_the_kernels_centre_of_mass(size, boundary, method,
                                                                                         seed, data):
    """The first moment, with the documented sign (the package's convention: true convolution, centre at (h // 2, w // 2),
    mass right of centre moves content right): a point at (y0, x0) becomes the kernel with its centre
    pixel on (y0, x0), and an image's centroid moves by the kernel's centre of mass (x right, y down)."""
    hh, ww, h, w = size
    hh, ww = hh + 2 * h, ww + 2 * w  # room for a whole kernel around the point
    rng = np.random.default_rng(seed)
    k = _random_kernel(rng, h, w)
    y0 = data.draw(st.integers(h, hh - h - 1), label="y0")
    x0 = data.draw(st.integers(w, ww - w - 1), label="x0")
    point = torch.zeros(1, 1, hh, ww, dtype=torch.float64)
    point[0, 0, y0, x0] = 1.0
    want = np.zeros((hh, ww))
    want[y0 - h // 2:y0 - h // 2 + h, x0 - w // 2:x0 - w // 2 + w] = k  # out[y0 + a - h//2, x0 + b - w//2] = k[a, b]
    out = blur(point, torch.from_numpy(k), boundary, method=method)[0, 0].numpy()
    if boundary == "valid":  # (the valid output's pixel (i, j) is the full frame's (i + h - 1 - h//2, j + w - 1 - w//2))
        want = want[h - 1 - h // 2:hh - h // 2, w - 1 - w // 2:ww - w // 2]
    np.testing.assert_allclose(out, want, atol=1e-12)
    # an image of compact support: its centroid moves by the kernel's centre of mass
    image = np.zeros((hh, ww))
    image[h:hh - h, w:ww - w] = rng.random((hh - 2 * h, ww - 2 * w))
    ys, xs = np.mgrid[0:hh, 0:ww]
    kys, kxs = np.mgrid[0:h, 0:w]
    shift = np.array([(k * (kxs - w // 2)).sum(), (k * (kys - h // 2)).sum()])
    if boundary != "valid":
        blurred = blur(torch.from_numpy(image)[None, None], torch.from_numpy(k), boundary, method=method)[0, 0].numpy()

        def centroid(a):
            return np.array([(a * xs).sum(), (a * ys).sum()]) / a.sum()
        np.testing.assert_allclose(centroid(blurred) - centroid(image), shift, atol=1e-9)


@pytest.mark.parametrize("boundary", ["valid", "reflect", "circular"])
def test_thread_count_does_not_change_the_bytes(boundary):
    """`blursynth dataset --workers 1` blurs with torch's default threads, each of `--workers 2` with
    one, and the two must write the same bytes: the transforms MKL splits across threads (the slabs
    of a 1280x720 image, the one real transform of a smaller one) must round as on one thread."""
    g = torch.Generator().manual_seed(12)
    threads = torch.get_num_threads()
    for shape, size, slabs in (((1, 3, 720, 1280), 31, True), ((2, 3, 300, 200), 9, False)):
        x, k = torch.rand(shape, generator=g), torch.rand(shape[0], size, size, generator=g)
        assert (_slab_plan(x, k[:, None], boundary) is not None) == slabs
        y = torch.rand_like(blur(x, k, boundary))
        out = []
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                out.append((blur(x, k, boundary), blur_adjoint(y, k, boundary)))
        finally:
            torch.set_num_threads(threads)
        for n, (blurred, adjoint) in zip((2, 3), out[1:]):
            assert torch.equal(blurred, out[0][0]) and torch.equal(adjoint, out[0][1]), (shape, n)
