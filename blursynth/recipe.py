"""Dataset recipes: every choice that defines a synthetic blur dataset, loaded from TOML and validated.

A recipe names the trajectory model and its parameters, the camera's focal-length range, the kernel
size and how an oversized path is fitted, uniform or projective (spatially varying) blur, the crop
size and boundary handling, and the sensor model. Named recipes live in the top-level ``datasets/``
folder (``datasets/<name>.toml``); any other TOML file with the same keys works too.

Validation is strict because a silent typo in a recipe produces a wrong dataset hours later: an
unknown key or an out-of-range value raises :class:`RecipeError` naming the file and the key.
The trajectory and sensor sections are passed to :mod:`blursynth.trajectory` and
:mod:`blursynth.sensor` as keyword arguments; their keys are checked against those constructors and
any range error they raise is re-raised naming the recipe key.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

def _recipe_dir(package: Path | None = None, prefix: str | os.PathLike | None = None) -> Path:
    """``datasets/`` beside the package (a checkout or editable install), else ``<prefix>/share`` (pip install).

    Beside the package only when it holds the recipes: installed, the folder beside the package is
    ``site-packages/datasets``, which is Hugging Face's ``datasets`` package wherever that is installed
    (every recipe was then "unknown", the list of known ones empty). ``package`` and ``prefix`` default
    to this package's folder and ``sys.prefix``.
    """
    beside = (package or Path(__file__).resolve().parent).parent / "datasets"
    installed = Path(sys.prefix if prefix is None else prefix) / "share" / "blursynth" / "datasets"
    return beside if (beside / "default.toml").is_file() or not installed.is_dir() else installed


RECIPE_DIR = _recipe_dir()

TRAJECTORY_MODELS = {"camera_shake": "CameraShake", "random_walk_2d": "RandomWalk2D"}
BLUR_MODES = ("uniform", "projective")
BOUNDARIES = ("valid", "reflect", "circular")
KERNEL_FITS = ("error", "scale", "resample")
KERNEL_SIZE_MAX = 255  # largest kernel.size a recipe accepts
CROP_RANGE = (8, 16384)  # sides of the crop a recipe (or --crop) accepts, in pixels
FOCAL_MM_RANGE = (4.0, 2000.0)  # 35 mm-equivalent focal lengths a recipe accepts
FRAME_PX_MAX = 65536  # largest side of camera.frame_px
MIN_DEPTH_M = 0.01  # closest camera.depth_m (and generate --depth): nearer, hand shake carries the camera to the plane

# The top-level keys and the keys of each fixed section (trajectory and sensor are open: their keys
# are checked against the model constructors).
_SECTIONS = {
    "camera": {"focal_mm", "depth_m", "frame_px"},
    "kernel": {"size", "fit"},
    "blur": {"mode", "boundary", "grid"},
}
_TOP = {"name", "description", "crop", "trajectory", "sensor", *_SECTIONS}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Recipe:
    """A validated dataset recipe (all sizes in pixels, lengths in mm / m).

    Attributes:
        name: short name recorded in ``dataset.json``.
        description: free text.
        crop: ``(height, width)`` of every output pair in pixels, each 8-16384.
        trajectory_model: ``"camera_shake"`` (6-DoF, :class:`blursynth.trajectory.CameraShake`) or
            ``"random_walk_2d"`` (image-plane path, :class:`blursynth.trajectory.RandomWalk2D`).
        trajectory_params: keyword arguments of the trajectory model's constructor.
        focal_mm: ``(low, high)`` 35 mm-equivalent focal length range (within 4-2000), drawn log-uniformly per pair;
            the focal length in pixels follows from the source image's full size.
        depth_m: ``(low, high)`` scene-plane depth in metres (at least :data:`MIN_DEPTH_M`), drawn
            log-uniformly (``inf`` = distant scene, where camera translation makes no blur).
        frame_px: ``(height, width)`` of the virtual photograph a procedural scene is a crop of (the
            focal length in pixels, hence the blur size, scales with the frame; photographs from a
            folder use their own size), each 8-65536. The crop's position in it is drawn per pair.
        kernel_size: odd side of the square kernels, 3-255 (:data:`KERNEL_SIZE_MAX`).
        kernel_fit: what to do with a path larger than the kernel (see :func:`blursynth.kernel.rasterize`).
            In projective mode ``"scale"`` (and ``"resample"``, for local paths that still do not fit)
            shrinks the camera motion itself until every stored local path fits, so the image and its
            kernels show the same motion; the factor is recorded as ``fit_scale``.
        blur_mode: ``"uniform"`` (one kernel per pair, FFT blur) or ``"projective"`` (per-time
            homographies, spatially varying).
        boundary: ``"valid"`` (blur a larger sharp crop, keep the interior), ``"reflect"``, ``"circular"``.
        kernel_grid: ``(rows, cols)`` of local kernels stored per pair in projective mode, each 1-15.
        sensor: keyword arguments of :class:`blursynth.sensor.SensorModel` (in TOML, the string
            ``"off"`` stands for None: TOML has no null).
        source: the file the recipe was read from (for messages), or ``"<dict>"``.
        named: False for a recipe file without ``name``, named after the file (which a copy of it renames).
    """

    name: str = "default"
    description: str = ""
    crop: tuple[int, int] = (256, 256)
    trajectory_model: str = "camera_shake"
    trajectory_params: dict = field(default_factory=dict)
    focal_mm: tuple[float, float] = (24.0, 50.0)
    depth_m: tuple[float, float] = (math.inf, math.inf)
    frame_px: tuple[int, int] = (720, 1280)
    kernel_size: int = 31
    kernel_fit: str = "scale"
    blur_mode: str = "uniform"
    boundary: str = "valid"
    kernel_grid: tuple[int, int] = (3, 3)
    sensor: dict = field(default_factory=dict)
    source: str = field(default="<dict>", compare=False)
    named: bool = field(default=True, compare=False)

    @property
    def margin(self) -> int:
        """Extra sharp pixels needed on each side for ``boundary="valid"`` (0 otherwise)."""
        return self.kernel_size // 2 if self.boundary == "valid" else 0

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the sharp crop read from a source image."""
        return self.crop[0] + 2 * self.margin, self.crop[1] + 2 * self.margin

    def to_dict(self) -> dict:
        """The recipe as the nested dict of its TOML form (``inf`` kept as a float), for ``dataset.json``."""
        return {
            "name": self.name,
            "description": self.description,
            "crop": list(self.crop),
            "trajectory": {"model": self.trajectory_model, **copy.deepcopy(self.trajectory_params)},
            "camera": {"focal_mm": list(self.focal_mm), "depth_m": [_json_float(d) for d in self.depth_m],
                       "frame_px": list(self.frame_px)},
            "kernel": {"size": self.kernel_size, "fit": self.kernel_fit},
            "blur": {"mode": self.blur_mode, "boundary": self.boundary, "grid": list(self.kernel_grid)},
            "sensor": {k: ("off" if v is None else copy.deepcopy(v)) for k, v in self.sensor.items()},
        }

    def trajectory_sampler(self):
        """The configured trajectory model instance."""
        from . import trajectory
        return getattr(trajectory, TRAJECTORY_MODELS[self.trajectory_model])(**self.trajectory_params)

    def sensor_model(self):
        """The configured :class:`blursynth.sensor.SensorModel`."""
        from .sensor import SensorModel
        return SensorModel(**self.sensor)

    def check_frame(self) -> None:
        """Check that a procedural scene's virtual photo (``frame_px``) holds the crop plus the kernel margin.

        Only procedural scenes stand for a crop of a ``frame_px`` photo; photos from a folder use their
        own size (each too small one is skipped), so this is checked where scenes are procedural.

        Raises:
            RecipeError: naming ``camera.frame_px``.
        """
        if self.frame_px[0] < self.input_size[0] or self.frame_px[1] < self.input_size[1]:
            raise _fail(self.source, "camera.frame_px", f"{list(self.frame_px)} is smaller than the crop plus the "
                        f"kernel margin {list(self.input_size)} that a procedural scene stands for; enlarge the "
                        "frame or reduce the crop")

    def with_crop(self, crop: int | tuple[int, int]) -> "Recipe":
        """This recipe with another crop, ``(h, w)`` or one int for a square (8-16384 px; NumPy integers
        too), validated (an error names both)."""
        size = list(crop) if isinstance(crop, (list, tuple)) else [crop, crop]  # (_int takes NumPy integers)
        return dataclasses.replace(_parse({**self.to_dict(), "crop": size},
                                          f"{self.source} with crop {'x'.join(map(str, size))}"), named=self.named)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Recipe":
        """Build and validate a recipe from its nested-dict (TOML) form (tuples and NumPy numbers are taken
        for lists and numbers); a RecipeError names ``source`` and the key."""
        return _parse(data, source)


