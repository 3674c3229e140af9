"""File edges: reading any image the package accepts, and atomic writes.

Images come in as float32 ``(C, H, W)`` NumPy arrays in ``[0, 1]`` (display-referred values, as stored)
with the bit depth they had, and go out through a temporary file renamed into place, so an
interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import re
import shutil
import struct
import tempfile
import threading
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.config as iio_config
import imageio.v3 as iio
import numpy as np

try:
    import fcntl
except ImportError:  # (not on Windows: no folder locks there)
    fcntl = None


def umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and what to do."""


def read_image(path: str | os.PathLike, channels: int | None = 3) -> tuple[np.ndarray, int]:
    """Read an image file as float32 ``(channels, H, W)`` in ``[0, 1]``.

    Grayscale is repeated to 3 channels (or kept if ``channels == 1``), RGB to gray by the Rec. 709
    luma weights; ``channels=None`` keeps the file's colour type (1 channel for a gray file, 3 for a
    colour one, whatever its pixels); other values of ``channels`` are a ValueError. Alpha (a channel,
    or a PNG or GIF transparent colour) is composited over white, palette and CMYK images are
    converted to RGB, an EXIF orientation is applied (the image comes in upright, as viewers show
    it), 8/16-bit samples are scaled by their type's range and float ones clipped to ``[0, 1]``.
    (:func:`read_samples` then :func:`to_float` on a window of them: the same values for that window.)

    Returns:
        ``(array, bits)``: the image, C-contiguous, and its bit depth (8, 16 or 32 for float files;
        1-bit files count as 8, other integer types, scaled by their range, as 16).

    Raises:
        ImageError: the file is missing, a folder, empty, corrupt, not an image, holds NaN or infinite
            samples, or has more than :data:`MAX_PIXELS` pixels (the message says which).
    """
    _check_channels(channels)
    return to_float(read_samples(path), channels, path)


def read_samples(path: str | os.PathLike) -> np.ndarray:
    """The samples of an image file as decoded and turned upright, before :func:`to_float` converts
    them: ``(H, W)`` or ``(H, W, C)`` in the file's own type (uint8, uint16, bool, float ...).

    For a crop of a large photo, crop these and convert the crop: converting a whole 12 Mpx JPEG to
    float took 3x as long as decoding it.

    Raises:
        ImageError: as :func:`read_image`.
    """
    with _quiet():
        return _raw(_nonempty_file(path))


def _check_channels(channels) -> None:
    if channels not in (1, 3, None) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (gray), 3 (RGB) or None (the file's own), got {channels!r}")


def _raw(path: Path) -> np.ndarray:
    """The samples of an existing, non-empty file as decoded, upright: ``(H, W)`` or ``(H, W, C)``;
    float samples are finite (NaN or inf is refused, for reading and probing alike)."""
    with _decoding(path):
        if _is_png16(path):
            raw = _read_png16(path)
        elif (pnm := _pnm16_header(path)) is not None:
            raw = _read_pnm16(path, pnm)
        else:
            raw = _decode(path)
    if raw.size == 0:  # (a decoder that gives no samples, as imageio's tifffile did a TIFF cut short: raw[0] failed)
        raise ImageError(f"{path}: holds no pixels (decoded to shape {raw.shape}): damaged or cut short; replace it "
                         "with a good copy or re-export it")
    if raw.ndim == 4:  # animated / multi-page: take the first frame
        raw = raw[0]
    if raw.ndim not in (2, 3):
        raise ImageError(f"{path}: unsupported image shape {raw.shape}; expected H x W or H x W x C")
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        # (with the fix, as the other reasons a --sharp scan lists: this one alone named none)
        raise ImageError(f"{path}: contains NaN or infinite values; remove it or re-export it with finite values "
                         "(e.g. as PNG)")
    return raw


def to_float(raw: np.ndarray, channels: int | None = 3, path: str | os.PathLike = "image") -> tuple[np.ndarray, int]:
    """:func:`read_image`'s conversion of :func:`read_samples`' output, or of a window of it (every
    step is per pixel, so a window converts to the same values as in the whole image). ``path``
    names the file in errors. Returns ``(array, bits)`` as :func:`read_image`."""
    _check_channels(channels)
    # Work in (C, H, W): the scaling then writes the output layout in one pass (half the time of
    # converting and transposing after, for a 12 Mpx JPEG 38 ms against 76), and the same values.
    img = (raw if raw.ndim == 3 else raw[:, :, None]).transpose(2, 0, 1)
    if raw.dtype in (np.uint8, np.uint16):
        bits = 8 if raw.dtype == np.uint8 else 16
        img = np.divide(img, np.float32(2 ** bits - 1), dtype=np.float32, order="C")
    elif np.issubdtype(raw.dtype, np.floating):  # (finite: checked by _raw)
        bits, img = 32, np.clip(img, 0.0, 1.0, dtype=np.float32, order="C")
    elif raw.dtype == np.bool_:
        bits, img = 8, img.astype(np.float32, order="C")
    else:
        info = np.iinfo(raw.dtype)
        # (8 bits of a signed byte: 16 made deblur write a signed 8-bit TIFF as a 16-bit file)
        bits = 8 if raw.dtype.itemsize == 1 else 16
        img = ((img.astype(np.float64) - info.min) / (info.max - info.min)).astype(np.float32, order="C")
    if img.shape[0] in (2, 4):  # gray+alpha or RGBA: composite over white
        alpha = img[-1:]
        img = img[:-1] * alpha + (1.0 - alpha)
    if img.shape[0] > 3:
        img = img[:3]
    if channels is None:
        channels = img.shape[0]
    if channels == 3 and img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    elif channels == 1 and img.shape[0] == 3:
        # (per pixel, in a fixed order: a matrix product rounds by the size of the array, so a window
        # converted alone differed in the last bit from the same window of the whole image)
        img = (img[0] * np.float32(0.2126) + img[1] * np.float32(0.7152) + img[2] * np.float32(0.0722))[None]
    if img.shape[0] != channels:
        raise ImageError(f"{path}: has {img.shape[0]} channels, cannot convert to {channels}")
    return np.ascontiguousarray(img), bits


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """The upright ``(height, width)`` of an image :func:`read_image` can read, found for less.

    A JPEG's compressed data is decoded in full, which finds truncated or corrupt files, but at 1/8
    scale (libjpeg's DCT scaling): 37 ms for a 12 Mpx photo, against 170 ms to read it. A PNG's
    chunks are checked against their CRCs and its image data inflated (:func:`_png_data_fault`),
    without unfiltering or converting it: 6.6 ms against 28 to read a 1024x680 photo. Other formats,
    and files that fail these checks, are decoded, but not converted to float RGB, which would take
    up to 12 times their samples' memory (a 1-bit scan) on each of the threads of :func:`probe_images`.
    Used to scan folders of photos, which are then read one crop at a time.

    Raises:
        ImageError: as :func:`read_image`.
    """
    with _quiet():
        return _probe(path)


# Files an operating system's file browser leaves in any folder it shows (macOS, Windows): not the user's content,
# so a folder holding only these is empty to the commands' "--out exists and is not empty" checks.
OS_LITTER = frozenset({".DS_Store", ".localized", "Thumbs.db", "desktop.ini"})


def lock_folder(folder: str | os.PathLike) -> int | None:
    """An exclusive advisory lock (``flock``) on ``folder``: its open descriptor, the lock going when
    that is closed or the process dies; None where there are no locks (Windows, some network file
    systems). Raises BlockingIOError while another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # no locks on this file system
        os.close(fd)
        return None
    return fd


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (a Slurm job or
    ``taskset`` is given a few cores of a large machine, whose every core ``os.cpu_count`` counts)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # (no affinity on macOS and Windows)
        return os.cpu_count() or 1


def probe_images(paths: list[str | os.PathLike], threads: int | None = None) -> list[tuple[int, int] | ImageError]:
    """:func:`probe_image` of each path, in order: ``(height, width)``, or for an unreadable file its
    :class:`ImageError` (returned, not raised). Runs on ``threads`` threads (default: one per usable core, :func:`usable_cores`;
    the decoders release the GIL, so a folder of JPEGs is checked about that many times faster).
    ``paths`` is a list of paths (one path alone is a TypeError: it would be taken letter by letter);
    ``threads`` an integer >= 1 or None."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"paths must be a list of paths, got the one path {paths!r}; pass [path] or call probe_image")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None (one per core), got {threads!r}")

    def one(path):
        try:
            return _probe(path)
        except ImageError as exc:
            return exc
    # warnings are filtered here, once: catch_warnings in each thread would restore each other's filters
    with _quiet(), ThreadPoolExecutor(int(threads or usable_cores())) as pool:
        return list(pool.map(one, paths))


