"""torch Datasets: on-the-fly pairs are pure functions of the index, and match the physics they claim."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from torch.utils.data import DataLoader

from blursynth.data import PairedFolder, SyntheticPairs, flatten_params
from blursynth.io import ImageError, read_image, write_image
from blursynth.pairs import ImageFolder, component_seed, make_pairs, recipe_kernels
from blursynth.recipe import Recipe


def _recipe(**over):
    data = {"name": "t", "crop": 20, "kernel": {"size": 7}, "camera": {"frame_px": [100, 120]},
            "trajectory": {"exposure_s": [0.05, 0.2], "samples": 16}, "sensor": {"jpeg_quality": [60, 90]}}
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return Recipe.from_dict(data)


SENSOR_OFF = {"crf": ["linear"], "highlight_gain": "off", "shot_noise": "off", "clip": False, "bits": "off",
              "jpeg_quality": "off"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import imageio.v3 as iio
    root = tmp_path_factory.mktemp("photos")
    rs = np.random.RandomState(1)
    for k in range(3):
        iio.imwrite(root / f"p{k}.png", (rs.rand(40 + 5 * k, 50, 3) * 255).astype(np.uint8))
    return root


def test_items_are_pure_functions_of_the_index(photos):
    data = SyntheticPairs(6, _recipe(), sharp=photos, seed=5)
    batch = make_pairs(data.recipe, [4, 2, 3], 5, data.sources)
    for k, i in enumerate([4, 2, 3]):
        item = data[i]
        assert item["index"] == i and item["blur"].shape == (3, 20, 20) and item["blur"].dtype == torch.float32
        assert torch.equal(item["blur"], batch["blur"][k]) and torch.equal(item["sharp"], batch["sharp"][k])
        assert torch.equal(item["kernel"], batch["kernel"][k])
        assert torch.equal(data[i]["blur"], item["blur"])  # again: no hidden state
    assert not torch.equal(data[0]["blur"], data[1]["blur"])
    other_seed = SyntheticPairs(6, _recipe(), sharp=photos, seed=6)
    assert not torch.equal(other_seed[0]["blur"], data[0]["blur"])


@pytest.mark.parametrize("mode", ["uniform", "projective"])
def test_dead_leaves_items_do_not_depend_on_the_batch(mode):
    # 7 items: made on the CPU as batches of 4 and 3 (pairs.CPU_BATCH), then merged.
    from blursynth.pairs import CPU_BATCH
    recipe = _recipe(crop=16, blur={"mode": mode, "grid": [2, 2]})
    items = [5, 6, 9, 0, 13, 2, 8]
    assert CPU_BATCH < len(items) and len(items) % CPU_BATCH
    batch = make_pairs(recipe, items, 1)
    assert batch["blur"].shape[0] == batch["kernel"].shape[0] == len(batch["records"]) == len(items)
    assert batch["index"].tolist() == items
    for k, i in enumerate(items):
        single = make_pairs(recipe, [i], 1)
        assert torch.equal(single["blur"][0], batch["blur"][k]) and torch.equal(single["sharp"][0], batch["sharp"][k])
        assert torch.equal(single["kernel"][0], batch["kernel"][k])
        assert single["records"][0] == batch["records"][k]
        assert single["records"][0]["source"]["image"] == "dead_leaves"
        if mode == "projective":
            assert torch.equal(single["kernel_grid"][0], batch["kernel_grid"][k])
            assert torch.equal(single["grid_px"], batch["grid_px"])
        else:
            assert batch["kernel_grid"] is None and batch["grid_px"] is None


def test_multi_worker_loader_gives_each_pair_once(photos):
    data = SyntheticPairs(8, _recipe(), sharp=photos, seed=0)
    one = list(DataLoader(data, batch_size=3, num_workers=0))
    two = list(DataLoader(data, batch_size=3, num_workers=2))
    idx = torch.cat([b["index"] for b in two])
    assert sorted(idx.tolist()) == list(range(8))
    assert torch.equal(torch.cat([b["blur"] for b in one]), torch.cat([b["blur"] for b in two]))
    assert torch.equal(torch.cat([b["params"]["camera.focal_mm"] for b in one]),
                       torch.cat([b["params"]["camera.focal_mm"] for b in two]))


def test_uniform_pair_is_the_valid_convolution_of_the_recorded_crop(photos):
    # With the sensor off, blur = sharp (x) kernel exactly; the record says where the crop came from.
    recipe = _recipe(sensor=SENSOR_OFF)
    made = make_pairs(recipe, [0, 1, 2], 9, ImageFolder.scan(photos, recipe.input_size))
    m = recipe.margin
    for k, rec in enumerate(made["records"]):
        x, y, w, h = rec["source"]["box"]
        photo = read_image(photos / rec["source"]["image"])[0]
        assert np.allclose(made["sharp"][k].numpy(), photo[:, y:y + h, x:x + w])
        big = photo[:, y - m:y + h + m, x - m:x + w + m]
        ref = np.stack([convolve2d(c, made["kernel"][k].numpy(), mode="valid") for c in big])
        assert np.abs(made["blur"][k].numpy() - ref).max() < 1e-4


def test_circular_boundary_pair_is_the_circular_convolution(photos):
    recipe = _recipe(sensor=SENSOR_OFF, blur={"boundary": "circular"})
    made = make_pairs(recipe, [3], 0, ImageFolder.scan(photos, recipe.input_size))
    sharp, kernel = made["sharp"][0].numpy(), made["kernel"][0].numpy()
    ref = np.stack([convolve2d(c, kernel, mode="same", boundary="wrap") for c in sharp])
    assert np.abs(made["blur"][0].numpy() - ref).max() < 1e-4


def test_projective_pairs_store_a_grid_of_local_kernels(photos):
    recipe = _recipe(blur={"mode": "projective", "grid": [2, 3]}, trajectory={"roll_ratio": 2.0})
    made = make_pairs(recipe, [0, 1], 0, ImageFolder.scan(photos, recipe.input_size))
    assert made["kernel_grid"].shape == (2, 2, 3, 7, 7) and made["kernel"].shape == (2, 7, 7)
    sums = made["kernel_grid"].sum((-1, -2))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert made["grid_px"].shape == (6, 2)
    assert made["blur"].shape == (2, 3, 20, 20)


def test_flatten_params_and_component_seeds():
    flat = flatten_params({"a": {"b": 1.5, "c": None, "d": "srgb"}, "e": [1, 2], "f": 3})
    assert math.isnan(flat.pop("a.c"))  # None (not drawn) is kept as NaN: every item has the same keys
    assert flat == {"a.b": 1.5, "a.d": "srgb", "f": 3}
    seeds = {component_seed(0, c) for c in ("source", "trajectory", "camera", "sensor", "noise", "scene")}
    assert len(seeds) == 6 and all(0 <= s < 2 ** 63 for s in seeds)
    with pytest.raises(ValueError, match="seed"):
        component_seed(-1, "source")


def test_paired_folder_reads_a_written_dataset(tmp_path, photos):
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 5, _recipe(), sharp=photos, seed=2, progress=False)
    pairs = PairedFolder(tmp_path / "set")
    assert len(pairs) == 5
    item = pairs[3]
    fresh = SyntheticPairs(5, _recipe(), sharp=photos, seed=2)[3]
    # Written files are the 8-bit pairs the dataset makes on the fly (8-bit photos: the sharp crop too).
    assert torch.equal(item["blur"], fresh["blur"]) and torch.equal(item["sharp"], fresh["sharp"])
    assert torch.equal(item["kernel"], fresh["kernel"])
    assert item["params"]["camera.focal_mm"] == fresh["params"]["camera.focal_mm"]
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        PairedFolder(tmp_path)


@pytest.mark.parametrize("layout", ["basicsr", "blursynth"])
def test_paired_folder_refuses_an_unfinished_run_in_either_layout(tmp_path, layout):
    # A run killed before its manifest (or one shard of several) has lq/ + gt/ in the basicsr layout:
    # read as a plain folder, its pairs would pass for the whole set, without kernels or params.
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, layout=layout, progress=False)
    assert len(PairedFolder(tmp_path / "set")) == 3
    (tmp_path / "set" / "manifest.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"unfinished `blursynth dataset` run \(3 pairs.*same command"):
        PairedFolder(tmp_path / "set")


def test_a_pair_is_remade_from_the_settings_in_dataset_json(tmp_path):
    # datasets/README.md, "Remaking pair i": the recipe as dataset.json records it (crop override,
    # depth "inf") and the seed give the written blurry image and kernel back exactly.
    import json
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), crop=(24, 20), seed=4, progress=False)
    settings = json.loads((tmp_path / "set" / "dataset.json").read_text())["settings"]
    remade = SyntheticPairs(settings["pairs"], Recipe.from_dict(settings["recipe"]), seed=settings["seed"])
    written = PairedFolder(tmp_path / "set")
    for i in range(3):
        assert torch.equal(written[i]["blur"], remade[i]["blur"])
        assert torch.equal(written[i]["kernel"], remade[i]["kernel"])


def test_paired_folder_refuses_an_lq_image_without_a_gt_twin(tmp_path):
    # gt/ without its lq/ twin was refused, lq/ without gt/ silently left out (BasicSR refuses both)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "lq" / name, rng.random((3, 8, 8)).astype(np.float32))
    write_image(tmp_path / "gt" / "a.png", rng.random((3, 8, 8)).astype(np.float32))
    with pytest.raises(FileNotFoundError, match=r"/lq: \['b\.png'\] have no sharp twin in gt/$"):
        PairedFolder(tmp_path)
    write_image(tmp_path / "gt" / "b.png", rng.random((3, 8, 8)).astype(np.float32))
    assert len(PairedFolder(tmp_path)) == 2
    write_image(tmp_path / "gt" / "c.png", rng.random((3, 8, 8)).astype(np.float32))
    with pytest.raises(FileNotFoundError, match=r"/gt: \['c\.png'\] have no blurry twin in lq/$"):
        PairedFolder(tmp_path)


def test_paired_folder_refuses_a_pair_of_two_sizes(tmp_path):
    # a super-resolution set's lq/ is smaller than its gt/: cropping both at one place would pair
    # unrelated content without a word
    rng = np.random.default_rng(0)
    for name, side in (("gt", 64), ("lq", 16)):
        write_image(tmp_path / name / "a.png", rng.random((3, side, side)).astype(np.float32))
    write_image(tmp_path / "gt" / "b.png", rng.random((3, 20, 30)).astype(np.float32))
    write_image(tmp_path / "lq" / "b.png", rng.random((3, 20, 30)).astype(np.float32))
    pairs = PairedFolder(tmp_path)
    with pytest.raises(ImageError, match=r"lq/a\.png is 16x16 but .*gt/a\.png is 64x64; .*same size"):
        pairs[0]
    assert pairs[1]["blur"].shape == pairs[1]["sharp"].shape == (3, 20, 30)


def test_bad_lengths_and_indices(photos):
    with pytest.raises(ValueError, match="length"):
        SyntheticPairs(0, _recipe(), sharp=photos)
    with pytest.raises(IndexError):
        SyntheticPairs(2, _recipe(), sharp=photos)[2]


def test_resample_fit_redraws_shakes_until_they_fit_and_stays_per_index():
    # Long exposures and a 7 px kernel: many first draws do not fit and are redrawn.
    recipe = _recipe(crop=12, kernel={"fit": "resample"}, trajectory={"exposure_s": [0.2, 0.25], "drift_rad_s": [0.05, 0.1]},
                     camera={"focal_mm": [150.0, 200.0]}, sensor=SENSOR_OFF)
    made = make_pairs(recipe, range(12), 4)
    redraws = [r["params"]["trajectory"]["redraws"] for r in made["records"]]
    assert max(redraws) >= 1 and min(redraws) == 0
    assert all(r["params"]["trajectory"]["fit_scale"] == 1.0 for r in made["records"])
    k = made["kernel"]
    assert torch.allclose(k.sum((-1, -2)), torch.ones(12), atol=1e-5)
    # Redrawn items are still pure functions of their index.
    for i in (int(torch.tensor(redraws).argmax()), 0):
        single = make_pairs(recipe, [i], 4)
        assert torch.equal(single["kernel"][0], k[i]) and single["records"][0] == made["records"][i]


def test_synthetic_pairs_and_make_pairs_refuse_seeds_that_would_alias():
    """--seed 2**64 used to make the dataset of --seed 0."""
    with pytest.raises(ValueError, match="seed"):
        SyntheticPairs(2, seed=2**64)
    with pytest.raises(TypeError, match="seed must be an integer"):
        SyntheticPairs(2, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        make_pairs(Recipe(crop=(16, 16), kernel_size=5), [0], seed=2**64)
    with pytest.raises(ValueError, match="seed"):
        component_seed(2**64, "scene")


def test_kernel_fit_error_from_a_recipe_names_the_recipe_keys():
    """kernel.fit = "error" used to hint '--kernel-size' / '--fit scale', options a recipe does not have."""
    from blursynth.kernel import KernelFitError
    recipe = Recipe.from_dict({"crop": 16, "kernel": {"size": 3, "fit": "error"}}, "mine.toml")
    with pytest.raises(KernelFitError, match=r"mine.toml: kernel.size = 3, kernel.fit = \"error\": pair 5: .*"
                                             r"raise kernel.size to at least \d+ or set kernel.fit = \"scale\"") as err:
        make_pairs(recipe, [5], seed=0)
    assert "--" not in str(err.value) and err.value.item == 5


def test_items_with_different_tone_curves_batch():
    """Only "gamma" items drew sensor.gamma, so DataLoader(batch_size=8) raised KeyError: 'sensor.gamma'."""
    recipe = Recipe.from_dict({"crop": 16, "kernel": {"size": 5}, "sensor": {"crf": ["srgb", "gamma"]}})
    data = SyntheticPairs(8, recipe=recipe)
    items = [data[i] for i in range(8)]
    curves = [it["params"]["sensor.crf"] for it in items]
    assert set(curves) == {"srgb", "gamma"}  # the batch mixes both curves
    assert all(it["params"].keys() == items[0]["params"].keys() for it in items)
    batch = next(iter(DataLoader(data, batch_size=8)))
    gamma = batch["params"]["sensor.gamma"]
    is_gamma = torch.tensor([c == "gamma" for c in batch["params"]["sensor.crf"]])
    assert gamma.shape == (8,) and bool(gamma[~is_gamma].isnan().all()) and bool((gamma[is_gamma] >= 2.0).all())
    assert bool(batch["params"]["camera.depth_m"].isnan().all())  # distant scene: no depth drawn


def test_crop_device_and_index_edges_are_clear(tmp_path):
    # an int crop is a square, as for every other size in the package (it raised 'int' is not iterable)
    assert SyntheticPairs(2, _recipe(), crop=16).recipe.crop == (16, 16)
    assert SyntheticPairs(2, _recipe(), crop=(16, 24)).recipe.crop == (16, 24)
    for bad in ("16", (16,), 16.0):
        with pytest.raises(ValueError, match="crop"):
            SyntheticPairs(2, _recipe(), crop=bad)
    with pytest.raises(ValueError, match="device='tpu-ish': not a torch device"):
        SyntheticPairs(2, _recipe(), device="tpu-ish")
    with pytest.raises(ValueError, match="device=None: not a torch device"):  # (not torch's TypeError)
        SyntheticPairs(2, _recipe(), device=None)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available.*use cpu"):
            SyntheticPairs(2, _recipe(), device="cuda")
    with pytest.raises(IndexError, match=r"index 5 is out of range for 2 pairs"):
        SyntheticPairs(2, _recipe())[5]
    # "meta" holds no values: accepted, it failed at the first pair in a traceback (write_dataset after
    # writing its dataset.json), where --device meta is refused up front
    with pytest.raises(ValueError, match="device='meta': holds no data"):
        SyntheticPairs(2, _recipe(), device="meta")
    from blursynth.dataset import DatasetError, write_dataset
    with pytest.raises(DatasetError, match="device='meta': holds no data"):
        write_dataset(tmp_path / "meta", 2, _recipe(), device="meta", progress=False)
    assert not (tmp_path / "meta").exists()
    # a written folder: a bare 'list index out of range' before
    rng = np.random.default_rng(0)
    for name in ("gt", "lq"):
        write_image(tmp_path / name / "a.png", rng.random((3, 8, 8)).astype(np.float32))
    pairs = PairedFolder(tmp_path)
    with pytest.raises(IndexError, match=r"index 32 is out of range for 1 pairs in .*: use 0 to 0"):
        pairs[32]
    assert pairs[-1]["index"] == 0


def test_a_length_that_is_not_a_positive_integer_is_refused_when_built():
    """SyntheticPairs(2.5) was accepted and failed later in len()."""
    for bad in (2.5, "3", True, 0, -1, None, 2**63, 10**30):  # (10**30 failed at its first item, an int64 overflow)
        with pytest.raises(ValueError, match=rf"length must be an integer from 1 to 2\*\*63 - 1 \(the number of "
                                             rf"pairs\), got {bad!r}"):
            SyntheticPairs(bad, _recipe())
    assert len(SyntheticPairs(np.int64(3), _recipe())) == 3
    huge = SyntheticPairs(2**63 - 1, _recipe())
    assert huge[2**63 - 2]["index"] == 2**63 - 2
    # a sampler's 0-d integer tensor is an index (it was a TypeError); a float or bool one is not
    assert torch.equal(huge[torch.tensor(1)]["blur"], huge[1]["blur"])
    for bad in (torch.tensor(1.0), torch.tensor(True), torch.tensor([1])):
        with pytest.raises(TypeError, match="pairs indices must be integers"):
            huge[bad]


def test_folder_errors_name_the_python_argument(tmp_path):
    """SyntheticPairs(sharp="/nonexistent") said "--sharp /nonexistent", the command line's option."""
    missing = tmp_path / "nonexistent"
    with pytest.raises(FileNotFoundError, match=r"^sharp='.*nonexistent': not a folder") as err:
        SyntheticPairs(2, _recipe(), sharp=missing)
    assert "--" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=r"^sharp='.*empty': the folder has no image files.*pass sharp=None") as err:
        SyntheticPairs(2, _recipe(), sharp=tmp_path / "empty")
    assert "--" not in str(err.value)
    (tmp_path / "small").mkdir()
    write_image(tmp_path / "small" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match=r"^sharp='.*small': no usable image .*use a smaller crop\)") as err:
        SyntheticPairs(2, _recipe(), sharp=tmp_path / "small")
    assert "--" not in str(err.value)
    # the command line keeps its own wording
    with pytest.raises(FileNotFoundError, match=r"^--sharp .*nonexistent: not a folder"):
        ImageFolder.scan(missing, (8, 8), sharp_name="--sharp", crop_name="--crop")


