"""Score a restoration method on paired blurry/sharp images: ``python -m unpaired.evaluate``.

    python -m unpaired.evaluate --benchmark levin --data ../shared/data/levin2009 --method hyperlaplacian \\
        --json levin_hl.json --grid levin_hl.png
    python -m unpaired.evaluate --benchmark folder --blurry DATASET/blur --sharp DATASET/sharp --method wiener

A method is a *restorer*: a callable ``restore(blurry (1, C, H, W), kernel (h, w) or None)`` returning
the restored ``(1, C, H, W)``, or ``(restored, estimated kernel)`` (``(h, w)``, or ``(1, h, w)``, in the
convention of the true kernels: the blurry image is the sharp one convolved with it, not correlated,
which would score its flip; its negative taps are cut to 0 and it is normalised to sum 1 before it is
scored). :func:`evaluate` scores any restorer; the command line builds one from ``--method`` (non-blind
methods get the TRUE kernel) or from ``--checkpoint`` (a trained network, loaded by
``unpaired.inference.load_restorer``).

Scoring follows Levin et al. (CVPR 2009): align up to a shift, crop a border, then PSNR/SSIM
(:func:`unpaired.metrics.levin_scores`). The error ratio is Levin's: a method's sum of squared errors
over that of the reference non-blind deconvolution run with the true kernel; it is null without
kernels, and the share of images under each of :data:`ERROR_RATIO_THRESHOLDS` is reported beside its
mean. Two departures from the published scripts (measured in the README's evaluation section): the
reference is :func:`unpaired.deconv.hyper_laplacian`, not Levin et al. 2007's sparse deconvolution,
and the sub-pixel alignment is bicubic to 0.05 px, not bilinear on a 0.25 px grid. (SelfDeblur's
table of "error ratios" divides matrix 2-norms of the error images, not squared errors: another
quantity.)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from blursynth.cli import non_negative_int, positive_int
from blursynth.interrupt import exit_code, sigterm_interrupts
from blursynth.io import (IMAGE_SUFFIXES, ImageError, check_pair_sizes, dead_link_above, first_line, read_image,
                          refuse_short_png, write_image, write_json)

from . import deconv, metrics
from .config import ConfigError, pick_device, printable_stdout, refuse, say
from .deblur import checkpoint_file, checkpoint_note, out_of_memory
from .inference import load_restorer

Restorer = Callable[[torch.Tensor, "torch.Tensor | None"], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]

LEVIN_NAME = re.compile(r"im(\d+)_kernel(\d+)\.png")


class EvaluationError(ValueError):
    """Unusable benchmark input; the message names the file and the fix."""


@dataclass(frozen=True)
class Pair:
    """One benchmark item: paths of the blurry and sharp images and of the true kernel (or None)."""

    name: str
    blurry: Path
    sharp: Path
    kernel: Path | None = None


# ---------------------------------------------------------------------------------------------
# Finding and loading pairs


def levin_pairs(data: str | Path) -> list[Pair]:
    """The Levin 2009 layout: ``sharp/im{i}.png``, ``blurry/im{i}_kernel{j}.png``,
    ``kernels/kernel{j}.npy``. Every blurry image must have its sharp image and kernel.

    Other files in ``blurry/`` (a stray ``im1_kernel1 copy.png``) are skipped and named on stderr:
    one should not stop a benchmark, nor be scored unnoticed. Hidden files are skipped silently."""
    data = Path(data)
    if not data.is_dir():  # (else "DATA/blurry: no im{i}_kernel{j}.png files", which hides the typo in DATA)
        raise EvaluationError(f"--data {data}: {'not a folder' if data.exists() else 'no such folder'}; pass "
                              "the Levin 2009 folder holding sharp/, blurry/ and kernels/")
    for blur, sharp in (("blur", "sharp"), ("lq", "gt")):  # a written `blursynth dataset` (--layout basicsr: lq/, gt/)
        if (data / blur).is_dir() and not (data / "blurry").is_dir():
            raise EvaluationError(f"--data {data}: a folder of pairs, not Levin 2009's; score it with --benchmark "
                                  f"folder --blurry {data / blur} --sharp {data / sharp}")
    folder = data / "blurry"
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    named = {path: LEVIN_NAME.fullmatch(path.name) for path in files
             if path.is_file() and not path.name.startswith(".")}
    blurry = sorted((path for path, match in named.items() if match),
                    key=lambda path: tuple(int(n) for n in named[path].groups()))
    if not blurry:
        raise EvaluationError(f"{folder}: no im{{i}}_kernel{{j}}.png files; --data must be the "
                              "Levin 2009 folder holding sharp/, blurry/ and kernels/")
    stray = [path.name for path, match in named.items() if not match]
    if stray:
        more = f", and {len(stray) - 5} more" if len(stray) > 5 else ""
        print(f"{folder}: skipped {len(stray)} file{'s' if len(stray) > 1 else ''} not named "
              f"im{{i}}_kernel{{j}}.png: {', '.join(stray[:5])}{more}", file=sys.stderr)
    pairs = []
    for path in blurry:
        image, kernel = named[path].groups()
        pairs.append(Pair(path.stem, path, data / "sharp" / f"im{image}.png",
                          data / "kernels" / f"kernel{kernel}.npy"))
    return pairs


def _by_stem(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """The files of ``folder`` by name without suffix, which pairs are matched on: two of one name
    (``000001.png`` and ``000001.jpg``) are refused, as nothing says which one is the pair's. Hidden
    files are left out: macOS writes ``._x.png`` beside ``x.png`` on other file systems, no image."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            if path.stem in found:
                raise EvaluationError(f"{found[path.stem]} and {path}: two images named {path.stem}; images are "
                                      "paired by name without the suffix, so remove or rename one")
            found[path.stem] = path
    return found


