"""Deblur photographs with a trained generator: ``python -m unpaired.deblur INPUT... --checkpoint CKPT --out DIR``.

Any image :func:`blursynth.io.read_image` reads, any size: the image is cut into overlapping tiles,
restored one row of tiles at a time, and the tiles are blended with weights that vanish near tile
edges (where a tile lacks context) and sum to one elsewhere, so the result has no seams; an image
that one tile holds (sides multiples of the network's size factor) is restored as the network
restores it whole, and a shift-equivariant model whose receptive radius r is at most
``overlap // 4`` gives the same output tiled as untiled except within r pixels of the image border
(see :func:`deblur_image`). Outputs keep the input's size, file format, bit depth and colour type
(a gray file stays gray, an RGB file RGB).
A file that fails is reported and skipped (but a full or read-only disk stops the run at the first
output it cannot write); nothing is written where an output would replace an input, or an earlier
output without ``--overwrite``; ``--skip-existing`` deblurs only the inputs whose output is not there
yet, which finishes a stopped run (outputs are written whole or not at all).
"""

from __future__ import annotations

import argparse
import errno
import math
import pickle
import re
import sys
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from blursynth.interrupt import exit_code, sigterm_interrupts
from blursynth.io import (DEEP_SUFFIXES, ImageError, atomic_path, dead_link_above, first_line, read_image,
                          refuse_short_png, temporary_target, write_image)
from unpaired.config import pick_device, printable_stdout, say
from unpaired.data import list_images
from unpaired.models import build_generator, min_side, size_factor


def step_checkpoints(folder: Path) -> list[Path]:
    """The ``step_*.pt`` of a run's ``checkpoints/`` folder, oldest first. By step, not by name: the
    names have 7 digits, so from step 10,000,000 on the newest sorted first, and was the one a run
    removed to keep the last --keep-last (or passed over by a resume and by a run folder here).
    Only ``step_<digits>.pt``: a copy such as ``step_0000500_backup.pt`` is neither resumed nor removed."""
    steps = {path: path.stem.removeprefix("step_") for path in folder.glob("step_*.pt")}
    return sorted((path for path, digits in steps.items() if digits.isdigit()), key=lambda path: int(steps[path]))


def checkpoint_file(path: str | Path) -> Path:
    """The file ``--checkpoint`` names: a file as given, or for a run folder of ``unpaired.train`` its
    ``checkpoints/best.pt`` (best validation PSNR), else its latest ``checkpoints/step_*.pt`` (CycleGAN
    on photo folders has no validation PSNR, so no ``best.pt``)."""
    path = Path(path)
    if path.is_dir():
        best, steps = path / "checkpoints" / "best.pt", step_checkpoints(path / "checkpoints")
        if best.is_file():
            return best
        if steps:
            return steps[-1]
        raise FileNotFoundError(f"--checkpoint {path}: a folder without checkpoints/best.pt or checkpoints/step_*.pt; "
                                "pass the run folder of an unpaired.train run or one of its checkpoint files")
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file (runs write checkpoints/best.pt and "
                                "checkpoints/step_*.pt in their run folder)")
    return path


def checkpoint_note(given: str | Path, chosen: Path) -> str | None:
    """The stderr line naming the file a run folder ``given`` stood for (:func:`checkpoint_file`), with
    a reblur run's other choice beside ``best.pt``; None when ``given`` named the file itself."""
    if Path(given) == chosen:
        return None
    other = chosen.parent / "best_reblur.pt"
    also = (f" (the run's other choice, chosen on its photos' re-blur error rather than on the pairs: {other})"
            if chosen.name == "best.pt" and other.is_file() else "")
    return f"checkpoint: {chosen}{also}"