def test_the_written_sharp_target_is_the_on_the_fly_one_rounded_to_the_sensor_bits(tmp_path):
    """The docs said nothing of how SyntheticPairs' float sharp target relates to the written 8-bit file."""
    import pathlib
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, progress=False)  # dead-leaves scenes: float values
    written, fresh = PairedFolder(tmp_path / "set"), SyntheticPairs(3, _recipe(), seed=2)
    for i in range(3):
        a, b = written[i], fresh[i]
        assert torch.equal(a["blur"], b["blur"])
        assert not torch.equal(a["sharp"], b["sharp"]) and float((a["sharp"] - b["sharp"]).abs().max()) <= 0.5 / 255 + 1e-7
        assert torch.equal(a["sharp"], (b["sharp"].double() * 255).round().float() / 255)
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "The on-the-fly `\"sharp\"` is the float32 crop itself, not quantised" in readme
    assert "not quantised" in SyntheticPairs.__doc__


def test_projective_fit_scale_shrinks_the_motion_so_stored_kernels_are_the_blur_received(tmp_path):
    """kernel.fit = "scale" in projective mode used to shrink only the stored local kernels while the image
    was rendered from the full motion: the kernels then described a blur the pair never received."""
    import imageio.v3 as iio
    yy, xx = np.mgrid[:120, :140].astype(np.float64)
    smooth = 0.5 + 0.2 * np.sin(xx / 3.1 + yy / 5.3) + 0.2 * np.cos(yy / 2.7 - xx / 6.1)  # smooth: local = pointwise
    iio.imwrite(tmp_path / "p.png", np.round(np.repeat(smooth[..., None], 3, -1) * 255).astype(np.uint8))
    recipe = _recipe(crop=21, kernel={"size": 7, "fit": "scale"}, blur={"mode": "projective", "grid": [3, 3]},
                     trajectory={"exposure_s": [0.2, 0.25], "drift_rad_s": [0.15, 0.3], "roll_ratio": 1.0},
                     camera={"focal_mm": [150.0, 200.0]}, sensor=SENSOR_OFF)
    made = make_pairs(recipe, range(3), 4, ImageFolder.scan(tmp_path, recipe.input_size))
    m = recipe.margin
    scales = [r["params"]["trajectory"]["fit_scale"] for r in made["records"]]
    assert all(s < 1 for s in scales)  # every motion here is far larger than a 7 px kernel
    photo = read_image(tmp_path / "p.png")[0]
    for k, rec in enumerate(made["records"]):
        x, y, w, h = rec["source"]["box"]
        big = photo[:, y - m:y + h + m, x - m:x + w + m]
        points = [(gx, gy, made["kernel_grid"][k].reshape(-1, 7, 7)[j])
                  for j, (gx, gy) in enumerate(made["grid_px"].round().long().tolist())]
        points.append((10, 10, made["kernel"][k]))  # the crop centre's kernel
        for gx, gy, kern in points:
            ref = np.stack([convolve2d(c, kern.numpy(), mode="valid") for c in big])
            assert np.abs(made["blur"][k].numpy()[:, gy, gx] - ref[:, gy, gx]).max() < 5e-3, (k, gx, gy)


