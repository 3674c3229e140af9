"""Blur kernels from image-plane paths: sub-pixel bilinear splatting weighted by exposure time.

A kernel is the time integral of where the light of one scene point went during the exposure. A
path is a batch of image-plane displacements ``(N, T, 2)`` (x right, y down, pixels) at times
``(N, T)``; between samples the point moves at constant velocity. Each segment is cut into equal
sub-steps under 0.25 px long, each sub-step's midpoint is splatted to its four neighbouring pixels
with bilinear weights, weighted by the exposure time it stands for. The midpoint rule is exact for
the first moment of a piecewise-linear path, and bilinear splatting preserves it, so the kernel's
centre of mass is exactly the path's time-weighted mean.

Kernels are float32 ``(N, h, w)``, non-negative, each summing to 1, with the centre pixel at
``(h // 2, w // 2)`` (the package's convention). A path that does not fit the canvas is never cropped; ``fit``
says what happens instead:

- ``"error"``: raise, naming the first offending item and the size it needs;
- ``"scale"``: shrink the path about its centre until it fits (:func:`fit_scale` gives the factors);
- ``"resample"``: redraw the item from its trajectory model. Only :func:`generate` can do that (it
  holds the model); it redraws item ``i`` with seeds derived from ``(seed, attempt)`` and the same
  item index, so the set stays a pure function of ``(seed, i)``: rejection sampling of the model
  conditioned on fitting. :func:`rasterize` and :func:`kernels` reject it with a message saying so.

Everything runs on the input's device; the work is a single ``index_add_`` into a flat buffer per
piece of the batch, with pieces of at most 2M splats (temporaries of ~100 MB in all). Off
the CPU the buffer holds integers (fixed point, 2^-48 per unit), so the sums are exact and do not
depend on the order of the additions: on CUDA, where ``index_add_`` of floats adds in whatever order
the threads run, the same seed still gives the same bytes.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from typing import Iterator

import torch

from . import rng
from .camera import check_camera, check_in_front, check_short_of_plane, holds_bools
from .nonuniform import check_center
from .trajectory import Trajectory, check_trajectory

FIT_POLICIES = ("error", "scale", "resample")


class KernelFitError(ValueError):
    """A path that does not fit its kernel: under ``fit="error"``, or after ``fit="resample"``'s redraws.

    The message names what to change as parameters (the kernel size, ``fit``), not as options of a
    command line or keys of a recipe: callers that know how the user set them re-phrase it from
    these attributes.

    Attributes:
        item: the item (as the raising call numbers them) whose path does not fit.
        size: ``(h, w)`` of the kernel it was meant for.
        needed: the smallest odd kernel side that holds the path, or None (``fit="resample"``: no
            draw fitted, so no one size is known).
        extent: ``"W x H"`` extent of the path in pixels, or None.
    """

    def __init__(self, message: str, item: int, size: tuple[int, int], needed: int | None = None,
                 extent: str | None = None):
        super().__init__(message)
        self.item, self.size, self.needed, self.extent = item, size, needed, extent

    def __reduce__(self):  # (pickle, e.g. from a worker process, would call __init__ with the message alone)
        return type(self), (self.args[0], self.item, self.size, self.needed, self.extent)


def fit_error_message(what: str, extent: str, size: tuple[int, int], needed: int) -> str:
    """The neutral text of a :class:`KernelFitError` under ``fit="error"``: ``what`` names the path."""
    return (f"{what} spans {extent} px and does not fit a {size[0]}x{size[1]} kernel; make the kernel size "
            f"at least {needed}, or set fit to 'scale' to shrink paths that do not fit")

MAX_STEP_PX = 0.25  # consecutive splats are closer than this
_PIECE_ENTRIES = 1 << 21  # sub-step splats per piece: temporaries <= 16 MB (the 7-column table 56 MB), ~100 MB in all
_F32_INDEX_MAX = 1 << 24  # sub-step indices up to this are exact in float32 (one item may pass it)
# Default chunk on the CPU: as many kernels as fill 16 MiB, at most 4096. A chunk's kernels are
# written and then read again by the later passes; past about this size they fall out of the cache,
# and 4096 kernels per chunk ran 1.4x (64x64), 1.8x (96x96) and 2x (128x128) slower here than this
# rule's 1024, 455 and 256 (which were also faster than half or twice as many).
CHUNK_BYTES = 16 << 20
MAX_CHUNK = 4096
_COUNT_OFFSET = 0.3819660113  # 2 - golden ratio: far from every simple fraction
# Fixed-point unit of the splat buffer. A float32 splat value v >= 2**-24 times 2**48 is already an
# integer, so the conversion is exact; a bin's total (at most an item's whole weight, 1) stays far
# below 2**53, so the float64 read-back is exact too and the only rounding is the final one to float32.
_FIXED = float(2 ** 48)
_FIT_TOL_PX = 1e-3  # float rounding allowance when testing whether a path touches the canvas edge


def _size(size) -> tuple[int, int]:
    """``int`` or ``(h, w)`` (Python or NumPy integers) to a validated ``(h, w)`` pair of Python ints."""
    pair = (size, size) if rng.is_integer(size) else size
    try:
        pair = () if isinstance(pair, (str, bytes)) else tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(rng.is_integer(v) and v >= 3 for v in pair):
        raise ValueError(f"size (the kernel size) must be an int or (h, w) of ints >= 3, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_path(path_px: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(path_px) or path_px.ndim != 3 or path_px.shape[-1] != 2 or path_px.shape[1] < 1:
        shape = tuple(path_px.shape) if torch.is_tensor(path_px) else type(path_px).__name__
        raise ValueError(f"path_px must be an (N, T, 2) tensor of pixel displacements, got {shape}")
    if not bool(torch.isfinite(path_px).all()):
        raise ValueError("path_px contains NaN or infinite values")
    # contiguous: the sums that centre the path ran in another order over a transposed (or otherwise strided)
    # path, and its kernel differed from its copy's in the last bits (4e-8), where an item's kernel must not
    # depend on how its values are laid out
    return path_px.float().contiguous()


def _segment_weights(t: torch.Tensor | None, path: torch.Tensor) -> torch.Tensor:
    """``(N, T-1)`` share of the exposure each segment stands for (rows sum to 1).

    ``t=None`` means evenly spaced samples. An item whose times do not advance (zero exposure)
    weighs its segments equally.
    """
    n, steps = path.shape[:2]
    if t is None:
        return torch.full((n, steps - 1), 1.0 / (steps - 1), device=path.device, dtype=torch.float32)
    t = torch.as_tensor(t, device=path.device)
    # Differences in float64 times are taken in float64: rounded to float32 first, timestamps (seconds
    # since an epoch, 1.7e9) lost their durations to rounding; float32 times give the same values as before.
    t = (t if t.dtype == torch.float64 else t.to(torch.float32)).contiguous()  # (as the path: see _check_path)
    if t.shape != (n, steps):
        raise ValueError(f"t must be ({n}, {steps}) sample times matching path_px, got {tuple(t.shape)}")
    dt = t[:, 1:] - t[:, :-1]
    if not bool((dt >= 0).all()) or not bool(torch.isfinite(dt).all()):
        raise ValueError("t must be finite and non-decreasing along each path")
    total = dt.sum(1, keepdim=True)
    moving = total > 0  # (dividing by 1 where it is not keeps NaN out of gradients, for any total)
    return torch.where(moving, dt / torch.where(moving, total, 1.0), torch.full_like(dt, 1.0 / (steps - 1))).float()


@dataclass
class _Prepared:
    offset: torch.Tensor  # (N, T, 2) displacement from the centre pixel, pixels
    weight: torch.Tensor  # (N, T-1) exposure share of each segment
    lo: torch.Tensor  # (N, 2) extent of the path
    hi: torch.Tensor
    room_lo: torch.Tensor  # (2,) how far the canvas reaches left/up of the centre (x, y)
    room_hi: torch.Tensor


def _prepare(path_px, size, t, center) -> _Prepared:
    h, w = _size(size)
    check_center(center)  # (center="no" is truthy: it centred, and center=None placed the path as given)
    path = _check_path(path_px)
    if path.shape[1] == 1:  # a single pose: a still point held for the whole exposure
        path, t = path.repeat(1, 2, 1), None
    weight = _segment_weights(t, path)
    if center:
        # Subtract the first point first so that large absolute positions do not cost precision.
        rel = path - path[:, :1]
        mean = (0.5 * (rel[:, :-1] + rel[:, 1:]) * weight[..., None]).sum(1, keepdim=True)
        offset = rel - mean
    else:
        offset = path
    dev = path.device
    room_lo = torch.tensor([w // 2, h // 2], device=dev, dtype=torch.float32)
    room_hi = torch.tensor([w - 1 - w // 2, h - 1 - h // 2], device=dev, dtype=torch.float32)
    return _Prepared(offset, weight, offset.amin(1), offset.amax(1), room_lo, room_hi)


def _scale_of(p: _Prepared) -> torch.Tensor:
    """``(N,)`` largest factor <= 1 that brings every point of the path inside the canvas."""
    big = torch.finfo(torch.float32).max
    s_lo = torch.where(p.lo < 0, p.room_lo / (-p.lo).clamp_min(1e-30), big)
    s_hi = torch.where(p.hi > 0, p.room_hi / p.hi.clamp_min(1e-30), big)
    return torch.minimum(s_lo, s_hi).amin(1).clamp(max=1.0)


def _fits_of(p: _Prepared) -> torch.Tensor:
    return ((p.lo >= -p.room_lo - _FIT_TOL_PX) & (p.hi <= p.room_hi + _FIT_TOL_PX)).all(1)


def fits(path_px: torch.Tensor, size, t: torch.Tensor | None = None, center: bool = True) -> torch.Tensor:
    """``(N,)`` bool: whether each path fits a ``size`` canvas without scaling (see :func:`rasterize`)."""
    return _fits_of(_prepare(path_px, size, t, center))


def fit_scale(path_px: torch.Tensor, size, t: torch.Tensor | None = None, center: bool = True) -> torch.Tensor:
    """``(N,)`` float32 factor in ``(0, 1]`` that ``fit="scale"`` applies to each path (1 = fits as is).

    With ``center=True`` the path shrinks about its time-weighted mean, so the kernel stays centred;
    with ``center=False`` it shrinks about displacement 0 (the centre pixel).
    """
    return _scale_of(_prepare(path_px, size, t, center))


def rasterize(path_px: torch.Tensor, size, t: torch.Tensor | None = None, fit: str = "error",
              center: bool = True) -> torch.Tensor:
    """Rasterise image-plane paths into blur kernels.

    Args:
        path_px: ``(N, T, 2)`` displacements ``(x, y)`` in pixels (any float dtype, any device).
        size: kernel size, an int or ``(h, w)`` (Python or NumPy integers), each >= 3 (odd sizes put the centre on a pixel, as
            the package's convention requires; even sizes are accepted and centre on ``(h // 2, w // 2)``).
        t: ``(N, T)`` non-decreasing sample times (seconds, or any unit); each segment is weighted by
            its duration. None means evenly spaced samples.
        fit: ``"error"`` or ``"scale"`` for paths that do not fit (see the module docstring);
            ``"resample"`` needs the trajectory model: use :func:`generate`.
        center: True puts the path's time-weighted mean on the centre pixel (centre of mass exactly
            there); False places the path as given, displacement 0 on the centre pixel (local kernels
            of a spatially varying blur).

    Returns:
        ``(N, h, w)`` float32 on the path's device, non-negative, each summing to 1.

    Raises:
        ValueError: bad shapes or values; :class:`KernelFitError` (a ValueError) under ``fit="error"``
            for a path larger than the canvas.
        TypeError: a ``center`` that is not True or False (as for :func:`fits` and :func:`fit_scale`).
    """
    return _rasterize(path_px, size, t, fit, center)


def _rasterize(path_px, size, t, fit, center, first_index: int = 0) -> torch.Tensor:
    """:func:`rasterize`; ``first_index`` is the global index of item 0 (for error messages)."""
    if fit not in FIT_POLICIES:
        raise ValueError(f"fit must be one of {FIT_POLICIES}, got {fit!r}")
    if fit == "resample":
        raise ValueError("fit='resample' redraws trajectories and needs their model: use "
                         "blursynth.kernel.generate(model, ...), or fit='scale' / a bigger kernel size here")
    h, w = _size(size)
    p = _prepare(path_px, size, t, center)
    offset = p.offset
    if fit == "error":
        bad = ~_fits_of(p)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            need = 2 * int(math.ceil(float(torch.maximum(-p.lo[i], p.hi[i]).max()))) + 1
            item, extent = first_index + i, _extent(p, i)
            raise KernelFitError(fit_error_message(f"path of item {item}", extent, (h, w), need), item, (h, w),
                                 need, extent)
    else:
        offset = offset * _scale_of(p)[:, None, None]
    return _splat(offset, p.weight, h, w)


def _extent(p: _Prepared, i: int) -> str:
    span = (p.hi[i] - p.lo[i]).tolist()
    return f"{span[0]:.1f} x {span[1]:.1f}"


def _splat(offset: torch.Tensor, weight: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Densify and splat ``(N, T, 2)`` offsets (already inside the canvas) with ``(N, T-1)`` weights."""
    n, steps = offset.shape[:2]
    seg = offset[:, 1:] - offset[:, :-1]
    # Sub-steps per segment, chosen per segment so an item's kernel does not depend on its batch.
    # The count jumps by one where a segment's length crosses a threshold, which changes the kernel
    # (by up to ~1e-2 of a value where one short segment carries the whole exposure; 1.7e-4 seen on
    # a 6 px segment). Plain floor(L / MAX_STEP_PX) + 1 puts the thresholds at multiples of 0.25 px,
    # the very lengths hand-made and axis-aligned paths have, where float rounding (a translated copy
    # of the path) then flips the count. Shifting them by an irrational fraction of a step keeps them
    # off round lengths while every sub-step stays shorter than MAX_STEP_PX.
    count = (seg.norm(dim=-1) * (1.0 / MAX_STEP_PX) + _COUNT_OFFSET).long() + 1  # (N, T-1)
    per_item = count.sum(1)
    # Exact integer sums off the CPU, where float index_add_ adds in thread order and its last bits
    # vary from run to run. The CPU adds in index order (the same every run) and floats are faster
    # there (the integer conversion cost 15-25% of kernel generation). Float sums also where a
    # gradient must reach the path (ShakeKernels learns its scale): integers are not differentiable.
    exact = offset.device.type != "cpu" and not (
        torch.is_grad_enabled() and (offset.requires_grad or weight.requires_grad))
    out = torch.zeros(n * h * w, device=offset.device, dtype=torch.int64 if exact else torch.float32)
    centre = torch.tensor([w // 2, h // 2], device=offset.device, dtype=torch.float32)
    start = offset[:, :-1] + centre  # segment starts in canvas coordinates
    # Pieces of whole items with a bounded number of splat entries keep the temporaries small.
    ends = torch.cumsum(per_item, 0).tolist()
    a = 0
    while a < n:
        base = ends[a - 1] if a else 0
        b = max(a + 1, bisect.bisect_right(ends, base + _PIECE_ENTRIES, lo=a))
        _splat_piece(out[a * h * w: b * h * w], start[a:b], seg[a:b], count[a:b], weight[a:b], h, w)
        a = b
    return ((out.double() / _FIXED).float() if exact else out).view(n, h, w)


def _splat_piece(out, start, seg, count, weight, h, w) -> None:
    n, segments = count.shape
    flat_count = count.reshape(-1)
    # Per segment: start x, y, step x, y, exposure share, sub-steps, index of its first sub-step.
    # Each sub-step reads its segment's row; one gather of rows was 3x faster than one per column.
    first = torch.cumsum(flat_count, 0) - flat_count
    rows = torch.stack([start[..., 0].reshape(-1), start[..., 1].reshape(-1), seg[..., 0].reshape(-1),
                        seg[..., 1].reshape(-1), weight.reshape(-1).to(start.dtype), flat_count.to(start.dtype),
                        first.to(start.dtype)], 1)
    if bool((flat_count == 1).all()):  # every segment short: one sub-step at its midpoint
        owner = None
        frac = torch.full_like(flat_count, 0.5, dtype=torch.float32)
        mass = rows[:, 4]
    else:
        owner = torch.repeat_interleave(torch.arange(n * segments, device=out.device), flat_count)
        rows = rows.index_select(0, owner)
        if owner.shape[0] <= _F32_INDEX_MAX:  # the first indices and the arange are exact in float32
            step = torch.arange(owner.shape[0], device=out.device, dtype=rows.dtype) - rows[:, 6]
        else:  # (a piece holds at least one whole item, and one long path can pass 2**24 sub-steps)
            step = (torch.arange(owner.shape[0], device=out.device) - first[owner]).to(rows.dtype)
        c = rows[:, 5]
        frac = (step + 0.5) / c  # sub-step k of c sits at (k + 0.5) / c along its segment
        mass = rows[:, 4] / c

    x = (rows[:, 0] + frac * rows[:, 2]).clamp_(0, w - 1)
    y = (rows[:, 1] + frac * rows[:, 3]).clamp_(0, h - 1)
    del rows, frac  # (the largest temporaries: 28 bytes per sub-step)
    x0 = x.floor().clamp_(max=w - 2)
    y0 = y.floor().clamp_(max=h - 2)
    fx = x - x0
    fy = y - y0
    item = torch.arange(n, device=out.device).repeat_interleave(segments) if owner is None else owner // segments
    i00 = item * (h * w) + (y0 * w + x0).long()
    top, bottom = mass * (1 - fy), mass * fy
    for shift, v in ((0, top * (1 - fx)), (1, top * fx), (w, bottom * (1 - fx)), (w + 1, bottom * fx)):
        out.index_add_(0, i00 + shift, (v * _FIXED).round_().long() if out.dtype == torch.int64 else v)


def kernel_paths(trajectory: Trajectory, camera=None, depth_m: float | torch.Tensor = math.inf) -> torch.Tensor:
    """``(N, T, 2)`` float32 image-plane path of the principal point (the uniform kernel's path), in
    pixels, on the trajectory's device.

    A 2-D trajectory's ``path_px`` is returned as is (``camera`` may be None); a 6-DoF trajectory
    needs a :class:`~blursynth.camera.Camera` (else a ValueError). ``depth_m``: scene depth in metres
    (> 0, a float or ``(N,)`` tensor; ``inf`` ignores translation).
    """
    check_trajectory(trajectory)
    if trajectory.is_2d:
        return trajectory.path_px
    if camera is None:
        raise ValueError("a 6-DoF trajectory needs a Camera to project it (camera=Camera(focal_px, w, h))")
    check_camera(camera)
    return _principal_point_path(trajectory, float(camera.focal_px), depth_m, camera.principal_point)


def _principal_point_path(trajectory: Trajectory, focal_px: float, depth_m,
                          principal_point: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Closed form of ``Camera.center_path`` for the principal point, ~20x faster (the hot path).

    Like ``Camera.center_path`` it raises :class:`~blursynth.camera.BehindCameraError` (naming
    ``principal_point``, pixels) where the principal point's scene point is at or behind the camera.

    The principal point's ray is ``e_z``; at time t its scene point is seen along ``R^T (e_z - c / d)``
    (camera.py's convention), and the pixel displacement is ``f (v_x, v_y) / v_z``. ``R^T u`` comes from
    Rodrigues' formula for the rotation vector ``r``: ``u cos a - sinc(a) (r x u) + (1 - cos a) / a^2
    (r . u) r`` with ``a = |r|``, using Taylor series for tiny angles (no 0/0, no float64 needed: every
    term is first order or higher, so nothing cancels).
    """
    t = trajectory.t
    n, steps = t.shape
    # float32 arithmetic (the models' poses), float64 for float64 poses; float16 and bfloat16 poses are
    # taken in float32: mixed with the float32 depth they failed in the cross product ("expected scalar
    # type Half but found Float"), and the half types' few bits would cost the tiny angles their precision
    poses = [x for x in (trajectory.rotation, trajectory.translation) if x is not None]
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in poses) else torch.float32
    r = trajectory.rotation.to(dtype) if trajectory.rotation is not None else \
        torch.zeros(n, steps, 3, device=t.device, dtype=dtype)
    u = None  # the ray e_z, unless the camera's translation moves it (a scene at a finite depth)
    if trajectory.translation is not None:
        try:
            if holds_bools(depth_m):
                raise TypeError
            given = torch.as_tensor(depth_m, device=t.device, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):  # ("far": torch's words did not name it)
            raise ValueError(f"depth_m must be positive metres, a float or an ({n},) tensor (inf = distant scene), "
                             f"got {depth_m!r}") from None
        if given.shape[0] not in (1, n) or not bool((given > 0).all()):
            raise ValueError(f"depth_m must be positive metres, a float or an ({n},) tensor (inf = distant scene), "
                             f"got {depth_m!r}")
        depth = given.to(dtype)
        if not bool(torch.isinf(depth).all()):
            translation = trajectory.translation.to(dtype)
            check_short_of_plane(translation[..., 2], depth.reshape(-1, 1))
            u = torch.zeros_like(r)
            u[..., 2] = 1.0
            u = u - translation / depth.reshape(-1, 1, 1)
    a2 = (r * r).sum(-1, keepdim=True)
    small = a2 < 1e-4
    a = a2.sqrt()
    safe = torch.where(small, torch.ones_like(a), a)
    sinc = torch.where(small, 1 - a2 / 6 + a2 * a2 / 120, torch.sin(safe) / safe)
    cosc = torch.where(small, 0.5 - a2 / 24 + a2 * a2 / 720, (1 - torch.cos(safe)) / (safe * safe))
    cos = 1 - a2 * cosc
    if u is None:  # the same terms with u = e_z written out (r x e_z = (r_y, -r_x, 0)): half the time
        rx, ry, rz = r.unbind(-1)
        sinc, cosc, cos = sinc[..., 0], cosc[..., 0], cos[..., 0]
        along = cosc * rz
        v = torch.stack([along * rx - sinc * ry, sinc * rx + along * ry, cos + along * rz], -1)
    else:
        v = u * cos - sinc * torch.linalg.cross(r, u) + cosc * (r * u).sum(-1, keepdim=True) * r
    # A camera turned (or moved) to face away from the scene point: f v / v_z is then its mirror image,
    # a finite path that made a kernel where the camera and the projective renderer refuse the motion.
    check_in_front(v[..., 2:], torch.tensor([principal_point], dtype=torch.float64), t, "the scene point of pixel")
    return (focal_px * v[..., :2] / v[..., 2:]).float()


def kernels(trajectory: Trajectory, camera=None, size=31, depth_m: float | torch.Tensor = math.inf,
            fit: str = "error") -> torch.Tensor:
    """Uniform blur kernels of a trajectory batch: the principal point's path, rasterised and centred.

    Args:
        trajectory: N items (6-DoF or 2-D).
        camera: a :class:`~blursynth.camera.Camera` (ignored for 2-D trajectories).
        size: kernel size, int or ``(h, w)``.
        depth_m: scene depth in metres (float or ``(N,)``); ``inf`` ignores translation.
        fit: ``"error"`` or ``"scale"`` (``"resample"`` needs :func:`generate`).

    Returns:
        ``(N, h, w)`` float32 on the trajectory's device, non-negative, each summing to 1.
    """
    return rasterize(kernel_paths(trajectory, camera, depth_m), size, trajectory.t, fit=fit)


@dataclass
class KernelChunk:
    """One chunk of :func:`generate`: items ``start .. start + len(kernels) - 1``.

    ``trajectory.params`` carries the model's drawn scalars plus ``fit_scale`` (factor applied by
    ``fit="scale"``, else 1) and ``redraws`` (times the item was redrawn by ``fit="resample"``).
    """

    start: int
    kernels: torch.Tensor  # (n, h, w) float32
    trajectory: Trajectory
    paths_px: torch.Tensor | None = None  # (n, T, 2) principal-point paths the kernels were made from (before fit_scale)


def redraw_seed(seed: int, attempt: int) -> int:
    """Seed of the ``attempt``-th redraw (attempt >= 1) under ``fit="resample"``: a pure function of both."""
    return rng._python_mix(rng._python_mix(rng.check_seed(seed)) ^ rng._python_mix(0x5EED0000 + attempt)) >> 1


def default_chunk(size, device: torch.device | str | None = "cpu") -> int:
    """Kernels per chunk when none is given: on the CPU (``device`` None too, as
    :func:`blursynth.rng.as_index` reads it) as many ``size`` kernels as fill :data:`CHUNK_BYTES`
    (16 MiB), between 1 and :data:`MAX_CHUNK` (4096 at 31x31, 1024 at 64x64); elsewhere (a GPU,
    where larger batches only help) :data:`MAX_CHUNK`."""
    h, w = _size(size)
    if device is not None and torch.device(device).type != "cpu":
        return MAX_CHUNK
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // (4 * h * w)))


def generate(model, n: int, camera=None, size=31, seed: int = 0, start: int = 0, chunk: int | None = None,
             fit: str = "resample", depth_m: float = math.inf, device: torch.device | str = "cpu",
             max_redraws: int = 64) -> Iterator[KernelChunk]:
    """Generate kernels ``start .. start + n - 1`` of a trajectory model in chunks of bounded memory.

    Args:
        model: a trajectory model with ``sample_items(index, seed)`` (:class:`~blursynth.trajectory.CameraShake`,
            :class:`~blursynth.trajectory.RandomWalk2D`).
        n: number of kernels (>= 1); camera: needed for 6-DoF models; size: int or ``(h, w)``.
        start: index of the first item (>= 0), as in the models' ``sample``.
        seed: base seed; item i depends only on ``(seed, i)`` whatever ``chunk`` and ``device``.
        chunk: items per chunk (memory: ``chunk * h * w * 4`` bytes of kernels plus pieces of at
            most ~100 MB of temporaries); None: :func:`default_chunk`, the fastest here.
        fit: ``"error"``, ``"scale"`` or ``"resample"`` (redraw items that do not fit, see module doc).
        depth_m: scene depth in metres for the translation part of 6-DoF motion.
        device: where the work runs; the chunks stay there.
        max_redraws: give up on an item after this many redraws (>= 0; the message suggests a bigger size).

    Yields:
        :class:`KernelChunk` per chunk, in order.
    """
    if fit not in FIT_POLICIES:
        raise ValueError(f"fit must be one of {FIT_POLICIES}, got {fit!r}")
    _check_model(model)
    if not rng.is_integer(n) or n < 1:
        raise ValueError(f"number of kernels must be a positive integer, got {n!r}")
    if not rng.is_integer(start) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    if chunk is not None and (not rng.is_integer(chunk) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
    if not rng.is_integer(max_redraws) or max_redraws < 0:
        raise ValueError(f"max_redraws must be a non-negative integer, got {max_redraws!r}")
    _size(size)
    seed = rng.check_seed(seed)  # (before default_chunk reads the device, as when a chunk is given)
    n, start, chunk = int(n), int(start), int(default_chunk(size, device) if chunk is None else chunk)
    for a in range(start, start + n, chunk):
        index = rng.as_index(range(a, min(start + n, a + chunk)), device=device)
        ones = torch.ones(len(index), device=index.device, dtype=torch.float32)
        if fit == "resample":
            traj, paths, redraws, prep = _sample_fitting(model, index, seed, size,
                                                         lambda tr, where: kernel_paths(tr, camera, depth_m),
                                                         max_redraws)
            scale = ones
            kern = _splat(prep.offset, prep.weight, *_size(size))  # (every path fits: no check to repeat)
        else:
            traj = model.sample_items(index, seed)
            paths = kernel_paths(traj, camera, depth_m)
            redraws = torch.zeros_like(ones)
            scale = fit_scale(paths, size, traj.t) if fit == "scale" else ones
            kern = _rasterize(paths, size, traj.t, fit, True, a)
        traj.params["fit_scale"] = scale
        traj.params["redraws"] = redraws
        yield KernelChunk(start=a, kernels=kern, trajectory=traj, paths_px=paths)


def _check_model(model) -> None:
    """Refuse what is not a trajectory model: the class itself (``CameraShake`` for ``CameraShake()``) failed
    deep in its sampling with "'Tensor' object has no attribute 'exposure_s'", anything else with an AttributeError."""
    if isinstance(model, type):
        raise TypeError(f"model must be a trajectory model, an instance such as {model.__name__}(); got the class "
                        f"{model.__name__} itself")
    if not callable(getattr(model, "sample_items", None)):
        raise TypeError(f"model must be a trajectory model with sample_items(index, seed), such as CameraShake() or "
                        f"RandomWalk2D(); got {type(model).__name__}")


def sample_fitting(model, index: torch.Tensor, seed: int, size, paths_of, max_redraws: int = 64):
    """Items ``index`` of a trajectory model, conditioned on their path fitting a ``size`` kernel.

    Items whose path does not fit are redrawn with :func:`redraw_seed` ``(seed, attempt)`` and the same
    index, so the result stays a pure function of ``(seed, i)`` (rejection sampling).

    Args:
        model: has ``sample_items(index, seed) -> Trajectory``.
        paths_of: ``paths_of(trajectory, where) -> (len(where), T, 2)`` image-plane paths of a
            trajectory whose items are ``index[where]`` (``where`` indexes the batch; callers whose
            projection differs per item, e.g. a per-item focal length, select with it).
        max_redraws: give up after this many redraws (the message suggests what to change).

    Returns:
        ``(trajectory, paths, redraws)``: redraws ``(N,)`` float, the attempt that produced each item.
    """
    _check_model(model)
    return _sample_fitting(model, index, seed, size, paths_of, max_redraws)[:3]


def _sample_fitting(model, index, seed, size, paths_of, max_redraws):
    """:func:`sample_fitting`, and the paths' :class:`_Prepared` (centred), which :func:`generate`
    splats without preparing them a second time."""
    traj = model.sample_items(index, seed)
    paths = paths_of(traj, torch.arange(len(index), device=index.device))
    redraws = torch.zeros(len(index), device=index.device, dtype=torch.float32)
    prep = _prepare(paths, size, traj.t, True)
    bad = ~_fits_of(prep)
    attempt = 0
    while bool(bad.any()):
        attempt += 1
        if attempt > max_redraws:
            i = int(index[bad.nonzero()[0, 0]])
            hw = _size(size)
            raise KernelFitError(f"item {i}: no path out of {max_redraws + 1} draws fits a {hw[0]}x{hw[1]} kernel; "
                                 "make the kernel size bigger or the exposures shorter, or set fit to 'scale'",
                                 i, hw)
        where = bad.nonzero()[:, 0]
        sub = model.sample_items(index[where], redraw_seed(seed, attempt))
        sub_paths = paths_of(sub, where)
        traj = traj.replace_items(where, sub)
        paths = paths.index_put((where,), sub_paths)  # (copies: the caller's tensors are left as they were)
        redraws[where] = attempt
        sub_prep = _prepare(sub_paths, size, sub.t, True)
        prep = replace(prep, **{f: getattr(prep, f).index_put((where,), getattr(sub_prep, f))
                                for f in ("offset", "weight", "lo", "hi")})  # (room_*: the canvas's, shared)
        bad = bad.index_put((where,), ~_fits_of(sub_prep))
    return traj, paths, redraws, prep