def read_checkpoint(path: Path, keys: tuple[str, ...], name: str, map_location="cpu") -> dict:
    """A checkpoint of ``unpaired.train`` loaded as tensors and plain containers only, with ``keys``.
    Anything else raises ValueError with one line that starts with ``name``: a file that is no
    ``torch.save`` file, is cut short, lacks ``keys``, or holds other Python objects (refused rather
    than unpickled, which could run code from a checkpoint someone sent)."""
    try:
        with warnings.catch_warnings():  # (torch's note that it dispatches a TorchScript file: refused below)
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a torch.save file at all
            unsafe = []
        if unsafe:
            raise ValueError(f"{name}: holds Python objects that unpaired.train never writes "
                             f"({', '.join(unsafe)}); not loaded, since unpickling them could run code") from None
        raise ValueError(f"{name}: not a checkpoint written by unpaired.train, or cut short (not a "
                         "torch.save file)") from None
    except Exception as exc:  # (torch's messages run to several lines: the first says what)
        if "TorchScript" in str(exc):  # (torch's words advised weights_only=False, which would run its code)
            raise ValueError(f"{name}: a TorchScript model (torch.jit.save), not a checkpoint written by "
                             "unpaired.train; pass a run folder or its checkpoints/*.pt") from None
        raise ValueError(f"{name}: not a checkpoint written by unpaired.train, or cut short "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{name}: not a checkpoint written by unpaired.train (it has no {', '.join(missing)})")
    return state


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, int]:
    """The deblurring generator ``G`` of a training checkpoint (a file, or a run folder: see
    :func:`checkpoint_file`), in eval mode, and its size factor."""
    path = checkpoint_file(path)
    state = read_checkpoint(path, ("generator_spec", "models"), f"--checkpoint {path}")
    if not isinstance(state["models"], dict) or "G" not in state["models"]:
        raise ValueError(f"--checkpoint {path}: not a checkpoint written by unpaired.train (it has no models.G)")
    spec = state["generator_spec"]
    try:  # (edited or damaged: weights of another size, a spec that is no dict; each was a traceback)
        net = build_generator(spec)
        net.load_state_dict(state["models"]["G"])
        factor = size_factor(spec)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"--checkpoint {path}: its weights G do not fit its generator_spec {spec!r} "
                         f"({first_line(exc)}); use a checkpoint unpaired.train wrote, unedited") from None
    return net.to(device).eval(), factor


def _window(tile: int, overlap: int, device) -> torch.Tensor:
    """1-D blending weights: 0 on the outer quarter of the overlap, a linear ramp across its middle,
    1 inside. Two tiles ``tile - overlap`` apart have weights summing to exactly 1 where they overlap."""
    margin = overlap // 4
    ramp = overlap - 2 * margin
    d = torch.minimum(torch.arange(tile, device=device), torch.arange(tile, device=device).flip(0)).float()
    return ((d - margin + 1) / (ramp + 1)).clamp(0, 1)


