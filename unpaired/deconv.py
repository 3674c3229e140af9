"""Non-blind deconvolution: Wiener, Richardson-Lucy (optionally TV-regularised) and a hyper-Laplacian
prior solved by half-quadratic splitting (Krishnan & Fergus, NIPS 2009).

All solvers take a blurry batch ``y (B, C, H, W)`` (float32/float64, any device) and kernels as
:func:`blursynth.blur.blur` takes them (``(h, w)``, ``(B|1, h, w)`` or ``(B|1, C|1, h, w)``, centre at
``(h // 2, w // 2)``, true convolution; cast to ``y``'s dtype and device), and return the restored
``(B, C, H, W)`` in ``y``'s dtype on its device, not clipped (expect values slightly outside ``[0, 1]``).
Kernels must be finite, non-negative and each sum to 1, as the package's kernels do
(:func:`check_kernel`): the solvers take the kernel as the whole blur, so one summing to 0.5 would
double the brightness and one summing to 0 has no inverse. Bad images, kernels or parameters raise
ValueError. Every step is a torch operation, so the solvers are differentiable in ``y`` and in the
kernel.

Photographs are not periodic, while the solvers work in the Fourier domain (circular convolution).
:func:`prepare` therefore pads the image by replicating its border, enlarges the pad to a fast FFT
size, and tapers the padded frame towards a circularly blurred copy of itself (Reeves-style edge
tapering, as MATLAB's ``edgetaper``), so the wrap-around seam carries no hard edge to ring from.
The padding is cropped off the result.
"""

from __future__ import annotations

import math

import torch

from blursynth import rng
from blursynth.blur import R2C_MULTIPLE, as_kernel4d, fast_length, kernel_spectrum

# ---------------------------------------------------------------------------------------------
# Input checks, shared by the solvers

# Normalised float32 kernels sum to 1 within about 1e-6; kernels stored as files (Levin's, say)
# within about 1e-4. Also the rule of unpaired.evaluate.load_kernel.
KERNEL_SUM_TOLERANCE = 1e-3


