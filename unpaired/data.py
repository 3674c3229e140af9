"""Training data for the trainers: where pairs come from, and which item each step sees.

Every source is a map from a *position* ``p`` (a non-negative int) to a dict of ``(3, H, W)``
float32 sRGB tensors in ``[0, 1]``: ``"blur"`` and, when known, ``"sharp"``. Position ``p`` of the
run is consumed at step ``p // (world * batch)`` by rank ``(p // batch) % world``, so the data order
is a function of (seed, step) alone and a resumed run sees exactly what an uninterrupted one would.
Random crops and flips are drawn through :mod:`blursynth.rng` keyed on ``p``, never a global RNG.

Sources:
- :func:`synthetic_pairs`: procedural scenes blurred on the fly (the default; one function, so wiring
  it to another generator is one edit);
- :class:`FolderPairs`: a folder of pairs (``blur/`` and ``sharp/`` with matching file names);
- :class:`FolderImages`: a folder of unrelated photos (one CycleGAN domain).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from blursynth import rng
from blursynth.io import IMAGE_SUFFIXES, ImageError, read_image

# rng streams of this module
_S_CROP_Y, _S_CROP_X, _S_FLIP, _S_PERM = 40, 41, 42, 43


# --------------------------------------------------------------------------- synthetic default

def synthetic_pairs(seed: int, size: int):
    """The embedded default: a map ``index -> {"blur", "sharp"}`` of ``(3, size, size)`` pairs whose
    item ``i`` is a pure function of ``(seed, i)``. Replace the body to plug in another generator."""
    return ProceduralPairs(seed, size)


class ProceduralPairs(Dataset):
    """Dead-leaves scenes blurred in linear light by random curved motion kernels plus sensor noise.

    Item ``i``: ``{"blur", "sharp"}`` ``(3, size, size)`` float32 sRGB in ``[0, 1]`` and ``"kernel"``
    ``(k, k)`` (non-negative, sums to 1, true convolution); a pure function of ``(seed, i)``, CPU.
    """

    def __init__(self, seed: int, size: int, kernel_size: int = 21, n_leaves: int = 120):
        self.seed, self.size, self.k, self.n_leaves = seed, size, kernel_size, n_leaves

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, i: int) -> dict:
        idx = rng.as_index([int(i)])
        pad = self.k // 2
        sharp_big = self._scene(idx, self.size + 2 * pad)           # (1, 3, S+2p, S+2p)
        kernel = self._kernel(idx)                                   # (1, k, k)
        linear = sharp_big ** 2.2
        # true convolution = correlation with the flipped kernel; 'valid' keeps only full-support pixels
        blurred = F.conv2d(linear.transpose(0, 1), kernel.flip(-1, -2)[:, None]).transpose(0, 1)
        sigma = rng.log_uniform(self.seed, idx, 1e-3, 1e-2, (), stream=5)
        noise = rng.normal(self.seed, idx, blurred.shape[1:], stream=6) * sigma
        blur = (blurred + noise).clamp(0, 1) ** (1 / 2.2)
        sharp = sharp_big[..., pad:pad + self.size, pad:pad + self.size]
        return {"blur": blur[0].contiguous(), "sharp": sharp[0].contiguous(), "kernel": kernel[0], "index": int(i)}

    def _scene(self, idx: torch.Tensor, side: int) -> torch.Tensor:
        n = self.n_leaves
        centre = rng.uniform(self.seed, idx, (n, 2), stream=1) * side
        # power-law radii (dead-leaves statistics: scale invariance)
        radius = rng.log_uniform(self.seed, idx, 1.5, side / 3, (n,), stream=2)
        colour = rng.uniform(self.seed, idx, (n, 3), stream=3)
        yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
        d2 = (xx[None] - centre[0, :, 0, None, None]) ** 2 + (yy[None] - centre[0, :, 1, None, None]) ** 2
        inside = d2 <= radius[0, :, None, None] ** 2                 # (n, S, S)
        # the last leaf that covers a pixel is on top; uncovered pixels take leaf 0's colour
        order = torch.arange(1, n + 1)[:, None, None] * inside
        top = order.argmax(0)
        return colour[0][top].permute(2, 0, 1)[None]

    def _kernel(self, idx: torch.Tensor) -> torch.Tensor:
        k, pts = self.k, 64
        length = rng.range_uniform(self.seed, idx, 2.0, k - 3.0, (), stream=10)
        angle = rng.range_uniform(self.seed, idx, 0.0, math.pi, (), stream=11)
        bend = rng.range_uniform(self.seed, idx, -0.5, 0.5, (), stream=12)
        t = torch.linspace(-0.5, 0.5, pts)
        along, across = length * t, length * bend * (t ** 2 - 1 / 12)
        c, s = torch.cos(angle), torch.sin(angle)
        x = along * c - across * s
        y = along * s + across * c
        x, y = x - x.mean(), y - y.mean()  # centred: the kernel does not shift the image
        # bilinear splat of the path samples onto the grid
        x, y = x + k // 2, y + k // 2
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        grid = torch.zeros(k * k)
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = (x0 + dx).long().clamp(0, k - 1), (y0 + dy).long().clamp(0, k - 1)
            grid.index_add_(0, yi * k + xi, w)
        grid = grid.view(1, k, k)
        return grid / grid.sum()


# --------------------------------------------------------------------------- folders

def _list_images(folder: str | Path, option: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{option} {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class FolderImages(Dataset):
    """Item ``i`` of a folder of photos: ``(3, H, W)`` float32 in ``[0, 1]`` at full size."""

    def __init__(self, folder: str | Path, option: str = "folder"):
        self.files = _list_images(folder, option)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.files[i])[0])


class FolderPairs(Dataset):
    """Pairs in ``DIR/blur/`` (or ``blurry/``) and ``DIR/sharp/`` matched by file stem.

    Item ``i``: ``{"blur", "sharp"}`` full-size ``(3, H, W)`` float32 in ``[0, 1]``.
    """

    def __init__(self, folder: str | Path, option: str = "--pairs"):
        folder = Path(folder)
        blur_dir = next((folder / n for n in ("blur", "blurry") if (folder / n).is_dir()), None)
        if blur_dir is None or not (folder / "sharp").is_dir():
            raise FileNotFoundError(f"{option} {folder}: expected sub-folders blur/ (or blurry/) and sharp/ "
                                    "holding images with matching file names")
        sharp = {p.stem: p for p in _list_images(folder / "sharp", option)}
        self.pairs = [(b, sharp[b.stem]) for b in _list_images(blur_dir, option) if b.stem in sharp]
        if not self.pairs:
            raise FileNotFoundError(f"{option} {folder}: no file name appears in both {blur_dir.name}/ and sharp/")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        b, s = self.pairs[i]
        blur, sharp = torch.from_numpy(read_image(b)[0]), torch.from_numpy(read_image(s)[0])
        if blur.shape != sharp.shape:
            raise ImageError(f"{b}: size {tuple(blur.shape[1:])} differs from its sharp twin {s} "
                             f"{tuple(sharp.shape[1:])}")
        return {"blur": blur, "sharp": sharp}


# --------------------------------------------------------------------------- positions -> crops

def permuted(seed: int, n: int, p: int, stream: int = _S_PERM) -> int:
    """Item of a size-``n`` set at position ``p``: epochs are seeded permutations, one per ``p // n``."""
    epoch = p // n
    keys = rng.uniform(seed, rng.as_index(range(epoch * n, (epoch + 1) * n)), (), stream=stream)
    return int(torch.argsort(keys, stable=True)[p % n])