@torch.no_grad()
def deblur_image(net: nn.Module, image: torch.Tensor, tile: int = 256, overlap: int = 32,
                 factor: int = 4, batch: int = 4, progress: bool = False) -> torch.Tensor:
    """Restore ``(B, 3, H, W)`` images in ``[0, 1]`` tile by tile; returns ``(B, 3, H, W)`` in ``[0, 1]``.

    ``tile`` (rounded up to a multiple of ``factor``, and at least ``2 * factor``) is the side the network
    sees at once. Along an axis that one tile holds (its length rounded up to a multiple of ``factor``,
    and at least ``2 * factor``, is at most ``tile``) the tile is that rounded length: the axis itself,
    padded only at its end up to the size factor, so a large ``tile`` costs nothing on a small image,
    and an image whose sides are multiples of ``factor`` (at least ``2 * factor``) and at most ``tile``
    is restored as ``net(image)`` exactly, as training validates it. A longer axis is cut into tiles of
    ``tile`` px that share ``overlap`` pixels (must be < ``tile``; rounded up to a multiple of ``factor``
    where that stays below ``tile``), over the axis padded by ``overlap // 2`` px of reflected context at
    each end (rounded up to a multiple of ``factor``): tiles start on the network's grid, so a network
    that downsamples by ``factor`` pools each tile as it pools the whole image.
    A shift-equivariant model (stride-1 convolutions, pointwise layers) whose receptive radius r is
    at most ``overlap // 4`` gives the untiled result ``net(image)`` except within r pixels of the
    image border, where the tiles see reflected padding instead of the network's own: the blending
    weights are zero on the outer ``overlap // 4`` pixels of each tile, so every pixel that counts saw
    its whole receptive field inside its tile. Other models differ everywhere when the image takes
    several tiles: slightly for the U-Net, which downsamples and sees further, and more for the ResNet,
    whose instance norm normalises each tile by that tile's own statistics. One row of tiles is
    restored at a time and added into the output, so memory is about three images (input, padded
    copy, output) plus one row of tiles, whatever the image size. Runs on ``image.device``, with
    ``net`` there; ``image`` is any float dtype (the tiles go in the dtype of ``net``'s weights, when
    it has any); the output is float32; ``progress`` shows a bar over the rows of tiles (after 2 s).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():  # (0-255 values would be restored as if far above white)
        raise TypeError(f"image must be float in [0, 1], got {image.dtype}; convert with .float() / 255 for "
                        "8-bit images (/ 65535 for 16-bit)")
    # (a float64 image, or a half one, met float32 weights in a traceback from inside the network)
    weights = next((p for p in net.parameters() if p.is_floating_point()), None) if isinstance(net, nn.Module) else None
    if weights is not None:
        image = image.to(weights.dtype)
    if image.numel() == 0:  # (a batch of no images: no tiles to concatenate, a traceback from torch.cat)
        return image.new_zeros(image.shape, dtype=torch.float32)
    # (a tile below min_side, --tile 8 or --overlap 0 on a tiny image, ended in a traceback from inside
    # the network)
    tile = max(math.ceil(tile / factor) * factor, min_side(factor))
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got overlap={overlap}, tile={tile}")
    # Tiles start on the network's grid of `factor` px (strides and context pads multiples of it), so a
    # network that downsamples pools a tile's pixels as it pools the whole image's: the overlap is
    # rounded up to a multiple of `factor`, unless that reaches the tile.
    aligned = math.ceil(overlap / factor) * factor
    if aligned < tile:
        overlap = aligned
    b, c, h, w = image.shape
    th, sy, ny, top = _axis_tiles(h, tile, overlap, factor)
    tw, sx, nx, left = _axis_tiles(w, tile, overlap, factor)
    hp, wp = th + (ny - 1) * sy, tw + (nx - 1) * sx
    padded = _pad(image, top, hp - h - top, left, wp - w - left)
    wy = _edge_weights(ny, _window(th, overlap, image.device))  # (ny, th): a tile's weight is wy ⊗ wx
    wx = _edge_weights(nx, _window(tw, overlap, image.device))  # (nx, tw)
    num = image.new_zeros(b, c, hp, wp, dtype=torch.float32)
    for i in tqdm(range(ny), desc="tiles", unit="row", disable=not progress, delay=2, leave=False):
        y = i * sy
        row = padded[:, :, y:y + th].unfold(3, tw, sx)  # (B, C, th, nx, tw)
        row = row.permute(0, 3, 1, 2, 4).reshape(-1, c, th, tw)  # (B * nx, C, th, tw)
        outs = torch.cat([net(row[k:k + batch]).float().clamp(0, 1) for k in range(0, row.shape[0], batch)])
        outs = outs.reshape(b, nx, c, th, tw) * (wy[i, :, None] * wx[:, None, :])[None, :, None]
        num[:, :, y:y + th] += F.fold(outs.reshape(b, nx, -1).transpose(1, 2), (th, wp), (th, tw), stride=(1, sx))
    # The weights are separable, so their sum over the tiles is the product of the two axes' sums.
    out = num[..., top:top + h, left:left + w]
    out /= _coverage(wy, sy)[top:top + h, None] * _coverage(wx, sx)[None, left:left + w]
    return out


def _axis_tiles(n: int, tile: int, overlap: int, factor: int) -> tuple[int, int, int, int]:
    """How :func:`deblur_image` cuts an axis of ``n`` px: ``(side, stride, count, before)``, ``count``
    tiles of ``side`` px, ``stride`` apart, over the axis padded by ``before`` px in front (and after
    as far as the last tile reaches). ``tile`` is a multiple of ``factor``, at least ``min_side(factor)``."""
    whole = math.ceil(max(n, min_side(factor)) / factor) * factor
    if whole <= tile:
        # One tile holds the axis: no context pad, which the network would see as part of the image
        # (its instance norm would average it in) while there is no neighbouring tile to blend with.
        return whole, whole, 1, 0
    pad = math.ceil(overlap // 2 / factor) * factor  # half an overlap of context at each end, on the grid
    stride = tile - overlap
    return tile, stride, 1 + math.ceil((pad + n + pad - tile) / stride), pad


def _edge_weights(n: int, win: torch.Tensor) -> torch.Tensor:
    """``(n, T)`` weights of ``n`` tiles along one axis: the window, except that the sides facing the
    image border are 1 (no neighbour will cover them), so the weights never sum to zero."""
    tile = win.shape[0]
    if n == 1:  # (the window of a tile shorter than the overlap can vanish mid-tile)
        return torch.ones_like(win)[None]
    half = tile // 2
    weights = win[None, :].repeat(n, 1)
    weights[0, :half] = 1.0
    weights[-1, tile - half:] = 1.0
    return weights


def _coverage(weights: torch.Tensor, stride: int) -> torch.Tensor:
    """Sum of ``(n, T)`` tile weights placed ``stride`` apart along one axis: ``(T + (n - 1) * stride,)``."""
    n, tile = weights.shape
    return F.fold(weights.T[None], (1, tile + (n - 1) * stride), (1, tile), stride=(1, stride))[0, 0, 0]


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding, falling back to edge replication where the image is too small to reflect."""
    mode = "reflect" if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1] else "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