def _probe(path: str | os.PathLike) -> tuple[int, int]:
    path = _nonempty_file(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    size = None
    with _decoding(path):
        if head[:3] == b"\xff\xd8\xff":  # JPEG's start-of-image marker and the next marker's first byte
            size = _probe_jpeg(path)
        elif head == _PNG_SIGNATURE:
            size = _probe_png(path)
    if size is not None:
        return size
    return _raw(path).shape[:2]


def check_pair_sizes(blur_path: str | os.PathLike, blur, sharp_path: str | os.PathLike, sharp) -> None:
    """Raise :class:`ImageError` naming both files (``WxH`` each) when a blurry image and its sharp twin,
    arrays or tensors ``(..., H, W)``, differ in size: such a pair (e.g. the ``lq/`` of a
    super-resolution set) must not be cropped or scored together."""
    (hb, wb), (hs, ws) = blur.shape[-2:], sharp.shape[-2:]
    if (hb, wb) != (hs, ws):
        raise ImageError(f"{blur_path} is {wb}x{hb} but {sharp_path} is {ws}x{hs}; "
                         "a blurry image and its sharp twin must have the same size")


def broken_link(path: Path) -> str:
    """What is wrong with ``path``, a symbolic link whose target is missing, and the fix (without the path)."""
    try:
        os.stat(path)
        loop = False
    except OSError as exc:
        # (a.jpg -> b.jpg -> a.jpg: its target is there, as a link, so "which does not exist" puzzled)
        loop = exc.errno == errno.ELOOP
    why = "a loop of links" if loop else "which does not exist"
    return f"broken symbolic link (to {os.readlink(path)}, {why}); fix or remove the link"


def dead_link_above(folder: Path) -> str | None:
    """For an output folder that is to be made: None, or what stops it and the fix (without the path) when
    ``folder`` or a folder above it is a link to a missing folder (a purged scratch disk leaves such links:
    making the folder failed with "File exists", late in a run). The caller adds "or choose another ...".
    """
    gone = next((p for p in (folder, *folder.parents) if p.is_symlink() and not p.exists()), None)
    return None if gone is None else f"{gone} is a link to {os.readlink(gone)}, which does not exist; make that folder"


def _nonempty_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ImageError(f"{path}: is a folder, not an image file")
        if path.is_symlink() and not path.exists():  # listed by ls, so "no such file" would puzzle
            raise ImageError(f"{path}: {broken_link(path)}")
        if path.exists():  # (a FIFO named photo.png, listed by ls, was "no such file"; reading it would wait forever)
            raise ImageError(f"{path}: not a regular file (a FIFO, socket or device); remove it")
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file; remove it or replace it with a valid image")
    try:  # (a file that cannot be opened failed later as a write error, blaming --out)
        open(path, "rb").close()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be opened ({exc.strerror}); make it readable (chmod +r) or remove it") from None
    return path


@contextlib.contextmanager
def _quiet():
    """Silence the deprecation warnings of imageio's legacy plugins (while it probes for one) and of
    torchvision's codecs, and tifffile's complaints about a damaged file (``failed to reshape``), which
    printed beside the one line that names the file and skips it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"imageio\.plugins\._tifffile")
        yield


@contextlib.contextmanager
def _decoding(path: Path):
    """Turn a decoder's failure into an :class:`ImageError` that names the file and the fix."""
    try:
        yield
    except ImageError:
        raise
    except MemoryError:  # a valid file too large for this machine: re-exporting it would not help
        raise ImageError(f"{path}: too large to decode in the memory available here; downscale it, or free "
                         "memory (other programs, fewer workers)") from None
    except Exception as exc:  # imageio and Pillow raise many types for corrupt data
        if path.suffix.lower() not in IMAGE_SUFFIXES:  # a stray notes.txt: the decoder's complaint would only confuse
            raise ImageError(f"{path}: not a readable image ({path.suffix or 'no suffix'}; the formats read are "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))}); remove it or convert it to PNG or JPEG") from None
        # (imageio appends plugin install hints, and says "Could not find a backend to open `x.png``
        # with iomode `r`" when no decoder knows the contents: plugins, backends and iomodes are its words)
        # (a file of 1-3 bytes made Pillow's BMP signature test, which imageio runs first, raise
        # "error: unpack_from requires a buffer of at least 4 bytes": the words of a failed header parse)
        unknown = "could not find a backend" in str(exc).lower() or (
            isinstance(exc, struct.error) and "buffer of at least" in str(exc))
        why = (f"no decoder recognises its contents as {path.suffix} or another format: not an image, or damaged"
               if unknown else f"{type(exc).__name__}: {first_line(exc)}")
        raise ImageError(f"{path}: cannot be read as an image ({why}); remove it or re-export it as PNG or JPEG") from None


def first_line(message) -> str:
    """The first non-blank line of an error message (``str(exc)``), or "": libraries' messages (torch,
    imageio) run on with advice over several lines, and our errors are one line."""
    return (str(message).strip().splitlines() or [""])[0]