def check_kernel(kernel: torch.Tensor, name: str = "kernel") -> None:
    """Raise ValueError unless every ``(h, w)`` kernel of ``kernel (..., h, w)`` (any dtype and device;
    a batch of none passes) is finite, non-negative (down to -1e-6, float rounding) and sums to 1
    within :data:`KERNEL_SUM_TOLERANCE`; ``name`` names it in the message."""
    k = kernel.detach()
    if k.dim() < 2:
        raise ValueError(f"{name} must be (h, w) or a batch (..., h, w) of kernels, got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise ValueError(f"{name} has NaN or infinite values")
    if (k < -1e-6).any():
        raise ValueError(f"{name} has negative values (down to {float(k.min()):.3g}); blur kernels are non-negative")
    error = (k.sum(dim=(-2, -1)) - 1.0).flatten()
    if error.numel() == 0:  # a batch of no kernels (for a batch of no images)
        return
    worst = int(error.abs().argmax())
    total = 1.0 + float(error[worst])
    if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
        fix = ("normalise it (kernel / kernel.sum(dim=(-2, -1), keepdim=True))" if total > KERNEL_SUM_TOLERANCE
               else "it holds no blur to undo; pass the kernel that blurred the image")
        raise ValueError(f"{name} sums to {total:.6g}, not 1; {fix}")


def _checked_kernel(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` as ``(Bk, Ck, h, w)`` for ``y`` (:func:`blursynth.blur.as_kernel4d`), once both are
    checked: ``y`` a finite float ``(B, C, H, W)`` tensor at least the kernel's size and 2x2 pixels,
    the kernels as :func:`check_kernel` wants them."""
    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a (B, C, H, W) tensor, got {got}; for one (C, H, W) image pass y[None]")
    if y.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"y must be float32 or float64, got {y.dtype}; convert it (8-bit images: y.float() / 255)")
    _check_image_size(y, 2, 2)
    if not torch.isfinite(y.detach()).all():  # (else a parameter estimated from y, or the result, is NaN)
        raise ValueError("y has NaN or infinite values; deconvolve finite images")
    k = as_kernel4d(kernel, y)
    check_kernel(k)
    _check_image_size(y, *k.shape[-2:], what=f"the {k.shape[-2]}x{k.shape[-1]} kernel")
    return k


def _check_image_size(y: torch.Tensor, h: int, w: int, what: str = "2x2") -> None:
    """Raise ValueError unless ``y (..., H, W)`` is at least ``h x w`` pixels: the noise estimate
    needs 2x2 (its Haar band of a 1x1 image is empty), and an image smaller than the kernel cannot
    hold the blur to undo."""
    if y.shape[-2] < h or y.shape[-1] < w:
        raise ValueError(f"y is {y.shape[-2]}x{y.shape[-1]} pixels, smaller than {what}; deconvolve images "
                         f"of at least {max(h, 2)}x{max(w, 2)} pixels")


def _check_positive(name: str, value: float | torch.Tensor, floor: float = 0.0, strict: bool = True) -> None:
    """Raise ValueError unless ``value`` (a number or every element of a tensor) is finite and above
    ``floor`` (or at least ``floor`` when not ``strict``)."""
    v = torch.as_tensor(value).detach()
    ok = torch.isfinite(v).all() and ((v > floor) if strict else (v >= floor)).all()
    if not ok:
        got = value if v.numel() == 1 else f"values from {float(v.min()):.3g} to {float(v.max()):.3g}"
        raise ValueError(f"{name} must be finite and {'above' if strict else 'at least'} {floor:g}, got {got}")


def _check_count(name: str, value: int, floor: int) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) of at least ``floor``."""
    if not rng.is_integer(value) or value < floor:
        raise ValueError(f"{name} must be an integer >= {floor}, got {value!r}")


def _check_per_image(name: str, value: float | torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``value`` is a number or a tensor broadcastable to ``(B, C, 1, 1)`` of ``y``."""
    if not isinstance(value, torch.Tensor):
        return
    want = (*y.shape[:2], 1, 1)
    try:
        ok = torch.broadcast_shapes(tuple(value.shape), want) == want
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a number or a tensor broadcastable to (B, C, 1, 1) = {want}, got shape "
                         f"{tuple(value.shape)}; for one value per image pass {name}.view(-1, 1, 1, 1)")


def _in_dtype_of(value: float | torch.Tensor, y: torch.Tensor) -> float | torch.Tensor:
    """A per-image parameter in ``y``'s dtype (a number as it is): a float64 tensor of one value per image
    (``torch.from_numpy`` of NumPy's default type) promoted a float32 ``y``'s solution to float64, which
    the solvers promise in ``y``'s dtype."""
    return value.to(y.dtype) if isinstance(value, torch.Tensor) else value


def _image_by_image(solver, y: torch.Tensor, k: torch.Tensor, **params) -> torch.Tensor:
    """``solver(y, k, **params)`` run on each image of ``y (B, C, H, W)`` alone, with its kernel of
    ``k (B|1, C|1, h, w)`` and its slice of each per-image parameter ``(B, C|1, 1, 1)``, concatenated.

    The solvers call this on the CPU, where an image's bytes otherwise depended on its batch (seen on an
    H200 machine's CPU, torch 2.11: a 255x255 image deconvolved alone and in a batch of 4 differed by up
    to 4e-7 with wiener and hyper_laplacian, 1e-5 with richardson_lucy, also with its planes transformed
    one at a time): element-wise loops and transforms round by where an element falls in the tensor."""
    def item(value, i):
        per_image = isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] > 1
        return value[i:i + 1] if per_image else value
    return torch.cat([solver(y[i:i + 1], k[i:i + 1] if k.shape[0] > 1 else k,
                             **{name: item(value, i) for name, value in params.items()}) for i in range(y.shape[0])])


# ---------------------------------------------------------------------------------------------
# Boundary handling


def _taper_weights(kernel: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """1-D taper along one image axis from the kernel's projection on that axis: 0 at the image
    border, rising to 1 about one kernel length inside (1 minus the projection's normalised
    circular autocorrelation). ``(Bk, Ck, size)``."""
    proj = kernel.sum(dim=dim)  # (Bk, Ck, n): the kernel's profile along the other axis
    spec = torch.fft.rfft(proj, n=size - 1, dim=-1)
    auto = torch.fft.irfft(spec.abs() ** 2, n=size - 1, dim=-1)
    auto = torch.cat([auto, auto[..., :1]], dim=-1)  # symmetric: equal at both ends
    return 1.0 - auto / auto.amax(dim=-1, keepdim=True).clamp_min(1e-12)


def edgetaper(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blend the image towards its circularly blurred copy near the borders.

    Args:
        image: ``(B, C, H, W)`` float, any device.
        kernel: as in :func:`blursynth.blur.blur` (moved to the image's device and dtype).

    Returns:
        ``(B, C, H, W)`` in the image's dtype: ``w * image + (1 - w) * blur_circular(image)`` with ``w`` the separable
        taper of :func:`_taper_weights`, so the image is smooth across its periodic seam.
    """
    k = as_kernel4d(kernel, image)
    hh, ww = image.shape[-2:]
    weight = _taper_weights(k, hh, dim=-1)[..., :, None] * _taper_weights(k, ww, dim=-2)[..., None, :]
    blurred = torch.fft.irfft2(torch.fft.rfft2(image) * kernel_spectrum(k, (hh, ww)), s=(hh, ww))
    return weight * image + (1.0 - weight) * blurred


def prepare(y: torch.Tensor, kernel: torch.Tensor, margin: int | None = None,
            taper_iterations: int = 3) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``y`` (replicated border) to a fast FFT size with at least ``margin`` pixels per side
    (default: the kernel's larger side; an integer >= 0), then edge-taper it ``taper_iterations`` times.

    Returns ``(padded (B, C, H', W'), (top, left))`` (``H' >= H + 2 * margin``, ``W'`` a multiple of
    :data:`blursynth.blur.R2C_MULTIPLE`; ``y``'s dtype and device); crop the solution with :func:`crop`.
    """
    k = as_kernel4d(kernel, y)
    h, w = k.shape[-2:]
    margin = max(h, w) if margin is None else margin
    _check_count("margin", margin, 0)  # (a negative one gave a frame smaller than y)
    hh, ww = y.shape[-2:]
    n, m = fast_length(hh + 2 * margin), fast_length(ww + 2 * margin, R2C_MULTIPLE)
    top, left = (n - hh) // 2, (m - ww) // 2
    padded = torch.nn.functional.pad(y, (left, m - ww - left, top, n - hh - top), mode="replicate")
    for _ in range(taper_iterations):
        padded = edgetaper(padded, k)
    return padded, (top, left)


def crop(x: torch.Tensor, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The ``size = (H, W)`` window at ``offset = (top, left)`` of ``x (..., H', W')`` (a view, not a copy)."""
    return x[..., offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]]


# ---------------------------------------------------------------------------------------------
# Fourier-domain building blocks


def _gradient_spectra(size: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft2 of the forward differences ``x[j+1] - x[j]`` along x and y (periodic), ``(H, W//2+1)``."""
    n, m = size
    dx = like.new_zeros(n, m)
    dx[0, 0], dx[0, -1] = -1.0, 1.0
    dy = like.new_zeros(n, m)
    dy[0, 0], dy[-1, 0] = -1.0, 1.0
    return torch.fft.rfft2(dx), torch.fft.rfft2(dy)


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic forward differences along x and y."""
    return x.roll(-1, -1) - x, x.roll(-1, -2) - x


def _grad_adjoint(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (minus the divergence)."""
    return (gx.roll(1, -1) - gx) + (gy.roll(1, -2) - gy)


def estimate_noise(y: torch.Tensor) -> torch.Tensor:
    """Noise standard deviation per image and channel, ``(B, C)``, from the median absolute value
    of the finest diagonal Haar detail (Donoho's MAD estimator; blur leaves that band nearly
    empty, so what remains is noise). Floored at the 8-bit quantisation noise ``1/255/sqrt(12)``.
    ``y (..., C, H, W)`` float in ``[0, 1]``, at least 2x2 pixels; the result is in the same units,
    dtype and device (one value per leading index and channel)."""
    if not y.is_floating_point():  # (integer differences wrap around: uint8 0 - 1 is 255)
        raise ValueError(f"y must be a float tensor in [0, 1], got {y.dtype}; convert it (8-bit images: y.float() / 255)")
    _check_image_size(y, 2, 2)
    d = (y[..., :-1, :-1] - y[..., 1:, :-1] - y[..., :-1, 1:] + y[..., 1:, 1:]) / 2.0
    sigma = d.abs().flatten(-2).median(dim=-1).values / 0.6745
    return sigma.clamp_min(1.0 / 255.0 / math.sqrt(12.0))


def estimate_nsr(y: torch.Tensor) -> torch.Tensor:
    """Noise-to-signal ratio for :func:`wiener` with the gradient prior, ``(B, C, 1, 1)``: noise
    variance over the mean squared gradient of ``y`` (the signal model is a ``1/|f|^2`` power
    spectrum, whose gradient is white with that energy). ``y (B, C, H, W)`` float, at least 2x2; the
    result is in its dtype and on its device, unitless (a flat image gives a huge ratio, up to
    ``noise^2 / 1e-12``)."""
    gx, gy = _grad(y)
    signal = (gx.square() + gy.square()).mean(dim=(-2, -1))
    return (estimate_noise(y).square() / signal.clamp_min(1e-12))[..., None, None]


# ---------------------------------------------------------------------------------------------
# Solvers


def wiener(y: torch.Tensor, kernel: torch.Tensor, nsr: float | torch.Tensor | None = None,
           prior: str = "gradient", taper: bool = True) -> torch.Tensor:
    """Wiener deconvolution, ``X = conj(K) Y / (|K|^2 + nsr * P)``.

    Args:
        y: ``(B, C, H, W)`` blurry images.
        kernel: blur kernels, non-negative, each summing to 1 (see module docstring).
        nsr: noise-to-signal ratio (> 0), a float or a tensor broadcastable to ``(B, C, 1, 1)`` (on ``y``'s device); ``None``
            estimates it per image and channel with :func:`estimate_nsr`.
        prior: ``"gradient"`` (``P = |Dx|^2 + |Dy|^2``: natural images' ``1/|f|^2`` spectrum, the
            better choice for photographs) or ``"flat"`` (``P = 1``, the textbook white-signal form).
        taper: pad and edge-taper first (:func:`prepare`); off only for truly periodic images.

    Returns:
        ``(B, C, H, W)`` restored images, ``y``'s dtype and device, not clipped.
    """
    if prior not in ("gradient", "flat"):
        raise ValueError(f"prior must be 'gradient' or 'flat', got {prior!r}")
    k = _checked_kernel(y, kernel)
    if nsr is not None:
        _check_positive("nsr", nsr)
        _check_per_image("nsr", nsr, y)
        nsr = _in_dtype_of(nsr, y)
    if y.numel() == 0:  # no images (or channels): MKL refuses FFTs of an empty batch
        return y.clone()
    if y.device.type == "cpu" and y.shape[0] > 1:  # an image's result must not depend on its batch
        return _image_by_image(wiener, y, k, nsr=nsr, prior=prior, taper=taper)
    if nsr is None:
        nsr = estimate_nsr(y)
        _check_positive("nsr", nsr)
    size = y.shape[-2:]
    yp, offset = prepare(y, k) if taper else (y, (0, 0))
    shape = yp.shape[-2:]
    kspec = kernel_spectrum(k, shape)
    if prior == "gradient":
        fdx, fdy = _gradient_spectra(shape, yp)
        reg = fdx.abs().square() + fdy.abs().square()
    else:
        reg = torch.ones((), dtype=yp.dtype, device=yp.device)
    spec = kspec.conj() * torch.fft.rfft2(yp) / (kspec.abs().square() + nsr * reg)
    return crop(torch.fft.irfft2(spec, s=shape), offset, size)


def _tv_gradient(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``div(grad x / |grad x|)``: the descent direction of total variation (Dey et al. 2006)."""
    gx, gy = _grad(x)
    norm = torch.sqrt(gx.square() + gy.square() + eps ** 2)
    return -_grad_adjoint(gx / norm, gy / norm)


def richardson_lucy(y: torch.Tensor, kernel: torch.Tensor, iterations: int = 50, tv: float = 0.0,
                    taper: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Richardson-Lucy deconvolution (the Poisson maximum-likelihood fixed point), optionally with
    total-variation regularisation (``x <- x * K^T(y / Kx) / (1 - tv * div(grad x / |grad x|))``).

    Args:
        y: ``(B, C, H, W)`` non-negative blurry images (negative values are clamped to 0).
        kernel: non-negative kernels summing to 1 (see module docstring).
        iterations: fixed-point iterations, an integer >= 0 (more = sharper and noisier unless
            ``tv > 0``; 0 returns the input clamped at ``eps``, the floor the iterations start from).
        tv: TV weight (>= 0), ``0`` for plain RL; about ``0.002``-``0.01`` for images in ``[0, 1]``.
        taper: pad and edge-taper first (:func:`prepare`).
        eps: floor of the divisions (> 0), in image units.

    Returns:
        ``(B, C, H, W)`` restored images, non-negative (not clipped at 1), ``y``'s dtype and device.
    """
    _check_count("iterations", iterations, 0)
    _check_positive("tv", tv, strict=False)
    _check_positive("eps", eps)
    k = _checked_kernel(y, kernel)
    if y.numel() == 0:  # no images (or channels): MKL refuses FFTs of an empty batch
        return y.clone()
    if y.device.type == "cpu" and y.shape[0] > 1:  # an image's result must not depend on its batch
        return _image_by_image(richardson_lucy, y, k, iterations=iterations, tv=tv, taper=taper, eps=eps)
    size = y.shape[-2:]
    yp, offset = prepare(y.clamp_min(0.0), k) if taper else (y.clamp_min(0.0), (0, 0))
    shape = yp.shape[-2:]
    kspec = kernel_spectrum(k, shape)

    def apply(x: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * spec, s=shape)

    x = yp.clamp_min(eps)
    for _ in range(iterations):
        ratio = yp / apply(x, kspec).clamp_min(eps)
        # Dey et al.: dividing by 1 - tv * div(...) of the current iterate (not of the half-updated
        # x * K^T(y / Kx), which the TV term was once taken of); keep the denominator positive.
        denom = (1.0 - tv * _tv_gradient(x, eps=1e-3)).clamp_min(0.1) if tv > 0 else None
        x = x * apply(ratio, kspec.conj()).clamp_min(0.0)
        if tv > 0:
            x = x / denom
    return crop(x, offset, size)


def shrink_hyper_laplacian(v: torch.Tensor, beta: float, alpha: float, newton_steps: int = 12) -> torch.Tensor:
    """Per-element minimiser of ``|w|^alpha + beta/2 (w - v)^2`` (the w-step of the splitting).

    ``alpha = 1`` is soft thresholding and ``alpha = 2`` a linear shrink; for ``0 < alpha < 1`` the
    non-zero candidate ``r = |w|`` is the larger root of ``r - |v| + (alpha/beta) r^(alpha-1) = 0``
    (for alpha = 1/2 and 2/3 the cubic and quartic of Krishnan & Fergus once ``r = u^2`` or
    ``u^3``), found by Newton's method from ``r = |v|``: the function is convex on ``r > 0``, so the
    iterates fall monotonically onto that root. It is then compared with ``w = 0``. For
    ``1 < alpha < 2`` that root is unique and is bisected.

    Args:
        v: any shape, float. beta: splitting weight (> 0). alpha: exponent in ``(0, 2]``.

    Returns:
        ``w`` of the shape, dtype and device of ``v``.
    """
    if not 0 < alpha <= 2:
        raise ValueError(f"alpha must be in (0, 2], got {alpha}")
    _check_positive("beta", beta)
    if alpha == 2:
        return v * (beta / (beta + 2.0))
    if alpha == 1:
        return torch.sign(v) * (v.abs() - 1.0 / beta).clamp_min(0.0)
    a = v.abs()
    c = alpha / beta
    if alpha > 1:
        # Here g is increasing and concave on r > 0, from -|v| at 0 to >= 0 at |v|: its one root in
        # [0, |v|] is the minimiser (w = 0 only for v = 0). r_min below has a negative base for
        # alpha > 1 (a complex number: a crash, or at 1.5 a wrong clamp) and Newton from |v| would
        # overshoot below 0, so bisect; a last Newton step from the (detached) bracket carries the
        # gradient dr/d|v| = 1 / g'(r) of the root.
        lo, hi, a0 = torch.zeros_like(a), a.detach(), a.detach()
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = mid - a0 + c * mid.pow(alpha - 1.0) > 0
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        r = hi
        dg = 1.0 + c * (alpha - 1.0) * r.pow(alpha - 2.0)  # (infinite at r = 0, v = 0: the step is 0)
        r = (r - (r - a + c * r.pow(alpha - 1.0)) / dg).clamp_min(0.0)
        return torch.sign(v) * r
    # Below r_min, g'(r) < 0: the larger root (if any) lies above it, so clamp there.
    r_min = (c * (1.0 - alpha)) ** (1.0 / (2.0 - alpha))
    r = a.clamp_min(r_min)
    for _ in range(newton_steps):
        g = r - a + c * r.pow(alpha - 1.0)
        dg = 1.0 + c * (alpha - 1.0) * r.pow(alpha - 2.0)
        r = (r - g / dg.clamp_min(1e-12)).clamp_min(r_min)
    cost_r = r.pow(alpha) + 0.5 * beta * (r - a).square()
    cost_0 = 0.5 * beta * a.square()
    return torch.where(cost_r < cost_0, torch.sign(v) * r, torch.zeros_like(v))


def shrink_lut(v: torch.Tensor, beta: float, alpha: float, size: int = 4096, dim: int | None = None) -> torch.Tensor:
    """:func:`shrink_hyper_laplacian` through a lookup table, as Krishnan & Fergus do for speed.

    The exact solution is computed once at ``size`` points of ``|v|`` in ``[0, max|v|]`` and
    interpolated linearly, except in the cell where ``w`` jumps from 0, where the cheaper of the two
    ends is taken. With ``dim``, each index along it (an image of a batch) gets a table over its own
    ``max|v|``, so its result does not depend on the rest of the batch. ``v`` any shape, float;
    returns ``w`` alike. ``beta > 0``, ``alpha`` in ``(0, 2]``, ``size >= 2``.
    """
    if not rng.is_integer(size) or size < 2:
        raise ValueError(f"size must be an integer >= 2 (table points), got {size!r}")
    if v.numel() == 0:
        return torch.zeros_like(v)
    a = v.abs().unsqueeze(0) if dim is None else v.abs().movedim(dim, 0)  # (items, ...)
    top = a.detach().reshape(len(a), -1).amax(1).to(torch.float64)  # a bound for each table, not part of the graph
    top = torch.where(top > 0, top, 1.0)  # (an item of zeros: any table gives it 0)
    grid = top[:, None] * torch.linspace(0.0, 1.0, size, dtype=torch.float64, device=v.device)
    table = shrink_hyper_laplacian(grid, beta, alpha).to(v.dtype).flatten()
    per_item = (-1,) + (1,) * (a.dim() - 1)
    pos = a * ((size - 1) / top).to(v.dtype).view(per_item)
    i0 = pos.floor().clamp(max=size - 2)
    frac = pos - i0
    i0 = i0.long() + (torch.arange(len(top), device=v.device) * size).view(per_item)
    lo, hi = table[i0], table[i0 + 1]
    r = lo * (1.0 - frac) + hi * frac
    # In the cell where w jumps from 0, interpolating would land between the two minima: take
    # whichever of 0 and the cell's non-zero end costs less at this v. (Only alpha < 1 jumps: for
    # alpha >= 1, w is continuous and the first non-zero cell is interpolated like the others.)
    jump = (lo == 0) & (hi > 0) & (alpha < 1)
    better = hi.pow(alpha) + 0.5 * beta * (hi - a).square() < 0.5 * beta * a.square()
    r = torch.where(jump, torch.where(better, hi, torch.zeros_like(hi)), r)
    r = r.squeeze(0) if dim is None else r.movedim(0, dim)
    return torch.sign(v) * r


def auto_lambda(y: torch.Tensor) -> torch.Tensor:
    """Data weight of :func:`hyper_laplacian` from the estimated noise, ``0.8 * sigma^-1.5`` per image
    and channel, ``(B, C, 1, 1)``. Fitted on synthetic edges at sigma 0.002-0.04 (the best weight on
    a grid fell from 1e4 to 1e2 along that range) and giving about 5000 on clean 8-bit photographs.
    ``y (B, C, H, W)`` float in ``[0, 1]``, at least 2x2; the result is in its dtype and on its device."""
    return (0.8 * estimate_noise(y).pow(-1.5))[..., None, None]


def hyper_laplacian(y: torch.Tensor, kernel: torch.Tensor, lam: float | torch.Tensor | None = None, alpha: float = 2.0 / 3.0,
                    beta0: float = 1.0, beta_max: float = 256.0, beta_rate: float = 2.0 * math.sqrt(2.0),
                    inner: int = 1, taper: bool = True, lut: bool = True) -> torch.Tensor:
    """Deconvolution with a hyper-Laplacian gradient prior, ``min_x lam/2 |k * x - y|^2 +
    sum |grad x|^alpha``, by half-quadratic splitting with continuation (Krishnan & Fergus 2009).

    Auxiliary gradients ``w`` take the per-pixel step :func:`shrink_hyper_laplacian`; ``x`` takes
    the closed-form Fourier step ``(conj(Dx) Wx + conj(Dy) Wy + lam/beta conj(K) Y) / (|Dx|^2 +
    |Dy|^2 + lam/beta |K|^2)``; ``beta`` grows from ``beta0`` by ``beta_rate`` until ``beta_max``.

    Args:
        y: ``(B, C, H, W)`` blurry images in ``[0, 1]`` (``lam`` is tuned for that scale).
        kernel: blur kernels, non-negative, each summing to 1 (see module docstring).
        lam: data weight (> 0), a float or a tensor broadcastable to ``(B, C, 1, 1)`` (on ``y``'s device); larger for less
            noise (about 800 at 1% noise, 5e3 for clean 8-bit photographs). ``None`` sets it from the
            estimated noise of each image (:func:`auto_lambda`).
        alpha: prior exponent, 2/3 or 1/2 as in the paper (any value in (0, 2]).
        beta0, beta_max, beta_rate: continuation schedule of the splitting weight (``beta0 > 0``,
            ``beta_max > beta0``, ``beta_rate > 1``).
        inner: alternations per beta value (an integer >= 1).
        taper: pad and edge-taper first (:func:`prepare`).
        lut: solve the w-step by lookup table (:func:`shrink_lut`, about 10x faster) instead of
            per-pixel Newton (:func:`shrink_hyper_laplacian`).

    Returns:
        ``(B, C, H, W)`` restored images, ``y``'s dtype and device, not clipped.
    """
    k = _checked_kernel(y, kernel)
    if not 0 < alpha <= 2:
        raise ValueError(f"alpha must be in (0, 2], got {alpha}")
    _check_positive("beta0", beta0)
    _check_positive("beta_max", beta_max, floor=beta0)  # (else no step runs and y comes back unchanged)
    _check_positive("beta_rate", beta_rate, floor=1.0)  # at 1 or below beta never reaches beta_max
    _check_count("inner", inner, 1)
    if lam is not None:
        _check_positive("lam", lam)
        _check_per_image("lam", lam, y)
        lam = _in_dtype_of(lam, y)
    if y.numel() == 0:  # no images (or channels): MKL refuses FFTs of an empty batch
        return y.clone()
    if y.device.type == "cpu" and y.shape[0] > 1:  # an image's result must not depend on its batch
        return _image_by_image(hyper_laplacian, y, k, lam=lam, alpha=alpha, beta0=beta0, beta_max=beta_max,
                               beta_rate=beta_rate, inner=inner, taper=taper, lut=lut)
    if lam is None:
        lam = auto_lambda(y)
        _check_positive("lam", lam)
    size = y.shape[-2:]
    yp, offset = prepare(y, k) if taper else (y, (0, 0))
    shape = yp.shape[-2:]
    kspec = kernel_spectrum(k, shape)
    fdx, fdy = _gradient_spectra(shape, yp)
    grad_energy = fdx.abs().square() + fdy.abs().square()
    kty = kspec.conj() * torch.fft.rfft2(yp)
    ktk = kspec.abs().square()
    x = yp
    beta = beta0
    while beta < beta_max:
        ratio = lam / beta
        denom = grad_energy + ratio * ktk
        for _ in range(inner):
            gx, gy = _grad(x)
            if lut:
                w = shrink_lut(torch.stack([gx, gy]), beta, alpha, dim=1)  # a table per image
                wx, wy = w[0], w[1]
            else:
                wx = shrink_hyper_laplacian(gx, beta, alpha)
                wy = shrink_hyper_laplacian(gy, beta, alpha)
            num = torch.fft.rfft2(_grad_adjoint(wx, wy)) + ratio * kty
            x = torch.fft.irfft2(num / denom, s=shape)
        beta *= beta_rate
    return crop(x, offset, size)


METHODS = {
    "wiener": wiener,
    "rl": richardson_lucy,
    "hyperlaplacian": hyper_laplacian,
}

__all__ = ["wiener", "richardson_lucy", "hyper_laplacian", "check_kernel", "KERNEL_SUM_TOLERANCE", "auto_lambda", "shrink_hyper_laplacian", "shrink_lut", "edgetaper", "prepare",
           "crop", "estimate_noise", "estimate_nsr", "METHODS"]