def folder_pairs(blurry: str | Path, sharp: str | Path, kernels: str | Path | None = None) -> list[Pair]:
    """Pairs matched by file name stem between two folders (a written ``blursynth dataset``'s
    ``blur/`` and ``sharp/``). ``kernels`` holds ``{stem}.npy``; by default ``kernels/`` beside
    ``blurry`` is used when it exists (the dataset layout)."""
    blurry, sharp = Path(blurry), Path(sharp)
    for folder, option in ((blurry, "--blurry"), (sharp, "--sharp")):
        if not folder.is_dir():
            raise EvaluationError(f"{option} {folder}: not a folder")
    # (the folder above --blurry: Path(".").parent is "." itself and Path("..").parent is ".", so run in
    # the dataset's blur/ with --blurry . the kernels were looked for inside it, and silently not found)
    beside = (blurry.parent if blurry.name not in ("", "..") else Path(os.path.abspath(blurry)).parent) / "kernels"
    if kernels is None and beside.is_dir():
        kernels = beside
    kernels = Path(kernels) if kernels is not None else None
    if kernels is not None and not kernels.is_dir():
        raise EvaluationError(f"--kernels {kernels}: not a folder")
    blurry_files, sharp_files = _by_stem(blurry, IMAGE_SUFFIXES), _by_stem(sharp, IMAGE_SUFFIXES)
    if not blurry_files:
        raise EvaluationError(f"--blurry {blurry}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    pairs = []
    for stem, path in blurry_files.items():
        if stem not in sharp_files:
            raise EvaluationError(f"{path}: no sharp image named {stem}.* in {sharp}; every blurry image needs "
                                  "its sharp twin with the same name")
        kernel = None
        if kernels is not None:
            kernel = kernels / f"{stem}.npy"
            if not kernel.is_file():
                raise EvaluationError(f"{path}: no kernel {kernel}; add it or pass --kernels to another folder")
        pairs.append(Pair(stem, path, sharp_files[stem], kernel))
    return pairs


def load_kernel(path: Path) -> torch.Tensor:
    """A ``.npy`` blur kernel as float32 ``(h, w)``: finite, non-negative, summing to 1.

    A ``(rows, cols, h, w)`` grid of local kernels (a projective ``blursynth dataset``'s) is returned
    as is: it has no single true kernel, so its pair gets no error ratio and non-blind methods refuse
    it. Any other shape is refused here, whatever the method, as the file is not what it claims."""
    if not path.is_file():
        raise EvaluationError(f"{path}: no such kernel file")
    try:
        k = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EvaluationError(f"{path}: cannot be read as a .npy array ({exc})") from None
    if not isinstance(k, np.ndarray):  # (a .npz archive named .npy)
        raise EvaluationError(f"{path}: holds an archive of arrays, not one array; save the kernel with np.save")
    if k.dtype.kind not in "buif":  # (strings failed in the cast, a traceback; complex lost its imaginary part)
        raise EvaluationError(f"{path}: holds {k.dtype} values, not real numbers; a kernel is a 2-D array of "
                              "non-negative weights summing to 1")
    k = k.astype(np.float32)
    if k.ndim not in (2, 4) or min(k.shape) == 0:
        raise EvaluationError(f"{path}: a kernel must be a 2-D array (or a rows x cols grid of them, as "
                              f"blursynth writes for projective blur), got shape {k.shape}")
    k = torch.from_numpy(k)
    try:
        deconv.check_kernel(k, name="kernel")  # (the rule the non-blind solvers apply)
    except ValueError as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    return k


def load_pair(pair: Pair, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(blurry (1, C, H, W), sharp (1, C, H, W), kernel (h, w) or None)``; sizes checked."""
    try:
        for path in (pair.blurry, pair.sharp):  # (Pillow reads its missing rows black: scored as they are)
            refuse_short_png(path)
        blurry = torch.from_numpy(read_image(pair.blurry, channels)[0])[None]
        sharp = torch.from_numpy(read_image(pair.sharp, channels)[0])[None]
        check_pair_sizes(pair.blurry, blurry, pair.sharp, sharp)
    except ImageError as exc:
        raise EvaluationError(str(exc)) from None
    kernel = load_kernel(pair.kernel) if pair.kernel is not None else None
    if kernel is not None and kernel.dim() == 2 and (kernel.shape[0] > blurry.shape[-2] or
                                                     kernel.shape[1] > blurry.shape[-1]):
        h, w = blurry.shape[-2:]
        raise EvaluationError(f"{pair.kernel}: {tuple(kernel.shape)} kernel is larger than {pair.blurry} ({h}x{w}); "
                              "score pairs at least the kernel's size (`blursynth dataset --crop` of at least that)")
    return blurry, sharp, kernel


# ---------------------------------------------------------------------------------------------
# Restorers


def method_restorer(name: str) -> Restorer:
    """A restorer for ``identity`` or a non-blind method of :data:`unpaired.deconv.METHODS`
    (run with the kernel it is given, float32, on the image's device)."""
    if name == "identity":
        return lambda blurry, kernel: blurry
    if name not in deconv.METHODS:
        raise EvaluationError(f"--method {name}: unknown; choose identity or one of {sorted(deconv.METHODS)}")
    solver = deconv.METHODS[name]

    def restore(blurry: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
        if kernel is None or kernel.dim() != 2:
            raise EvaluationError(f"--method {name} needs a 2-D true kernel for every image (kernels/*.npy); "
                                  "use --method identity or --checkpoint for pairs without one")
        return solver(blurry, kernel).clamp(0.0, 1.0)
    return restore


def checkpoint_restorer(path: str | Path, device: str = "cpu") -> Restorer:
    """Restorer of the generator of a checkpoint written by ``unpaired.train``
    (:func:`unpaired.inference.load_restorer`); a missing or foreign file is an :class:`EvaluationError`."""
    try:
        return load_restorer(path, device=device)
    except (FileNotFoundError, ValueError) as exc:  # their messages name --checkpoint and the file
        raise EvaluationError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Evaluation


# Levin et al. (2009) report the cumulative histogram of error ratios, the share of images whose ratio is
# at most each threshold (below 2 to 3 counts as a success), rather than their mean, which one failed image
# dominates; these are the thresholds of their plot and of the success rates later papers tabulate.
ERROR_RATIO_THRESHOLDS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def error_ratio_below(ratios: list[float]) -> dict[str, float] | None:
    """The fraction of ``ratios`` at most each of :data:`ERROR_RATIO_THRESHOLDS`, keyed ``"1.5"``, ``"2"``,
    ...; None when there are none. (A NaN ratio counts as above every threshold.)"""
    if not ratios:
        return None
    return {f"{t:g}": sum(r <= t for r in ratios) / len(ratios) for t in ERROR_RATIO_THRESHOLDS}


def _check_border(path: Path, image: torch.Tensor, radius: int, border: int) -> None:
    """Refuse a border crop that leaves too little of ``image`` (read from ``path``) to score, before
    any restoration runs; the scorer's own complaint would not name the image. What is left must
    hold SSIM's 11 px window (metrics.levin_scores' rule): a border that only left 1 px ended in a
    traceback, and the border advised here must be one that works."""
    h, w = image.shape[-2:]
    if min(h, w) < metrics.SSIM_WINDOW:  # (no border helps)
        raise EvaluationError(f"{path}: {w}x{h} is smaller than the {metrics.SSIM_WINDOW} px window of SSIM and "
                              "cannot be scored; remove the pair or use larger images")
    if min(h, w) - 2 * border < metrics.SSIM_WINDOW:
        below = " (and --radius below it)" if radius > 0 else ""
        raise EvaluationError(f"{path}: {w}x{h} is too small for a {border} px border; use --border "
                              f"{(min(h, w) - metrics.SSIM_WINDOW) // 2} or less{below}")


def _estimate(k_est: torch.Tensor, pair: Pair) -> torch.Tensor:
    """A method's kernel estimate as the 2-D, non-negative, unit-sum kernel the protocol scores: a
    network's estimate is only nearly one (a sum of 0.99, taps of -1e-4 stopped the evaluation in the
    deconvolution's checks), and Levin et al. normalise theirs as well."""
    k = torch.as_tensor(k_est).detach().float()
    while k.dim() > 2 and k.shape[0] == 1:  # (1, h, w) or (1, 1, h, w): one image's
        k = k[0]
    total = k.clamp_min(0).sum() if k.dim() == 2 else None
    if total is None or not bool(torch.isfinite(total)) or float(total) <= 0:
        raise EvaluationError(f"{pair.blurry}: the method's kernel estimate has shape {tuple(k.shape)} and sum "
                              f"{None if total is None else float(total)}; return one (h, w) kernel per image, "
                              "with a positive, finite sum")
    return k.clamp_min(0) / total


def evaluate(pairs: list[Pair], restore: Restorer, channels: int = 3, radius: int = 10, border: int = 15,
             reference: Restorer | None = None, device: str = "cpu", progress: bool = True,
             keep_images: int | None = None) -> dict:
    """Score ``restore`` on ``pairs``.

    Args:
        pairs: from :func:`levin_pairs` or :func:`folder_pairs`.
        restore: see the module docstring; called once per pair with tensors on ``device``.
        channels: 1 (gray) or 3 (RGB) images.
        radius, border: the alignment search radius (0 = no alignment) and border crop, in pixels;
            with alignment the border must exceed the radius (the command raises it; here it is a
            ValueError from :func:`unpaired.metrics.align`).
        reference: non-blind restorer run with the TRUE kernel for the error ratio (default: the
            hyper-Laplacian solver); ``None`` ratios where a pair has no 2-D kernel.
        device: where restoration runs ("cpu", "cuda").
        keep_images: how many pairs (the first) keep their tensors under ``images``; None: all. The
            command keeps only the ``--grid`` rows: all of them, 33 MB a pair at 1280x720 RGB, took
            a benchmark of a thousand pairs to 37 GB of memory, with or without a grid.

    Returns:
        A dict (JSON-ready once non-finite floats are made None, as ``--json`` does): means ``psnr``, ``ssim``,
        ``error_ratio`` (null if no pair has one), ``error_ratio_below`` (:func:`error_ratio_below` of the
        pairs' ratios: Levin's cumulative histogram), ``seconds_per_image``, and ``per_image`` records
        (``name``, ``psnr``, ``ssim``, ``error_ratio``, ``shift`` [dy, dx], ``seconds``, and ``kernel_ncc`` /
        ``kernel_centred_error`` when the restorer returns a kernel estimate). The key ``images``
        keeps the tensors for :func:`write_grid` and is dropped from the JSON.
    """
    reference = reference or method_restorer("hyperlaplacian")
    records, images = [], []
    try:  # (an allocation that fails is a traceback otherwise, naming no image)
        for pair in tqdm(pairs, desc="evaluate", disable=not progress, file=sys.stderr):
            blurry, sharp, kernel = load_pair(pair, channels)
            _check_border(pair.sharp, sharp, radius, border)
            blurry, sharp = blurry.to(device), sharp.to(device)
            true_k = kernel.to(device) if kernel is not None and kernel.dim() == 2 else None
            t0 = time.perf_counter()
            with torch.no_grad():
                try:
                    out = restore(blurry, true_k)
                except EvaluationError as exc:
                    where = pair.kernel if pair.kernel is not None else pair.blurry
                    raise EvaluationError(f"{where}: {exc}") from None
            if device != "cpu" and torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            restored, k_est = out if isinstance(out, tuple) else (out, None)
            if k_est is not None:
                k_est = _estimate(k_est, pair)
            if restored.shape != sharp.shape:
                raise EvaluationError(f"{pair.blurry}: the method returned {tuple(restored.shape)}, expected "
                                      f"{tuple(sharp.shape)}")
            bad = int((~torch.isfinite(restored)).sum())
            if bad:  # (scored, they made NaN means, printed as results with exit status 0)
                raise EvaluationError(f"{pair.blurry}: the restoration holds {bad} NaN or infinite values; the model "
                                      "or method diverged or is damaged (for a checkpoint, score an earlier one)")
            scores = metrics.levin_scores(restored.float(), sharp, radius=radius, border=border)
            record = {"name": pair.name, "psnr": float(scores["psnr"][0]), "ssim": float(scores["ssim"][0]),
                      "error_ratio": None, "shift": [round(float(v), 3) for v in scores["shift"][0]],
                      "seconds": round(seconds, 4)}
            if true_k is not None:
                # Levin's definition when a kernel estimate exists: the same non-blind method with the
                # estimated and with the true kernel; otherwise the restored image itself.
                with torch.no_grad():
                    ref = reference(blurry, true_k)
                    est = reference(blurry, k_est.to(device)) if k_est is not None else restored
                ssd_ref = metrics.levin_scores(ref.float(), sharp, radius=radius, border=border)["ssd"]
                ssd_est = scores["ssd"] if k_est is None else \
                    metrics.levin_scores(est.float(), sharp, radius=radius, border=border)["ssd"]
                record["error_ratio"] = float(metrics.error_ratio(ssd_est, ssd_ref)[0])
                if k_est is not None:
                    sim = metrics.kernel_similarity(k_est.to(device), true_k)
                    record["kernel_ncc"] = float(sim["ncc"][0])
                    record["kernel_centred_error"] = float(sim["centred_error"][0])
            records.append(record)
            if keep_images is None or len(images) < keep_images:
                images.append({"blurry": blurry.cpu(), "restored": restored.float().clamp(0, 1).cpu(),
                               "sharp": sharp.cpu(), "k_est": None if k_est is None else k_est.cpu(),
                               "k_true": None if true_k is None else true_k.cpu()})
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        raise EvaluationError(f"{pair.blurry}: out of memory on {device} ({first_line(exc)}); free memory, or "
                              "score on a device with more (--device cpu where a GPU's is full), or crop "
                              "the images") from None

    def mean(key):
        values = [r[key] for r in records if r[key] is not None]
        return float(np.mean(values)) if values else None
    ratios = [r["error_ratio"] for r in records if r["error_ratio"] is not None]
    return {"psnr": mean("psnr"), "ssim": mean("ssim"), "error_ratio": mean("error_ratio"),
            "error_ratio_below": error_ratio_below(ratios), "seconds_per_image": mean("seconds"),
            "count": len(records), "per_image": records, "images": images}


def format_table(result: dict) -> str:
    """The per-image table and its mean row as text."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)
    lines = [f"{'image':<24} {'PSNR':>7} {'SSIM':>6} {'err.ratio':>9} {'shift (dy,dx)':>15} {'s':>7}"]
    for r in result["per_image"]:
        shift = f"{r['shift'][0]:+.2f},{r['shift'][1]:+.2f}"
        lines.append(f"{r['name']:<24} {r['psnr']:7.2f} {r['ssim']:6.3f} {num(r['error_ratio'], '9.2f'):>9} "
                     f"{shift:>15} {r['seconds']:7.3f}")
    lines.append(f"{'mean (' + str(result['count']) + ')':<24} {result['psnr']:7.2f} {result['ssim']:6.3f} "
                 f"{num(result['error_ratio'], '9.2f'):>9} {'':>15} {result['seconds_per_image']:7.3f}")
    below = result.get("error_ratio_below")
    if below:
        lines.append(f"error ratio at most {' / '.join(below)}: {' / '.join(f'{v:.0%}' for v in below.values())} "
                     "of the images")
    return "\n".join(lines)


def _kernel_panel(k: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
    """A kernel drawn as an image panel: scaled to its maximum, enlarged (nearest) to fit, centred."""
    c, hh, ww = shape
    panel = torch.zeros(c, hh, ww)
    if k is None or k.dim() != 2:
        return panel
    scale = max(1, min(hh // k.shape[0], ww // k.shape[1]))
    big = F.interpolate((k / k.max().clamp_min(1e-12))[None, None].float(), scale_factor=scale, mode="nearest")[0]
    top, left = (hh - big.shape[-2]) // 2, (ww - big.shape[-1]) // 2
    panel[:, top:top + big.shape[-2], left:left + big.shape[-1]] = big
    return panel


def write_grid(path: str | Path, images: list[dict], max_rows: int = 32) -> None:
    """PNG contact sheet, one row per pair: blurry | restored | sharp, then an estimated-kernel panel
    (when the method returned kernels) and a true-kernel panel (when there are kernels). Cells are
    padded to the largest image."""
    from torchvision.utils import make_grid

    images = images[:max_rows]
    if not images:
        raise EvaluationError("nothing to draw: no pairs were evaluated")
    kernel_keys = [key for key in ("k_est", "k_true") if any(im[key] is not None for im in images)]
    hh = max(im["sharp"].shape[-2] for im in images)
    ww = max(im["sharp"].shape[-1] for im in images)
    c = max(im["sharp"].shape[1] for im in images)
    cells = []
    for im in images:
        row = [im["blurry"][0], im["restored"][0], im["sharp"][0]]
        row = [F.pad(x.expand(c, -1, -1), (0, ww - x.shape[-1], 0, hh - x.shape[-2]), value=1.0) for x in row]
        row += [_kernel_panel(im[key], (c, hh, ww)) for key in kernel_keys]
        cells += row
    grid = make_grid(torch.stack(cells), nrow=3 + len(kernel_keys), padding=4, pad_value=1.0)
    write_image(path, grid.clamp(0, 1).numpy())


# ---------------------------------------------------------------------------------------------
# Command line


def _path(text: str) -> Path:
    """A path option's value. An empty one (an unset shell variable) is refused: Path("") is the current
    folder, so --sharp "$SHARP" in blur/ scored the blurry images against themselves, and --checkpoint
    "$CKPT" in a run folder scored that run (as deblur and train refuse it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a path (an unset shell variable?) or '.' for the current folder")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unpaired.evaluate", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m unpaired.evaluate --benchmark levin --data "
                                       "../shared/data/levin2009 --method hyperlaplacian --json out.json")
    p.add_argument("--benchmark", choices=("levin", "folder"), required=True,
                   help="levin: the Levin 2009 layout under --data; folder: --blurry/--sharp folders")
    p.add_argument("--data", type=_path, help="levin: folder with sharp/, blurry/, kernels/")
    p.add_argument("--blurry", type=_path, help="folder: blurry images (e.g. a dataset's blur/)")
    p.add_argument("--sharp", type=_path, help="folder: sharp images with the same names")
    p.add_argument("--kernels", type=_path, help="folder: true kernels {name}.npy (default: kernels/ beside --blurry)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--method", default="identity", choices=["identity", *deconv.METHODS],
                        help="non-blind method run with the TRUE kernels, or identity (score the blurry input)")
    source.add_argument("--checkpoint", type=_path, help="a trained model: a run folder of unpaired.train (its "
                        "checkpoints/best.pt, else its latest step_*.pt) or a checkpoint file")
    p.add_argument("--radius", type=non_negative_int,
                   help="shift search radius in px (default: 10 for levin, 0 for folder)")
    p.add_argument("--border", type=non_negative_int, help="border crop in px (default: 15 for levin, 0 for folder)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--json", type=_path, help="write the means and per-image records here")
    p.add_argument("--grid", type=_path, help="write a contact sheet here, in the format of its suffix (e.g. .png)")
    p.add_argument("--grid-rows", type=positive_int, default=32, help="at most this many pairs in the grid")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bar")
    return p


# The input options of each benchmark, and where that benchmark reads its files instead.
BENCHMARK_INPUTS = {"levin": (("data",), "it reads sharp/, blurry/ and kernels/ under --data"),
                    "folder": (("blurry", "sharp", "kernels"), "it reads --blurry, --sharp and --kernels")}


def _check_benchmark_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse another benchmark's input options: ignored, they would look used (--kernels with levin)."""
    unused = [f"--{name}" for benchmark, (names, _) in BENCHMARK_INPUTS.items() if benchmark != args.benchmark
              for name in names if getattr(args, name) is not None]
    if unused:
        parser.error(f"--benchmark {args.benchmark} does not use {', '.join(unused)} "
                     f"({BENCHMARK_INPUTS[args.benchmark][1]}); drop {'them' if len(unused) > 1 else 'it'}")


def _check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an unusable --json or --grid now: they are written only after the whole evaluation,
    whose work a mistake there would throw away."""
    for option, path, example in (("--json", args.json, "results.json"), ("--grid", args.grid, "grid.png")):
        if path is None:
            continue
        if path.is_dir():
            parser.error(f"{option} {path}: is a folder; name a file in it, e.g. {path / example}")
        if (gone := dead_link_above(path.parent)) is not None:  # (the write failed after scoring, "File exists")
            parser.error(f"{option} {path}: {gone}, or choose another path")
        folder = next(parent for parent in path.parents if parent.exists())  # missing ones are created
        if not folder.is_dir():
            parser.error(f"{option} {path}: {folder} is not a folder; choose another path")
        if not os.access(folder, os.W_OK | os.X_OK) or not _can_make_in(folder):
            parser.error(f"{option} {path}: cannot write in {folder}; choose a writable path")
        for given in ("data", "blurry", "sharp", "kernels"):
            inputs = getattr(args, given)
            # (deblur refuses an output over its input too: here one replaced a benchmark image, or a
            # sheet left in --blurry was read as a blurry image with no sharp twin by the next run)
            if inputs is not None and path.resolve().is_relative_to(inputs.resolve()):
                parser.error(f"{option} {path}: inside --{given} {inputs}, the benchmark's own files; "
                             "write it elsewhere")
    if args.json is not None and args.grid is not None and args.json.resolve() == args.grid.resolve():
        parser.error(f"--json {args.json} and --grid {args.grid} name the same file, so the sheet would replace "
                     "the scores; give each its own, e.g. --json results.json --grid grid.png")
    if args.grid is not None and args.grid.suffix.lower() not in IMAGE_SUFFIXES - {".pgm"}:  # (the suffix picks the
        # format; a .pgm holds gray, the sheet is in colour)
        parser.error(f"--grid {args.grid}: not a colour image file name ({args.grid.suffix or 'no suffix'}); "
                     "end it in .png")


def _can_make_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder`` (made and removed at once: nothing is left). Writing
    there makes the missing folders and a temporary file; os.access alone lets root through where
    neither can be made, as in /proc."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".evaluate-check-", dir=folder))
    except OSError:
        return False
    return True


def _json_ready(value):
    """``value`` with every non-finite float (NaN, and the infinite PSNR of a perfect restoration) as
    None, since JSON has no such numbers: ``json.dumps`` would write ``NaN`` / ``Infinity``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _write(option: str, path: Path, write: Callable[[], None]) -> None:
    """Run one output writer; a failure (disk full, no permission) is one line naming the option."""
    try:
        write()
    except OSError as exc:
        raise SystemExit(f"error: {option} {path}: cannot write ({exc.strerror or exc})") from None
    except (ValueError, OverflowError, struct.error) as exc:  # (the format's own limits: a .webp sheet of 32 rows
        # of 720p pairs passed WebP's 16383 px, a .gif GIF's 65535, each a traceback once everything was scored;
        # Pillow releases raise one or another of these for them)
        raise SystemExit(f"error: {option} {path}: cannot write ({first_line(exc)}); name a .png, or draw fewer "
                         "rows with --grid-rows") from None


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    printable_stdout()
    _check_benchmark_inputs(parser, args)
    _check_outputs(parser, args)
    try:
        with sigterm_interrupts():  # (a kill ends as Ctrl-C does)
            return _run(args)
    except KeyboardInterrupt as exc:
        print("python -m unpaired.evaluate: interrupted; run it again (--json and --grid are written at the end, "
              "each whole or not at all)", file=sys.stderr)
        raise SystemExit(exit_code(exc)) from None


def _run(args: argparse.Namespace) -> dict:
    try:
        device = str(pick_device(args.device))
        if args.benchmark == "levin":
            if args.data is None:
                raise EvaluationError("--benchmark levin needs --data DIR (the folder with sharp/, blurry/, kernels/)")
            pairs, channels, radius, border = levin_pairs(args.data), 1, 10, 15
        else:
            if args.blurry is None or args.sharp is None:
                raise EvaluationError("--benchmark folder needs --blurry DIR and --sharp DIR")
            pairs, channels, radius, border = folder_pairs(args.blurry, args.sharp, args.kernels), 3, 0, 0
        radius = radius if args.radius is None else args.radius
        border = border if args.border is None else args.border
        if radius > 0 and border <= radius:  # shifted windows must stay inside the scored area
            print(f"note: border raised from {border} to {radius + 1} px: it must exceed --radius {radius}",
                  file=sys.stderr)
            border = radius + 1
        method = args.method
        if args.checkpoint:  # a run folder stands for one file: resolved once, so the file named is the one scored
            try:
                method = str(checkpoint_file(args.checkpoint))
            except FileNotFoundError as exc:
                raise EvaluationError(str(exc)) from None
        restore = checkpoint_restorer(method, device) if args.checkpoint else method_restorer(args.method)
        with torch.no_grad():  # scoped: main() is called in-process by tests and other tools
            result = evaluate(pairs, restore, channels=channels, radius=radius, border=border,
                              device=device, progress=not args.quiet, keep_images=args.grid_rows if args.grid else 0)
    except (EvaluationError, ImageError, ConfigError) as exc:
        refuse(exc)
    images = result.pop("images")
    if args.checkpoint and (note := checkpoint_note(args.checkpoint, Path(method))) is not None:
        print(note, file=sys.stderr)  # (a run folder: the file it stands for)
    result.update(benchmark=args.benchmark, method=method, radius=radius, border=border)
    say(format_table(result))  # first: the scores stay on screen if a write below fails (| head: the writes go on)
    if args.json:
        clean = _json_ready(result)
        _write("--json", args.json, lambda: write_json(args.json, clean))
    if args.grid:
        _write("--grid", args.grid, lambda: write_grid(args.grid, images, max_rows=args.grid_rows))
    return result


if __name__ == "__main__":
    main()