def test_projective_blur_at_the_crop_corners_stays_within_the_margin(monkeypatch):
    """The motion was fitted to the kernel at the grid points only: under roll, the blur at the crop's
    corners reached past the margin and read the render's reflection padding (up to 1.8e-3 here, 9e-3
    on realblur-like). Rendered with zeros outside the input instead, the crops must agree (up to the
    second-order gap between a local kernel's spread and the render's gather: 2e-5)."""
    import pathlib
    import tomllib

    from blursynth import nonuniform
    data = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "datasets" / "realblur-like.toml").read_text())
    data.update(crop=128, sensor=SENSOR_OFF)
    data["kernel"]["size"], data["trajectory"]["roll_ratio"] = 31, 2.0
    recipe = Recipe.from_dict(data)
    reflected = make_pairs(recipe, range(20), 1)["blur"]
    render = nonuniform.render_nonuniform
    monkeypatch.setattr(nonuniform, "render_nonuniform", lambda *a, **k: render(*a, **{**k, "padding_mode": "zeros"}))
    zeros = make_pairs(recipe, range(20), 1)["blur"]
    assert (reflected - zeros).abs().max() < 1e-4


def test_crop_takes_a_numpy_integer():
    """SyntheticPairs(..., crop=np.int64(64)) said 'crop must be an int (a square) or (height, width)'."""
    assert SyntheticPairs(2, crop=np.int64(64)).recipe.to_dict() == SyntheticPairs(2, crop=64).recipe.to_dict()


def test_make_pairs_and_recipe_kernels_refuse_empty_or_bad_counts():
    """make_pairs([]) failed deep inside ("too many indices for tensor of dimension 1"); recipe_kernels(n=-1)
    gave no kernel without a word, chunk=0 failed in range() and 2.5 in range() too."""
    recipe = Recipe(crop=(16, 16), kernel_size=15)
    for empty in ([], 0, range(0)):
        with pytest.raises(ValueError, match="name no item; pass at least one"):
            make_pairs(recipe, empty)
    for kwargs, said in [({"n": -1}, "n must be an integer >= 0, got -1"), ({"n": 2.5}, "n must be"),
                         ({"n": 3, "chunk": 0}, "chunk must be an integer >= 1, got 0"),
                         ({"n": 3, "chunk": True}, "chunk must be")]:
        with pytest.raises(ValueError, match=said):
            list(recipe_kernels(recipe, **kwargs))
    assert list(recipe_kernels(recipe, 0)) == []
    chunks = list(recipe_kernels(recipe, np.int64(3), chunk=np.int64(2)))
    assert [(c.start, len(c.kernels)) for c in chunks] == [(0, 2), (2, 1)]
    assert torch.equal(torch.cat([c.kernels for c in chunks]), make_pairs(recipe, 3)["kernel"])
    with pytest.raises(ValueError, match="component must be one of source"):
        component_seed(0, "kernel")


def test_a_scene_the_camera_reaches_is_a_recipe_error_naming_the_depth():
    # translation_m_s has no upper bound in a recipe: a camera that travelled past a near scene plane gave
    # meaningless pairs (uniform) or asked for terabytes of memory (projective), never a word on the recipe
    from blursynth.recipe import RecipeError
    recipe = _recipe(trajectory={"translation_m_s": [1.0, 2.0]}, camera={"depth_m": [0.01, 0.01]})
    with pytest.raises(RecipeError, match=r"camera\.depth_m: the camera moves .* raise camera\.depth_m"):
        make_pairs(recipe, 4, seed=0)
    with pytest.raises(RecipeError, match=r"camera\.depth_m"):
        next(recipe_kernels(recipe, 4, seed=0))


