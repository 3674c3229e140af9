"""Test-wide settings.

CI (the CI environment variable is set) runs hypothesis derandomised, so a submission's result does not
depend on which examples a lucky or unlucky run drew; local runs keep exploring new examples.
"""

import contextlib
import os
import re

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Under pytest-xdist every worker is a process of its own, and torch's default of one thread per core
# in each oversubscribed the cores and made some training tests 10x slower
# (-n 2 on 2 cores: 9 min 15 s against 1 min 51 s). One thread per worker, and in the commands tests start.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