def recipe_names() -> list[str]:
    """Names of the recipes shipped in ``datasets/``."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str | Path = "default") -> Recipe:
    """Load a recipe by name (``datasets/<name>.toml``) or from a TOML file path.

    Raises:
        RecipeError: unknown name, unreadable / invalid TOML, unknown key or out-of-range value.
        TypeError: ``name_or_path`` is neither a string nor a path.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"recipe must be a name ({', '.join(recipe_names())}), a .toml path or a Recipe, "
                        f"got {name_or_path!r}")
    path = Path(name_or_path)
    named = RECIPE_DIR / f"{name_or_path}.toml"
    # (not "not found", nor an unknown name: it is there, but a folder; a folder in the working
    # directory named like a shipped recipe, say an --out called gopro-like, does not hide it)
    if path.is_dir() and not (path.suffix != ".toml" and named.is_file()):
        raise RecipeError(f"{path}: is a folder, not a recipe file; pass a .toml file such as "
                          f"{path / 'recipe.toml'} or a recipe name ({', '.join(recipe_names())})")
    # (nor does a file there named like one: a notes file called "default" made every command without
    # --recipe fail as "not valid TOML", and one that parsed was used under the shipped recipe's name)
    if path.suffix != ".toml" and (named.is_file() or not path.is_file()):
        path = named
        if not path.is_file():
            raise RecipeError(f"unknown recipe '{name_or_path}'; use one of {', '.join(recipe_names())} "
                              "or the path of a .toml file")
    if not path.is_file():  # ("default.toml" for the shipped recipe: its name is what to pass)
        shipped = f"; for the shipped recipe, pass its name, {path.stem}" if path.stem in recipe_names() else ""
        raise RecipeError(f"{path}: recipe file not found{shipped}")
    try:
        # UTF-8, as TOML is, whatever the locale's encoding; a byte-order mark (Windows editors write one) is
        # dropped: it was "Invalid statement (at line 1, column 1)" on a file that looks right in any editor
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:  # (a file that cannot be read: its permissions, an I/O error)
        raise RecipeError(f"{path}: cannot read the recipe file ({exc.strerror or exc})") from None
    named = "name" in data
    data.setdefault("name", path.stem)
    return dataclasses.replace(_parse(data, str(path)), named=named)


