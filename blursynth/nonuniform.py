"""Projective (spatially varying) camera-shake blur: the exposure integral of homography warps.

A camera that rotates about its optical axis, or translates in front of a near scene, blurs every
pixel differently. The exact image is the time integral over the exposure of the sharp image warped by
the per-time homographies ``H(t)`` of :meth:`blursynth.camera.Camera.homographies` (Whyte et al. 2012,
Köhler et al. 2012):

    B(p) = sum_j w_j L(H_j^-1 p),     w_j = share of the exposure that sample j stands for.

:func:`render_nonuniform` computes this sum with bilinear ``grid_sample`` warps (what kornia's
``warp_perspective`` does, with a cheaper grid), over poses spaced so that no image point moves more
than ``max_step_px`` between them (a coarser sum leaves ghost copies instead of a streak).
:func:`kernels_at` gives the local blur kernels at chosen pixels, from the same poses and centring,
so the two agree.

Centring: with ``center=True`` the whole frame is shifted by the exposure-weighted mean displacement of
the principal point, the same shift that makes the frame's uniform kernel centred (the kernel convention), so a
motion that is uniform in practice renders like ``blur(image, centred kernel)``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from . import rng
from .camera import BehindCameraError, Camera, as_points, check_camera, check_in_front, holds_bools
from .trajectory import Trajectory, check_trajectory


# Pixels warped per grid_sample call off the CPU (the poses of one call times the batch's pixels).
# On an H100 one pose per call spent most of the time in launches: 86 images/s at 1280x720, 132 with
# 8 poses per call, where the poses' arithmetic on the CPU becomes the larger part. On the CPU one
# pose per call is fastest (the temporaries stay in cache).
WARP_PIXELS = 8 * 1280 * 720
# Fewest pose intervals of a moving camera (see motion_samples).
MIN_INTERVALS = 3
# Longest path, in pixels, that a point of the frame may travel over the exposure. Hand-held shake
# moves points by tens to a few thousand pixels; a camera turned to within a hair of 90 degrees from
# part of the scene sends its image towards infinity, and densifying that path asked for gigabytes.
MAX_MOTION_PX = 100_000
# Most poses one item's motion is cut into (densify's samples). The largest motion at the default step
# takes 800,000 (motion_samples densifies to a quarter of the step); a tiny max_step_px (1e-9) on an
# ordinary shake asked for billions, and the process was killed for its memory.
MAX_POSES = 1_000_000
# Most rounds of densify's cutting (see there).
MAX_CUTS = 8
# grid_sample's padding modes, checked before any work (its own message names its internals).
PADDING_MODES = ("reflection", "border", "zeros")


def exposure_weights(t: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` weights summing to 1: the share of the exposure each sample stands for, of ``t``'s
    dtype (float32 for integer times) and device.

    Trapezoidal rule on the (possibly uneven) sample times ``t`` ``(N, T)`` seconds; a zero-length
    exposure weighs its samples as if they were evenly spaced (its segments equally, as
    :func:`blursynth.kernel.rasterize` does, so the centring shift stays the kernel's centre of mass).
    """
    if not t.is_floating_point():  # (integer times, e.g. an arange of frame numbers: "result type Float can't
        t = t.float()               # be cast to the desired output type Long", in render_nonuniform too)
    dt = t[:, 1:] - t[:, :-1]
    w = torch.zeros_like(t)
    w[:, :-1] += dt / 2
    w[:, 1:] += dt / 2
    total = w.sum(1, keepdim=True)
    # (not 1 / T per sample: that put the centre of a zero-length exposure's renders and local kernels
    # off the centre of mass of its uniform kernel)
    equal = torch.ones_like(w)
    if t.shape[1] > 1:
        equal[:, [0, -1]] = 0.5
    equal = equal / equal.sum(1, keepdim=True)
    moving = total > 0  # (dividing by 1 where it is not keeps NaN out of gradients, for any total)
    return torch.where(moving, w / torch.where(moving, total, 1.0), equal)


def _probe_points(camera: Camera, device) -> torch.Tensor:
    """``(P, 2)`` pixels where the largest motion of a frame is found: corners, edge midpoints, centre."""
    xs = [0.0, (camera.width - 1) / 2, camera.width - 1.0]
    ys = [0.0, (camera.height - 1) / 2, camera.height - 1.0]
    return torch.tensor([[x, y] for y in ys for x in xs], device=device, dtype=torch.float32)


