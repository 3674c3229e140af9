"""torch Datasets: synthetic pairs made on the fly, and pairs read from a written dataset.

:class:`SyntheticPairs` calls the same :func:`blursynth.pairs.make_pairs` as ``blursynth dataset``, one
index at a time, so item ``i`` is the pair ``i`` the writer would make with the same recipe, seed and
sources. Everything is derived from the index (no per-worker or global random state), so a
multi-worker ``DataLoader`` never draws the same pair twice and the order of workers changes nothing.

Item ``i`` is the same pair every epoch. For fresh pairs, make one ``epochs`` times longer and read it
once (its items are independent draws already), or build a new dataset with another ``seed`` (e.g.
``seed=epoch``) and a new ``DataLoader`` each epoch, which scans ``sharp`` again. Setting ``.seed`` on
a dataset whose ``DataLoader`` has ``persistent_workers=True`` changes nothing: its workers hold copies.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import IMAGE_SUFFIXES, ImageError, check_pair_sizes, first_line, read_image
from .pairs import ImageFolder, make_pairs
from .recipe import Recipe, load_recipe
from .rng import check_seed, is_integer


def flatten_params(record: dict, prefix: str = "") -> dict:
    """Nested record -> flat ``{"camera.focal_mm": 35.0, ...}`` of numbers and strings.

    A ``None`` value (a value not drawn for this item: ``sensor.gamma`` when its curve is not
    ``"gamma"``, ``camera.depth_m`` of a distant scene, a sensor step that is off) becomes NaN, so
    every item of one dataset has the same keys and the default ``DataLoader`` collate turns the
    dict into batched tensors (NaN where not drawn) and lists of strings. Lists, and values of other
    types, are dropped: NumPy scalars too, except ``np.float64``, which is a Python float (the records
    of :func:`~blursynth.pairs.make_pairs` and of a manifest hold Python numbers).
    """
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, name + "."))
        elif value is None:
            flat[name] = math.nan
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat


def _crop_size(crop) -> tuple[int, int]:
    """``crop`` as ``(h, w)``: one int is a square, as for every size in the package."""
    if is_integer(crop):
        return int(crop), int(crop)
    try:
        pair = tuple(crop)
    except TypeError:
        pair = ()
    if isinstance(crop, (str, bytes)) or len(pair) != 2:
        raise ValueError(f"crop must be an int (a square) or (height, width), got {crop!r}")
    return pair


def check_device(device, named: str | None = None) -> torch.device:
    """``device`` as a torch device that exists here, or a ValueError naming it as ``named`` (by default
    ``device='...'``; the command line passes ``--device ...``) and saying what to use instead."""
    named = named or f"device={device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{named}: not a torch device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{named}: CUDA is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()  # (else a traceback at the first tensor put there)
        raise ValueError(f"{named}: {count} GPU(s) are visible, numbered from 0; use cuda:0 to cuda:{count - 1}")
    # "meta" allocates but holds no values: it failed at the first pair with "Tensor.item() cannot be
    # called on meta tensors", after write_dataset had written its dataset.json
    if dev.type == "meta":
        raise ValueError(f"{named}: holds no data, only shapes; use cpu or cuda")
    if dev.type not in ("cpu", "cuda"):
        try:
            torch.zeros(1, device=dev)
        except Exception:
            raise ValueError(f"{named}: cannot allocate on it here; use cpu") from None
    return dev


def _item_index(i, length: int, what: str) -> int:
    """``i`` (negative counts from the end) as an index in ``[0, length)``, or an IndexError naming both."""
    if isinstance(i, torch.Tensor) and i.ndim == 0 and not i.is_floating_point() and i.dtype != torch.bool:
        i = int(i)  # (a sampler may hand out 0-d integer tensors)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} indices must be integers, got {i!r}")
    if not -length <= i < length:
        raise IndexError(f"index {i} is out of range for {length} {what}: use 0 to {length - 1} (or -{length} to -1)")
    return int(i) % length


class SyntheticPairs(Dataset):
    """On-the-fly blurry/sharp pairs from a recipe and procedural scenes or a folder of photographs.

    Args:
        length: number of items, an integer >= 1.
        recipe: recipe name, ``.toml`` path or :class:`~blursynth.recipe.Recipe` (default ``"default"``).
        sharp: folder of sharp photographs (scanned once; unusable files are listed in ``skipped``) or
            None for dead-leaves scenes.
        seed: base seed; item ``i`` is a pure function of ``(recipe, seed, i, sharp)``.
        crop: ``(h, w)``, or one int for a square, overriding the recipe's crop (pixels, 8-16384).
        device: where pairs are computed (keep ``"cpu"`` inside ``DataLoader`` workers); checked here:
            ``"cuda"`` on a machine without CUDA is a ValueError.

    Item ``i`` (an integer; negative counts from the end, like a list), its tensors on ``device``: dict
    with ``"blur"``, ``"sharp"``: ``(3, h, w)`` float32 sRGB in [0, 1] (``"blur"``
    quantised as the recipe's sensor says, and outside [0, 1] where its sensor neither clips nor
    quantises: ``clip = false`` with ``bits = "off"``; ``"sharp"`` the crop as it is, not quantised, where
    ``blursynth dataset`` writes it rounded to the sensor's bit depth: the written file is this
    target exactly for 8-bit photographs and 8-bit output, within half a level otherwise);
    ``"kernel"``: ``(kh, kw)`` float32, summing to 1 (the local kernel at the crop centre for projective recipes);
    ``"index"``: int; ``"params"``: flat dict of the drawn values (:func:`flatten_params`), the same
    keys for every item (NaN for a value not drawn), so a ``DataLoader`` batches it.
    """

    def __init__(self, length: int, recipe: str | Recipe = "default", sharp: str | os.PathLike | None = None,
                 seed: int = 0, crop: int | tuple[int, int] | None = None, device: str = "cpu"):
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 1 <= length < 2**63:
            # (an index is a 64-bit integer where pairs are drawn: 10**30 failed at its first item)
            raise ValueError(f"length must be an integer from 1 to 2**63 - 1 (the number of pairs), got {length!r}")
        length = int(length)
        seed = check_seed(seed)
        check_device(device)
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        if crop is not None:
            recipe = recipe.with_crop(_crop_size(crop))
        self.recipe, self.length, self.seed, self.device = recipe, length, seed, device
        if sharp is None:
            recipe.check_frame()  # a procedural scene stands for a crop of a frame_px photo
        self.sources = None if sharp is None else ImageFolder.scan(sharp, recipe.input_size)

    @property
    def skipped(self) -> list[dict]:
        """Files of ``sharp`` that were not usable, with the reason."""
        return [] if self.sources is None else self.sources.skipped

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        i = _item_index(i, self.length, "pairs")
        made = make_pairs(self.recipe, [i], self.seed, self.sources, self.device)
        return {"blur": made["blur"][0], "sharp": made["sharp"][0], "kernel": made["kernel"][0], "index": i,
                "params": flatten_params(made["records"][0]["params"])}


def _image_names(folder: Path) -> set[str]:
    """The names of the image files in ``folder`` (by suffix, :data:`~blursynth.io.IMAGE_SUFFIXES`; hidden
    files, such as the ``._a.png`` a copy from macOS leaves, are none)."""
    return {p.name for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()}


def _unfinished_run(root: Path) -> str | None:
    """The error for ``root`` when it holds a ``blursynth dataset`` run without ``manifest.jsonl``, else None."""
    from .dataset import _previous_settings
    settings = _previous_settings(root) or {}
    pairs, layout = settings.get("pairs"), settings.get("layout")
    if pairs is None or layout is None:
        return None  # not a dataset the writer made (or no dataset.json at all)
    return (f"{root}: an unfinished `blursynth dataset` run ({pairs} pairs, --layout {layout}; no manifest.jsonl "
            "yet): run the same command again to finish it, or, for shards, copy every shard's folder into one "
            "and run the command without --shard")


def _written_pairs(root: Path) -> int | None:
    """The number of pairs ``root/dataset.json`` says a `blursynth dataset` run made, or None (no such file)."""
    from .dataset import _previous_settings
    pairs = (_previous_settings(root) or {}).get("pairs")
    return pairs if isinstance(pairs, int) and not isinstance(pairs, bool) else None


class PairedFolder(Dataset):
    """Pairs read from disk: a ``blursynth dataset`` folder or a BasicSR-style ``lq/`` + ``gt/`` folder.

    Args:
        root: a folder with ``manifest.jsonl`` (any layout the writer produced), or with ``lq/`` and
            ``gt/`` holding images of the same file names. A ``blursynth dataset`` folder without its
            manifest (a killed run, or one shard not yet merged) is refused with a FileNotFoundError
            saying how to finish it, in either layout: its ``lq/`` + ``gt/`` hold only some pairs.
        kernels: False: items leave out ``"kernel"`` and its ``.npy`` file is not read (for users of
            the images alone, such as the trainers, which a missing kernel file stopped mid-run).

    Item ``i`` (an integer; negative counts from the end), on the CPU: dict with ``"blur"``, ``"sharp"``:
    ``(3, H, W)`` float32 sRGB in [0, 1] (16-bit files keep their 16 bits; gray ones are repeated to 3
    channels), ``"index"`` (int), and, when a manifest is present, ``"kernel"`` (float32 tensor as stored:
    ``(kh, kw)`` or ``(rows, cols, kh, kw)``) and ``"params"`` (flat dict). Reading an item raises
    :class:`~blursynth.io.ImageError` naming the file when one of its files is missing or does not
    decode (in a ``blursynth dataset`` folder, saying how to remake it) or when the two images differ
    in size.
    """

    def __init__(self, root: str | os.PathLike, kernels: bool = True):
        self.root, self.kernels = Path(root), kernels
        manifest = self.root / "manifest.jsonl"
        self.written = manifest.is_file()  # by `blursynth dataset`, which can remake any of its files
        if self.written:
            self.records = _Manifest.read(manifest, check=_pair_record_fault)
            # A copy cut at the end of a line parses: the set shrank without a word (the count, --verify's check)
            pairs = _written_pairs(self.root)
            if pairs is not None and len(self.records) != pairs:
                raise ValueError(f"{manifest}: holds {len(self.records)} records, not the {pairs} pairs its dataset.json "
                                 "names; the file is cut short (an interrupted copy?): copy the dataset folder again")
        elif (unfinished := _unfinished_run(self.root)) is not None:
            # A `blursynth dataset` folder without its manifest (a killed run, or one shard): its lq/ + gt/
            # (--layout basicsr) hold only some of its pairs, and read as a plain folder they would pass
            # for the whole set, without kernels or params.
            raise FileNotFoundError(unfinished)
        elif (self.root / "lq").is_dir() and (self.root / "gt").is_dir():
            # Images by suffix, as photo folders are read: a Thumbs.db or desktop.ini that Windows leaves in
            # gt/ alone refused the folder ("no blurry twin"), and one in both was a pair that fails to decode.
            lq, gt = (_image_names(self.root / name) for name in ("lq", "gt"))
            names = sorted(gt)
            missing = [n for n in names if n not in lq]
            if missing:
                raise FileNotFoundError(f"{self.root / 'gt'}: {missing[:3]} have no blurry twin in lq/")
            # and the other way, as BasicSR's paired_paths_from_folder checks: a blurry image left out
            # without a word would shrink the set unnoticed
            unpaired = sorted(lq - gt)
            if unpaired:
                more = f" and {len(unpaired) - 3} more" if len(unpaired) > 3 else ""
                raise FileNotFoundError(f"{self.root / 'lq'}: {unpaired[:3]}{more} have no sharp twin in gt/")
            self.records = [{"index": k, "sharp": f"gt/{n}", "blur": f"lq/{n}"} for k, n in enumerate(names)]
        else:
            raise FileNotFoundError(f"{self.root}: neither manifest.jsonl nor lq/ + gt/ found; "
                                    "point at a folder written by `blursynth dataset` (a finished run)")
        if not self.records:
            raise ValueError(f"{self.root}: the dataset is empty")

    def __len__(self) -> int:
        return len(self.records)

    def keep(self, indices) -> None:
        """Leave only the pairs at ``indices`` (a sequence of ints), in that order: items are numbered
        afresh from 0, and each keeps its ``"index"`` in the dataset (the trainers leave out the pairs
        they cannot read so)."""
        records = self.records
        self.records = records.subset(indices) if isinstance(records, _Manifest) else [records[i] for i in indices]

    def __getitem__(self, i: int) -> dict:
        rec = self.records[_item_index(i, len(self.records), f"pairs in {self.root}")]
        image = lambda path: torch.from_numpy(read_image(path)[0])  # noqa: E731
        blur, sharp = (self._read(rec, k, image) for k in ("blur", "sharp"))
        check_pair_sizes(self.root / rec["blur"], blur, self.root / rec["sharp"], sharp)
        item = {"blur": blur, "sharp": sharp, "index": rec["index"]}
        if "kernel" in rec and self.kernels:
            item["kernel"] = self._read(rec, "kernel", _read_kernel)
        if "params" in rec:
            item["params"] = flatten_params(rec["params"])
        return item

    def _read(self, rec: dict, key: str, read):
        """``read(path)`` of the file ``rec[key]`` names. In a written dataset a file that is missing or does
        not decode is an ImageError naming it and how to remake it: io's own advice ("re-export it") is for
        a photo, and a damaged kernel's NumPy error named neither the file nor what was wrong with it."""
        path = self.root / rec[key]
        try:
            return read(path)
        except (ImageError, OSError, ValueError, EOFError) as exc:
            if not self.written:
                raise
            raise ImageError(self.how_to_remake(exc, path, rec["index"])) from None

    def how_to_remake(self, exc: Exception, path: Path, index: int) -> str:
        """The error for ``exc``, raised reading (or probing) ``path`` of pair ``index`` of this written dataset:
        io's ``"path: what; advice"`` with its advice, which is for a photo, replaced by how to remake the file."""
        what = _without_advice(str(exc), path) if isinstance(exc, ImageError) else \
            f"{path}: cannot be read as a .npy array ({type(exc).__name__}: {first_line(exc)})"
        return (f"{what}; it is pair {index} of the `blursynth dataset` folder {self.root}: delete the file if it is "
                "there and run the command that wrote the folder again (its settings are in dataset.json), which "
                "remakes it exactly")


