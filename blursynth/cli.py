"""Command line: ``blursynth <command> ...`` (also ``python -m blursynth``).

Each sub-command is one ``add_<name>(subparsers)`` function that builds its parser and sets
``func`` to a ``run_<name>(args) -> int`` function; :data:`COMMANDS` lists them, so adding a
command is one function pair and one entry. Commands are thin: the work happens in library
functions. A bad argument is one line on stderr naming the option and the fix, exit code 2.

Heavy modules (torch, torchvision) are imported inside the commands that need them so that
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .interrupt import exit_code, sigterm_interrupts
from .recipe import FOCAL_MM_RANGE, FRAME_PX_MAX, KERNEL_SIZE_MAX, MIN_DEPTH_M  # (the recipe's bounds; no torch import)

try:
    import fcntl
except ImportError:  # (not on Windows: no locks there, and staged folders of killed runs stay)
    fcntl = None

if TYPE_CHECKING:  # (annotations only: numpy is imported where it is used, after the arguments are checked)
    import numpy as np


class UsageError(Exception):
    """A bad command-line value; the message names the option and the fix."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the default prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------------------------
# Argument types: each failure names what is wrong and what to pass instead.
# ----------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}; pass 1 or more")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)) and value != math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text.strip()}")
    return value


def seed(text: str) -> int:
    """A base seed: item i of a run draws from (seed, i); the range is :func:`blursynth.rng.check_seed`'s
    (not imported from there: that would load torch before a bad argument is answered)."""
    value = non_negative_int(text)
    if value >= 1 << 63:
        raise argparse.ArgumentTypeError(f"must be below 2**63, got {value}: larger seeds would repeat smaller ones")
    return value


def kernel_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an odd integer >= 3, got {text!r}") from None
    if value < 3 or value % 2 == 0:
        fix = 3 if value < 3 else value + 1
        raise argparse.ArgumentTypeError(f"must be odd and >= 3 so the kernel has a centre pixel, got {value}; "
                                         f"try {fix}")
    if value > KERNEL_SIZE_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {KERNEL_SIZE_MAX}, got {value}")
    return value


def image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 1200x800, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    if max(w, h) > FRAME_PX_MAX:
        raise argparse.ArgumentTypeError(f"width and height must be at most {FRAME_PX_MAX}, got {text!r}")
    return w, h


def _check_range(name: str, pair, unit: str) -> tuple[float, float]:
    lo, hi = pair
    if lo > hi:
        raise UsageError(f"{name} LOW HIGH needs LOW <= HIGH, got {lo:g} {hi:g}; swap them")
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# Output folders: generate's files are staged in a hidden folder and moved into place at the end.
# ----------------------------------------------------------------------------------------------

GENERATE_FILES = ("kernels.npz", "contact_sheet.png", "summary.json")  # summary.json last: it marks a whole output


def _staged_name(out: Path) -> re.Pattern:
    """The names of the folders that runs with this ``--out`` stage in (``.NAME.XXXXXXXX.tmp``, mkdtemp's)."""
    return re.compile(rf"\.{re.escape(out.name)}\.[a-z0-9_]{{8}}\.tmp")


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.resolve().name in ("", ".", "..") or out.name in ("", ".", ".."):  # (a new folder is renamed into place)
        raise UsageError(f"--out {str(out)!r}: name a folder to create, e.g. --out kernels")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; choose another --out")
    from .io import OS_LITTER, dead_link_above
    if (gone := dead_link_above(out)) is not None:  # ("File exists", or the missing target made, on another disk)
        raise UsageError(f"--out {out}: {gone}, or choose another --out")
    if out.is_dir():
        staged = _staged_name(out.resolve() if out.is_symlink() else out)  # (named as _StagedDir names them)
        try:
            with os.scandir(out) as entries:  # (a folder made in Finder holds a .DS_Store: empty all the same)
                others = any(not staged.fullmatch(e.name) and e.name not in OS_LITTER for e in entries)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot list it ({exc.strerror}); choose another --out") from None
        if others and not overwrite:
            raise UsageError(f"--out {out}: folder exists and is not empty; pass --overwrite to replace the files "
                             f"generate writes there ({', '.join(GENERATE_FILES)}; other files are kept) or choose "
                             "another --out")
        for name in GENERATE_FILES:
            if (out / name).is_dir():
                raise UsageError(f"--out {out}: {name} there is a folder, where generate writes a file; move it away "
                                 "or choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    probe = out if out.is_dir() else parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out}: {probe} is a file, not a folder; choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write in {probe}; choose a writable --out")


def _hold(folder: Path) -> int | None:
    """:func:`blursynth.io.lock_folder`, None also when another process holds the lock or the folder is gone."""
    from .io import lock_folder
    try:
        return lock_folder(folder)
    except OSError:  # (BlockingIOError: a live run's)
        return None


STAGING_GRACE_S = 60.0  # see _StagedDir._remove_killed_runs_folders