def to_uint(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """float ``(C, H, W)`` or ``(H, W)`` in ``[0, 1]`` to a uint8/uint16 ``(H, W[, C])`` array, rounded
    (``C == 1`` gives ``(H, W)``); values outside ``[0, 1]`` are clipped, NaN is a ValueError (its cast
    has no defined value: it came out as 0, black). ``bits``: 8 or 16."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top = 255 if bits == 8 else 65535
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    dtype = np.uint8 if bits == 8 else np.uint16
    nan = ValueError(f"image of shape {np.shape(image)} has NaN samples, which have no integer value; "
                     "find where they come from (np.nan_to_num would hide it)")
    if arr.ndim == 0:
        if np.isnan(arr.astype(np.float64)):
            raise nan
        return np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * top).astype(dtype)
    # float64 arithmetic, about 2**18 samples at a time: temporaries the size of the whole image in
    # float64 were the peak of writing a large one (3 x 8 bytes a sample, against 4 for the float32
    # image itself), e.g. +0.8 GB for a 12 Mpx RGB photo out of unpaired.deblur.
    out = np.empty(arr.shape, dtype)
    rows = max(1, (1 << 18) // max(1, math.prod(arr.shape[1:])))  # (arr[0] fails on 0 rows)
    for y in range(0, len(arr), rows):
        block = arr[y:y + rows].astype(np.float64)  # always a copy, so the caller's array is untouched
        if np.isnan(block).any():  # (here, a block at a time: no image-sized mask)
            raise nan
        np.clip(block, 0.0, 1.0, out=block)
        block *= top
        np.rint(block, out=block)
        np.copyto(out[y:y + rows], block, casting="unsafe")
        del block  # before the next one is made
    return out


# atomic_path's temporary for NAME.SUFFIX: ".NAME.XXXXXXXX.tmp.SUFFIX" (mkstemp's 8 random characters).
_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp(.*)")


def temporary_target(name: str) -> str | None:
    """The file name that an :func:`atomic_path` temporary called ``name`` was to become, or None if
    ``name`` is no such temporary. A run killed mid-write (SIGKILL) leaves these beside its outputs."""
    match = _TEMPORARY.fullmatch(name)
    return match[1] + match[2] if match else None


def temporary_glob(path: str) -> str:
    """A glob pattern for the :func:`atomic_path` temporaries of ``path`` (which may hold wildcards):
    ``"samples/step_*.png"`` -> ``"samples/.step_*.*.tmp.png"``."""
    p = Path(path)
    return (p.parent / f".{p.stem}.*.tmp{p.suffix}").as_posix()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds
    (replacing an existing file, with the permissions ``open()`` would give a new one), else remove it.
    Missing folders are made; an OSError names ``path``, not the temporary."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # (the name _TEMPORARY above recognises)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:  # (a read-only or full disk)
        raise _naming(exc, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the result the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _naming(exc, path) is not exc:
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``, the file being written, where it named nothing (a full disk: "No space
    left on device") or the temporary; the same subclass (FileNotFoundError, ...). Others unchanged."""
    if exc.errno is None or exc.filename is not None and not Path(exc.filename).name.startswith(f".{path.stem}."):
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def _short_write_error(tmp: Path, cause: OSError) -> OSError:
    """The file system's own error for a write into ``tmp`` that fell short: NumPy's ``tofile`` reports
    one with no errno ("180000 requested and 32384 written"), so that a full disk would not read as one.
    Writing on where it stopped gives the reason (ENOSPC, EDQUOT, EFBIG ...)."""
    if cause.errno is not None:
        return cause
    try:
        with open(tmp, "ab") as fh:
            fh.write(bytes(1 << 20))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as probe:
        return OSError(probe.errno, probe.strerror, str(tmp))
    return OSError(errno.EIO, f"the write fell short ({cause})", str(tmp))


DEEP_SUFFIXES = {".png", ".pgm", ".ppm", ".tif", ".tiff"}  # formats write_image can give 16 bits


def write_image(path: str | os.PathLike, image: np.ndarray, bits: int = 8, **kwargs) -> None:
    """Atomically write float ``(C, H, W)`` in ``[0, 1]`` (or an integer array, written as it is: laid out
    as :func:`to_uint` returns it, ``(H, W[, C])``, not ``(C, H, W)``) as an image file.

    The format follows the suffix. PNGs (8 or 16 bits, gray, gray + alpha, RGB or RGBA) are encoded by
    :func:`png_bytes`, whose only option is ``compress_level`` (zlib, 0-9, default 6), PGM/PPMs (8 or
    16 bits; a .pgm gray, a .ppm RGB) by :func:`pnm_bytes`; other formats go through imageio, with extra keyword
    arguments passed on (e.g. ``quality=90`` for JPEG). 16 bits go only to PNG, PGM/PPM and TIFF. An
    existing file is replaced; missing folders are made.

    Raises:
        ValueError: a suffix that names no image format imageio writes, 16 bits for a format that
            holds 8, or a colour image for a .pgm; the message names ``path``. As :func:`to_uint` for NaN
            samples.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".pgm", ".ppm") and suffix not in iio_config.known_extensions:
        said = f"the suffix {suffix}" if suffix else "a name without a suffix"
        raise ValueError(f"{path}: cannot tell an image format from {said}; end the name in .png, .jpg or .tif")
    data = image if np.issubdtype(np.asarray(image).dtype, np.integer) else to_uint(image, bits)
    if data.dtype.itemsize > 1 and suffix not in DEEP_SUFFIXES:
        # (bits is not used for an integer array: it is written as it is)
        fix = "bits=8" if data is not image else "a uint8 array"
        raise ValueError(f"{path}: {suffix} holds 8 bits, not the {8 * data.dtype.itemsize} of this image; "
                         f"use {fix} or one of {', '.join(sorted(DEEP_SUFFIXES))}")
    with atomic_path(path) as tmp:
        if suffix == ".png":
            tmp.write_bytes(png_bytes(data, **kwargs))
        elif suffix in (".pgm", ".ppm"):
            tmp.write_bytes(pnm_bytes(_pnm_channels(path, data)))
        else:
            try:
                iio.imwrite(tmp, data, extension=suffix, **kwargs)  # (lower case: imageio picks its TIFF writer for .tif only)
            except AttributeError as exc:
                # imageio's bundled TIFF writer answers a write that falls short (a full disk) by writing
                # again through ndarray.tostring, which NumPy 2 removed: the AttributeError hid the OSError.
                if not isinstance(exc.__context__, OSError):
                    raise
                raise _short_write_error(tmp, exc.__context__) from None
            except KeyError as exc:  # Pillow reads some formats it has no writer for: KeyError('PSD'), no file named
                raise _unwritable(path, f"Pillow has no writer for {exc.args[0] if exc.args else suffix}") from None
            except OSError as exc:  # (tifffile, where installed, reports the short write itself, without errno)
                if exc.errno is None and tmp.stat().st_size == 0:
                    # Nothing written and no errno: the format, not the disk ("the write fell short", an EIO, sent
                    # users to check a sound disk). imageio's "Could not find a backend" named the temporary.
                    why = (f"no installed imageio plugin writes {suffix}"
                           if "could not find a backend" in str(exc).lower() else first_line(exc))
                    raise _unwritable(path, why) from None
                raise _short_write_error(tmp, exc) from None


def _unwritable(path: Path, why: str) -> ValueError:
    """The error of :func:`write_image` for a format (or a colour type of it) that nothing here can write."""
    return ValueError(f"{path}: cannot be written as {path.suffix} here ({why}); end the name in .png, .jpg or .tif")


# Pillow refuses images over 179 Mpx, a guard against decompression bombs from the web; a user's own
# photos from a medium-format camera, or stitched panoramas, are larger. read_image applies this
# limit instead (12.9 GB as float32 RGB), read from the header before anything is decoded.
MAX_PIXELS = 2 ** 30
_PILLOW_LIMIT = threading.Lock()  # Pillow's limit is a module global: lifted for one open at a time


@contextlib.contextmanager
def _pillow_unlimited():
    from PIL import Image
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _probe_jpeg(path: Path) -> tuple[int, int] | None:
    """:func:`probe_image` of a file that starts as a JPEG does (None if Pillow finds no JPEG header)."""
    from PIL import Image
    try:
        with _pillow_unlimited():
            image = Image.open(path, formats=["JPEG"])
    except Exception:  # no JPEG header: let read_image say why, in its words
        return None
    with image:
        width, height = image.size
        _check_pixels(path, height, width)
        # (at least 1 px: a side under 8 px asked for 0, and Pillow's division by it made a thumbnail "unreadable")
        image.draft(None, (max(1, width // 8), max(1, height // 8)))
        image.load()
        # EXIF orientations 5 to 8 turn the picture a quarter (as read_image does)
        return (width, height) if image.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (height, width)


def _png_chunks(data: memoryview):
    """``(kind, body)`` of a PNG's chunks in order, up to IEND or to the first one that is cut short
    or fails its CRC (a sound file's last kind is then ``b"IEND"``)."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(data[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return
        kind = bytes(data[pos + 4:pos + 8])
        yield kind, data[pos + 8:end - 4]
        if kind == b"IEND":
            return
        pos = end


def _probe_png(path: Path) -> tuple[int, int] | None:
    """:func:`probe_image` of a PNG whose chunks are all complete and match their CRC, from its
    header; None for a PNG that fails the check (:func:`read_image` then says why) or has an EXIF
    chunk or a text chunk Pillow takes an orientation from (which may turn it)."""
    data = memoryview(path.read_bytes())
    chunks = list(_png_chunks(data))
    if not _png_laid_out(chunks):
        return None
    width, height = struct.unpack_from(">II", data, 16)
    _check_pixels(path, height, width)
    fault = _png_data_fault(chunks)
    if fault == "short":  # (Pillow decodes it without a word, the missing rows black: a --sharp scan used the photo)
        raise _short_png(path)
    # EXIF as ImageMagick stores it ("Raw profile type exif") and XMP's tiff:Orientation (Adobe's exports): Pillow
    # turns such a photo upright when it reads it, so its size from the header was the wrong way round, and a
    # --sharp scan kept a photo whose crops then came out of the wrong size, a traceback mid-run.
    if fault or any(kind == b"eXIf" for kind, _ in chunks) or _png_text_orients(chunks):
        return None
    if not (data[24] == 16 or _pillow_takes_chunks(path, chunks)):  # (bit depth 16: read by _read_png16, not Pillow)
        return None
    return height, width


def _short_png(path: Path) -> ImageError:
    return ImageError(f"{path}: its image data ends before its last row (written or copied incompletely); replace "
                      "it with a good copy or re-export it")


def refuse_short_png(path: str | os.PathLike) -> None:
    """Raise an :class:`ImageError` naming ``path`` if it is a PNG whose sound compressed data ends before
    its last row: Pillow decodes an 8-bit one with those rows black, without a word. Other files pass.

    :func:`probe_image` finds this too, and 16-bit PNGs are checked at every read. :func:`read_image`
    does not check 8-bit ones, since inflating the data again doubles the time to read a dataset's
    256x256 PNG: call this for files read once without a probe (``unpaired.deblur`` and ``evaluate`` do).
    """
    path = Path(path)
    if not path.is_file():  # (opening a FIFO would wait for a writer; read_image names what it is)
        return
    with open(path, "rb") as fh:
        if fh.read(8) != _PNG_SIGNATURE:
            return
        fh.seek(0)
        data = memoryview(fh.read())
    if _png_fault(list(_png_chunks(data))) == "short":
        raise _short_png(path)


def _pillow_takes_chunks(path: Path, chunks: list) -> bool:
    """Whether Pillow, which decodes the PNGs that :func:`_read_png16` does not, takes the ancillary chunks of this
    one (sound CRCs, laid out as :func:`_png_laid_out` checks). It refuses one whose body is cut short or will not
    inflate (a pHYs of 2 bytes, an iCCP or zTXt of an unknown compression method), so such a PNG passed the probe and
    stopped a ``--sharp`` run at its first pair. Those before the image data it parses on opening; those after, only
    when it decodes: a PNG with any is left to the decode (:func:`_raw`), which says why it fails, as a read would."""
    last = max(k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    if len(chunks) > last + 2:  # (a chunk between the image data and IEND, the last)
        return False
    from PIL import Image
    try:
        with _pillow_unlimited(), Image.open(path, formats=["PNG"]):
            return True
    except Exception:
        return False


_PNG_ORIENTING = (b"Raw profile type exif\0", b"XML:com.adobe.xmp\0")  # text chunks Pillow reads EXIF from


def _png_text_orients(chunks: list) -> bool:
    """Whether a PNG's ``(kind, body)`` chunks hold a text chunk Pillow takes an EXIF orientation from."""
    return any(kind in (b"tEXt", b"zTXt", b"iTXt") and bytes(body[:22]).startswith(_PNG_ORIENTING)
               for kind, body in chunks)


_PNG_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")  # the critical chunks (upper-case first letter) PNG defines


def _png_laid_out(chunks: list) -> bool:
    """Whether a PNG's chunks (:func:`_png_chunks`) are laid out as libpng requires: one IHDR of 13 bytes first,
    IEND last, its IDATs one after another, chunk types of letters, the third upper-case, and no critical
    chunk it does not know. (Each of these is an error to libpng: the file is refused, or for IDATs split
    by another chunk the process killed, by torchvision's decoder of 16-bit PNGs.)"""
    kinds = [kind for kind, _ in chunks]
    idats = [k for k, kind in enumerate(kinds) if kind == b"IDAT"]
    return (kinds[:1] == [b"IHDR"] and len(chunks[0][1]) == 13 and kinds.count(b"IHDR") == 1
            and kinds[-1:] == [b"IEND"] and bool(idats) and idats[-1] - idats[0] + 1 == len(idats)
            and all(kind.isalpha() and kind[2:3].isupper() for kind in kinds)  # (a type's third letter is upper-case)
            and all(kind in _PNG_CRITICAL or not kind[:1].isupper() for kind in kinds))


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> bit depths
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_data_fault(chunks: list) -> str | None:
    """What is wrong with the compressed image data of a PNG's chunks (:func:`_png_chunks`, laid out as
    :func:`_png_laid_out` checks, the header first): None when it inflates (zlib's own Adler-32 check
    included) to exactly the bytes its header implies, each row starting with a valid filter type (0-4);
    ``"short"`` for a sound stream that ends before the last row (which Pillow reads, those rows black);
    ``"damaged"`` for anything else.

    The chunks' CRCs only prove that the file was copied faithfully, not that the encoder wrote a
    sound stream: this finds what a decoder would refuse, in about half the time of decoding (no
    unfiltering, no conversion). Inflated 1 MiB at a time, so a large photo needs no large buffer.
    """
    idats = [body for kind, body in chunks if kind == b"IDAT"]
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", chunks[0][1])
    # (the header's other fields as PNG defines them: libpng refuses any other value, "Invalid IHDR data")
    if (depth not in _PNG_DEPTHS.get(colour, ()) or interlace not in (0, 1) or compression or filtering
            or not 0 < width < 2**31 or not 0 < height < 2**31):
        return "damaged"
    bits = depth * _PNG_CHANNELS[colour]
    if interlace == 0:
        passes = [(width, height)]
    else:
        passes = [(max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy))
                  for x0, y0, dx, dy in _ADAM7]
    rows = [(1 + (w * bits + 7) // 8, h) for w, h in passes if w and h]  # (bytes per row with its filter byte, rows)
    expected = sum(stride * h for stride, h in rows)
    stream, done = zlib.decompressobj(), 0
    stride = rows[0][0] if len(rows) == 1 else 0  # not interlaced: every stride-th byte is a filter type

    def take(piece: bytes) -> bool:
        nonlocal done
        if stride and piece and (np.frombuffer(piece, np.uint8)[(-done) % stride::stride] > 4).any():
            return False
        done += len(piece)
        return done <= expected

    try:
        for body in idats:
            tail = body
            while len(tail):
                if not take(stream.decompress(tail, 1 << 20)):
                    return "damaged"
                tail = stream.unconsumed_tail
        if not take(stream.flush()):
            return "damaged"
    except zlib.error:
        return "damaged"
    if not stream.eof or stream.unused_data:  # (data after the stream's end: an error too)
        return "damaged"
    return None if done == expected else "short"


def _png_fault(chunks: list) -> str | None:
    """:func:`_png_data_fault` of a PNG's chunks, or ``"damaged"`` when they are not laid out as libpng requires
    (:func:`_png_laid_out`)."""
    return _png_data_fault(chunks) if _png_laid_out(chunks) else "damaged"


def _check_pixels(path: Path, height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise ImageError(f"{path}: {width}x{height} is {height * width / 1e6:.0f} Mpx, more than the "
                         f"{MAX_PIXELS / 1e6:.0f} Mpx this package reads; downscale it or cut it into parts")


def _decode(path: Path) -> np.ndarray:
    """The first frame as imageio decodes it, upright and in RGB as a photo viewer shows it.

    Pillow (imageio's plugin for the common formats) leaves the camera's EXIF orientation to the
    viewer, so a phone's portrait photo would come in on its side, and returns CMYK JPEGs as four
    channels, which would pass for RGBA. Both are handled here. TIFFs (imageio's tifffile plugin)
    are turned upright by their Orientation tag and size-checked from their header
    (:func:`_tiff_header`); other plugins read as they are.
    """
    tiff = _tiff_header(path)
    if tiff is not None and tiff[4] is not None:
        raise ImageError(f"{path}: a damaged TIFF ({tiff[4]}); replace it with a good copy or re-export it")
    # imageio picks its plugin by the suffix: a TIFF under another name (a 16-bit scan saved as
    # "scan.png") would go to Pillow, which reads 16-bit colour as 8 bits
    extension = ".tif" if tiff is not None else None
    # ... but tifffile returns samples as stored, which only gray (black is 0) and RGB are: a palette TIFF came in
    # as its indices, a CMYK one (taken for RGBA, K for alpha) white, YCbCr as if RGB, a white-is-0 gray as its
    # negative. Pillow converts those (to 8 bits).
    pillow = tiff is not None and tiff[3] not in (None, *_TIFF_AS_STORED)
    if pillow:
        extension = None
    with contextlib.ExitStack() as stack:
        source = path
        if not _utf8_name(path):
            # When Pillow cannot read a file, imageio tries its other plugins, OpenCV among them, which crashes the
            # process (a segmentation fault, nothing said) on a name that is not UTF-8: a stray b"\xe9t\xe9.txt"
            # killed a whole --sharp scan. An open file takes the same plugins, and OpenCV a copy of it.
            source = stack.enter_context(open(path, "rb"))
            extension = extension or (None if pillow else path.suffix.lower() or None)
        with _pillow_unlimited():  # (Pillow checks the size here, when it parses the header)
            file = iio.imopen(source, "r", extension=extension, **({"plugin": "pillow"} if pillow else {}))
        return _read_decoded(path, file, tiff)


def _utf8_name(path: Path) -> bool:
    """Whether ``path`` is text a C library can take: a name that is not UTF-8 comes from ``os.listdir`` with
    lone surrogates in it (Python's "surrogateescape"), which cannot be encoded back."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_decoded(path: Path, file, tiff) -> np.ndarray:
    """:func:`_decode`'s reading of the first frame from ``file``, an open imageio plugin."""
    from imageio.plugins.pillow import PillowPlugin
    with file:
        if not isinstance(file, PillowPlugin):
            # imageio reads a TIFF through its own tifffile, which neither checks the size before
            # decoding nor applies the Orientation tag (a baseline TIFF tag, which viewers honour)
            if tiff is not None and tiff[0] is not None:
                _check_pixels(path, tiff[0], tiff[1])
            raw = file.read(index=0)
            if tiff is not None and tiff[5] == 2 and raw.ndim == 3:
                # (channels stored as planes come as (C, H, W): taken for (H, W, C), an RGB scan came in as an
                # image 3 px tall with its width for channels)
                raw = raw.transpose(1, 2, 0)
            if tiff is not None and raw.ndim in (2, 3):
                raw = _UPRIGHT.get(tiff[2], _UPRIGHT[1])(raw if raw.ndim == 3 else raw[:, :, None])
            return raw
        _check_pixels(path, *file.properties(index=0).shape[:2])
        meta = file.metadata(index=0, exclude_applied=False)
        mode = meta.get("mode")
        if mode == "LAB":  # (Pillow reads CIELAB samples but has no conversion of them to RGB)
            raise ImageError(f"{path}: a CIELAB image, which this package cannot convert to RGB; re-export it as RGB")
        if mode in ("RGB", "L") and (fast := _decode_jpeg(path, meta.get("Orientation", 1))) is not None:
            return fast
        # A transparent colour (PNG's tRNS chunk, GIF's transparent index) is alpha too: read with it,
        # and read_image composites it over white, as it does an alpha channel.
        keyed = mode in ("1", "L", "P", "RGB") and "transparency" in meta
        wanted = "RGB" if mode in ("CMYK", "YCbCr") else ("LA" if mode in ("1", "L") else "RGBA") if keyed else None
        if keyed and mode == "L" and (depth := _png_gray_depth(path)) in (2, 4):
            # Pillow scales 2- and 4-bit gray samples to 8 bits (1 -> 85 or 17) but not the tRNS gray
            # value that marks the transparent ones, so its "LA" left them opaque: compare here.
            gray = file.read(index=0, rotate=True, mode="L")
            key = meta["transparency"] * 255 // ((1 << depth) - 1)
            return np.dstack([gray, np.where(gray == key, 0, 255).astype(gray.dtype)])
        return file.read(index=0, rotate=True, mode=wanted)


def _png_gray_depth(path: Path) -> int | None:
    """The bit depth of a gray PNG (colour type 0), from its header; None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[24] if head[:8] == _PNG_SIGNATURE and len(head) == 26 and head[25] == 0 else None


_TIFF_SHORT, _TIFF_LONG, _TIFF_LONG8 = 3, 4, 16


_TIFF_AS_STORED = (1, 2)  # PhotometricInterpretation: gray with black 0, RGB (tifffile's samples are the image)


def _tiff_header(path: Path) -> tuple[int | None, int | None, int, int | None, str | None, int] | None:
    """``(height, width, orientation, photometric, damage, planar)`` from the first image directory of a TIFF
    (classic or BigTIFF), without decoding it: ``None`` for a file that is not a TIFF or whose directory cannot
    be parsed, a size or photometric interpretation of ``None`` where the tags are missing, orientation
    1 when it has none; ``damage``: None, or what is wrong with the directories (:func:`_tiff_chain_sound`)
    or with where they put the first image's data (:func:`_tiff_data_inside`); ``planar``: the
    PlanarConfiguration, 2 when each channel is stored as a plane of its own, else 1."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None:
                return None
            (magic,) = struct.unpack_from(order + "H", head, 2)
            if magic == 42:  # classic: 32-bit offsets, 12-byte entries whose value fits in 4 bytes
                (ifd,) = struct.unpack_from(order + "I", head, 4)
                count_fmt, entry, value_fmt = "H", "HHI4s", {_TIFF_SHORT: "H", _TIFF_LONG: "I"}
            elif magic == 43:  # BigTIFF: 64-bit offsets, 20-byte entries whose value fits in 8 bytes
                (ifd,) = struct.unpack_from(order + "Q", head, 8)
                count_fmt, entry, value_fmt = "Q", "HHQ8s", {_TIFF_SHORT: "H", _TIFF_LONG: "I", _TIFF_LONG8: "Q"}
            else:
                return None
            fh.seek(ifd)
            size = struct.calcsize(order + count_fmt)
            (n,) = struct.unpack(order + count_fmt, fh.read(size))
            step = struct.calcsize(order + entry)
            body = fh.read(step * min(n, 4096))
            tags, where = {}, {}
            for k in range(len(body) // step):
                tag, kind, count, value = struct.unpack_from(order + entry, body, k * step)
                if tag in (256, 257, 262, 274, 284) and count >= 1 and kind in value_fmt:
                    tags[tag] = struct.unpack_from(order + value_fmt[kind], value)[0]
                if tag in (*_TIFF_DATA_TAGS, *_TIFF_DATA_TAGS.values()):
                    where[tag] = kind, count, value
            damage = None
            if not _tiff_chain_sound(fh, order, ifd, count_fmt, entry):
                damage = "its image directories point outside the file, or back to one another"
            elif not _tiff_data_inside(fh, order, where, value_fmt, big=magic == 43):
                damage = "its image data lies past the end of the file: cut short, or an offset is damaged"
    except (OSError, struct.error):
        return None
    return tags.get(257), tags.get(256), tags.get(274, 1), tags.get(262), damage, tags.get(284, 1)


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


# StripOffsets and StripByteCounts, TileOffsets and TileByteCounts: where the first image's data lies.
_TIFF_DATA_TAGS = {273: 279, 324: 325}


def _tiff_data_inside(fh, order: str, where: dict, value_fmt: dict, big: bool) -> bool:
    """Whether every strip or tile of a TIFF's first image lies inside the file. ``where`` maps the tags of
    :data:`_TIFF_DATA_TAGS` found to their entries' ``(type, count, value field)``, ``value_fmt`` the types
    allowed to their struct formats; ``big``: a BigTIFF (8-byte offsets). The directories are sound.

    A copy cut short (or one damaged offset) decoded to 0 frames in imageio's own tifffile, an
    ``IndexError`` that ended a --sharp scan, and to "failed to read 3600 bytes, got 0" in the tifffile
    release installed beside it: one message for both, from the file itself.
    """
    end = os.fstat(fh.fileno()).st_size
    inline, offset_fmt = (8, "Q") if big else (4, "I")
    for offsets_tag, counts_tag in _TIFF_DATA_TAGS.items():
        if offsets_tag not in where or counts_tag not in where:  # (a writer may leave the counts out)
            continue
        arrays = []
        for kind, count, value in (where[offsets_tag], where[counts_tag]):
            if kind not in value_fmt:
                return False
            item = np.dtype(order + value_fmt[kind])
            if count * item.itemsize <= inline:
                data = value[:count * item.itemsize]
            else:
                fh.seek(struct.unpack_from(order + offset_fmt, value)[0])
                data = fh.read(count * item.itemsize)  # (inside the file: the chain check saw to that)
            arrays.append(np.frombuffer(data, dtype=item).astype(np.uint64))
        offsets, counts = arrays
        if len(offsets) != len(counts) or ((offsets > end) | (counts > end - np.minimum(offsets, end))).any():
            return False
    return True


def _tiff_chain_sound(fh, order: str, ifd: int, count_fmt: str, entry: str) -> bool:
    """Whether a TIFF's chain of image directories, from ``ifd``, stays inside the file: each directory's
    entries and each entry's data within it, and no directory reached twice.

    One damaged offset (say the next directory's, pointing into the pixels) made imageio's tifffile parse
    pixels as tags of any size: a 700 KB photo took minutes and GBs of memory to probe, and a --sharp scan
    seemed to hang, then ran out of memory.
    """
    end = os.fstat(fh.fileno()).st_size
    offset_fmt = order + ("Q" if count_fmt == "Q" else "I")
    count_size, step, offset_size = (struct.calcsize(order + count_fmt), struct.calcsize(order + entry),
                                      struct.calcsize(offset_fmt))
    inline, seen = offset_size, set()
    while ifd:
        if ifd in seen or ifd + count_size > end:
            return False
        seen.add(ifd)
        fh.seek(ifd)
        (n,) = struct.unpack(order + count_fmt, fh.read(count_size))
        if ifd + count_size + n * step + offset_size > end:
            return False
        body = fh.read(n * step)
        for k in range(n):
            _, kind, count, value = struct.unpack_from(order + entry, body, k * step)
            size = count * _TIFF_TYPE_SIZES.get(kind, 0)  # (a type it does not know: tifffile skips the entry)
            if size > inline and struct.unpack_from(offset_fmt, value)[0] + size > end:
                return False
        (ifd,) = struct.unpack(offset_fmt, fh.read(offset_size))
    return True


# imageio's PNG plugin (Pillow) reads 16-bit colour and gray + alpha PNGs as 8-bit, and leaves out
# the transparent colour (tRNS chunk) of 16-bit gray: 16-bit PNGs are read through torchvision's
# libpng decoder, the transparent colour applied here. PNGs are written by png_bytes below: Pillow
# cannot write 16-bit colour, and its encoder tries every row filter on every row, which took 6.6 ms
# per 256x256 RGB image at zlib level 1 against 3.5 ms here, for files 1% larger (a dataset writes
# two per pair).

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png16(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(26)
    # Signature, IHDR length and type, width, height, then bit depth (byte 24) and colour type (byte 25).
    return head[:8] == _PNG_SIGNATURE and len(head) == 26 and head[24] == 16 and head[25] in (0, 2, 4, 6)


def _decode_jpeg(path: Path, orientation: int = 1) -> np.ndarray | None:
    """An 8-bit RGB or gray JPEG decoded by torchvision's libjpeg-turbo, turned upright by its EXIF
    ``orientation`` (as Pillow finds it), ``(H, W[, 3])`` uint8; None for any other file, or when torchvision cannot (too old, or a warning or error:
    Pillow then reads it, and words any failure). The same samples as Pillow's, in half the time
    (a 12 Mpx photo: 56 against 106 ms on one core), which is most of a pair's time when
    ``blursynth dataset`` crops photos."""
    with open(path, "rb") as fh:
        if fh.read(3) != b"\xff\xd8\xff":
            return None
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        with warnings.catch_warnings():  # (libjpeg's "premature end of data" is a warning: Pillow's call)
            warnings.simplefilter("error")
            # torchvision 0.29 marks its codecs deprecated (they still work; without them, Pillow reads)
            warnings.simplefilter("ignore", DeprecationWarning)
            # (not its apply_exif_orientation, which looks in the first APP1 segment only: a photo with its XMP
            # segment before the EXIF one came in on its side, unlike its probed size, a traceback mid-run)
            img = decode_jpeg(torch.from_numpy(np.fromfile(path, dtype=np.uint8)), mode=ImageReadMode.UNCHANGED)
    except Exception:  # (a warning, or a file libjpeg-turbo cannot decode)
        return None
    if img.dtype != torch.uint8 or img.shape[0] not in (1, 3):
        return None
    img = _UPRIGHT.get(orientation, _UPRIGHT[1])(img.numpy().transpose(1, 2, 0))
    return img[:, :, 0] if img.shape[2] == 1 else img


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG, upright (its EXIF orientation applied, as :func:`_decode` does), with an alpha
    channel added where a transparent colour is given (as Pillow does for 8-bit files)."""
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_png  # only here: torchvision is slow to import
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8).copy()
    width, height = struct.unpack(">II", data[16:24].tobytes())  # IHDR
    _check_pixels(path, height, width)
    found = list(_png_chunks(memoryview(data)))
    # torchvision's decoder kills the process (a segmentation fault) on a libpng error past the header: a byte
    # damaged in the image data ("bad adaptive filter value", "incorrect data check") or IDATs split by another
    # chunk took a --sharp scan down without a word. So the chunks and the compressed rows are checked first, as
    # probe_image checks them.
    fault = _png_fault(found)
    if fault == "short":
        raise _short_png(path)
    if fault is not None:
        raise ImageError(f"{path}: damaged (a chunk fails its CRC, is cut short or out of place, or the compressed "
                         "image data does not inflate to the rows its header gives); replace it with a good copy or "
                         "re-export it")
    # torchvision 0.29 marks its codecs deprecated (they still work): read_image's filter covers it
    img = decode_png(torch.from_numpy(data), ImageReadMode.UNCHANGED).numpy().transpose(1, 2, 0)  # uint16
    chunks = dict(found)
    key = chunks.get(b"tRNS")
    # (gray or RGB only, one 16-bit sample per channel: the PNG standard forbids it beside an alpha
    # channel, and libpng ignores it there; added, it made gray + alpha read as RGB)
    if key is not None and img.shape[2] in (1, 3) and len(key) == 2 * img.shape[2]:
        alpha = np.where((img == np.frombuffer(key, ">u2")).all(axis=2, keepdims=True), 0, 65535)
        img = np.concatenate([img, alpha.astype(np.uint16)], axis=2)
    exif = chunks.get(b"eXIf")
    if exif is not None:
        tags = Image.Exif()
        tags.load(bytes(exif))
        orientation = tags.get(0x0112, 1)
    elif _png_text_orients(found):
        # EXIF as ImageMagick keeps it, or XMP's tiff:Orientation: Pillow turns an 8-bit such PNG upright, and this
        # one came in on its side (Pillow finds it, decoding the file once more: only for such files)
        with _pillow_unlimited(), Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
    else:
        return img
    return _UPRIGHT.get(orientation, _UPRIGHT[1])(img)


# (H, W, C) array as stored -> upright, for each EXIF orientation (as Pillow's exif_transpose)
_UPRIGHT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
            7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}


_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray + alpha, RGB, RGBA


def _check_encodable(data: np.ndarray, fmt: str, channels_held, said: str) -> int:
    """The channel count of ``data``, after refusing what the ``fmt`` encoder cannot write: a dtype
    other than uint8/uint16, a shape other than ``(H, W)`` or ``(H, W, C)`` with ``C`` in
    ``channels_held`` (``said``: those counts as the message writes them), or no pixel (an image of
    width 0 was written, which no decoder reads)."""
    channels = data.shape[2] if data.ndim == 3 else 1
    # (newbyteorder("="): a big-endian uint16 array, e.g. from np.fromfile(..., ">u2"), is uint16 too,
    # and was refused as "needs uint16, got >u2"; the samples are written big-endian either way)
    if data.dtype.newbyteorder("=") not in (np.uint8, np.uint16) or data.ndim not in (2, 3) \
            or channels not in channels_held:
        raise ValueError(f"{fmt} needs uint8 or uint16 (H, W) or (H, W, {said}) data, got {data.dtype} {data.shape}")
    if not data.shape[0] or not data.shape[1]:
        raise ValueError(f"{fmt} needs at least one row and one column, got an image of shape {data.shape}")
    return channels


def png_bytes(data: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file bytes of a uint8 or uint16 ``(H, W)`` or ``(H, W, 1|2|3|4)`` array.

    Every row uses PNG's "Up" filter (each byte minus the byte above, modulo 256: one vectorised
    pass, which compresses photos and noisy renders about as well as choosing a filter per row),
    then zlib at ``compress_level``.
    """
    # (zlib.error said only "Bad compression level")
    if isinstance(compress_level, bool) or compress_level not in range(-1, 10):
        raise ValueError(f"compress_level {compress_level!r}: must be an integer from 0 to 9 (-1: zlib's default)")
    channels = _check_encodable(data, "PNG", _PNG_COLOUR_TYPE, "1-4")
    h, w = data.shape[:2]
    rows = np.ascontiguousarray(data.astype(">u2") if data.itemsize == 2 else data).view(np.uint8).reshape(h, -1)
    up = rows.copy()
    up[1:] -= rows[:-1]
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()  # filter byte 2 (Up) per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", w, h, 8 * data.itemsize, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, compress_level))
            + chunk(b"IEND", b""))


# Pillow reads 16-bit PPMs as 8-bit RGB and 16-bit PGMs as 32-bit integers (which read_image, taking
# them for the full int32 range, turned into a flat gray), and cannot write 16-bit RGB: binary netpbm
# files with more than 8 bits are read and all PGM/PPMs written here. The format is a text header
# (magic, width, height, maxval, with # comments) then the samples, 16-bit ones big-endian.

# (P2/P3, the plain ASCII forms, too: Pillow reads a plain PGM over 8 bits as 32-bit integers as well)
_PNM_CHANNELS = {b"P5": 1, b"P6": 3, b"P2": 1, b"P3": 3}
_PNM_HEADER = re.compile(rb"(P[2356])" + rb"(?:\s|#[^\r\n]*[\r\n])+(\d+)" * 3 + rb"\s")


def _pnm16_header(path: Path) -> tuple[int, int, int, int, int, bool] | None:
    """``(channels, width, height, maxval, offset of the samples, plain)`` of a binary or plain
    (ASCII, ``plain``) PGM/PPM with more than 8 bits per sample, else None (Pillow reads the rest)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        match = _PNM_HEADER.match(head)
        # A header longer than that (a long # comment) is read on until it ends: left to Pillow, a
        # 16-bit PGM came in flat gray. (No prefix of a header matches: the maxval needs a space after.)
        while match is None and head[:2] in _PNM_CHANNELS and (more := fh.read(len(head))):
            head += more
            match = _PNM_HEADER.match(head)
    if match is None or not 255 < int(match[4]) < 65536:
        return None
    return _PNM_CHANNELS[match[1]], int(match[2]), int(match[3]), int(match[4]), match.end(), match[1] in (b"P2", b"P3")


def _read_pnm16(path: Path, header: tuple[int, int, int, int, int, bool]) -> np.ndarray:
    """The ``(H, W, C)`` uint16 samples of a PGM/PPM with :func:`_pnm16_header`, scaled from
    ``[0, maxval]`` to ``[0, 65535]``."""
    channels, width, height, maxval, offset, plain = header
    _check_pixels(path, height, width)
    count = width * height * channels
    if plain:  # decimal numbers separated by white space (a non-number is a ValueError, named by _decoding)
        with open(path, "rb") as fh:
            fh.seek(offset)
            samples = np.clip(np.array(fh.read().split()[:count], dtype=np.int64), 0, maxval)
    else:
        samples = np.fromfile(path, ">u2", count=count, offset=offset)
    if samples.size < count:
        raise ImageError(f"{path}: cut short ({samples.size} of {count} samples); re-export it")
    samples = samples.reshape(height, width, channels)
    if maxval != 65535:
        return np.rint(np.minimum(samples, maxval) * (65535 / maxval)).astype(np.uint16)
    return samples.astype(np.uint16)


def _pnm_channels(path: Path, data: np.ndarray) -> np.ndarray:
    """``data`` as the suffix's format holds it: a PPM is RGB (gray is repeated into its three
    channels), a PGM gray (RGB refused: which weighting of the channels is the user's choice). A .pgm
    name used to get PPM data, which readers that go by the name take for a broken file."""
    channels = data.shape[2] if data.ndim == 3 else 1
    if not data.size:
        return data  # (pnm_bytes refuses it, saying why)
    if path.suffix.lower() == ".ppm" and channels == 1:
        return np.repeat(data.reshape(*data.shape[:2], 1), 3, axis=2)
    if path.suffix.lower() == ".pgm" and channels != 1:
        raise ValueError(f"{path}: a .pgm holds one gray channel, not the {channels} of this image; "
                         "name it .ppm or .png, or convert it to gray first")
    return data


def pnm_bytes(data: np.ndarray) -> bytes:
    """Binary PGM (``(H, W)`` or ``(H, W, 1)``) or PPM (``(H, W, 3)``) file bytes of uint8 or uint16
    data: maxval 255 or 65535, 16-bit samples big-endian."""
    channels = _check_encodable(data, "PGM/PPM", (1, 3), "1|3")
    height, width = data.shape[:2]
    deep = data.itemsize == 2
    header = b"P%d\n%d %d\n%d\n" % (5 if channels == 1 else 6, width, height, 65535 if deep else 255)
    return header + np.ascontiguousarray(data, dtype=">u2" if deep else np.uint8).tobytes()


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON with sorted keys (:func:`atomic_path`: an existing file is
    replaced). As ``json.dumps``: a float NaN or inf is written as ``NaN``/``Infinity`` (not strict JSON),
    a NumPy scalar is a TypeError (except ``np.float64``, a Python float)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))


def json_text(obj) -> str:
    """The text :func:`write_json` writes for ``obj`` (to tell whether a file already holds it)."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


class NpzWriter:
    """An ``.npz`` file (read with ``numpy.load``) written array by array, each array appended in
    pieces along its first axis, so that arrays larger than memory can be written: ``blursynth
    generate`` with millions of kernels keeps one chunk in memory, not the whole output.

    Each array goes to its own ``.npy`` file in a temporary folder beside ``path``; :meth:`close`
    stores them uncompressed in a zip (as ``numpy.savez`` does) with fixed timestamps, so the same
    arrays always give the same bytes, and only then puts ``path`` in place. The disk holds the data
    twice meanwhile. Used as a context manager, an exception discards everything.

        with NpzWriter("k.npz") as npz:
            npz.begin("kernels", (n, 31, 31), np.float32)
            for chunk in chunks:
                npz.append("kernels", chunk)
            npz.add("seed", np.int64(0))
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parts = Path(tempfile.mkdtemp(prefix=f".{self.path.stem}.", suffix=".parts", dir=self.path.parent))
        self.arrays: dict[str, dict] = {}

    def begin(self, name: str, shape: tuple[int, ...], dtype) -> None:
        """Start array ``name`` of the final ``shape``; its rows come from :meth:`append`."""
        if name in self.arrays:
            raise ValueError(f"{self.path}: array {name!r} written twice")
        dtype = np.dtype(dtype)
        fh = open(self.parts / f"{name}.npy", "wb")
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": tuple(shape)})
        self.arrays[name] = {"fh": fh, "shape": tuple(shape), "dtype": dtype, "rows": 0}

    def append(self, name: str, rows: np.ndarray) -> None:
        """Add the next ``rows`` (the leading axis continues the array) to array ``name``."""
        a = self.arrays[name]
        rows = np.asarray(rows)
        if rows.dtype != a["dtype"] or rows.shape[1:] != a["shape"][1:] or a["rows"] + len(rows) > a["shape"][0]:
            raise ValueError(f"{self.path}: rows {rows.dtype}{list(rows.shape)} do not continue {name!r} "
                             f"({a['dtype']}{list(a['shape'])}, {a['rows']} rows written)")
        a["fh"].write(np.ascontiguousarray(rows).data)
        a["rows"] += len(rows)

    def add(self, name: str, array) -> None:
        """Write a whole (small) array, e.g. a scalar."""
        array = np.asarray(array)
        self.begin(name, array.shape, array.dtype)
        a = self.arrays[name]
        a["fh"].write(np.ascontiguousarray(array).data)
        a["rows"] = array.shape[0] if array.ndim else 0

    def close(self) -> None:
        """Check every array is complete, then write the ``.npz`` in place of ``path`` (once; later calls
        do nothing)."""
        if not self.parts.exists():  # closed (or discarded) already
            return
        try:
            for a in self.arrays.values():
                a["fh"].close()
            for name, a in self.arrays.items():
                if a["shape"] and a["rows"] != a["shape"][0]:
                    raise ValueError(f"{self.path}: array {name!r} has {a['rows']} of its {a['shape'][0]} rows")
            with atomic_path(self.path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name in self.arrays:
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    with open(self.parts / f"{name}.npy", "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staged arrays (and write nothing)."""
        for a in self.arrays.values():
            a["fh"].close()
        shutil.rmtree(self.parts, ignore_errors=True)

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.discard()
        return False


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file by name, like ``numpy.load``, except that every array stored
    uncompressed (as :class:`NpzWriter` and ``numpy.savez`` store them) is memory-mapped read-only
    instead of read, so a file larger than memory can be summarised a slice at a time. Every array's
    CRC-32 is checked first (one pass over the file, a block at a time), so a damaged file is an
    error (``zipfile.BadZipFile``) rather than wrong numbers. Other arrays are read whole; arrays of
    Python objects are refused, as ``numpy.load`` does by default."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    arrays = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type == zipfile.ZIP_STORED:
                # The stored bytes follow the member's local header: 30 bytes, its name, its extra field.
                fh.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", fh.read(4))
                # The two copies of the member's name, as zipfile compares them on opening one (no CRC covers
                # the zip directory): a damaged byte in the directory's copy renamed an array without a word.
                if fh.read(name_len) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
                    raise zipfile.BadZipFile(f"array {name!r} is damaged (its name differs in the zip's directory "
                                             "and in its own header)")
                start = info.header_offset + 30 + name_len + extra_len
                fh.seek(start)
                crc, left = 0, info.file_size
                while left and (block := fh.read(min(left, 1 << 22))):
                    crc, left = zlib.crc32(block, crc), left - len(block)
                if left or crc != info.CRC:
                    raise zipfile.BadZipFile(f"array {name!r} is damaged or cut short (its CRC-32 does not match)")
                fh.seek(start)
                header = headers.get(np.lib.format.read_magic(fh))
                if header is not None:
                    shape, fortran, dtype = header(fh)
                    if math.prod(shape) > 0 and not dtype.hasobject:  # (mmap cannot map 0 bytes)
                        arrays[name] = np.memmap(fh, dtype, "r", offset=fh.tell(), shape=shape,
                                                 order="F" if fortran else "C")
                        continue
            with zf.open(info) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays
