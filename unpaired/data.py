"""Training data for the trainers: where pairs come from, and which item each step sees.

Every source is a map from a *position* ``p`` (a non-negative int) to a dict of ``(3, H, W)``
float32 tensors in ``[0, 1]``, values as stored (sRGB for most; see :func:`tone_of`): ``"blur"``
and, when known, ``"sharp"`` (``--mode reblur``: and ``"photo"``). Position ``p`` of the run is
consumed at step ``p // (world * batch)`` by rank ``(p // batch) % world``, so the data order is a
function of (seed, step) alone and a resumed run sees exactly what an uninterrupted one would.
Random crops and flips are drawn through :mod:`blursynth.rng` keyed on ``p``, never a global RNG.

Sources:
- :class:`SyntheticPool`: a fixed set of pairs of the ``default`` recipe made once at start, from which
  every position takes a random crop under one of the 8 flips/rotations (the default: making a pair
  costs more CPU than a training step of the small default network);
- :func:`synthetic_pairs`: :class:`blursynth.data.SyntheticPairs` of the ``default`` recipe, made on
  the fly (``--pair-pool 0``);
- :class:`UnpairedCrops`: the two CycleGAN domains, from folders or synthetic (pooled by default);
- :func:`open_pairs`: :class:`blursynth.data.PairedFolder`, a written dataset or ``lq/`` + ``gt/``;
- :class:`FolderImages`: a folder of unrelated photos (one CycleGAN domain, or reblur's photos);
- :class:`WithPhotos`: pairs plus a crop of a photo without sharp twin (``--mode reblur``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from blursynth import rng
from blursynth.data import PairedFolder, SyntheticPairs
from blursynth.io import IMAGE_SUFFIXES, ImageError, probe_images, read_image, read_samples, to_float
from blursynth.pairs import make_pairs
from blursynth.scenes import dead_leaves
from blursynth.sensor import CRFS

from .metrics import SSIM_WINDOW
from .models import min_side

# rng streams of this module
_S_CROP_Y, _S_CROP_X, _S_FLIP, _S_PERM, _S_ROT = 40, 41, 42, 43, 44


# --------------------------------------------------------------------------- synthetic default

SYNTHETIC_LENGTH = 2 ** 62  # on-the-fly pairs: effectively endless, item i is a function of (seed, i)


def synthetic_pairs(seed: int, size: int) -> SyntheticPairs:
    """The embedded default: pairs of the ``default`` recipe (hand-held camera shake of dead-leaves
    scenes, blurred in linear light with the sensor model), ``(3, size, size)``, item ``i`` a pure
    function of ``(seed, i)``."""
    return SyntheticPairs(SYNTHETIC_LENGTH, "default", seed=seed, crop=(size, size))


class SyntheticPool(Dataset):
    """Position ``p`` -> ``{"blur", "sharp"}`` ``(3, crop, crop)``: a random crop of one of ``n`` synthetic
    pairs made once, turned by one of the 8 flips/quarter-turns (a turned blur pair is still a valid
    pair: its kernel turns with it).

    Pairs ``0 .. n-1`` of :func:`synthetic_pairs` ``(seed, size)`` are made at construction, ``chunk`` at
    a time (one batched :func:`blursynth.pairs.make_pairs` call each, on the CPU); position ``p`` reads
    pair :func:`permuted` ``(seed, n, p)`` (each epoch of ``n`` positions visits every pair once) with a
    crop, flip and turn drawn from ``(seed, p)``. So the data is a pure function of ``(seed, n, size, p)``
    and a resumed run, which rebuilds the pool, sees what an uninterrupted one would. Memory:
    ``n * 2 * 3 * size**2`` float32 (512 pairs of 128 px: 201 MB). Held-out pairs must come from another
    seed (:func:`validation_pairs` uses ``seed + 1_000_003``). ``keep``: which images are stored and
    returned (a CycleGAN domain needs one of them): without ``"blur"`` the pool holds scenes
    ``0 .. n-1`` of :func:`synthetic_sharp` and nothing is blurred; memory falls with each image left out.
    """

    def __init__(self, seed: int, n: int, size: int, crop: int, chunk: int = 32, progress: bool = False,
                 keep: tuple[str, ...] = ("blur", "sharp")):
        if n < 1 or crop > size:
            raise ValueError(f"--pair-pool {n} must be >= 1 and --crop {crop} at most --pair-pool-size {size}")
        if not keep or set(keep) - {"blur", "sharp"}:
            raise ValueError(f"keep must name 'blur' and/or 'sharp', got {keep!r}")
        self.seed, self.n, self.crop = seed, n, crop
        self.keys = tuple(k for k in ("blur", "sharp") if k in keep)
        recipe = synthetic_pairs(seed, size).recipe
        self.blur = torch.empty(n, 3, size, size) if "blur" in keep else None
        self.sharp = torch.empty(n, 3, size, size) if "sharp" in keep else None
        what = {("blur", "sharp"): "training pairs", ("blur",): "blurry images", ("sharp",): "sharp scenes"}[self.keys]
        with tqdm(total=n, desc=f"making {n} {what} of {size} px", disable=not progress,
                  dynamic_ncols=True) as bar:
            for a in range(0, n, chunk):
                b = min(n, a + chunk)
                made = (make_pairs(recipe, range(a, b), seed) if self.blur is not None
                        else {"sharp": dead_leaves(b - a, size, seed=seed, start=a)})
                for k in self.keys:
                    getattr(self, k)[a:b] = made[k]
                bar.update(b - a)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        i = permuted(self.seed, self.n, p)
        crops = random_crop([getattr(self, k)[i] for k in self.keys], self.crop, self.seed, p, stream=3)
        turns = int(rng.uniform(self.seed, rng.as_index([p]), (), stream=_S_ROT) * 4)
        return {k: c.rot90(turns, (-2, -1)).contiguous() for k, c in zip(self.keys, crops)}


def synthetic_sharp(seed: int, size: int, p: int) -> torch.Tensor:
    """Sharp scene ``p`` ``(3, size, size)`` of the sharp synthetic domain (no blur is computed)."""
    return dead_leaves(1, size, seed=seed, start=p)[0]


# --------------------------------------------------------------------------- folders

def list_images(folder: str | Path, option: str) -> list[Path]:
    """The image files of ``folder`` by suffix, sorted, not recursive, hidden files left out (macOS
    writes ``._photo.jpg`` beside ``photo.jpg`` on other file systems: no image); ``option`` names it
    in errors."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():  # (a photo given for its folder was called "no such folder")
        raise FileNotFoundError(f"{option} {folder}: is a file, not a folder; pass the folder that holds the images")
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{option} {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class FolderImages(Dataset):
    """The usable photos of a folder: item ``i`` is ``(3, H, W)`` float32 in ``[0, 1]`` at full size.

    Each image file (by suffix, not recursive, not hidden) is checked once by :func:`blursynth.io.probe_images`.
    Files that do not decode, or whose shorter side is below ``min_side``, are left out and listed in
    ``skipped`` (``"path: reason; fix"``): one bad file among scraped photos should neither stop a run
    nor end it hours in, when a step first draws it.

    Raises:
        FileNotFoundError: no such folder, or no image files in it.
        ImageError: no usable image in it.
    """

    def __init__(self, folder: str | Path, option: str = "folder", min_side: int = 1):
        self.files: list[Path] = []
        self.skipped: list[str] = []
        paths = list_images(folder, option)
        for path, probed in zip(paths, probe_images(paths)):
            if isinstance(probed, ImageError):
                self.skipped.append(str(probed))
                continue
            h, w = probed
            if min(h, w) < min_side:
                self.skipped.append(f"{path}: {w}x{h} is smaller than --crop {min_side}; lower --crop or remove it")
                continue
            self.files.append(path)
        if not self.files:
            raise ImageError(f"{option} {folder}: no usable image; " + "; ".join(self.skipped[:3])
                             + (f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.files[i])[0])

    def random_crop(self, i: int, size: int, seed: int, p: int, stream: int = 0) -> torch.Tensor:
        """``random_crop([self[i]], size, seed, p, stream)[0]``, the same values, with only the crop
        converted to float (converting a whole 12 Mpx JPEG took 3x as long as decoding it)."""
        samples = read_samples(self.files[i])
        y, x, flip = _crop_box(*samples.shape[:2], size, seed, p, stream, str(self.files[i]))
        crop = torch.from_numpy(to_float(samples[y:y + size, x:x + size], 3, self.files[i])[0])
        return crop.flip(-1).contiguous() if flip else crop


def open_pairs(folder: str | Path, option: str = "--pairs") -> PairedFolder:
    """A folder of pairs: written by ``blursynth dataset`` (``manifest.jsonl``) or ``lq/`` + ``gt/``. Its
    kernel files are not read: the trainers never use them, and one missing stopped a run at the step
    that first drew its pair, though its images had passed the check at start."""
    try:
        return PairedFolder(folder, kernels=False)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(f"{option} {exc}") from None


def usable_pairs(source: PairedFolder, option: str, crop: int) -> list[str]:
    """Leave out of ``source`` (in place) the pairs that training cannot read, and return why,
    one ``"path: reason; fix"`` each: a file that does not decode, a blurry image and its twin of
    different sizes, or a pair smaller than ``crop`` (``--crop``). As :class:`FolderImages` does
    for photo folders: read only when a step first drew it, such a pair ended the run there, hours
    in, and a resume drew it again. ``option`` names the folder in errors.

    Raises:
        ImageError: no usable pair.
    """
    paths, indices = [], []
    for rec in source.records:
        paths += [source.root / rec["blur"], source.root / rec["sharp"]]
        indices.append(rec["index"])
    probed = probe_images(paths)
    kept, skipped = [], []
    for i in range(len(source)):
        (blur, sharp), (blur_size, sharp_size) = paths[2 * i:2 * i + 2], probed[2 * i:2 * i + 2]
        bad = next(((p, s) for p, s in ((blur, blur_size), (sharp, sharp_size)) if isinstance(s, ImageError)), None)
        if bad is not None:
            # (a written dataset's file is remade by the command that wrote it: io's advice is for a photo)
            skipped.append(source.how_to_remake(bad[1], bad[0], indices[i]) if source.written else str(bad[1]))
        elif blur_size != sharp_size:
            skipped.append(f"{blur} is {blur_size[1]}x{blur_size[0]} but {sharp} is {sharp_size[1]}x{sharp_size[0]}; "
                           "a blurry image and its sharp twin must have the same size")
        elif min(blur_size) < crop:
            skipped.append(f"{blur}: {blur_size[1]}x{blur_size[0]} is smaller than --crop {crop}; lower --crop "
                           "or remove the pair")
        else:
            kept.append(i)
    if not kept:
        raise ImageError(f"{option} {source.root}: no usable pair; " + "; ".join(skipped[:3])
                         + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
    source.keep(kept)
    return skipped


# --------------------------------------------------------------------------- positions -> crops

def permuted(seed: int, n: int, p: int, stream: int = _S_PERM) -> int:
    """Item (an int in ``[0, n)``) of a size-``n`` set at position ``p >= 0``: epochs are seeded
    permutations, one per ``p // n``. ``n`` must be >= 1."""
    if n < 1:  # (an empty set failed with ZeroDivisionError)
        raise ValueError(f"permuted needs a set of at least one item, got n={n}")
    return int(_epoch_order(seed, n, p // n, stream)[p % n])


@functools.lru_cache(maxsize=4)  # (a few sets per run: pairs, photos, CycleGAN's two domains)
def _epoch_order(seed: int, n: int, epoch: int, stream: int) -> torch.Tensor:
    """The items of epoch ``epoch`` in their order, kept between calls: drawn again for each item, the
    epoch took 1.4 ms an item at 20,000 pairs and 21 ms at 200,000 (kept: 0.01 and 0.1 ms)."""
    keys = rng.uniform(seed, rng.as_index(range(epoch * n, (epoch + 1) * n)), (), stream=stream)
    return torch.argsort(keys, stable=True)


def random_crop(images: list[torch.Tensor], size: int, seed: int, p: int, stream: int = 0,
                name: str = "image") -> list[torch.Tensor]:
    """The same random ``size x size`` crop (and horizontal flip) of equally sized ``(C, H, W)`` images,
    drawn from ``(seed, p, stream)``: contiguous, dtype and device kept. ``size >= 1``; an image
    smaller than it raises ImageError naming ``name``, images of different sizes ValueError."""
    if any(im.shape[-2:] != images[0].shape[-2:] for im in images):  # (else all were cut at the first's scale)
        raise ValueError(f"{name}: images of different sizes {[tuple(im.shape[-2:]) for im in images]} cannot share a crop")
    y, x, flip = _crop_box(*images[0].shape[-2:], size, seed, p, stream, name)
    out = [im[..., y:y + size, x:x + size] for im in images]
    return [o.flip(-1).contiguous() if flip else o.contiguous() for o in out]


def _crop_box(h: int, w: int, size: int, seed: int, p: int, stream: int, name: str) -> tuple[int, int, bool]:
    """:func:`random_crop`'s draw for an ``h x w`` image: top, left, and whether to flip."""
    if size < 1:  # (0 gave empty crops, a negative size crops of other sizes)
        raise ValueError(f"crop size must be >= 1, got {size}")
    if h < size or w < size:
        raise ImageError(f"{name}: {w}x{h} is smaller than --crop {size}; lower --crop or remove it")
    idx = rng.as_index([p])
    y = int(rng.uniform(seed, idx, (), stream=_S_CROP_Y + 10 * stream) * (h - size + 1))
    x = int(rng.uniform(seed, idx, (), stream=_S_CROP_X + 10 * stream) * (w - size + 1))
    flip = bool(rng.uniform(seed, idx, (), stream=_S_FLIP + 10 * stream) < 0.5)
    return y, x, flip


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size x size`` window of ``image (..., H, W)`` (a view), shorter along a side under ``size``."""
    h, w = image.shape[-2:]
    size_y, size_x = min(size, h), min(size, w)
    y, x = (h - size_y) // 2, (w - size_x) // 2
    return image[..., y:y + size_y, x:x + size_x]


class PairedCrops(Dataset):
    """Position ``p`` -> ``{"blur", "sharp"}`` ``(3, crop, crop)`` from a pair source (synthetic at crop
    size, or full-size pairs cropped at their own scale), plus, for pairs whose manifest records how
    they were made, the tone curve they went through (:func:`tone_of`): ``--mode reblur`` re-blurs
    them through it."""

    def __init__(self, source, crop: int, seed: int, synthetic: bool, items: int | None = None):
        self.source, self.crop, self.seed, self.synthetic = source, crop, seed, synthetic
        self.items = items if items is not None else (None if synthetic else len(source))

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        if self.synthetic:
            item = self.source[p]
            return {"blur": item["blur"], "sharp": item["sharp"]}
        k = permuted(self.seed, self.items, p)
        item = self.source[k]
        name = f"{self.source.root / self.source.records[k]['blur']} (and its sharp twin)"
        blur, sharp = random_crop([item["blur"], item["sharp"]], self.crop, self.seed, p, name=name)
        return {"blur": blur, "sharp": sharp, **(tone_of(item["params"]) if "params" in item else {})}


def tone_of(params: dict) -> dict:
    """The tone curve a written pair was made through, from its flat manifest ``params``
    (:func:`~blursynth.data.flatten_params`): ``{"crf"}`` (int64, an index into
    :data:`blursynth.sensor.CRFS`) and ``{"gamma"}`` (float32; 1 where the curve has none), 0-d tensors
    that batch into :func:`~unpaired.models.reblur`'s per-image curves (:func:`~unpaired.models.tone_params`)."""
    gamma = params["sensor.gamma"]  # (NaN where the curve has none: flatten_params' stand-in for None)
    return {"crf": torch.tensor(CRFS.index(params["sensor.crf"])),
            "gamma": torch.tensor(1.0 if gamma is None or math.isnan(gamma) else gamma, dtype=torch.float32)}


class UnpairedCrops(Dataset):
    """Position ``p`` -> ``{"blur", "sharp"}`` crops from two unrelated sources (CycleGAN domains A, B).

    ``blurry``/``sharp`` are :class:`FolderImages`, or ``None`` for synthetic domains: blurry crops of
    one set of procedural scenes and sharp crops of a disjoint set (no pair shared), made on the fly,
    or with ``pool`` > 0 cut from ``pool`` blurry images and ``pool`` other sharp scenes of side
    ``pool_size`` made once (:class:`SyntheticPool`: a CPU step then costs no image synthesis).
    """

    def __init__(self, blurry: FolderImages | None, sharp: FolderImages | None, crop: int, seed: int,
                 pool: int = 0, pool_size: int = 128, progress: bool = False):
        self.blurry, self.sharp, self.crop, self.seed = blurry, sharp, crop, seed
        self.pool_a = self.pool_b = None
        if blurry is None and pool:
            self.pool_a = SyntheticPool(seed, pool, pool_size, crop, progress=progress, keep=("blur",))
            self.pool_b = SyntheticPool(seed_b(seed), pool, pool_size, crop, progress=progress, keep=("sharp",))
        elif blurry is None:
            self.synth_a = synthetic_pairs(seed, crop)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        if self.pool_a is not None:
            return {"blur": self.pool_a[p]["blur"], "sharp": self.pool_b[p]["sharp"]}
        if self.blurry is None:
            # sharp scenes of another seed: the two domains share no scene
            return {"blur": self.synth_a[p]["blur"], "sharp": synthetic_sharp(seed_b(self.seed), self.crop, p)}
        i = permuted(self.seed, len(self.blurry), p, stream=_S_PERM)
        j = permuted(self.seed, len(self.sharp), p, stream=_S_PERM + 1)
        a = self.blurry.random_crop(i, self.crop, self.seed, p, stream=1)
        b = self.sharp.random_crop(j, self.crop, self.seed, p, stream=2)
        return {"blur": a, "sharp": b}


class WithPhotos(Dataset):
    """Position ``p`` -> the item of ``pairs`` at ``p`` plus ``"photo"``: a random ``crop`` of one of
    ``photos`` (:class:`FolderImages`, blurry photos without sharp twin: ``--mode reblur``), the photo
    and crop drawn from ``(seed, p)`` on streams of their own."""

    def __init__(self, pairs: Dataset, photos: FolderImages, crop: int, seed: int):
        self.pairs, self.photos, self.crop, self.seed = pairs, photos, crop, seed

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        i = permuted(self.seed, len(self.photos), p, stream=_S_PERM + 2)
        photo = self.photos.random_crop(i, self.crop, self.seed, p, stream=5)
        return {**self.pairs[p], "photo": photo}


def seed_b(seed: int) -> int:
    """Seed of the sharp synthetic domain of CycleGAN runs (disjoint from the blurry domain's scenes)."""
    return seed + 7919


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


def validation_pairs(cfg, blurry: FolderImages | None = None) -> tuple[list[dict], Dataset | None]:
    """Held-out validation items ``{"blur", "sharp"?}`` (centre crops of ``cfg.val_crop``, or of the
    smallest image's side when an image is smaller, so that they stack into one batch) and the
    training pair source with the held-out items removed (``None`` for synthetic data). CycleGAN's
    ``--blurry`` photos (``blurry``, scanned here when not given) have no sharp twin: the first few
    give sample grids."""
    n = cfg.val_size
    if cfg.val_pairs:
        source = open_pairs(cfg.val_pairs, "--val-pairs")
        val = [source[i] for i in range(min(n, len(source)))]
        _check_sides(val, [source.root / r["blur"] for r in source.records], cfg, "--val-pairs")
    elif cfg.mode != "cyclegan" and cfg.pairs:
        source = open_pairs(cfg.pairs)
        if len(source) <= n:
            raise ValueError(f"--pairs {cfg.pairs}: {len(source)} pairs cannot spare --val-size {n} for "
                             "validation; pass --val-pairs DIR or a smaller --val-size")
        val = [source[i] for i in range(len(source) - n, len(source))]
        _check_sides(val, [source.root / r["blur"] for r in source.records[len(source) - n:]], cfg,
                     "--pairs (held out for validation)")
        source.records = source.records[: len(source) - n]
        return _crop_items(val, cfg.val_crop), source
    elif cfg.mode == "cyclegan" and cfg.blurry:
        return validation_photos(cfg, blurry), None
    else:
        # held-out synthetic pairs: a seed the training stream never uses
        held_out = synthetic_pairs(cfg.seed + 1_000_003, cfg.val_crop)
        val = [held_out[i] for i in range(n)]
    return _crop_items(val, cfg.val_crop), (open_pairs(cfg.pairs) if cfg.pairs else None)


def validation_photos(cfg, blurry: FolderImages | None = None) -> list[dict]:
    """``{"blur"}`` items of the first ``--val-size`` (at most 8) ``--blurry`` photos, centre crops as in
    :func:`validation_pairs`: CycleGAN's sample grids, and reblur's re-blur score on photos without
    sharp twin. ``blurry`` is scanned here when not given."""
    images = blurry if blurry is not None else FolderImages(cfg.blurry, "--blurry", cfg.crop)
    val = [{"blur": images[i]} for i in range(min(cfg.val_size, len(images), 8))]
    _check_sides(val, images.files, cfg, "--blurry")
    return _crop_items(val, cfg.val_crop)


def _check_sides(items: list[dict], names: list, cfg, option: str) -> None:
    """Refuse validation images too small to validate on, naming the first: they are all cropped to
    the smallest one's side (then to a multiple of the generator's size factor), which must hold 2 px
    at the generator's coarsest scale and, when there are sharp twins, SSIM's 11 px window. Checked
    at start: the first validation, ``--eval-every`` steps in, failed in a traceback."""
    factor = cfg.size_factor()
    need = max(min_side(factor), SSIM_WINDOW if any("sharp" in item for item in items) else 0)
    for item, name in zip(items, names):
        h, w = item["blur"].shape[-2:]
        if min(h, w) // factor * factor < need:
            raise ImageError(f"{option}: {name} is {w}x{h}, too small to validate on (validation crops must "
                             f"be at least {need} px, in multiples of {factor}, for the {cfg.generator} generator"
                             f"{' and SSIM' if need > min_side(factor) else ''}); remove it, or pass --val-size 0")


def _crop_items(items: list[dict], size: int) -> list[dict]:
    """Centre crops of one square size: ``size``, or the smallest side among the images if less.
    Copies, not views: a view kept its whole image alive for the run (8 photos of 12 Mpx, 1.15 GB
    as float32, for 128 px validation crops of CycleGAN's --blurry folder)."""
    size = min([size] + [min(item[k].shape[-2:]) for item in items for k in ("blur", "sharp") if k in item])
    return [{k: center_crop(item[k], size).clone() for k in ("blur", "sharp") if k in item} for item in items]
