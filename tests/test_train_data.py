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
    assert ca.is_contiguous() and cb.is_contiguous()  # (as documented: not views of the whole images)
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
        assert i == permuted(2, 3, p)  # (an epoch's order is shuffled, as the class says, not 0, 1, 2)
        turns.add(d)
    assert len(turns) > 2  # the turns vary with the position


def test_pool_positions_are_a_function_of_seed_and_position():
    a, b = SyntheticPool(4, 2, 24, 8), SyntheticPool(4, 2, 24, 8)
    for p in (0, 5, 123456789):
        assert all(torch.equal(a[p][k], b[p][k]) for k in ("blur", "sharp"))
    assert not torch.equal(a[0]["blur"], a[1]["blur"])
    with pytest.raises(ValueError, match="--crop 32 at most --pair-pool-size 24"):
        SyntheticPool(4, 2, 24, 32)
    with pytest.raises(ValueError, match="--pair-pool 0 must be >= 1"):
        SyntheticPool(4, 0, 24, 8)
    with pytest.raises(ValueError, match="keep must name 'blur' and/or 'sharp'"):
        SyntheticPool(4, 1, 24, 8, keep=("sharp", "blurry"))


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


def test_a_sharp_only_pool_made_in_chunks_holds_scenes_0_to_n():
    # each chunk renders the scenes from its own start: every chunk of CycleGAN's sharp domain (512 scenes,
    # 32 a chunk, by default) repeated the first chunk's scenes when they all started at scene 0
    pool = SyntheticPool(seed=3, n=3, size=16, crop=16, chunk=2, keep=("sharp",))
    for i in range(3):
        assert torch.equal(pool.sharp[i], synthetic_sharp(3, 16, i)), i


def test_the_orders_of_two_epochs_are_unrelated():
    # each epoch's order is drawn afresh: of the item pairs, about half keep their relative order from one
    # epoch to the next (keyed on overlapping indices, consecutive epochs kept nearly all of it)
    import itertools
    n = 40
    for seed in (0, 1, 5):
        order = [[permuted(seed, n, e * n + k) for k in range(n)] for e in (0, 1)]
        first, second = ({item: k for k, item in enumerate(o)} for o in order)
        same = sum((first[a] < first[b]) == (second[a] < second[b]) for a, b in itertools.combinations(range(n), 2))
        assert same / (n * (n - 1) / 2) < 0.7, seed
        # ... nor is an epoch the one before with its items renumbered (item k where k + 1 was)
        shifts = [(b - a) % n for a, b in zip(*order)]
        assert max(shifts.count(d) for d in set(shifts)) < n // 4, seed


def test_crops_of_different_streams_flip_independently():
    # CycleGAN's blurry and sharp crops (streams 1 and 2) and reblur's photo crops (stream 5) draw their flips
    # on their own streams: one draw for all mirrored every domain together
    a = torch.arange(12 * 12, dtype=torch.float32).view(1, 12, 12)
    flipped = {s: [bool(c[0, 0, 0] > c[0, 0, -1]) for c in (random_crop([a], 8, 0, p, stream=s)[0] for p in range(200))]
               for s in (1, 2, 5)}
    for s, t in ((1, 2), (1, 5)):
        agree = sum(x == y for x, y in zip(flipped[s], flipped[t])) / 200
        assert 0.35 < agree < 0.65, (s, t)
    assert 0.35 < sum(flipped[1]) / 200 < 0.65


def _photos(folder, images):
    from blursynth.io import write_image
    for k, image in enumerate(images):
        write_image(folder / f"{k}.png", image)
    return FolderImages(folder, str(folder), 8)


