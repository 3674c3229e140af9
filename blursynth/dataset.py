"""Writing a synthetic blur dataset to disk: sharded, resumable, multi-process, byte-reproducible.

Layout of ``DIR`` (see ``datasets/README.md``)::

    dataset.json        recipe, package version, the command's settings, counts, skipped inputs
    manifest.jsonl      one record per pair, ordered by index (written once every pair exists)
    sharp/NNNNNN.png    sharp sRGB crop       (gt/ with --layout basicsr)
    blur/NNNNNN.png     blurry sRGB image     (lq/ with --layout basicsr)
    kernels/NNNNNN.npy  float32 (kh, kw) uniform kernel, or (rows, cols, kh, kw) local kernels

Work is cut into fixed chunks of :data:`CHUNK` consecutive pairs. A chunk writes its images, then its
records to ``parts/CCCCCC.jsonl`` (atomically), after a first line with the SHA-256 of the run's settings
(:func:`_part_header`): a part file of these settings is the proof that the chunk is complete. A re-run
of the same command redoes only chunks without one (rewriting identical bytes), then merges the parts'
records, in index order, into ``manifest.jsonl`` and removes ``parts/``. Chunk ``c`` belongs to
shard ``c mod N``; shard folders copied into one and finalised by running the command without
``--shard`` give the same files as one run. Every pair depends only on ``(seed, index)`` and chunks
are fixed, so the worker count changes nothing but the speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import re
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__, rng
from .data import _Manifest, _read_kernel, check_device
from .interrupt import sigterm_interrupts
from .io import (OS_LITTER, ImageError, atomic_path, dead_link_above, first_line, json_text, lock_folder,
                 read_samples, temporary_target, to_uint, write_image, write_json)
from .pairs import ImageFolder, as_numpy_image, make_pairs
from .recipe import CROP_RANGE, Recipe, RecipeError, load_recipe

CHUNK = 16  # pairs per unit of work, of resumption and of sharding (a pair's bytes do not depend on it)
PROBLEMS_KEPT = 1000  # the differences --verify lists at most (then counts)
PAIRS_MAX = 10**8  # (a pair takes at least 3 files; --pairs 10**20 ran out of memory before its first pair)
FORMAT = 1
LAYOUTS = {"blursynth": ("sharp", "blur"), "basicsr": ("gt", "lq")}
# The folders of --out the dataset writes in (any layout): files in them are the dataset's only if
# it named them, but photos there would be read back as inputs or mistaken for outputs.
MANAGED = ("parts", "kernels", *(d for pair in LAYOUTS.values() for d in pair))
_OWN_FILE = re.compile(r"(\d{6,}|dataset|manifest)\.(png|npy|jsonl|json)")  # (the names the dataset writes)
_PART = re.compile(r"parts/(\d{6}|[1-9]\d{6,})\.jsonl")  # (the names _part_name gives, relative to --out)


class DatasetError(ValueError):
    """A dataset command that cannot run as given; the message says which option and the fix."""


class WorkerDied(RuntimeError):
    """A worker process ended while it made a chunk (killed for memory, or crashed)."""


class PhotoFailed(RuntimeError):
    """A ``--sharp`` photo that passed the check before the first pair failed when read for one (it changed
    since, or its damage shows only when decoded): the run failed, the command line was sound."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> ``(I, N)``."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise DatasetError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four shards") from None
    if not 0 <= i < n:
        raise DatasetError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def parse_crop(text: str | int | None) -> tuple[int, int] | None:
    """``"256"`` or ``"HxW"`` -> ``(h, w)``; None stays None (the recipe's crop)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < CROP_RANGE[0]:
        raise DatasetError(f"--crop {text!r}: expected a size >= {CROP_RANGE[0]} or HxW, e.g. 256 or 256x384")
    if max(parts) > CROP_RANGE[1]:  # (it was the recipe file's error: "datasets/default.toml with crop ...")
        raise DatasetError(f"--crop {text!r}: sides must be at most {CROP_RANGE[1]} px, e.g. 256 or 256x384")
    return (parts[0], parts[-1])


def _settings(recipe: Recipe, pairs: int, seed: int, folder: ImageFolder | None, layout: str) -> dict:
    """What makes two runs the same dataset (the resumption key).

    The photo folder is identified by its content (the usable files' names, sizes in bytes and
    pixels), not its path, so shards run on machines that mount it elsewhere still agree.
    """
    sources = None
    if folder is not None:
        digest = hashlib.sha256()
        for name, (h, w) in zip(folder.files, folder.sizes):
            # (surrogateescape: a file name that is not UTF-8, b"\xe9t\xe9.jpg", hashes as its bytes)
            line = f"{name}\0{(folder.root / name).stat().st_size}\0{h}\0{w}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
        sources = {"images": len(folder.files), "sha256": digest.hexdigest()}
    return {"format": FORMAT, "blursynth_version": __version__, "pairs": pairs, "seed": seed,
            "sharp": sources, "layout": layout, "recipe": recipe.to_dict()}


def _as_recorded(out: Path, settings: dict) -> dict:
    """``settings`` of a recipe file without a ``name`` (named after the file), or those ``out/dataset.json`` records
    when they differ only in the recipe's name: the same recipe in a copy under another file name changes no pair,
    and now resumes and verifies the dataset, under the name it was made with. It was refused as "--recipe a then,
    b now" (a name the recipe gives itself still tells one recipe from another)."""
    previous = _previous_settings(out) if out.is_dir() else None
    if previous is None or not isinstance(previous.get("recipe"), dict):
        return settings
    unnamed = lambda s: {**s, "recipe": {**s["recipe"], "name": None}}  # noqa: E731
    return previous if unnamed(previous) == unnamed(json.loads(json.dumps(settings))) else settings


def _part_header(settings: dict) -> str:
    """The first line of a part file: the SHA-256 of ``settings`` as canonical JSON.

    It says which settings made the chunk, which its records do not (they carry the seed only), and the merge
    drops it, so no byte of the finished dataset depends on it.
    """
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return json.dumps({"settings_sha256": hashlib.sha256(canonical.encode()).hexdigest()})


