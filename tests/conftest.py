"""Test-wide settings.

CI (the CI environment variable is set) runs hypothesis derandomised, so a submission's result does not
depend on which examples a lucky or unlucky run drew; local runs keep exploring new examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