def test_unpaired_photo_folders_are_drawn_apart(tmp_path):
    # CycleGAN's two folders are unpaired: each is drawn in its own order over its own size, and cropped at
    # its own position. Flat photos of distinct values tell which photo a crop is of.
    flat = lambda values: [np.full((12, 16, 3), v, np.uint8) for v in values]  # noqa: E731
    which = lambda crop: round(float(crop.mean()) * 255) // 10  # noqa: E731
    blurry = _photos(tmp_path / "a", flat((10, 20, 30)))
    for sharp, values in ((_photos(tmp_path / "b", flat((40, 50, 60))), (4, 5, 6)),
                          (_photos(tmp_path / "c", flat((40, 50, 60, 70, 80))), (4, 5, 6, 7, 8))):
        crops = UnpairedCrops(blurry, sharp, crop=8, seed=0)
        i = [which(crops[p]["blur"]) - 1 for p in range(15)]
        j = [which(crops[p]["sharp"]) - 4 for p in range(15)]
        n = len(values)
        assert all(sorted(j[e:e + n]) == list(range(n)) for e in range(0, 15, n))  # every sharp photo, each epoch
        assert i != j  # (one order for both: blurry photo k met sharp photo k every epoch)
    noise = [(np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)]
    crops = UnpairedCrops(_photos(tmp_path / "d", noise), _photos(tmp_path / "e", noise), crop=8, seed=0)
    assert sum(torch.equal(crops[p]["blur"], crops[p]["sharp"]) for p in range(20)) < 5


class _Pairs:
    """A pair source of flat pairs: pair k has the value k / 10 (blur) and k / 20 (sharp)."""

    def __init__(self, n):
        from pathlib import Path
        self.root, self.records = Path("."), [{"blur": f"{k}.png"} for k in range(n)]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, k):
        return {"blur": torch.full((3, 12, 12), k / 10), "sharp": torch.full((3, 12, 12), k / 20)}


def test_pairs_from_a_folder_are_shuffled_each_epoch():
    # a written dataset lists its pairs in order (a GoPro-like one frame by frame of each video): drawn in that
    # order every epoch, each batch held neighbouring frames, and the same ones each epoch
    from unpaired.data import PairedCrops
    crops = PairedCrops(_Pairs(8), crop=8, seed=0, synthetic=False)
    items = [round(float(crops[p]["blur"].mean()) * 10) for p in range(16)]
    assert sorted(items[:8]) == sorted(items[8:]) == list(range(8))
    assert items[:8] != list(range(8)) and items[:8] != items[8:]
    assert all(torch.equal(crops[p]["sharp"] * 2, crops[p]["blur"]) for p in range(4))


def test_synthetic_validation_pairs_are_not_training_pairs():
    # held-out synthetic pairs come from a seed the training stream never uses: with the training seed,
    # validation at the pool's size (--val-crop 128 and --pair-pool-size 128 by default) scored the pool's pairs
    from unpaired import config
    from unpaired.data import validation_pairs
    cfg = config.parse_args(["--val-size", "2", "--val-crop", "16", "--crop", "16", "--pair-pool", "2",
                             "--pair-pool-size", "16"])
    val, source = validation_pairs(cfg)
    train = synthetic_pairs(cfg.seed, 16)
    assert source is None and len(val) == 2
    for item in val:
        assert not any(torch.equal(item["sharp"], train[q]["sharp"]) for q in range(4))


def test_validation_takes_at_most_8_photos(tmp_path):
    # CycleGAN's --blurry photos give its sample grids: the first few, at most 8, whatever --val-size (32 by
    # default: each held at full size while it is cropped)
    from unpaired import config
    from unpaired.data import validation_photos
    _photos(tmp_path, [np.full((32, 40, 3), 10 * k, np.uint8) for k in range(10)])
    cfg = config.parse_args(["--mode", "cyclegan", "--blurry", str(tmp_path), "--sharp", str(tmp_path), "--crop", "32",
                             "--val-crop", "32"])
    assert cfg.val_size > 8 and len(validation_photos(cfg)) == 8


def test_photo_folders_take_capital_suffixes_and_photos_exactly_the_crop_size(tmp_path):
    # cameras write IMG_0001.JPG; a photo whose short side is the crop holds exactly one crop
    from unpaired.data import list_images
    _photos(tmp_path, [np.full((16, 20, 3), 50, np.uint8)])
    (tmp_path / "0.png").rename(tmp_path / "IMG_0001.PNG")
    assert list_images(tmp_path, "--blurry") == [tmp_path / "IMG_0001.PNG"]
    images = FolderImages(tmp_path, "--blurry", 16)
    assert images.files == [tmp_path / "IMG_0001.PNG"] and images.skipped == []
    (tmp_path / "IMG_0001.PNG").unlink()
    with pytest.raises(FileNotFoundError, match="--blurry .*: no image files"):
        list_images(tmp_path, "--blurry")