def _check_output(out: Path, settings: dict, overwrite: bool) -> None:
    """Accept an empty ``out`` (made by :func:`_one_run_at_a_time`) or a resumable run of the same
    settings, or refuse (without ``overwrite``).

    ``overwrite`` deletes only what an earlier dataset run wrote in ``out`` (:func:`_remove_own_files`).
    """
    if not out.is_dir():
        raise DatasetError(f"--out {out}: exists and is not a folder")
    # (a file named blur, say: the run failed at its first pair, "File exists", after --overwrite had deleted)
    clash = next((out / name for name in MANAGED if (out / name).exists() and not (out / name).is_dir()), None)
    if clash is not None:
        raise DatasetError(f"--out {out}: {clash} is a file, where the dataset writes a folder of that name; "
                           "move it aside or choose another --out")
    if _holds_no_pair(out):
        return
    previous = _previous_settings(out)
    if (out / "dataset.json").is_file() and not overwrite:
        now = json.loads(json.dumps(settings))
        if previous == now:
            return  # the same command: resume
        raise DatasetError(f"--out {out}: holds a dataset made with other settings ({_differences(previous, now)}); "
                           "choose another --out or pass --overwrite")
    if not overwrite:
        raise DatasetError(f"--out {out}: exists and is not empty; choose another --out or pass --overwrite "
                           "(which deletes only the files an earlier dataset run wrote in it)")
    if previous == json.loads(json.dumps(settings)) and not (out / "manifest.jsonl").is_file():
        # An unfinished run of these very settings, killed or interrupted, re-run as it says with the same
        # command, --overwrite included: resumed. Deleting its finished chunks, to write the same bytes
        # again, threw away hours of work (a finished dataset is still made anew, as asked).
        return
    _remove_own_files(out, previous, settings)