def test_a_camera_turned_to_face_away_is_a_recipe_error_naming_the_trajectory():
    # angular speeds have no upper bound in a recipe (degrees per second written as radians): a camera
    # that turned past 90 degrees was a BehindCameraError traceback about pixel (0, 0) of "item 0"
    from blursynth.recipe import RecipeError
    why = r"trajectory: the camera turns .* faces away from the scene; .*drift_rad_s"
    recipe = _recipe(trajectory={"drift_rad_s": [30.0, 40.0]})  # the principal point itself turns behind
    with pytest.raises(RecipeError, match=why):
        make_pairs(recipe, 2, seed=0)
    with pytest.raises(RecipeError, match=why):
        next(recipe_kernels(recipe, 2, seed=0))
    # a wide projective crop: the principal point stays in front, the crop's corners turn behind
    wide = _recipe(crop=96, kernel={"size": 3}, camera={"focal_mm": 4.0, "frame_px": [100, 100]},
                   trajectory={"drift_rad_s": [2.0, 2.0], "exposure_s": [0.2, 0.25]},
                   blur={"mode": "projective"})
    with pytest.raises(RecipeError, match=why):
        make_pairs(wide, 2, seed=0)


def test_photo_folder_scan_follows_links_to_folders_and_lists_loops(tmp_path):
    """A linked subfolder (ln -s /data/DIV2K photos/div2k) was listed by rglob but never looked into:
    its photos were left out without a word. A link back up the tree is listed, not followed."""
    elsewhere, photos = tmp_path / "elsewhere", tmp_path / "photos"
    for folder, name in ((elsewhere, "far.png"), (photos, "near.png"), (photos / ".cache", "hidden.png")):
        write_image(folder / name, np.zeros((3, 40, 40), np.float32))
    (photos / "linked").symlink_to(elsewhere)
    (photos / "sub").mkdir()
    (photos / "sub" / "up").symlink_to(photos)
    found = ImageFolder.scan(photos, (30, 30))
    assert found.files == ["linked/far.png", "near.png"]
    assert [s["file"] for s in found.skipped] == ["sub/up"]
    assert "symbolic link to a folder that holds it" in found.skipped[0]["reason"]


def test_a_damaged_file_of_a_written_dataset_names_it_and_how_to_remake_it(tmp_path):
    """Mid-epoch, a cut-short kernel said only "cannot reshape array" (or, not a .npy at all, that it "contains
    pickled (object) data"), naming no file; a damaged image advised re-exporting it, as for a photo."""
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, progress=False)
    intact = [PairedFolder(tmp_path / "set")[i] for i in range(3)]
    kernel = tmp_path / "set" / "kernels" / "000001.npy"
    kernel.write_bytes(kernel.read_bytes()[:-8])
    (tmp_path / "set" / "blur" / "000000.png").unlink()
    (tmp_path / "set" / "kernels" / "000002.npy").write_bytes(b"not an array")
    pairs = PairedFolder(tmp_path / "set")
    for i, name in enumerate(["blur/000000.png", "kernels/000001.npy", "kernels/000002.npy"]):
        with pytest.raises(ImageError, match=rf"set/{name}: .*pair {i} of the `blursynth dataset` folder .*"
                                             r"run the command that wrote the folder again") as err:
            pairs[i]
        assert "pickled" not in str(err.value) and "re-export" not in str(err.value)
    # the advice holds: the same command remakes them, byte for byte
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, progress=False)
    for i in range(3):
        assert all(torch.equal(pairs[i][k], intact[i][k]) for k in ("blur", "sharp", "kernel"))


def test_a_manifest_cut_short_is_named(tmp_path):
    """A manifest cut mid-record (an interrupted copy) raised json's 'Unterminated string', naming no file."""
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, progress=False)
    manifest = tmp_path / "set" / "manifest.jsonl"
    manifest.write_text(manifest.read_text()[:-40])
    with pytest.raises(ValueError, match=r"manifest\.jsonl: line 3 is not a JSON record .*copy the dataset folder"):
        PairedFolder(tmp_path / "set")


