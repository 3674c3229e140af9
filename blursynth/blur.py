"""Uniform (spatially invariant) blur: batched true convolution by FFT, and its exact adjoint.

Conventions (the package's, as in the README): images ``(B, C, H, W)``; kernels centred at ``(h // 2, w // 2)``; blurring
is TRUE convolution, ``y[i, j] = sum_{a, b} k[a, b] x[i - a + h//2, j - b + w//2]``, so a kernel
whose mass sits right of centre moves content to the right. The functions are linear in the image,
so they apply to linear-light or display values alike (physically, blur linear light).

Every boundary is "pad, then keep the valid part of the convolution":

- ``"valid"``: no padding; the output is the interior ``(H - h + 1, W - w + 1)`` where the whole
  kernel footprint lies inside the image (datasets blur a larger sharp crop and keep this).
- ``"reflect"``: the image is mirrored about its edge pixels (edge not repeated, as ``numpy.pad``
  ``mode="reflect"``), the output keeps the size ``(H, W)``.
- ``"circular"``: the image is periodic, the output keeps the size ``(H, W)``.

The valid convolution of a ``P x Q`` array only needs a circular convolution of size ``>= P x Q``
(wrap-around only pollutes the ``h - 1`` first rows and ``w - 1`` first columns, which "valid"
discards), so the FFT size is the padded image size rounded up to a fast length, never
``P + h - 1``. On the CPU images are transformed one at a time (:func:`_each_image`), so an item's
result never depends on its batch, and large ones are cut into an even number of slabs, two slabs
per complex transform (see :func:`_slab_fft`); on other devices the whole batch is one real
transform. Small float32 kernels go through a direct grouped ``conv2d`` instead, which is faster there.

Everything runs on the image's device and dtype (float32 or float64) and is differentiable.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .rng import is_integer

BOUNDARIES = ("valid", "reflect", "circular")
METHODS = ("auto", "fft", "direct")

# float32 kernels with at most this many taps use the direct convolution under method="auto": measured
# on an AVX-512 CPU, one thread, 1280x720 RGB and 8x3x256x256 batches, depthwise conv2d beats the
# FFT up to about 9x9 to 11x11 kernels (float64 always takes the FFT: see _use_direct).
DIRECT_MAX_TAPS = 100


# FFT lengths are 7-smooth AND multiples of these. Measured with MKL on one thread (600 transforms
# of each 7-smooth length from 600 to 1400): complex transforms of lengths with a single factor 2, or
# none, cost 1.3-1.6x more per point and log than multiples of 4 (750 = 2 * 3 * 5^3: 0.30 ns against
# 0.19 for 768), and real transforms of odd lengths 3.5x more than multiples of 8. The longer length
# is cheaper: a 756x672 complex fft2 + ifft2 took 4.9 ms, a 750x672 one 5.4 ms.
C2C_MULTIPLE = 4
R2C_MULTIPLE = 8


@functools.lru_cache(maxsize=4096)
def fast_length(n: int, multiple: int = C2C_MULTIPLE) -> int:
    """Smallest integer ``>= n`` whose prime factors are all in {2, 3, 5, 7} (FFTs of such lengths
    are fastest) and that is a multiple of ``multiple`` (:data:`R2C_MULTIPLE` for the halved axis of
    a real FFT, :data:`C2C_MULTIPLE` for complex axes; see there)."""
    best = None
    p2 = 1
    while p2 < 2 * max(n, multiple):
        p3 = p2
        while p3 < 2 * max(n, multiple):
            p5 = p3
            while p5 < 2 * max(n, multiple):
                p7 = p5
                while p7 < 2 * max(n, multiple):
                    if p7 >= n and p7 % multiple == 0 and (best is None or p7 < best):
                        best = p7
                    p7 *= 7
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


def _is_fast(n: int) -> bool:
    if n < 1:  # (0 would divide by 2 forever)
        return False
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def as_kernel4d(kernel: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Kernels as ``(Bk, Ck, h, w)`` on the image's device and dtype, broadcastable to the image.

    Accepts ``(h, w)`` (one kernel for everything), ``(Bk, h, w)`` or ``(Bk, Ck, h, w)`` with
    ``Bk`` in ``{1, B}`` and ``Ck`` in ``{1, C}`` (per item, optionally per channel).
    """
    kernel = _kernel_dims(kernel)
    b, c = image.shape[:2]
    if kernel.shape[0] not in (1, b):
        raise ValueError(
            f"kernel batch ({kernel.shape[0]}, shape {tuple(kernel.shape)}) does not match the image batch ({b}): "
            f"give {b} kernels, one per image, or one kernel shared by all")
    if kernel.shape[1] not in (1, c):
        raise ValueError(
            f"kernel channels ({kernel.shape[1]}, shape {tuple(kernel.shape)}) do not match the image's ({c}): "
            f"give {c} kernels per item, one per channel, or one shared by all channels")
    return kernel.to(device=image.device, dtype=image.dtype)


