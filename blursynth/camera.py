"""Pinhole camera: projects 6-DoF camera motion to image-plane paths and per-time homographies.

Conventions (the package's, as in the README): pixel centres at integer coordinates, x right, y down, z forward. A pose
``(R, c)`` of a :class:`~blursynth.trajectory.Trajectory` is the camera's own motion: its orientation
``R`` (from the rotation vector) and the displacement ``c`` of its centre, both relative to the camera
at ``t = 0``. A scene point ``X`` (camera-0 coordinates) is seen at time t at ``R^T (X - c)``. For a
scene plane ``n^T X = d`` this is the homography ``H(t) = K R^T (I - c n^T / d) K^-1`` that maps a
pixel of the frame at ``t = 0`` to where the same scene point is imaged at ``t``; ``d = inf`` (the
default) is a distant scene, where only rotation matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import rng
from .trajectory import Trajectory

# The diagonal of a full-frame 36 x 24 mm sensor: 35 mm-equivalent focal lengths are defined on it.
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


class SceneReachedError(ValueError):
    """The camera's translation carries it to (or through) the scene plane ``depth_m`` during the
    exposure: the plane would then lie behind the camera, where projecting it means nothing (the image
    motion grows without bound as the plane nears: a render tried to allocate terabytes)."""


def holds_bools(depth_m) -> bool:
    """Whether ``depth_m`` is a bool or holds bools (a bool tensor or array, a list with a bool): torch and
    NumPy read True as 1, so ``depth_m=True`` (a switch where a depth belongs) was a scene plane 1 m away."""
    if isinstance(depth_m, (list, tuple)):
        return any(map(holds_bools, depth_m))
    return isinstance(depth_m, (bool, np.bool_)) or getattr(depth_m, "dtype", None) in (torch.bool, np.bool_)


def check_short_of_plane(forward: torch.Tensor, depth) -> None:
    """Raise :class:`SceneReachedError` unless ``forward`` (the camera centre's displacement along the
    optical axis, metres, any shape) stays below ``depth`` (metres, broadcast against it)."""
    reach = forward / depth
    if bool((reach >= 1).any()):
        error = SceneReachedError(f"the camera moves {float(reach.max()):.3g} times the scene depth towards the "
                                  "scene plane during the exposure, reaching it; use a larger depth_m (or a smaller "
                                  "translation)")
        error.reach = float(reach.max())  # (for callers that word the fix in their own terms)
        raise error


class BehindCameraError(ValueError):
    """A scene point the frame shows is at or behind the camera at some pose of the exposure: the camera
    turned (or moved) so far that it faces away from part of the scene, where a pinhole image means
    nothing (the point's image runs off through infinity and comes back mirrored: a render asked for
    tens of gigabytes, or read mirrored pixels without a word)."""


def check_in_front(w: torch.Tensor, points: torch.Tensor, t: torch.Tensor, what: str) -> None:
    """Raise :class:`BehindCameraError` unless every homogeneous scale ``w`` ``(N, T, P)`` is positive
    (in front of the camera); ``points`` ``(P, 2)`` are the pixels they belong to, named with ``what``,
    and ``t`` ``(N, T)`` the sample times in seconds."""
    behind = w <= 0  # (NaN poses pass: they are reported as such where they are checked)
    if bool(behind.any()):
        item, step, p = behind.nonzero()[0].tolist()
        x, y = points[p].tolist()
        when = f"t = {float(t[item, step]):.4g} s" + (f" of item {item}" if w.shape[0] > 1 else "")
        raise BehindCameraError(f"{what} ({x:g}, {y:g}) is at or behind the camera at {when}: "
                                "the camera turns (or moves) so far that it faces away from the scene there; "
                                "camera motion is in radians and metres")


def as_points(points_px, device) -> torch.Tensor:
    """``points_px`` as ``(P, 2)`` float64 on ``device``, read as consecutive ``(x, y)`` pairs, or a ValueError
    naming it: an odd count was torch's "shape '[-1, 2]' is invalid for input of size 3", and NaN gave NaN paths."""
    try:
        pts = torch.as_tensor(points_px, device=device, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"points_px must be (P, 2) pixel coordinates (x, y): a tensor, array or list of numbers, "
                         f"got {type(points_px).__name__} {points_px!r}") from None
    if pts.numel() % 2:
        raise ValueError(f"points_px must be (P, 2) pixel coordinates (x, y), read as pairs; got {pts.numel()} "
                         f"values (shape {tuple(pts.shape)})")
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("points_px contains NaN or infinite coordinates")
    return pts.reshape(-1, 2)