def _record(out: Path, meta: dict) -> None:
    """Write ``out/dataset.json``, unless it holds these very bytes already: the same command re-run on a finished
    dataset (to check that every pair is there) then writes nothing, and works on a read-only copy or mount; it
    failed there, "cannot write dataset.json", over a file it would have rewritten unchanged."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if (out / "dataset.json").read_text() == json_text(meta):
            return
    write_json(out / "dataset.json", meta)


def _holds_no_pair(out: Path) -> bool:
    """Whether ``out`` holds nothing a run made but its ``dataset.json``, temporaries and empty dataset folders:
    a run stopped before its first pair (say by a recipe whose kernels do not fit), or killed while writing its
    first file. Nothing there is worth keeping, so any command may take the folder: the corrected one was refused
    as "other settings" until --overwrite."""
    top = {e.name for e in os.scandir(out)} - OS_LITTER  # (a folder made in Finder holds a .DS_Store)
    if any(name not in ("dataset.json", *MANAGED) and not _is_temporary(name) for name in top):
        return False
    if "dataset.json" in top and _previous_settings(out) is None:  # a file (or folder) of the user's by that name
        return False
    if any(e.is_dir() for sub in MANAGED if (out / sub).is_dir() for e in os.scandir(out / sub)):
        return False  # (a folder of the user's in sharp/, say: not ours to write beside without --overwrite)
    base = {name: name.rsplit("/", 1)[-1] for name in _existing_files(out)}
    return all(name == "dataset.json" or base[name] in OS_LITTER or _is_temporary(base[name]) for name in base)


def _previous_settings(out: Path) -> dict | None:
    """The settings recorded in ``out/dataset.json``, or None when it is missing or unreadable."""
    try:
        previous = json.loads((out / "dataset.json").read_text()).get("settings")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return previous if isinstance(previous, dict) else None


def _written_name(name: str, pairs: int, layout: str) -> bool:
    """Whether ``name`` (a path relative to ``--out``) is one of the files a dataset of ``pairs`` pairs in
    ``layout`` writes. (A test of each file there, not a set of every name: for --pairs 100,000,000 that
    set took tens of GB, and --overwrite in a shard's folder of such a run died of it.)"""
    if name in ("dataset.json", "manifest.jsonl"):
        return True
    if (part := _PART.fullmatch(name)) is not None:
        return int(part[1]) < math.ceil(pairs / CHUNK)
    sharp_dir, blur_dir = LAYOUTS[layout]
    pair = re.fullmatch(rf"(?:(?:{sharp_dir}|{blur_dir})/([0-9]+)\.png|kernels/([0-9]+)\.npy)", name)
    if pair is None:
        return False
    stem = pair[1] or pair[2]
    return len(stem) == len(_name(0, pairs)) and int(stem) < pairs


def _existing_files(out: Path) -> set[str]:
    """Files (relative paths) directly in ``out`` and in its :data:`MANAGED` folders."""
    found = set()
    for sub in ("", *MANAGED):
        folder = out / sub
        if folder.is_dir():
            found |= {f"{sub}/{e.name}".lstrip("/") for e in os.scandir(folder) if e.is_file(follow_symlinks=False)
                      or e.is_symlink()}
    return found


def _remove_own_files(out: Path, previous: dict | None, settings: dict) -> None:
    """Delete, for ``--overwrite``, exactly the files an earlier run wrote in ``out``, and nothing else.

    Its files are those its ``dataset.json`` settings imply (its pairs' names in its layout, part files,
    ``dataset.json``, ``manifest.jsonl``), those its manifest and part files name, and the temporaries of
    killed writes. A folder among :data:`MANAGED` is removed only if that leaves it empty. Refused
    (nothing deleted) when a file of someone else's lies where this run would write.
    """
    existing = _existing_files(out)
    own = {name for name in existing if _is_temporary(name.rsplit("/", 1)[-1])}
    if previous is not None and isinstance(previous.get("pairs"), int) and previous.get("layout") in LAYOUTS:
        own |= {n for n in existing if _written_name(n, previous["pairs"], previous["layout"])}
        # (and a part file beyond its last chunk, a shard's of a larger --pairs copied in: it and its pairs are a
        # dataset's too, not someone else's files to refuse the folder over)
        own |= {n for n in existing if _PART.fullmatch(n)}
        for listing in ["manifest.jsonl", *sorted(n for n in existing if n.startswith("parts/"))]:
            if listing in own:
                # line by line: the manifest of a large dataset read whole, and every name it lists, took GBs
                with open(out / listing, errors="replace") as fh:
                    for line in fh:
                        own |= _named_files(line) & existing
    theirs = sorted(n for n in existing - own if _written_name(n, settings["pairs"], settings["layout"]))
    if theirs:
        more = f" and {len(theirs) - 1} more" if len(theirs) > 1 else ""
        lies, them = ("lie", "them") if len(theirs) > 1 else ("lies", "it")
        damaged = previous is None and (out / "dataset.json").is_file()
        why = ("its dataset.json does not name" if previous is not None else
               "its dataset.json cannot be read to name" if damaged else "there is no dataset.json to name")
        # (a shard folder copied in without its dataset.json comes here: say how to merge it; one whose dataset.json
        # a killed copy cut short was told there was none)
        shard = ("" if previous is not None else "; its dataset.json is damaged or cut short: copy it in again from "
                 "the folder it came from" if damaged else "; if they are a shard's, copy its dataset.json in too")
        raise DatasetError(f"--out {out}: {theirs[0]}{more} {lies} where this dataset writes but no earlier dataset "
                           f"run in it wrote {them} ({why} {them}); move {them} away or choose "
                           f"another --out (--overwrite deletes only a dataset's own files){shard}")
    # dataset.json last: it names the rest, so a run interrupted here (Ctrl-C amid many files) leaves a folder
    # the same command still recognises and finishes clearing, not old pairs it would take for someone else's
    for name in sorted(own, key=lambda n: (n == "dataset.json", n)):
        (out / name).unlink(missing_ok=True)
    for sub in MANAGED:
        with contextlib.suppress(OSError):  # not there, or holds files of the user's: kept
            (out / sub).rmdir()


def _named_files(text: str) -> set[str]:
    """The files that the records in ``text`` (a manifest or part file) name, those of the dataset's names in
    its :data:`MANAGED` folders only (a record edited to name ``../x`` or a folder deletes nothing)."""
    named = set()
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            named |= {n for n in (rec.get(k) for k in ("sharp", "blur", "kernel")) if isinstance(n, str)}
    return {n for n in named if n.count("/") == 1 and n.split("/")[0] in MANAGED
            and _OWN_FILE.fullmatch(n.split("/")[1])}


def _check_apart(out: Path, sharp) -> None:
    """Refuse photos inside the folders the dataset writes, and an output folder inside the photos."""
    if sharp is None:
        return
    o, p = Path(out).resolve(), Path(sharp).resolve()
    if p == o or p in o.parents:
        raise DatasetError(f"--out {out} is inside --sharp {sharp}: the pairs written there would be read as photos "
                           "by the next run; choose an --out outside the photo folder")
    for sub in MANAGED:
        # (resolved: an --out whose sharp/ is a link to the photo folder wrote its crops among the photos)
        if p == (o / sub).resolve() or (o / sub).resolve() in p.parents:
            raise DatasetError(f"--sharp {sharp} is inside --out {out}'s {sub}/ folder, where the dataset writes; "
                               f"move the photos elsewhere (e.g. {Path(out) / 'photos'}) or choose another --out")


def _links_into(out: Path):
    """For :meth:`ImageFolder.scan`'s ``avoid``: why a link in the photo folder to ``target`` must not be followed.

    A link to one of ``out``'s :data:`MANAGED` folders, or to a folder that holds them, read this run's pairs back as
    photos: too small to use with a "valid" boundary, they were listed as skipped on a resume but not on the first
    run (dataset.json differed); otherwise photos, the resume was refused ("1 photos then, 17 photos now") and
    --overwrite deleted the very files it was reading. As with nesting (:func:`_check_apart`), a link to ``out``'s
    other folders (your photos in ``out/photos``) is fine.
    """
    o = Path(out).resolve()
    subs = {sub: (o / sub).resolve() for sub in MANAGED}  # (resolved: a sub-folder may itself be a link)

    def why(target: Path) -> str | None:
        inside = next((sub for sub, s in subs.items() if target == s or s in target.parents), None)
        if inside is not None:
            where = f"inside --out {out}'s {inside}/ folder"
        elif target == o:
            where = f"--out {out} itself"
        elif any(target in s.parents for s in subs.values()):
            where = f"a folder that holds --out {out}"
        else:
            return None
        return (f"{where}, where the dataset writes its pairs: they would be read back as photos; not followed "
                "(remove the link, or link the photo folders themselves)")
    return why


def _differences(previous: dict | None, now: dict) -> str:
    """What differs between an earlier run's settings and this one's, in the command line's words."""
    if not isinstance(previous, dict):
        return "its dataset.json is unreadable"
    said = [f"--{key} {previous.get(key)} then, {now[key]} now" for key in ("pairs", "seed", "layout")
            if previous.get(key) != now[key]]
    old, new = previous.get("sharp"), now["sharp"]
    if old != new:
        photos = lambda s: f"{s['images']} photos" if s else "dead-leaves scenes"  # noqa: E731
        same_count = old and new and old["images"] == new["images"]
        said.append(f"--sharp: {photos(old)} then, {photos(new)} now" + (" (files or sizes changed)" if same_count else ""))
    old, new = previous.get("recipe") or {}, now["recipe"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if "name" in keys:
        said.append(f"--recipe {old.get('name')} then, {new['name']} now")
    elif keys == ["crop"]:
        said.append(f"--crop {'x'.join(map(str, old['crop']))} then, {'x'.join(map(str, new['crop']))} now")
    elif keys:
        said.append(f"recipe {new['name']}'s {', '.join(keys)}")
    if previous.get("blursynth_version") != now["blursynth_version"] or previous.get("format") != now["format"]:
        said.append(f"blursynth {previous.get('blursynth_version')} then, {now['blursynth_version']} now")
    return "; ".join(said) or "see its dataset.json"


@contextlib.contextmanager
def _one_run_at_a_time(out: Path):
    """Hold ``out`` (made if missing) for this run: a second run in it at the same time is refused.

    Two runs in one folder, even of different shards, would break each other: a run starts by
    deleting the temporaries of killed writes, which are then another's writes in flight, and two
    runs of the same chunks race to merge the manifest and leave ``parts/`` behind. The lock is an
    advisory ``flock`` on the folder, released when the run ends or dies (workers hold it too); a
    file system without locks (some network mounts) runs unlocked. Locks are not shared between
    machines: shards on several machines each write their own folder, copied into one afterwards.
    """
    if not out.exists():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # (a file on the way, or /proc: a refused --out, not a run to resume)
            raise DatasetError(f"--out {out}: cannot make a folder there ({exc.strerror or exc}); "
                               "choose another --out") from None
    if not out.is_dir():  # (a file: refused by _check_output)
        yield
        return
    try:
        fd = lock_folder(out)
    except BlockingIOError:
        raise DatasetError(f"--out {out}: another blursynth dataset run is writing in it; wait for it to end and "
                           "run again (it resumes), or give each shard its own --out and copy the folders into "
                           "one (two runs in one folder delete each other's temporary files)") from None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _remove_stray_temporaries(out: Path) -> None:
    """Delete the temporaries a killed run left behind (atomic writes rename only on success); only
    the dataset's own (:func:`_is_temporary`), in ``out`` and its :data:`MANAGED` folders."""
    for name in _existing_files(out):
        if _is_temporary(name.rsplit("/", 1)[-1]):
            (out / name).unlink(missing_ok=True)


def _is_temporary(name: str) -> bool:
    """Whether file ``name`` is what atomic_path leaves behind when a write of one of the dataset's
    own files is killed."""
    return bool(_OWN_FILE.fullmatch(temporary_target(name) or ""))


def _name(index: int, pairs: int) -> str:
    return f"{index:0{max(6, len(str(pairs - 1)))}d}"


def _chunk(chunk: int, pairs: int) -> range:
    """The pair indices of ``chunk`` in a dataset of ``pairs`` pairs."""
    return range(chunk * CHUNK, min((chunk + 1) * CHUNK, pairs))


def _part_name(chunk: int) -> str:
    """Where ``chunk``'s part file lies, relative to ``--out``."""
    return f"parts/{chunk:06d}.jsonl"


def _write_part(out: Path, chunk: int, header: str, lines: list[str]) -> None:
    """Close ``chunk``: its part file, ``header`` (:func:`_part_header`) then one JSON record per pair, whole or
    not at all."""
    with atomic_path(out / _part_name(chunk)) as tmp:
        tmp.write_text("\n".join([header, *lines]) + "\n")


class _ChunkWriter:
    """Makes and writes one chunk; picklable so spawned worker processes can run it."""

    def __init__(self, out: Path, recipe: Recipe, pairs: int, seed: int, folder: ImageFolder | None,
                 layout: str, device: str, bits: int, header: str):
        self.out, self.recipe, self.pairs, self.seed = out, recipe, pairs, seed
        self.folder, self.layout, self.device, self.bits, self.header = folder, layout, device, bits, header

    def _made(self, chunk: int):
        """Yield, for each pair of ``chunk``, its record and its arrays: the two images as the files hold
        their samples (``(H, W, 3)`` uint8 or uint16) and the float32 kernel."""
        indices = _chunk(chunk, self.pairs)
        made = make_pairs(self.recipe, indices, self.seed, self.folder, self.device)
        sharp_dir, blur_dir = LAYOUTS[self.layout]
        for k, i in enumerate(indices):
            _exit_if_orphaned()  # a worker whose parent died writes nothing more
            name = _name(i, self.pairs)
            rec = {"index": i, "sharp": f"{sharp_dir}/{name}.png", "blur": f"{blur_dir}/{name}.png",
                   "kernel": f"kernels/{name}.npy", "seed": self.seed, **made["records"][k]}
            if made["kernel_grid"] is not None:
                rec["kernel_grid_px"] = made["grid_px"].tolist()
                kernel = made["kernel_grid"][k]
            else:
                kernel = made["kernel"][k]
            # Both images at the sensor's bit depth (8 or 16): the sharp one is the target a model learns.
            yield rec, {"sharp": to_uint(as_numpy_image(made["sharp"][k]), self.bits),
                        "blur": to_uint(as_numpy_image(made["blur"][k]), self.bits),
                        "kernel": kernel.detach().float().cpu().numpy()}

    def __call__(self, chunk: int) -> tuple[int, list]:
        """Write ``chunk``; ``(pairs written, [])``."""
        lines = []
        for rec, arrays in self._made(chunk):
            # zlib level 1: 2.3x faster than Pillow's default at the same size on noisy 256 px pairs.
            write_image(self.out / rec["sharp"], arrays["sharp"], compress_level=1)
            write_image(self.out / rec["blur"], arrays["blur"], compress_level=1)
            npy = io.BytesIO()  # (then written at once: np.save's own writes fail on a full disk with no errno)
            np.save(npy, arrays["kernel"])
            with atomic_path(self.out / rec["kernel"]) as tmp:
                tmp.write_bytes(npy.getvalue())
            lines.append(json.dumps(rec, sort_keys=True))
        _exit_if_orphaned()
        _write_part(self.out, chunk, self.header, lines)
        return len(lines), []


class _ChunkChecker(_ChunkWriter):
    """Makes one chunk and compares it with the files in ``out``, writing nothing: a pair's images by
    their decoded samples (not their bytes, which another zlib may compress otherwise), its kernel by
    its array and its record by its line of ``manifest`` (a :class:`~blursynth.data._Manifest` of one
    line per pair, in index order)."""

    def __init__(self, writer: _ChunkWriter, manifest: _Manifest):
        self.__dict__.update(vars(writer))
        self.manifest = manifest

    def __call__(self, chunk: int) -> tuple[int, list]:
        """``(pairs checked, ["path: what is wrong", ...])``, paths relative to ``out``."""
        problems, n = [], 0
        try:
            listed = list(self.manifest.subset(_chunk(chunk, self.pairs)))
        except ValueError as exc:  # (replaced since it was read: offsets into another file)
            raise DatasetError(str(exc)) from None
        for (rec, arrays), record in zip(self._made(chunk), listed):
            n += 1
            if record != json.loads(json.dumps(rec)):
                problems.append(f"manifest.jsonl: the record of pair {rec['index']} differs")
            for key, want in arrays.items():
                path = self.out / rec[key]
                if not path.is_file():
                    problems.append(f"{rec[key]}: missing")
                    continue
                try:
                    got = _read_kernel(path).numpy() if key == "kernel" else read_samples(path)
                except (ImageError, OSError, ValueError, EOFError) as exc:
                    problems.append(f"{rec[key]}: does not decode ({first_line(exc)})")
                    continue
                if got.shape != want.shape or got.dtype != want.dtype or not np.array_equal(got, want):
                    problems.append(f"{rec[key]}: differs")
        return n, problems


_PARENT: int | None = None  # in a worker process: the pid of the run that started it
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _init_worker(parent: int) -> None:
    """Set up a worker: one torch thread, and no life of its own beyond the run that started it.

    Ctrl-C goes to the whole process group: workers ignore SIGINT and the parent, which handles it,
    terminates them (with SIGTERM, here left to kill them silently). If the parent dies without that
    (SIGKILL, a crash), Linux kills the worker at once (``PR_SET_PDEATHSIG``); elsewhere the worker
    sees its parent change before writing each pair (:func:`_exit_if_orphaned`).
    """
    global _PARENT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _PARENT = parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    _exit_if_orphaned()  # the parent died before the line above
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by the parent across the fork
    torch.set_num_threads(1)  # one process per core: threads inside would fight the other workers


def _exit_if_orphaned() -> None:
    """In a worker whose parent has gone: exit at once, writing nothing more."""
    if _PARENT is not None and os.getppid() != _PARENT:
        os._exit(1)


def _context(device: str):
    """Fork where it is safe (CPU, POSIX): workers start at once, as torch's DataLoader does.

    Workers run torch single-threaded (:func:`_init_worker`), so no OpenMP pool is used after the
    fork. CUDA cannot be used in a forked child: spawn there (each worker re-imports the package).
    """
    if str(device).startswith("cuda") or "fork" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    return mp.get_context("fork")


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every PNG


def _whole(path: Path) -> bool:
    """Whether ``path``, an image or kernel file of the dataset, exists and is not cut short.

    Our writes are atomic, but shard folders are copied in by cp, which a kill or a full disk leaves
    with a truncated last file: with its chunk's part file copied first, it was taken as done.
    """
    try:
        with open(path, "rb") as fh:
            if path.suffix == ".png":
                fh.seek(-len(_PNG_END), os.SEEK_END)
                return fh.read() == _PNG_END
            version = np.lib.format.read_magic(fh)
            # (np.save writes version 1.0; any other: not ours, made again)
            shape, _, dtype = getattr(np.lib.format, f"read_array_header_{version[0]}_0")(fh)
            return os.fstat(fh.fileno()).st_size == fh.tell() + dtype.itemsize * math.prod(shape)
    except (OSError, ValueError, AttributeError):
        return False


def _files_present(out: Path, chunk: int, pairs: int, layout: str) -> bool:
    """Whether every image and kernel file of ``chunk`` exists, whole."""
    sharp_dir, blur_dir = LAYOUTS[layout]
    names = (_name(i, pairs) for i in _chunk(chunk, pairs))
    return all(_whole(out / sharp_dir / f"{n}.png") and _whole(out / blur_dir / f"{n}.png")
               and _whole(out / "kernels" / f"{n}.npy") for n in names)


def _part_done(out: Path, chunk: int, header: str, pairs: int) -> bool:
    """Whether ``chunk``'s part file exists, begins with ``header`` (:func:`_part_header`) and is whole.

    Shard folders made with different settings (--seed, --recipe, --crop, photos, --layout, --pairs or
    blursynth version) and copied into one were merged without a word (the last dataset.json copied in
    won), a silently mixed dataset: such a chunk is made again under this run's settings, as is one whose
    part file has no header (written by a blursynth before it had one). Whole: a line per pair of the
    chunk after the header, the last one ended (a part file cut short by a killed copy is made again too).
    """
    try:
        lines = (out / _part_name(chunk)).read_text().split("\n")
    except (OSError, UnicodeDecodeError):
        return False
    return lines[0] == header and len(lines) == 2 + len(_chunk(chunk, pairs)) and lines[-1] == ""


def _part_chunks(out: Path) -> set[int]:
    """The chunks whose part file is in ``out/parts/`` (one listing of that folder only)."""
    try:
        entries = list(os.scandir(out / "parts"))
    except OSError:  # (none)
        return set()
    return {int(m[1]) for e in entries if (e.is_file(follow_symlinks=False) or e.is_symlink())
            and (m := _PART.fullmatch(f"parts/{e.name}"))}


def _remove_named_pairs(out: Path, chunk: int) -> None:
    """Delete the files that ``chunk``'s part file names, before the chunk is made again.

    When the chunk was made with other settings (a shard's, copied in), those of another --layout, or of
    the pairs a larger --pairs put in this run's last chunk, would stay beside this run's (the others it
    overwrites anyway).
    """
    try:
        text = (out / _part_name(chunk)).read_text(errors="replace")
    except OSError:  # (none: nothing named)
        return
    for name in _named_files(text):
        (out / name).unlink(missing_ok=True)


def _remove_other_layouts(out: Path, layout: str) -> None:
    """Remove the folders of the other layouts, if empty: those of a shard made with the other --layout and copied in,
    whose pairs :func:`_remove_named_pairs` deleted. Left empty, gt/ and lq/ beside sharp/ and blur/ made the merged
    folder differ from one run's, and a loader pointed at them found no pair."""
    for sub in [d for name, pair in LAYOUTS.items() if name != layout for d in pair]:
        with contextlib.suppress(OSError):  # not there, or holds files (of a shard still to be made again, or yours)
            (out / sub).rmdir()


def _manifest_whole(out: Path, pairs: int) -> bool:
    """Whether ``out/manifest.jsonl`` ends with the whole record of the last pair: a manifest cut short (a copy of the
    folder killed part way) does not. Only the end of the file is read."""
    try:
        with open(out / "manifest.jsonl", "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - (1 << 20)))
            tail = fh.read()
        return tail.endswith(b"\n") and json.loads(tail[:-1].rsplit(b"\n", 1)[-1])["index"] == pairs - 1
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _unmerge(out: Path, pairs: int, header: str) -> None:
    """Take a manifest cut short apart: the records of each chunk it holds whole (in order, each line ended) go back
    to that chunk's part file (behind ``header``; one already there is left as it is), then the manifest is deleted,
    so the run makes again only the chunks whose records it lost and merges the manifest anew."""
    lines = []
    with open(out / "manifest.jsonl", "rb") as fh:
        for k, raw in enumerate(fh):
            try:
                whole = raw.endswith(b"\n") and json.loads(raw)["index"] == k < pairs
            except (ValueError, TypeError, KeyError):
                whole = False
            if not whole:
                break
            lines.append(raw.decode().rstrip("\n"))
            if k + 1 == pairs or (k + 1) % CHUNK == 0:
                part = out / _part_name(k // CHUNK)
                if not (part.exists() or part.is_symlink()):
                    part.parent.mkdir(exist_ok=True)
                    _write_part(out, k // CHUNK, header, lines)
                lines = []
    (out / "manifest.jsonl").unlink()


def _merge(out: Path, chunks: int) -> None:
    """Write ``manifest.jsonl`` from the records of all part files (not their headers), in order, and remove
    them; every chunk must be done (:func:`_part_done`)."""
    with atomic_path(out / "manifest.jsonl") as tmp, open(tmp, "w") as fh:
        for c in range(chunks):
            fh.write((out / _part_name(c)).read_text().split("\n", 1)[1])
    _remove_parts(out, range(chunks))


def _remove_parts(out: Path, chunks) -> None:
    """Delete the part files of ``chunks`` (chunk numbers), and ``parts/`` if that empties it.

    Not rmtree: a folder of the user's own named parts/ in --out (--overwrite keeps its files) lost them all.
    """
    for c in chunks:
        (out / _part_name(c)).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not there, or holds files of the user's: kept
        (out / "parts").rmdir()


def _png_bits(recipe: Recipe) -> int:
    """The bit depth of the dataset's PNGs: the recipe's ``sensor.bits`` (8 or 16; float output cannot be stored)."""
    bits = recipe.sensor_model().bits
    if bits not in (8, 16):
        said = '"off" (float output)' if bits is None else repr(bits)
        raise RecipeError(f"{recipe.source}: sensor.bits: {said} cannot be stored in a dataset's PNG files; "
                          "use 8 or 16")
    return bits


def _unreadable_after_scan(exc: ImageError) -> str:
    """The one-line message for a photo that passed the scan but failed when read for a pair."""
    text = re.sub(r"; (remove|replace|move) it\b.*$", "", str(exc))
    return (f"{text}; it passed the check before the first pair (it changed since, or its damage shows only "
            "when decoded), and every pair depends on the number of photos: replace it with a good copy and "
            "run the same command to resume, or remove it and run again with --overwrite (which remakes every pair)")


def _check_options(pairs, workers, layout, shard) -> None:
    if not rng.is_integer(pairs) or pairs < 1:
        raise DatasetError(f"--pairs {pairs!r}: must be a positive integer")
    if pairs > PAIRS_MAX:  # (the run's bookkeeping, a few numbers per chunk, must fit in memory)
        raise DatasetError(f"--pairs {pairs}: at most {PAIRS_MAX:,} pairs in one dataset; for more, write several "
                           "with different --seed values")
    if not rng.is_integer(workers) or workers < 1:
        raise DatasetError(f"--workers {workers!r}: must be an integer >= 1")
    if layout not in LAYOUTS:
        raise DatasetError(f"--layout {layout!r}: must be one of {', '.join(LAYOUTS)}")
    if not isinstance(shard, (tuple, list)) or len(shard) != 2 or not all(map(rng.is_integer, shard)):
        raise DatasetError(f"--shard {shard!r}: expected (I, N) or \"I/N\", e.g. (0, 4) for the first of four shards")
    if not 0 <= shard[0] < shard[1]:
        raise DatasetError(f"--shard {shard[0]}/{shard[1]}: need 0 <= I < N")


def _run_chunks(writer: _ChunkWriter, todo: list[int], workers: int, device: str, done) -> tuple[int, list, int]:
    """Run ``writer`` (a :class:`_ChunkWriter` or :class:`_ChunkChecker`) on chunks ``todo``, in this process
    or ``workers`` processes; ``done(n)`` after each. Returns the pairs done, the first :data:`PROBLEMS_KEPT`
    problems found and their number."""
    written, problems, count = 0, [], 0

    def add(n: int, found: list) -> None:
        nonlocal written, count
        written, count = written + n, count + len(found)
        problems.extend(found[:PROBLEMS_KEPT - len(problems)])  # (a dataset of another device: every file)
        done(n)

    if workers == 1 or len(todo) <= 1:
        for c in todo:
            add(*writer(c))
        return written, problems, count
    # Processes of our own, each with its own two pipes, rather than multiprocessing.Pool: the Pool's
    # workers share one result queue and its lock, and Pool.terminate() hung for good when it killed a
    # worker holding that lock (CPython issue 96995), which Ctrl-C just as a chunk finished could do.
    # Here nothing is shared, so stopping the workers at any moment cannot block the run.
    ctx = _context(device)
    pending = iter(todo)
    procs = []
    try:
        # Ctrl-C and SIGTERM are held back while the workers are forked, so that none arrives in a
        # worker before _init_worker sets it up (it then unblocks them); the parent gets any held
        # one just after.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for _ in range(min(workers, len(todo))):
                (get, give), (read, send) = ctx.Pipe(duplex=False), ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_work, args=(writer, get, send, os.getpid()), daemon=True)
                proc.start()
                procs.append((proc, give, read))
                get.close()
                send.close()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        busy = {}  # result pipe -> (process, its task pipe) of the workers with a chunk
        for proc, give, read in procs:
            if _hand_out(give, pending):
                busy[read] = proc, give
        while busy:
            for ready in mp.connection.wait([*busy, *(proc.sentinel for proc, _ in busy.values())]):
                read = next((r for r, (proc, _) in busy.items() if ready in (r, proc.sentinel)), None)
                if read is None:  # (its result and its exit were both ready: handled with the result)
                    continue
                proc, give = busy[read]
                try:  # (ready: its result, or if it has exited, the end of its pipe, which also polls as ready)
                    (n, found), error = read.recv()
                except EOFError:  # exited with a chunk under way: killed (the OOM killer), or crashed
                    proc.join()
                    how = (f"killed by {signal.Signals(-proc.exitcode).name}" if proc.exitcode < 0
                           else f"exit status {proc.exitcode}")
                    raise WorkerDied(f"a worker process died ({how}) while making pairs; run the same command "
                                     "again to complete the dataset (with fewer --workers if memory ran out)") from None
                if error is not None:
                    raise error
                add(n, found)
                if not _hand_out(give, pending):
                    del busy[read]
    finally:  # done, an error, Ctrl-C or SIGTERM: the workers stop at once, mid-chunk or idle
        for proc, give, read in procs:
            proc.terminate()
        for proc, give, read in procs:
            proc.join()
            give.close()
            read.close()
    return written, problems, count


def _hand_out(give, pending) -> bool:
    """Send a worker the next chunk, or None (stop) when there is none; True if it got one."""
    chunk = next(pending, None)
    with contextlib.suppress(BrokenPipeError):  # (a worker that has just died: its exit is seen next)
        give.send(chunk)
    return chunk is not None


def _work(writer: _ChunkWriter, get, send, parent: int) -> None:
    """A worker process: write (or check) each chunk it is sent until None; send ``(writer's result, None)``
    or ``((0, []), the exception)``, which ends it."""
    _init_worker(parent)
    for chunk in iter(get.recv, None):
        try:
            send.send((writer(chunk), None))
        except Exception as exc:  # (ImageError, OSError: the parent raises it, naming the file)
            try:
                pickle.loads(pickle.dumps(exc))  # (as the pipe will: a class whose arguments it drops fails here)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            send.send(((0, []), exc))
            return


def _prepare(out, pairs, recipe, sharp, crop, seed, shard, workers, layout, device):
    """The options of :func:`write_dataset` checked, before ``out`` is touched, with the settings and the
    chunk writer they make: ``(out, pairs, shard, settings, writer)``."""
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    _check_options(pairs, workers, layout, shard)
    # All checked before --out is touched: a bad seed used to fail after dataset.json recorded it, and the
    # same command with a good one was then refused as "other settings".
    pairs, shard = int(pairs), (int(shard[0]), int(shard[1]))
    try:
        seed = rng.check_seed(seed, "--seed")
        check_device(device)
    except (TypeError, ValueError) as exc:
        raise DatasetError(str(exc)) from None
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    crop = parse_crop(crop) if not isinstance(crop, (tuple, list)) else crop
    if crop is not None:
        recipe = recipe.with_crop(crop)
    out = Path(out)
    if (gone := dead_link_above(out)) is not None:  # (making it failed with "File exists", which said nothing)
        raise DatasetError(f"--out {out}: {gone}, or choose another --out")
    if sharp is None:
        recipe.check_frame()  # a procedural scene stands for a crop of a frame_px photo
    _check_apart(out, sharp)
    # (messages name the command line's options, as this function's others do)
    folder = None if sharp is None else ImageFolder.scan(sharp, recipe.input_size, sharp_name="--sharp",
                                                         crop_name="--crop", avoid=_links_into(out))
    settings = _settings(recipe, pairs, seed, folder, layout)
    settings = settings if recipe.named else _as_recorded(out, settings)
    writer = _ChunkWriter(out, recipe, pairs, seed, folder, layout, device, _png_bits(recipe), _part_header(settings))
    return out, pairs, shard, settings, writer


def write_dataset(out: str | os.PathLike, pairs: int, recipe: str | Recipe = "default", sharp=None,
                  crop=None, seed: int = 0, shard: tuple[int, int] = (0, 1), workers: int = 1,
                  overwrite: bool = False, layout: str = "blursynth", device: str = "cpu",
                  progress: bool = True) -> dict:
    """Write (or complete) the dataset of ``pairs`` pairs in ``out``; see the module docstring for the layout.

    Args:
        out: output folder; an existing non-empty one must be a resumable run of the same settings,
            or ``overwrite`` must be set.
        pairs: number of pairs N, an integer >= 1.
        recipe: a recipe name, a ``.toml`` path or a :class:`Recipe`.
        sharp: folder of sharp photographs, or None for procedural dead-leaves scenes.
        crop: ``(h, w)``, ``"HxW"`` or int overriding the recipe's crop (pixels, 8-16384).
        seed: base seed, an integer in ``[0, 2**63)``; pair i depends only on (seed, i).
        shard: ``(I, N)`` or ``"I/N"``: write only chunks ``c`` with ``c % N == I``.
        workers: processes, an integer >= 1.
        layout: ``"blursynth"`` (sharp/, blur/) or ``"basicsr"`` (gt/, lq/).
        device: where pixels are computed (``"cpu"`` or ``"cuda"``; one that is not there is refused).
        progress: show a tqdm bar.

    Returns:
        ``{"written": pairs made by this call, "done": pairs present, "complete": manifest written}``.

    Raises:
        DatasetError, RecipeError: bad options, found before anything is written in ``out``; the message
            names the option as ``blursynth dataset`` spells it (``--out`` for ``out``, ``--sharp`` for
            ``sharp``), the same words for the command and for this function.
        PhotoFailed, WorkerDied: the run failed part way (a photo, a worker); the message says how to go on.
    """
    from tqdm import tqdm

    out, pairs, shard, settings, writer = _prepare(out, pairs, recipe, sharp, crop, seed, shard, workers, layout, device)
    folder, header = writer.folder, writer.header
    with _one_run_at_a_time(out):
        _check_output(out, settings, overwrite)
        chunks = math.ceil(pairs / CHUNK)
        meta = {"settings": settings,
                "counts": {"pairs": pairs, "chunks": chunks, "sources": 0 if folder is None else len(folder.files),
                           "skipped": 0 if folder is None else len(folder.skipped)},
                "skipped": [] if folder is None else folder.skipped}
        _record(out, meta)  # first: it marks the folder as a resumable run
        _remove_stray_temporaries(out)
        finished = (out / "manifest.jsonl").is_file()
        if finished and not _manifest_whole(out, pairs):
            # cut short (a copy of the folder killed part way): "complete" was said over it, and PairedFolder refused it
            _unmerge(out, pairs, header)
            finished = False
        parts = _part_chunks(out)
        for c in sorted(c for c in parts if c >= chunks):
            # Beyond this run's last chunk: a shard's of a larger --pairs, copied in. Its pairs are no part of this
            # dataset, yet they stayed beside it, forever, unlisted by the manifest, and BasicSR, which lists
            # gt/ + lq/, would train on them: deleted (the files it names, then it), as for a chunk made again.
            _remove_named_pairs(out, c)
            (out / _part_name(c)).unlink()
        # (a range: `c in mine` below is then a test, not a scan; as a list, the check that ends every run took
        # time quadratic in the chunks: 11 s for --pairs 1,000,000, hours for the 100,000,000 allowed)
        mine = range(shard[0], chunks, shard[1])
        # Every part file read once, here (the merge and the count of pairs done, other shards' included, go by it).
        closed = {c for c in sorted(parts) if c < chunks and _part_done(out, c, header, pairs)}
        if finished:
            # The manifest closed every chunk, but not one whose part file is there again and not of these settings:
            # a shard copied in after the merge, its files over this run's. Trusted through the manifest, another
            # --seed's pairs stayed under this one's records (and its part file was removed, the evidence with it):
            # made again, as in an unfinished folder. (A part file of these settings, the merge's own left by a kill
            # or a shard of this very command, names the same bytes: nothing is made for it.)
            closed |= set(range(chunks)) - parts
        # A chunk is done when it was closed (its part file, or the manifest) and its files are all there:
        # a pair lost later is made again, byte-identical, so the folder matches its manifest.
        todo = [c for c in mine if not (c in closed and _files_present(out, c, pairs, layout))]
        for c in todo:
            _remove_named_pairs(out, c)
        _remove_other_layouts(out, layout)
        size = lambda c: len(_chunk(c, pairs))  # noqa: E731
        try:
            with sigterm_interrupts(), tqdm(total=sum(map(size, mine)), initial=sum(map(size, mine)) - sum(map(size, todo)),
                                             disable=not progress, desc=f"pairs -> {out}", unit="pair") as bar:
                written = _run_chunks(writer, todo, int(workers), device, bar.update)[0]
        except ImageError as exc:
            if folder is None:
                raise
            raise PhotoFailed(_unreadable_after_scan(exc)) from None
        closed.update(todo)  # (each written: a chunk that failed ended the run above)
        if finished:  # the manifest stands (a chunk's records do not change); a kill may have left parts/
            # (not the part file of another shard's chunk still to be made again: it tells the run that makes it)
            _remove_parts(out, closed)
            # (a shard made only its own chunks: another's missing files were reported "200/200 present, complete")
            missing = [c for c in sorted(set(range(chunks)) - set(mine))
                       if not (c in closed and _files_present(out, c, pairs, layout))]
            return {"written": written, "done": pairs - sum(map(size, missing)), "complete": not missing}
        # Another shard's chunk is done when its files are there too, not by its part file alone: with one of
        # them lost, a --shard run merged the manifest and said "complete" over it.
        done = {c for c in closed if c in mine or _files_present(out, c, pairs, layout)}
        if len(done) == chunks:
            _merge(out, chunks)
        return {"written": written, "done": sum(map(size, done)), "complete": len(done) == chunks}



def verify_dataset(out: str | os.PathLike, pairs: int, recipe: str | Recipe = "default", sharp=None,
                   crop=None, seed: int = 0, shard: tuple[int, int] = (0, 1), workers: int = 1,
                   layout: str = "blursynth", device: str = "cpu", progress: bool = True) -> dict:
    """Check the finished dataset in ``out`` against the pairs :func:`write_dataset` makes with the same
    arguments, writing nothing: every pair of ``shard`` is made again and compared with its files (images
    by their decoded samples, kernels by their arrays) and its ``manifest.jsonl`` record. Finds files
    replaced, damaged or missing, a manifest or files copied in from another dataset, and pairs that
    another machine or device makes otherwise (``device="cuda"`` rounds otherwise than the CPU: check a
    dataset on the kind of device that wrote it).

    Returns:
        ``{"checked": pairs compared, "problems": ["path: what is wrong", ...], "found": how many}`` (paths
        relative to ``out``; at most :data:`PROBLEMS_KEPT` listed).

    Raises:
        DatasetError: bad options, as :func:`write_dataset`'s; ``out`` holds no finished dataset of these
            settings.
    """
    from tqdm import tqdm

    out, pairs, shard, settings, writer = _prepare(out, pairs, recipe, sharp, crop, seed, shard, workers, layout, device)
    settings = json.loads(json.dumps(settings))  # (as dataset.json reads back: tuples as lists)
    if not (out / "dataset.json").is_file():
        raise DatasetError(f"--out {out}: holds no dataset (no dataset.json); check the folder a dataset "
                           "run wrote")
    with _one_run_at_a_time(out):  # (not while a run writes in it)
        previous = _previous_settings(out)
        if previous != settings:
            raise DatasetError(f"--out {out}: holds a dataset made with other settings "
                               f"({_differences(previous, settings)}); give the options it was made with")
        manifest = out / "manifest.jsonl"
        if not manifest.is_file():
            raise DatasetError(f"--out {out}: the dataset is unfinished (no manifest.jsonl); run the same command "
                               "without --verify to complete it")
        try:
            records = _Manifest.read(manifest)
        except ValueError as exc:  # (a line that is not a record: cut short, or damaged)
            return {"checked": 0, "problems": [str(exc)], "found": 1}
        if len(records) != pairs:
            return {"checked": 0, "problems": [f"{manifest}: holds {len(records)} records, not the {pairs} pairs of "
                                               "these settings"], "found": 1}
        checker = _ChunkChecker(writer, records)
        mine = range(shard[0], math.ceil(pairs / CHUNK), shard[1])
        with sigterm_interrupts(), tqdm(total=sum(len(_chunk(c, pairs)) for c in mine), disable=not progress,
                                         desc=f"checking {out}", unit="pair") as bar:
            checked, problems, found = _run_chunks(checker, list(mine), int(workers), device, bar.update)
    return {"checked": checked, "problems": sorted(problems), "found": found}  # (sorted: workers finish in any order)