def test_items_are_the_same_every_epoch_with_persistent_shuffling_workers():
    # the documented behaviour: fresh pairs come from a longer dataset or a new one, not from the epoch
    data = SyntheticPairs(5, _recipe(crop=12), seed=3)
    alone = {i: data[i] for i in range(5)}
    loader = DataLoader(data, batch_size=2, num_workers=2, shuffle=True, persistent_workers=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        batches = list(loader)
        assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(5))
        for b in batches:
            for k, i in enumerate(b["index"].tolist()):
                assert torch.equal(b["blur"][k], alone[i]["blur"]) and torch.equal(b["kernel"][k], alone[i]["kernel"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["uniform", "projective"])
def test_make_pairs_on_cuda_returns_every_tensor_there(mode):
    # "All tensors on device": grid_px (projective) came back on the CPU
    made = make_pairs(_recipe(crop=16, blur={"mode": mode, "grid": [2, 2]}), [0, 1], 1, device="cuda")
    tensors = {k: v for k, v in made.items() if isinstance(v, torch.Tensor)}
    assert {k: v.device.type for k, v in tensors.items()} == dict.fromkeys(tensors, "cuda")


def test_an_unclipped_float_sensor_gives_blur_outside_0_1_as_documented():
    """The docstrings promised "blur" in [0, 1], which noise without clip or quantisation breaks."""
    recipe = _recipe(sensor={"clip": False, "bits": "off", "jpeg_quality": "off", "crf": ["linear"],
                             "shot_noise": [0.01, 0.02]})
    blur = make_pairs(recipe, 2, 0)["blur"]
    assert float(blur.max()) > 1 or float(blur.min()) < 0
    for doc in (SyntheticPairs.__doc__, make_pairs.__doc__):
        assert "outside [0, 1] where" in doc and 'clip = false`` with ``bits = "off"``' in " ".join(doc.split())


@pytest.mark.parametrize("mode", ["uniform", "projective"])
def test_thread_count_does_not_change_a_pair(mode):
    # `blursynth dataset --workers 1` makes pairs with torch's default threads, each worker of --workers 2
    # with one: a crop large enough for the slab transform, with every sensor step on, must come out the same.
    from blursynth.blur import _slab_plan
    recipe = _recipe(crop=600, kernel={"size": 31}, camera={"frame_px": [720, 1280]},
                     blur={"mode": mode, "grid": [2, 2]}, sensor={"bayer": ["RGGB"], "jpeg_quality": [60, 90]})
    if mode == "uniform":
        assert _slab_plan(torch.zeros(1, 3, *recipe.input_size), torch.zeros(1, 1, 31, 31), "valid") is not None
    threads = torch.get_num_threads()
    made = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            made.append(make_pairs(recipe, [3], seed=4))
    finally:
        torch.set_num_threads(threads)
    assert made[0]["records"] == made[1]["records"]
    for key in ("sharp", "blur", "kernel"):
        assert torch.equal(made[0][key], made[1][key]), key


def test_photo_crops_equal_the_read_image_window(tmp_path):
    # Only each crop is converted to float (not the whole photo): every file type must give the values
    # read_image gives that window, whichever photos a batch draws, in any order.
    import imageio.v3 as iio
    from PIL import Image
    rs = np.random.RandomState(3)
    iio.imwrite(tmp_path / "rgba.png", (rs.rand(60, 70, 4) * 255).astype(np.uint8))
    iio.imwrite(tmp_path / "gray16.png", (rs.rand(55, 64) * 65535).astype(np.uint16))
    iio.imwrite(tmp_path / "photo.jpg", (rs.rand(64, 66, 3) * 255).astype(np.uint8), quality=90)
    Image.fromarray((rs.rand(50, 60, 3) * 255).astype(np.uint8)).convert("P").save(tmp_path / "palette.png")
    recipe = _recipe(sensor=SENSOR_OFF)
    folder = ImageFolder.scan(tmp_path, recipe.input_size)
    assert len(folder.files) == 4
    made = make_pairs(recipe, range(24), 2, folder)
    assert len({rec["source"]["image"] for rec in made["records"]}) == 4
    for k, rec in enumerate(made["records"]):
        x, y, w, h = rec["source"]["box"]
        photo = torch.from_numpy(read_image(tmp_path / rec["source"]["image"])[0])
        assert torch.equal(made["sharp"][k], photo[:, y:y + h, x:x + w]), rec["source"]
        alone = make_pairs(recipe, [k], 2, folder)
        assert torch.equal(alone["blur"][0], made["blur"][k]) and alone["records"][0] == rec


@pytest.mark.parametrize("photo", [True, False])
def test_crop_positions_are_independent_uniform_draws_over_every_fitting_box(tmp_path, photo):
    """A pair's crop lies anywhere its box fits in the photo (or, for a procedural scene, in the
    ``frame_px`` frame), each position as likely, left and top drawn independently: one draw shared by
    both put every crop on the diagonal, and one fewer position never reached the last row or column."""
    from blursynth.pairs import _sources
    # (a frame wider than tall: with as many left as top positions, left and top drawn over each
    # other's range went unseen)
    recipe = _recipe(crop=[12, 14], kernel={"size": 5}, camera={"frame_px": [28, 36]})  # input 16 x 18: margin 2
    folder = None
    if photo:
        write_image(tmp_path / "p.png", np.random.RandomState(0).rand(3, 28, 36))  # (frame_px's size)
        folder = ImageFolder.scan(tmp_path, recipe.input_size)
    n = 500
    records = _sources(recipe, torch.arange(n), 4, folder, "cpu")[3]
    boxes = np.array([rec["source"]["box"] if "source" in rec else rec["box"] for rec in records])
    left, top = boxes[:, 0] - 2, boxes[:, 1] - 2  # (the box is the crop, inside the margin)
    assert (boxes[:, 2:] == [14, 12]).all()  # (x, y, width, height)
    assert set(left) == set(range(36 - 18 + 1)) and set(top) == set(range(28 - 16 + 1))
    assert abs(np.corrcoef(left, top)[0, 1]) < 0.15


def test_focal_length_and_scene_depth_are_drawn_independently_and_focal_px_is_35mm_equivalent():
    """``camera.focal_mm`` and ``camera.depth_m`` are separate log-uniform draws: drawn from one stream,
    every long lens would meet a far scene (their logs perfectly correlated)."""
    recipe = _recipe(camera={"focal_mm": [20.0, 80.0], "depth_m": [1.0, 50.0]})
    params = next(recipe_kernels(recipe, 400, seed=6)).trajectory.params
    focal, depth = params["focal_mm"].double().log(), params["depth_m"].double().log()
    assert focal.min() >= math.log(20.0) and focal.max() <= math.log(80.0)
    assert depth.min() >= math.log(1.0) and depth.max() <= math.log(50.0)
    assert abs(float(torch.corrcoef(torch.stack([focal, depth]))[0, 1])) < 0.15
    # 35 mm-equivalent: the 36 x 24 mm frame's diagonal maps onto the photo's (frame_px 100 x 120) diagonal
    expected = params["focal_mm"].double() * math.hypot(120, 100) / math.hypot(36, 24)
    assert torch.allclose(params["focal_px"].double(), expected, rtol=1e-6)


def test_projective_grid_px_are_the_cell_centres_of_the_crop(photos):
    """``grid_px`` (the manifest's ``kernel_grid_px``) are crop pixel coordinates ``(x, y)`` of the centres
    of an even rows x cols grid of cells over the crop, not positions in the larger sharp input."""
    recipe = _recipe(crop=[20, 24], blur={"mode": "projective", "grid": [2, 3]})
    assert recipe.margin == 3
    made = make_pairs(recipe, [0], 0, ImageFolder.scan(photos, recipe.input_size))
    xs = [(c + 0.5) * 24 / 3 - 0.5 for c in range(3)]
    ys = [(r + 0.5) * 20 / 2 - 0.5 for r in range(2)]
    assert made["grid_px"].tolist() == [[x, y] for y in ys for x in xs]


def test_projective_roll_turns_about_the_centre_of_the_photo_the_crop_was_cut_from():
    """A crop keeps its photo's principal point, the centre ((W - 1) / 2, (H - 1) / 2) of the W x H frame
    (pixel centres at integers). A pure roll leaves that point still: when it falls on the crop centre,
    the crop centre's kernel is a delta and its blurred pixel is the sharp one. Placed at W / 2 instead,
    the point 0.5 px off turned and the kernel lost 5 % of its centre."""
    from blursynth.pairs import _projective
    from blursynth.trajectory import Trajectory
    recipe = _recipe(crop=[15, 21], kernel={"size": 9, "fit": "error"}, blur={"mode": "projective", "grid": [1, 1]})
    m, (hin, win) = recipe.margin, recipe.input_size
    s = torch.linspace(0, 1, 5)
    roll = Trajectory(t=0.1 * s[None], rotation=torch.stack([0 * s, 0 * s, 0.2 * s], -1)[None])
    linear = torch.rand(1, 3, hin, win, generator=torch.Generator().manual_seed(0))
    for x0, y0 in [(0, 0), (7, 3)]:
        # a photo with the crop (and its margin) cut from its middle, x0, y0 from its left and top edges
        full = torch.tensor([[win + 2 * x0, hin + 2 * y0]], dtype=torch.float64)
        corner = torch.tensor([[x0, y0]], dtype=torch.float64)
        out, centre, _, _, _ = _projective(recipe, linear, roll, torch.tensor([200.0]), torch.tensor([math.inf]),
                                           full, corner)
        assert float(centre[0, 4, 4]) > 1 - 1e-5, (x0, y0)
        assert (out[0, :, 7, 10] - linear[0, :, m + 7, m + 10]).abs().max() < 1e-5, (x0, y0)


def test_a_manifest_cut_at_the_end_of_a_line_is_named(tmp_path):
    """A copy cut just after a record parses: PairedFolder served the records left as the whole set, without a
    word, where dataset.json names more pairs (as --verify counts them)."""
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 3, _recipe(), seed=2, progress=False)
    assert len(PairedFolder(tmp_path / "set")) == 3
    manifest = tmp_path / "set" / "manifest.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(ValueError, match=r"manifest\.jsonl: holds 2 records, not the 3 pairs its dataset\.json names"):
        PairedFolder(tmp_path / "set")


def _manifest_of(folder, n, params_bytes=0):
    """A manifest of ``n`` records (no files behind them: PairedFolder reads those per item), each with a
    ``params`` string of ``params_bytes`` characters standing for the drawn values of a real record."""
    import json
    folder.mkdir()
    lines = [json.dumps({"index": i, "sharp": f"sharp/{i:06d}.png", "blur": f"blur/{i:06d}.png",
                         "params": {"note": "x" * params_bytes, "i": i}}) for i in range(n)]
    (folder / "manifest.jsonl").write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # (a blank line too)
    return [json.loads(line) for line in lines]


def test_a_written_dataset_holds_offsets_not_records():
    """PairedFolder held every manifest record as a dict (~5 KB a pair in a real dataset: GBs at millions
    of pairs), in the process and in each DataLoader worker. What it holds, which is what a spawned
    worker is sent, must not grow with the records' size: 10 KB of params per record changes it by
    less than a byte a pair, while a pair costs at most 16 bytes."""
    import pickle
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for params_bytes in (0, 10_000):
            _manifest_of(Path(tmp) / f"p{params_bytes}", 500, params_bytes)
            sizes[params_bytes] = len(pickle.dumps(PairedFolder(Path(tmp) / f"p{params_bytes}")))
        _manifest_of(Path(tmp) / "more", 1000)
        more = len(pickle.dumps(PairedFolder(Path(tmp) / "more")))
    assert abs(sizes[10_000] - sizes[0]) < 500, sizes
    assert more - sizes[0] <= 16 * 500, (more, sizes)


def test_manifest_records_read_back_in_order_sliced_and_kept(tmp_path):
    records = _manifest_of(tmp_path / "set", 7, params_bytes=3)
    pairs = PairedFolder(tmp_path / "set")
    assert len(pairs) == 7 and list(pairs.records) == records
    assert [pairs.records[i] for i in range(7)] == records and pairs.records[-1] == records[-1]
    assert list(pairs.records[2:5]) == records[2:5] and len(pairs.records[:0]) == 0
    pairs.keep([5, 0, 3])
    assert len(pairs) == 3 and list(pairs.records) == [records[5], records[0], records[3]]
    assert pairs.records[1]["index"] == 0
    # the basicsr layout (no manifest) keeps alike
    for side in ("lq", "gt"):
        (tmp_path / "b" / side).mkdir(parents=True)
        for name in ("a.png", "b.png", "c.png"):
            (tmp_path / "b" / side / name).write_bytes(b"")
    plain = PairedFolder(tmp_path / "b")
    plain.keep([2, 1])
    assert [r["blur"] for r in plain.records] == ["lq/c.png", "lq/b.png"]