def _check_size(width, height) -> None:
    """Raise a ValueError naming the image size unless ``width`` and ``height`` are integers >= 1."""
    size = (width, height)
    if not all(map(rng.is_integer, size)) or min(size) < 1:
        raise ValueError(f"image size must be positive integers (pixels), got {width!r}x{height!r}")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera.

    Attributes:
        focal_px: focal length in pixels (> 0).
        width, height: image size in pixels, integers >= 1.
        cx, cy: principal point in pixels (finite, may lie outside the image); None means the image
            centre ``((width-1)/2, (height-1)/2)``.

    Raises:
        ValueError: a focal length that is not a positive finite number (a bool or a string is not
            one), a size that is not a positive integer, or a principal point that is not a finite number.
    """

    focal_px: float
    width: int
    height: int
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self) -> None:
        # (the size first: from_35mm derives the focal length from it, and Camera.from_35mm(50, 0, 0) blamed
        # "focal length ... got 0.0" on a 50 mm lens)
        _check_size(self.width, self.height)
        if not (rng.is_real(self.focal_px) and self.focal_px > 0 and math.isfinite(self.focal_px)):
            raise ValueError(f"focal length must be a positive number of pixels, got {self.focal_px!r}")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if value is not None and not (rng.is_real(value) and math.isfinite(value)):
                raise ValueError(f"principal point {name} must be a finite number of pixels or None, got {value!r}")

    @classmethod
    def from_35mm(cls, focal_mm: float, width: int, height: int) -> "Camera":
        """A camera whose field of view matches a ``focal_mm`` lens on a 36 x 24 mm frame (by the diagonal)."""
        if not (rng.is_real(focal_mm) and 0 < focal_mm < math.inf):  # (inf was blamed on a focal length in pixels)
            raise ValueError(f"35 mm-equivalent focal length must be a positive number, got {focal_mm!r} mm")
        _check_size(width, height)  # (before the diagonal: a str or None side failed in math.hypot, naming nothing)
        return cls(focal_px=focal_mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM, width=width, height=height)

    @property
    def principal_point(self) -> tuple[float, float]:
        """``(cx, cy)`` in pixels: the given ones, or the image centre for those left None."""
        cx = (self.width - 1) / 2 if self.cx is None else self.cx
        cy = (self.height - 1) / 2 if self.cy is None else self.cy
        return cx, cy

    def intrinsics(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``(3, 3)`` matrix K (focal length and principal point in pixels) of ``dtype`` on ``device``
        (None: the CPU)."""
        cx, cy = self.principal_point
        return torch.tensor([[self.focal_px, 0.0, cx], [0.0, self.focal_px, cy], [0.0, 0.0, 1.0]],
                            device=device, dtype=dtype)

    def homographies(self, trajectory: Trajectory, depth_m: float | torch.Tensor = math.inf) -> torch.Tensor:
        """Per-time homographies from the frame at ``t = 0`` to the frame at each sample time.

        Args:
            trajectory: 6-DoF trajectory with N items and T samples (a 2-D path is a pure image
                translation and gives translation homographies).
            depth_m: depth of the fronto-parallel scene plane in metres, a float or ``(N,)`` tensor;
                ``inf`` ignores translation.

        Returns:
            ``(N, T, 3, 3)`` float32 on the trajectory's device.
        """
        t = trajectory.t
        n, steps = t.shape
        # Compose in float64: tiny rotations (1e-4 rad) must not be lost to rounding in K R K^-1.
        dtype = torch.float64
        if trajectory.is_2d:
            h = torch.eye(3, device=t.device, dtype=dtype).repeat(n, steps, 1, 1)
            h[..., :2, 2] = trajectory.path_px.to(dtype)
            return h.float()
        k = self.intrinsics(t.device, dtype)
        k_inv = torch.linalg.inv(k)
        if trajectory.rotation is not None:
            # Imported here: kornia costs ~0.6 s at start-up, which the kernel hot path never needs.
            from kornia.geometry.conversions import axis_angle_to_rotation_matrix
            rot = axis_angle_to_rotation_matrix(trajectory.rotation.reshape(-1, 3).to(dtype)).reshape(n, steps, 3, 3)
        else:
            rot = torch.eye(3, device=t.device, dtype=dtype).expand(n, steps, 3, 3)
        m = torch.eye(3, device=t.device, dtype=dtype).expand(n, steps, 3, 3)
        if trajectory.translation is not None:
            try:
                if holds_bools(depth_m):
                    raise TypeError
                given = torch.as_tensor(depth_m, device=t.device, dtype=dtype)
            except (TypeError, ValueError, RuntimeError):  # ("far": torch's "new(): invalid data type 'str'")
                raise ValueError(f"depth_m must be positive metres, a float or an ({n},) tensor (inf = distant "
                                 f"scene), got {depth_m!r}") from None
            depth = given.reshape(-1, 1, 1)
            if depth.shape[0] not in (1, n):  # (the shape passed: this named the internal (3, 1, 1))
                raise ValueError(f"depth_m must be a float or an ({n},) tensor, got shape {tuple(given.shape)}")
            if not bool((depth > 0).all()):
                raise ValueError(f"depth_m: the scene depth must be positive metres (use inf for a distant scene), "
                                 f"got {depth_m!r}")
            check_short_of_plane(trajectory.translation[..., 2].to(dtype), depth[..., 0])
            normal = torch.tensor([0.0, 0.0, 1.0], device=t.device, dtype=dtype)
            # c n^T / d: zero for an infinitely distant plane.
            c = trajectory.translation.to(dtype) / depth
            m = m - c[..., :, None] * normal
        return (k @ rot.transpose(-1, -2) @ m @ k_inv).float()

    def project(self, trajectory: Trajectory, points_px: torch.Tensor,
                depth_m: float | torch.Tensor = math.inf) -> torch.Tensor:
        """Image-plane paths of given pixels over the exposure.

        Args:
            trajectory: N items of T samples (as in :meth:`homographies`).
            points_px: ``(P, 2)`` pixel coordinates ``(x, y)`` in the frame at ``t = 0`` (a tensor,
                array or list; its values are read as consecutive ``(x, y)`` pairs).
            depth_m: as in :meth:`homographies`.

        Returns:
            ``(N, T, P, 2)`` float32 positions of those points at each sample time, in pixels, on the
            trajectory's device (computed in float64).

        Raises:
            BehindCameraError: a point's scene point is at or behind the camera at some sample.
            ValueError: ``points_px`` that are not ``(x, y)`` pairs of finite numbers.
        """
        h = self.homographies(trajectory, depth_m).double()
        pts = as_points(points_px, h.device)
        homog = torch.cat([pts, torch.ones_like(pts[:, :1])], dim=1)  # (P, 3)
        mapped = torch.einsum("ntij,pj->ntpi", h, homog)
        check_in_front(mapped[..., 2], pts, trajectory.t, "the scene point of pixel")
        return (mapped[..., :2] / mapped[..., 2:]).float()

    def center_path(self, trajectory: Trajectory, depth_m: float | torch.Tensor = math.inf) -> torch.Tensor:
        """``(N, T, 2)`` float32 displacement in pixels of the principal point's image, on the trajectory's
        device: the frame's uniform kernel path (a 2-D trajectory's ``path_px`` as is; ``depth_m`` as in
        :meth:`homographies`)."""
        if trajectory.is_2d:
            return trajectory.path_px
        pp = torch.tensor([self.principal_point], device=trajectory.t.device, dtype=torch.float32)
        return self.project(trajectory, pp, depth_m)[:, :, 0, :] - pp


def check_camera(camera) -> None:
    """Refuse what is not a :class:`Camera`, naming it: ``None`` or the class itself (for an instance) failed as
    "'NoneType' object has no attribute 'width'" or "type object 'Camera' has no attribute 'focal_px'"."""
    if not isinstance(camera, Camera):
        what = "the class Camera itself" if camera is Camera else type(camera).__name__
        raise TypeError(f"camera must be a blursynth.camera.Camera of the frame, such as Camera.from_35mm(50, W, H) "
                        f"or Camera(focal_px, W, H); got {what}")