def _pair_record_fault(record: dict) -> str | None:
    """What keeps a manifest record from being read as a pair by :class:`PairedFolder`, or None: its
    ``blur`` and ``sharp`` (and ``kernel``, when present) must be file names, ``index`` an integer and
    ``params``, when present, a table. (A record edited or damaged into another shape parsed, then
    failed when a DataLoader first drew it, as a KeyError or TypeError naming neither file nor line.)"""
    for key in ("blur", "sharp", "kernel"):
        if key not in record:
            if key == "kernel":
                continue
            return f"no {key!r}"
        if not isinstance(record[key], str) or not record[key].strip():
            return f"{key!r} is {record[key]!r}, not a file name"
        if (name := PurePosixPath(record[key])).is_absolute() or ".." in name.parts:
            # (its damaged-file advice, "delete the file ... and run the command again", would name a file elsewhere)
            return f"{key!r} is {record[key]!r}, not a file inside the dataset folder"
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        return "no 'index'" if "index" not in record else f"'index' is {index!r}, not an integer"
    if "params" in record and not isinstance(record["params"], dict):
        return f"'params' is a JSON {type(record['params']).__name__}, not a record"
    return None


def _without_advice(message: str, path: Path) -> str:
    """io's ``"path: what; advice"`` less its advice: cut at the first ``"; "`` after the path that is not
    inside parentheses. (Cut at the first one of all, ``"x: not a readable image (no suffix; the formats
    read are ...); remove it ..."`` lost its closing parenthesis and the formats, and a path holding
    ``"; "`` was cut inside itself.)"""
    prefix = f"{path}: "
    start = len(prefix) if message.startswith(prefix) else 0
    depth = 0
    for at in range(start, len(message)):
        char = message[at]
        depth += (char == "(") - (char == ")")
        if depth <= 0 and message.startswith("; ", at):
            return message[:at]
    return message