def test_a_manifest_replaced_after_opening_is_refused_by_name(tmp_path):
    """Offsets into another file would read pieces of its lines as records."""
    _manifest_of(tmp_path / "set", 4)
    pairs = PairedFolder(tmp_path / "set")
    assert pairs.records[3]["index"] == 3
    (tmp_path / "set" / "manifest.jsonl").write_text('{"index": 0, "sharp": "s.png", "blur": "b.png"}\n')
    for read in (lambda: pairs.records[3], lambda: list(pairs.records), lambda: pairs[0]):
        with pytest.raises(ValueError, match=r"set/manifest\.jsonl changed since the dataset was opened"):
            read()


def test_a_manifest_line_that_is_json_but_not_a_record_is_named(tmp_path):
    _manifest_of(tmp_path / "set", 3)
    manifest = tmp_path / "set" / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + "[1, 2]\n")
    with pytest.raises(ValueError, match=r"manifest\.jsonl: line 5 is not a JSON record \(a JSON list\)"):
        PairedFolder(tmp_path / "set")


class _PureRoll:
    """A trajectory model whose every item is a pure roll of ``angle`` radians about the optical axis."""

    def __init__(self, angle):
        self.angle = angle

    def sample_items(self, index, seed=0):
        from blursynth.trajectory import Trajectory
        s = torch.linspace(0, 1, 9).expand(len(index), 9)
        zero = torch.zeros_like(s)
        return Trajectory(t=0.1 * s, rotation=torch.stack([zero, zero, self.angle * s], -1))


def test_a_projective_pair_turns_about_the_centre_of_its_own_non_square_photo(tmp_path, monkeypatch):
    """``_sources`` hands ``_projective`` each photo's full size as (width, height): given as (height,
    width), a non-square photo's principal point moved off its centre, and a pure roll blurred the
    pixel at the centre, which a roll leaves still."""
    monkeypatch.setattr(Recipe, "trajectory_sampler", lambda self: _PureRoll(0.15))
    recipe = _recipe(crop=[31, 51], kernel={"size": 11}, blur={"mode": "projective", "grid": [1, 1]},
                     sensor=SENSOR_OFF)
    assert recipe.input_size == (41, 61)
    photo = np.random.RandomState(3).rand(3, 41, 61)  # the input size exactly: the crop is its middle
    write_image(tmp_path / "p.png", photo)
    made = make_pairs(recipe, [0], 0, ImageFolder.scan(tmp_path, recipe.input_size))
    assert made["records"][0]["source"]["box"] == [5, 5, 51, 31]
    sharp, blurry = made["sharp"][0].numpy(), made["blur"][0].numpy()
    # the photo's centre (30, 20) is the crop's pixel (25, 15): unmoved there, blurred elsewhere
    assert np.abs(blurry[:, 15, 25] - sharp[:, 15, 25]).max() < 1e-4
    assert np.abs(blurry[:, 5, 5] - sharp[:, 5, 5]).max() > 1e-2


def test_the_photo_is_drawn_independently_of_the_crop_position(tmp_path):
    """Which photo a pair is cut from and where its crop lies are separate uniform draws: one draw shared
    by both cut the first photos only near their left edge and the last ones near their right."""
    from blursynth.pairs import _sources
    recipe = _recipe(crop=[12, 14], kernel={"size": 5})  # input 16 x 18
    for k in range(4):
        write_image(tmp_path / f"p{k}.png", np.random.RandomState(k).rand(3, 40, 50))
    folder = ImageFolder.scan(tmp_path, recipe.input_size)
    records = _sources(recipe, torch.arange(600), 4, folder, "cpu")[3]
    photo = np.array([folder.files.index(rec["image"]) for rec in records])
    left, top = (np.array([rec["box"][j] for rec in records]) for j in (0, 1))
    assert set(photo) == {0, 1, 2, 3}
    assert abs(np.corrcoef(photo, left)[0, 1]) < 0.15 and abs(np.corrcoef(photo, top)[0, 1]) < 0.15


def test_projective_fit_shrinks_rotation_and_translation_by_the_recorded_scale():
    """``_fit_motion`` (kernel.fit = "scale", projective) returns the motion times the factor it records as
    ``fit_scale``, rotation and translation alike, and that motion's local kernels fit. Only the last
    round's factor recorded, or the translation left at full size (a near scene's parallax unshrunk),
    went unseen."""
    from blursynth.camera import Camera
    from blursynth.kernel import KernelFitError
    from blursynth.nonuniform import kernels_at
    from blursynth.pairs import _fit_motion
    from blursynth.trajectory import Trajectory
    s = torch.linspace(0, 1, 17)
    rotation = torch.stack([0.2 * s, -0.1 * s ** 2, 0.4 * s], -1)[None]
    translation = torch.stack([0.06 * s, 0.02 * s, 0.1 * s], -1)[None]
    motion = Trajectory(t=0.1 * s[None], rotation=rotation, translation=translation)
    cam, depth = Camera(300.0, 41, 41), 2.0
    pts = torch.tensor([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0], [40.0, 40.0], [20.0, 20.0]])
    with pytest.raises(KernelFitError):  # far too large for a 9 px kernel as it is
        kernels_at(pts, motion, cam, 9, depth_m=depth, fit="error")
    fitted, scale = _fit_motion(motion, pts, cam, 9, depth)
    assert 0 < scale < 0.5
    assert torch.allclose(fitted.rotation, rotation * scale, rtol=1e-5, atol=1e-9)
    assert torch.allclose(fitted.translation, translation * scale, rtol=1e-5, atol=1e-9)
    kernels_at(pts, fitted, cam, 9, depth_m=depth, fit="error")  # fits now


def test_uniform_fit_scale_records_the_shrink_applied_to_paths_too_large_for_the_kernel():
    """kernel.fit = "scale" records per pair the factor its path was shrunk by: below 1 exactly where the
    path's extent exceeds the kernel, and shrinking it to fit. Recorded as 1 for every pair, a manifest
    described motions far larger than the blur the pairs received."""
    from blursynth.pairs import shake_paths
    recipe = _recipe(crop=16, kernel={"fit": "scale"}, camera={"focal_mm": [150.0, 200.0]}, sensor=SENSOR_OFF,
                     trajectory={"exposure_s": [0.2, 0.25], "drift_rad_s": [0.05, 0.1]})
    made = make_pairs(recipe, range(8), 3)
    path, _ = shake_paths(recipe, range(8), 3)  # (the same paths, by their documented contract)
    extent = (path.amax(1) - path.amin(1)).amax(-1).numpy()  # pixels, the larger of x and y
    scales = np.array([r["params"]["trajectory"]["fit_scale"] for r in made["records"]])
    assert (extent > 7).any() and (extent < 5).any()  # (both kinds of path here)
    assert (scales[extent < 5] == 1.0).all()
    assert (scales[extent > 7] < 1.0).all() and (scales[extent > 7] * extent[extent > 7] <= 7).all()


def test_a_kernel_that_does_not_fit_is_named_by_its_index_in_any_chunk():
    """recipe_kernels with kernel.fit = "error" names the kernel that does not fit by its index in the set:
    in chunks of one, the kernels before it come out and the error names the next; other chunk sizes
    name the same one (named by its place in its chunk, it was "kernel 0" from a chunk of one)."""
    from blursynth.kernel import KernelFitError
    recipe = _recipe(crop=16, kernel={"fit": "error"}, camera={"focal_mm": [150.0, 200.0]}, sensor=SENSOR_OFF,
                     trajectory={"exposure_s": [0.2, 0.25], "drift_rad_s": [0.05, 0.1]})
    named = {}
    for chunk in (1, 2, 3, None):
        made = 0
        with pytest.raises(KernelFitError) as err:
            for part in recipe_kernels(recipe, 8, seed=3, chunk=chunk):
                made += len(part.kernels)
        named[chunk] = str(err.value).split(": kernel ")[1].split(":")[0]
        if chunk == 1:
            assert made >= 1 and named[1] == str(made)  # (kernels that fit come out first)
    assert set(named.values()) == {named[1]}, named


def test_sensor_draws_and_noise_field_are_keyed_by_their_own_components():
    """A pair's sensor parameters are drawn with ``component_seed(seed, "sensor")`` and its noise field with
    ``component_seed(seed, "noise")`` (the field ``z`` of :func:`blursynth.sensor.add_noise`, stream 307):
    one component's seed used for another went unseen, as their streams differ."""
    from blursynth import rng
    from blursynth.sensor import SensorModel
    noisy = _recipe(sensor={**SENSOR_OFF, "shot_noise": [0.01, 0.02]})
    made, clean = make_pairs(noisy, [5], 2), make_pairs(_recipe(sensor=SENSOR_OFF), [5], 2)
    drawn = SensorModel(**noisy.sensor).sample_at(torch.tensor([5]), component_seed(2, "sensor")).to_records()
    assert made["records"][0]["params"]["sensor"] == drawn[0]
    # the blur is linear here (no CRF, clip, quantisation): the difference is the noise, sqrt(a x + b) z
    residual = (made["blur"] - clean["blur"])[0].double().flatten()
    z = rng.normal(component_seed(2, "noise"), torch.tensor([5]), (3, 20, 20), stream=307, dtype=torch.float64)
    assert np.corrcoef(residual.numpy(), z.flatten().numpy())[0, 1] > 0.9