def random_crop(images: list[torch.Tensor], size: int, seed: int, p: int, stream: int = 0,
                name: str = "image") -> list[torch.Tensor]:
    """The same random ``size x size`` crop (and horizontal flip) of equally sized ``(C, H, W)`` images."""
    h, w = images[0].shape[-2:]
    if h < size or w < size:
        raise ImageError(f"{name}: {h}x{w} is smaller than --crop {size}; lower --crop or remove the image")
    idx = rng.as_index([p])
    y = int(rng.uniform(seed, idx, (), stream=_S_CROP_Y + 10 * stream) * (h - size + 1))
    x = int(rng.uniform(seed, idx, (), stream=_S_CROP_X + 10 * stream) * (w - size + 1))
    flip = bool(rng.uniform(seed, idx, (), stream=_S_FLIP + 10 * stream) < 0.5)
    out = [im[..., y:y + size, x:x + size] for im in images]
    return [o.flip(-1).contiguous() if flip else o.contiguous() for o in out]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    size_y, size_x = min(size, h), min(size, w)
    y, x = (h - size_y) // 2, (w - size_x) // 2
    return image[..., y:y + size_y, x:x + size_x]


class PairedCrops(Dataset):
    """Position ``p`` -> ``{"blur", "sharp"}`` ``(3, crop, crop)`` from a pair source (synthetic at crop
    size, or full-size pairs cropped at their own scale)."""

    def __init__(self, source, crop: int, seed: int, synthetic: bool, items: int | None = None):
        self.source, self.crop, self.seed, self.synthetic = source, crop, seed, synthetic
        self.items = items if items is not None else (None if synthetic else len(source))

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        if self.synthetic:
            item = self.source[p]
            return {"blur": item["blur"], "sharp": item["sharp"]}
        item = self.source[permuted(self.seed, self.items, p)]
        blur, sharp = random_crop([item["blur"], item["sharp"]], self.crop, self.seed, p, name=f"pair {p}")
        return {"blur": blur, "sharp": sharp}


