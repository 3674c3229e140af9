"""Recipe loading and validation."""

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from blursynth.recipe import RECIPE_DIR, Recipe, RecipeError, load_recipe, recipe_names

SHIPPED = ["default", "gopro-like", "realblur-like", "levin-like"]


def _write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load_and_round_trip(name):
    assert name in recipe_names()
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.kernel_size % 2 == 1
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_shipped_recipes_differ_where_they_claim():
    levin, real, gopro = load_recipe("levin-like"), load_recipe("realblur-like"), load_recipe("gopro-like")
    assert levin.trajectory_params["roll_ratio"] == 0.0 and levin.blur_mode == "uniform"
    assert real.blur_mode == "projective" and real.sensor["jpeg_quality"] is not None
    assert gopro.sensor["shot_noise"] is None  # "off" in TOML means None


def test_recipe_from_a_path_and_defaults(tmp_path):
    recipe = load_recipe(_write(tmp_path, 'crop = [32, 48]\n[kernel]\nsize = 9\n'))
    assert recipe.crop == (32, 48)
    assert recipe.name == "r"  # the file name when the recipe has none
    assert recipe.margin == 4 and recipe.input_size == (40, 56)
    assert recipe.depth_m == (math.inf, math.inf)


@pytest.mark.parametrize("text, key", [
    ("colour = 1\n", "colour"),
    ("[kernel]\nsise = 9\n", "kernel.sise"),
    ("[camera]\nfocal = 35\n", "camera.focal"),
    ("[trajectory]\nexposure = [0.1, 0.2]\n", "trajectory.exposure"),
    ("[sensor]\nnoise = 0.1\n", "sensor.noise"),
])
def test_unknown_keys_are_named(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text, key", [
    ("[kernel]\nsize = 32\n", "kernel.size"),          # even
    ("[kernel]\nsize = 1\n", "kernel.size"),
    ("[kernel]\nfit = \"crop\"\n", "kernel.fit"),
    ("crop = 4\n", "crop"),
    ("crop = [1, 2, 3]\n", "crop"),
    ("[camera]\nfocal_mm = [50, 24]\n", "camera.focal_mm"),  # low > high
    ("[camera]\nfocal_mm = 1.0\n", "camera.focal_mm"),
    ("[camera]\ndepth_m = -2.0\n", "camera.depth_m"),
    ("[camera]\ndepth_m = [1.0, inf]\n", "camera.depth_m"),  # log-uniform to inf: every draw inf (one NaN)
    ("[camera]\ndepth_m = [0.5, 1e300]\n", "camera.depth_m"),  # beyond float32: draws inf
    ("[camera]\ndepth_m = [0.001, 0.002]\n", "camera.depth_m"),  # closer than generate's --depth takes
    ("[blur]\nmode = \"wobbly\"\n", "blur.mode"),
    ("[blur]\nboundary = \"zero\"\n", "blur.boundary"),
    ("[blur]\ngrid = [0, 3]\n", "blur.grid"),
    # projective warps pad by reflection: "circular" was taken and rendered as "reflect"
    ("[blur]\nmode = \"projective\"\nboundary = \"circular\"\n", "blur.boundary"),
    ("[trajectory]\nmodel = \"random_walk_2d\"\n[blur]\nmode = \"projective\"\n", "blur.mode"),
    ("[trajectory]\nmodel = \"spline\"\n", "trajectory.model"),
    # a 2-D walk has no translation: the depth was taken and ignored (generate refuses --depth with it)
    ("[trajectory]\nmodel = \"random_walk_2d\"\n[camera]\ndepth_m = [0.5, 2.0]\n", "camera.depth_m"),
    ("[trajectory]\nroll_ratio = -1.0\n", "trajectory.roll_ratio"),
    ("[sensor]\nbits = 12\n", "sensor.bits"),
    ("[sensor]\nshot_noise = [-1.0, 0.1]\n", "sensor.shot_noise"),
    ("[sensor]\nclip = \"yes\"\n", "sensor.clip"),
    ("[sensor]\ngamma = \"off\"\n", "sensor.gamma"),
    ("[sensor]\nread_noise_scatter = \"off\"\n", "sensor.read_noise_scatter"),
    # one past each documented upper end (a `>` written as `>= high + 1` let them through)
    ("[kernel]\nsize = 257\n", "kernel.size"),
    ("crop = [8, 16385]\n", "crop"),
    ("[blur]\ngrid = [1, 16]\n", "blur.grid"),
    ("[camera]\nframe_px = [8, 65537]\n", "camera.frame_px"),
    ("[camera]\nfocal_mm = [24.0, 2400.0]\n", "camera.focal_mm"),  # high end past 2000 mm
    ("[camera]\ndepth_m = true\n", "camera.depth_m"),  # a boolean is no number (taken as 1 m)
    ("[blur]\ngrid = [3, 3, 3]\n", "blur.grid"),  # (three numbers were taken as a grid of three sides)
    ("kernel = 5\n", "kernel: must be a table"),  # (a number for a section was a bare TypeError)
    ("name = 5\n", "name: must be a string"),  # (taken as "5")
    ("name = \" \"\n", "name: must not be empty"),  # (dataset.json and resume messages named a blank recipe)
    ("description = [\"a\"]\n", "description: must be a string"),
])
def test_out_of_range_values_are_named(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_a_frame_smaller_than_the_crop_is_named_where_scenes_are_procedural(tmp_path):
    path = _write(tmp_path, "[camera]\nframe_px = [100, 100]\n")
    recipe = load_recipe(path)  # photos from a folder use their own size: the recipe itself is fine
    with pytest.raises(RecipeError) as err:
        recipe.check_frame()
    assert str(path) in str(err.value) and "camera.frame_px" in str(err.value)


def test_bad_toml_and_unknown_name(tmp_path):
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(_write(tmp_path, "crop = [\n"))
    with pytest.raises(RecipeError, match="unknown recipe 'nope'.*default"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["folder.toml", "folder"])
def test_a_folder_is_not_called_missing(tmp_path, name):
    # a folder given as the recipe was "recipe file not found" (it is there) or "unknown recipe"
    (tmp_path / name).mkdir()
    with pytest.raises(RecipeError, match=r"is a folder, not a recipe file; pass a \.toml file") as err:
        load_recipe(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_a_folder_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    # say, the --out of an earlier `blursynth dataset --recipe gopro-like --out gopro-like`
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gopro-like").mkdir()
    assert load_recipe("gopro-like") == load_recipe(RECIPE_DIR / "gopro-like.toml")


def test_an_installed_package_finds_its_recipes_beside_hugging_faces_datasets(tmp_path):
    # pip install puts the package in site-packages and the recipes in <prefix>/share/blursynth/datasets;
    # the folder "beside the package" is then site-packages/datasets, Hugging Face's datasets package where
    # that is installed, and it was taken for the recipes: every name unknown, "use one of " an empty list
    from blursynth.recipe import _recipe_dir
    site, prefix = tmp_path / "site-packages", tmp_path / "prefix"
    (site / "blursynth").mkdir(parents=True)
    (site / "datasets").mkdir()
    (site / "datasets" / "__init__.py").write_text("# Hugging Face datasets\n")
    share = prefix / "share" / "blursynth" / "datasets"
    share.mkdir(parents=True)
    (share / "default.toml").write_text("crop = 16\n")
    assert _recipe_dir(site / "blursynth", prefix) == share
    checkout = tmp_path / "checkout"  # a checkout (or an editable install) keeps its own datasets/
    (checkout / "blursynth").mkdir(parents=True)
    (checkout / "datasets").mkdir()
    (checkout / "datasets" / "default.toml").write_text("crop = 16\n")
    assert _recipe_dir(checkout / "blursynth", prefix) == checkout / "datasets"
    assert _recipe_dir() == RECIPE_DIR and (RECIPE_DIR / "default.toml").is_file()


def test_a_recipe_saved_with_a_byte_order_mark_and_crlf_reads(tmp_path):
    # Windows editors (PowerShell's Set-Content -Encoding utf8, older Notepad) start UTF-8 with a BOM: the
    # recipe was refused as "Invalid statement (at line 1, column 1)"
    path = tmp_path / "win.toml"
    path.write_bytes("\ufeffname = \"K\u00f6hler\"\r\ncrop = 16\r\n[kernel]\r\nsize = 5\r\n".encode("utf-8"))
    recipe = load_recipe(path)
    assert (recipe.name, recipe.crop, recipe.kernel_size) == ("K\u00f6hler", (16, 16), 5)


def test_a_file_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    # a file in the working directory called "default" (no .toml) was read as the recipe of every
    # command without --recipe; one that parsed was used under the shipped recipe's name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("some notes\n")
    (tmp_path / "realblur-like").write_text("crop = 16\n")
    assert load_recipe() == load_recipe(RECIPE_DIR / "default.toml")
    assert load_recipe("realblur-like") == load_recipe(RECIPE_DIR / "realblur-like.toml")
    (tmp_path / "mine").write_text("crop = 16\n")  # a file named like no recipe is still read
    assert load_recipe("mine").crop == (16, 16)


@given(size=st.integers(1, 60).map(lambda k: 2 * k + 1), crop=st.integers(8, 200),
       lo=st.floats(10, 100), span=st.floats(1, 3), mode=st.sampled_from(["uniform", "projective"]),
       boundary=st.sampled_from(["valid", "reflect", "circular"]))
@settings(max_examples=30, deadline=None)
def test_dict_round_trip(size, crop, lo, span, mode, boundary):
    assume(not (mode == "projective" and boundary == "circular"))  # (refused: see above)
    data = {"crop": crop, "kernel": {"size": size}, "camera": {"focal_mm": [lo, lo * span], "frame_px": [1000, 1000]},
            "blur": {"mode": mode, "boundary": boundary}, "sensor": {"jpeg_quality": [60, 90], "shot_noise": "off"}}
    recipe = Recipe.from_dict(data)
    again = Recipe.from_dict(recipe.to_dict())
    assert again == recipe
    assert recipe.input_size[0] == crop + (size - 1 if boundary == "valid" else 0)


def test_a_bad_value_is_blamed_on_its_own_key(tmp_path):
    """default.toml with roll_ratio = "half" used to blame trajectory.exposure_s (the table's first key)."""
    text = (RECIPE_DIR / "default.toml").read_text()
    bad = text.replace("roll_ratio = 0.5", 'roll_ratio = "half"')
    assert bad != text
    with pytest.raises(RecipeError, match=r"trajectory\.roll_ratio: .*roll_ratio must be a number from 0 to") as err:
        load_recipe(_write(tmp_path, bad, "default.toml"))
    assert "exposure_s" not in str(err.value)
    bad = text.replace("read_noise_scatter = 0.26", 'read_noise_scatter = "wide"')
    with pytest.raises(RecipeError, match=r"sensor\.read_noise_scatter: "):
        load_recipe(_write(tmp_path, bad, "default.toml"))
    # a conflict between two keys names one of them, not an uninvolved first key
    with pytest.raises(RecipeError, match=r"sensor\.(bits|jpeg_quality): .*bits=8"):
        load_recipe(_write(tmp_path, '[sensor]\ncrf = ["srgb"]\nbits = 16\njpeg_quality = [60, 90]\n'))


def test_clip_off_switches_clipping_off(tmp_path):
    """`clip = "off"` was accepted and then crashed at sample time (torch.full with None)."""
    recipe = load_recipe(_write(tmp_path, '[sensor]\nclip = "off"\n'))
    model = recipe.sensor_model()
    assert model.clip is False
    assert not bool(model.sample(2, seed=0).clip.any())
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_python_forms_of_sizes_and_numbers_are_taken():
    """with_crop((np.int64(64),) * 2) and from_dict({"crop": (64, 32)}) were refused as "must be an integer"
    (the tuple taken for one value), with_crop(64) was a bare TypeError, and a list was a TypeError."""
    recipe = load_recipe("default")
    for crop in ((np.int64(64), np.int64(48)), [64, 48], (64, 48)):
        assert recipe.with_crop(crop).crop == (64, 48)
    assert recipe.with_crop(64).crop == recipe.with_crop(np.int64(64)).crop == (64, 64)
    assert type(recipe.with_crop(np.int64(64)).crop[0]) is int  # dataset.json must be able to store it
    json.dumps(recipe.with_crop((np.int64(64), 48)).to_dict())
    with pytest.raises(RecipeError, match=r"with crop 64x64x64: crop: must be a size or \[height, width\]"):
        recipe.with_crop((64, 64, 64))  # (the message said "with crop 64x64")
    made = Recipe.from_dict({"crop": (64, 32), "camera": {"focal_mm": (np.float32(24), 50)},
                             "blur": {"mode": "projective", "grid": (2, np.int64(4))}})
    assert made.crop == (64, 32) and made.focal_mm == (24.0, 50.0) and made.kernel_grid == (2, 4)
    # NumPy numbers and arrays in the open [trajectory] and [sensor] tables passed the constructors' checks,
    # then write_dataset failed on dataset.json: "Object of type float32 is not JSON serializable"
    numeric = Recipe.from_dict({"trajectory": {"exposure_s": np.array([0.05, 0.2]), "roll_ratio": np.float32(0.5)},
                                "sensor": {"jpeg_quality": (np.int64(70), np.int64(90)), "bits": np.int64(8),
                                           "clip": np.bool_(True)}})
    json.dumps(numeric.to_dict())
    assert numeric == Recipe.from_dict({"trajectory": {"exposure_s": [0.05, 0.2], "roll_ratio": 0.5},
                                        "sensor": {"jpeg_quality": [70, 90], "bits": 8, "clip": True}})
    with pytest.raises(RecipeError, match=r"<dict>: a recipe is a table of keys"):
        Recipe.from_dict([("crop", 64)])  # was "can only concatenate str (not "int") to str"
    with pytest.raises(TypeError, match=r"recipe must be a name \(default, .*got 3"):
        load_recipe(3)  # was "expected str, bytes or os.PathLike object, not int"


@pytest.mark.parametrize("data, attribute, value", [
    ({"crop": 8}, "crop", (8, 8)), ({"crop": [16384, 8]}, "crop", (16384, 8)),
    ({"camera": {"frame_px": [8, 65536]}}, "frame_px", (8, 65536)),
    ({"kernel": {"size": 3}}, "kernel_size", 3), ({"kernel": {"size": 255}}, "kernel_size", 255),
    ({"blur": {"mode": "projective", "grid": [1, 15]}}, "kernel_grid", (1, 15)),
    ({"camera": {"focal_mm": [4.0, 2000.0]}}, "focal_mm", (4.0, 2000.0)),
    ({"camera": {"depth_m": [0.01, 0.01]}}, "depth_m", (0.01, 0.01)),
])
def test_the_documented_range_ends_are_accepted(data, attribute, value):
    """Every documented range is closed: crop 8-16384, frame_px 8-65536, kernel.size 3-255, blur.grid
    1-15, focal_mm 4-2000 mm, depth_m from 0.01 m (a `<` written as `<=` refused the end values)."""
    assert getattr(Recipe.from_dict(data), attribute) == value


def test_a_frame_just_large_enough_for_the_crop_and_margin_is_accepted():
    recipe = Recipe.from_dict({"crop": [40, 50], "kernel": {"size": 9}, "camera": {"frame_px": [48, 58]}})
    assert recipe.input_size == (48, 58)
    recipe.check_frame()  # (frame == crop + 2 * margin: one position, but it fits)
    with pytest.raises(RecipeError, match="camera.frame_px"):
        Recipe.from_dict({"crop": [40, 50], "kernel": {"size": 9}, "camera": {"frame_px": [47, 58]}}).check_frame()


def test_an_empty_recipe_has_the_documented_defaults():
    """A recipe that leaves every key out is the dataclass's defaults (24-50 mm, distant scene, 720x1280
    frame, 31 px kernels fitted by scaling, uniform valid blur, 3x3 grid, 256 px crops)."""
    assert Recipe.from_dict({}) == Recipe()
    assert Recipe().focal_mm == (24.0, 50.0) and Recipe().kernel_fit == "scale" and Recipe().crop == (256, 256)


def test_to_dict_is_strict_json_with_inf_and_off_as_toml_writes_them():
    """``to_dict`` (stored in dataset.json) writes an infinite depth as "inf" and a switched-off sensor
    stage as "off": as floats and None, dataset.json held ``Infinity`` (no JSON reader outside Python's takes
    it) and ``null`` (no TOML value)."""
    recipe = Recipe.from_dict({"sensor": {"shot_noise": "off"}})
    assert recipe.depth_m == (math.inf, math.inf) and recipe.sensor["shot_noise"] is None
    data = recipe.to_dict()
    assert data["camera"]["depth_m"] == ["inf", "inf"] and data["sensor"]["shot_noise"] == "off"
    text = json.dumps(data, allow_nan=False)  # strict JSON: raises on inf or NaN
    assert "null" not in text
    assert Recipe.from_dict(json.loads(text)) == recipe


def test_to_dict_is_a_copy_that_leaves_the_recipe_unchanged():
    """A recipe is frozen: editing the nested lists of its ``to_dict`` (as ``with_crop`` and callers building
    variants do) must not change it. The trajectory table's lists were shared, and an edit changed the
    recipe's draws."""
    recipe = Recipe.from_dict({"trajectory": {"exposure_s": [0.05, 0.2]}, "sensor": {"jpeg_quality": [60, 90]}})
    data = recipe.to_dict()
    data["trajectory"]["exposure_s"][1] = 5.0
    data["sensor"]["jpeg_quality"][0] = 10
    data["camera"]["focal_mm"][0] = 1.0
    assert recipe.trajectory_params["exposure_s"] == [0.05, 0.2] and recipe.sensor["jpeg_quality"] == [60, 90]
    assert recipe.focal_mm == (24.0, 50.0)


def test_a_single_number_for_a_range_is_that_fixed_value(tmp_path):
    """``focal_mm = 35`` (or ``depth_m = 2.0``) means every pair at 35 mm (2 m): both ends of the drawn range
    are that number."""
    recipe = load_recipe(_write(tmp_path, "[camera]\nfocal_mm = 35\ndepth_m = 2.0\n"))
    assert recipe.focal_mm == (35.0, 35.0) and recipe.depth_m == (2.0, 2.0)


def test_a_missing_file_named_like_a_shipped_recipe_points_to_its_name(tmp_path, monkeypatch):
    # ("default.toml: recipe file not found", run where no such file is: the name alone was meant)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"^gopro-like\.toml: recipe file not found; for the shipped recipe, pass "
                                          r"its name, gopro-like$"):
        load_recipe("gopro-like.toml")
    with pytest.raises(RecipeError, match=r"^mine\.toml: recipe file not found$"):
        load_recipe("mine.toml")