class _StagedDir:
    """A hidden folder where generate's files are written, moved into ``out`` only on success.

    A new ``out`` is the staged folder (beside it) renamed. An existing one (empty, or ``--overwrite``)
    gets the staged files (staged inside it: one file system, even where ``out`` is a mount point) one
    by one, each renamed over its old version: its old summary.json is removed first and the new one
    comes last, so a folder with a summary.json is always one run's whole output. Other files in ``out``
    are the user's, and stay.

    A run killed outright (SIGKILL, a crash) cannot remove its staged folder: the next run with that
    ``out`` does, once it is a minute old. Each run holds a lock on its staged folder, so a run still
    writing (one with the same ``--out``, started at the same time) keeps its own.
    """

    def __init__(self, out: Path, overwrite: bool = False):
        # a link to a folder (say, on a larger disk) is followed: its target is the output
        self.out = out.resolve() if out.is_symlink() else out
        self.overwrite = overwrite  # (an --out that appears meanwhile then gets the files, as an existing one does)

    def __enter__(self) -> Path:
        from .io import umask
        self.new = not self.out.is_dir()
        home = self.out.parent if self.new else self.out
        try:
            home.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=home))
        except OSError as exc:  # (a read-only or virtual file system: /proc, a full disk)
            raise UsageError(f"--out {self.out}: cannot make a folder there ({exc.strerror}); choose another --out") from None
        self.lock = _hold(self.tmp)
        os.chmod(self.tmp, 0o777 & ~umask())  # mkdtemp makes 0700; the folder should look like mkdir's
        if self.lock is not None:  # (without locks a live run's folder could not be told from a dead one's)
            self._remove_killed_runs_folders()
        return self.tmp

    def _remove_killed_runs_folders(self) -> None:
        """Delete the staged folders that runs killed outright left beside ``out`` or in it: those no live
        run holds, and none changed in the last :data:`STAGING_GRACE_S` seconds (a run starting beside
        this one has made its folder but may not hold it yet: ``mkdtemp`` and the lock are two steps)."""
        def entries(home: Path) -> list[Path]:
            try:
                return list(home.iterdir())
            except OSError:  # (out: not there yet)
                return []

        name = _staged_name(self.out)
        for path in entries(self.out.parent) + entries(self.out):
            if path == self.tmp or not name.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
                continue
            try:
                if time.time() - path.stat().st_mtime < STAGING_GRACE_S:
                    continue
            except OSError:  # (gone meanwhile: its run finished)
                continue
            fd = _hold(path)
            if fd is not None:
                try:
                    shutil.rmtree(path, ignore_errors=True)
                finally:
                    os.close(fd)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
            elif self.new:
                try:
                    os.replace(self.tmp, self.out)
                except OSError:  # (made by something else meanwhile: not ours to write into unasked)
                    if self.overwrite and self.out.is_dir() and not self.out.is_symlink():
                        # asked: the files go in as into any existing --out (a second run with the same --out
                        # that ended first threw away this one's whole output, and advised --overwrite)
                        self._move_in()
                        return False
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    raise UsageError(f"--out {self.out}: appeared while the run wrote; run again with --overwrite "
                                     "or choose another --out") from None
            else:
                self._move_in()
            return False
        finally:
            if self.lock is not None:
                os.close(self.lock)

    def _move_in(self) -> None:
        """Move the staged files into the existing ``out``, under a lock on it: two runs ending at once
        each move all their files, one after the other, never a mix of both under one summary.json."""
        fd = None
        try:
            fd = os.open(self.out, os.O_RDONLY)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # (blocking: the other run's moves take a moment)
            (self.out / "summary.json").unlink(missing_ok=True)
            for name in GENERATE_FILES:
                os.replace(self.tmp / name, self.out / name)
            self.tmp.rmdir()
        except OSError as exc:  # (a folder put where a file goes, or --out removed, meanwhile)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise UsageError(f"--out {self.out}: cannot move {exc.filename or 'the files'} into place "
                             f"({exc.strerror}); choose another --out") from None
        finally:
            if fd is not None:
                os.close(fd)


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------

SHAKE_DEFAULT_EXPOSURE = (1 / 30, 1 / 4)
SHAKE_DEFAULTS = {"focal_length": 50.0, "image_size": (1200, 800), "depth": math.inf}
MAX_EXPOSURE_S = 10.0  # hand-held shake; longer exposures would also take memory in proportion
MAX_LENGTH_PX = 10 * KERNEL_SIZE_MAX  # random walk: ten times the largest kernel


