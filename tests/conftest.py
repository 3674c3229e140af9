"""Test-wide settings.

CI (the CI environment variable is set) runs hypothesis derandomised, so a submission's result does not
depend on which examples a lucky or unlucky run drew; local runs keep exploring new examples.
"""

import contextlib
import os
import re
import shutil
import struct
import tempfile
import zlib

import pytest
import torch
from hypothesis import settings

from blursynth.io import png_bytes

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Under pytest-xdist every worker is a process of its own, and torch's default of one thread per core
# in each oversubscribed the cores and made some training tests 10x slower
# (-n 2 on 2 cores: 9 min 15 s against 1 min 51 s). One thread per worker, and in the commands tests start.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_removed(tmp_path_factory):
    """Temporary files of the tests and of the commands they start go into one folder, removed at the
    end: torchrun leaves a ``torchelastic_*`` folder at every launch, and a process the tests kill its
    ``pymp-*`` one (hundreds of each had gathered in /tmp). A short path, beside the usual ones, as
    multiprocessing makes sockets there (their paths may not exceed 104-108 bytes)."""
    tmp_path_factory.getbasetemp()  # (pytest's own folders stay where pytest keeps them, for a look after a failure)
    folder = tempfile.mkdtemp(prefix="blursynth-tests-")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield
    tempfile.tempdir = None
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def refused(capsys):
    """``with refused(pattern): command(argv)``: the command must stop with exit status 2 and an
    ``error: ...`` line on stderr that ``pattern`` matches (``re.search``, multiline), no traceback."""
    @contextlib.contextmanager
    def check(pattern: str):
        with pytest.raises(SystemExit) as exc:
            yield
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert "Traceback" not in err and re.search(pattern, err, re.MULTILINE), err
    return check


@pytest.fixture
def short_png():
    """``short_png(path, samples)``: write ``samples`` (``H x W [x C]`` uint8 or uint16) as a PNG whose
    compressed data is sound (CRCs and zlib's checksum right) but ends halfway through its rows, as a
    faulty encoder writes one; Pillow reads an 8-bit one with the missing rows black, without a word."""
    def write(path, samples):
        png = png_bytes(samples)
        at = png.index(b"IDAT") - 4  # (png_bytes writes one IDAT)
        (n,) = struct.unpack_from(">I", png, at)
        rows = zlib.decompress(png[at + 8:at + 8 + n])
        half = zlib.compress(rows[:len(rows) // 2])
        idat = struct.pack(">I", len(half)) + b"IDAT" + half + struct.pack(">I", zlib.crc32(b"IDAT" + half))
        path.write_bytes(png[:at] + idat + png[at + 12 + n:])
    return write