class UnpairedCrops(Dataset):
    """Position ``p`` -> ``{"blur", "sharp"}`` crops from two unrelated sources (CycleGAN domains A, B).

    ``blurry``/``sharp`` are :class:`FolderImages`, or ``None`` for synthetic domains: blurry crops of
    one set of procedural scenes and sharp crops of a disjoint set (no pair shared).
    """

    def __init__(self, blurry: FolderImages | None, sharp: FolderImages | None, crop: int, seed: int):
        self.blurry, self.sharp, self.crop, self.seed = blurry, sharp, crop, seed
        if blurry is None:
            self.synth_a, self.synth_b = synthetic_pairs(seed, crop), synthetic_pairs(seed + 7919, crop)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        if self.blurry is None:
            return {"blur": self.synth_a[p]["blur"], "sharp": self.synth_b[p]["sharp"]}
        a = self.blurry[permuted(self.seed, len(self.blurry), p, stream=_S_PERM)]
        b = self.sharp[permuted(self.seed, len(self.sharp), p, stream=_S_PERM + 1)]
        (a,) = random_crop([a], self.crop, self.seed, p, stream=1, name=str(self.blurry.files[0].parent))
        (b,) = random_crop([b], self.crop, self.seed, p, stream=2, name=str(self.sharp.files[0].parent))
        return {"blur": a, "sharp": b}


class StepSampler(Sampler):
    """Positions this rank consumes from ``start_step`` to ``end_step``: step ``s``, rank ``r`` reads
    ``s * world * batch + r * batch + [0, batch)``."""

    def __init__(self, start_step: int, end_step: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.end, self.batch, self.rank, self.world = start_step, end_step, batch, rank, world

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.batch

    def __iter__(self):
        for s in range(self.start, self.end):
            base = (s * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)


def validation_pairs(cfg) -> tuple[list[dict], Dataset | None]:
    """Held-out validation items ``{"blur", "sharp"?}`` (centre crops of ``cfg.val_crop``) and the
    training pair source with the held-out items removed (``None`` for synthetic data)."""
    n = cfg.val_size
    if cfg.val_pairs:
        source = FolderPairs(cfg.val_pairs, "--val-pairs")
        val = [source[i] for i in range(min(n, len(source)))]
    elif cfg.mode == "paired" and cfg.pairs:
        source = FolderPairs(cfg.pairs)
        if len(source) <= n:
            raise ValueError(f"--pairs {cfg.pairs}: {len(source)} pairs cannot spare --val-size {n} for "
                             "validation; pass --val-pairs DIR or a smaller --val-size")
        val = [source[i] for i in range(len(source) - n, len(source))]
        source.pairs = source.pairs[: len(source) - n]
        return [_crop_item(v, cfg.val_crop) for v in val], source
    elif cfg.mode == "cyclegan" and cfg.blurry:
        images = FolderImages(cfg.blurry, "--blurry")
        val = [{"blur": images[i]} for i in range(min(n, len(images), 8))]
    else:
        # held-out synthetic pairs: a seed the training stream never uses
        held_out = synthetic_pairs(cfg.seed + 1_000_003, cfg.val_crop)
        val = [held_out[i] for i in range(n)]
    return [_crop_item(v, cfg.val_crop) for v in val], (FolderPairs(cfg.pairs) if cfg.pairs else None)


def _crop_item(item: dict, size: int) -> dict:
    return {k: center_crop(item[k], size) for k in ("blur", "sharp") if k in item}
