"""Procedural sharp scenes: textured dead leaves with natural-image statistics.

The dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001) stacks random opaque discs ("leaves")
whose radii follow a power law ``p(r) ~ r^-alpha``; with ``alpha`` near 3 the image is close to scale
invariant, with the ``1/f^2`` power spectrum, occlusion edges and T-junctions of photographs. Achddou,
Gousseau & Ladjal (2021) showed restoration networks trained on such images alone transfer to real
photos. The package uses them as its default sharp images, so every command runs with no download.

How an image is made (vectorised over the batch and the pixels; the Python loops are over about 30
disc-size classes and, for an image over a million pixels, over row bands, which bound memory at
about 60 bytes per pixel):

1. ``M`` leaves per image, enough that the expected uncovered fraction of the image would be
   ``exp(-coverage)`` if leaves were centred anywhere in the plane (a little more remains: leaves
   centred beyond the margin are not drawn; 0.023 against 0.018 at 256x256 with the defaults);
   what stays uncovered shows a textured background leaf. Leaf ``m`` lies in
   front of leaf ``m + 1``. Centres are uniform over the image plus a margin, so large leaves
   centred outside still reach in.
2. A z-buffer: for each pixel, the front-most leaf covering it (``scatter_reduce`` of leaf numbers
   over each leaf's bounding box, grouped by box size).
3. Anti-aliased edges: the front leaf covers the fraction ``clamp(r - d + 1/2, 0, 1)`` of the pixel
   (``d`` the distance from its centre); the rest shows what lies behind, read from the pixel 2 px
   further out along the leaf's radius (outside the leaf, so showing the leaf behind it). Leaves
   are shaded over a 2 px ring around the image too, so that look-up is right on the border.
4. Leaf appearance, so images are not flat cartoons: a colour drawn in CIE Lab from a
   natural-image-like distribution (mostly low chroma, broad lightness), a linear shading gradient,
   a micro-texture (a shifted window of a ``1/f`` Gaussian noise field) and, on some leaves, a
   sinusoidal grating; modulations are applied to linear light.
5. Optionally (``defocus``), leaves behind a random depth are blurred as out of focus.

Images are ``(N, 3, H, W)`` float32 sRGB in [0, 1] on the requested device; item ``i`` depends only
on ``(seed, i)`` and the options. Random streams 400-449 of :mod:`blursynth.rng` belong to this module.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import kornia.color as kc
import kornia.filters as kf
import torch

from blursynth import rng
from blursynth.sensor import linear_to_srgb, srgb_to_linear

(_S_RADIUS, _S_X, _S_Y, _S_L, _S_A, _S_B, _S_VIVID, _S_GRAD_ANGLE, _S_GRAD, _S_TEX, _S_TEX_DX, _S_TEX_DY,
 _S_GRATING_ON, _S_GRATING_F, _S_GRATING_ANGLE, _S_GRATING_PHASE, _S_GRATING_AMP, _S_FIELD, _S_DEFOCUS_ON,
 _S_DEFOCUS_DEPTH, _S_DEFOCUS_SIGMA) = range(400, 421)

_RING = 2  # px shaded around the image: the anti-aliasing look-up reaches 2 px out (see _shade)

# Leaf bounding-box half-sizes are rounded up to this geometric ladder (ratio ~1.25), so boxes of
# one class enumerate at most ~1.56x the pixels they need.
_LADDER = sorted({max(1, round(1.25 ** k)) for k in range(0, 60)})

# Work at once: enumerated (pixel, leaf) pairs (~25 bytes each) and shaded pixels (~300 bytes each
# in float64), about 0.4 GB at most. Images are rendered in chunks of whole images, and an image
# larger than one chunk in row bands (its leaves' boxes in groups), so memory stays bounded
# whatever the size: what remains per pixel is the front-leaf map, the noise field and the
# linear image (about 60 bytes).
_PAIRS_PER_CHUNK = 4_000_000
_PIXELS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeadLeaves:
    """Options of the dead-leaves generator (validated; see the module docstring for the model).

    Args:
        alpha: exponent of the radius density ``r^-alpha`` (3: scale invariant; larger: smaller leaves).
        rmin: smallest radius, pixels (> 0).
        rmax: largest radius, pixels (finite, >= ``rmin``); ``None``: the image's longer side.
        coverage: the expected uncovered fraction of the image is about ``exp(-coverage)`` (a little
            more: see the module docstring); more leaves cost proportionally more time.
        max_leaves: cap on the number of leaves per image, an integer in ``[1, 10**8]`` (bounds time
            and memory on huge images).
        chroma: scale of the a*, b* colour spread (0: grey leaves).
        vivid: fraction of leaves with 2.5x chroma (saturated objects are rare but present in photos).
        shading: largest relative brightness change of a leaf's gradient across its radius.
        texture: largest amplitude of the ``1/f`` micro-texture (relative brightness, std units).
        grating: fraction of leaves carrying a sinusoidal grating (stripes, fabric, foliage).
        defocus: fraction of images whose leaves behind a random depth are out of focus
            (Gaussian blur with sigma drawn in ``defocus_sigma`` pixels). 0 keeps all leaves sharp.
        defocus_sigma: ``(lo, hi)`` range of the defocus blur sigma, pixels.

    Raises:
        ValueError: an option out of range; the message names it.
    """

    alpha: float = 3.0
    rmin: float = 2.0
    rmax: float | None = None
    coverage: float = 4.0
    max_leaves: int = 200_000
    chroma: float = 1.0
    vivid: float = 0.15
    shading: float = 0.3
    texture: float = 0.15
    grating: float = 0.2
    defocus: float = 0.0
    defocus_sigma: tuple[float, float] = (1.0, 3.0)

    def __post_init__(self) -> None:
        checks = {
            "alpha": (1.0, 10.0), "rmin": (1e-3, 1e6), "coverage": (0.5, 20.0), "max_leaves": (1, 10**8),
            "chroma": (0.0, 5.0), "vivid": (0.0, 1.0), "shading": (0.0, 1.0), "texture": (0.0, 1.0),
            "grating": (0.0, 1.0), "defocus": (0.0, 1.0),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
                value = value.item() if hasattr(value, "item") else float(value)  # NumPy scalars: plain numbers
                object.__setattr__(self, name, value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"dead leaves option {name}={value!r} is out of range [{lo}, {hi}]")
        if self.alpha == 1.0:
            raise ValueError("dead leaves option alpha=1 is degenerate; use a value in (1, 10]")
        if not rng.is_integer(self.max_leaves):
            raise ValueError(f"dead leaves option max_leaves={self.max_leaves!r} must be an integer")
        if self.rmax is not None:
            rmax = self.rmax
            if isinstance(rmax, numbers.Real) and not isinstance(rmax, (bool, int, float)):
                rmax = float(rmax)  # NumPy scalars: plain numbers
            if isinstance(rmax, bool) or not isinstance(rmax, (int, float)) or not self.rmin <= rmax < math.inf:
                raise ValueError(f"dead leaves option rmax={self.rmax!r} must be a finite number of pixels "
                                 f">= rmin={self.rmin}, or None")
            object.__setattr__(self, "rmax", rmax)
        pair = self.defocus_sigma  # (a string's characters passed as numbers: "13" was (1.0, 3.0))
        if (isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2
                or not all(map(rng.is_real, pair))):
            raise ValueError(f"dead leaves option defocus_sigma={pair!r} must be a (lo, hi) pair of numbers")
        lo, hi = (float(v) for v in pair)
        object.__setattr__(self, "defocus_sigma", (lo, hi))  # lists from TOML become tuples
        if not 0.0 < lo <= hi <= 20.0:
            raise ValueError(f"dead leaves option defocus_sigma={self.defocus_sigma!r} needs 0 < lo <= hi <= 20")

    def to_dict(self) -> dict:
        """The options as a JSON-serialisable dict (for manifests)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, options: dict) -> "DeadLeaves":
        """Build from a mapping such as a TOML table (the string ``"off"`` stands for None, e.g. ``rmax``,
        as in recipes: TOML has no null).

        Raises:
            ValueError: an unknown key (the message lists the valid ones) or an out-of-range value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown dead-leaves option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**{k: None if isinstance(v, str) and v == "off" else v for k, v in options.items()})

    # ------------------------------------------------------------------- sizes

    def _rmax(self, h: int, w: int) -> float:
        return float(self.rmax) if self.rmax is not None else float(max(h, w, self.rmin))

    def _margin(self, h: int, w: int) -> float:
        # Leaves centred this far outside can still reach in; beyond it only rare giant leaves would.
        return min(self._rmax(h, w), 0.25 * max(h, w))

    def _mean_area(self, h: int, w: int) -> float:
        """Mean area ``pi E[r^2]`` of a leaf under the truncated power law."""
        a, lo, hi = self.alpha, self.rmin, self._rmax(h, w)
        if hi == lo:
            return math.pi * lo * lo

        def moment(k):  # integral of r^(k - alpha) over [lo, hi]
            e = k + 1 - a
            return math.log(hi / lo) if abs(e) < 1e-9 else (hi ** e - lo ** e) / e
        return math.pi * moment(2) / moment(0)

    def leaves(self, h: int, w: int) -> int:
        """Number of leaves drawn per ``h x w`` image (a function of the size and options only)."""
        m = self._margin(h, w)
        domain = (h + 2 * m) * (w + 2 * m)
        return int(min(self.max_leaves, math.ceil(self.coverage * domain / self._mean_area(h, w))))

    # ------------------------------------------------------------------- rendering

    def render(self, n: int, size, seed: int, start: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``start .. start + n - 1``: ``(n, 3, H, W)`` float32 sRGB in [0, 1] on ``device``."""
        h, w = _size(size)
        if not (rng.is_integer(n) and rng.is_integer(start)) or n < 0 or start < 0:  # (2.5: range()'s words, no name)
            raise ValueError(f"dead_leaves needs integers n >= 0 and start >= 0, got n={n!r}, start={start!r}")
        return self.render_at(rng.as_index(range(start, start + n), device=device), (h, w), seed)

    def render_at(self, index: torch.Tensor, size, seed: int) -> torch.Tensor:
        """Images of arbitrary item indices ``(N,)`` int64 tensor: ``(N, 3, H, W)`` float32 sRGB in [0, 1],
        rendered on ``index.device``; negative or float indices are refused (a float was truncated
        into another item's draws)."""
        h, w = _size(size)
        seed = rng.check_seed(seed)
        index = rng.as_index(index)
        reach = math.ceil(3 * self.defocus_sigma[1])  # the defocus blur pads by reflection this far
        if self.defocus > 0 and min(h, w) <= reach:
            raise ValueError(f"dead leaves with defocus={self.defocus} need images larger than {reach} px a side "
                             f"(3 x defocus_sigma's high end), got {h}x{w}; render larger or use defocus=0")
        n = index.shape[0]
        if n == 0:
            return torch.zeros(0, 3, h, w, device=index.device, dtype=torch.float32)
        m = self.leaves(h, w)
        # Bound each chunk's enumerated (pixel, leaf) pairs and pixels, hence its memory, whatever the batch.
        per_image = m * (1.6 * 4 * self._mean_area(h, w) / math.pi + 16)  # ~ box area per leaf
        chunk = max(1, min(int(_PAIRS_PER_CHUNK // max(per_image, 1.0)), _PIXELS_PER_CHUNK // (h * w)))
        return torch.cat([self._render(index[i:i + chunk], h, w, m, seed) for i in range(0, n, chunk)])

    def _render(self, index: torch.Tensor, h: int, w: int, m: int, seed: int) -> torch.Tensor:
        n = index.shape[0]
        leaves = _draw_leaves(self, index, seed, m, h, w)
        front, linear = _compose(leaves, _noise_field(seed, index, h, w), n, h, w, m)
        if self.defocus > 0:
            linear = _defocus(self, linear, front.reshape(n, 1, h, w), index, seed, m)
        srgb = torch.empty(linear.shape, device=linear.device, dtype=torch.float32)
        for top, end in _bands(n, h, w):  # (the curve's float64 temporaries, a band at a time)
            srgb[:, :, top:end] = linear_to_srgb(linear[:, :, top:end].clamp(0.0, 1.0)).clamp(0.0, 1.0)
        return srgb


def dead_leaves(n: int, size, seed: int, start: int = 0, device: torch.device | str = "cpu", **params) -> torch.Tensor:
    """Textured dead-leaves images ``start .. start + n - 1``.

    Args:
        n: number of images (>= 0).
        size: ``(height, width)`` or one int for a square, pixels (>= 1).
        seed: base seed; image ``i`` depends only on ``(seed, i)`` and ``params``.
        start: index of the first image.
        device: where to render (CPU or CUDA; results agree up to float rounding).
        **params: options of :class:`DeadLeaves` (``alpha``, ``rmin``, ``rmax``, ``texture``, ...).

    Returns:
        ``(n, 3, H, W)`` float32 sRGB values in [0, 1] on ``device``.

    Raises:
        ValueError: ``n`` or ``start`` negative, a size that is not positive integers, or an option
            out of range (the message names it).
    """
    return DeadLeaves(**params).render(n, size, seed, start, device)


def _size(size) -> tuple[int, int]:
    """``size`` (an int for a square, or ``(height, width)``) as two ints >= 1, or a clear error."""
    try:
        h, w = (size, size) if rng.is_integer(size) else tuple(size)
    except (TypeError, ValueError):
        h = w = None
    if not all(map(rng.is_integer, (h, w))) or h < 1 or w < 1:
        raise ValueError(f"scene size must be a positive int (a square) or (height, width) ints, got {size!r}")
    return int(h), int(w)


def _bands(n: int, h: int, w: int) -> list[tuple[int, int]]:
    """Row ranges ``(top, end)`` covering ``h`` rows of ``n`` images of width ``w``, each band about
    ``_PIXELS_PER_CHUNK`` pixels (at least one row)."""
    rows = max(1, _PIXELS_PER_CHUNK // (n * w))
    return [(top, min(h, top + rows)) for top in range(0, h, rows)]


# --------------------------------------------------------------------------- drawing the leaves


def _draw_leaves(opt: DeadLeaves, index: torch.Tensor, seed: int, m: int, h: int, w: int) -> dict:
    """Every leaf's geometry and appearance, ``(N, m + 1)`` tensors; leaf ``m`` is the background."""
    u = lambda stream, k=m + 1: rng.uniform(seed, index, (k,), stream)  # noqa: E731
    # Inverse CDF of the truncated power law p(r) ~ r^-alpha on [rmin, rmax].
    e = 1.0 - opt.alpha
    if abs(e) >= 1e-6:
        lo, hi = opt.rmin ** e, opt._rmax(h, w) ** e
        radius = (lo + u(_S_RADIUS).double() * (hi - lo)) ** (1.0 / e)
    else:
        # The same inverse CDF, written so that nothing cancels as alpha nears 1 (the law nears log-uniform):
        # above, rmin ** e and rmax ** e both round to about 1, and the power 1 / e blew their rounding up,
        # into radii outside [rmin, rmax] (up to 67 px with rmax 64 at alpha = 1 + 1e-15).
        span = math.log(opt._rmax(h, w) / opt.rmin)
        radius = opt.rmin * torch.exp(torch.log1p(u(_S_RADIUS).double() * math.expm1(e * span)) / e)
    margin = opt._margin(h, w)
    cx = (-margin + u(_S_X).double() * (w - 1 + 2 * margin))
    cy = (-margin + u(_S_Y).double() * (h - 1 + 2 * margin))
    # The background leaf covers everything and is centred on the image.
    radius[:, m], cx[:, m], cy[:, m] = math.inf, (w - 1) / 2, (h - 1) / 2
    return {
        "radius": radius.float(), "cx": cx.float(), "cy": cy.float(),
        "colour": _leaf_colours(opt, seed, index, m),
        "grad_dir": 2 * math.pi * u(_S_GRAD_ANGLE), "grad": opt.shading * (2 * u(_S_GRAD) - 1),
        "tex": opt.texture * u(_S_TEX), "tex_dx": u(_S_TEX_DX), "tex_dy": u(_S_TEX_DY),
        # A grating on a `grating` fraction of leaves, amplitude up to 0.25 (log-brightness).
        "grating": (u(_S_GRATING_ON) < opt.grating).float() * 0.25 * u(_S_GRATING_AMP),
        # Grating periods log-uniform in 3-40 px.
        "grating_f": 1.0 / torch.exp(math.log(3.0) + u(_S_GRATING_F) * math.log(40.0 / 3.0)),
        "grating_dir": math.pi * u(_S_GRATING_ANGLE), "grating_phase": 2 * math.pi * u(_S_GRATING_PHASE),
    }


def _leaf_colours(opt: DeadLeaves, seed: int, index: torch.Tensor, m: int) -> torch.Tensor:
    """Linear RGB leaf colours ``(N, m + 1, 3)``.

    Drawn in CIE Lab to resemble the colour statistics of photographs: lightness broad around the
    middle, chroma mostly small with a blue-yellow (b*) spread larger than red-green (a*) and a
    slight warm bias, and a minority of vivid leaves.
    """
    k = m + 1
    light = (50.0 + 22.0 * rng.normal(seed, index, (k,), _S_L)).clamp(3.0, 97.0)
    vivid = 1.0 + 1.5 * (rng.uniform(seed, index, (k,), _S_VIVID) < opt.vivid).float()
    a = opt.chroma * vivid * 10.0 * rng.normal(seed, index, (k,), _S_A)
    b = opt.chroma * vivid * (4.0 + 14.0 * rng.normal(seed, index, (k,), _S_B))
    lab = torch.stack([light, a, b], dim=1).unsqueeze(-1)  # (N, 3, k, 1) as an image for kornia
    srgb = kc.lab_to_rgb(lab.double(), clip=True)
    return srgb_to_linear(srgb).squeeze(-1).transpose(1, 2)


def _noise_field(seed: int, index: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A Gaussian ``1/f`` (amplitude) noise field per image, zero mean, unit std: ``(N, h, w)``.

    White noise shaped in the Fourier domain; it is periodic, so leaves read it through random
    wrapped offsets and each shows a different texture window.
    """
    white = rng.normal(seed, index, (h, w), _S_FIELD, dtype=torch.float64)
    fy = torch.fft.fftfreq(h, device=index.device, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(w, device=index.device, dtype=torch.float64).view(1, -1)
    f = torch.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = torch.fft.rfft2(white) / f
    spec[..., 0, 0] = 0.0
    field = torch.fft.irfft2(spec, s=(h, w))
    if h * w == 1:  # a one-pixel field is its mean, 0 (no texture); its std would be NaN
        return field
    return field / field.flatten(1).std(dim=1).clamp(min=1e-12).view(-1, 1, 1)


# --------------------------------------------------------------------------- z-buffer


def _zbuffer(leaves: dict, n: int, h: int, w: int, m: int) -> torch.Tensor:
    """Front-most leaf covering each pixel: ``(N, h * w)`` int64 leaf numbers.

    A leaf covers a pixel when the pixel centre is within ``r + 1/2`` of the leaf's centre (so
    partially covered edge pixels count); uncovered pixels get the background leaf ``m``.
    """
    dev = leaves["radius"].device
    radius, cx, cy = leaves["radius"][:, :m], leaves["cx"][:, :m], leaves["cy"][:, :m]
    reach = radius + 0.5
    # Leaves that reach no pixel centre are dropped before any per-pixel work.
    hits = (cx + reach >= 0) & (cx - reach <= w - 1) & (cy + reach >= 0) & (cy - reach <= h - 1)
    item, leaf = hits.nonzero(as_tuple=True)
    # A box of half-size >= max(h, w) is the whole image (see _boxes), so capping it there changes
    # no pixel, and keeps leaves wider than the ladder's top rung (rmin up to 1e6 px) on it.
    half = torch.ceil(reach[item, leaf]).clamp(max=max(h, w)).long()
    ladder = torch.tensor(_LADDER, device=dev)
    rung = torch.bucketize(half, ladder)  # half <= ladder[rung]
    front = torch.full((n * h * w,), m, dtype=torch.int64, device=dev)
    for k in rung.unique().tolist():
        e = int(_LADDER[k])
        sel = (rung == k).nonzero().squeeze(1)
        group = max(1, _PAIRS_PER_CHUNK // (min(2 * e + 1, w) * min(2 * e + 1, h)))  # leaves per batch of boxes
        for part in sel.split(group):  # (the minimum over leaves does not depend on their grouping)
            flat, number = _boxes(item[part], leaf[part], cx, cy, reach, e, h, w, m)
            front.scatter_reduce_(0, flat, number, reduce="amin")
    return front.view(n, h * w)


def _boxes(item, leaf, cx, cy, reach, e, h, w, m):
    """Flat pixel index and covering leaf number (``m`` where not covered) over each leaf's box.

    Each leaf's box of half-size ``e`` is shifted to lie inside the image (the part of the leaf in
    the image stays inside it), so no index falls outside. Returns two flat int64 tensors.
    """
    dev = cx.device
    sx, sy = min(2 * e + 1, w), min(2 * e + 1, h)
    lx, ly = cx[item, leaf], cy[item, leaf]
    x0 = (torch.floor(lx).long() - e).clamp(0, w - sx)
    y0 = (torch.floor(ly).long() - e).clamp(0, h - sy)
    ox, oy = torch.arange(sx, device=dev), torch.arange(sy, device=dev)
    # Squared distances by broadcasting a row of x terms against a column of y terms.
    dx2 = ((x0.view(-1, 1) + ox).float() - lx.view(-1, 1)).square().view(-1, 1, sx)
    dy2 = ((y0.view(-1, 1) + oy).float() - ly.view(-1, 1)).square().view(-1, sy, 1)
    outside = dx2 + dy2 > reach[item, leaf].square().view(-1, 1, 1)  # (L, sy, sx)
    corner = item * (h * w) + y0 * w + x0
    flat = (corner.view(-1, 1, 1) + (oy * w).view(1, -1, 1)) + ox.view(1, 1, -1)
    number = torch.where(outside, m, leaf.view(-1, 1, 1))
    return flat.reshape(-1), number.reshape(-1)


# --------------------------------------------------------------------------- appearance


def _compose(leaves: dict, field: torch.Tensor, n: int, h: int, w: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Occlusion, shading and anti-aliasing: front-leaf map ``(N, h * w)`` and linear image ``(N, 3, h, w)``.

    Pixel maths runs in float64 (rounded to float32 once, by the caller): vectorised and scalar
    kernels differ in the last bit, and which one an item's pixels meet depends on its place in
    the batch; after the final rounding an item comes out the same in any batch or row band.
    """
    # Shaded over the image plus a ring of _RING pixels, so that the outward look-up of an edge
    # pixel on the image border lands on what really lies behind it, not on a pixel clamped back
    # under the same leaf (which left such edges unblended). Image pixels shade as without the ring.
    dev = leaves["radius"].device
    hp, wp = h + 2 * _RING, w + 2 * _RING
    front = _zbuffer({**leaves, "cx": leaves["cx"] + _RING, "cy": leaves["cy"] + _RING}, n, hp, wp, m)
    table = _leaf_table(leaves, h, w)
    xs = torch.arange(-_RING, w + _RING, device=dev, dtype=torch.float64)
    linear = torch.empty(n, 3, h, w, device=dev, dtype=torch.float64)
    for top, end in _bands(n, h, wp):
        # Image rows top .. end - 1 are padded rows top + _RING ..; their look-ups reach _RING rows
        # either way, so padded rows top .. end + 2 _RING - 1 are shaded.
        span = end - top + 2 * _RING
        ys = torch.arange(top - _RING, end + _RING, device=dev, dtype=torch.float64)
        pix = (xs.repeat(span).view(1, -1), ys.repeat_interleave(wp).view(1, -1))
        colour, alpha, (qx, qy) = _shade(table, front[:, top * wp:(top + span) * wp], pix, field, h, w)
        inner = (slice(_RING, _RING + end - top), slice(_RING, _RING + w))  # the band's image pixels
        alpha = alpha.view(n, 1, span, wp)[:, :, inner[0], inner[1]]
        # (image pixels' look-ups stay inside the ring, so inside the shaded rows)
        outward = ((qy + _RING - top) * wp + qx + _RING).view(n, span, wp)[:, inner[0], inner[1]]
        behind = colour.gather(2, outward.reshape(n, 1, -1).expand(-1, 3, -1)).view(n, 3, end - top, w)
        own = colour.view(n, 3, span, wp)[:, :, inner[0], inner[1]]
        linear[:, :, top:end] = alpha * own + (1 - alpha) * behind
    return front.view(n, hp, wp)[:, _RING:_RING + h, _RING:_RING + w].reshape(n, h * w), linear


def _leaf_table(leaves: dict, h: int, w: int) -> torch.Tensor:
    """Per-leaf constants of the shading, ``(N, m + 1, 15)`` float64 (trigonometry done per leaf)."""
    f64 = {k: v.double() for k, v in leaves.items()}
    scale = f64["radius"].clamp(max=float(max(h, w)))
    grad = f64["grad"] / scale
    wave = 2 * math.pi * f64["grating_f"]
    return torch.stack([  # stacked last so the table reads like rows of leaves
        f64["cx"], f64["cy"], f64["radius"],
        grad * torch.cos(f64["grad_dir"]), grad * torch.sin(f64["grad_dir"]),
        f64["tex"], torch.floor(f64["tex_dx"] * w), torch.floor(f64["tex_dy"] * h),
        wave * torch.cos(f64["grating_dir"]), wave * torch.sin(f64["grating_dir"]), f64["grating_phase"],
        f64["grating"], *f64["colour"].unbind(-1),
    ], dim=-1)


def _shade(table: torch.Tensor, which: torch.Tensor, pix, field: torch.Tensor, h: int, w: int):
    """Appearance of leaf ``which[n, p]`` at each pixel ``p`` (``table`` from :func:`_leaf_table`).

    Returns linear colour ``(N, 3, P)``, the leaf's coverage of the pixel ``(N, P)`` and, for
    anti-aliasing, the pixel about 2 px further out along the leaf's radius (``x, y``, each
    ``(N, P)`` int64, at most 2 px from the pixel). Pixel coordinates may lie outside the image
    (the noise field is periodic).
    """
    # One gather from the small per-leaf table, quantity-major so each result is contiguous.
    by_quantity = table.permute(2, 0, 1).contiguous()  # (15, N, m + 1), small
    cols = by_quantity.gather(2, which.unsqueeze(0).expand(by_quantity.shape[0], -1, -1))
    cx, cy, radius, gx, gy, tex, tdx, tdy, kx, ky, phase, grating = cols[:12]
    xx, yy = pix
    dx, dy = xx - cx, yy - cy
    dist = torch.sqrt(dx * dx + dy * dy)
    coverage = (radius - dist + 0.5).clamp(0.0, 1.0)  # 1 for the background leaf (infinite radius)
    # Micro-texture: the image's noise field read at a per-leaf offset, wrapped (periodic field).
    tx = torch.remainder((xx + tdx).long(), w)
    ty = torch.remainder((yy + tdy).long(), h)
    micro = tex * field.flatten(1).gather(1, ty * w + tx)
    # Shading gradient + micro-texture + grating, as a positive multiplicative gain.
    gain = torch.exp(gx * dx + gy * dy + micro + grating * torch.sin(kx * dx + ky * dy + phase))
    # A 2 px step along the radius, rounded to the pixel grid (error <= 0.71 px), still moves > 1 px
    # outward, so from a pixel the leaf only partly covers (d > r - 1/2) it lands past the leaf's
    # reach r + 1/2: on what lies behind.
    step = 2.0 / dist.clamp(min=1e-9)
    outward = (xx + torch.round(dx * step)).long(), (yy + torch.round(dy * step)).long()
    return cols[12:].transpose(0, 1) * gain.unsqueeze(1), coverage, outward


def _defocus(opt: DeadLeaves, linear: torch.Tensor, front: torch.Tensor, index: torch.Tensor, seed: int,
             m: int) -> torch.Tensor:
    """Blur the leaves behind a random depth in a random ``defocus`` fraction of the images."""
    on = rng.uniform(seed, index, (), _S_DEFOCUS_ON) < opt.defocus
    if not bool(on.any()):
        return linear
    lo, hi = opt.defocus_sigma
    sigma = rng.range_uniform(seed, index, lo, hi, (), _S_DEFOCUS_SIGMA).double()
    # Focus on the front 2-30% of the leaf stack: the rest (most of the area) is background.
    depth = (m * (0.02 + 0.28 * rng.uniform(seed, index, (), _S_DEFOCUS_DEPTH))).long()
    k = 2 * math.ceil(3 * hi) + 1
    blurred = kf.gaussian_blur2d(linear, (k, k), torch.stack([sigma, sigma], dim=1).to(linear.dtype))
    far = (front > depth.view(-1, 1, 1, 1)) & on.view(-1, 1, 1, 1)
    return torch.where(far, blurred, linear)