def test_a_pair_whose_sharp_twin_does_not_decode_is_skipped(tmp_path):
    from blursynth.data import PairedFolder
    from blursynth.io import write_image
    from unpaired.data import usable_pairs
    for name in ("a.png", "b.png"):
        for sub in ("lq", "gt"):
            write_image(tmp_path / sub / name, np.full((20, 20, 3), 100, np.uint8))
    (tmp_path / "gt" / "a.png").write_bytes(b"not an image")
    source = PairedFolder(tmp_path)
    skipped = usable_pairs(source, "--pairs", 16)
    assert [rec["blur"] for rec in source.records] == ["lq/b.png"]
    assert len(skipped) == 1 and "gt/a.png" in skipped[0]



def test_a_written_datasets_skipped_pair_says_how_to_remake_its_file(tmp_path):
    """A `blursynth dataset` file that is lost or does not decode is made again, byte for byte, by the
    command that wrote the folder (PairedFolder says so when it reads one): the list of skipped pairs gave
    io's advice for a photo instead, to "re-export it as PNG or JPEG"."""
    from blursynth.data import PairedFolder
    from blursynth.dataset import write_dataset
    from blursynth.recipe import load_recipe
    from unpaired.data import usable_pairs
    write_dataset(tmp_path / "set", 3, load_recipe("default").with_crop((16, 16)), seed=1, progress=False)
    (tmp_path / "set" / "blur" / "000000.png").unlink()
    (tmp_path / "set" / "sharp" / "000002.png").write_bytes(b"not an image")
    source = PairedFolder(tmp_path / "set", kernels=False)
    skipped = usable_pairs(source, "--pairs", 16)
    assert [rec["index"] for rec in source.records] == [1]
    for said, (path, index) in zip(skipped, (("blur/000000.png", 0), ("sharp/000002.png", 2))):
        assert said.startswith(f"{tmp_path / 'set' / path}: ") and "re-export" not in said
        assert f"it is pair {index} of the `blursynth dataset` folder" in said and "run the command" in said

def test_val_pairs_give_val_size_pairs_checked_at_start(tmp_path):
    # --val-pairs DIR: the first --val-size of its pairs, too small ones refused at start (not at the first
    # validation, --eval-every steps in); --pairs must keep at least one pair besides the held-out ones
    from blursynth.io import ImageError, write_image
    from unpaired import config
    from unpaired.data import validation_pairs
    for k in range(4):
        for sub in ("gt", "lq"):
            write_image(tmp_path / "val" / sub / f"{k}.png", np.full((24, 24, 3), 40 * k, np.uint8))
    cfg = config.parse_args(["--val-pairs", str(tmp_path / "val"), "--val-size", "2", "--val-crop", "16",
                             "--crop", "16"])
    val, _ = validation_pairs(cfg)
    assert [round(float(item["sharp"].mean()) * 255) for item in val] == [0, 40]
    for sub in ("gt", "lq"):
        write_image(tmp_path / "val" / sub / "0.png", np.full((12, 12, 3), 0, np.uint8))
    with pytest.raises(ImageError, match=r"--val-pairs: .*0.png is 12x12, too small to validate on"):
        validation_pairs(cfg)
    cfg = config.parse_args(["--pairs", str(tmp_path / "val"), "--val-size", "4", "--val-crop", "16", "--crop", "16"])
    with pytest.raises(ValueError, match="4 pairs cannot spare --val-size 4 for validation"):
        validation_pairs(cfg)


def test_validation_sides_are_counted_in_whole_multiples_of_the_size_factor():
    # an 11 px image holds SSIM's window, but the ResNet's validation crop of it is 8 px (a multiple of 4)
    from blursynth.io import ImageError
    from unpaired import config
    from unpaired.data import _check_sides
    cfg = config.TrainConfig(generator="resnet")
    items = [{"blur": torch.rand(3, 11, 11), "sharp": torch.rand(3, 11, 11)}]
    with pytest.raises(ImageError, match="is 11x11, too small to validate on .* at least 11 px, in multiples of 4"):
        _check_sides(items, ["a.png"], cfg, "--val-pairs")
    _check_sides([{k: torch.rand(3, 12, 12) for k in ("blur", "sharp")}], ["a.png"], cfg, "--val-pairs")