def bounded_float(low: float, high: float, unit: str, example: str, above: bool = False):
    """An argparse type: a number in ``[low, high]``, or ``(low, high]`` if ``above`` (``unit`` and
    ``example`` word the error)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
        if not ((value > low if above else value >= low) and value <= high):  # (NaN fails too)
            bound = f"above {low:g}" if above else f"at least {low:g}"
            upper = "" if high == math.inf else f" and at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}{upper} {unit}, got {text.strip()}; e.g. {example}")
        return value
    return parse


def add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="sample camera-shake trajectories and rasterise their blur kernels",
        description="Sample N trajectories and write kernels.npz, summary.json and contact_sheet.png to --out. "
                    "Item i depends only on (--seed, i).")
    p.add_argument("--trajectories", type=positive_int, default=10000, metavar="N",
                   help="number of kernels (default 10000)")
    p.add_argument("--recipe", default=None, metavar="NAME|FILE.toml",
                   help="draw the kernels as a dataset recipe draws its pairs' (gopro-like, realblur-like, levin-like, "
                        "default, or a recipe file): kernel i is pair i's with procedural scenes; replaces the "
                        "model, camera, --kernel-size and --fit options")
    # (None when not given: --recipe refuses them rather than ignore them)
    p.add_argument("--model", choices=("shake6d", "randomwalk"), default=None,
                   help="shake6d: 6-DoF hand shake (CameraShake, the default); randomwalk: Boracchi & Foi 2012 2-D walk")
    p.add_argument("--kernel-size", type=kernel_size, default=None, metavar="K", help="odd kernel size (default 31)")
    p.add_argument("--seed", type=seed, default=0, help="base seed (default 0)")
    p.add_argument("--exposure", type=positive_float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="shake6d exposure range in seconds, log-uniform (default 1/30 1/4)")
    # (None when not given: the random walk refuses them rather than ignore them)
    p.add_argument("--focal-length", type=bounded_float(*FOCAL_MM_RANGE, "mm", "--focal-length 85"), default=None,
                   metavar="MM", help=f"shake6d: 35 mm-equivalent focal length in mm, {FOCAL_MM_RANGE[0]:g} to "
                                      f"{FOCAL_MM_RANGE[1]:g} (default {SHAKE_DEFAULTS['focal_length']:g})")
    p.add_argument("--image-size", type=image_size, default=None, metavar="WxH",
                   help="shake6d: image size in pixels that the focal length refers to (default 1200x800)")
    p.add_argument("--depth", type=bounded_float(MIN_DEPTH_M, math.inf, "metres", "--depth 0.5"), default=None,
                   metavar="M", help=f"shake6d: scene depth in metres for the translation part, at least "
                                     f"{MIN_DEPTH_M:g} (default inf: rotation only)")
    p.add_argument("--length", type=bounded_float(0, MAX_LENGTH_PX, "pixels", "--length 10 29", above=True), nargs=2,
                   metavar=("LOW", "HIGH"), default=None,
                   help=f"randomwalk: path length range in pixels, at most {MAX_LENGTH_PX} (default 60/64 of the "
                        "kernel size, as Boracchi & Foi)")
    p.add_argument("--fit", choices=("resample", "scale", "error"), default=None,
                   help="paths larger than the kernel: redraw them (default), shrink them, or stop with an error")
    p.add_argument("--chunk", type=positive_int, default=None,
                   help="kernels per chunk (bounds memory; default: as many as fill 16 MiB on the CPU, at most "
                        "4096: 4096 at 31x31, 992 at 65x65)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=Path("blursynth-kernels"), help="output folder (default ./blursynth-kernels)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files generate writes in a non-empty --out (others there are kept)")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)


def _device(name: str):
    from .data import check_device
    try:
        return check_device(name, f"--device {name}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _model_from_args(args):
    """The trajectory model the options ask for; fills the shake6d camera options left unset."""
    from .trajectory import CameraShake, RandomWalk2D
    if args.model == "shake6d":
        if args.length is not None:
            raise UsageError("--length sets the random walk's length; with --model shake6d use --exposure and --focal-length")
        if args.exposure is not None and max(args.exposure) > MAX_EXPOSURE_S:
            raise UsageError(f"--exposure must be at most {MAX_EXPOSURE_S:g} s (hand-held shake), e.g. --exposure 0.01 0.25")
        for name, default in SHAKE_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        exposure = SHAKE_DEFAULT_EXPOSURE if args.exposure is None else _check_range("--exposure", args.exposure, "s")
        return CameraShake(exposure_s=exposure)
    for name in ("exposure", *SHAKE_DEFAULTS):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name.replace('_', '-')} applies to --model shake6d; the random walk is drawn in "
                             "pixels, its extent set by --length")
    if args.length is None:
        length = (60 / 64 * args.kernel_size,) * 2
    else:
        length = _check_range("--length", args.length, "px")
    return RandomWalk2D(length_px=length)


GENERATE_DEFAULTS = {"model": "shake6d", "kernel_size": 31, "fit": "resample"}
CLI_MODEL = {"camera_shake": "shake6d", "random_walk_2d": "randomwalk"}  # a recipe's model names -> --model's


def _recipe_from_args(args):
    """The recipe ``--recipe`` names; the options it replaces are refused rather than ignored."""
    given = [name for name in (*GENERATE_DEFAULTS, "exposure", "length", *SHAKE_DEFAULTS)
             if getattr(args, name) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} cannot go with --recipe, which sets the trajectory, camera, "
                         "kernel size and fit; drop the option, or copy the recipe's .toml, edit it and pass the copy "
                         "(datasets/README.md)")
    from .recipe import RecipeError, load_recipe
    try:
        return load_recipe(args.recipe)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None


def _recipe_fit_errors(chunks):
    """``chunks`` of :func:`blursynth.pairs.recipe_kernels`, a path that does not fit, or a camera that
    reaches the scene plane (a RecipeError naming camera.depth_m), as a usage error (already worded with
    the recipe's keys)."""
    from .kernel import KernelFitError
    from .recipe import RecipeError
    try:
        yield from chunks
    except (KernelFitError, RecipeError) as exc:  # (the second came out as a traceback, exit status 1)
        raise UsageError(str(exc)) from None


def run_generate(args) -> int:
    _check_out_dir(args.out, args.overwrite)
    recipe = None
    if args.recipe is not None:
        recipe = _recipe_from_args(args)
    else:
        for name, default in GENERATE_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        model = _model_from_args(args)
    device = _device(args.device)

    import numpy as np
    import torch
    from tqdm import tqdm

    from . import kernel as K
    from .camera import Camera
    from .io import NpzWriter, write_json
    from .pairs import recipe_kernels

    camera = None
    n = args.trajectories
    if recipe is not None:
        size, fit = recipe.kernel_size, recipe.kernel_fit
        spec = recipe.to_dict()
        model_name, model_config = CLI_MODEL[recipe.trajectory_model], spec["trajectory"]
    else:
        size, fit = args.kernel_size, args.fit
        model_name, model_config = args.model, _jsonable(model.__dict__)
    # (keys in this order: the config is stored as JSON text in kernels.npz, whose bytes stay those of
    # earlier versions for the same command)
    config = {"model": model_name, "model_config": model_config, "seed": args.seed, "kernel_size": size,
              "fit": fit, "trajectories": n}
    if recipe is not None:
        # the camera keys as the options spell them (a range where the recipe draws per item)
        config.update(recipe=spec, focal_length_mm=spec["camera"]["focal_mm"],
                      image_size=spec["camera"]["frame_px"][::-1], depth_m=spec["camera"]["depth_m"])
    elif args.model == "shake6d":
        width, height = args.image_size
        camera = Camera.from_35mm(args.focal_length, width, height)
        config.update(focal_length_mm=args.focal_length, image_size=[width, height], focal_px=camera.focal_px,
                      depth_m=None if math.isinf(args.depth) else args.depth)
    started = time.perf_counter()
    # Only one chunk is ever in memory: each chunk's arrays are appended to the .npz being written,
    # and what the summary needs is kept per item as a few numbers (any --trajectories fits in RAM).
    measures: list[dict[str, np.ndarray]] = []
    sheet, redrawn, scaled = [], 0, 0
    with _StagedDir(args.out, args.overwrite) as tmp, NpzWriter(tmp / "kernels.npz") as npz:
        npz.add("seed", np.int64(args.seed))
        npz.add("config", np.array(json.dumps(config)))
        if recipe is not None:
            chunks = _recipe_fit_errors(recipe_kernels(recipe, n, seed=args.seed, chunk=args.chunk, device=device))
        else:
            chunks = _fit_errors(K.generate(model, n, camera, size, seed=args.seed, chunk=args.chunk, fit=fit,
                                            depth_m=math.inf if camera is None else args.depth,
                                            device=device), fit)
        with tqdm(total=n, unit="kernel", disable=args.quiet, desc="generate") as bar:
            for chunk in chunks:
                traj = chunk.trajectory
                count = len(chunk.kernels)
                arrays = {"kernels": chunk.kernels, "index": torch.arange(chunk.start, chunk.start + count),
                          "t": traj.t, "paths_px": chunk.paths_px,
                          **{name: getattr(traj, name) for name in ("rotation", "translation", "path_px")
                             if getattr(traj, name) is not None},
                          **{f"param_{name}": value for name, value in traj.params.items()}}
                arrays = {name: value.detach().cpu().numpy() for name, value in arrays.items()}
                if chunk.start == 0:  # the first chunk fixes every array's shape and the file's size
                    _check_space(args.out, tmp, n * sum(v.nbytes for v in arrays.values()) / count)
                    for name, value in arrays.items():
                        npz.begin(name, (n, *value.shape[1:]), value.dtype)
                for name, value in arrays.items():
                    npz.append(name, value)
                measures.append(kernel_measures(arrays["kernels"], arrays["paths_px"]))
                shown = sum(map(len, sheet))
                if shown < 64:  # (a copy: a view would keep the whole chunk alive)
                    sheet.append(arrays["kernels"][:64 - shown].copy())
                redrawn += int((arrays["param_redraws"] > 0).sum())
                scaled += int((arrays["param_fit_scale"] < 1).sum())
                bar.update(count)
        stats = percentiles(measures)
        summary = {"version": __version__, **config, "count": n, "redrawn": redrawn, "scaled": scaled,
                   "percentiles": stats, "seconds": None,
                   "files": ["kernels.npz", "summary.json", "contact_sheet.png"]}
        write_contact_sheet(tmp / "contact_sheet.png", torch.from_numpy(np.concatenate(sheet)))
        npz.close()
        summary["seconds"] = round(time.perf_counter() - started, 3)
        write_json(tmp / "summary.json", summary)
    med = stats["extent_px"]["50"]  # (one line on stdout, with or without --quiet, as `dataset` ends)
    print(f"wrote {n} kernels of {size}x{size} to {args.out}/ (median blur extent {med:.1f} px, "
          f"{summary['redrawn']} redrawn, {summary['scaled']} scaled) in {summary['seconds']:.2f} s")
    return 0


def _check_space(out: Path, folder: Path, npz_bytes: float) -> None:
    """Refuse at the first chunk, not hours later, a kernels.npz the disk cannot hold: writing it needs
    twice its size (the arrays are staged, then zipped)."""
    free = shutil.disk_usage(folder).free
    if 2 * npz_bytes > free:
        raise UsageError(f"--out {out}: kernels.npz would take {_size(npz_bytes)} and writing it needs twice "
                         f"that, but {_size(free)} are free there; generate fewer --trajectories per run "
                         "(e.g. several runs with different --seed) or choose an --out on a larger disk")


def _size(n: float) -> str:
    """Bytes in words: "1.2 GiB", "37.5 MiB", "812 KiB" (a small disk is not "0.0 GiB")."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"


def _fit_errors(chunks, fit: str):
    """``chunks``, with the generator's ValueError (a path that cannot fit under ``--fit error``, or
    redraws exhausted) turned into a usage error; errors of the loop that consumes them pass as they are."""
    from .camera import SceneReachedError
    from .kernel import KernelFitError
    try:
        yield from chunks
    except SceneReachedError as exc:  # (the shake's translation against --depth: a traceback before)
        raise UsageError(f"--depth: the camera moves {exc.reach:.3g} times the scene depth towards the scene plane "
                         "during the exposure, reaching it; use a larger --depth or a shorter --exposure") from None
    except KernelFitError as exc:  # (its text names parameters; here they are options)
        fix = (f"use --kernel-size {exc.needed} or more, or --fit scale" if exc.needed is not None
               else "use a larger --kernel-size, a shorter --exposure or --length, or --fit scale")
        raise UsageError(f"--fit {fit}: item {exc.item}'s path{f' spans {exc.extent} px and' if exc.extent else ''} "
                         f"does not fit a {exc.size[0]}x{exc.size[1]} kernel; {fix}") from None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_jsonable(v) for v in obj]
    return obj


PERCENTILES = (5, 25, 50, 75, 95)


def kernel_measures(kernels, paths_px) -> dict[str, np.ndarray]:
    """Per-item blur measures ``(N,)`` from kernels ``(N, h, w)`` and their paths ``(N, T, 2)`` (NumPy).

    ``extent_px``: largest side of the path's bounding box; ``length_px``: path length;
    ``rms_radius_px``: square root of the kernel's total second central moment.
    """
    import numpy as np
    k = np.asarray(kernels, dtype=np.float32)
    h, w = k.shape[1:]
    ys, xs = np.arange(h, dtype=np.float64) - h // 2, np.arange(w, dtype=np.float64) - w // 2
    px, py = k.sum(1, dtype=np.float64), k.sum(2, dtype=np.float64)
    mx, my = px @ xs, py @ ys
    var = px @ xs ** 2 - mx ** 2 + py @ ys ** 2 - my ** 2
    paths = np.asarray(paths_px, dtype=np.float64)
    return {"extent_px": (paths.max(1) - paths.min(1)).max(1),
            "length_px": np.linalg.norm(np.diff(paths, axis=1), axis=-1).sum(1),
            "rms_radius_px": np.sqrt(np.maximum(var, 0))}


def percentiles(measures: list[dict]) -> dict[str, dict[str, float]]:
    """:data:`PERCENTILES` of each measure over consecutive slices' :func:`kernel_measures`, rounded,
    as the summary stores them."""
    import numpy as np
    return {name: {str(q): round(float(v), 3) for q, v in
                   zip(PERCENTILES, np.percentile(np.concatenate([m[name] for m in measures]), PERCENTILES))}
            for name in measures[0]}


def write_contact_sheet(path: Path, kernels, nrow: int = 8, zoom: int = 3, padding: int = 2) -> None:
    """PNG grid of ``(N, h, w)`` kernels (each scaled to its maximum, enlarged ``zoom`` times).

    The grid is a reshape rather than torchvision's make_grid: importing torchvision pulls in
    torch._dynamo (about 3 s here), more than the whole 10,000-kernel run is allowed to take.
    """
    import torch

    from .io import write_image
    k = kernels.float()
    k = k / k.amax((1, 2), keepdim=True).clamp_min(1e-12)
    k = k.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
    n, h, w = k.shape
    rows = -(-n // nrow)
    tiles = torch.full((rows * nrow, h + padding, w + padding), 0.25)
    tiles[:n, padding:, padding:] = k
    grid = tiles.reshape(rows, nrow, h + padding, w + padding).permute(0, 2, 1, 3).reshape(rows * (h + padding), -1)
    grid = torch.nn.functional.pad(grid, (0, padding, 0, padding), value=0.25)
    write_image(path, grid[None].clamp(0, 1).numpy())


# ----------------------------------------------------------------------------------------------
# inspect
# ----------------------------------------------------------------------------------------------

INSPECT_SLICE = 8192  # kernels measured at a time by inspect


def add_inspect(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="summarise a kernels.npz and render chosen kernels",
                              description="Print the summary of a kernels.npz written by 'blursynth generate'; "
                                          "with --render, write PNGs of chosen kernels and their trajectories.")
    p.add_argument("file", type=Path, metavar="FILE.npz")
    p.add_argument("--render", type=non_negative_int, nargs="+", metavar="I", default=None,
                   help="item indices to render as kernel_I.png (kernel beside its path, time from dark to bright)")
    p.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: beside FILE)")
    # (None when not given: without --render they are refused rather than ignored)
    p.add_argument("--zoom", type=zoom, default=None,
                   help=f"enlargement of the rendered kernels, 1 to {MAX_ZOOM} (default 8)")
    p.set_defaults(func=run_inspect)


def _load_npz(path: Path) -> tuple[dict, dict]:
    if path.is_dir():
        hint = path / "kernels.npz" if (path / "kernels.npz").is_file() else "a kernels.npz"
        raise UsageError(f"FILE {path}: is a folder; pass {hint} (written by 'blursynth generate')")
    if not path.is_file():
        raise UsageError(f"FILE {path}: no such file; pass the kernels.npz written by 'blursynth generate'")
    from .io import read_npz
    try:
        data = read_npz(path)
    except Exception as exc:
        what = ("one kernel (a dataset's kernels/*.npy; load it with numpy.load)" if path.suffix.lower() == ".npy"
                else f"not a readable .npz ({type(exc).__name__}: {exc})")
        raise UsageError(f"FILE {path}: {what}; pass the kernels.npz written by 'blursynth generate'") from None
    missing = {"kernels", "paths_px", "t", "config"} - set(data)
    if missing:
        raise UsageError(f"FILE {path}: lacks {sorted(missing)}; it was not written by 'blursynth generate'")
    # (shapes checked here: an empty or mismatched file gave a traceback, or figures of mismatched items)
    kernels, paths, t = data["kernels"], data["paths_px"], data["t"]
    n = len(kernels) if kernels.ndim else 0
    shapes = " ".join(f"{name} {tuple(data[name].shape)}" for name in ("kernels", "paths_px", "t"))
    if kernels.ndim != 3 or n == 0 or paths.shape[:1] != (n,) or paths.ndim != 3 or paths.shape[2] != 2 or \
            t.shape != paths.shape[:2]:
        raise UsageError(f"FILE {path}: arrays {shapes}, where 'blursynth generate' writes kernels (N, K, K) with "
                         "N >= 1, paths_px (N, T, 2) and t (N, T); pass a kernels.npz it wrote")
    try:
        config = json.loads(str(data["config"]))
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise UsageError(f"FILE {path}: its config is not a JSON object; pass the kernels.npz written by "
                         "'blursynth generate'")
    return data, config


MAX_ZOOM = 32  # a 255 px kernel then renders 8160 px wide


def zoom(text: str) -> int:
    value = positive_int(text)
    if value > MAX_ZOOM:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ZOOM}, got {value}")
    return value


def run_inspect(args) -> int:
    import numpy as np
    given = [name for name in ("out", "zoom") if getattr(args, name) is not None]
    if given and not args.render:  # (`inspect FILE --out previews` printed the summary and wrote nothing, unasked)
        raise UsageError(f"--{given[0]} applies to the PNGs of --render, which was not given; add --render I ... "
                         f"(e.g. --render 0 1 2) or drop --{given[0]}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a file; name a folder for the PNGs")
    data, config = _load_npz(args.file)
    kernels = data["kernels"]
    n = len(kernels)
    bad = [i for i in args.render or () if i >= n]
    if bad:  # (before the summary, so the error is the only line)
        raise UsageError(f"--render {bad[0]}: the file has {n} kernels; use indices 0..{n - 1}")
    out = Path(args.out or args.file.parent)
    if args.render:  # (made and checked before the summary too: `--out /proc/x` failed after it, in a traceback)
        from .io import dead_link_above
        if (gone := dead_link_above(out)) is not None:  # (mkdir said only "File exists")
            raise UsageError(f"--out {out}: {gone}, or choose another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot make a folder there ({exc.strerror}); choose another --out") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: cannot write in it; choose a writable --out")
    # The arrays are memory-mapped (io.read_npz): measured a slice at a time, any file fits in memory.
    step = INSPECT_SLICE
    stats = percentiles([kernel_measures(kernels[i:i + step], data["paths_px"][i:i + step])
                         for i in range(0, n, step)])
    recipe = config.get("recipe")  # (generate --recipe: the recipe's name and file say where the kernels came from)
    made = f"recipe {recipe.get('name')}, " if isinstance(recipe, dict) else ""
    print(f"{args.file}: {n} kernels of {kernels.shape[1]}x{kernels.shape[2]}, {made}model {config.get('model')}, "
          f"seed {config.get('seed')}, fit {config.get('fit')}")
    for key in ("focal_length_mm", "image_size", "focal_px", "depth_m"):
        if key in config:
            print(f"  {key}: {config[key]}")
    for name, values in stats.items():
        print(f"  {name:14s} " + "  ".join(f"p{q}={v:.2f}" for q, v in values.items()))
    params = sorted(k for k in data if k.startswith("param_"))
    if params:
        print("  per-item parameters (median): " + ", ".join(
            f"{k[6:]}={float(np.median(data[k])):.4g}" for k in params))
    for i in dict.fromkeys(args.render or ()):  # (an index given twice was drawn and reported twice)
        path = out / f"kernel_{i}.png"
        scale = float(data["param_fit_scale"][i]) if "param_fit_scale" in data else 1.0
        item = (np.array(data[name][i]) for name in ("kernels", "paths_px", "t"))  # (writable copies for torch)
        try:
            render_item(path, *item, 8 if args.zoom is None else args.zoom, scale)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write {path.name} there ({exc.strerror or exc}); "
                             "choose a writable --out") from None
        print(f"  wrote {path}")
    return 0


RENDER_PIXELS = 1 << 24  # canvas pixels drawn at a time by render_item (64 MB of float32)


def render_item(path: Path, kernel, path_px, t, zoom: int = 8, scale: float = 1.0) -> None:
    """PNG: the kernel (enlarged, scaled to its max) beside its path drawn at ``zoom`` px per px.

    The path is placed as the kernel was made (shrunk by ``scale`` = the item's ``fit_scale``, its
    time-weighted mean on the centre pixel) and drawn by the rasteriser itself, one segment at a
    time, brightness rising with time so the direction of motion is visible.
    """
    import numpy as np
    import torch

    from . import kernel as K
    from .io import write_image
    k = torch.as_tensor(kernel, dtype=torch.float32)
    h, w = k.shape
    big = (k / k.max().clamp_min(1e-12)).repeat_interleave(zoom, 0).repeat_interleave(zoom, 1)
    p = torch.as_tensor(path_px, dtype=torch.float64) * scale
    tt = torch.as_tensor(t, dtype=torch.float64)
    dt = tt[1:] - tt[:-1]
    dt = dt if float(dt.sum()) > 0 else torch.ones_like(dt)
    mean = ((p[:-1] + p[1:]) / 2 * dt[:, None]).sum(0) / dt.sum()
    canvas = (h * zoom - 1 + (h * zoom) % 2, w * zoom - 1 + (w * zoom) % 2)  # odd: a centre pixel
    half = torch.tensor([canvas[1] // 2, canvas[0] // 2], dtype=torch.float64)
    q = ((p - mean) * zoom).clamp(-half, half).float()  # drawing only: keep every point on the canvas
    segments = torch.stack([q[:-1], q[1:]], 1)
    shade = 0.3 + 0.7 * torch.linspace(0, 1, len(segments))[:, None, None]
    # A few segments at a time (a segment's drawing does not depend on its batch): all at once took a
    # canvas per segment, 24 GB for a 255 px kernel at --zoom 32, and the run was killed.
    step = max(1, RENDER_PIXELS // (canvas[0] * canvas[1]))
    drawing = torch.zeros(canvas)
    for a in range(0, len(segments), step):
        lines = K.rasterize(segments[a:a + step], canvas, center=False)
        lines = lines / lines.amax((1, 2), keepdim=True).clamp_min(1e-12) * shade[a:a + step]
        drawing = torch.maximum(drawing, lines.amax(0))
    drawing = torch.nn.functional.pad(drawing, (0, big.shape[1] - canvas[1], 0, big.shape[0] - canvas[0]))
    image = torch.cat([big, torch.full((big.shape[0], 2), 0.5), drawing], dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.asarray(image[None].clamp(0, 1)))


# ----------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------

def add_dataset(subparsers) -> None:
    p = subparsers.add_parser(
        "dataset", help="write blurry/sharp pairs (sharded, resumable) for training",
        description="Write N blurry/sharp pairs, kernels, manifest.jsonl and dataset.json to --out "
                    "(format: datasets/README.md). Pair i depends only on (--seed, i); a killed run re-run "
                    "with the same command completes the missing pairs.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--pairs", type=positive_int, required=True, metavar="N", help="number of pairs")
    p.add_argument("--sharp", type=Path, default=None, metavar="DIR",
                   help="folder of sharp photographs (default: procedural dead-leaves scenes)")
    p.add_argument("--crop", default=None, metavar="SIZE|HxW", help="pair size, e.g. 256 or 256x384 (default: the recipe's)")
    p.add_argument("--seed", type=seed, default=0, help="base seed (default 0)")
    p.add_argument("--recipe", default="default", metavar="NAME|FILE.toml",
                   help="gopro-like, realblur-like, levin-like, default, or a recipe file (datasets/README.md)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="make only shard I of N (default 0/1: all)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset files in an existing --out")
    p.add_argument("--verify", action="store_true",
                   help="write nothing: make the pairs again and compare them with the finished dataset in --out "
                        "(files and manifest records); exit status 1 lists those that differ")
    p.add_argument("--layout", choices=("blursynth", "basicsr"), default="blursynth",
                   help="blursynth: sharp/ + blur/ (default); basicsr: gt/ + lq/")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_dataset)


def run_dataset(args) -> int:
    from .dataset import DatasetError, PhotoFailed, WorkerDied, parse_shard, verify_dataset, write_dataset
    from .io import ImageError
    from .kernel import KernelFitError
    from .recipe import RecipeError

    if args.verify and args.overwrite:
        raise UsageError("--verify writes nothing and --overwrite replaces the dataset: give one")
    try:
        options = dict(recipe=args.recipe, sharp=args.sharp, crop=args.crop, seed=args.seed, shard=parse_shard(args.shard),
                       workers=args.workers, layout=args.layout, device=str(_device(args.device)), progress=not args.quiet)
        if args.verify:
            return _report_check(args.out, verify_dataset(args.out, args.pairs, **options))
        result = write_dataset(args.out, args.pairs, overwrite=args.overwrite, **options)
    except (DatasetError, RecipeError, ImageError, KernelFitError) as exc:
        raise UsageError(str(exc)) from None  # (a kernel that does not fit: worded with the recipe's keys)
    except OSError as exc:  # a full disk, a read-only --out, or a folder removed while the run wrote in it
        if exc.errno is None or (exc.filename is None and exc.errno == errno.ENOENT):
            raise UsageError(str(exc)) from None  # (--sharp not found: its own words)
        fix = ("free some space there, then run the same command again: it resumes where it stopped"
               if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
               "choose a writable --out" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else
               "run the same command again once that is fixed: it resumes where it stopped")
        # exit 1, not 2: the command was sound, the run failed (as unpaired.train and deblur say of a full disk)
        print(f"blursynth dataset: error: --out {args.out}: cannot write {exc.filename or 'there'} ({exc.strerror}); "
              f"{fix}", file=sys.stderr)
        return 1
    except (WorkerDied, PhotoFailed) as exc:  # exit 1: the run failed, as for a full disk
        print(f"blursynth dataset: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (interrupt.Terminated): the workers are stopped
        print("blursynth dataset: interrupted; " + (f"nothing was written, and {args.out} was not all checked"
              if args.verify else f"run the same command again to complete {args.out}"), file=sys.stderr)
        return exit_code(exc)
    state = "complete" if result["complete"] else "this shard done; run without --shard once all shards are copied in"
    print(f"{args.out}: {result['written']} pairs written, {result['done']}/{args.pairs} present, {state}")
    return 0


def _report_check(out, result: dict, shown: int = 20) -> int:
    """Print what ``blursynth dataset --verify`` found; exit status 0 when everything matched, else 1."""
    problems, found = result["problems"], result["found"]
    if not found:
        print(f"{out}: {result['checked']} pairs checked, every file and record is the one this command makes")
        return 0
    listed = problems[:shown]
    more = f"\n  ... and {found - len(listed)} more" if found > len(listed) else ""
    what = "1 difference" if found == 1 else f"{found} differences"
    print(f"{out}: {what} in {result['checked']} pairs checked:\n  " + "\n  ".join(listed)
          + more + "\n(a file that differs or is missing is made again, byte for byte, by the same command without "
          "--verify once it is deleted; a dataset made on another kind of device is checked on that kind)")
    return 1


COMMANDS = [add_generate, add_inspect, add_dataset]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="blursynth", description="Physics-based camera-shake blur synthesis.")
    parser.add_argument("--version", action="version", version=f"blursynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


JOINED = ("--shard", "--depth", "--focal-length")  # options whose value may start with "-" (see _joined_values)
PAIRED = ("--exposure", "--length")  # the same, of two values each


def _joined_values(argv: list[str]) -> list[str]:
    """``argv`` with ``--shard -1/4`` as ``--shard=-1/4`` and ``--depth -inf`` as ``--depth=-inf``: argparse takes
    a value starting with "-" for an option, unless it looks like a plain negative number (-1, -0.5; not -inf or
    -1e3), and said "expected one argument", where the option's check names the valid range. Two values, as in
    ``--exposure -inf 1``, cannot be joined so: each such value gets a leading space, which argparse takes for
    a value ("expected 2 arguments" before), and ``float`` and the checks' messages ignore."""
    out: list[str] = []
    for k, a in enumerate(argv):
        dash_number = a[:1] == "-" and (a[1:2].isdigit() or _is_number(a))
        if out and out[-1] in JOINED and dash_number:
            out[-1] = f"{out[-1]}={a}"
        elif dash_number and any(argv[k - j] in PAIRED for j in (1, 2) if k >= j):
            out.append(" " + a)
        else:
            out.append(a)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a run that could not write, 2 bad input,
    130/143 interrupted by SIGINT/SIGTERM) instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(_joined_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version or a bad argument (already reported on one line)
        return int(exc.code or 0)
    try:
        with sigterm_interrupts():  # (a kill cleans up as Ctrl-C does)
            code = args.func(args)
        sys.stdout.flush()  # (here, so that a closed pipe is seen below rather than at exit)
        return code
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `| head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python would flush it again at exit)
        return 0
    except UsageError as exc:
        print(f"blursynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"blursynth {args.command}: interrupted; nothing was written to the output folder", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:
        # A disk that fills up (or turns read-only) after generate's check of the free space: one line, as
        # `dataset` says it, not a traceback. The staged files are already removed.
        if args.command != "generate" or exc.errno is None:
            raise
        name = Path(exc.filename).name if exc.filename else "kernels.npz"  # (its staged arrays' writes name no file)
        print(f"blursynth generate: error: --out {args.out}: cannot write {name} ({exc.strerror}); free some "
              "space there or choose another --out, then run the command again", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