def test_projective_fit_error_checks_the_crop_corners_not_only_the_stored_kernels(tmp_path, monkeypatch):
    """kernel.fit = "error" refuses a projective pair whose blur at a crop corner overflows the kernel, even
    when every stored (grid) kernel fits: a roll about the crop centre leaves the one grid kernel a delta
    but sweeps the corners, 29 px away, over 0.3 rad * 29 px = 8.7 px, past an 11 px kernel's 5 px reach.
    Unchecked, their blur read the render's padding beyond the margin."""
    monkeypatch.setattr(Recipe, "trajectory_sampler", lambda self: _PureRoll(0.3))
    recipe = _recipe(crop=[31, 51], kernel={"size": 11, "fit": "error"}, blur={"mode": "projective", "grid": [1, 1]},
                     sensor=SENSOR_OFF)
    write_image(tmp_path / "p.png", np.random.RandomState(3).rand(3, 41, 61))  # centre = crop centre
    folder = ImageFolder.scan(tmp_path, recipe.input_size)
    from blursynth.kernel import KernelFitError
    with pytest.raises(KernelFitError, match="kernel.fit"):
        make_pairs(recipe, [0], 0, folder)
    monkeypatch.setattr(Recipe, "trajectory_sampler", lambda self: _PureRoll(0.1))  # 2.9 px: fits
    assert make_pairs(recipe, [0], 0, folder)["kernel"].shape == (1, 11, 11)


def test_projective_resample_shrinks_local_paths_that_still_do_not_fit(tmp_path, monkeypatch):
    """kernel.fit = "resample" in projective mode redraws the principal point's path, and shrinks the motion
    where a local path (a corner's, under roll) still overflows (local kernels cannot be redrawn), as the
    recipe documents: a pure roll redraws the same, so its pair is shrunk to fit, not refused."""
    monkeypatch.setattr(Recipe, "trajectory_sampler", lambda self: _PureRoll(0.3))
    recipe = _recipe(crop=[31, 51], kernel={"size": 11, "fit": "resample"}, blur={"mode": "projective", "grid": [1, 1]},
                     sensor=SENSOR_OFF)
    write_image(tmp_path / "p.png", np.random.RandomState(3).rand(3, 41, 61))
    made = make_pairs(recipe, [0], 0, ImageFolder.scan(tmp_path, recipe.input_size))
    scale = made["records"][0]["params"]["trajectory"]["fit_scale"]
    assert 0 < scale < 5 / 8.7 + 0.05  # (the corners' 8.7 px sweep brought within the 5 px reach)
    assert torch.allclose(made["kernel"].sum((-1, -2)), torch.ones(1), atol=1e-5)


def test_a_scan_records_each_photos_size_as_height_by_width(tmp_path):
    """``ImageFolder.sizes`` are ``(height, width)``, as documented (the dataset's identity hashes them)."""
    write_image(tmp_path / "wide.png", np.zeros((3, 30, 50)))
    write_image(tmp_path / "tall.png", np.zeros((3, 60, 20)))
    folder = ImageFolder.scan(tmp_path, (16, 16))
    assert folder.files == ["tall.png", "wide.png"] and folder.sizes == [(60, 20), (30, 50)]


def test_procedural_pairs_refuse_a_frame_smaller_than_the_crop_and_margin():
    """make_pairs (and so SyntheticPairs) with procedural scenes checks camera.frame_px itself, not only the
    command line: a frame smaller than the sharp input drew crop positions outside it (negative corners, a
    principal point and focal length for a photo that cannot hold the crop)."""
    from blursynth.recipe import RecipeError
    recipe = _recipe(crop=20, camera={"frame_px": [24, 120]})  # input 26 x 26: the frame is 2 rows short
    with pytest.raises(RecipeError, match="camera.frame_px"):
        make_pairs(recipe, [0], 0)
    assert make_pairs(_recipe(crop=20, camera={"frame_px": [26, 26]}), [0], 0)["blur"].shape == (1, 3, 20, 20)


def test_a_projective_procedural_pair_turns_about_the_centre_of_its_non_square_frame(monkeypatch):
    """A procedural scene stands for a crop of a ``frame_px`` photo, whose centre is the principal point: a
    frame of exactly the sharp input's size puts it on the crop centre, where a pure roll's local kernel is
    a delta. With the frame's size handed over as (height, width), that kernel was a 2 px arc."""
    monkeypatch.setattr(Recipe, "trajectory_sampler", lambda self: _PureRoll(0.15))
    recipe = _recipe(crop=[31, 51], kernel={"size": 11}, blur={"mode": "projective", "grid": [1, 1]},
                     camera={"frame_px": [41, 61]}, sensor=SENSOR_OFF)
    assert recipe.input_size == (41, 61)
    made = make_pairs(recipe, [0, 1], 0)
    assert [rec["source"]["box"] for rec in made["records"]] == [[5, 5, 51, 31]] * 2
    assert (made["kernel"][:, 5, 5] > 1 - 1e-4).all()  # the crop centre's kernel: a delta


def test_synthetic_pairs_count_negative_indices_from_the_end_and_refuse_bools():
    """Item ``-1`` is the last pair, as in a list (its ``"index"`` the pair's own number, not -1); a bool is no
    index (True would be pair 1)."""
    data = SyntheticPairs(3, _recipe(crop=16), seed=1)
    last = data[-1]
    assert last["index"] == 2 and torch.equal(last["blur"], data[2]["blur"])
    assert data[np.int64(-3)]["index"] == 0
    for bad in (True, False, 1.0):
        with pytest.raises(TypeError, match="pairs indices must be integers"):
            data[bad]


def test_synthetic_pairs_check_the_frame_when_built_and_list_skipped_photos(tmp_path, photos):
    """A procedural scene's frame_px too small for the crop and margin is refused when the dataset is built,
    not at its first item in a DataLoader worker; photos use their own size, and the unusable ones are
    listed in ``skipped``."""
    from blursynth.recipe import RecipeError
    small_frame = _recipe(crop=20, camera={"frame_px": [24, 120]})  # input 26 x 26: 2 rows short
    with pytest.raises(RecipeError, match="camera.frame_px"):
        SyntheticPairs(2, small_frame)
    import shutil
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    write_image(folder / "tiny.png", np.zeros((8, 8, 3), np.uint8))  # smaller than the 26 x 26 input
    data = SyntheticPairs(2, small_frame, sharp=folder)
    assert [s["file"] for s in data.skipped] == ["tiny.png"] and "smaller than" in data.skipped[0]["reason"]
    assert data[0]["blur"].shape == (3, 20, 20)
    assert SyntheticPairs(2, _recipe()).skipped == []


