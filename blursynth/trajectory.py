"""Camera motion over the exposure: what is sampled, as plain tensors.

A :class:`Trajectory` holds a batch of ``N`` motions sampled at ``T`` times each. It is either 6-DoF
camera motion (rotation vectors in radians and translations in metres, in the camera frame at
``t = 0``) or, for the classic 2-D models, an image-plane path in pixels. The camera module turns
6-DoF motion into image-plane paths; the kernel module rasterises paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class Trajectory:
    """A batch of camera motions sampled over the exposure.

    Attributes:
        t: ``(N, T)`` float32 sample times in seconds, non-decreasing, from 0 to the item's exposure.
            The kernel weights each sample by the exposure time it stands for, so samples need not be
            evenly spaced.
        rotation: ``(N, T, 3)`` float32 rotation vectors (axis * angle, radians) of the camera relative to
            its orientation at ``t = 0``, axes in the camera frame (x right, y down, z forward), or None.
        translation: ``(N, T, 3)`` float32 displacement of the camera centre in metres, camera frame, or None.
        path_px: ``(N, T, 2)`` float32 image-plane displacement ``(x, y)`` in pixels (2-D models), or None.
        params: per-item drawn scalars, each a ``(N,)`` tensor (exposure_s, amplitudes, ...), so every
            item can be regenerated and recorded.
    """

    t: torch.Tensor
    rotation: torch.Tensor | None = None
    translation: torch.Tensor | None = None
    path_px: torch.Tensor | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.t.ndim != 2:
            raise ValueError(f"Trajectory.t must be (N, T), got shape {tuple(self.t.shape)}")
        if self.path_px is None and self.rotation is None and self.translation is None:
            raise ValueError("a Trajectory needs path_px (2-D) or rotation/translation (6-DoF)")
        n, steps = self.t.shape
        for name, width in (("rotation", 3), ("translation", 3), ("path_px", 2)):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n, steps, width):
                raise ValueError(f"Trajectory.{name} must be ({n}, {steps}, {width}), got {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def is_2d(self) -> bool:
        return self.path_px is not None

    @property
    def exposure_s(self) -> torch.Tensor:
        """``(N,)`` exposure time in seconds (the last sample time)."""
        return self.t[:, -1]

    def to(self, device: torch.device | str) -> "Trajectory":
        def move(x):
            return None if x is None else x.to(device)
        return replace(self, t=self.t.to(device), rotation=move(self.rotation), translation=move(self.translation),
                       path_px=move(self.path_px), params={k: v.to(device) for k, v in self.params.items()})

    def __getitem__(self, items) -> "Trajectory":
        """Select items (an int, slice, index tensor or boolean mask) along the batch dimension."""
        if isinstance(items, int):
            items = slice(items, items + 1 if items != -1 else None)

        def pick(x):
            return None if x is None else x[items]
        return replace(self, t=self.t[items], rotation=pick(self.rotation), translation=pick(self.translation),
                       path_px=pick(self.path_px), params={k: v[items] for k, v in self.params.items()})

    def reversed(self) -> "Trajectory":
        """The same poses visited in the opposite order (times re-measured from the new start).

        The poses stay relative to the original frame, so the set of image positions is unchanged:
        a kernel is the time integral of where the light went, and reversing time changes nothing.
        """
        t = self.t[:, -1:] - self.t.flip(1)
        path = None if self.path_px is None else self.path_px.flip(1)
        rot = None if self.rotation is None else self.rotation.flip(1)
        trans = None if self.translation is None else self.translation.flip(1)
        return replace(self, t=t, rotation=rot, translation=trans, path_px=path)

    @staticmethod
    def cat(items: list["Trajectory"]) -> "Trajectory":
        """Concatenate trajectories with the same number of samples along the batch dimension."""
        def join(name):
            values = [getattr(x, name) for x in items]
            return None if values[0] is None else torch.cat(values)
        params = {k: torch.cat([x.params[k] for x in items]) for k in items[0].params}
        return Trajectory(t=join("t"), rotation=join("rotation"), translation=join("translation"),
                          path_px=join("path_px"), params=params)