# Lossy outputs are written at quality 95, not Pillow's default 75, whose 8x8 blocks and ringing
# would undo part of the detail just restored (and cameras save at 90-98). Every suffix Pillow writes as
# JPEG: a browser's .jfif download went out at 75.
LOSSY_QUALITY = {".jpg": 95, ".jpeg": 95, ".jpe": 95, ".jfif": 95, ".webp": 95}


def output_path(src: Path, out_dir: Path) -> Path:
    return out_dir / src.name


def deblur_file(net: nn.Module, src: Path, dst: Path, tile: int, overlap: int, factor: int,
                device: torch.device, progress: bool = True) -> None:
    """Read ``src``, restore it, write it to ``dst`` (from :func:`plan_outputs`) in its format and bit depth."""
    refuse_short_png(src)  # (Pillow reads its missing rows black: restored, they looked like the photo's)
    # The file's colour type, not its pixels, decides: a gray photo saved as RGB stays RGB.
    array, bits = read_image(src, channels=None)
    gray = array.shape[0] == 1
    if bits > 8 and dst.suffix.lower() not in DEEP_SUFFIXES:  # (16-bit formats) rather than write it with 8 bits
        raise ImageError(f"{src}: a {bits}-bit image, but {dst.suffix or 'a file without suffix'} holds 8 bits; "
                         "rename it to the suffix of its format or convert it to 16-bit PNG or TIFF")
    image = torch.from_numpy(array)[None].to(device).expand(-1, 3, -1, -1)  # the network sees RGB
    out = deblur_image(net, image, tile, overlap, factor, progress=progress)[0].cpu().numpy()
    bad = int((~np.isfinite(out)).sum())
    if bad:  # (a float TIFF took them as they were; 8/16-bit writes named no cause)
        raise ImageError(f"{src}: the network's output holds {bad} NaN or infinite values; the checkpoint "
                         "diverged or is damaged: use an earlier one")
    if gray:
        out = out.mean(0, keepdims=True)
    if bits == 32 and dst.suffix.lower() in (".tif", ".tiff"):  # float TIFF in, float TIFF out
        pixels = out.transpose(1, 2, 0).astype(np.float32)
        with atomic_path(dst) as tmp:
            # (lower case: for .TIF imageio chose Pillow, which cannot write float RGB)
            iio.imwrite(tmp, np.ascontiguousarray(pixels[..., 0] if gray else pixels), extension=dst.suffix.lower())
    else:
        quality = LOSSY_QUALITY.get(dst.suffix.lower())
        write_image(dst, out, bits=16 if bits > 8 else 8, **({} if quality is None else {"quality": quality}))


