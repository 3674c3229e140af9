"""The README's Python examples run as printed: they are the user's first contact with the API."""

import pathlib
import re

import imageio.v3 as iio
import numpy as np
import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _photos(folder: pathlib.Path, count: int) -> None:
    """The stand-in for the user's ``photos/``: random 8-bit RGB images large enough for every recipe."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        iio.imwrite(folder / f"{i}.png", rng.integers(0, 256, (420, 460, 3), dtype=np.uint8))


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 8  # the pattern still finds them (an empty list would pass the test below)


# The DataLoader example asks for 4 workers, more than a 2-core CI machine has (it is never iterated).
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The folders the examples name stand for the user's data.
    if '"photos/"' in code:
        _photos(tmp_path / "photos", 3)
    if '"pairs/"' in code:
        _photos(tmp_path / "pairs" / "lq", 2)
        _photos(tmp_path / "pairs" / "gt", 2)
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"')  # the rest of the call still runs
    exec(compile(code, f"{README.name} example", "exec"), {"__name__": "readme_example"})


def test_the_oldest_releases_tested_are_pyprojects_bounds_and_the_readmes():
    # .ci/oldest installs .ci/oldest.txt's pins: a bound raised or lowered without them (or the
    # README's list) would claim releases nobody ran the tests on
    import tomllib
    root = README.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    bounds = dict(re.fullmatch(r"([a-z]+)>=([0-9.]+)", spec).groups() for spec in wanted)
    lines = (root / ".ci" / "oldest.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert pins == bounds
    listed = re.search(r"the oldest releases the package takes.*?\n\n", README.read_text(encoding="utf-8"), re.S)
    assert listed and set(re.findall(r"([a-z]+) ([0-9]+\.[0-9.]+)", listed.group(0).replace("\n", " "))) \
        == set(pins.items())
    # the same for the bench extra (its bounds, 0.2 and 1.4, were never run and too low for the bench)
    bench = dict(re.fullmatch(r"([a-z]+)>=([0-9.]+)", spec).groups()
                 for spec in project["optional-dependencies"]["bench"])
    said = re.search(r"run with the oldest releases that extra takes,(.*?)\(checked", README.read_text(encoding="utf-8"), re.S)
    assert said and dict(re.findall(r"([a-z]+) ([0-9]+\.[0-9.]+)", said.group(1))) == bench