def _interpolate(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Insert ``steps[k] - 1`` linearly interpolated samples in segment k of ``x`` ``(N, T, ...)``.

    Sample ``j`` of segment ``k`` is ``x[k] + (j / steps[k]) (x[k+1] - x[k])``, all segments at once
    (a loop over segments cost 32 ms for a 464-sample trajectory at 1280x720)."""
    steps = steps.to(x.device)
    seg = torch.repeat_interleave(torch.arange(len(steps), device=x.device), steps)  # segment of each sample
    j = torch.arange(len(seg), device=x.device) - (torch.cumsum(steps, 0) - steps)[seg]
    frac = (j.to(x.dtype) / steps[seg].to(x.dtype)).reshape(1, -1, *([1] * (x.ndim - 2)))
    a, b = x[:, seg], x[:, seg + 1]
    return torch.cat([a + frac * (b - a), x[:, -1:]], dim=1)


def densify(trajectory: Trajectory, camera: Camera, depth_m: float | torch.Tensor = math.inf,
            max_step_px: float = 0.5) -> Trajectory:
    """Insert interpolated poses so no probe pixel of the frame moves more than ``max_step_px`` per step.

    Poses (rotation vectors, translations, or 2-D paths) and times are interpolated linearly within each
    segment; every item of the batch gets the same subdivision (the largest any item needs), so the
    result stays one ``(N, T', ...)`` batch. The probes are the corners, edge midpoints and centre of
    ``camera``'s frame (motion over a frame is largest at its border for shake-sized rotations).
    An item whose times do not advance (a zero-length exposure) is first given evenly spaced times
    from 0 to 1: its segments then keep equal shares of the exposure, as :func:`blursynth.kernel.rasterize`
    gives them, however finely they are cut.

    Returns:
        A :class:`Trajectory` with ``T' >= T`` samples on the same device, same ``params``.
    """
    return _densify(trajectory, camera, depth_m, max_step_px)[0]


def _check_step(max_step_px: float) -> None:
    # (a string failed in the comparison without a name; inf took 4 poses whatever the motion: ghosts, no streak)
    step = max_step_px
    if torch.is_tensor(step) and step.numel() == 1 and not (step.is_complex() or step.dtype == torch.bool):
        step = step.item()
    step = rng.as_real(step)
    if step is None or not 0 < step < math.inf:
        raise ValueError(f"max_step_px must be a finite number > 0 (pixels), got {max_step_px!r}")


def _check_poses(poses: float, motion_px: float) -> None:
    if poses > MAX_POSES:
        raise ValueError(f"max_step_px: cutting this motion ({motion_px:.3g} px along its worst path) into steps that "
                         f"short takes {poses:.3g} poses, more than {MAX_POSES:,}, and memory grows with them; raise "
                         "max_step_px (0.5 px, the default, leaves no visible ghosts)")


def check_center(center) -> None:
    """Raise a TypeError unless ``center`` is True or False (a bool, NumPy bool or one-element bool tensor);
    shared with :mod:`blursynth.kernel`, whose rasterizer takes the same switch."""
    if not (isinstance(center, (bool, np.bool_)) or torch.is_tensor(center) and center.dtype == torch.bool
            and center.numel() == 1):  # (center="no" is truthy: it centred)
        raise TypeError(f"center must be True or False, got {center!r}")


def _check_motion(trajectory: Trajectory) -> None:
    """Refuse a trajectory the exposure integral cannot be taken over: no samples, sample times that are
    not finite and non-decreasing (they weigh the poses: decreasing ones gave negative weights), or
    poses that are not finite."""
    t = trajectory.t
    if t.shape[1] < 1:
        raise ValueError("the trajectory has no samples (T = 0); a motion needs at least one pose")
    if not (bool(torch.isfinite(t).all()) and bool((t[:, 1:] >= t[:, :-1]).all())):
        raise ValueError("trajectory.t must be finite sample times in seconds, non-decreasing along each item")
    for name in ("rotation", "translation", "path_px"):
        pose = getattr(trajectory, name)
        if pose is not None and not bool(torch.isfinite(pose).all()):
            raise ValueError(f"trajectory.{name} contains NaN or infinite values")


def _densify(trajectory: Trajectory, camera: Camera, depth_m, max_step_px: float) -> tuple[Trajectory, torch.Tensor]:
    """:func:`densify`, and the probe pixels' positions ``(N, T', P, 2)`` along the result (reused by
    :func:`motion_samples` instead of projecting again)."""
    # (each public caller's first step: None or a tensor of poses failed as "'NoneType' object has no attribute 'width'")
    check_trajectory(trajectory)
    check_camera(camera)
    _check_step(max_step_px)
    _check_motion(trajectory)
    probes = _probe_points(camera, trajectory.t.device)
    still = trajectory.t[:, -1] <= trajectory.t[:, 0]
    if trajectory.t.shape[1] > 1 and bool(still.any()):
        # Cut into equal-time pieces, a zero-length exposure's segments would share its weight by their
        # number of pieces, i.e. by their length in pixels, not equally as in its uniform kernel.
        even = torch.linspace(0, 1, trajectory.t.shape[1], dtype=trajectory.t.dtype, device=trajectory.t.device)
        trajectory = replace(trajectory, t=torch.where(still[:, None], even, trajectory.t))
    # Pixel motion is not exactly linear in the interpolated pose (a rotation's image moves on a slight
    # curve), so a segment cut by its chord length can still exceed the step by a hair: re-measure and
    # cut again until every step is within bounds (one extra pass in practice, two at most measured).
    for cuts in range(MAX_CUTS + 1):
        pos = camera.project(trajectory, probes, depth_m)  # (N, T, P, 2)
        step = _worst_steps(pos)  # (T-1,) worst over batch and probes
        # One float32 test for both the exit and the cut: a step a hair over a step size not exact in
        # float32 (0.05) once passed float(step) > 0.05 while step / 0.05 rounded to 1, looping forever.
        over = step > max_step_px
        if trajectory.t.shape[1] < 2 or not bool(over.any()):
            return trajectory, pos
        if not float(step.sum()) <= MAX_MOTION_PX:  # (the sum of the worst steps bounds every point's path)
            raise ValueError(f"a point of the frame travels {float(step.sum()):.3g} px during the exposure, more than "
                             f"{MAX_MOTION_PX} px: the camera turns to within a hair of 90 degrees from part of the "
                             "scene, or the motion is far too large for a blur; shorten the exposure or the rotation")
        if cuts == MAX_CUTS:
            # (a step finer than the float32 positions resolve: steps of one or two of their units stayed
            # over it however finely cut, and each pass added poses, without end: max_step_px=5e-4 at 1280x720)
            raise ValueError(f"max_step_px: steps of the motion stay above the step asked after {MAX_CUTS} rounds of "
                             f"cutting: it is finer than float32 pixel positions resolve at coordinates up to "
                             f"{float(pos.abs().max()):.0f} px; raise max_step_px (0.5 px, the default, leaves no "
                             "visible ghosts)")
        # (counted in float64: a tiny step's quotient is inf in float32; the cut stays float32's, as it was)
        _check_poses(float(torch.where(over, torch.ceil(step.double() / max_step_px).clamp_min(2), 1).sum()) + 1,
                     float(step.sum()))
        steps = torch.where(over, torch.ceil(step / max_step_px).clamp_min(2), 1).to(torch.int64).cpu()

        def dense(x):
            return None if x is None else _interpolate(x, steps)
        trajectory = Trajectory(t=dense(trajectory.t), rotation=dense(trajectory.rotation),
                                translation=dense(trajectory.translation), path_px=dense(trajectory.path_px),
                                params=dict(trajectory.params))


def _worst_steps(pos: torch.Tensor) -> torch.Tensor:
    """``(T-1,)`` largest distance any probe of any item moves between consecutive samples of ``pos``
    ``(N, T, P, 2)``; 0 for a trajectory of no items (whose amax failed: "Expected reduction dim 0 to have
    non-zero size", in densify, motion_samples and local_paths)."""
    steps = (pos[:, 1:] - pos[:, :-1]).norm(dim=-1)  # (N, T-1, P)
    return steps.amax(dim=(0, 2)) if steps.shape[0] and steps.shape[2] else steps.new_zeros(steps.shape[1])


def centering_shift(trajectory: Trajectory, camera: Camera, depth_m: float | torch.Tensor = math.inf) -> torch.Tensor:
    """``(N, 2)`` float32 exposure-weighted mean displacement ``(x, y)`` of the principal point, in pixels,
    on the trajectory's device (``depth_m`` as in :meth:`blursynth.camera.Camera.homographies`).

    Trapezoidal weights on the samples: the exact time average of the piecewise-linear path, the same
    centre of mass :func:`blursynth.kernel.rasterize` puts on the centre pixel.
    """
    check_trajectory(trajectory)
    check_camera(camera)
    path = camera.center_path(trajectory, depth_m)
    return (exposure_weights(trajectory.t)[..., None] * path).sum(1)


def motion_samples(trajectory: Trajectory, camera: Camera, depth_m: float | torch.Tensor = math.inf,
                   max_step_px: float = 0.5, shift_px: torch.Tensor | None = None) -> tuple[Trajectory, torch.Tensor]:
    """The fewest poses, with weights, that integrate the exposure to ``max_step_px`` resolution.

    A camera that dwells (slow motion) needs few warps, one that sweeps needs many: the poses are
    re-sampled evenly in the *motion* parameter ``s`` (the cumulative largest displacement of any
    probe pixel of the frame), and each pose gets the share of exposure time spent near it (linear
    "tent" split of the time between neighbouring poses, which keeps the time-weighted mean motion
    along the path; the image-plane mean is kept up to how far the path bends off the chords between
    poses). The trajectory is first densified to a quarter of the step so the time shares are accurate.

    Consecutive poses are at most ``max_step_px`` apart everywhere in the frame, both for the sharp
    frame's points and for the content seen at the pixels of the blurred frame (these differ where the
    motion is large: a camera backing away from a near plane shows, at the blurred frame's edge, points
    from outside the sharp frame that move faster); where the grid in ``s`` misses the second, it is
    made finer until it holds.

    Args:
        shift_px: ``(N, 2)`` shift ``(x, y)`` in pixels that the renderer removes from every pose (its
            centring, :func:`centering_shift`); None: no shift.

    Returns:
        ``(poses, weights)``: a :class:`Trajectory` of ``K`` samples (same ``K`` for the batch; times
        interpolated too) and ``(N, K)`` float32 weights summing to 1, both on the trajectory's device.
    """
    _check_step(max_step_px)  # here too: the error should name the value passed, not a quarter of it
    fine, pos = _densify(trajectory, camera, depth_m, max_step_px / 4)  # pos: (N, T, P, 2) probe paths
    step = _worst_steps(pos).double()  # (T-1,)
    s = torch.cat([step.new_zeros(1), step.cumsum(0)])  # (T,) shared by the batch
    w = exposure_weights(fine.t).double()  # (N, T)
    if float(s[-1]) <= 0:  # a still camera: one pose
        return _pick(fine, torch.zeros(1, dtype=torch.long, device=s.device)), w.sum(1, keepdim=True).float()
    # At least MIN_INTERVALS: a motion shorter than a few steps would otherwise be cut to its chords
    # (over 3,000 small drawn shakes, 2 or 3 poses put the mean up to 0.075 px off the exposure's,
    # at least 4 poses at most 0.026).
    k = max(MIN_INTERVALS, math.ceil(float(s[-1]) / max_step_px))
    while True:
        poses, weights = _resample(fine, s, w, k)
        worst = _blurred_frame_step(poses, camera, depth_m, shift_px)
        if not worst > max_step_px:
            return poses, weights
        # The step shrinks about in proportion to the grid spacing: one or two rounds.
        k = max(k + 1, math.ceil(k * worst / max_step_px))
        _check_poses(k + 1, float(s[-1]))


def _resample(fine: Trajectory, s: torch.Tensor, w: torch.Tensor, k: int) -> tuple[Trajectory, torch.Tensor]:
    """``k + 1`` poses evenly spaced in the motion ``s`` ``(T,)`` of ``fine``'s samples, and ``(N, k + 1)``
    float32 weights: each fine sample's exposure weight ``w`` ``(N, T)`` split between its two
    neighbouring poses."""
    delta = float(s[-1]) / k
    grid = torch.arange(k + 1, dtype=torch.float64, device=s.device) * delta
    # Time shares: each fine sample's weight split linearly between its two neighbouring grid poses.
    u = (s / delta).clamp(max=k)
    lo = u.floor().long().clamp(max=k - 1)
    frac = u - lo
    weights = torch.zeros(w.shape[0], k + 1, dtype=torch.float64, device=w.device)
    weights.index_add_(1, lo, w * (1 - frac))
    weights.index_add_(1, lo + 1, w * frac)
    # Poses at the grid values of s: linear interpolation within the fine segment that contains them.
    j = torch.searchsorted(s, grid).clamp(1, len(s) - 1)
    a, b = s[j - 1], s[j]
    t_frac = ((grid - a) / (b - a).clamp_min(1e-12)).clamp(0, 1).float()
    return _blend(fine, j - 1, j, t_frac), weights.float()


def _blurred_frame_step(poses: Trajectory, camera: Camera, depth_m, shift_px: torch.Tensor | None) -> float:
    """Largest distance, over the probe pixels of the blurred frame and the batch, that the content seen
    there moves from one pose to the next or back: ``|G q - q|`` for ``G = H_{j+1} H_j^-1`` and its
    inverse, at ``q = p + shift_px`` (the renderer's pixel ``p`` in the frame of the uncentred
    homographies). Both ways, so that reversed poses get the same verdict (and render the same)."""
    hom = camera.homographies(poses, depth_m).double()  # (N, K, 3, 3)
    if hom.shape[1] < 2:
        return 0.0
    ahead = hom[:, 1:] @ torch.linalg.inv(hom[:, :-1])  # (N, K-1, 3, 3): pose j's image -> pose j+1's
    q = _probe_points(camera, hom.device).double()[None]  # (1, P, 2)
    if shift_px is not None:
        q = q + shift_px.to(q)[:, None]  # (N, P, 2)
    qh = torch.cat([q, torch.ones_like(q[..., :1])], -1)
    worst = 0.0
    for relative in (ahead, torch.linalg.inv(ahead)):
        moved = torch.einsum("nkij,npj->nkpi", relative, qh)
        worst = max(worst, float((moved[..., :2] / moved[..., 2:] - q[:, None]).norm(dim=-1).max()))
    return worst


def _pick(traj: Trajectory, i: torch.Tensor) -> Trajectory:
    return _blend(traj, i, i, torch.zeros(len(i), device=traj.t.device, dtype=torch.float32))


def _blend(traj: Trajectory, i0: torch.Tensor, i1: torch.Tensor, frac: torch.Tensor) -> Trajectory:
    """Samples ``(1 - frac) * x[:, i0] + frac * x[:, i1]`` of every pose array (``i0, i1, frac`` ``(K,)``)."""
    def mix(x):
        if x is None:
            return None
        f = frac.to(x.device).reshape(1, -1, *([1] * (x.ndim - 2)))
        return x[:, i0] + f * (x[:, i1] - x[:, i0])
    return Trajectory(t=mix(traj.t), rotation=mix(traj.rotation), translation=mix(traj.translation),
                      path_px=mix(traj.path_px), params=dict(traj.params))


def render_nonuniform(image: torch.Tensor, trajectory: Trajectory, camera: Camera,
                      depth_m: float | torch.Tensor = math.inf, center: bool = True,
                      max_step_px: float = 0.5, padding_mode: str = "reflection") -> torch.Tensor:
    """Blur images by camera motion, exactly, as the exposure integral of homography warps.

    Args:
        image: ``(B, C, H, W)`` float linear-light values (blur is linear in light, not in sRGB); any
            device. ``camera`` must describe this frame (``width == W``, ``height == H``; the principal
            point may lie outside it for a crop of a larger photo).
        trajectory: ``B`` or 1 items (6-DoF or 2-D), on any device (its poses are worked out on the
            CPU, the warps run on ``image``'s device).
        camera: pinhole camera of the frame.
        depth_m: scene-plane depth in metres (float or ``(B,)``), ``inf`` for a distant scene.
        center: remove the principal point's mean displacement (agrees with the centred uniform kernel).
        max_step_px: largest motion, between consecutive poses, of any sharp-frame point and of the
            content seen at any pixel of the blurred frame (:func:`motion_samples`); the error against
            the continuous exposure falls faster than the step (measured on a smooth image: 1.4e-2 at
            0.5 px, 4e-3 at 0.25 px), the cost grows as its inverse.
        padding_mode: ``grid_sample`` padding for pixels that come from outside the frame
            (``"reflection"``, ``"border"``, ``"zeros"``); use a larger crop and keep the interior to avoid
            the question.

    Returns:
        ``(B, C, H, W)`` blurred image, same dtype and device as ``image``, differentiable in
        ``image``; an item's result does not depend on the rest of its batch. Cost: one warp per
        pose, about ``2 x`` (largest motion in the frame, px) ``+ 1`` warps, at least 4 for a moving
        camera.

    Raises:
        blursynth.camera.BehindCameraError: the camera turns (or moves) to face away from part of
            what the frame shows at some pose.
        blursynth.camera.SceneReachedError: its translation reaches the scene plane ``depth_m``.
        ValueError: shapes that do not match, sample times that are not finite and non-decreasing,
            poses that are not finite; a ``max_step_px`` that takes more than :data:`MAX_POSES` poses or is
            finer than float32 pixel positions resolve in the frame.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if image.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"image must be float32 or float64, got {image.dtype}; convert with .float() "
                        "(and / 255 for 8-bit values)")
    check_trajectory(trajectory)
    check_camera(camera)
    b, c, h, w = image.shape
    if (camera.width, camera.height) != (w, h):
        raise ValueError(f"camera is {camera.width}x{camera.height} but the image is {w}x{h}; "
                         "build the Camera for the frame being blurred")
    if len(trajectory) not in (1, b):
        raise ValueError(f"trajectory has {len(trajectory)} items for a batch of {b} images")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    depth_m = _check_depth(depth_m, b, "image of the batch")
    check_center(center)
    if b == 0:  # an empty batch (as blursynth.blur takes): nothing to warp
        return image.clone()
    per_item_depth = torch.is_tensor(depth_m) and depth_m.numel() > 1
    if b > 1 and (len(trajectory) > 1 or per_item_depth):
        # One item at a time: the pose grid follows the fastest motion it is built for, so a grid
        # shared by the batch would make an item's result depend on the others (results must not depend on the batch).
        out = []
        for i in range(b):
            try:
                out.append(render_nonuniform(image[i:i + 1], trajectory[i] if len(trajectory) > 1 else trajectory,
                                             camera, depth_m.reshape(-1)[i:i + 1] if per_item_depth else depth_m,
                                             center, max_step_px, padding_mode))
            except BehindCameraError as err:  # (rendered alone, the item is item 0 of its own call)
                raise BehindCameraError(f"item {i}: {err}") from None
        return torch.cat(out)
    # The poses (a few hundred numbers) are worked out on the CPU whatever the image's device: on a
    # GPU their hundreds of tiny operations cost more in launches and syncs than all the warps, and
    # the same arithmetic on every device gives the same warps.
    trajectory = trajectory.to("cpu")
    if torch.is_tensor(depth_m):
        depth_m = depth_m.cpu()
    shift = centering_shift(densify(trajectory, camera, depth_m, max_step_px), camera, depth_m) if center else None
    poses, weights = motion_samples(trajectory, camera, depth_m, max_step_px, shift)
    hom = camera.homographies(poses, depth_m)  # (N, K, 3, 3)
    if center:
        move = torch.eye(3, dtype=hom.dtype).repeat(shift.shape[0], 1, 1)
        move[:, :2, 2] = -shift
        # (a float32 matmul: under autocast, in a mixed-precision training step, it ran in bfloat16, and the
        # homographies' 8 bits moved the warps by pixels, 1.6e-2 off in the rendered image)
        with torch.autocast(hom.device.type, enabled=False):
            hom = move[:, None] @ hom
    hom, weights = hom.expand(b, -1, -1, -1).to(image.dtype), weights.expand(b, -1).to(image)
    # Sampling maps: each output pixel p reads the sharp image at H^-1 p (pixels -> grid_sample's [-1, 1]).
    norm = torch.tensor([[2.0 / max(w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(h - 1, 1), -1.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)
    inverse = torch.linalg.inv(hom.double())  # (B, K, 3, 3): blurred-frame pixel -> sharp-image pixel
    _check_reads_in_front(inverse, camera, poses.t)
    sample = (norm @ inverse).to(image)
    per_call = 1 if image.device.type == "cpu" else max(1, WARP_PIXELS // (b * h * w))
    return _warp_sum(image, sample, weights, padding_mode, per_call)


def _check_reads_in_front(inverse: torch.Tensor, camera: Camera, t: torch.Tensor) -> None:
    """Raise :class:`~blursynth.camera.BehindCameraError` if a pixel of the blurred frame reads a scene
    point behind the camera at ``t = 0`` under one of the maps ``inverse`` ``(B, K, 3, 3)`` of the poses
    at times ``t`` ``(1 | B, K)`` seconds: grid_sample would read the mirrored pixel without a word.

    Not implied by :meth:`Camera.project`'s test of the sharp frame's points: a camera turned far to
    one side sees past the sharp frame's cone on that side. The homogeneous scale is affine in the
    pixel, so it is positive over the whole frame when it is at the four corners.
    """
    right, bottom = camera.width - 1.0, camera.height - 1.0
    corners = torch.tensor([[0.0, 0.0], [right, 0.0], [0.0, bottom], [right, bottom]], dtype=inverse.dtype)
    w = inverse[..., 2, :2] @ corners.T + inverse[..., 2, 2:]  # (B, K, 4)
    check_in_front(w, corners, t.expand(w.shape[0], -1), "the blurred frame's pixel")


def _check_depth(depth_m, n: int, per: str):
    """``depth_m`` as given if it is a number, else as a tensor of 1 or ``n`` depths (one per ``per``
    of ``n``): other shapes are refused naming the one passed, before any work (homographies would
    name an internal shape, or ignore depths it does not need for a rotation-only motion)."""
    if rng.is_real(depth_m):
        return depth_m
    try:
        if holds_bools(depth_m):
            raise TypeError
        depth = torch.as_tensor(depth_m)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"depth_m must be metres, a float or a ({n},) tensor, got {type(depth_m).__name__}") from None
    if depth.ndim > 1 or depth.numel() not in (1, n):
        raise ValueError(f"depth_m must be a float or a ({n},) tensor, one depth per {per} of {n}; "
                         f"got shape {tuple(depth.shape)}")
    return depth.reshape(-1)  # (lists and arrays become tensors)


def _warp_sum(image: torch.Tensor, sample: torch.Tensor, weights: torch.Tensor, padding_mode: str,
              per_call: int) -> torch.Tensor:
    """``sum_k weights[:, k] * grid_sample(image, sampling grid of sample[:, k])``, poses added in
    order; the grids and warps of ``per_call`` poses are made in one call each, which changes no
    value (each pixel's arithmetic is the same). ``sample`` ``(B, K, 3, 3)`` maps output pixels to
    grid_sample's ``[-1, 1]`` coordinates, ``weights`` ``(B, K)``."""
    b, c, h, w = image.shape
    per_call = min(per_call, sample.shape[1])
    xs = torch.arange(w, device=image.device, dtype=image.dtype)
    ys = torch.arange(h, device=image.device, dtype=image.dtype)[:, None]
    # Work buffers reused for every call: fresh 1280x720 temporaries cost more in page faults than
    # the arithmetic on the CPU (measured: the grid took 3x longer than the interpolation when built anew).
    grid = image.new_empty(b * per_call, h, w, 2)
    depth, scratch = image.new_empty(2, b * per_call, h, w)
    out = torch.zeros_like(image)
    # grid_sample keeps its grid for the backward pass: under autograd each call gets its own.
    fresh = torch.is_grad_enabled() and image.requires_grad
    for k0 in range(0, sample.shape[1], per_call):
        kc = min(per_call, sample.shape[1] - k0)
        g = torch.empty_like(grid[:b * kc]) if fresh else grid[:b * kc]
        _sampling_grid(sample[:, k0:k0 + kc].reshape(b * kc, 3, 3), xs, ys, g, depth[:b * kc], scratch[:b * kc])
        src = image[:, None].expand(b, kc, c, h, w).reshape(b * kc, c, h, w)  # (no copy for kc = 1)
        warped = torch.nn.functional.grid_sample(src, g, mode="bilinear", padding_mode=padding_mode,
                                                 align_corners=True).reshape(b, kc, c, h, w)
        for j in range(kc):
            out.addcmul_(warped[:, j], weights[:, k0 + j, None, None, None])
    return out


def _sampling_grid(m: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, grid: torch.Tensor,
                   depth: torch.Tensor, scratch: torch.Tensor) -> None:
    """Fill ``grid`` ``(B, H, W, 2)`` with ``m`` ``(B, 3, 3)`` applied to every pixel ``(x, y)``, dehomogenised.

    What kornia's ``warp_perspective`` does before ``grid_sample``, built from broadcast rows and
    columns into reused buffers (about 3x faster on the CPU at 1280x720). ``depth`` and ``scratch``
    ``(B, H, W)`` are work buffers: the numerators are made in contiguous ``scratch`` and divided
    into the interleaved grid, 2.3x faster on the CPU than dividing the grid in place (a strided
    operand), with the same values.
    """
    m = m[:, :, :, None, None]  # (B, 3, 3, 1, 1): entries broadcast over (H, W)
    torch.add(m[:, 2, 0] * xs, m[:, 2, 1] * ys + m[:, 2, 2], out=depth)
    for axis in (0, 1):
        torch.add(m[:, axis, 0] * xs, m[:, axis, 1] * ys + m[:, axis, 2], out=scratch)
        torch.div(scratch, depth, out=grid[..., axis])


def kernels_at(points_px: torch.Tensor, trajectory: Trajectory, camera: Camera, size: int | tuple[int, int],
               depth_m: float | torch.Tensor = math.inf, center: bool = True,
               max_step_px: float = 0.5, fit: str = "error") -> torch.Tensor:
    """Local blur kernels at given pixels, consistent with :func:`render_nonuniform`.

    The kernel at pixel ``p`` is the exposure-weighted path of ``p``'s image, ``H(t) p - p`` minus the
    same centring shift the renderer applies, rasterised as placed (not re-centred). Blurring the
    sharp image with it reproduces the rendered blur in a neighbourhood of ``p``, up to how the motion
    changes across the kernel's reach: the kernel is where ``p``'s light goes, the renderer gathers
    each pixel from where its light came from, which differ by the motion's gradient times its size
    (second order: about 0.01 px for a 3 px shake a thousand pixels from the principal point).

    Args:
        points_px: ``(P, 2)`` pixel coordinates ``(x, y)`` in the frame of ``camera`` (they may lie
            outside it).
        trajectory: N items; size: odd kernel side (or ``(h, w)``); fit: "error" or "scale" (see
            :func:`blursynth.kernel.rasterize`).
        depth_m, center, max_step_px: as in :func:`render_nonuniform` (``depth_m`` one per item).

    Returns:
        ``(N, P, h, w)`` float32 kernels on the trajectory's device, each summing to 1.

    Raises:
        blursynth.kernel.KernelFitError: ``fit="error"`` and a local path larger than the kernel (a
            point far outside the frame moves far); the message names the item and the pixel.
        blursynth.camera.BehindCameraError: a point's scene point is at or behind the camera at some pose.
        ValueError: sample times that are not finite and non-decreasing, poses that are not finite.
    """
    from .kernel import KernelFitError, fit_error_message, rasterize

    check_trajectory(trajectory)
    check_camera(camera)
    try:
        pts = torch.as_tensor(points_px, dtype=torch.float32, device=trajectory.t.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"points_px must be a (P, 2) tensor of pixel coordinates (x, y), "
                        f"got {type(points_px).__name__}") from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points_px must be (P, 2) pixel coordinates (x, y), got shape {tuple(pts.shape)}; "
                         "one point is points_px[None] or [[x, y]]")
    if not torch.isfinite(pts).all():
        raise ValueError("points_px contains NaN or infinite coordinates")
    n, p = len(trajectory), pts.shape[0]
    depth_m = _check_depth(depth_m, n, "item of the trajectory")
    if fit not in ("error", "scale"):  # (rasterize's words sent "resample" to generate: it makes no local kernels)
        raise ValueError(f"fit must be 'error' or 'scale' for local kernels, got {fit!r}: 'resample' redraws a "
                         "trajectory model's items, and kernels_at is given the motion; use a bigger size or 'scale'")
    check_center(center)
    per_item_depth = torch.is_tensor(depth_m) and depth_m.numel() > 1
    out = []
    # One item at a time, as render_nonuniform: densify's pose grid follows the fastest motion it is
    # given, so a grid shared by the batch made an item's kernels depend on the rest of it
    # and differ from the ones its render used.
    for item in range(n):
        depth = depth_m[item:item + 1] if per_item_depth else depth_m
        try:
            flat, t = local_paths(pts, trajectory[item] if n > 1 else trajectory, camera, depth, center, max_step_px)
        except BehindCameraError as err:  # (as in render_nonuniform)
            raise BehindCameraError(f"item {item}: {err}") from None
        try:
            k = rasterize(flat, size, t=t, fit=fit, center=False)
        except KernelFitError as err:  # name the item and the point, not the flattened (item, point) index
            x, y = pts[err.item].tolist()
            raise KernelFitError(fit_error_message(f"the local path at pixel ({x:g}, {y:g}) of item {item}",
                                                   err.extent, err.size, err.needed),
                                 item, err.size, err.needed, err.extent) from None
        out.append(k.reshape(1, p, *k.shape[-2:]))
    if not out:  # an empty trajectory (N = 0): no kernels, of the size asked for
        k = rasterize(pts.new_zeros(0, 1, 2), size, fit=fit, center=False)
        return k.reshape(0, p, *k.shape[-2:])
    return torch.cat(out)


def local_paths(points_px: torch.Tensor, trajectory: Trajectory, camera: Camera,
                depth_m: float | torch.Tensor = math.inf, center: bool = True,
                max_step_px: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The paths :func:`kernels_at` rasterises: ``(N * P, T', 2)`` float32 displacements in pixels
    (item-major) and ``(N * P, T')`` times in seconds, on the trajectory's device.

    Path ``i * P + j`` is the image of pixel ``points_px[j]`` ``(P, 2)`` under item ``i``'s motion,
    ``H(t) p - p`` on the densified poses, minus the renderer's centring shift when ``center``.
    """
    check_trajectory(trajectory)
    check_camera(camera)
    check_center(center)
    # (a str, or an odd count of coordinates, failed inside torch without naming points_px)
    pts = as_points(points_px, trajectory.t.device).float()
    dense = densify(trajectory, camera, depth_m, max_step_px)
    path = camera.project(dense, pts, depth_m) - pts  # (N, T, P, 2)
    if center:
        path = path - centering_shift(dense, camera, depth_m)[:, None, None, :]
    n, steps, p, _ = path.shape
    flat = path.permute(0, 2, 1, 3).reshape(n * p, steps, 2)
    t = dense.t[:, None].expand(n, p, steps).reshape(n * p, steps)
    return flat, t


def grid_points(camera: Camera, rows: int, cols: int) -> torch.Tensor:
    """``(rows * cols, 2)`` float32 pixel centres ``(x, y)`` of an even ``rows x cols`` grid of cells over
    the frame, row-major, on the CPU; ``rows`` and ``cols`` are integers >= 1 (else a ValueError)."""
    check_camera(camera)
    if not all(rng.is_integer(v) and v >= 1 for v in (rows, cols)):
        raise ValueError(f"grid_points needs rows and cols as integers >= 1, got rows={rows!r}, cols={cols!r}")
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) * camera.height / rows - 0.5
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) * camera.width / cols - 0.5
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