def _kernel_dims(kernel: torch.Tensor) -> torch.Tensor:
    """A ``(h, w)``, ``(Bk, h, w)`` or ``(Bk, Ck, h, w)`` kernel tensor as 4-D, or a clear error."""
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.is_complex():  # (the cast to the image's dtype dropped the imaginary part, with a warning at most)
        raise TypeError(f"kernel must be real, got {kernel.dtype}")
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    elif kernel.dim() == 3:
        kernel = kernel[:, None]
    elif kernel.dim() != 4:
        raise ValueError(f"kernel must be (h, w), (B, h, w) or (B, C, h, w); got shape {tuple(kernel.shape)}")
    if kernel.shape[-1] < 1 or kernel.shape[-2] < 1:
        raise ValueError(f"kernel must be at least 1x1, got shape {tuple(kernel.shape)}")
    return kernel


def _check_image(image: torch.Tensor, name: str = "image") -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(image.shape)}")
    if image.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {image.dtype}; convert with .float()")


def _check_boundary(boundary: str, method: str) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _pad_amounts(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding that keeps the size with the kernel centred at (h//2, w//2)."""
    return h - 1 - h // 2, h // 2, w - 1 - w // 2, w // 2


def _pad_index(size: int, before: int, after: int, boundary: str, device) -> torch.Tensor:
    """Source index of every padded position along one axis (any pad width, even beyond ``size``)."""
    idx = torch.arange(-before, size + after, device=device)
    if boundary == "circular":
        return idx % size
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)  # mirror without repeating the edge
    idx = idx % period
    return torch.where(idx >= size, period - idx, idx)


def _pad(x: torch.Tensor, h: int, w: int, boundary: str) -> torch.Tensor:
    if boundary == "valid":
        return x
    top, bottom, left, right = _pad_amounts(h, w)
    hh, ww = x.shape[-2:]
    # F.pad is a single fused copy; it only covers pads narrower than the image.
    limit = 0 if boundary == "circular" else 1
    if max(top, bottom) <= hh - limit and max(left, right) <= ww - limit:
        return F.pad(x, (left, right, top, bottom), mode=boundary)
    rows = _pad_index(hh, top, bottom, boundary, x.device)
    cols = _pad_index(ww, left, right, boundary, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _fold_axis(y: torch.Tensor, dim: int, size: int, before: int, after: int, boundary: str) -> torch.Tensor:
    """Adjoint of padding one axis: add every padded sample back onto the pixel it copied."""
    if max(before, after) > size - (0 if boundary == "circular" else 1):
        idx = _pad_index(size, before, after, boundary, y.device)  # wide pads: generic scatter
        shape = list(y.shape)
        shape[dim] = size
        return y.new_zeros(shape).index_add_(dim, idx, y)
    out = y.narrow(dim, before, size).clone()
    head, tail = y.narrow(dim, 0, before), y.narrow(dim, before + size, after)
    if boundary == "circular":
        out.narrow(dim, size - before, before).add_(head)
        out.narrow(dim, 0, after).add_(tail)
    else:  # mirror: padded row j < before copied row before - j; tail row i copied size - 2 - i
        out.narrow(dim, 1, before).add_(head.flip(dim))
        out.narrow(dim, size - 1 - after, after).add_(tail.flip(dim))
    return out


def _pad_adjoint(y: torch.Tensor, size: tuple[int, int], h: int, w: int, boundary: str) -> torch.Tensor:
    """Adjoint of :func:`_pad`."""
    if boundary == "valid":
        return y
    top, bottom, left, right = _pad_amounts(h, w)
    y = _fold_axis(y, -1, size[1], left, right, boundary)
    return _fold_axis(y, -2, size[0], top, bottom, boundary)


def _kernel_spectrum(kernel: torch.Tensor, n: int, m: int, row0: int = 0, col0: int = 0) -> torch.Tensor:
    """rfft2 of the kernel placed in an ``n x m`` zero array with tap ``(row0, col0)`` at the origin
    (circularly), ``(Bk, Ck, n, m // 2 + 1)`` complex. Only the kernel's own rows are transformed
    along x, so this costs a fraction of a full-size rfft2 on the CPU. Off the CPU a call costs more
    than its arithmetic, and the one rfft2 of the padded kernel (two transform calls fewer) is faster:
    on an H200, 1280x720 RGB "circular" blur took 0.35 ms with the two steps, deepinv's one rfft2 0.30."""
    h, w = kernel.shape[-2:]
    if kernel.device.type != "cpu":
        padded = F.pad(kernel, (0, m - w, 0, n - h))
        return torch.fft.rfft2(torch.roll(padded, (-row0, -col0), (-2, -1)) if row0 or col0 else padded)
    if col0:  # (pad and roll: few launches on a GPU)
        spec = torch.fft.rfft(torch.roll(F.pad(kernel, (0, m - w)), -col0, -1), dim=-1)
    else:
        spec = torch.fft.rfft(kernel, n=m, dim=-1)
    if row0:
        return torch.fft.fft(torch.roll(F.pad(spec, (0, 0, 0, n - h)), -row0, -2), dim=-2)
    return torch.fft.fft(spec, n=n, dim=-2)


def _times(spec: torch.Tensor, kspec: torch.Tensor) -> torch.Tensor:
    """Spectrum product, in place when autograd does not need the image spectrum (saves a
    full-size complex allocation)."""
    if torch.is_grad_enabled() and (spec.requires_grad or kspec.requires_grad):
        return spec * kspec
    return spec.mul_(kspec)


def _use_direct(kernel: torch.Tensor, method: str) -> bool:
    """Whether to convolve directly; ``kernel`` has the image's dtype. Under "auto", float64 always takes the
    FFT: torch's float64 conv2d has no fast depthwise kernel and unfolds the image into an array ``taps``
    times its size (with a 9x9 kernel: 4.3 GB for a 2000x3000 plane, and 4.9 s for 1500x2000 RGB where the FFT
    took 0.11 s), and the FFT was faster at every size measured, down to 32x32 with a 5x5 kernel."""
    if method == "auto":
        return kernel.shape[-2] * kernel.shape[-1] <= DIRECT_MAX_TAPS and kernel.dtype != torch.float64
    return method == "direct"


def _grouped(x: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Arrange image and kernels for one depthwise conv2d call, one group per (item, channel).
    (Depthwise is also the fast form for a shared kernel: a 1-in 1-out conv2d over B*C images is
    many times slower on CPU.)"""
    b, c, hh, ww = x.shape
    h, w = kernel.shape[-2:]
    weight = kernel.expand(b, c, h, w).reshape(b * c, 1, h, w)
    return x.reshape(1, b * c, hh, ww), weight, b * c


def _valid_direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    xg, weight, groups = _grouped(x, kernel)
    # channels_last selects the fast depthwise kernel on CPU (the NCHW one is ~10x slower on
    # large images); conv2d correlates, so the kernel is flipped to convolve.
    xg = xg.contiguous(memory_format=torch.channels_last)
    # In the image's dtype under autocast too (mixed-precision training): conv2d is on autocast's list, and a
    # small kernel's blur came back bfloat16 or float16, where the FFT's stays float32 (as documented).
    with torch.autocast(x.device.type, enabled=False):
        y = F.conv2d(xg, weight.flip(-2, -1), groups=groups)
    return y.reshape(b, c, *y.shape[-2:]).contiguous()


def _valid_direct_adjoint(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    b, c = y.shape[:2]
    yg, weight, groups = _grouped(y, kernel)
    yg = yg.contiguous(memory_format=torch.channels_last)
    with torch.autocast(y.device.type, enabled=False):  # (see _valid_direct)
        x = F.conv_transpose2d(yg, weight.flip(-2, -1), groups=groups)  # exact adjoint of conv2d
    return x.reshape(b, c, *x.shape[-2:]).contiguous()


def _full_spectrum(kernel: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Full (two-sided) fft2 of the kernel at the origin of an ``n x m`` grid, ``(Bk, Ck, n, m)``
    complex, contiguous. Only the kernel's ``w`` columns are transformed along y, so this is a
    fraction of a full-size transform; transforming along x last leaves the result row-major
    (the other order leaves it column-major, and copying 720 x 672 of it row-major took 5 ms)."""
    return torch.fft.fft(torch.fft.fft(kernel, n=n, dim=-2), n=m, dim=-1)


# Cost of one complex point of the slab transform (c2c fft2 + ifft2, packing, unpacking) over that
# of one real pixel of torch's rfft2 + irfft2 pair, fitted to paired timings with MKL on one thread at
# 1280x720 RGB (31x31 and 64x64 kernels). The split is used only where it is cheaper. The copy that
# "reflect"/"circular" pad into first costs too little to weigh: with it counted (0.05 of a real
# pixel) a 64x64 reflect blur of 1280x720 took the real transform, 8-14% slower than slabs.
C2C_COST = 1.85
# Per-point cost of a transform grows with its size as it falls out of cache: ``1 + points /
# CACHE_POINTS``. Fitted with MKL on one thread, 1 MiB of L2 per core: c2c fft2 + ifft2 pairs of
# 720 x 192..672 cost 6.9 ns per point at 138k points and 9.1 at 484k, but whole blurs pay the
# slabs' overlap in every pass too, and they chose 2 slabs at 1280x720 with a 64x64 kernel, 6 with
# 31x31 (5% faster) and 4 at 1920x1080 (8-10% faster than 2; it now picks 6 there with 64x64).
CACHE_POINTS = 1 << 21
# Below this many pixels per image the real transform is kept: small images stay in cache, where
# the packing and unpacking passes cost more than they save (276x276: 1.14x slower split; from
# 400x400 on it is 0.8-0.96x the real transform's time).
LARGE_PIXELS = 1 << 17
MAX_SLABS = 8


def _fft_cost(points: int) -> float:
    return points * (1 + points / CACHE_POINTS)


def _split_plan(hh: int, ww: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """``(dim, n, m, slabs)`` for :func:`_slab_fft` on an ``hh x ww`` image (padded already, or to
    be) on the CPU: the axis to cut (-2 or -1), the FFT size and the (even) number of slabs, chosen
    by :func:`_fft_cost`; or None when one real transform of the whole image is cheaper (kernels
    large against the image)."""
    if hh * ww < LARGE_PIXELS:
        return None
    plans = []
    for dim, size, k in ((-1, ww, w), (-2, hh, h)):  # ties: split columns, keep rows long
        valid = size - k + 1
        for slabs in range(2, MAX_SLABS + 1, 2):
            q = -(-valid // slabs)  # outputs per slab
            if slabs > 2 and q < max(k, slabs):  # slabs mostly overlap (or one would be empty)
                break
            slab = fast_length(q + k - 1)
            n, m = (slab, fast_length(ww)) if dim == -2 else (fast_length(hh), slab)
            plans.append((slabs // 2 * _fft_cost(n * m), dim, n, m, slabs))
    cost, dim, n, m, slabs = min(plans, key=lambda p: p[0])
    real = fast_length(hh) * fast_length(ww, R2C_MULTIPLE)  # pixels, held as real // 2 complex points
    if C2C_COST * cost >= _fft_cost(real // 2) * 2:
        return None
    return dim, n, m, slabs


def _whole_batch(x: torch.Tensor) -> bool:
    """Whether large images go through in one call (off the CPU) rather than one at a time."""
    return x.device.type != "cpu"


def _each_image(x: torch.Tensor, kernel: torch.Tensor, out_hw: tuple[int, int], spectrum, one) -> torch.Tensor:
    """Run ``one(image, kernel_spectrum, out)`` (4-D tensors of one image and channel, the spectrum
    broadcastable to it) image by image into one preallocated output ``(B, C, *out_hw)``, with
    ``spectrum(kernel[i:i+1])`` computed once per item (once in all for a shared kernel). CPU only.

    Images go through the FFT one at a time: an item's result is then the same in any batch (see
    :func:`_by_image`), and for large images the big temporaries have one image's size, so the
    allocator reuses the same memory for every image instead of mapping (and page-faulting) fresh
    buffers the size of the whole batch, which cost as much as a quarter of the time on 1280x720
    RGB; and one image's working set stays in cache."""
    b, c = x.shape[:2]
    out = x.new_empty(b, c, *out_hw)
    kb, kc = kernel.shape[:2]
    # The product with the row-major image spectrum ran 3.5x slower with a column-major kernel
    # spectrum (1280x720 RGB, 31x31 kernel: 2.3 of 24 ms, against 1.0 row-major), which is how a
    # transform along y last leaves it (_kernel_spectrum); a copy costs less than that.
    shared = spectrum(kernel).contiguous() if kb == 1 else None
    for i in range(b):
        kspec = shared if shared is not None else spectrum(kernel[i:i + 1]).contiguous()
        for j in range(c):
            jk = j if kc > 1 else 0
            one(x[i:i + 1, j:j + 1], kspec[:, jk:jk + 1], out[i:i + 1, j:j + 1])
    return out


def _by_image(x: torch.Tensor, kernel: torch.Tensor, out_hw: tuple[int, int], spectrum, conv) -> torch.Tensor:
    """``conv(images, kernel_spectra)``, mapping ``(b, c, H, W)`` to ``(b, c, *out_hw)``: on the CPU
    one image and channel at a time (:func:`_each_image`), whatever the size, because MKL's batched
    transforms round differently from single ones on some CPUs (seen on an AVX-512 Xeon: an item
    blurred alone differed from the same item blurred in a batch), and a dataset's pair must not
    depend on its batch; off the CPU on the whole batch."""
    if _whole_batch(x):
        return conv(x, spectrum(kernel))
    return _each_image(x, kernel, out_hw, spectrum, lambda xi, kspec, out: out.copy_(conv(xi, kspec)))


def _pack(re: torch.Tensor, im: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``re + i im`` zero-padded at the bottom/right to ``(..., n, m)`` complex, in one buffer."""
    p, q = re.shape[-2:]
    if (p, q) == (n, m):
        # torch.complex follows its inputs' strides: slabs of a transposed (column-major) image came out
        # column-major, and MKL's fft2 of that rounds differently. A no-op on row-major slabs.
        return torch.complex(re, im).contiguous()
    z = re.new_empty(*re.shape[:-2], n, m, 2)
    z[..., :p, :q, 0] = re
    z[..., :p, :q, 1] = im
    z[..., p:, :, :] = 0
    z[..., :p, q:, :] = 0
    return torch.view_as_complex(z)


def _slab_plan(x: torch.Tensor, kernel: torch.Tensor, boundary: str) -> tuple[int, int, int, int] | None:
    """:func:`_split_plan` for blurring ``x`` with ``boundary`` on the CPU; None off it. On an H100
    one real transform of the whole batch beat every slab plan (1280x720 RGB, 31x31 and 64x64
    kernels: 0.20 ms against 0.24 for 2 slabs and 0.56 for 6): there the packing and unpacking are
    only more launches, and the cache does not decide."""
    if _whole_batch(x):
        return None
    (hh, ww), (h, w) = x.shape[-2:], kernel.shape[-2:]
    padded = boundary != "valid"
    return _split_plan(hh + padded * (h - 1), ww + padded * (w - 1), h, w)


def _slab_fft(x: torch.Tensor, kernel: torch.Tensor, boundary: str, plan: tuple[int, int, int, int]) -> torch.Tensor:
    """Valid convolution by FFT of ``x`` padded for ``boundary`` (see :func:`_pad`, done one image
    at a time), cut into an even number of slabs along one axis, two slabs per complex transform.

    Each of the ``S`` equal parts of the valid output only reads a slab of the image (part +
    kernel - 1 long) along the cut axis. Slab ``2j`` goes in as the real part and slab ``2j + 1`` as
    the imaginary part of one complex array: the kernel is real, so the real and imaginary parts of
    ``ifft2(fft2(z) K)`` are the two slabs' convolutions. A complex point of MKL's c2c pair costs
    ~1.4x a real pixel of torch's rfft2/irfft2 pair (whose inverse is a separate c2c pass and c2r
    pass) but carries two pixels, which pays for the slabs' overlap, the packing and the unpacking
    copy; and more, smaller transforms stay closer to the cache (``plan``, from :func:`_split_plan`,
    weighs that against the overlap). Slabs are as long as the FFT (neighbours may overlap by more
    than the kernel; the last one is moved back inside the image), so only the other axis may need
    padding.
    """
    h, w = kernel.shape[-2:]
    hh, ww = x.shape[-2:]
    if boundary != "valid":
        hh, ww = hh + h - 1, ww + w - 1
    dim, n, m, slabs = plan
    k, slab = (h, n) if dim == -2 else (w, m)
    size = hh if dim == -2 else ww
    slab = min(slab, size)  # (an image shorter than the FFT is zero-padded by _pack)
    out_hw = (hh - h + 1, ww - w + 1)
    valid = out_hw[dim]
    q = -(-valid // slabs)
    parts = [(j * q, min((j + 1) * q, valid)) for j in range(slabs)]  # the outputs of each slab
    starts = [min(a, size - slab) for a, _ in parts]  # where each slab begins in the image
    other, keep = (-1, out_hw[1]) if dim == -2 else (-2, out_hw[0])

    def one(xi, kspec, out):
        if boundary == "valid" and dim == -1:
            # Column slabs read the image in short row pieces, which the CPU fetches from memory
            # far more slowly than one pass in order; a summing pass first brings the plane into
            # cache (1280x720, 31x31 kernel, one thread, image not in cache: packing a channel's
            # three slab pairs 0.87 -> 0.51 ms with the pass; whole blur 4-11% faster in the bench).
            # A padded plane has just been written by _pad and needs none.
            torch.sum(xi)
        xi = _pad(xi, h, w, boundary)
        for j in range(0, slabs, 2):
            spec = torch.fft.fft2(_pack(xi.narrow(dim, starts[j], slab), xi.narrow(dim, starts[j + 1], slab), n, m))
            y = torch.fft.ifft2(_times(spec, kspec))
            del spec  # freed before the inverse's output is used, so the next transform reuses it
            y = y.narrow(other, (w if dim == -2 else h) - 1, keep)
            for part, (a, b), start in zip((y.real, y.imag), parts[j:j + 2], starts[j:j + 2]):
                out.narrow(dim, a, b - a).copy_(part.narrow(dim, a - start + k - 1, b - a))

    return _each_image(x, kernel, out_hw, lambda kk: _full_spectrum(kk, n, m), one)


def _valid_rfft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Valid convolution by one real FFT of the whole image (see the module docstring)."""
    hh, ww = x.shape[-2:]
    h, w = kernel.shape[-2:]
    n, m = fast_length(hh), fast_length(ww, R2C_MULTIPLE)

    def conv(xi, kspec):
        return torch.fft.irfft2(_times(torch.fft.rfft2(xi, s=(n, m)), kspec), s=(n, m))[..., h - 1:hh, w - 1:ww]

    return _by_image(x, kernel, (hh - h + 1, ww - w + 1), lambda kk: _kernel_spectrum(kk, n, m), conv)


def _blur_fft(x: torch.Tensor, kernel: torch.Tensor, boundary: str) -> torch.Tensor:
    """Blur by FFT: in slabs where :func:`_slab_plan` finds that cheaper, else by one real transform
    of each image (of the whole batch off the CPU), "reflect"/"circular" padding straight to the FFT
    size in one copy (the extra rows and columns at the bottom/right only feed outputs that are cut
    away), then the valid convolution."""
    plan = _slab_plan(x, kernel, boundary)
    if plan is not None:
        return _slab_fft(x, kernel, boundary, plan)
    if boundary == "valid":
        return _valid_rfft(x, kernel)
    hh, ww = x.shape[-2:]
    h, w = kernel.shape[-2:]
    top, bottom, left, right = _pad_amounts(h, w)
    n, m = fast_length(hh + h - 1), fast_length(ww + w - 1, R2C_MULTIPLE)
    bottom, right = n - hh - top, m - ww - left
    limit = 0 if boundary == "circular" else 1
    if max(top, bottom) > hh - limit or max(left, right) > ww - limit:
        return _valid_rfft(_pad(x, h, w, boundary), kernel)  # pads wider than the image

    def conv(xi, kspec):
        spec = _times(torch.fft.rfft2(F.pad(xi, (left, right, top, bottom), mode=boundary)), kspec)
        return torch.fft.irfft2(spec, s=(n, m))[..., h - 1:h - 1 + hh, w - 1:w - 1 + ww]

    return _by_image(x, kernel, (hh, ww), lambda kk: _kernel_spectrum(kk, n, m), conv)


def _valid_fft_adjoint(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    h, w = kernel.shape[-2:]
    hh, ww = y.shape[-2] + h - 1, y.shape[-1] + w - 1
    n, m = fast_length(hh), fast_length(ww, R2C_MULTIPLE)
    # Place y where the forward pass read it (offset h-1, w-1), correlate with the kernel.
    y = F.pad(y, (w - 1, 0, h - 1, 0))
    spec = _times(torch.fft.rfft2(y, s=(n, m)), _kernel_spectrum(kernel, n, m).conj())
    return torch.fft.irfft2(spec, s=(n, m))[..., :hh, :ww]


def _exact_circular_ok(x: torch.Tensor, kernel: torch.Tensor) -> bool:
    """Whether the image's own size is a fast FFT size that holds the whole kernel."""
    (hh, ww), (h, w) = x.shape[-2:], kernel.shape[-2:]
    return _is_fast(hh) and _is_fast(ww) and ww % 2 == 0 and h <= hh and w <= ww


def _circular_exact(x: torch.Tensor, kernel: torch.Tensor, adjoint: bool) -> torch.Tensor:
    """Circular convolution at the image's own size (used when that size is a fast FFT length)."""
    hh, ww = x.shape[-2:]
    h, w = kernel.shape[-2:]

    def spectrum(kk):
        kspec = _kernel_spectrum(kk, hh, ww, row0=h // 2, col0=w // 2)
        return kspec.conj() if adjoint else kspec

    # (contiguous: a transposed or channels_last image gave other bytes than its copy on torch 2.11's MKL)
    return _by_image(x, kernel, (hh, ww), spectrum,
                    lambda xi, kspec: torch.fft.irfft2(_times(torch.fft.rfft2(xi.contiguous()), kspec), s=(hh, ww)))


def _check_sizes(shape: tuple[int, ...], kernel: torch.Tensor, boundary: str, what: str) -> None:
    h, w = kernel.shape[-2:]
    if boundary == "valid" and (h > shape[-2] or w > shape[-1]):
        raise ValueError(
            f"{what} of size {shape[-2]}x{shape[-1]} is smaller than the {h}x{w} kernel: "
            f"boundary='valid' needs an image at least as large as the kernel (crop a larger image "
            f"or use boundary='reflect')")


def blur(image: torch.Tensor, kernel: torch.Tensor, boundary: str = "valid", method: str = "auto") -> torch.Tensor:
    """Blur a batch of images, each with its own kernel (true convolution).

    Args:
        image: ``(B, C, H, W)`` float32/float64, any device.
        kernel: ``(h, w)``, ``(B|1, h, w)`` or ``(B|1, C|1, h, w)``; centre tap at ``(h // 2, w // 2)``.
            Moved to the image's device and dtype. Not required to sum to 1 (the operator is linear).
        boundary: ``"valid"`` (output ``(B, C, H-h+1, W-w+1)``), ``"reflect"`` or ``"circular"``
            (output ``(B, C, H, W)``); see the module docstring.
        method: ``"fft"``, ``"direct"`` (grouped conv2d) or ``"auto"`` (direct for float32 kernels of at most
            :data:`DIRECT_MAX_TAPS` taps; float64 always by FFT, as torch's float64 conv2d unfolds the image into
            an array ``taps`` times its size). All give the same result up to float rounding, for finite
            values: one NaN or infinite pixel spreads over all the FFT transforms with it (the plane, or its
            slab), where "direct" spoils only the kernel's reach around it (neither checks: keep images finite).

    Returns:
        The blurred images, same dtype and device as ``image``.
    """
    _check_image(image)
    _check_boundary(boundary, method)
    kernel = as_kernel4d(kernel, image)
    _check_sizes(image.shape, kernel, boundary, "image")
    h, w = kernel.shape[-2:]
    if image.numel() == 0:  # no planes or no pixels: conv2d refuses zero groups, MKL empty FFTs, nothing to pad
        size = image.shape[-2:] if boundary != "valid" else (image.shape[-2] - h + 1, image.shape[-1] - w + 1)
        return image.new_zeros(*image.shape[:2], *size)
    if _use_direct(kernel, method):
        return _valid_direct(_pad(image, h, w, boundary), kernel)
    if boundary == "circular" and _exact_circular_ok(image, kernel):
        return _circular_exact(image, kernel, adjoint=False)
    return _blur_fft(image, kernel, boundary)


def blur_adjoint(y: torch.Tensor, kernel: torch.Tensor, boundary: str = "valid", method: str = "auto") -> torch.Tensor:
    """Exact adjoint ``A^T`` of :func:`blur` with the same kernel and boundary.

    ``<blur(x, k, b), y> == <x, blur_adjoint(y, k, b)>`` for all ``x, y``. For ``"valid"`` the input
    is ``(B, C, H-h+1, W-w+1)`` and the output the full correlation ``(B, C, H, W)``; for
    ``"reflect"``/``"circular"`` sizes are kept and the padding's adjoint folds the margins back onto
    the pixels they mirror or wrap. Arguments as in :func:`blur`; same dtype and device as ``y``.
    """
    _check_image(y, "y")
    _check_boundary(boundary, method)
    kernel = as_kernel4d(kernel, y)
    h, w = kernel.shape[-2:]
    if y.numel() == 0:  # no planes or no pixels (see blur)
        size = y.shape[-2:] if boundary != "valid" else (y.shape[-2] + h - 1, y.shape[-1] + w - 1)
        return y.new_zeros(*y.shape[:2], *size)
    if _use_direct(kernel, method):
        full = _valid_direct_adjoint(y, kernel)
    elif boundary == "circular" and _exact_circular_ok(y, kernel):
        return _circular_exact(y, kernel, adjoint=True)
    else:
        full = _valid_fft_adjoint(y, kernel)
    if boundary == "valid":
        return full
    return _pad_adjoint(full, tuple(y.shape[-2:]), h, w, boundary)


def kernel_spectrum(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Optical transfer function: rfft2 of the kernel placed with its centre at the origin of a
    periodic ``size = (H, W)`` grid (one int: a square, as the package's other sizes), ``(Bk, Ck, H, W // 2 + 1)``
    complex (complex128 for a float64 kernel, else complex64) on the kernel's device; ``kernel`` as in
    :func:`blur` (a 2-D or 3-D kernel gains the missing axes), no larger than the grid (else a ValueError).
    Multiplying ``rfft2(x)`` by it is ``blur(x, kernel, "circular")``. Used by Fourier-domain deconvolution."""
    kernel = _kernel_dims(kernel)
    # (float16 and bfloat16 kernels failed in torch's FFT with "Unsupported dtype Half" on the CPU)
    kernel = kernel.to(torch.float64 if kernel.dtype == torch.float64 else torch.float32)
    size = _grid_size(size)
    h, w = kernel.shape[-2:]
    if h > size[0] or w > size[1]:
        raise ValueError(f"kernel {h}x{w} is larger than the {size[0]}x{size[1]} grid of its spectrum")
    return _kernel_spectrum(kernel, size[0], size[1], row0=h // 2, col0=w // 2)


def _grid_size(size) -> tuple[int, int]:
    """``size`` of :func:`kernel_spectrum` as ``(H, W)`` Python ints >= 1 (an int is a square), or a ValueError
    naming it (an int was "'int' object is not subscriptable", a float size an error of torch's FFT)."""
    pair = (size, size) if is_integer(size) else size
    try:
        pair = () if isinstance(pair, (str, bytes)) else tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(is_integer(v) and v >= 1 for v in pair):
        raise ValueError(f"size (the grid of the spectrum) must be an int or (H, W) of ints >= 1, got {size!r}")
    return int(pair[0]), int(pair[1])


__all__ = ["blur", "blur_adjoint", "kernel_spectrum", "fast_length", "as_kernel4d", "BOUNDARIES",
           "DIRECT_MAX_TAPS"]

