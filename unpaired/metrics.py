"""Image and kernel quality metrics, and the Levin et al. (CVPR 2009) scoring protocol.

Images are ``(B, C, H, W)`` float in ``[0, 1]`` (or ``[0, max_val]``) on any device, ``x`` and ``ref``
of one shape, dtype and device; every function returns per-image values ``(B,)`` so a table can list
them, on the images' device, float32 or float64 as they are (a batch of no images gives ``(0,)``). PSNR and SSIM are kornia's. The Levin protocol forgives
what a deblurring method cannot know, the translation of the recorded blur: it aligns the restored
image to the sharp one up to a shift (integer search within a radius, then sub-pixel refinement),
crops a border, and only then scores. The error ratio compares a restoration's error with the
error of a non-blind deconvolution that was given the true kernel. Levin's own ``comp_upto_shift.m``
searches a 0.25 px grid within 5 px and resamples bilinearly; the search here is finer and bicubic
(bilinear resampling at a fractional shift also smooths the image, which lowers the error of a noisy
restoration). On the 32 Levin images the mean scores differ by under 0.2 dB (measured in the README).
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

from blursynth import rng
from blursynth.blur import R2C_MULTIPLE, fast_length


def psnr(x: torch.Tensor, ref: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image, ``(B,)`` (kornia's, applied image by image): ``10 log10(max_val^2 / MSE)``
    over all channels and pixels, ``inf`` for identical images; nothing is clipped."""
    x, ref = _check_pair(x, ref)
    max_val = _data_range(max_val)
    if x.shape[0] == 0:  # (torch.stack of no images fails)
        return x.new_zeros(0)
    return torch.stack([kornia.metrics.psnr(a, b, max_val) for a, b in zip(x, ref)])


SSIM_WINDOW = 11  # px a side of the SSIM window (Wang et al.'s 11x11 Gaussian): what a scored image must hold


def ssim(x: torch.Tensor, ref: torch.Tensor, window_size: int = SSIM_WINDOW, max_val: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image, ``(B,)``: kornia's Gaussian-window SSIM over the positions where the
    whole window fits (no padding, so borders are not invented; Gaussian sigma 1.5, constants
    ``(0.01 max_val)^2`` and ``(0.03 max_val)^2``), averaged over channels: images must be at least
    ``window_size`` (odd) pixels a side. At most 1."""
    x, ref = _check_pair(x, ref)
    if window_size < 1 or window_size % 2 == 0 or min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs an odd window_size no larger than the images, got window_size={window_size} "
                         f"for {x.shape[-2]}x{x.shape[-1]} images; pass a smaller odd window_size")
    smap = kornia.metrics.ssim(x, ref, window_size, max_val=_data_range(max_val), padding="valid")
    return smap.flatten(1).mean(dim=1)


def _data_range(max_val: float) -> float:
    """``max_val`` as the Python float kornia insists on: an int (255, the natural spelling for
    images in [0, 255]) stopped ssim with kornia's TypeError. It must be finite and above 0."""
    value = float(max_val)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"max_val must be a finite number above 0 (the images' data range), got {max_val!r}")
    return value