# Write errors that no later file can escape: stop at the first rather than fail every file.
_OUT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed: CUDA's OutOfMemoryError, NumPy's MemoryError, or the
    CPU allocator's RuntimeError (which has no class of its own, only its message)."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and re.search(r"can't allocate memory|not enough memory|out of memory",
                                                    str(exc)) is not None)


def plan_outputs(inputs: list[str], out_dir: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """``(source, destination)`` for each input file, or each image of an input folder (sorted).

    Raises:
        ValueError: nothing is written when an input does not exist, a destination would replace an
            input, two inputs share a file name, ``out_dir`` is a file, it or a folder above it is a link to a
            missing folder, a folder is where an output would go, or (without ``overwrite``) an output already exists.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder; choose a folder")
    if (gone := dead_link_above(out_dir)) is not None:  # ("cannot create it (File exists)" once the checkpoint was loaded)
        raise ValueError(f"--out {out_dir}: {gone}, or choose another --out")
    # (resolved, name) -> as given: a file named twice is deblurred once, but a link to it under another name
    # (b.png -> a.png) has an output of its own, which keying on the resolved path alone left out without a word
    sources: dict[tuple[Path, str], Path] = {}
    for name in inputs:
        if not Path(name).exists():  # a typo, or a shell pattern that matched nothing: before anything is made
            raise ValueError(f"{name}: no such file or folder; check the path (nothing was written)")
        for src in list_images(name, "input") if Path(name).is_dir() else [Path(name)]:
            sources.setdefault((src.resolve(), src.name), src)
    plan, taken = [], {}
    for (resolved, _), src in sources.items():
        dst = output_path(src, out_dir)
        if src.exists() and dst.resolve() == resolved:
            raise ValueError(f"--out {out_dir}: would overwrite the input {src}; choose another --out")
        if dst.name in taken:
            raise ValueError(f"{taken[dst.name]} and {src} would both be written to {dst}; "
                             "deblur them into different --out folders")
        taken[dst.name] = src
        plan.append((src, dst))
    # (no output can replace a folder: --overwrite failed it after the restoration, in "[Errno 21] Is a directory",
    # and --skip-existing took it for an output already there, so that input never got one)
    folder = next((dst for _, dst in plan if dst.is_dir()), None)
    if folder is not None:
        raise ValueError(f"--out {out_dir}: {folder} is a folder, where the output of that name would go; "
                         "rename or move it, or choose another --out")
    existing = [dst for _, dst in plan if dst.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"--out {out_dir}: {existing[0]}{more} already exist; pass --overwrite to replace "
                         "them, --skip-existing to deblur only the others (to finish a stopped run), or choose "
                         "another --out")
    return plan


def _remove_temporaries(out_dir: Path, plan: list[tuple[Path, Path]]) -> None:
    """Delete the temporaries of these outputs (``blursynth.io.atomic_path``'s
    ``.NAME.XXXXXXXX.tmp.SUFFIX``) that a run killed while writing them left in ``out_dir``."""
    names = {dst.name for _, dst in plan}
    for path in out_dir.glob(".*.tmp*"):
        if temporary_target(path.name) in names and path.is_file():
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unpaired.deblur",
                                     description="Deblur images with a generator trained by unpaired.train.")
    parser.add_argument("inputs", nargs="+", help="image files (PNG, JPEG, TIFF, ...) of any size, or folders of them")
    parser.add_argument("--checkpoint", required=True, help="a run folder of unpaired.train (its checkpoints/best.pt, "
                        "else its latest step_*.pt) or a checkpoint file")
    parser.add_argument("--out", required=True, help="output folder (created); files keep their names")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels; lower it to save memory (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles, 0 to --tile - 1 (default 32)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    parser.add_argument("--skip-existing", action="store_true",
                        help="deblur only the inputs whose output is not in --out yet (to finish a stopped run)")
    parser.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    printable_stdout()
    # (an unset shell variable: "" is the current folder, so --out "$OUT" --overwrite replaced its files
    # of the inputs' names, and an input "" deblurred its images)
    for option, value in [("--out", args.out), ("--checkpoint", args.checkpoint)] + [("input", i) for i in args.inputs]:
        if not value.strip():
            parser.error(f"{option} is empty; give a path (an unset shell variable?) or '.' for the current folder")
    # deblur_image checks these too, but only once the checkpoint is loaded, and then once per file
    if args.tile < 1:
        parser.error(f"--tile must be at least 1 pixel, got {args.tile}")
    if not 0 <= args.overlap < args.tile:
        parser.error(f"--overlap must lie in [0, --tile) = [0, {args.tile}), got {args.overlap}; "
                     "lower --overlap or raise --tile")
    if args.overwrite and args.skip_existing:
        parser.error("--overwrite replaces the outputs already in --out and --skip-existing keeps them: pass one")
    try:
        with sigterm_interrupts():  # (a kill ends as Ctrl-C does)
            return _run(args)
    except KeyboardInterrupt as exc:  # the output being written was removed (atomic_path); the others are whole
        print(f"python -m unpaired.deblur: interrupted; run the same command with --skip-existing to deblur the "
              f"inputs whose output is not in --out {args.out} yet", file=sys.stderr)
        return exit_code(exc)


def _run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    try:
        plan = plan_outputs(args.inputs, out_dir, args.overwrite or args.skip_existing)
        device = pick_device(args.device)
        checkpoint = checkpoint_file(args.checkpoint)
        net, factor = load_generator(checkpoint, device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (note := checkpoint_note(args.checkpoint, checkpoint)) is not None:
        print(note, file=sys.stderr)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: --out {out_dir}: cannot create it ({exc.strerror}); choose a folder you can write in",
              file=sys.stderr)
        return 2
    _remove_temporaries(out_dir, plan)
    if args.skip_existing:
        todo = [(src, dst) for src, dst in plan if not dst.exists()]
        print(f"--skip-existing: {len(plan) - len(todo)} of {len(plan)} output(s) already in --out {out_dir}, "
              "kept as they are", file=sys.stderr)
        plan = todo
    failed = 0
    for done, (src, dst) in enumerate(tqdm(plan, desc="deblur", disable=len(plan) < 2 or args.quiet)):
        try:
            deblur_file(net, src, dst, args.tile, args.overlap, factor, device, progress=not args.quiet)
            say(f"{src} -> {dst}")  # (its BrokenPipeError under | head, an OSError, failed a written file)
        except (ImageError, OSError, ValueError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_ROOM:  # every later file would fail the same way
                print(f"{len(plan) - done - 1} file(s) not tried: --out {out_dir} cannot take more; free space and "
                      "run the same command again with --skip-existing", file=sys.stderr)
                return 1
        except (RuntimeError, MemoryError) as exc:  # (a traceback that lost the files after it; smaller ones may fit)
            if not out_of_memory(exc):
                raise
            failed += 1
            print(f"error: {src}: out of memory ({first_line(exc)}); lower --tile (now {args.tile}: memory grows "
                  "with its square) or free memory, and run again with --skip-existing for the files not written",
                  file=sys.stderr)
    if failed:
        print(f"{failed} of {len(plan)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