# --- validation -----------------------------------------------------------------------------------

def _fail(source: str, key: str, message: str) -> RecipeError:
    return RecipeError(f"{source}: {key}: {message}")


def _check_keys(source: str, table: dict, allowed: set[str], prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            raise _fail(source, prefix + key, f"unknown key (allowed here: {', '.join(sorted(allowed))})")


def _section(source: str, data: dict, name: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise _fail(source, name, "must be a table, e.g. [" + name + "]")
    return table


def _int(source, key, value, low, high=None, odd=False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(source, key, f"must be an integer, got {value!r}")
    value = int(value)  # (a NumPy integer in a dict: dataset.json could not store it)
    if value < low or (high is not None and value > high):
        raise _fail(source, key, f"must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    if odd and value % 2 == 0:
        raise _fail(source, key, f"must be odd (kernels have a centre pixel), got {value}")
    return value


def _pair(source, key, value, cast, check) -> tuple:
    """A scalar (meaning a fixed value) or a 2-element ``[low, high]`` list (or tuple)."""
    items = value if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise _fail(source, key, f"must be a value or [low, high], got {value!r}")
    out = tuple(cast(source, key, v) for v in items)
    if out[0] > out[1]:
        raise _fail(source, key, f"low must not exceed high, got {value!r}")
    for v in out:
        check(v)
    return out


def _json_float(value: float) -> float | str:
    """``inf`` as the string ``"inf"`` so dataset.json stays strict JSON (read back by :func:`_float`)."""
    return "inf" if math.isinf(value) else value


# Depths are drawn in float32: a finite end above this would draw an infinite depth.
_FLOAT32_MAX = 3.4028234663852886e38


def _depth_range(source, value, check) -> tuple[float, float]:
    """``camera.depth_m``: a finite ``[low, high]`` (drawn log-uniformly) or ``inf`` (both ends)."""
    low, high = _pair(source, "camera.depth_m", value, _float, check)
    if math.isinf(low) != math.isinf(high):
        # log-uniform on [low, inf) is no distribution: every draw came out infinite (a distant scene,
        # whatever low said), and the one whose uniform draw is exactly 0 NaN
        raise _fail(source, "camera.depth_m", f"a log-uniform range needs two finite ends, got [{low:g}, inf]; "
                    "give a finite high (e.g. [1.0, 100.0]) or depth_m = inf for a distant scene")
    if not math.isinf(low) and high > _FLOAT32_MAX:
        raise _fail(source, "camera.depth_m", f"{high:g} m is beyond float32 (whose draws would be infinite); "
                    "use depth_m = inf for a distant scene")
    return low, high


def _float(source, key, value) -> float:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise _fail(source, key, f"must be a number, got {value!r}")
    return float(value)


def _choice(source, key, value, choices) -> str:
    if value not in choices:
        raise _fail(source, key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _parse(data: dict, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a table of keys (a dict), got {type(data).__name__} {data!r}")
    _check_keys(source, data, _TOP)
    for name, keys in _SECTIONS.items():
        _check_keys(source, _section(source, data, name), keys, prefix=f"{name}.")
    camera, kernel, blur = (_section(source, data, s) for s in ("camera", "kernel", "blur"))
    traj = {k: _plain(v) for k, v in _section(source, data, "trajectory").items()}
    sensor = {k: (None if v == "off" else v) for k, v in
              ((k, _plain(v)) for k, v in _section(source, data, "sensor").items())}

    crop_hw = tuple(_int(source, "crop", c, *CROP_RANGE) for c in _size(source, "crop", data.get("crop", 256)))

    def depth_check(v):  # (0.001 m was taken, and the shake then moved the camera through the scene plane)
        if not v >= MIN_DEPTH_M:
            raise _fail(source, "camera.depth_m", f"must be at least {MIN_DEPTH_M:g} m (or inf), got {v}")

    def focal_check(v):
        if not FOCAL_MM_RANGE[0] <= v <= FOCAL_MM_RANGE[1]:
            raise _fail(source, "camera.focal_mm", f"35 mm-equivalent focal length must be in "
                        f"[{FOCAL_MM_RANGE[0]:g}, {FOCAL_MM_RANGE[1]:g}] mm, got {v}")

    model = _choice(source, "trajectory.model", traj.pop("model", "camera_shake"), tuple(TRAJECTORY_MODELS))
    mode = _choice(source, "blur.mode", blur.get("mode", "uniform"), BLUR_MODES)
    if mode == "projective" and model == "random_walk_2d":
        raise _fail(source, "blur.mode", "projective blur needs a 6-DoF trajectory model "
                    "(trajectory.model = \"camera_shake\"); a 2-D path is spatially uniform")
    boundary = _choice(source, "blur.boundary", blur.get("boundary", "valid"), BOUNDARIES)
    if mode == "projective" and boundary == "circular":
        # projective blur warps the image (grid_sample), which pads by reflection and cannot wrap around:
        # "circular" was accepted and silently rendered as "reflect"
        raise _fail(source, "blur.boundary", "\"circular\" is not available with projective blur (its warps cannot "
                    "wrap around the frame); use \"valid\" (no boundary artefact) or \"reflect\"")
    depth_m = _depth_range(source, camera.get("depth_m", math.inf), depth_check)
    if model == "random_walk_2d" and not math.isinf(depth_m[0]):
        # (taken and ignored: a 2-D image-plane path has no camera translation to show a near scene's
        # parallax, as generate --model randomwalk refuses --depth)
        raise _fail(source, "camera.depth_m", "a scene depth needs a 6-DoF trajectory model (trajectory.model = "
                    "\"camera_shake\"): the random walk is an image-plane path in pixels; use depth_m = inf")
    grid = blur.get("grid", [3, 3])
    if not isinstance(grid, (list, tuple)) or len(grid) != 2:
        raise _fail(source, "blur.grid", f"must be [rows, cols], got {grid!r}")
    for key in ("name", "description"):  # (name = 5 was taken as "5", a table as its repr)
        if not isinstance(data.get(key, ""), str):
            raise _fail(source, key, f"must be a string (in quotes), got {data[key]!r}")
    if not data.get("name", "default").strip():  # (dataset.json and the resume check name the recipe by it)
        raise _fail(source, "name", "must not be empty; name the recipe, or leave the key out to take the file's name")
    recipe = Recipe(
        name=data.get("name", "default"),
        description=data.get("description", ""),
        crop=crop_hw,
        trajectory_model=model,
        trajectory_params=traj,
        focal_mm=_pair(source, "camera.focal_mm", camera.get("focal_mm", [24.0, 50.0]), _float, focal_check),
        depth_m=depth_m,
        frame_px=tuple(_int(source, "camera.frame_px", v, 8, FRAME_PX_MAX) for v in _size(source, "camera.frame_px",
                                                                                      camera.get("frame_px", [720, 1280]))),
        kernel_size=_int(source, "kernel.size", kernel.get("size", 31), 3, KERNEL_SIZE_MAX, odd=True),
        kernel_fit=_choice(source, "kernel.fit", kernel.get("fit", "scale"), KERNEL_FITS),
        blur_mode=mode,
        boundary=boundary,
        kernel_grid=tuple(_int(source, "blur.grid", g, 1, 15) for g in grid),
        sensor=sensor,
        source=source,
    )
    _check_delegated(recipe)
    return recipe


def _plain(value):
    """A value of the open [trajectory] / [sensor] tables as TOML gives it: NumPy (or torch) numbers and
    arrays become Python numbers and lists, tuples lists. The constructors took them, but dataset.json
    could not store them ("Object of type float32 is not JSON serializable", after validation passed)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if not isinstance(value, (str, bytes)) and hasattr(value, "tolist"):  # (duck-typed: no NumPy import here)
        return _plain(value.tolist())
    return value


def _size(source, key, value) -> list:
    pair = value if isinstance(value, (list, tuple)) else [value, value]
    if len(pair) != 2:
        raise _fail(source, key, f"must be a size or [height, width], got {value!r}")
    return pair


def _check_delegated(recipe: Recipe) -> None:
    """Check the open sections against the constructors they feed, naming the recipe key on error."""
    from . import sensor, trajectory
    cls = getattr(trajectory, TRAJECTORY_MODELS[recipe.trajectory_model])
    for section, target, kwargs in (("trajectory", cls, recipe.trajectory_params),
                                    ("sensor", sensor.SensorModel, recipe.sensor)):
        allowed = _init_keys(target)
        _check_keys(recipe.source, kwargs, allowed, prefix=f"{section}.")
        try:
            target(**kwargs)
        except (TypeError, ValueError) as exc:
            key, message = _offending_key(target, kwargs, exc)
            raise _fail(recipe.source, f"{section}.{key}" if key else section, message) from None


def _offending_key(target, kwargs: dict, exc: Exception) -> tuple[str | None, str]:
    """The key of ``kwargs`` that made ``target(**kwargs)`` raise ``exc``, and the message to show.

    Each key is tried alone with the other options at their defaults: the first one that fails on its
    own is the culprit (with its own message). Only a conflict between keys (e.g. ``jpeg_quality``
    with ``bits = 16``) passes that test; it is blamed on a key the message names as a whole word,
    else on the section (never on a key that merely comes first).
    """
    for key, value in kwargs.items():
        try:
            target(**{key: value})
        except (TypeError, ValueError) as alone:
            return key, str(alone)
    text = str(exc)
    named = [k for k in kwargs if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", text)
             or re.search(rf"\.{re.escape(k)}(?!\w)", text)]
    return (named[0] if named else None), text


def _init_keys(target) -> set[str]:
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target) if f.init}
    params = inspect.signature(target).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
