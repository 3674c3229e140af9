"""Training data: which item each step sees, crops, and the embedded synthetic pairs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unpaired.data import (_S_PERM, FolderImages, StepSampler, SyntheticPool, UnpairedCrops, permuted, random_crop,
                           seed_b, synthetic_pairs, synthetic_sharp)


@given(st.integers(0, 50), st.integers(1, 20), st.integers(1, 5), st.integers(1, 4))
def test_ranks_partition_the_single_process_positions(start, steps, batch, world):
    single = list(StepSampler(start, start + steps, batch * world))
    ranks = [list(StepSampler(start, start + steps, batch, r, world)) for r in range(world)]
    assert sorted(sum(ranks, [])) == single == list(range(start * batch * world, (start + steps) * batch * world))
    # resuming at any step continues the same sequence
    assert list(StepSampler(0, start + steps, batch)) [start * batch:] == list(StepSampler(start, start + steps, batch))


@given(st.integers(0, 1000), st.integers(1, 30), st.integers(0, 4))
def test_each_epoch_is_a_permutation(seed, n, epoch):
    items = [permuted(seed, n, epoch * n + k) for k in range(n)]
    assert sorted(items) == list(range(n))


def test_positions_in_any_order_give_the_same_items():
    # each epoch's order is kept between calls: one kept under too short a key would answer for another
    # seed, set size, epoch or stream
    from unpaired.data import _epoch_order
    calls = [(seed, n, p, stream) for seed in (0, 1) for n in (5, 7) for p in (0, 3, 6, 12) for stream in (0, 1)]
    _epoch_order.cache_clear()
    in_order = [permuted(seed, n, p, stream) for seed, n, p, stream in calls]
    _epoch_order.cache_clear()
    backwards = [permuted(seed, n, p, stream) for seed, n, p, stream in reversed(calls)][::-1]
    _epoch_order.cache_clear()
    alone = []
    for seed, n, p, stream in calls:
        alone.append(permuted(seed, n, p, stream))
        _epoch_order.cache_clear()
    assert in_order == backwards == alone and len(set(in_order)) > 3


def test_epochs_differ():
    assert [permuted(0, 20, k) for k in range(20)] != [permuted(0, 20, 20 + k) for k in range(20)]


def test_streams_differ():
    # (CycleGAN draws its blurry and its sharp photos on two streams: one order for both would pair them up
    # the same way every epoch, though the folders are unpaired)
    orders = [[permuted(0, 20, k, stream) for k in range(20)] for stream in (_S_PERM, _S_PERM + 1, _S_PERM + 2)]
    assert orders[0] != orders[1] != orders[2] != orders[0]


def test_an_epochs_order_is_drawn_once_for_sets_drawn_in_turn():
    # CycleGAN takes an item of its blurry, its sharp and its photo set in turn: each set's epoch order must
    # stay kept while the others are drawn (redrawn at each item, an epoch took time quadratic in its size)
    from unpaired.data import _epoch_order
    _epoch_order.cache_clear()
    for p in range(40):
        for stream, n in ((_S_PERM, 20), (_S_PERM + 1, 20), (_S_PERM + 2, 10)):
            permuted(7, n, p, stream)
    assert _epoch_order.cache_info().misses == 2 + 2 + 4  # (two epochs of each 20, four of the 10)


@settings(max_examples=20)
@given(st.integers(0, 10 ** 6), st.integers(8, 40), st.integers(8, 40))
def test_crop_is_shared_and_in_bounds(p, h, w):
    a = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    ca, cb = random_crop([a, a * 2], 8, seed=3, p=p)
    assert ca.shape == (1, 8, 8) and torch.equal(cb, ca * 2)
    # the crop is a contiguous window of the source (possibly mirrored)
    flat = ca[0].flatten().long()
    rows = flat.view(8, 8) // w
    assert (rows == rows[:, :1]).all() and (rows[1:, 0] - rows[:-1, 0] == 1).all()


def test_synthetic_defaults_are_wired_to_the_generator():
    a, b = synthetic_pairs(5, 24), synthetic_pairs(5, 24)
    item = a[3]
    assert item["blur"].shape == item["sharp"].shape == (3, 24, 24)
    assert torch.equal(b[3]["blur"], item["blur"]) and not torch.equal(a[2]["sharp"], item["sharp"])


def test_synthetic_cyclegan_domains_share_no_scene():
    crops = UnpairedCrops(None, None, crop=24, seed=0)
    pairs = synthetic_pairs(0, 24)
    for p in range(3):
        sharp_b = crops[p]["sharp"]
        assert sharp_b.shape == (3, 24, 24)
        assert not any(torch.equal(sharp_b, pairs[q]["sharp"]) for q in range(3))
        assert torch.equal(crops[p]["blur"], pairs[p]["blur"])


def test_pooled_cyclegan_domains_are_the_synthetic_images_and_share_no_scene():
    crops = UnpairedCrops(None, None, crop=16, seed=1, pool=3, pool_size=24)
    pairs = synthetic_pairs(1, 24)
    for i in range(3):
        assert torch.equal(crops.pool_a.blur[i], pairs[i]["blur"])
        assert torch.equal(crops.pool_b.sharp[i], synthetic_sharp(seed_b(1), 24, i))
        assert not any(torch.equal(crops.pool_b.sharp[i], pairs[q]["sharp"]) for q in range(3))
    assert crops.pool_b.blur is None  # the sharp domain is never blurred
    assert crops.pool_a.sharp is None  # nor are the blurry domain's sharp scenes kept
    for p in range(6):
        item = crops[p]
        assert item["blur"].shape == item["sharp"].shape == (3, 16, 16)
        assert torch.equal(item["blur"], crops.pool_a[p]["blur"]) and torch.equal(item["sharp"], crops.pool_b[p]["sharp"])
        assert any(torch.equal(t, item["sharp"]) for i in range(3) for y in range(9) for x in range(9)
                   for t in _dihedral(crops.pool_b.sharp[i][:, y:y + 16, x:x + 16]))


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    return [t.rot90(k, (-2, -1)) for t in (x, x.flip(-1)) for k in range(4)]


def test_pool_pairs_are_the_synthetic_pairs_and_positions_are_their_turned_crops():
    pool = SyntheticPool(seed=2, n=3, size=24, crop=16, chunk=2)  # two chunks: batching must not matter
    reference = synthetic_pairs(2, 24)
    for i in range(3):
        assert torch.equal(pool.blur[i], reference[i]["blur"]) and torch.equal(pool.sharp[i], reference[i]["sharp"])
    turns = set()
    for p in range(12):
        item = pool[p]
        assert item["blur"].shape == item["sharp"].shape == (3, 16, 16)
        # blur and sharp share one window of one pair under one of the 8 flips/quarter-turns
        found = [(i, y, x, d) for i in range(3) for y in range(9) for x in range(9)
                 for d, t in enumerate(_dihedral(pool.blur[i][:, y:y + 16, x:x + 16]))
                 if torch.equal(t, item["blur"])]
        assert found, p
        i, y, x, d = found[0]
        assert torch.equal(_dihedral(pool.sharp[i][:, y:y + 16, x:x + 16])[d], item["sharp"])
        turns.add(d)
    assert len(turns) > 2  # the turns vary with the position


def test_pool_positions_are_a_function_of_seed_and_position():
    a, b = SyntheticPool(4, 2, 24, 8), SyntheticPool(4, 2, 24, 8)
    for p in (0, 5, 123456789):
        assert all(torch.equal(a[p][k], b[p][k]) for k in ("blur", "sharp"))
    assert not torch.equal(a[0]["blur"], a[1]["blur"])
    with pytest.raises(ValueError, match="--crop 32 at most --pair-pool-size 24"):
        SyntheticPool(4, 2, 24, 32)


APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60)  # what macOS leaves as ._name


def test_photo_folders_leave_out_hidden_files(tmp_path):
    # a folder copied from a Mac to a USB disk or network share holds ._photo.png beside photo.png:
    # no image, and no reason to list it among the skipped files
    from blursynth.io import write_image
    from unpaired.data import FolderImages, list_images
    write_image(tmp_path / "photo.png", torch.rand(3, 20, 24).numpy())
    (tmp_path / "._photo.png").write_bytes(APPLEDOUBLE)
    (tmp_path / ".hidden.jpg").write_bytes(APPLEDOUBLE)
    assert list_images(tmp_path, "--blurry") == [tmp_path / "photo.png"]
    images = FolderImages(tmp_path, "--blurry", 16)
    assert images.files == [tmp_path / "photo.png"] and images.skipped == []


def test_photo_folders_take_gifs(tmp_path):
    # (read_image reads a GIF's first frame, as the README says, but folders passed them over unlisted)
    from PIL import Image
    from unpaired.data import FolderImages, list_images
    frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert list_images(tmp_path, "--blurry") == [tmp_path / "anim.gif"]
    images = FolderImages(tmp_path, "--blurry", 16)
    assert images.files == [tmp_path / "anim.gif"] and images.skipped == []


def test_crop_and_permutation_refuse_bad_input():
    """Images of different sizes were all cut at the first one's size (a 30x30 sharp twin of a 17x23
    blurry image got a crop of another place); size 0 gave empty crops; permuted(n=0) raised
    ZeroDivisionError."""
    with pytest.raises(ValueError, match="different sizes"):
        random_crop([torch.rand(3, 17, 23), torch.rand(3, 30, 30)], 5, 0, 3)
    with pytest.raises(ValueError, match="crop size must be >= 1"):
        random_crop([torch.rand(3, 17, 23)], 0, 0, 3)
    with pytest.raises(ValueError, match="n=0"):
        permuted(0, 0, 5)


def test_validation_crops_do_not_keep_their_whole_images():
    # centre crops were views: each kept its full-size photo in memory for the whole run
    from unpaired.data import _crop_items
    items = [{"blur": torch.rand(3, 300, 400), "sharp": torch.rand(3, 300, 400)}, {"blur": torch.rand(3, 200, 100)}]
    crops = _crop_items(items, 64)
    for item, crop in zip(items, crops):
        for k in crop:
            assert crop[k].shape == (3, 64, 64) and torch.equal(crop[k], item[k][:, item[k].shape[1] // 2 - 32:][:, :64,
                                                                                   item[k].shape[2] // 2 - 32:][:, :, :64])
            assert crop[k].untyped_storage().nbytes() == 3 * 64 * 64 * 4


def test_a_photo_crop_converts_only_the_crop_to_the_same_values(tmp_path):
    # FolderImages.random_crop (every CycleGAN and reblur step's photos) decodes the photo and converts
    # only the crop to float: it must equal random_crop of the whole photo read_image gives, flips included
    import imageio.v3 as iio
    rs = np.random.RandomState(5)
    iio.imwrite(tmp_path / "a.png", (rs.rand(40, 57, 4) * 255).astype(np.uint8))  # RGBA: composited over white
    iio.imwrite(tmp_path / "b.jpg", (rs.rand(33, 36) * 255).astype(np.uint8))      # gray: repeated to RGB
    photos = FolderImages(tmp_path, "--blurry", 16)
    for p in range(24):  # (about half of them flipped)
        for i in range(len(photos)):
            crop = photos.random_crop(i, 16, 7, p, stream=5)
            (expected,) = random_crop([photos[i]], 16, 7, p, stream=5)
            assert torch.equal(crop, expected) and crop.is_contiguous()
    with pytest.raises(Exception, match="a.png: 57x40 is smaller than --crop 41"):
        photos.random_crop(0, 41, 7, 0)


def test_crop_offsets_and_flips_are_independent_uniform_draws():
    """Over many positions, a crop's top and left are independent uniform draws over every offset that
    fits (``0 .. h - size``, both ends included), and about half the crops are flipped: one draw shared by
    top and left would crop along the diagonal only, and one fewer offset would never reach the last rows."""
    h = w = 40
    size, n = 8, 600
    a = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    ys, xs, flips = [], [], 0
    for p in range(n):
        crop = random_crop([a], size, seed=11, p=p)[0][0]
        corner = int(crop.min())  # (the top-left sample of the window, wherever a flip put it)
        ys.append(corner // w)
        xs.append(corner % w)
        flips += int(crop[0, 0]) != corner
    assert set(ys) == set(range(h - size + 1)) and set(xs) == set(range(w - size + 1))
    y, x = torch.tensor(ys, dtype=torch.float64), torch.tensor(xs, dtype=torch.float64)
    assert abs(float(torch.corrcoef(torch.stack([y, x]))[0, 1])) < 0.15
    assert sum(top == left for top, left in zip(ys, xs)) < 3 * n / (h - size + 1)  # (about 1 in 33 by chance)
    assert 0.4 < flips / n < 0.6


def test_pool_positions_take_each_of_the_eight_flips_and_quarter_turns():
    """A pool position is its pair turned by one of the 8 flips/quarter-turns (the dihedral group of the
    square): with the crop the whole image, every returned image is exactly one of them, and all 8 come."""
    pool = SyntheticPool(seed=0, n=1, size=16, crop=16, keep=("sharp",))
    base = pool.sharp[0]
    variants = [base.rot90(k, (-2, -1)) for k in range(4)] + [base.flip(-1).rot90(k, (-2, -1)) for k in range(4)]
    seen = []
    for p in range(160):
        matches = [j for j, v in enumerate(variants) if torch.equal(pool[p]["sharp"], v)]
        assert len(matches) == 1, p
        seen += matches
    assert sorted(set(seen)) == list(range(8))


def test_a_pair_exactly_the_crop_size_is_used_and_a_smaller_one_skipped(tmp_path):
    # usable_pairs leaves out the pairs *smaller* than --crop: one whose short side is the crop holds
    # exactly one crop and trains
    from blursynth.data import PairedFolder
    from blursynth.io import write_image
    from unpaired.data import usable_pairs

    for name, (h, w) in {"exact.png": (32, 45), "small.png": (45, 31)}.items():
        for sub in ("lq", "gt"):
            write_image(tmp_path / sub / name, np.full((h, w, 3), 100, np.uint8))
    source = PairedFolder(tmp_path)
    skipped = usable_pairs(source, "--pairs", 32)
    assert [rec["blur"] for rec in source.records] == ["lq/exact.png"]
    assert len(skipped) == 1 and "small.png: 31x45 is smaller than --crop 32" in skipped[0]


def test_the_last_pairs_are_held_out_for_validation_and_only_the_others_train(tmp_path):
    # --pairs without --val-pairs: the last --val-size pairs (in the folder's order) validate and are
    # taken out of training, so no pair is both trained on and scored
    from blursynth.io import write_image
    from unpaired import config
    from unpaired.data import validation_pairs

    for k in range(5):  # pair k is a flat image of value 40 * k (the blurry twin half of it)
        for sub, value in (("gt", 40 * k), ("lq", 20 * k)):
            write_image(tmp_path / sub / f"{k}.png", np.full((24, 24, 3), value, np.uint8))
    cfg = config.parse_args(["--pairs", str(tmp_path), "--val-size", "2", "--val-crop", "16", "--crop", "16"])
    val, train = validation_pairs(cfg)
    assert [rec["sharp"] for rec in train.records] == ["gt/0.png", "gt/1.png", "gt/2.png"]
    assert [round(float(item["sharp"].mean()) * 255) for item in val] == [120, 160]
    assert [round(float(item["blur"].mean()) * 255) for item in val] == [60, 80]
    assert all(item["sharp"].shape == (3, 16, 16) for item in val)