def _read_kernel(path: Path) -> torch.Tensor:
    """A ``.npy`` file's array as a tensor. (``np.load`` takes a file without the ``.npy`` magic for a
    pickle, and then says it "contains pickled (object) data": read_array says the magic is wrong.)"""
    with open(path, "rb") as fh:
        return torch.from_numpy(np.lib.format.read_array(fh, allow_pickle=False))


class _Manifest(Sequence):
    """The records of a ``manifest.jsonl``, each parsed when it is asked for: only its byte offset is
    held, 8 bytes a pair. The parsed dicts, held whole, took about 5 KB a pair (GBs at millions of
    pairs), in the process and again in each ``DataLoader`` worker, whose reference counts copy the
    pages they touch. A slice, or :meth:`subset`, is another such view of the same file."""

    def __init__(self, path: Path, offsets: np.ndarray, stamp: tuple):
        self.path, self.offsets, self.stamp = path, offsets, stamp

    @classmethod
    def read(cls, path: Path, check=None) -> "_Manifest":
        """Index ``path``, parsing every record once, so that a damaged file is refused at the start.
        ``check(record)``: what is wrong with a parsed record, or None (a ValueError naming its line)."""
        offsets, at = array("q"), 0  # (a list of Python ints took 28 bytes an offset while it grew)
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    record = cls._parse(path, line, number)
                    if check is not None and (fault := check(record)) is not None:
                        raise ValueError(f"{path}: line {number} is not a pair record ({fault}); the file is damaged "
                                         "or was edited: copy the dataset folder again (`blursynth dataset ... "
                                         "--verify` with its settings lists what differs)")
                    offsets.append(at)
                at += len(line)
            stamp = cls._stamp(fh)
        return cls(path, np.frombuffer(offsets, dtype=np.int64), stamp)

    @staticmethod
    def _parse(path: Path, line: bytes, number) -> dict:
        """A line's record; a line that is not a JSON record is a ValueError naming it (a copy cut short
        ends mid-record, and json's own error named no file)."""
        try:
            record = json.loads(line)
            why = f"a JSON {type(record).__name__}"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            record, why = None, exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON record ({why}); the file is damaged or cut "
                             "short (an interrupted copy?): copy the dataset folder again")
        return record

    @staticmethod
    def _stamp(fh) -> tuple:
        st = os.fstat(fh.fileno())
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _open(self):
        fh = open(self.path, "rb")
        if self._stamp(fh) != self.stamp:  # (offsets into another file would read pieces of lines)
            fh.close()
            raise ValueError(f"{self.path} changed since the dataset was opened; open the dataset again")
        return fh

    def _record(self, fh, offset) -> dict:
        fh.seek(int(offset))
        return self._parse(self.path, fh.readline(), f"at byte {int(offset)}")

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return _Manifest(self.path, self.offsets[i], self.stamp)
        with self._open() as fh:
            return self._record(fh, self.offsets[i])

    def __iter__(self):
        with self._open() as fh:
            for offset in self.offsets:
                yield self._record(fh, offset)

    def subset(self, indices) -> "_Manifest":
        """The records at ``indices`` (a sequence of ints), in that order."""
        return _Manifest(self.path, self.offsets[np.asarray(indices, dtype=np.int64)], self.stamp)
