"""Trained networks as restorers for ``python -m unpaired.evaluate --checkpoint CKPT``.

A restorer maps blurry ``(B, C, H, W)`` images in ``[0, 1]`` (and a kernel it ignores: the networks
are blind) to the restored ``(B, C, H, W)`` in ``[0, 1]``, float32, on the input's device. Gray inputs (``C == 1``) go through the
3-channel network as three equal channels and come back as their mean.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unpaired.config import pick_device
from unpaired.deblur import deblur_image, load_generator


def load_restorer(path: str | Path, device: str | torch.device = "cpu", tile: int = 256, overlap: int = 32):
    """Restorer of the deblurring generator ``G`` of a checkpoint written by ``unpaired.train`` (a
    file, or a run folder: :func:`unpaired.deblur.checkpoint_file`).

    ``device`` is what ``--device`` takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a
    ``torch.device`` of those), checked as the command lines check it: without CUDA, ``cuda`` raises
    :class:`unpaired.config.ConfigError` (a ValueError) in one line. The restorer takes float images
    in ``[0, 1]`` and raises TypeError for integer ones (convert 8-bit images with ``.float() / 255``).
    """
    device = pick_device(str(device))
    net, factor = load_generator(path, device)

    def restore(blurry: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(blurry, torch.Tensor):
            raise TypeError(f"blurry image must be a torch.Tensor, got {type(blurry).__name__}")
        if not blurry.is_floating_point():  # (0-255 values would be restored as if far above white)
            raise TypeError(f"blurry image must be float in [0, 1], got {blurry.dtype}; convert with "
                            ".float() / 255 for 8-bit images (/ 65535 for 16-bit)")
        if blurry.ndim != 4 or blurry.shape[1] not in (1, 3):
            raise ValueError(f"blurry image must be (B, 1 or 3, H, W), got {tuple(blurry.shape)}")
        gray = blurry.shape[1] == 1
        x = blurry.expand(-1, 3, -1, -1) if gray else blurry
        out = deblur_image(net, x.to(next(net.parameters()).device).float(), tile, overlap, factor)
        return (out.mean(1, keepdim=True) if gray else out).to(blurry.device)

    return restore