def test_a_plain_folder_ignores_hidden_files_counts_the_unpaired_and_refuses_emptiness(tmp_path):
    """Hidden files (``._a.png`` left by a copy from macOS, ``.DS_Store``) in gt/ and lq/ are not pairs; the
    unpaired lq/ files are named three at a time, with how many more; an lq/ + gt/ pair of empty folders
    is refused (a trainer would divide by zero later)."""
    (tmp_path / "gt").mkdir()
    (tmp_path / "lq").mkdir()
    with pytest.raises(ValueError, match="the dataset is empty"):
        PairedFolder(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("gt", "lq"):
        write_image(tmp_path / name / "a.png", rng.random((3, 8, 8)).astype(np.float32))
        (tmp_path / name / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (tmp_path / name / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    pairs = PairedFolder(tmp_path)
    assert len(pairs) == 1 and pairs[0]["blur"].shape == (3, 8, 8)
    for name in ("b.png", "c.png", "d.png"):
        write_image(tmp_path / "lq" / name, rng.random((3, 8, 8)).astype(np.float32))
    with pytest.raises(FileNotFoundError, match=r"/lq: \['b\.png', 'c\.png', 'd\.png'\] have no sharp twin in gt/$"):
        PairedFolder(tmp_path)
    write_image(tmp_path / "lq" / "e.png", rng.random((3, 8, 8)).astype(np.float32))
    with pytest.raises(FileNotFoundError, match=r"/lq: \['b\.png', 'c\.png', 'd\.png'\] and 1 more have no sharp twin"):
        PairedFolder(tmp_path)



def test_a_plain_folder_reads_image_files_only(tmp_path):
    """Files that are no image by their suffix (the Thumbs.db or desktop.ini Windows leaves, notes) are not
    pairs, as in photo folders: one in gt/ alone refused the folder as a sharp image without blurry twin,
    and one in both folders was a pair that failed to decode when first drawn."""
    rng = np.random.default_rng(0)
    for name in ("gt", "lq"):
        write_image(tmp_path / name / "a.png", rng.random((3, 8, 8)).astype(np.float32))
        write_image(tmp_path / name / "b.JPG", rng.random((3, 8, 8)).astype(np.float32))
        (tmp_path / name / "notes.txt").write_text("shot on a tripod")
    (tmp_path / "gt" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    pairs = PairedFolder(tmp_path)
    assert [r["blur"] for r in pairs.records] == ["lq/a.png", "lq/b.JPG"]
    assert [pairs[i]["sharp"].shape for i in range(len(pairs))] == [(3, 8, 8)] * 2

def test_a_plain_folders_unreadable_image_keeps_the_advice_for_a_photo(tmp_path):
    """In an lq/ + gt/ folder no command remakes a damaged file: its error is io's own, not the advice to run
    `blursynth dataset` again that a written dataset's gets."""
    rng = np.random.default_rng(0)
    for name in ("gt", "lq"):
        write_image(tmp_path / name / "a.png", rng.random((3, 8, 8)).astype(np.float32))
    (tmp_path / "lq" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"lq/a\.png") as err:
        PairedFolder(tmp_path)[0]
    assert "blursynth dataset" not in str(err.value)


def test_kernels_false_reads_no_kernel_file_and_a_pickled_kernel_is_refused(tmp_path):
    """``kernels=False`` leaves the kernel file alone (a lost one does not stop a trainer that uses only the
    images); a kernel ``.npy`` holding pickled objects, which loading would run as code, is refused as a
    damaged file, not unpickled."""
    from blursynth.dataset import write_dataset
    write_dataset(tmp_path / "set", 2, _recipe(crop=16), seed=2, progress=False)
    (tmp_path / "set" / "kernels" / "000000.npy").unlink()
    images = PairedFolder(tmp_path / "set", kernels=False)[0]
    assert "kernel" not in images and images["blur"].shape == (3, 16, 16)
    with pytest.raises(ImageError, match=r"set/kernels/000000\.npy: "):
        PairedFolder(tmp_path / "set")[0]
    np.save(tmp_path / "set" / "kernels" / "000001.npy", np.array([{"not": "a kernel"}], dtype=object),
            allow_pickle=True)
    with pytest.raises(ImageError, match=r"set/kernels/000001\.npy: cannot be read as a \.npy array.*pair 1 of"):
        PairedFolder(tmp_path / "set")[1]


def test_a_manifest_line_that_is_not_utf8_is_named(tmp_path):
    """A record damaged into bytes that are not UTF-8 raised the codec's error, naming no file."""
    _manifest_of(tmp_path / "set", 3)
    manifest = tmp_path / "set" / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes() + b'{"index": 3, "blur": "\xe9.png"}\n')
    with pytest.raises(ValueError, match=r"manifest\.jsonl: line 5 is not a JSON record .*copy the dataset folder"):
        PairedFolder(tmp_path / "set")


def test_a_manifest_edited_in_place_is_refused_by_its_time_or_its_size(tmp_path):
    """The same file (inode) edited after opening: an edit of the same length shows only in the modification
    time, an append within one tick of a coarse clock only in the size. Either way the offsets are stale."""
    import os
    _manifest_of(tmp_path / "set", 4)
    manifest = tmp_path / "set" / "manifest.jsonl"
    pairs = PairedFolder(tmp_path / "set")
    st = manifest.stat()
    with open(manifest, "r+b") as fh:  # same length, same inode: the record of pair 1 now names pair 7's files
        text = fh.read().replace(b"sharp/000001.png", b"sharp/000007.png")
        fh.seek(0)
        fh.write(text)
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert manifest.stat().st_size == st.st_size and manifest.stat().st_ino == st.st_ino
    with pytest.raises(ValueError, match=r"set/manifest\.jsonl changed since the dataset was opened"):
        pairs.records[1]
    pairs = PairedFolder(tmp_path / "set")
    st = manifest.stat()
    with open(manifest, "ab") as fh:
        fh.write(b'{"index": 4, "sharp": "sharp/000004.png", "blur": "blur/000004.png"}\n')
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))  # (as a clock of coarse ticks leaves it)
    with pytest.raises(ValueError, match=r"set/manifest\.jsonl changed since the dataset was opened"):
        pairs.records[1]


@pytest.mark.parametrize("edit, fault", [
    (lambda r: r.pop("blur"), r"no 'blur'"),
    (lambda r: r.update(sharp=5), r"'sharp' is 5, not a file name"),
    (lambda r: r.update(kernel=None), r"'kernel' is None, not a file name"),
    (lambda r: r.update(index="two"), r"'index' is 'two', not an integer"),
    (lambda r: r.update(index=True), r"'index' is True, not an integer"),
    (lambda r: r.update(params=[1, 2]), r"'params' is a JSON list, not a record"),
    # (a damaged file's advice is to delete it and remake the folder: not a file elsewhere)
    (lambda r: r.update(blur="/etc/hosts"), r"'blur' is '/etc/hosts', not a file inside the dataset folder"),
    (lambda r: r.update(sharp="../other/000001.png"),
     r"'sharp' is '\.\./other/000001\.png', not a file inside the dataset folder"),
])
def test_a_manifest_record_edited_out_of_shape_is_named_when_opened(tmp_path, edit, fault):
    """A record that parses but is not a pair (a key removed, a file name or index of another type) was
    taken, then failed when a DataLoader first drew it: a KeyError 'blur', a TypeError of pathlib or of
    the batch collate, naming neither the file nor the line. It is refused when the folder is opened."""
    import json
    _manifest_of(tmp_path / "set", 3)
    manifest = tmp_path / "set" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[3])  # (line 3 is blank)
    edit(record)
    lines[3] = json.dumps(record)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"set/manifest\.jsonl: line 4 is not a pair record \({fault}\); .*copy the "
                                         "dataset folder again"):
        PairedFolder(tmp_path / "set")


def test_a_damaged_files_reason_keeps_its_parentheses_when_the_advice_is_replaced(tmp_path):
    """io's "path: what; advice" lost its advice at the first "; ", which may lie inside the reason's
    parentheses (a file without a known suffix: "(no suffix; the formats read are ...)") or inside the
    dataset's own path: the reason was cut in half."""
    import json
    from blursynth.data import _without_advice
    root = tmp_path / "a; (b"
    _manifest_of(root, 2)
    manifest = root / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[0])
    record["blur"] = "blur/000000"  # no suffix
    lines[0] = json.dumps(record)
    manifest.write_text("\n".join(lines) + "\n")
    (root / "blur").mkdir()
    (root / "blur" / "000000").write_bytes(b"not an image")
    with pytest.raises(ImageError) as err:
        PairedFolder(root)[0]
    said = str(err.value)
    assert said.startswith(f"{root / 'blur' / '000000'}: not a readable image (no suffix; the formats read are ")
    assert "); it is pair 0 of the `blursynth dataset` folder" in said and "re-export" not in said
    path = root / "sharp" / "x.png"
    assert _without_advice(f"{path}: no such file", path) == f"{path}: no such file"
    assert _without_advice(f"{path}: empty file; remove it", path) == f"{path}: empty file"


def test_make_pairs_takes_a_recipe_name_and_names_a_folder_passed_as_sources(tmp_path, photos):
    # make_pairs("realblur-like", ...) was "AttributeError: 'str' object has no attribute 'input_size'", and a photo
    # folder's path as sources "... has no attribute 'files'", though SyntheticPairs takes both
    from blursynth.recipe import load_recipe
    named = make_pairs("levin-like", [3], seed=2)
    loaded = make_pairs(load_recipe("levin-like"), [3], seed=2)
    assert torch.equal(named["blur"], loaded["blur"]) and named["records"] == loaded["records"]
    first = next(recipe_kernels("levin-like", 2))
    assert torch.equal(first.kernels, next(recipe_kernels(load_recipe("levin-like"), 2)).kernels)
    with pytest.raises(TypeError, match=r"sources must be None or an ImageFolder, e.g. ImageFolder.scan\("):
        make_pairs(Recipe(crop=(16, 16), kernel_size=15), [0], sources=str(photos))