def _check_pair(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``ref`` in one floating dtype of at least float32 (float16 images scored in float16 were
    0.2 dB off at 40 dB, and their SSIM rounded to 1), or a ValueError unless both are ``(B, C, H, W)`` of one
    shape."""
    if x.dim() != 4 or x.shape != ref.shape:
        raise ValueError(f"images must both be (B, C, H, W) of one shape, got {tuple(x.shape)} "
                         f"and {tuple(ref.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, ref.dtype), torch.float32)
    return x.to(dtype), ref.to(dtype)


def _check_pixels(name: str, value: int) -> None:
    if not rng.is_integer(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (pixels), got {value!r}")


def _window_ssd(x: torch.Tensor, ref: torch.Tensor, radius: int, border: int) -> torch.Tensor:
    """SSD between ``ref[border:-border]`` and ``x`` moved by every integer shift ``(dy, dx)`` in
    ``[-radius, radius]^2`` (``x`` sampled at ``p + shift``), ``(B, 2r+1, 2r+1)`` float64, summed over
    channels: ``sum x_shifted^2 - 2 corr + sum ref^2``, the first two for all shifts at once by FFT (0.1 s
    for a 1280x720 RGB image on one thread; the direct correlation by conv2d took 0.8 s). In float64
    because the terms are each near the images' energy and cancel: float32 would err by ~1e-7 of it."""
    hh, ww = x.shape[-2:]
    h, w, side = hh - 2 * border, ww - 2 * border, 2 * radius + 1
    lo = border - radius
    region = x[..., lo:hh - lo, lo:ww - lo].double()  # every window position the shifts visit
    target = ref[..., border:hh - border, border:ww - border].double()
    # Circular correlation over a zero-padded, FFT-friendly size at least the region's (a 710-point FFT,
    # 2 * 5 * 71, took 2.5 times as long as a 720-point one): at lags 0..2r the
    # window never wraps (p + lag < h + 2r), and lag (i, j) is shift (i - r, j - r).
    size = [fast_length(region.shape[-2]), fast_length(region.shape[-1], R2C_MULTIPLE)]
    spec = torch.fft.rfft2(region.square().sum(1), s=size) * torch.fft.rfft2(target.new_ones(h, w), s=size).conj()
    spec -= 2 * (torch.fft.rfft2(region, s=size) * torch.fft.rfft2(target, s=size).conj()).sum(1)
    return torch.fft.irfft2(spec, s=size)[:, :side, :side] + target.square().sum((1, 2, 3))[:, None, None]


def shift_image(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Resample ``x (B, C, H, W)`` float at ``p + shift`` (``shift (B, 2)`` as ``(dy, dx)`` pixels, any
    real value, cast to ``x``'s dtype and device) by bicubic interpolation; samples outside the image
    repeat the border; a whole-pixel shift moves the pixels exactly (unless ``shift`` needs a gradient).
    Returns ``(B, C, H, W)`` like ``x``, not clipped (bicubic overshoots)."""
    b, _, hh, ww = x.shape
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)  # (grid_sample wants one dtype)
    ys = torch.arange(hh, dtype=x.dtype, device=x.device)
    xs = torch.arange(ww, dtype=x.dtype, device=x.device)
    gy = (ys[None, :, None] + shift[:, 0, None, None]) * (2.0 / max(hh - 1, 1)) - 1.0
    gx = (xs[None, None, :] + shift[:, 1, None, None]) * (2.0 / max(ww - 1, 1)) - 1.0
    grid = torch.stack([gx.expand(b, hh, ww), gy.expand(b, hh, ww)], dim=-1)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=True)
    # A whole-pixel shift, taken exactly: the normalised coordinates round, so grid_sample changed even the zero
    # shift by ~1e-7, and a restoration equal to the sharp image scored 127 dB, not an infinite PSNR. (Not where a
    # gradient in the shift is wanted: the exact path has none, and grid_sample's is the one to follow.)
    whole = (shift == shift.round()).all(1)
    if whole.any() and not (torch.is_grad_enabled() and shift.requires_grad):
        iy = (ys[None] + shift[:, :1]).clamp(0, hh - 1).long()[:, None, :, None].expand_as(x)
        ix = (xs[None] + shift[:, 1:]).clamp(0, ww - 1).long()[:, None, None, :].expand_as(x)
        out = torch.where(whole[:, None, None, None], x.gather(2, iy).gather(3, ix), out)
    return out


def align(x: torch.Tensor, ref: torch.Tensor, radius: int = 10, border: int = 15,
          subpixel: tuple[float, ...] = (0.25, 0.05)) -> tuple[torch.Tensor, torch.Tensor]:
    """Best translation of ``x`` onto ``ref``, minimising the squared error inside ``border``.

    An exhaustive integer search in ``[-radius, radius]^2``, then for each step in ``subpixel`` a
    grid search of ``+-3`` steps around the current best, resampled bicubically (the candidates by
    a separable filter that equals :func:`shift_image` to float rounding, the result by
    :func:`shift_image` itself).

    Args:
        x, ref: ``(B, C, H, W)``, same shape, dtype and device, sides above ``2 * border``.
        radius, border: integers >= 0 (pixels), ``border >= radius + 1`` so shifted windows stay inside.
        subpixel: refinement steps in pixels, coarse to fine.

    Returns:
        ``(aligned x (B, C, H, W), shift (B, 2))`` in ``x``'s dtype with ``aligned[p] = x[p + shift]``,
        ``shift`` within ``radius + 3 * sum(subpixel)`` of 0.

    Raises:
        ValueError: shapes differ, bad ``radius``/``border``, images too small, or non-finite values.
    """
    _check_pair(x, ref)
    _check_pixels("radius", radius)
    _check_pixels("border", border)
    if border < radius + 1:
        raise ValueError(f"border ({border}) must exceed the shift radius ({radius}) so shifted windows "
                         "stay inside the image")
    if min(x.shape[-2:]) <= 2 * border:
        raise ValueError(f"image {tuple(x.shape[-2:])} too small for a {border} px border")
    for name, image in (("x", x), ("ref", ref)):  # (NaN compares false everywhere: the search gave (-r, -r))
        if not torch.isfinite(image).all():
            raise ValueError(f"{name} holds NaN or infinite values, so no shift can be scored; "
                             "align finite images")
    b = x.shape[0]
    if b == 0 or x.shape[1] == 0:  # (no images, or no channels: conv2d refuses zero groups)
        return x.clone(), x.new_zeros(b, 2)
    ssd = _window_ssd(x, ref, radius, border).flatten(1)
    # Shifts whose SSDs agree to 1e-12 of the energy that cancels in them count as tied, and the first in
    # row-major order wins, as argmin's first of exact ties did: the FFT's rounding (~3e-16 of that
    # energy, measured) must not pick among shifts that tie exactly, as those of a flat image do.
    scale = (x.double().square() + ref.double().square()).flatten(1).sum(1, keepdim=True)
    best = (ssd <= ssd.amin(1, keepdim=True) + 1e-12 * scale).byte().argmax(dim=1)
    side = 2 * radius + 1
    shift = torch.stack([best // side - radius, best % side - radius], dim=1).to(x.dtype)
    for step in subpixel:
        shift = _refine(x, ref, shift, step, border)
    return shift_image(x, shift), shift


def _refine(x: torch.Tensor, ref: torch.Tensor, shift: torch.Tensor, step: float, border: int) -> torch.Tensor:
    """One sub-pixel step of :func:`align`: the best ``(B, 2)`` of the 7 x 7 candidates ``shift + step *
    (i, j)``, ``|i|, |j| <= 3``, by squared error inside ``border``. The candidates are resampled by
    :func:`_translations` (separable, the scored window only), a row of 7 at a time (all 49 at once
    held 2.5 GB for one 1280x720 RGB image): with one :func:`shift_image` of the whole image each,
    the two steps took 3.7 s of align's 4.5 s on such an image on one thread; now about 1.2 s."""
    b, _, hh, ww = x.shape
    offsets = step * torch.arange(-3, 4, dtype=x.dtype, device=x.device)
    dy, dx = shift[:, :1] + offsets, shift[:, 1:] + offsets  # (B, 7) each, as shift_image would be given them
    target = ref[..., border:hh - border, border:ww - border][:, None]  # (B, 1, C, h, w)
    # (in place: the copies are ours, and allocating each difference and square of 7 copies cost as much
    # as resampling them)
    errors = torch.cat([moved.sub_(target).square_().sum((2, 3, 4)) for moved in _translations(x, dy, dx, border)],
                       dim=1)  # (B, 49), candidates in row-major order: argmin keeps the first of ties
    best = errors.argmin(dim=1)
    # The shift found so far (the centre candidate, 24) stays where it ties the best, as align's integer
    # search counts ties (within 1e-12 of the energy; the resampling rounds): every candidate of a flat
    # image ties, and the first, 3 steps off, took a whole-pixel shift to a fractional one, whose bicubic
    # rounding scored a flat restoration equal to its sharp image at 132 dB, not an infinite PSNR.
    scale = (x.square().sum((1, 2, 3)) + ref.square().sum((1, 2, 3))).to(errors.dtype)
    best = torch.where(errors[:, 24] <= errors.gather(1, best[:, None])[:, 0] + 1e-12 * scale, 24, best)
    return torch.stack([dy.gather(1, (best // 7)[:, None])[:, 0], dx.gather(1, (best % 7)[:, None])[:, 0]], dim=1)


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """The 4 bicubic tap weights ``(..., 4)`` for samples at ``floor(s) - 1 .. floor(s) + 2`` of a position
    ``s`` with ``t = s - floor(s)`` in ``[0, 1)``: torch's ``get_cubic_upsample_coefficients`` (Keys' kernel,
    A = -0.75), which ``grid_sample`` uses, so the two resample alike."""
    a = -0.75
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1
    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def _taps(shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For shifts ``(B, m)`` along one axis: each image's lowest first tap ``(B,)`` (``floor - 1``, int64) and
    ``(B, m, L)`` filters over the ``L`` samples from there, which hold each shift's 4 cubic weights at its
    own integer offset (the m shifts of an image differ by a few pixels at most, so ``L`` stays small)."""
    whole = shifts.floor()
    rel = (whole - whole.amin(1, keepdim=True)).long()  # (the floor of a negative shift is below it: -0.3 -> -1 + 0.7)
    kernels = shifts.new_zeros(*shifts.shape, int(rel.max()) + 4)
    kernels.scatter_(2, rel[..., None] + torch.arange(4, device=shifts.device), _cubic_weights(shifts - whole))
    return whole.amin(1).long() - 1, kernels


def _window(x: torch.Tensor, first: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``size`` samples of ``x`` along ``dim`` from index ``first[b]`` for image ``b``, indices outside the
    image clamped to its edge: ``grid_sample``'s ``padding_mode="border"``, which clamps each tap."""
    index = (first[:, None] + torch.arange(size, device=x.device)).clamp(0, x.shape[dim] - 1)
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = size
    return x.gather(dim, index.reshape(shape).expand(*x.shape[:dim], size, *x.shape[dim + 1:]))


def _translations(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, border: int = 0):
    """``x (B, C, H, W)`` resampled at ``p + (dy[:, i], dx[:, j])`` for every ``i`` and ``j`` (``dy (B, m)``,
    ``dx (B, n)``, pixels, in ``x``'s dtype), over ``x[..., border:H - border, border:W - border]``: yields,
    for each ``i`` in turn, the ``(B, n, C, h, w)`` copies for all ``j``.

    :func:`shift_image` with shift ``(dy[:, i], dx[:, j])``, cropped, up to float rounding (its sampling
    grid is rounded through ``[-1, 1]``, so on large images it strays by ~1e-4 px): a translation is one
    4-tap cubic filter per axis, with border replication, so m resamplings along y then n along x give
    the m * n copies, each for a few operations a pixel, where ``grid_sample`` makes each copy alone
    and, for :func:`_refine`, of the whole image. Filters are per-image depthwise convolutions over a
    window cut (with clamped indices) once per image.
    """
    b, c, hh, ww = x.shape
    h, w = hh - 2 * border, ww - 2 * border
    top, ky = _taps(dy)
    left, kx = _taps(dx)
    window = _window(_window(x, top + border, h + ky.shape[-1] - 1, 2), left + border, w + kx.shape[-1] - 1, 3)
    # groups = B * C: image b's channels are each filtered by image b's own m (then n) filters
    ky = ky[:, None].expand(b, c, *ky.shape[1:]).reshape(-1, 1, ky.shape[-1], 1)
    kx = kx[:, None].expand(b, c, *kx.shape[1:]).reshape(-1, 1, 1, kx.shape[-1])
    rows = F.conv2d(window.reshape(1, b * c, *window.shape[-2:]), ky, groups=b * c).reshape(b, c, dy.shape[1], h, -1)
    for i in range(dy.shape[1]):
        moved = F.conv2d(rows[:, :, i].reshape(1, b * c, h, -1), kx, groups=b * c)
        yield moved.reshape(b, c, dx.shape[1], h, w).transpose(1, 2)


def levin_scores(x: torch.Tensor, ref: torch.Tensor, radius: int = 10, border: int = 15,
                 max_val: float = 1.0) -> dict[str, torch.Tensor]:
    """Levin et al. 2009 protocol: align up to a shift, crop ``border``, then score.

    Args:
        x: restored ``(B, C, H, W)``, clipped to ``[0, max_val]`` after the alignment; ref: sharp
            ``(B, C, H, W)``, same shape, dtype and device.
        radius, border: integers >= 0, in pixels; ``radius = 0`` skips the alignment, else ``border >
            radius``; ``border`` must leave at least 11 px a side (the SSIM window).

    Returns:
        dict of ``(B,)`` tensors: ``psnr`` (dB), ``ssim``, ``ssd`` (sum of squared errors over the
        cropped pixels and channels, in the images' units: for ``[0, 1]`` images, those of Levin's
        scripts, which read images with ``im2double``; the quantity the error ratio divides), and
        ``shift`` ``(B, 2)`` (dy, dx, pixels) that was applied.
    """
    _check_pair(x, ref)
    _check_pixels("radius", radius)
    side = min(x.shape[-2:])
    if not rng.is_integer(border) or border < 0 or side - 2 * border < SSIM_WINDOW:
        raise ValueError(f"border must be an integer >= 0 that leaves the {SSIM_WINDOW} px SSIM window of "
                         f"{x.shape[-2]}x{x.shape[-1]} images, got {border!r}; pass a border of at most "
                         f"{max(side - SSIM_WINDOW, 0) // 2}")
    if radius > 0:
        x, shift = align(x, ref, radius=radius, border=border)
    else:
        shift = x.new_zeros(x.shape[0], 2)
    if border:
        x = x[..., border:-border, border:-border]
        ref = ref[..., border:-border, border:-border]
    x = x.clamp(0.0, max_val)
    return {"psnr": psnr(x, ref, max_val), "ssim": ssim(x, ref, max_val=max_val),
            "ssd": (x - ref).square().flatten(1).sum(1), "shift": shift}


def error_ratio(ssd_estimated: torch.Tensor, ssd_true_kernel: torch.Tensor) -> torch.Tensor:
    """Levin's error ratio: the restoration's squared error over that of the same non-blind
    deconvolution run with the true kernel (below 2-3 counts as a success). ``(B,)`` from two
    broadcastable tensors; a true-kernel error of 0 counts as 1e-12."""
    return ssd_estimated / ssd_true_kernel.clamp_min(1e-12)


def _as_batch(k: torch.Tensor) -> torch.Tensor:
    if k.dim() == 2:
        return k[None]
    if k.dim() == 4 and k.shape[1] == 1:
        return k[:, 0]
    if k.dim() != 3:
        raise ValueError(f"kernels must be (h, w), (N, h, w) or (N, 1, h, w), got {tuple(k.shape)}")
    return k


def _common_canvas(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad two kernel batches, centred, to one odd size large enough for both."""
    h = max(a.shape[-2], b.shape[-2]) | 1
    w = max(a.shape[-1], b.shape[-1]) | 1

    def place(k):
        top, left = (h - k.shape[-2]) // 2, (w - k.shape[-1]) // 2
        return F.pad(k, (left, w - k.shape[-1] - left, top, h - k.shape[-2] - top))
    return place(a), place(b)


def kernel_similarity(k_est: torch.Tensor, k_true: torch.Tensor) -> dict[str, torch.Tensor]:
    """How close estimated kernels are to the true ones, forgiving a translation.

    Args:
        k_est, k_true: ``(h, w)``, ``(N, h, w)`` or ``(N, 1, h, w)``, non-negative, on one device (``k_est``
            is cast to ``k_true``'s dtype); sizes may differ (zero-padded), and one kernel of either
            is compared with each of the other's.

    Returns:
        dict of ``(N,)`` in ``k_true``'s dtype: ``ncc`` the maximum over all shifts of the normalised cross-correlation
        (1 for identical kernels up to translation and scale), and ``centred_error`` the sum of
        squared differences once each kernel is normalised to sum 1 and moved so its centroid sits
        at the canvas centre (bicubic resampling).
    """
    a, b = _common_canvas(_as_batch(k_est).to(k_true.dtype), _as_batch(k_true))
    if a.shape[0] != b.shape[0]:
        if 1 not in (a.shape[0], b.shape[0]):
            raise ValueError(f"kernel_similarity: {a.shape[0]} estimated kernels against {b.shape[0]} true ones; "
                             "give as many of each, or one of either to compare with all")
        a, b = torch.broadcast_tensors(a, b)
    n, h, w = a.shape
    if n == 0:  # (conv2d refuses zero groups)
        return {"ncc": a.new_zeros(0), "centred_error": a.new_zeros(0)}
    full = F.conv2d(F.pad(a[None], (w - 1, w - 1, h - 1, h - 1)), b[:, None], groups=n)[0]
    ncc = full.flatten(1).amax(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)).clamp_min(1e-12)

    def centred(k):
        h, w = k.shape[-2:]
        k = k / k.sum((-2, -1), keepdim=True).clamp_min(1e-12)
        ys = torch.arange(h, dtype=k.dtype, device=k.device)
        xs = torch.arange(w, dtype=k.dtype, device=k.device)
        cy, cx = (k.sum(-1) * ys).sum(-1), (k.sum(-2) * xs).sum(-1)
        shift = torch.stack([cy - (h - 1) / 2, cx - (w - 1) / 2], dim=1)
        return shift_image(k[:, None], shift)[:, 0]
    # Resample into a canvas with room so the moved mass is not clipped.
    a2, b2 = (F.pad(k, (w // 2, w // 2, h // 2, h // 2)) for k in (a, b))
    err = (centred(a2) - centred(b2)).square().flatten(1).sum(1)
    return {"ncc": ncc, "centred_error": err}


__all__ = ["psnr", "ssim", "align", "shift_image", "levin_scores", "error_ratio", "kernel_similarity"]
