"""Test-wide settings.

CI (the CI environment variable is set) runs hypothesis derandomised, so a submission's result does not
depend on which examples a lucky or unlucky run drew; local runs keep exploring new examples.
"""

import contextlib
import os
import re

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
