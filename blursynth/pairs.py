"""Making blurry/sharp pairs: the one function both the dataset writer and the torch Dataset call.

Pair ``i`` of a set is a pure function of ``(recipe, seed, i, sources)``: the scene or crop, the
trajectory, the focal length and scene depth, and the sensor parameters are all drawn through
:mod:`blursynth.rng` keyed by the item index, with a separate seed per component (so adding a
quantity to one component never changes another's draws). The image formation is the package's model:

    sharp sRGB --pre_blur--> linear --blur (uniform kernel | projective homographies)--> blurred linear
               --post_blur (noise, clip, CRF, quantise, JPEG)--> blurry sRGB

With ``boundary="valid"`` a sharp crop larger by the kernel margin is blurred and only the interior
kept, so the pair has no boundary artefact; the returned ``sharp`` is that interior.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import rng
from .camera import FULL_FRAME_DIAGONAL_MM, BehindCameraError, Camera, SceneReachedError
from .io import ImageError, broken_link, probe_images, read_samples, to_float
from .recipe import KERNEL_SIZE_MAX, Recipe, RecipeError, load_recipe
from .trajectory import Trajectory

# Pairs made at once on the CPU: a batch's full-size temporaries then stay nearer the cache. CPU time
# per 256 px pair of the default recipe, one thread, batch sizes alternated in one process: 57-66 ms
# in batches of 16, 46-53 in 8, 38-42 in 4, 38-42 in 2 (realblur-like: 99, 90, 83, 82). On other
# devices the whole call is one batch. Items never depend on the batch they are made in.
CPU_BATCH = 4

# Component seed salts: the draws of each component depend on (seed, component, index) only.
_SALT = {"source": 1, "trajectory": 2, "camera": 3, "sensor": 4, "noise": 5, "scene": 6}


def component_seed(seed: int, component: str) -> int:
    """A 63-bit seed for one component of a pair, derived from the base ``seed``; ``component`` is one of
    ``"source"``, ``"trajectory"``, ``"camera"``, ``"sensor"``, ``"noise"``, ``"scene"``."""
    seed = rng.check_seed(seed)
    if component not in _SALT:
        raise ValueError(f"component must be one of {', '.join(_SALT)}, got {component!r}")
    return rng._python_mix(rng._python_mix(seed) ^ (_SALT[component] * 0x9E3779B97F4A7C15)) >> 1


@dataclass
class ImageFolder:
    """The usable sharp images of a folder, and the files that were skipped with the reason.

    Attributes:
        root: the folder.
        files: paths (relative to ``root``, POSIX form) of usable images, sorted.
        sizes: ``(height, width)`` of each usable image.
        skipped: ``[{"file": relative path, "reason": text}]`` for unusable files.
    """

    root: Path
    files: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @classmethod
    def scan(cls, root: str | os.PathLike, min_size: tuple[int, int], sharp_name: str = "sharp",
             crop_name: str = "crop", avoid=None) -> "ImageFolder":
        """Check every file under ``root`` (recursively, following links to folders; hidden files and
        folders ignored) and keep the usable ones.

        Corrupt, empty, unreadable and non-image files, FIFOs and devices, folders that cannot be listed,
        broken symbolic links, links to a folder that holds them (a loop), and images smaller than
        ``min_size`` ``(height, width)``, are listed in ``skipped``; gray,
        RGBA, palette, CMYK and 16-bit images are usable (converted on read). Files are checked by
        :func:`blursynth.io.probe_images` (JPEGs decoded at 1/8 scale, one thread per core).

        ``sharp_name`` and ``crop_name`` are how messages and skip reasons name the folder and the crop
        size: by default the Python arguments (``sharp='photos'``, ``crop``); the command line passes
        its options (``--sharp``, ``--crop``), which messages then write as ``--sharp photos``.

        ``avoid``: None, or a function of a symbolic link's resolved target (whether it exists or not) that
        returns why it must not be read, or None; such a link is skipped with that reason, not followed
        (``blursynth dataset`` passes its output folders: the pairs it writes there are no photos).

        Raises:
            FileNotFoundError: ``root`` is not a folder.
            ImageError: no usable image (or no file at all) in it.
        """
        root = Path(root)
        option = sharp_name.startswith("-")
        named = f"{sharp_name} {root}" if option else f"{sharp_name}={str(root)!r}"
        if not root.is_dir():
            raise FileNotFoundError(f"{named}: not a folder; pass a folder of sharp photographs")
        found = cls(root=root)
        visible, loops, avoided, unlisted = _visible_paths(root, avoid)
        if root in unlisted:
            raise ImageError(f"{named}: the folder cannot be listed ({unlisted[root]}); make it readable (chmod +rx)")
        paths = [p for p in visible if p not in avoided and p.is_file()]
        # photos are checked here (on every core) but read one crop at a time, later
        probes = dict(zip(paths, probe_images(paths)))
        for path in visible:
            rel = path.relative_to(root).as_posix()
            if path not in probes:
                if path in avoided:
                    found.skipped.append({"file": rel, "reason": f"symbolic link to {os.readlink(path)}, "
                                          f"{avoided[path]}"})
                elif path.is_symlink() and not path.exists():  # is_file() is False for it: say so, not pass it over
                    found.skipped.append({"file": rel, "reason": broken_link(path)})
                elif path in loops and path.is_symlink():
                    found.skipped.append({"file": rel, "reason": f"symbolic link to a folder that holds it (to "
                                          f"{os.readlink(path)}), not followed: it would repeat forever; "
                                          "remove the link"})
                elif path in loops:  # (no link itself: `ln -s .. photos/up` shows as up/photos; readlink failed)
                    found.skipped.append({"file": rel, "reason": "a folder that holds it, reached again through a "
                                          "symbolic link above it; not followed: it would repeat forever; remove "
                                          "that link"})
                elif path in unlisted:  # (its photos were left out without a word)
                    found.skipped.append({"file": rel, "reason": f"a folder that cannot be listed ({unlisted[path]}); "
                                          "make it readable (chmod +rx) or remove it"})
                elif path.exists() and not path.is_dir():  # (reading a FIFO would wait forever, /dev/zero never end)
                    found.skipped.append({"file": rel, "reason": "not a regular file (a FIFO, socket or device); "
                                          "remove it"})
                continue
            probed = probes[path]
            if isinstance(probed, ImageError):
                # Reasons name the file relative to the folder, so they do not depend on where it is mounted.
                reason = str(probed).replace(str(path), rel).removeprefix(f"{rel}: ")
                found.skipped.append({"file": rel, "reason": reason})
                continue
            h, w = probed
            if h < min_size[0] or w < min_size[1]:
                # height x width, the order of --crop HxW
                found.skipped.append({"file": rel, "reason": f"image is {h}x{w} (height x width), smaller than the "
                                      f"{min_size[0]}x{min_size[1]} needed (crop plus the kernel margin); "
                                      f"use a smaller {crop_name}"})
                continue
            found.files.append(rel)
            found.sizes.append((h, w))
        if not paths and not found.skipped:  # (else the reasons below say why nothing is usable)
            instead = f"leave {sharp_name} out" if option else f"pass {sharp_name}=None"
            raise ImageError(f"{named}: the folder has no image files (looked in its subfolders too, hidden "
                             f"files left out); put photos in it, or {instead} for procedural scenes")
        if not found.files:
            raise ImageError(f"{named}: no usable image (skipped {len(found.skipped)} files: "
                             + "; ".join(f"{s['file']}: {s['reason']}" for s in found.skipped[:3]) + ")")
        return found


def _visible_paths(root: Path, avoid=None) -> tuple[list[Path], set[Path], dict[Path, str], dict[Path, str]]:
    """Every path under ``root`` (sorted), hidden ones and those in hidden folders left out, following
    symbolic links to folders; the links to a folder that holds them, listed but not followed; the
    links that ``avoid`` refuses (:meth:`ImageFolder.scan`), listed with its reason, not followed; and
    the folders that cannot be listed, with the reason.

    ``Path.rglob`` lists a link to a folder but does not look inside it, so the photos of a linked
    folder (``ln -s /data/DIV2K photos/div2k``) were left out without a word.
    """
    found, loops, avoided, unlisted = [], set(), {}, {}

    def walk(folder: Path, above: frozenset) -> None:
        try:
            entries = list(folder.iterdir())
        except OSError as exc:
            unlisted[folder] = exc.strerror or str(exc)
            return
        for path in entries:
            if path.name.startswith("."):
                continue
            found.append(path)
            # Links only: without one, no path under root leads elsewhere than root's own tree (where root lies is
            # the caller's to check). By the target's path, not its contents, so that the answer is the same before
            # the folder it points into exists as after (a link into a dataset's sharp/ is broken until its first run).
            if avoid is not None and path.is_symlink():
                try:
                    why = avoid(path.resolve())
                except (OSError, RuntimeError):  # (a loop of links: skipped below as broken)
                    why = None
                if why:
                    avoided[path] = why
                    continue
            if path.is_dir():
                real = path.resolve()
                if real in above:  # a link back up the tree: followed, it would never end
                    loops.add(path)
                else:
                    walk(path, above | {real})

    walk(root, frozenset({root.resolve()}))
    return sorted(found), loops, avoided, unlisted


def _sources(recipe: Recipe, index: torch.Tensor, seed: int, folder: ImageFolder | None, device):
    """Sharp sRGB crops ``(n, 3, H_in, W_in)`` of items ``index``, with full-frame sizes and source records."""
    hin, win = recipe.input_size
    m = recipe.margin
    if folder is None:
        from .scenes import DeadLeaves
        recipe.check_frame()
        scene = DeadLeaves().render_at(index.to(device), (hin, win), component_seed(seed, "scene"))
        # The scene stands for a crop, at a drawn position, of a photograph of recipe.frame_px.
        fh, fw = recipe.frame_px
        u = rng.uniform(component_seed(seed, "source"), index.cpu(), (2,), stream=1, dtype=torch.float64)
        corner = torch.stack([torch.floor(u[:, 0] * (fw - win + 1)), torch.floor(u[:, 1] * (fh - hin + 1))], 1)
        full = torch.tensor([[fw, fh]] * len(index), dtype=torch.float64)
        records = [{"image": "dead_leaves", "box": [int(x) + m, int(y) + m, recipe.crop[1], recipe.crop[0]]}
                   for x, y in corner.tolist()]
        return scene.float(), full, corner, records
    s = component_seed(seed, "source")
    u = rng.uniform(s, index.cpu(), (3,), stream=0, dtype=torch.float64)
    pick = (u[:, 0] * len(folder.files)).long().clamp_max(len(folder.files) - 1).tolist()
    n, drew = len(pick), {}
    for k, j in enumerate(pick):
        drew.setdefault(j, []).append(k)
    crops, full, corner, records = [None] * n, [None] * n, [None] * n, [None] * n
    for j, items in drew.items():  # each photo decoded once for the items that drew it
        path = folder.root / folder.files[j]
        samples = read_samples(path)
        h, w = samples.shape[:2]
        for k in items:
            x0 = min(int(u[k, 1] * (w - win + 1)), w - win)
            y0 = min(int(u[k, 2] * (h - hin + 1)), h - hin)
            # only the crop is converted to float: a whole 12 Mpx JPEG's conversion took 3x its decoding
            crops[k] = torch.from_numpy(to_float(samples[y0:y0 + hin, x0:x0 + win], 3, path)[0])
            full[k], corner[k] = [w, h], [x0, y0]
            records[k] = {"image": folder.files[j], "box": [x0 + m, y0 + m, recipe.crop[1], recipe.crop[0]]}
    return (torch.stack(crops).to(device), torch.tensor(full, dtype=torch.float64),
            torch.tensor(corner, dtype=torch.float64), records)


def _scalar(v):
    """A JSON-ready Python number from a tensor element or number (inf -> None)."""
    v = v.item() if isinstance(v, torch.Tensor) else v
    if isinstance(v, float) and math.isinf(v):
        return None
    return v


def make_pairs(recipe: Recipe, indices, seed: int = 0, sources: ImageFolder | None = None,
               device: torch.device | str = "cpu") -> dict:
    """Make pairs ``indices`` of the set defined by ``(recipe, seed, sources)``.

    Args:
        recipe: a validated :class:`~blursynth.recipe.Recipe`, or a recipe name or ``.toml`` path
            (:func:`~blursynth.recipe.load_recipe`), as :class:`~blursynth.data.SyntheticPairs` takes.
        indices: item indices, at least one (int n >= 1 for ``0 .. n - 1``, range, list, array or ``(N,)``
            integer tensor, each >= 0); item ``i`` is a pure function of ``(recipe, seed, i, sources)``.
        seed: base seed, an integer in ``[0, 2**63)`` (:func:`blursynth.rng.check_seed`).
        sources: a scanned folder of sharp photographs (``ImageFolder.scan(folder, recipe.input_size)``; a
            folder's path is a TypeError saying so), or None for procedural dead-leaves scenes.
        device: where the pixels are computed.

    Returns:
        dict with ``"sharp"``, ``"blur"``: ``(N, 3, h, w)`` float32 sRGB in [0, 1] (h, w = recipe crop;
        ``"blur"`` outside [0, 1] where the sensor neither clips nor quantises: ``clip = false`` with
        ``bits = "off"``);
        ``"kernel"``: ``(N, kh, kw)`` the uniform kernel, or in projective mode the local kernel at the
        crop centre; ``"kernel_grid"``: ``(N, rows, cols, kh, kw)`` local kernels (projective) or None;
        ``"grid_px"``: ``(rows * cols, 2)`` float32 crop pixel coordinates ``(x, y)`` of the grid kernels, or
        None; ``"index"``: ``(N,)`` int64; ``"records"``: per item, JSON-ready ``{"source", "params"}``. Kernels
        are float32, non-negative, summing to 1.
        All tensors on ``device``. On the CPU the items are made :data:`CPU_BATCH` at a time (faster
        than all at once), elsewhere in one batch; either way each item is the same.
    """
    recipe = _as_recipe(recipe)
    if sources is not None and not isinstance(sources, ImageFolder):  # (AttributeError: 'str' object has no 'files')
        raise TypeError(f"sources must be None or an ImageFolder, e.g. ImageFolder.scan({str(sources)!r}, "
                        f"recipe.input_size); got {type(sources).__name__} {sources!r}")
    seed = rng.check_seed(seed)
    index = rng.as_index(indices)
    if not len(index):  # (failed deep inside: "too many indices for tensor of dimension 1")
        raise ValueError(f"indices {indices!r} name no item; pass at least one, e.g. 1 or [0]")
    step = CPU_BATCH if torch.device(device).type == "cpu" else len(index)
    parts = [_make_batch(recipe, index[a:a + step], seed, sources, device) for a in range(0, len(index), step)]
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for key, first in parts[0].items():
        if key == "records":
            merged[key] = [r for part in parts for r in part[key]]
        elif first is None or key == "grid_px":  # grid_px: the same for every item
            merged[key] = first
        else:
            merged[key] = torch.cat([part[key] for part in parts])
    return merged


def _as_recipe(recipe) -> Recipe:
    """``recipe`` itself, or the recipe a name or ``.toml`` path names (a RecipeError if none, a TypeError for
    another type): a name was "AttributeError: 'str' object has no attribute 'input_size'"."""
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _make_batch(recipe: Recipe, index: torch.Tensor, seed: int, sources: ImageFolder | None, device) -> dict:
    """:func:`make_pairs` for one batch of item indices ``(N,)`` int64, all at once."""
    from .blur import blur
    from .sensor import post_blur, pre_blur

    from .kernel import KernelFitError

    idx = index.to(device)
    sharp, full, corner, src_records = _sources(recipe, index, seed, sources, device)
    try:
        traj, path, scale, camera = _camera_motion(recipe, idx, seed, full)
    except KernelFitError as err:  # fit="resample" gave up; err.item is the pair's index
        raise _recipe_fit_error(recipe, err.item, err) from None
    except SceneReachedError as err:  # a scene closer than the camera's travel: a traceback, or terabytes asked for
        raise _scene_reached(recipe, err) from None
    except BehindCameraError:  # (a traceback naming pixels and times of no pair: degrees written as radians)
        raise _behind_camera(recipe) from None
    focal_px, depth = camera["focal_px"], camera["depth_m"]
    sensor = recipe.sensor_model().sample_at(idx, component_seed(seed, "sensor"))
    linear = pre_blur(sharp, sensor)
    m = recipe.margin
    h, w = recipe.crop
    try:
        if recipe.blur_mode == "uniform":
            kernel = _rasterize(path, recipe.kernel_size, traj.t, recipe.kernel_fit)
            blurred, grid, grid_px = blur(linear, kernel, boundary=recipe.boundary), None, None
        else:
            blurred, kernel, grid, grid_px, scale = _projective(recipe, linear, traj, focal_px, depth, full, corner)
    except KernelFitError as err:  # fit="error"; err.item is the position in this batch
        raise _recipe_fit_error(recipe, int(index[err.item]), err) from None
    except BehindCameraError:  # (projective: a crop's corner, away from the principal point, turned behind)
        raise _behind_camera(recipe) from None
    blurry = post_blur(blurred, sensor, component_seed(seed, "noise"), idx)
    records = _records(recipe, src_records, traj, scale, camera, sensor.to_records())
    return {"sharp": sharp[:, :, m:m + h, m:m + w].float().clamp(0, 1), "blur": blurry.float(), "kernel": kernel,
            "kernel_grid": grid, "grid_px": grid_px, "index": idx, "records": records}


def _camera_motion(recipe: Recipe, idx: torch.Tensor, seed: int, full: torch.Tensor):
    """Trajectories, principal-point paths ``(N, T, 2)`` px, fit scales and camera values (``focal_mm``,
    ``focal_px``, ``depth_m``) of items ``idx`` whose source photographs measure ``full`` ``(N, 2)``."""
    n, device = len(idx), idx.device
    cam_seed = component_seed(seed, "camera")
    focal_mm = rng.log_uniform(cam_seed, idx, *recipe.focal_mm, stream=0)
    if math.isinf(recipe.depth_m[0]):
        depth = torch.full((n,), math.inf, device=device, dtype=torch.float64)
    else:
        depth = rng.log_uniform(cam_seed, idx, *recipe.depth_m, stream=1).double()
    # Focal length in pixels from the source's full frame (a crop keeps the photo's field of view).
    focal_px = (focal_mm.double().cpu() * torch.hypot(full[:, 0], full[:, 1]) / FULL_FRAME_DIAGONAL_MM).to(device)
    traj, path, scale = _trajectories(recipe, idx, seed, focal_px, depth)
    return traj, path, scale, {"focal_mm": focal_mm, "focal_px": focal_px, "depth_m": depth}


def shake_paths(recipe: Recipe, indices, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform-blur paths of items ``indices`` of a recipe with procedural scenes (frame
    ``recipe.frame_px``), exactly as :func:`make_pairs` draws them: ``(N, T, 2)`` pixel displacements
    and their ``(N, T)`` times, for :func:`blursynth.kernel.rasterize` (``fit="scale"``). CPU."""
    traj, path, _, _ = _frame_motion(_as_recipe(recipe), rng.as_index(indices), seed)
    return path, traj.t


def _frame_motion(recipe: Recipe, idx: torch.Tensor, seed: int):
    """:func:`_camera_motion` of items whose source is a procedural scene: a ``recipe.frame_px`` photo."""
    full = torch.tensor([recipe.frame_px[::-1]], dtype=torch.float64).expand(len(idx), 2)  # (w, h)
    return _camera_motion(recipe, idx, seed, full)


def recipe_kernels(recipe: Recipe, n: int, seed: int = 0, chunk: int | None = None,
                   device: torch.device | str = "cpu"):
    """Kernels ``0 .. n - 1`` of a recipe (a Recipe, or a name or ``.toml`` path) in chunks of bounded memory,
    drawn as :func:`make_pairs` draws pair ``i`` with procedural scenes: its trajectory, focal length (on
    ``recipe.frame_px``), depth, ``kernel.size`` and ``kernel.fit``. For a uniform recipe kernel ``i`` is pair ``i``'s
    kernel; for a projective one it is the blur at the principal point of pair ``i``'s motion (the
    pairs store local kernels across their crop instead).

    Yields :class:`blursynth.kernel.KernelChunk` as :func:`blursynth.kernel.generate` does; each
    chunk's ``trajectory.params`` also holds the camera's ``focal_mm``, ``focal_px`` and ``depth_m``
    (inf: rotation only). ``n``: an integer >= 0; ``chunk``: kernels per chunk, an integer >= 1 (others
    are a ValueError), or None for :func:`blursynth.kernel.default_chunk`; kernels are float32
    ``(chunk, size, size)`` on ``device``. Raises
    :class:`~blursynth.kernel.KernelFitError` worded with the recipe's keys when a path does not fit."""
    from .kernel import KernelChunk, KernelFitError, default_chunk
    recipe = _as_recipe(recipe)
    seed = rng.check_seed(seed)
    checks = [("n", n, 0)] + ([("chunk", chunk, 1)] if chunk is not None else [])
    for name, value, low in checks:  # (n=-1 gave no kernel, chunk=0 range()'s error)
        if not rng.is_integer(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if chunk is None:  # (after the checks: it reads the device)
        chunk = default_chunk(recipe.kernel_size, device)
    n, chunk = int(n), int(chunk)
    for a in range(0, n, chunk):
        idx = rng.as_index(range(a, min(n, a + chunk)), device=device)
        try:
            traj, path, scale, camera = _frame_motion(recipe, idx, seed)
            kernels = _rasterize(path, recipe.kernel_size, traj.t, recipe.kernel_fit)
        except KernelFitError as err:  # resample gave up (item: the index) or fit="error" (its place in idx)
            item = err.item if recipe.kernel_fit == "resample" else a + err.item
            raise _recipe_fit_error(recipe, item, err, "kernel") from None
        except SceneReachedError as err:
            raise _scene_reached(recipe, err) from None
        except BehindCameraError:
            raise _behind_camera(recipe) from None
        traj.params.update(camera, fit_scale=scale)
        traj.params.setdefault("redraws", torch.zeros_like(scale))
        yield KernelChunk(start=a, kernels=kernels, trajectory=traj, paths_px=path)


def _records(recipe: Recipe, sources: list[dict], traj: Trajectory, scale: torch.Tensor, camera: dict,
             sensor: list[dict]) -> list[dict]:
    """Per item, its drawn parameters, JSON-ready: ``{"source", "params": {trajectory, camera, sensor}}``
    (the models' scalars; phases, per-axis amplitudes and the noise field follow from ``(seed, index)``)."""
    records = []
    for k, source in enumerate(sources):
        drawn = {name: _scalar(v[k]) for name, v in sorted(traj.params.items())}
        params = {"trajectory": {"model": recipe.trajectory_model, **drawn, "fit_scale": _scalar(scale[k])},
                  "camera": {name: _scalar(v[k]) for name, v in camera.items()},
                  "sensor": sensor[k]}
        records.append({"source": source, "params": params})
    return records


def _scene_reached(recipe: Recipe, err) -> RecipeError:
    """A :class:`~blursynth.camera.SceneReachedError` worded with the recipe keys that cause it."""
    return RecipeError(f"{recipe.source}: camera.depth_m: the camera moves {err.reach:.3g} times the scene depth "
                       "towards the scene plane during the exposure, reaching it; raise camera.depth_m (or lower "
                       "trajectory.translation_m_s or exposure_s)")


def _behind_camera(recipe: Recipe) -> RecipeError:
    """A :class:`~blursynth.camera.BehindCameraError` worded with the recipe keys that cause it."""
    return RecipeError(f"{recipe.source}: trajectory: the camera turns (or moves) so far during the exposure that it "
                       "faces away from the scene; the [trajectory] speeds are radians (drift_rad_s, tremor_rad_s, "
                       "jerk_rad_s) and metres (translation_m_s) per second, and degrees written as radians do this: "
                       "lower them (or exposure_s)")


def _rasterize(path, size, t, fit):
    from .kernel import rasterize
    return rasterize(path, size, t=t, fit="error" if fit == "resample" else fit)


def _recipe_fit_error(recipe: Recipe, pair: int, err, item: str = "pair") -> ValueError:
    """A :class:`~blursynth.kernel.KernelFitError` re-phrased for the recipe keys that set the kernel
    (``item``: "pair", or "kernel" for :func:`recipe_kernels`, whose paths are the principal point's)."""
    from .kernel import KernelFitError
    where = f"{recipe.source}: kernel.size = {recipe.kernel_size}, kernel.fit = \"{recipe.kernel_fit}\": {item} {pair}"
    what = "its path" if recipe.blur_mode == "uniform" or item == "kernel" else "a local path"
    if err.needed is None:
        text = (f"{where}: no redrawn path fits the kernel; raise kernel.size, make the [trajectory] motion "
                "smaller, or set kernel.fit = \"scale\"")
    elif err.needed > KERNEL_SIZE_MAX:
        text = (f"{where}: {what} spans {err.extent} px, more than the largest kernel.size ({KERNEL_SIZE_MAX}) "
                "holds; set kernel.fit = \"scale\" or make the [trajectory] motion smaller")
    else:
        text = (f"{where}: {what} spans {err.extent} px; raise kernel.size to at least {err.needed} or set "
                f"kernel.fit = \"scale\" (or \"resample\" to redraw such paths)")
    return KernelFitError(text, pair, err.size, err.needed, err.extent)


def _center_paths(traj: Trajectory, focal_px: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """``(N, T, 2)`` principal-point paths in pixels, a different focal length per item."""
    from .kernel import kernel_paths
    if traj.is_2d:
        return traj.path_px
    # The principal point's displacement is exactly proportional to the focal length (x = f X / Z), so
    # one unit-focal projection serves the whole batch.
    unit = kernel_paths(traj, Camera(1.0, 1, 1), depth.to(traj.t.device))
    return unit * focal_px.to(unit.device, torch.float32)[:, None, None]


def _trajectories(recipe: Recipe, idx: torch.Tensor, seed: int, focal_px, depth, max_redraws: int = 64):
    """Trajectories, their principal-point paths, and the fit scale, applying the recipe's fit policy.

    ``fit="resample"`` redraws an item whose path does not fit the kernel with the seeds of
    :func:`blursynth.kernel.redraw_seed` and the same index (rejection sampling: still a pure function of
    ``(seed, i)``); ``fit="scale"`` reports the factor the rasteriser will apply.
    """
    from .kernel import fit_scale, sample_fitting
    model = recipe.trajectory_sampler()
    traj_seed = component_seed(seed, "trajectory")
    size = recipe.kernel_size
    if recipe.kernel_fit == "resample":
        traj, path, redraws = sample_fitting(
            model, idx, traj_seed, size, lambda tr, where: _center_paths(tr, focal_px[where], depth[where]),
            max_redraws)
        traj.params["redraws"] = redraws  # recorded for every item
    else:
        traj = model.sample_items(idx, traj_seed)
        path = _center_paths(traj, focal_px, depth)
    scale = fit_scale(path, size, traj.t) if recipe.kernel_fit == "scale" else torch.ones(len(idx), device=idx.device)
    return traj, path, scale


def _projective(recipe: Recipe, linear, traj, focal_px, depth, full, corner):
    from .kernel import KernelFitError
    from .nonuniform import grid_points, kernels_at, render_nonuniform

    m = recipe.margin
    h, w = recipe.crop
    hin, win = recipe.input_size
    rows, cols = recipe.kernel_grid
    crop_cam = Camera(1.0, w, h)
    pts = torch.cat([grid_points(crop_cam, rows, cols), torch.tensor([[(w - 1) / 2, (h - 1) / 2]])]) + m
    # The motion must fit the kernel at the crop's corners too, where roll moves content furthest:
    # fitted at the grid alone, a corner's blur could reach past the margin into the render's
    # reflection padding (2 of 40 realblur-like items, by about 1 px). Their kernels are not stored.
    corners = torch.tensor([[0.0, 0.0], [w - 1, 0.0], [0.0, h - 1], [w - 1, h - 1]]) + m
    checked = torch.cat([pts, corners])
    fit = "scale" if recipe.kernel_fit == "resample" else recipe.kernel_fit  # local kernels cannot be redrawn
    out, kernels, scales = [], [], []
    for k in range(linear.shape[0]):
        # The crop's camera keeps the photo's principal point (the centre of the full frame).
        cx = (full[k, 0].item() - 1) / 2 - corner[k, 0].item()
        cy = (full[k, 1].item() - 1) / 2 - corner[k, 1].item()
        cam = Camera(focal_px[k].item(), win, hin, cx=cx, cy=cy)
        d = depth[k].item()
        motion, scale = traj[k], 1.0
        if fit == "scale":
            motion, scale = _fit_motion(motion, checked, cam, recipe.kernel_size, d)
        rendered = render_nonuniform(linear[k:k + 1], motion, cam, depth_m=d, center=True)
        out.append(rendered[:, :, m:m + h, m:m + w])
        try:
            # (fit="error" checks the corners here; "scale" fitted them above, so only the stored ones are made)
            at = checked if fit == "error" else pts
            kernels.append(kernels_at(at, motion, cam, recipe.kernel_size, depth_m=d, fit=fit)[:, :len(pts)])
        except KernelFitError as err:
            raise KernelFitError(str(err), k, err.size, err.needed, err.extent) from None
        scales.append(scale)
    kern = torch.cat(kernels)  # (n, rows * cols + 1, kh, kw): the grid, then the crop centre
    grid = kern[:, :-1].reshape(len(kern), rows, cols, *kern.shape[-2:])
    # (grid_points are on the CPU: grid_px stayed there, whatever the device make_pairs was given)
    grid_px = (pts[:-1] - m).to(linear.device)
    return torch.cat(out), kern[:, -1], grid, grid_px, torch.tensor(scales, device=linear.device)


def _fit_motion(motion: Trajectory, pts: torch.Tensor, cam: Camera, size: int, depth_m: float,
                rounds: int = 8) -> tuple[Trajectory, float]:
    """A one-item 6-DoF ``motion`` with its rotations and translations shrunk, so that the local paths
    at ``pts`` fit a ``size`` kernel, and the factor applied (1 when they already fit).

    Projective blur is rendered from the motion itself, so fit="scale" must shrink the motion, not the
    stored kernels: kernels shrunk alone would describe a blur the image never received. Image motion is
    linear in small camera motions, so one round nearly fits; a few more absorb the rest.
    """
    from .kernel import fit_scale
    from .nonuniform import local_paths

    scale = 1.0
    for _ in range(rounds):
        paths, t = local_paths(pts, motion, cam, depth_m)
        s = float(fit_scale(paths, size, t, center=False).min())
        if s >= 1.0:
            break
        scale *= s
        motion = Trajectory(t=motion.t, rotation=None if motion.rotation is None else motion.rotation * s,
                            translation=None if motion.translation is None else motion.translation * s,
                            path_px=None if motion.path_px is None else motion.path_px * s, params=dict(motion.params))
    return motion, scale


def as_numpy_image(x: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` float tensor -> float32 NumPy on the CPU (for :func:`blursynth.io.write_image`)."""
    return x.detach().float().cpu().numpy()
