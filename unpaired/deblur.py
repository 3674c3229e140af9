"""Deblur photographs with a trained generator: ``python -m unpaired.deblur INPUT... --checkpoint CKPT --out DIR``.

Any image :func:`blursynth.io.read_image` reads, any size: the image is cut into overlapping tiles,
each tile is restored, and the tiles are blended with weights that vanish near tile edges (where a
tile lacks context) and sum to one elsewhere, so the result has no seams and a fully convolutional
model gives the same output tiled as untiled away from the image border. Outputs keep the input's
size, file format and bit depth (grayscale stays grayscale). A file that fails is reported and skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from blursynth.io import ImageError, atomic_path, read_image, write_image
from unpaired.config import pick_device
from unpaired.models import build_generator, size_factor


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, int]:
    """The deblurring generator ``G`` of a training checkpoint, in eval mode, and its size factor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file (runs write checkpoints/best.pt and "
                                "checkpoints/step_*.pt in their run folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        spec, weights = state["generator_spec"], state["models"]["G"]
    except Exception as exc:
        raise ValueError(f"--checkpoint {path}: not a checkpoint written by unpaired.train ({exc})") from None
    net = build_generator(spec)
    net.load_state_dict(weights)
    return net.to(device).eval(), size_factor(spec)


def _window(tile: int, overlap: int, device) -> torch.Tensor:
    """1-D blending weights: 0 on the outer quarter of the overlap, a linear ramp across its middle,
    1 inside. Two tiles ``tile - overlap`` apart have weights summing to exactly 1 where they overlap."""
    margin = overlap // 4
    ramp = overlap - 2 * margin
    d = torch.minimum(torch.arange(tile, device=device), torch.arange(tile, device=device).flip(0)).float()
    return ((d - margin + 1) / (ramp + 1)).clamp(0, 1)


@torch.no_grad()
def deblur_image(net: nn.Module, image: torch.Tensor, tile: int = 256, overlap: int = 32,
                 factor: int = 4, batch: int = 4) -> torch.Tensor:
    """Restore ``(B, 3, H, W)`` images in ``[0, 1]`` tile by tile; returns ``(B, 3, H, W)`` in ``[0, 1]``.

    ``tile`` (rounded up to a multiple of ``factor``) is the side processed at once and bounds memory;
    ``overlap`` pixels are shared by neighbouring tiles (must be < ``tile``; a model whose receptive
    radius is below ``overlap // 4`` gives the untiled result). Runs on ``image.device``.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    tile = math.ceil(tile / factor) * factor
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got overlap={overlap}, tile={tile}")
    b, c, h, w = image.shape
    stride = tile - overlap
    # pad: half an overlap of context on each side, then up to a whole number of strides
    pad = overlap // 2
    hp = max(tile, pad + h + pad)
    wp = max(tile, pad + w + pad)
    hp = tile + math.ceil((hp - tile) / stride) * stride
    wp = tile + math.ceil((wp - tile) / stride) * stride
    padded = _pad(image, pad, hp - h - pad, pad, wp - w - pad)
    tiles = padded.unfold(2, tile, stride).unfold(3, tile, stride)           # (B, C, ny, nx, T, T)
    ny, nx = tiles.shape[2:4]
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, tile, tile)
    outs = torch.cat([net(tiles[i:i + batch]).float().clamp(0, 1) for i in range(0, tiles.shape[0], batch)])
    win = _window(tile, overlap, image.device)
    weight = _edge_weights(ny, nx, tile, win)
    cols = (outs.reshape(b, ny * nx, c * tile * tile) * weight.reshape(1, ny * nx, -1).repeat(1, 1, c))
    num = F.fold(cols.transpose(1, 2), (hp, wp), tile, stride=stride)
    den = F.fold(weight.reshape(1, ny * nx, -1).transpose(1, 2), (hp, wp), tile, stride=stride)
    out = num / den
    return out[..., pad:pad + h, pad:pad + w]


def _edge_weights(ny: int, nx: int, tile: int, win: torch.Tensor) -> torch.Tensor:
    """``(ny * nx, T, T)`` weights: the window, except that sides facing the image border are 1 (no
    neighbour will cover them), so the weights never sum to zero."""
    half = tile // 2
    wy = win[None, :].repeat(ny, 1)
    wx = win[None, :].repeat(nx, 1)
    wy[0, :half] = 1.0
    wy[-1, tile - half:] = 1.0
    wx[0, :half] = 1.0
    wx[-1, tile - half:] = 1.0
    return (wy[:, None, :, None] * wx[None, :, None, :]).reshape(ny * nx, tile, tile)


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding, falling back to edge replication where the image is too small to reflect."""
    mode = "reflect" if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1] else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def output_path(src: Path, out_dir: Path) -> Path:
    return out_dir / src.name


def deblur_file(net: nn.Module, src: Path, out_dir: Path, tile: int, overlap: int, factor: int,
                device: torch.device) -> Path:
    """Read ``src``, restore it, write it to ``out_dir`` with the same name, format and bit depth."""
    array, bits = read_image(src)
    gray = bool(np.all(array[0] == array[1]) and np.all(array[1] == array[2]))
    image = torch.from_numpy(array)[None].to(device)
    out = deblur_image(net, image, tile, overlap, factor)[0].cpu().numpy()
    if gray:
        out = out.mean(0, keepdims=True)
    dst = output_path(src, out_dir)
    if bits == 32 and dst.suffix.lower() in (".tif", ".tiff"):  # float TIFF in, float TIFF out
        pixels = out.transpose(1, 2, 0).astype(np.float32)
        with atomic_path(dst) as tmp:
            iio.imwrite(tmp, np.ascontiguousarray(pixels[..., 0] if gray else pixels), extension=dst.suffix)
    else:
        write_image(dst, out, bits=16 if bits > 8 and dst.suffix.lower() in (".png", ".tif", ".tiff") else 8)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unpaired.deblur",
                                     description="Deblur images with a generator trained by unpaired.train.")
    parser.add_argument("inputs", nargs="+", help="image files (PNG, JPEG, TIFF, ...) of any size")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt from a run folder (e.g. checkpoints/best.pt)")
    parser.add_argument("--out", required=True, help="output folder (created); files keep their names")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels; lower it to save memory (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default 32)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
        net, factor = load_generator(args.checkpoint, device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for src in tqdm([Path(p) for p in args.inputs], desc="deblur", disable=len(args.inputs) < 2):
        try:
            dst = deblur_file(net, src, out_dir, args.tile, args.overlap, factor, device)
            print(f"{src} -> {dst}")
        except (ImageError, OSError, ValueError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(args.inputs)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
