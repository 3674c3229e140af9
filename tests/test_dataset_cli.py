"""`blursynth dataset`: layout, resumption, shards, workers and bad inputs, all compared byte for byte."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from blursynth import dataset as ds
from blursynth.cli import main
from blursynth.data import PairedFolder

RECIPE = """
name = "tiny"
crop = 24
[trajectory]
model = "camera_shake"
exposure_s = [0.05, 0.2]
samples = 16
[camera]
focal_mm = [35.0, 50.0]
frame_px = [200, 300]
[kernel]
size = 9
fit = "scale"
[sensor]
jpeg_quality = [70, 90]
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of usable photos of every kind plus unusable files."""
    root = tmp_path_factory.mktemp("photos")
    rs = np.random.RandomState(0)
    iio.imwrite(root / "rgb.png", (rs.rand(60, 70, 3) * 255).astype(np.uint8))
    iio.imwrite(root / "gray.png", (rs.rand(50, 40) * 255).astype(np.uint8))
    iio.imwrite(root / "deep.png", (rs.rand(45, 45) * 65535).astype(np.uint16))  # 16-bit gray
    iio.imwrite(root / "alpha.png", (rs.rand(40, 60, 4) * 255).astype(np.uint8))
    Image.fromarray((rs.rand(48, 48, 3) * 255).astype(np.uint8)).convert("P").save(root / "palette.png")
    (root / "sub").mkdir()
    iio.imwrite(root / "sub" / "photo.jpg", (rs.rand(64, 64, 3) * 255).astype(np.uint8))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    iio.imwrite(root / "tiny.png", (rs.rand(20, 20, 3) * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(RECIPE)
    return path


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _folders(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir())


def _run(out, photos, recipe_file, *extra, expect=0):
    """``blursynth dataset`` through the command line's entry point; checks the exit code."""
    args = ["dataset", "--out", str(out), "--pairs", "20", "--sharp", str(photos), "--recipe", str(recipe_file),
            "--seed", "3", "--quiet", *extra]
    assert main(args) == expect


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos, recipe_file):
    out = tmp_path_factory.mktemp("ref") / "set"
    _run(out, photos, recipe_file)
    return out, _snapshot(out)


def test_layout_manifest_and_dataset_json(reference, photos):
    out, files = reference
    records = [json.loads(line) for line in files["manifest.jsonl"].decode().splitlines()]
    assert [r["index"] for r in records] == list(range(20))
    names = {f"sharp/{i:06d}.png" for i in range(20)} | {f"blur/{i:06d}.png" for i in range(20)} \
        | {f"kernels/{i:06d}.npy" for i in range(20)} | {"manifest.jsonl", "dataset.json"}
    assert set(files) == names  # nothing else: no parts/, no temporaries
    rec = records[7]
    assert {"index", "sharp", "blur", "kernel", "source", "seed", "params"} <= set(rec)
    assert rec["seed"] == 3 and set(rec["params"]) == {"trajectory", "camera", "sensor"}
    assert rec["params"]["sensor"]["jpeg_quality"] in range(70, 91)
    kernel = np.load(out / rec["kernel"])
    assert kernel.shape == (9, 9) and abs(kernel.sum() - 1) < 1e-5 and kernel.min() >= 0
    assert iio.imread(out / rec["blur"]).shape == (24, 24, 3)
    # The sharp file is the recorded box of the recorded source photo.
    src, box = rec["source"]["image"], rec["source"]["box"]
    x, y, w, h = box
    from blursynth.io import read_image, to_uint
    photo = read_image(photos / src)[0]
    assert np.array_equal(iio.imread(out / rec["sharp"]), to_uint(photo[:, y:y + h, x:x + w]))
    meta = json.loads(files["dataset.json"])
    assert meta["counts"] == {"pairs": 20, "chunks": 2, "sources": 6, "skipped": 4}
    assert meta["settings"]["recipe"]["name"] == "tiny" and meta["settings"]["seed"] == 3
    assert meta["settings"]["sharp"]["images"] == 6


def test_bad_inputs_are_skipped_with_reasons_and_odd_formats_used(reference):
    out, files = reference
    meta = json.loads(files["dataset.json"])
    reasons = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert set(reasons) == {"corrupt.png", "empty.jpg", "notes.txt", "tiny.png"}
    assert "empty" in reasons["empty.jpg"] and "smaller than the 32x32" in reasons["tiny.png"]
    assert reasons["notes.txt"].startswith("not a readable image (.txt; the formats read are .bmp, ")
    assert reasons["corrupt.png"].startswith("cannot be read as an image (")
    used = {json.loads(line)["source"]["image"] for line in files["manifest.jsonl"].decode().splitlines()}
    assert used <= {"rgb.png", "gray.png", "deep.png", "alpha.png", "palette.png", "sub/photo.jpg"}
    assert len(used) >= 4


def test_resume_after_a_kill_is_byte_identical(tmp_path, photos, recipe_file, reference, monkeypatch):
    out = tmp_path / "set"
    real_write = ds.write_image
    calls = {"n": 0}

    def dying_write(path, *args, **kwargs):  # the "kill": dies in the second chunk, mid-pair
        calls["n"] += 1
        if calls["n"] == 16 * 2 + 5:
            raise KeyboardInterrupt
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ds, "write_image", dying_write)
    _run(out, photos, recipe_file, expect=130)
    monkeypatch.setattr(ds, "write_image", real_write)
    assert not (out / "manifest.jsonl").exists() and (out / "parts" / "000000.jsonl").exists()
    (out / "blur" / ".000017.k1ll3d_x.tmp.png").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    (out / "sharp" / "000003.png").unlink()  # an output lost from a complete chunk is made again
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_a_killed_overwrite_run_resumes_with_the_same_command(tmp_path, photos, recipe_file, reference, monkeypatch):
    # The interrupt says "run the same command again to complete"; when that command has --overwrite (as
    # the README's own example does) it deleted every finished chunk and began again from nothing.
    out = tmp_path / "set"
    real_write = ds.write_image
    calls = {"n": 0}

    def counting_write(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 16 * 2 + 5 and interrupt:
            raise KeyboardInterrupt
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ds, "write_image", counting_write)
    interrupt = True
    _run(out, photos, recipe_file, "--overwrite", expect=130)
    interrupt, calls["n"] = False, 0
    _run(out, photos, recipe_file, "--overwrite")
    assert calls["n"] == 2 * 4  # only the unfinished chunk's 4 pairs were made again
    assert _snapshot(out) == reference[1]
    calls["n"] = 0
    _run(out, photos, recipe_file, "--overwrite")  # a finished dataset: --overwrite still makes it anew
    assert calls["n"] == 2 * 20 and _snapshot(out) == reference[1]


def test_a_kill_while_the_first_dataset_json_is_written_resumes(tmp_path, photos, recipe_file, reference):
    # A SIGKILL between atomic_path's mkstemp and its rename leaves only the temporary of dataset.json,
    # the run's first write: the same command used to refuse the folder as "not empty", for good.
    out = tmp_path / "set"
    out.mkdir()
    (out / ".dataset.k1ll3d_x.tmp.json").write_text('{"sett')
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_finished_run_rerun_is_a_no_op_and_killed_merge_finishes(tmp_path, photos, recipe_file, reference):
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    (out / "parts").mkdir()
    (out / "parts" / "000000.jsonl").write_text("{}\n")  # killed after the manifest, before cleanup
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]
    for lost in ("blur/000017.png", "kernels/000002.npy"):  # lost after the run: made again
        (out / lost).unlink()
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_a_finished_dataset_rerun_writes_nothing(tmp_path, photos, recipe_file, reference, monkeypatch, capsys):
    # (a read-only copy or mount: chmod cannot show it, as the tests may run as root, so every write fails instead)
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(out / "dataset.json"))
    for name in ("write_json", "write_image", "atomic_path"):
        monkeypatch.setattr(ds, name, read_only)
    _run(out, photos, recipe_file)
    assert "0 pairs written, 20/20 present, complete" in capsys.readouterr().out
    assert _snapshot(out) == reference[1]


def test_a_shard_run_in_a_finished_folder_does_not_call_another_shards_loss_complete(tmp_path, photos, recipe_file,
                                                                                   reference, capsys):
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    (out / "blur" / "000017.png").unlink()  # chunk 1, shard 1/2's
    _run(out, photos, recipe_file, "--shard", "0/2")
    said = capsys.readouterr().out
    assert "16/20 present" in said and "complete" not in said.replace("run without --shard", "")
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_a_shard_run_does_not_merge_over_another_shards_missing_file(tmp_path, photos, recipe_file, reference,
                                                                    capsys):
    # in a folder not yet merged, another shard's chunk counted as done from its part file alone: the
    # --shard 0/2 run merged the manifest and said "20/20 present, complete" with blur/000017.png gone
    out = tmp_path / "set"
    _run(out, photos, recipe_file, "--shard", "1/2")
    (out / "blur" / "000017.png").unlink()
    capsys.readouterr()
    _run(out, photos, recipe_file, "--shard", "0/2")
    said = capsys.readouterr().out
    assert "16/20 present" in said and not (out / "manifest.jsonl").exists()
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_a_shard_copied_into_a_finished_folder_is_checked_not_trusted(tmp_path, photos, recipe_file, reference,
                                                                      capsys, monkeypatch):
    """Once manifest.jsonl was written, a re-run went by it alone: shard 1/2 of another --seed copied in since (the
    folder's dataset.json put back, as in the test above) left that seed's pairs under this seed's records, and the
    run removed the shard's part file, the only sign of it. One of this command's shards costs no pair."""
    _run(tmp_path / "s1", photos, recipe_file, "--shard", "1/2", "--seed", "4")
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    shutil.copytree(tmp_path / "s1", out, dirs_exist_ok=True)
    (out / "dataset.json").write_bytes(reference[1]["dataset.json"])
    capsys.readouterr()
    _run(out, photos, recipe_file, "--shard", "0/2")  # not its chunk: left, with its part file, to the run that makes it
    assert "16/20 present" in capsys.readouterr().out and (out / "parts" / "000001.jsonl").is_file()
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]
    _run(tmp_path / "s1b", photos, recipe_file, "--shard", "1/2")
    shutil.copytree(tmp_path / "s1b", out, dirs_exist_ok=True)
    made = []
    monkeypatch.setattr(ds, "make_pairs", lambda *args, **kwargs: made.append(args))
    _run(out, photos, recipe_file)
    assert made == [] and _snapshot(out) == reference[1]


def test_a_file_cut_short_by_a_killed_copy_is_made_again(tmp_path, photos, recipe_file, reference):
    """A shard folder copied in by cp, killed: its chunk's part file there, an image or kernel cut short."""
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    for name in ("blur/000003.png", "kernels/000017.npy", "sharp/000005.png"):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[:len(data) // 2])
    (out / "kernels" / "000009.npy").write_bytes(b"")
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_an_image_cut_short_alone_is_made_again(tmp_path, photos, recipe_file, reference):
    """As above with only a PNG cut short (no kernel file of its chunk damaged to give it away): a PNG
    ends in its IEND chunk, which the cut removed."""
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    data = (out / "sharp" / "000005.png").read_bytes()
    (out / "sharp" / "000005.png").write_bytes(data[:-100])
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_shards_copied_together_equal_one_run(tmp_path, photos, recipe_file, reference):
    merged = tmp_path / "merged"
    for i in range(2):
        shard_out = tmp_path / f"shard{i}"
        _run(shard_out, photos, recipe_file, "--shard", f"{i}/2")
        assert not (shard_out / "manifest.jsonl").exists()
        shutil.copytree(shard_out, merged, dirs_exist_ok=True)
    _run(merged, photos, recipe_file)  # finds every chunk done: only merges
    assert _snapshot(merged) == reference[1]


def test_shards_made_with_another_seed_are_not_mixed_in(tmp_path, photos, recipe_file, reference):
    """Shard 1 run with --seed 4 by mistake, copied in last: its chunk was merged into a seed-3 dataset."""
    _run(tmp_path / "s0", photos, recipe_file, "--shard", "0/2")
    _run(tmp_path / "s1", photos, recipe_file, "--shard", "1/2", "--seed", "4")
    out = tmp_path / "set"
    for s in ("s0", "s1"):
        shutil.copytree(tmp_path / s, out, dirs_exist_ok=True)
    (out / "dataset.json").write_bytes((tmp_path / "s0" / "dataset.json").read_bytes())  # (or refused: other seed)
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


@pytest.mark.parametrize("other", ["recipe", "crop", "layout"])
def test_shards_made_with_other_settings_are_made_again_not_mixed_in(tmp_path, photos, recipe_file, reference, other,
                                                                     capsys):
    """Shard 0 made with another recipe or --crop (the same seed), copied in: its chunk was merged into the other's.
    Made with another --layout, its files were left in gt/ and lq/ beside the chunk made again."""
    edited = tmp_path / "tiny.toml"
    edited.write_text(RECIPE.replace("[70, 90]", "[60, 90]"))  # (the same name, "tiny": only a sensor range differs)
    changed = {"recipe": ["--recipe", str(edited)], "crop": ["--crop", "16"], "layout": ["--layout", "basicsr"]}[other]
    _run(tmp_path / "s0", photos, recipe_file, "--shard", "0/2", *changed)
    _run(tmp_path / "s1", photos, recipe_file, "--shard", "1/2")
    out = tmp_path / "set"
    for s in ("s0", "s1"):  # (s1's dataset.json, copied last, is this command's: it resumes)
        shutil.copytree(tmp_path / s, out, dirs_exist_ok=True)
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]
    assert _folders(out) == _folders(reference[0])  # (not gt/ and lq/ left empty beside sharp/ and blur/)
    # s0's copied last: its dataset.json names other settings, so the command is refused, then with --overwrite
    # (which deletes both shards' files, the folder's user file kept) makes every pair anew
    out = tmp_path / "other"
    for s in ("s1", "s0"):
        shutil.copytree(tmp_path / s, out, dirs_exist_ok=True)
    (out / "notes.txt").write_text("mine")
    _run(out, photos, recipe_file, expect=2)
    assert "other settings (" in capsys.readouterr().err
    _run(out, photos, recipe_file, "--overwrite")
    assert _snapshot(out) == {**reference[1], "notes.txt": b"mine"}


def test_a_shard_of_a_larger_pairs_leaves_nothing_beyond_the_last_chunk(tmp_path, photos, recipe_file, reference,
                                                                        capsys):
    """Shard 0/2 of --pairs 40 (chunks 0 and 2) copied in with shard 1/2 of --pairs 20: chunk 0 was made again, but
    chunk 2's part file and pairs 32-39 stayed beside the finished dataset, in no manifest, where a loader that
    lists gt/ + lq/ (BasicSR) would train on them; and --pairs 40 --overwrite refused them as someone else's."""
    _run(tmp_path / "s0", photos, recipe_file, "--shard", "0/2", "--pairs", "40")
    _run(tmp_path / "s1", photos, recipe_file, "--shard", "1/2")
    for out in (tmp_path / "set", tmp_path / "set40"):
        for s in ("s0", "s1"):  # (s1's dataset.json, copied last, is this command's: it resumes)
            shutil.copytree(tmp_path / s, out, dirs_exist_ok=True)
        (out / "parts" / "engine.jpg").write_bytes(b"user photo")  # (a file of the user's in parts/: kept)
    _run(tmp_path / "set", photos, recipe_file)
    assert _snapshot(tmp_path / "set") == {**reference[1], "parts/engine.jpg": b"user photo"}
    _run(tmp_path / "set40", photos, recipe_file, "--pairs", "40", "--overwrite")
    files = _snapshot(tmp_path / "set40")
    assert len(files["manifest.jsonl"].splitlines()) == 40 and files["parts/engine.jpg"] == b"user photo"
    assert {k: files[k] for k in reference[1] if k.endswith(".png")} == {k: v for k, v in reference[1].items()
                                                                          if k.endswith(".png")}


def test_a_part_file_of_an_older_blursynth_or_cut_short_is_made_again(tmp_path, photos, recipe_file, reference,
                                                                      monkeypatch):
    """A part file with no settings line (written before it had one) closed its chunk whatever its settings; one
    cut short at the end of a line by a killed copy closed it with records missing from the manifest."""
    out = tmp_path / "set"
    for i in range(2):
        _run(tmp_path / f"s{i}", photos, recipe_file, "--shard", f"{i}/2")
        shutil.copytree(tmp_path / f"s{i}", out, dirs_exist_ok=True)
    part = out / "parts" / "000000.jsonl"
    part.write_text("".join(line for line in part.read_text().splitlines(True) if "settings_sha256" not in line))
    part = out / "parts" / "000001.jsonl"
    part.write_text("".join(part.read_text().splitlines(True)[:-1]))  # (the last of chunk 1's 4 records lost)
    real_write = ds.write_image
    calls = {"n": 0}

    def counting_write(path, *args, **kwargs):
        calls["n"] += 1
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ds, "write_image", counting_write)
    _run(out, photos, recipe_file)
    assert calls["n"] == 2 * 20  # both chunks made again
    assert _snapshot(out) == reference[1]


def test_the_same_recipe_under_another_file_name_resumes(tmp_path, photos, capsys):
    # (a recipe without a name is named after its file: the copy's name differed, and the resume was refused)
    first, copy = tmp_path / "mine.toml", tmp_path / "copy.toml"
    for path in (first, copy):
        path.write_text(RECIPE.replace('name = "tiny"\n', ""))
    out = tmp_path / "set"
    _run(out, photos, first)
    made = _snapshot(out)
    (out / "sharp" / "000003.png").unlink()
    _run(out, photos, copy)
    assert "16 pairs written, 20/20 present, complete" in capsys.readouterr().out
    assert _snapshot(out) == made  # (dataset.json too: the recipe keeps the name it was made with)
    _run(out, photos, copy, "--verify")


def test_photos_are_identified_by_content_not_path(tmp_path, photos, recipe_file, reference):
    moved = tmp_path / "elsewhere"
    shutil.copytree(photos, moved)
    out = tmp_path / "set"
    _run(out, photos, recipe_file, "--shard", "0/2")
    _run(out, moved, recipe_file)  # the same photos mounted at another path: resumes, same files
    assert _snapshot(out) == reference[1]
    (moved / "rgb.png").write_bytes((photos / "gray.png").read_bytes())  # different photos: refused
    _run(out, moved, recipe_file, expect=2)


def test_a_photo_replaced_by_another_of_the_same_name_and_size_is_another_dataset(tmp_path, photos, recipe_file):
    """The photos are identified by their names, sizes in bytes and pixels: a photo edited in place
    (same name, same width and height, other pixels) is another dataset, not one to resume."""
    mine = tmp_path / "photos"
    shutil.copytree(photos, mine)
    out = tmp_path / "set"
    _run(out, mine, recipe_file, "--shard", "0/2")
    before = (mine / "rgb.png").stat().st_size
    iio.imwrite(mine / "rgb.png", np.full((60, 70, 3), 90, np.uint8))  # flat: far fewer bytes than the noise
    assert (mine / "rgb.png").stat().st_size != before
    _run(out, mine, recipe_file, expect=2)


def test_projective_recipe_writes_kernel_grids(tmp_path, recipe_file):
    recipe = tmp_path / "proj.toml"
    recipe.write_text(recipe_file.read_text().replace("[sensor]", "[blur]\nmode = \"projective\"\ngrid = [2, 3]\n[sensor]"))
    out = tmp_path / "proj"
    assert main(["dataset", "--out", str(out), "--pairs", "3", "--recipe", str(recipe), "--quiet"]) == 0
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[2])
    grid = np.load(out / rec["kernel"])
    assert grid.shape == (2, 3, 9, 9) and np.allclose(grid.sum((-1, -2)), 1, atol=1e-5)
    assert len(rec["kernel_grid_px"]) == 6


def test_two_workers_equal_one(tmp_path, photos, recipe_file, reference):
    out = tmp_path / "set"
    _run(out, photos, recipe_file, "--workers", "2")
    assert _snapshot(out) == reference[1]


def test_spawned_workers_equal_one(tmp_path, photos, recipe_file, reference, monkeypatch):
    # --device cuda starts its workers with spawn (CUDA cannot be forked): a fresh interpreter that
    # gets the chunk writer by pickle. Run that path on the CPU, where CI can.
    import multiprocessing
    monkeypatch.setattr(ds, "_context", lambda device: multiprocessing.get_context("spawn"))
    out = tmp_path / "set"
    _run(out, photos, recipe_file, "--workers", "2")
    assert _snapshot(out) == reference[1]


def test_refuses_foreign_output_unless_overwrite(tmp_path, photos, recipe_file, reference, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    _run(other, photos, recipe_file, expect=2)
    assert "not empty" in capsys.readouterr().err and (other / "keep.txt").exists()
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    _run(out, photos, recipe_file, "--crop", "16", expect=2)
    assert "other settings (--crop 24x24 then, 16x16 now)" in capsys.readouterr().err
    _run(out, photos, recipe_file, "--pairs", "21", "--seed", "5", expect=2)
    assert "other settings (--pairs 20 then, 21 now; --seed 3 then, 5 now)" in capsys.readouterr().err
    edited = tmp_path / "tiny.toml"
    edited.write_text(RECIPE.replace("[70, 90]", "[60, 90]"))
    _run(out, photos, edited, expect=2)
    assert "other settings (recipe tiny's sensor)" in capsys.readouterr().err
    edited.write_text(RECIPE.replace('"tiny"', '"tiny2"'))
    _run(out, photos, edited, expect=2)
    assert "other settings (--recipe tiny then, tiny2 now)" in capsys.readouterr().err
    _run(out, photos, recipe_file, "--crop", "16", "--overwrite")
    assert iio.imread(out / "blur" / "000000.png").shape == (16, 16, 3)


def test_basicsr_layout_reads_back(tmp_path, photos, recipe_file, reference):
    out = tmp_path / "bsr"
    _run(out, photos, recipe_file, "--layout", "basicsr")
    files = _snapshot(out)
    assert {k.split("/")[0] for k in files} == {"gt", "lq", "kernels", "manifest.jsonl", "dataset.json"}
    assert files["lq/000005.png"] == reference[1]["blur/000005.png"]
    # BasicSR readers need only lq/ + gt/: PairedFolder reads that layout too.
    bare = tmp_path / "bare"
    shutil.copytree(out / "lq", bare / "lq")
    shutil.copytree(out / "gt", bare / "gt")
    pairs = PairedFolder(bare)
    assert len(pairs) == 20
    item = pairs[5]
    assert item["blur"].shape == (3, 24, 24)
    assert np.array_equal((item["blur"].numpy() * 255).round(), iio.imread(out / "lq/000005.png").transpose(2, 0, 1))


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "--shard"),
    (["--shard", "x"], "--shard"),
    (["--shard", "-1/4"], "--shard '-1/4': need 0 <= I < N"),  # (argparse alone: "expected one argument")
    (["--shard", "1/2/3"], "--shard '1/2/3': expected I/N"),  # (not shard 1/2 with the rest ignored)
    (["--shard", "0/0"], "--shard '0/0': need 0 <= I < N"),
    (["--crop", "3"], "--crop"),
    # (not the recipe file's error: "datasets/default.toml with crop 20000x20000: crop: must be in [8, 16384]")
    (["--crop", "20000"], "error: --crop '20000': sides must be at most 16384 px"),
    (["--crop", "32x20000"], "error: --crop '32x20000': sides must be at most 16384 px"),
    (["--workers", "0"], "--workers"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
])
def test_bad_options_are_named(tmp_path, photos, recipe_file, extra, message, capsys):
    _run(tmp_path / "x", photos, recipe_file, *extra, expect=2)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_out_that_cannot_be_made_is_refused_not_resumed(tmp_path, capsys):
    # a file on the way of --out (or /proc) was exit 1 with "run the same command again ... it resumes"
    (tmp_path / "afile").write_text("x")
    targets = [tmp_path / "afile" / "sub"] + [Path("/proc/blursynth-x")] * os.path.isdir("/proc/self")
    for target in targets:
        assert main(["dataset", "--out", str(target), "--pairs", "2", "--crop", "16", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {target}: cannot make a folder there" in err, err
        assert "choose another --out" in err and "resume" not in err


def test_an_out_under_a_link_to_a_missing_folder_is_refused_naming_the_link(tmp_path, capsys):
    # (a purged scratch disk leaves such links: making --out failed with "File exists", which said nothing)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for target in (tmp_path / "link", tmp_path / "link" / "set"):
        assert main(["dataset", "--out", str(target), "--pairs", "2", "--crop", "16", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {target}: {tmp_path / 'link'} is a link to {tmp_path / 'gone'}, " \
            "which does not exist; make that folder, or choose another --out" in err, err
        assert not (tmp_path / "gone").exists()


def test_a_manifest_cut_short_is_completed_not_called_complete(tmp_path, photos, recipe_file, reference, capsys):
    # A copy of a finished folder killed part way cuts its last file short; when that was manifest.jsonl, the same
    # command said "20/20 present, complete" over it, and PairedFolder refused it ("holds 17 records, not the 20").
    ref, files = reference
    lines = files["manifest.jsonl"].splitlines(keepends=True)
    cuts = {"mid-record": b"".join(lines[:17]) + lines[17][:40], "at a line": b"".join(lines[:19]),
            "in the first chunk": b"".join(lines[:5]), "empty": b""}
    for what, text in cuts.items():
        out = tmp_path / what.replace(" ", "_")
        shutil.copytree(ref, out)
        (out / "manifest.jsonl").write_bytes(text)
        capsys.readouterr()
        _run(out, photos, recipe_file)
        # only the chunks whose records were lost are made again (the first chunk holds 16 of the 20 pairs)
        written = 4 if len(text.splitlines()) >= 16 else 20
        assert capsys.readouterr().out.startswith(f"{out}: {written} pairs written, 20/20 present, complete"), what
        assert _snapshot(out) == files, what
        assert len(PairedFolder(out)) == 20


def test_overwrite_over_a_damaged_dataset_json_says_so(tmp_path, photos, recipe_file, reference, capsys):
    # It was refused as "there is no dataset.json to name them; if they are a shard's, copy its dataset.json in too"
    ref, files = reference
    out = tmp_path / "set"
    shutil.copytree(ref, out)
    (out / "dataset.json").write_bytes(files["dataset.json"][:100])  # (a copy killed part way)
    capsys.readouterr()
    _run(out, photos, recipe_file, "--overwrite", expect=2)
    err = capsys.readouterr().err
    assert "its dataset.json cannot be read" in err and "copy it in again" in err, err
    assert "there is no dataset.json" not in err and err.count("\n") == 1, err
    (out / "dataset.json").write_bytes(files["dataset.json"])  # as it says
    _run(out, photos, recipe_file)
    assert _snapshot(out) == files


def test_a_folder_with_no_usable_image_is_an_error(tmp_path, recipe_file, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    _run(tmp_path / "out", tmp_path / "in", recipe_file, expect=2)
    assert "no usable image" in capsys.readouterr().err


def test_defaults_make_dead_leaves_pairs(tmp_path, capsys):
    out = tmp_path / "dl"
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--crop", "32", "--quiet"]) == 0
    assert "2 pairs written" in capsys.readouterr().out
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[1])
    assert rec["source"]["image"] == "dead_leaves" and rec["params"]["sensor"]["shot_noise"] > 0
    assert iio.imread(out / rec["blur"]).shape == (32, 32, 3)
    assert json.loads((out / "dataset.json").read_text())["settings"]["recipe"]["name"] == "default"


def _corrupt_png(good: bytes) -> bytes:
    """``good`` with its compressed image data damaged but every chunk's CRC recomputed to match."""
    pos = 8
    while True:
        (length,) = struct.unpack_from(">I", good, pos)
        if good[pos + 4:pos + 8] == b"IDAT":
            break
        pos += 12 + length
    body = bytearray(good[pos + 8:pos + 8 + length])
    for k in range(len(body) // 3, len(body) // 3 + 16):
        body[k] ^= 0x5A
    chunk = b"IDAT" + bytes(body)
    return good[:pos + 4] + chunk + struct.pack(">I", zlib.crc32(chunk)) + good[pos + 12 + length:]


def test_png_with_sound_crcs_but_corrupt_data_is_skipped_at_the_scan(tmp_path, photos, recipe_file):
    folder = tmp_path / "in"
    (folder / "crcok").mkdir(parents=True)
    shutil.copy(photos / "rgb.png", folder / "rgb.png")
    (folder / "crcok" / "zbad.png").write_bytes(_corrupt_png((photos / "rgb.png").read_bytes()))
    from blursynth.io import ImageError, read_image
    with pytest.raises(ImageError):
        read_image(folder / "crcok" / "zbad.png")  # the damage is real: the decoder refuses it
    out = tmp_path / "set"
    _run(out, folder, recipe_file, "--pairs", "4")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"]["skipped"] == 1 and meta["skipped"][0]["file"] == "crcok/zbad.png"
    assert meta["skipped"][0]["reason"].startswith("cannot be read as an image (")


def test_a_png_whose_ancillary_chunk_the_decoder_refuses_is_skipped_at_the_scan(tmp_path, photos, recipe_file):
    # (a pHYs cut to 2 bytes, its CRC sound: the scan kept it, and the run stopped at the first pair reading it)
    folder = tmp_path / "in"
    folder.mkdir()
    good = (photos / "rgb.png").read_bytes()
    shutil.copy(photos / "rgb.png", folder / "rgb.png")
    at = good.index(b"IDAT") - 4
    chunk = b"pHYs\0\0"
    (folder / "short.png").write_bytes(good[:at] + struct.pack(">I", 2) + chunk + struct.pack(">I", zlib.crc32(chunk))
                                       + good[at:])
    out = tmp_path / "set"
    _run(out, folder, recipe_file, "--pairs", "4")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"]["skipped"] == 1 and meta["skipped"][0]["file"] == "short.png"
    assert "Truncated pHYs chunk" in meta["skipped"][0]["reason"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_photo_that_fails_after_the_scan_says_how_to_go_on(tmp_path, photos, recipe_file, capsys, monkeypatch,
                                                             workers):
    from blursynth import pairs
    from blursynth.io import ImageError
    real_read = pairs.read_samples

    def damaged(path, *args, **kwargs):  # as if rgb.png were damaged after the scan
        if Path(path).name == "rgb.png":
            raise ImageError(f"{path}: cannot be read as an image (OSError: broken); remove it or re-export it")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pairs, "read_samples", damaged)
    # exit status 1, the run failed (it was 2, which is for a refused command line)
    _run(tmp_path / "set", photos, recipe_file, "--workers", workers, "--pairs", "40", expect=1)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rgb.png" in err
    assert "replace it with a good copy" in err and "--overwrite" in err


@pytest.mark.parametrize("name", ["blur", "parts"])
def test_a_file_where_the_dataset_writes_a_folder_is_refused_before_anything_goes(tmp_path, photos, recipe_file,
                                                                                    reference, capsys, name):
    # (a file named blur: the run failed at its first pair with "File exists", after --overwrite had deleted the
    # earlier dataset's files)
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    shutil.rmtree(out / name, ignore_errors=True)
    (out / name).write_bytes(b"the user's")
    before = _snapshot(out)
    _run(out, photos, recipe_file, "--pairs", "4", "--overwrite", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out / name} is a file, where the dataset writes a folder" in err
    assert _snapshot(out) == before


def test_overwrite_deletes_only_the_datasets_own_files(tmp_path, photos, recipe_file, reference):
    out = tmp_path / "mydata"
    shutil.copytree(reference[0], out)
    (out / "manifest.jsonl").unlink()  # as if killed mid-run: a part file and images of an open chunk
    (out / "parts").mkdir()
    (out / "parts" / "000000.jsonl").write_text("{}\n")
    (out / "blur" / ".000017.k1ll3d_x.tmp.png").write_bytes(b"half")
    mine = {"sharp/my_photo1.png": b"user photo", "gt/real_0001.png": b"user gt", "notes.txt": b"notes",
            "kernels/sub/keep.npy": b"user kernel"}
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    _run(out, photos, recipe_file, "--pairs", "4", "--crop", "16", "--overwrite")
    files = _snapshot(out)
    assert {k: files[k] for k in mine} == mine
    made = {f"{d}/{i:06d}.{e}" for d, e in (("sharp", "png"), ("blur", "png"), ("kernels", "npy")) for i in range(4)}
    assert set(files) == made | set(mine) | {"manifest.jsonl", "dataset.json"}
    assert not (out / "parts").exists()


def test_overwrite_in_the_shard_folder_of_a_huge_dataset_takes_little_memory(tmp_path, recipe_file):
    """--overwrite listed every name the old and the new dataset.json could name, three per pair: in the
    folder of one shard of a --pairs 100,000,000 run (the most allowed) that was tens of GB (a MemoryError,
    or the machine's out-of-memory killer) before a file was deleted. Here 2,000,000 pairs: 6 million names."""
    import tracemalloc
    out = tmp_path / "shard"
    assert main(["dataset", "--out", str(out), "--pairs", "2000000", "--shard", "0/125000", "--recipe",
                 str(recipe_file), "--crop", "16", "--quiet"]) == 0  # chunk 0 of 125,000: 16 pairs
    tracemalloc.start()
    try:
        ds._remove_own_files(out, ds._previous_settings(out), {**ds._previous_settings(out), "pairs": 4})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert sorted(os.listdir(out)) == []  # its 16 pairs, part file and dataset.json deleted, the folders too


def test_overwrite_reads_a_large_manifest_in_little_memory(tmp_path):
    """--overwrite read the earlier manifest whole, split it into lines and listed every file it names,
    all at once: GBs for a finished dataset of a few million pairs. 200,000 records here."""
    import tracemalloc
    out = tmp_path / "big"
    out.mkdir()
    with open(out / "manifest.jsonl", "w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"blur": f"blur/{i:06d}.png", "index": i, "kernel": f"kernels/{i:06d}.npy",
                                 "sharp": f"sharp/{i:06d}.png"}) + "\n")
    settings = {"pairs": 4, "layout": "blursynth"}
    (out / "dataset.json").write_text(json.dumps({"settings": {"pairs": 200_000, "layout": "blursynth"}}))
    (out / "sharp").mkdir()
    (out / "sharp" / "000007.png").write_bytes(b"a pair of it")
    (out / "sharp" / "mine.png").write_bytes(b"a photo of the user's")
    tracemalloc.start()
    try:
        ds._remove_own_files(out, ds._previous_settings(out), settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["sharp", "sharp/mine.png"]


def test_the_end_of_a_run_of_many_chunks_counts_them_all(tmp_path, recipe_file, monkeypatch):
    """A folder of 125,000 finished chunks (their part files and pairs stood in for) is merged once and
    counted whole. (The count looked each chunk up in a list of this shard's chunks: 40 s here, hours for
    the 100,000,000 pairs allowed; a range takes 0.3 s. Timed by hand, not here.)"""
    chunks = 125_000
    monkeypatch.setattr(ds, "_part_chunks", lambda out: set(range(chunks)))
    monkeypatch.setattr(ds, "_part_done", lambda *args: True)
    monkeypatch.setattr(ds, "_files_present", lambda *args: True)
    merged = []
    monkeypatch.setattr(ds, "_merge", lambda out, n: merged.append(n))
    result = ds.write_dataset(tmp_path / "big", chunks * ds.CHUNK, recipe_file, crop=16, progress=False)
    assert merged == [chunks] and result == {"written": 0, "done": chunks * ds.CHUNK, "complete": True}


def test_the_users_own_parts_folder_is_kept(tmp_path, photos, recipe_file):
    """A folder of the user's named parts/ (photos of machine parts) in --out: --overwrite keeps its files,
    and so must the merge, which removed the whole folder, and the re-run of a finished dataset."""
    out = tmp_path / "mydata"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "engine.jpg").write_bytes(b"user photo")
    _run(out, photos, recipe_file, "--pairs", "4", "--overwrite")
    assert (out / "parts" / "engine.jpg").read_bytes() == b"user photo"
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["engine.jpg"]  # the part files are gone
    (out / "parts" / "000000.jsonl").write_text("{}\n")  # as a kill after the merge leaves it
    _run(out, photos, recipe_file, "--pairs", "4")
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["engine.jpg"]


def test_an_overwrite_interrupted_while_deleting_is_finished_by_the_same_command(tmp_path, photos, recipe_file,
                                                                                 reference, monkeypatch):
    # Ctrl-C while --overwrite deleted the old pairs (many files: it takes a while) removed dataset.json,
    # the file that names them, before the rest; the same command then took the old pairs left behind
    # for someone else's files and refused the folder for good.
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    unlink, deleted = Path.unlink, []

    def interrupted(self, *args, **kwargs):
        if len(deleted) == 30:
            raise KeyboardInterrupt
        deleted.append(self)
        return unlink(self, *args, **kwargs)
    monkeypatch.setattr(Path, "unlink", interrupted)
    _run(out, photos, recipe_file, "--pairs", "4", "--overwrite", expect=130)
    monkeypatch.setattr(Path, "unlink", unlink)
    _run(out, photos, recipe_file, "--pairs", "4", "--overwrite")
    made = {f"{d}/{i:06d}.{e}" for d, e in (("sharp", "png"), ("blur", "png"), ("kernels", "npy")) for i in range(4)}
    assert set(_snapshot(out)) == made | {"manifest.jsonl", "dataset.json"}


def test_overwrite_of_a_folder_that_is_no_dataset_keeps_everything(tmp_path, photos, recipe_file, capsys):
    out = tmp_path / "other"
    (out / "sharp").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    _run(out, photos, recipe_file, "--pairs", "4", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine" and (out / "manifest.jsonl").is_file()
    foreign = tmp_path / "foreign"
    (foreign / "blur").mkdir(parents=True)
    (foreign / "blur" / "000002.png").write_bytes(b"someone else's")  # where the dataset would write
    _run(foreign, photos, recipe_file, "--pairs", "4", "--overwrite", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "blur/000002.png" in err
    # one file, and a folder with no dataset.json: said so (it read "lie ... its dataset.json does not name them")
    assert "blur/000002.png lies where" in err and "there is no dataset.json to name it" in err
    assert "if they are a shard's, copy its dataset.json in too" in err
    assert (foreign / "blur" / "000002.png").read_bytes() == b"someone else's"


@pytest.mark.parametrize("sharp_at, out_at", [("mydata/sharp", "mydata"), ("mydata/gt/real", "mydata"),
                                              ("mydata", "mydata"), ("photos", "photos/set")])
def test_photos_in_the_output_folders_are_refused(tmp_path, photos, recipe_file, capsys, sharp_at, out_at):
    sharp = tmp_path / sharp_at
    shutil.copytree(photos, sharp)
    before = _snapshot(sharp)
    _run(tmp_path / out_at, sharp, recipe_file, "--pairs", "4", "--overwrite", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sharp" in err and "--out" in err
    assert _snapshot(sharp) == before


def test_an_output_folder_linked_to_the_photos_is_refused(tmp_path, photos, recipe_file, capsys):
    """out/sharp a link to the photo folder: the dataset wrote its crops among the user's photos."""
    sharp = tmp_path / "photos"
    shutil.copytree(photos, sharp)
    before = _snapshot(sharp)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "sharp").symlink_to(sharp)
    _run(tmp_path / "set", sharp, recipe_file, "--pairs", "4", "--overwrite", expect=2)
    assert "--sharp" in capsys.readouterr().err
    assert _snapshot(sharp) == before


def test_photos_beside_the_output_folders_are_fine(tmp_path, photos, recipe_file):
    shutil.copytree(photos, tmp_path / "mydata" / "photos")
    _run(tmp_path / "mydata", tmp_path / "mydata" / "photos", recipe_file, "--pairs", "4", "--overwrite")
    _run(tmp_path / "mydata", tmp_path / "mydata" / "photos", recipe_file, "--pairs", "4")  # resumes: same photos


def test_links_in_the_photo_folder_to_the_output_folders_are_skipped(tmp_path, photos, recipe_file, capsys):
    """Photo folders follow links, and only --out inside --sharp (and the reverse) was checked: a link to --out's
    sharp/, broken before the first run, read the pairs back as photos. With a "reflect" boundary (no margin) they
    were usable: the resume was refused ("9 photos then, 90 photos now"), and --overwrite would have deleted the
    photos it had just scanned. Links to --out, into it and to a folder holding it are skipped, the same each run."""
    recipe = tmp_path / "reflect.toml"
    recipe.write_text(RECIPE.replace("[sensor]", '[blur]\nboundary = "reflect"\n[sensor]'))
    sharp, out = tmp_path / "photos", tmp_path / "data" / "set"
    shutil.copytree(photos, sharp)
    links = {"more": out / "sharp", "all": out, "sub/one.png": out / "blur" / "000001.png", "up": out.parent,
             "mine": out / "photos"}  # (your photos beside the pairs: fine, as --sharp DIR/photos is)
    for name, target in links.items():
        (sharp / name).symlink_to(target)
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "p.png").write_bytes((photos / "rgb.png").read_bytes())
    _run(out, sharp, recipe, "--overwrite")  # (--out holds photos/: not empty)
    whole = _snapshot(out)
    for name in ("sharp", "blur", "kernels", "manifest.jsonl", "dataset.json"):
        (shutil.rmtree if (out / name).is_dir() else Path.unlink)(out / name)
    _run(out, sharp, recipe, "--shard", "0/2", "--overwrite")
    _run(out, sharp, recipe)  # the pairs of shard 0 are in sharp/ now: still no photos
    assert _snapshot(out) == whole
    meta = json.loads(whole["dataset.json"])
    reasons = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert meta["counts"]["sources"] == 7 and set(reasons) - {"corrupt.png", "empty.jpg", "notes.txt", "tiny.png"} \
        == {"more", "all", "sub/one.png", "up"}
    assert reasons["more"] == (f"symbolic link to {out / 'sharp'}, inside --out {out}'s sharp/ folder, where the "
                               "dataset writes its pairs: they would be read back as photos; not followed (remove "
                               "the link, or link the photo folders themselves)")
    assert f"--out {out} itself," in reasons["all"] and f"a folder that holds --out {out}," in reasons["up"]


SIXTEEN = RECIPE.replace("jpeg_quality = [70, 90]", "bits = 16")


def test_sixteen_bit_recipe_writes_sixteen_bit_pngs(tmp_path):
    recipe = tmp_path / "deep.toml"
    recipe.write_text(SIXTEEN)
    out = tmp_path / "deep"
    assert main(["dataset", "--out", str(out), "--pairs", "3", "--recipe", str(recipe), "--quiet"]) == 0
    from blursynth.io import read_image
    for kind in ("blur", "sharp"):
        header = (out / kind / "000001.png").read_bytes()[:26]
        assert header[24] == 16 and header[25] == 2  # IHDR: 16 bits per sample, RGB
    (blur, blur_bits), (sharp, sharp_bits) = (read_image(out / k / "000001.png") for k in ("blur", "sharp"))
    assert blur_bits == sharp_bits == 16 and blur.shape == (3, 24, 24)
    levels = np.unique((blur * 65535).round())
    assert len(levels) > 256 and not np.all(levels % 257 == 0)  # really 16-bit values, not 8-bit ones scaled
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[1])
    assert rec["params"]["sensor"]["bits"] == 16
    item = PairedFolder(out)[1]  # the trainers' reader gets every level back
    assert np.array_equal(item["blur"].numpy(), blur) and np.array_equal(item["sharp"].numpy(), sharp)


def test_float_output_recipe_is_refused(tmp_path, capsys):
    recipe = tmp_path / "float.toml"
    recipe.write_text(RECIPE.replace("jpeg_quality = [70, 90]", 'bits = "off"'))
    assert main(["dataset", "--out", str(tmp_path / "f"), "--pairs", "3", "--recipe", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sensor.bits" in err and str(recipe) in err
    assert not (tmp_path / "f").exists()


def test_frame_px_is_checked_only_for_procedural_scenes(tmp_path, photos, recipe_file, capsys):
    recipe = tmp_path / "small_frame.toml"
    recipe.write_text(RECIPE.replace("frame_px = [200, 300]", "frame_px = [32, 32]"))
    _run(tmp_path / "photos", photos, recipe, "--pairs", "4", "--crop", "28")  # photos: their own size
    assert main(["dataset", "--out", str(tmp_path / "dl"), "--pairs", "4", "--recipe", str(recipe),
                 "--crop", "28", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "camera.frame_px" in err


def test_broken_links_are_listed_and_sizes_read_as_the_crop_option(tmp_path, photos):
    from blursynth.pairs import ImageFolder
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    found = ImageFolder.scan(folder, (32, 48))  # --crop 24x40 with a 9 px kernel: 32 high, 48 wide
    reasons = {s["file"]: s["reason"] for s in found.skipped}
    assert "broken" in reasons["gone.png"] and "nowhere.png, which does not exist" in reasons["gone.png"]
    # (a loop was "which does not exist" too, though each link's target is there, as a link)
    assert reasons["loop_a.png"] == \
        f"broken symbolic link (to {folder / 'loop_b.png'}, a loop of links); fix or remove the link"
    assert reasons["gray.png"].startswith("image is 50x40 (height x width), smaller than the 32x48 needed")


def _unlistable(monkeypatch, name: str) -> None:
    """Make listing any folder called ``name`` fail as chmod 000 does (root lists any folder, so the
    refusal is stood in for)."""
    iterdir = Path.iterdir

    def refuse(self):
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)
    monkeypatch.setattr(Path, "iterdir", refuse)


def test_fifos_devices_and_folders_that_cannot_be_listed_are_listed_as_skipped(tmp_path, photos, monkeypatch):
    # they were passed over without a word: a folder of photos the user thought used, or a FIFO named photo.png
    from blursynth.pairs import ImageFolder
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "locked").mkdir()
    _unlistable(monkeypatch, "locked")
    found = ImageFolder.scan(folder, (32, 32))
    reasons = {s["file"]: s["reason"] for s in found.skipped}
    assert reasons["fifo.png"] == reasons["zero.png"] == "not a regular file (a FIFO, socket or device); remove it"
    assert reasons["locked"] == "a folder that cannot be listed (Permission denied); make it readable (chmod +rx) or remove it"
    assert found.files == ImageFolder.scan(photos, (32, 32)).files


def test_a_link_to_a_folder_above_the_photos_is_a_loop_not_an_error(tmp_path, photos):
    """`ln -s .. photos/up`: the loop shows one level down, at up/photos, which is no link itself, and reading it as
    one (os.readlink) stopped `blursynth dataset` with "--out ...: cannot write .../up/photos (Invalid argument)"."""
    from blursynth.pairs import ImageFolder
    shutil.copytree(photos, tmp_path / "top" / "photos")
    (tmp_path / "top" / "photos" / "up").symlink_to("..")
    found = ImageFolder.scan(tmp_path / "top" / "photos", (32, 32))
    reasons = {s["file"]: s["reason"] for s in found.skipped}
    assert "repeat forever" in reasons["up/photos"] and found.files == ImageFolder.scan(photos, (32, 32)).files


def test_a_folder_of_nothing_usable_says_why(tmp_path, monkeypatch):
    # a FIFO alone, or a root that cannot be listed, was reported as "the folder has no image files"
    from blursynth.io import ImageError
    from blursynth.pairs import ImageFolder
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "fifo.png")
    with pytest.raises(ImageError, match=r"no usable image \(skipped 1 files: fifo\.png: not a regular file"):
        ImageFolder.scan(tmp_path / "in", (32, 32))
    _unlistable(monkeypatch, "in")
    with pytest.raises(ImageError, match=r"in'?: the folder cannot be listed \(Permission denied\)"):
        ImageFolder.scan(tmp_path / "in", (32, 32))


def test_an_empty_photo_folder_says_so(tmp_path, recipe_file, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _run(tmp_path / "out", tmp_path / "in", recipe_file, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no image files" in err and "skipped 0" not in err


# Signals, on a real process with two forked workers.

ROOT = Path(__file__).resolve().parents[1]
SIGNAL_ARGS = ["--pairs", "64", "--crop", "128", "--seed", "1", "--quiet"]
# (this checkout first; the rest of PYTHONPATH kept, where the dependencies may be)
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
             "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def signal_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("sigref") / "set"
    assert main(["dataset", "--out", str(out), *SIGNAL_ARGS]) == 0
    return _snapshot(out)


def _start(out):
    cmd = [sys.executable, "-m", "blursynth", "dataset", "--out", str(out), "--workers", "2", *SIGNAL_ARGS]
    # Ctrl-C at a terminal reaches a command that takes SIGINT; pytest started in the background (`&`,
    # nohup) hands its children SIGINT ignored, which Python then leaves ignored
    proc = subprocess.Popen(cmd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any((out / "parts").glob("0*.jsonl")):  # working: a chunk is done, the next ones are being made
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert len(workers) == 2
    return proc, workers


def _children(pid):
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid]


def _parent(proc_dir):
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids, within):
    deadline = time.monotonic() + within
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(map(_alive, pids))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_sigterm_stops_the_workers_and_the_rerun_completes(tmp_path, signal_reference):
    out = tmp_path / "set"
    proc, workers = _start(out)
    proc.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` or a job scheduler does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [f"blursynth dataset: interrupted; run the same command again to "
                                        f"complete {out}"]
    assert _gone(workers, 2)
    assert main(["dataset", "--out", str(out), "--workers", "2", *SIGNAL_ARGS]) == 0
    assert _snapshot(out) == signal_reference


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_workers_stop_when_the_parent_is_killed(tmp_path, signal_reference):
    out = tmp_path / "set"
    proc, workers = _start(out)
    proc.kill()
    proc.wait(timeout=60)  # (not communicate: it would wait for the workers, which hold its pipes too)
    files = _snapshot(out)
    assert _gone(workers, 0.3), "workers outlived their parent"
    time.sleep(1.5)  # an orphaned worker would finish its chunk meanwhile (a second here)
    assert _snapshot(out) == files and "manifest.jsonl" not in files, "workers wrote on after their parent died"
    assert main(["dataset", "--out", str(out), *SIGNAL_ARGS]) == 0
    assert _snapshot(out) == signal_reference


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_a_worker_killed_mid_chunk_is_one_line_and_the_rerun_completes(tmp_path, signal_reference):
    # as the OOM killer does: multiprocessing.Pool started a new worker, lost the chunk and waited
    # for it for ever
    out = tmp_path / "set"
    proc, workers = _start(out)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == ["blursynth dataset: error: a worker process died (killed by SIGKILL) while "
                                        "making pairs; run the same command again to complete the dataset (with fewer "
                                        "--workers if memory ran out)"]
    assert _gone(workers, 2)
    assert main(["dataset", "--out", str(out), *SIGNAL_ARGS]) == 0
    assert _snapshot(out) == signal_reference


class _DiesAtChunkOne:
    def __call__(self, chunk):
        if chunk == 1:
            time.sleep(0.1)  # (after chunk 0's result: the parent, busy with it, finds this worker long dead)
            os._exit(3)
        return 1, []  # (pairs done, problems found), as a chunk writer returns


def test_a_worker_found_dead_after_its_pipe_closed_is_worker_died_too():
    # A dead worker's result pipe is at its end, which polls as readable: seen after the process had
    # fully exited, it was read as a result, and EOFError escaped as a traceback.
    def slow(n):
        time.sleep(0.5)
    with pytest.raises(ds.WorkerDied, match=r"a worker process died \(exit status 3\)"):
        ds._run_chunks(_DiesAtChunkOne(), list(range(4)), 2, "cpu", slow)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_ctrl_c_prints_one_line(tmp_path):
    out = tmp_path / "set"
    proc, workers = _start(out)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [f"blursynth dataset: interrupted; run the same command again to "
                                        f"complete {out}"]
    assert _gone(workers, 2)


CUDA = pytest.mark.skipif(not torch.cuda.is_available() or not Path("/proc/self/stat").exists(),
                          reason="needs a CUDA device; reads process parents from /proc")


@CUDA
def test_cuda_spawned_workers_equal_one_and_two_runs_are_the_same_bytes(tmp_path, photos, recipe_file):
    runs = []
    for name, workers in [("one", "1"), ("two", "2"), ("again", "1")]:
        _run(tmp_path / name, photos, recipe_file, "--device", "cuda", "--workers", workers)
        runs.append(_snapshot(tmp_path / name))
    assert runs[0] == runs[1] == runs[2]


@CUDA
def test_cuda_sigterm_stops_the_spawned_workers_and_the_rerun_completes(tmp_path):
    args = [*SIGNAL_ARGS, "--device", "cuda"]
    assert main(["dataset", "--out", str(tmp_path / "ref"), *args]) == 0
    out = tmp_path / "set"
    proc = subprocess.Popen([sys.executable, "-m", "blursynth", "dataset", "--out", str(out), "--workers", "2",
                             *args], env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180  # (each spawned worker starts CUDA anew)
    while not any((out / "parts").glob("0*.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    children = _children(proc.pid)  # the two workers and multiprocessing's resource tracker
    assert len(children) >= 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == [f"blursynth dataset: interrupted; run the same command again to "
                                        f"complete {out}"]
    assert _gone(children, 10)
    assert main(["dataset", "--out", str(out), "--workers", "2", *args]) == 0
    assert _snapshot(out) == _snapshot(tmp_path / "ref")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_kernel_that_does_not_fit_is_one_line_naming_the_recipe_keys(tmp_path, capsys, workers):
    # with workers, the error could not be unpickled in the parent, and the run hung for good
    recipe = tmp_path / "fit.toml"
    recipe.write_text('crop = 16\n[kernel]\nsize = 3\nfit = "error"\n')  # (pair 5's shake does not fit)
    assert main(["dataset", "--out", str(tmp_path / "f"), "--pairs", "40", "--recipe", str(recipe), "--quiet",
                 "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'kernel.size = 3, kernel.fit = "error"' in err, err


def test_a_run_stopped_before_its_first_pair_does_not_hold_the_folder(tmp_path, capsys):
    # It leaves a dataset.json alone, and the corrected command was refused as "other settings" until --overwrite.
    recipe, out = tmp_path / "fit.toml", tmp_path / "f"
    recipe.write_text('crop = 16\n[kernel]\nsize = 3\nfit = "error"\n')  # (pair 5's shake does not fit)
    assert main(["dataset", "--out", str(out), "--pairs", "8", "--recipe", str(recipe), "--quiet"]) == 2
    assert os.listdir(out) == ["dataset.json"]
    recipe.write_text('crop = 16\n[kernel]\nsize = 3\nfit = "scale"\n')
    assert main(["dataset", "--out", str(out), "--pairs", "8", "--recipe", str(recipe), "--quiet"]) == 0
    assert json.loads((out / "dataset.json").read_text())["settings"]["recipe"]["kernel"]["fit"] == "scale"
    # a folder with a pair in it is still refused to another command
    (out / "dataset.json").unlink()
    (out / "manifest.jsonl").unlink()
    assert main(["dataset", "--out", str(out), "--pairs", "8", "--quiet"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_a_dataset_json_of_the_users_is_not_taken_for_a_stopped_run(tmp_path, capsys):
    # a run stopped before its first pair frees its folder; a dataset.json someone else wrote does not
    out = tmp_path / "o"
    out.mkdir()
    (out / "dataset.json").write_text('{"license": "CC"}')
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--quiet"]) == 2
    assert "its dataset.json is unreadable); choose another --out or pass --overwrite" in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == '{"license": "CC"}'
    (out / "dataset.json").unlink()
    (out / "dataset.json").mkdir()
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--quiet"]) == 2
    (out / "dataset.json").rmdir()
    (out / "sharp" / "mine").mkdir(parents=True)  # a folder of the user's where the pairs go
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--quiet"]) == 2
    assert os.listdir(out) == ["sharp"] and os.listdir(out / "sharp") == ["mine"]


def test_absurd_pair_counts_are_refused_before_out_is_touched(tmp_path, capsys):
    # --pairs 10**20 ran out of memory after dataset.json was written, which then held the folder
    assert main(["dataset", "--out", str(tmp_path / "o"), "--pairs", str(10**20), "--quiet"]) == 2
    assert "at most 100,000,000 pairs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_photo_names_that_are_not_utf8_are_used(tmp_path, recipe_file):
    # a name from an old Windows share or a Latin-1 camera card (b"\xe9t\xe9.jpg") is a valid file
    # name: it must not crash the run's folder digest, and the run resumes on the same folder
    photos = tmp_path / "photos"
    photos.mkdir()
    rs = np.random.RandomState(1)
    name = os.fsdecode(b"\xe9t\xe9.png")
    iio.imwrite(photos / name, (rs.rand(60, 70, 3) * 255).astype(np.uint8))
    _run(tmp_path / "set", photos, recipe_file, "--pairs", "4")
    records = [json.loads(line) for line in (tmp_path / "set" / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"]["image"] for r in records} == {name}
    _run(tmp_path / "set", photos, recipe_file, "--pairs", "4")  # the same settings: nothing to redo


def test_a_second_run_in_the_same_folder_is_refused_while_one_writes(tmp_path, photos, recipe_file, reference,
                                                                     monkeypatch, capsys):
    # Two runs in one folder (the same command twice, or two shards pointed at one shared folder): the
    # second used to delete the first's write in flight as a killed run's temporary, so the first
    # failed to rename it (and two runs of the same chunks left parts/ behind after the manifest).
    import threading

    out = tmp_path / "set"
    real_write = ds.write_image
    in_flight, resume = threading.Event(), threading.Event()

    def slow_write(path, *args, **kwargs):  # the first run, paused in the middle of one write
        if threading.current_thread() is not threading.main_thread() and not in_flight.is_set():
            with ds.atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                in_flight.set()
                resume.wait(30)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ds, "write_image", slow_write)
    errors = []

    def first():
        try:
            ds.write_dataset(out, 20, recipe=str(recipe_file), sharp=photos, seed=3, shard=(0, 2), progress=False)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert in_flight.wait(30)
        _run(out, photos, recipe_file, "--shard", "1/2", expect=2)
    finally:
        resume.set()
        thread.join(60)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another blursynth dataset run is writing in it" in err, err
    assert not errors, errors
    _run(out, photos, recipe_file)  # once the first has ended: runs, and completes the set
    assert _snapshot(out) == reference[1]


def test_a_full_disk_is_one_line_and_the_rerun_completes(tmp_path, photos, recipe_file, reference, monkeypatch,
                                                         capsys):
    import errno

    out = tmp_path / "set"
    real_write = ds.write_image
    calls = {"n": 0}

    def filling_write(path, *args, **kwargs):  # the disk fills in the middle of the second chunk
        calls["n"] += 1
        if calls["n"] == 16 * 2 + 3:
            with ds.atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() does: no file named
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ds, "write_image", filling_write)
    _run(out, photos, recipe_file, expect=1)  # (a failure while running; 2 is a refused command line)
    err = capsys.readouterr().err.strip()
    assert err == (f"blursynth dataset: error: --out {out}: cannot write {out / 'sharp' / '000017.png'} "
                   "(No space left on device); free some space there, then run the same command again: it "
                   "resumes where it stopped"), err
    assert not [p for p in out.rglob(".*")], "a temporary was left behind"
    monkeypatch.setattr(ds, "write_image", real_write)
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]


def test_write_dataset_checks_its_arguments_before_writing(tmp_path):
    """A bad seed or device failed after dataset.json recorded it (and the same call with a good one was then
    refused as "other settings"); NumPy integers were refused ("--pairs 2: must be a positive integer") or
    not JSON serialisable, True made one pair and workers=1.5 or shard=(0,) ran or failed inside."""
    out = tmp_path / "out"
    for kwargs, said in [({"seed": -1}, "--seed must be an integer in"), ({"seed": 1.5}, "--seed must be an integer"),
                         ({"device": "gpu"}, "device='gpu': not a torch device"),
                         ({"pairs": True}, "--pairs True"), ({"workers": 1.5}, "--workers 1.5"),
                         ({"workers": "2"}, "--workers '2'"), ({"shard": (0,)}, r"--shard \(0,\): expected")]:
        with pytest.raises(ds.DatasetError, match=said):
            ds.write_dataset(out, **{"pairs": 2, "crop": 16, "progress": False, **kwargs})
        assert not out.exists(), kwargs
    done = ds.write_dataset(out, np.int64(2), crop=[16, 24], seed=np.int64(1), workers=np.int64(1),
                            shard=[np.int64(0), 1], progress=False)
    assert done == {"written": 2, "done": 2, "complete": True}
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["seed"] == 1 and settings["pairs"] == 2 and settings["recipe"]["crop"] == [16, 24]
    # the same dataset as with Python ints: the call resumes, writing nothing
    assert ds.write_dataset(out, 2, crop=(16, 24), seed=1, progress=False)["written"] == 0


def test_a_photo_that_cannot_be_opened_is_skipped_with_its_reason(tmp_path, photos, monkeypatch):
    """A photo without read permission stopped the run, reported as "--out ...: cannot write .../locked.png
    (Permission denied); choose a writable --out". (root reads any file, so the refusal is stood in for.)"""
    import builtins

    import blursynth.io as io_module
    from blursynth.pairs import ImageFolder
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    shutil.copy(folder / "rgb.png", folder / "locked.png")
    os.chmod(folder / "locked.png", 0)
    if os.geteuid() == 0:
        def refuse(path, *args, **kwargs):
            if Path(path).name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return builtins.open(path, *args, **kwargs)
        monkeypatch.setattr(io_module, "open", refuse, raising=False)
    found = ImageFolder.scan(folder, (32, 32))
    reasons = {s["file"]: s["reason"] for s in found.skipped}
    assert reasons["locked.png"] == "cannot be opened (Permission denied); make it readable (chmod +r) or remove it"
    assert "locked.png" not in found.files and "rgb.png" in found.files


def test_crop_is_height_by_width_and_shards_and_pair_counts_are_bounded(tmp_path):
    """``--crop HxW`` is height then width (as every size in the package); ``--shard I/N`` needs
    ``0 <= I < N`` (shard N/N would own no chunk and write nothing); ``--pairs`` at least 1."""
    assert ds.parse_crop("24x40") == (24, 40) and ds.parse_crop("32") == (32, 32) and ds.parse_crop(None) is None
    assert ds.parse_shard("3/4") == (3, 4)
    for text in ("4/4", "5/4", "-1/4"):
        with pytest.raises(ds.DatasetError, match="need 0 <= I < N"):
            ds.parse_shard(text)
    out = tmp_path / "out"
    for pairs in (0, -3):
        with pytest.raises(ds.DatasetError, match=f"--pairs {pairs}: must be a positive integer"):
            ds.write_dataset(out, pairs, crop=16, progress=False)
    with pytest.raises(ds.DatasetError, match="need 0 <= I < N"):
        ds.write_dataset(out, 2, crop=16, shard=(2, 2), progress=False)
    assert not out.exists()


def test_a_refusal_names_another_layout_and_photos_changed_in_place():
    now = {"format": 1, "blursynth_version": "1", "pairs": 20, "seed": 3, "layout": "basicsr",
           "sharp": {"images": 6, "sha256": "b"}, "recipe": {"name": "tiny"}}
    then = dict(now, layout="blursynth", sharp={"images": 6, "sha256": "a"})
    said = ds._differences(then, now)
    assert "--layout blursynth then, basicsr now" in said
    assert "--sharp: 6 photos then, 6 photos now (files or sizes changed)" in said


def test_records_name_only_the_datasets_own_files_for_deletion():
    # an edited manifest or part file must not make --overwrite delete anything outside the dataset's folders
    text = "\n".join(json.dumps(r) for r in [
        {"sharp": "sharp/000001.png", "blur": "../000001.png", "kernel": "kernels/sub/000001.npy"},
        {"sharp": "photos/000002.png", "blur": "blur/notes.txt", "kernel": "kernels/000002.npy"}])
    assert ds._named_files(text + "\nnot json") == {"sharp/000001.png", "kernels/000002.npy"}


def test_overwrite_takes_as_the_datasets_only_the_names_it_writes():
    # what --overwrite may delete (of the earlier run's settings) or refuses the folder over (of this run's):
    # a file of another width of number, beyond the last pair or chunk, or of the other layout is the user's
    for name in ("dataset.json", "manifest.jsonl", "parts/000000.jsonl", "parts/000001.jsonl", "sharp/000000.png",
                 "blur/000019.png", "kernels/000019.npy"):
        assert ds._written_name(name, 20, "blursynth"), name
    for name in ("parts/000002.jsonl", "sharp/000020.png", "kernels/000020.npy", "sharp/0000019.png",
                 "sharp/00019.png", "gt/000003.png", "sharp/000003.jpg", "blur/000003.npy", "kernels/000003.png",
                 "notes.txt", "sharp/sub/000003.png"):
        assert not ds._written_name(name, 20, "blursynth"), name
    assert ds._written_name("gt/000003.png", 20, "basicsr") and ds._written_name("lq/000003.png", 20, "basicsr")
    assert not ds._written_name("sharp/000003.png", 20, "basicsr")
    # (past 1,000,000 pairs the numbers are as wide as the largest: 7 digits, and 6 are not the dataset's)
    assert ds._written_name("sharp/0999999.png", 1_000_001, "blursynth")
    assert not ds._written_name("sharp/999999.png", 1_000_001, "blursynth")


def test_overwrite_of_a_finished_dataset_of_the_same_settings_makes_it_anew(tmp_path, photos, recipe_file, reference):
    # --overwrite resumes only an unfinished run of these settings; a finished one is made again, as asked
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    shutil.copy(out / "sharp" / "000001.png", out / "sharp" / "000000.png")  # (a whole PNG, but the wrong one)
    _run(out, photos, recipe_file, "--overwrite")
    assert _snapshot(out) == reference[1]


def test_sigterm_interrupts_outside_the_main_thread_changes_nothing():
    import threading

    from blursynth.interrupt import sigterm_interrupts

    before, errors = signal.getsignal(signal.SIGTERM), []

    def body():
        try:
            with sigterm_interrupts():
                pass
        except Exception as exc:  # (signal.signal raises ValueError outside the main thread)
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGTERM) is before


def test_overwrite_with_another_layout_leaves_no_empty_folders_of_the_old_one(tmp_path, photos, recipe_file, reference):
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    _run(out, photos, recipe_file, "--layout", "basicsr", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "gt", "kernels", "lq", "manifest.jsonl"]


def test_one_pair_more_than_the_limit_is_refused():
    # the limit is 100,000,000 pairs (PAIRS_MAX), not an order of magnitude more (checked alone: a run of
    # that many pairs that is not refused would start writing them)
    ds._check_options(10**8, 1, "blursynth", (0, 1))
    with pytest.raises(ds.DatasetError, match=r"--pairs 100000001: at most 100,000,000 pairs"):
        ds._check_options(10**8 + 1, 1, "blursynth", (0, 1))


def test_verify_finds_what_changed_in_a_finished_dataset_and_writes_nothing(reference, photos, recipe_file, tmp_path,
                                                                            capsys, monkeypatch):
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    _run(out, photos, recipe_file, "--verify")
    _run(out, photos, recipe_file, "--verify", "--workers", "2")
    assert "20 pairs checked, every file and record is the one this command makes" in capsys.readouterr().out
    # Damage of every kind: a file gone, an image replaced by another pair's (whole, so a resume keeps it), a
    # kernel cut short, a record of the manifest changed.
    (out / "blur" / "000003.png").unlink()
    shutil.copy(out / "sharp" / "000012.png", out / "sharp" / "000007.png")
    (out / "kernels" / "000015.npy").write_bytes((out / "kernels" / "000015.npy").read_bytes()[:-8])
    lines = (out / "manifest.jsonl").read_text().splitlines()
    record = json.loads(lines[18])
    record["params"]["camera"]["focal_mm"] += 1
    lines[18] = json.dumps(record, sort_keys=True)
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    for workers in ("1", "2"):
        _run(out, photos, recipe_file, "--verify", "--workers", workers, expect=1)
        said = capsys.readouterr().out
        assert "4 differences in 20 pairs checked:" in said, said
        found = [line.strip().split(":")[0] for line in said.splitlines()[1:5]]
        assert sorted(found) == ["blur/000003.png", "kernels/000015.npy", "manifest.jsonl", "sharp/000007.png"]
        assert "the record of pair 18 differs" in said and "blur/000003.png: missing" in said
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before  # nothing written
    # --shard checks only that shard's chunks (pairs 16-19 are chunk 1's)
    _run(out, photos, recipe_file, "--verify", "--shard", "1/2", expect=1)
    said = capsys.readouterr().out
    assert "1 difference in 4 pairs checked:" in said and "pair 18" in said and "000015" not in said
    _run(out, photos, recipe_file, "--verify", "--shard", "0/2", expect=1)
    said = capsys.readouterr().out
    assert "3 differences in 16 pairs checked:" in said and "pair 18" not in said
    # the differences listed are capped (a dataset of another device differs in every file), not their count
    monkeypatch.setattr(ds, "PROBLEMS_KEPT", 2)
    _run(out, photos, recipe_file, "--verify", expect=1)
    said = capsys.readouterr().out
    assert "4 differences in 20 pairs checked:\n  blur/000003.png: missing\n  " in said and "... and 2 more" in said


def test_verify_refuses_other_settings_an_unfinished_run_and_overwrite(reference, photos, recipe_file, tmp_path, capsys):
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    args = ["dataset", "--out", str(out), "--pairs", "20", "--sharp", str(photos), "--recipe", str(recipe_file),
            "--quiet", "--verify"]
    assert main(args + ["--seed", "4"]) == 2
    assert "made with other settings (--seed 3 then, 4 now); give the options it was made with" in capsys.readouterr().err
    assert main(args + ["--seed", "3", "--overwrite"]) == 2
    assert "--verify writes nothing and --overwrite replaces the dataset: give one" in capsys.readouterr().err
    (out / "manifest.jsonl").unlink()
    assert main(args + ["--seed", "3"]) == 2
    assert "unfinished (no manifest.jsonl); run the same command without --verify" in capsys.readouterr().err
    assert main(args[:1] + ["--out", str(tmp_path / "none")] + args[3:] + ["--seed", "3"]) == 2
    assert "holds no dataset (no dataset.json)" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_a_photo_replaced_by_its_transpose_of_the_same_byte_size_is_another_dataset(tmp_path, recipe_file):
    """A PPM's byte size does not change when it is turned 90 degrees (``70 60`` for ``60 70`` in its header):
    only its height and width tell the photo apart, and the pairs cut from it are others."""
    from blursynth.io import write_image
    mine = tmp_path / "photos"
    rs = np.random.RandomState(4)
    write_image(mine / "shot.ppm", (rs.rand(60, 70, 3) * 255).astype(np.uint8))
    out = tmp_path / "set"
    _run(out, mine, recipe_file, "--pairs", "2", "--shard", "0/2")
    before = (mine / "shot.ppm").stat().st_size
    write_image(mine / "shot.ppm", (rs.rand(70, 60, 3) * 255).astype(np.uint8))
    assert (mine / "shot.ppm").stat().st_size == before
    _run(out, mine, recipe_file, "--pairs", "2", expect=2)


def test_a_link_of_the_users_where_the_dataset_writes_is_kept(tmp_path, photos, recipe_file):
    """A symbolic link in sharp/ by a pair's name, not made by a dataset run, is someone else's file: the
    folder is not empty, and --overwrite refuses to replace it, as it would a file there."""
    out = tmp_path / "set"
    (out / "sharp").mkdir(parents=True)
    target = tmp_path / "mine.png"
    target.write_bytes(b"mine")
    (out / "sharp" / "000000.png").symlink_to(target)
    for extra in ((), ("--overwrite",)):
        _run(out, photos, recipe_file, "--pairs", "2", *extra, expect=2)
        assert (out / "sharp" / "000000.png").is_symlink() and target.read_bytes() == b"mine"
        assert not (out / "blur").exists()


def test_a_record_naming_a_path_below_a_dataset_file_names_nothing():
    # "sharp/000001.png/x" passes the folder check and the file-name check of its second part: taken as the
    # dataset's, unlinking it before its chunk is made again raised NotADirectoryError and ended the run
    text = json.dumps({"sharp": "sharp/000001.png/x", "blur": "blur/000001.png/000001.png",
                       "kernel": "kernels/000001.npy"})
    assert ds._named_files(text) == {"kernels/000001.npy"}


def test_pair_names_are_as_wide_as_the_largest_index():
    # datasets/README.md: a file is named by its pair index, zero-padded to at least 6 digits, all of one width; a
    # million pairs end at 999999 and keep 6 (a width taken from the count, not the last index, made them 7)
    assert ds._name(0, 1_000_000) == "000000" and ds._name(999_999, 1_000_000) == "999999"
    assert ds._name(0, 1_000_001) == "0000000" and ds._name(1_000_000, 1_000_001) == "1000000"
    assert ds._name(7, 1) == ds._name(7, 20) == "000007"
    assert ds._written_name("sharp/999999.png", 1_000_000, "blursynth")
    assert not ds._written_name("sharp/0999999.png", 1_000_000, "blursynth")


def test_manifest_records_are_strict_json_with_sorted_keys(reference):
    # datasets/README.md: "manifest.jsonl record (keys sorted; strict JSON, no NaN or Infinity ...)"
    def sorted_keys(value):
        if isinstance(value, dict):
            return list(value) == sorted(value) and all(map(sorted_keys, value.values()))
        return all(map(sorted_keys, value)) if isinstance(value, list) else True

    def refuse(constant):
        raise AssertionError(f"{constant} is not strict JSON")

    lines = reference[1]["manifest.jsonl"].decode().splitlines()
    assert len(lines) == 20
    for line in lines:
        assert sorted_keys(json.loads(line, parse_constant=refuse)), line


def test_verify_finds_an_image_rewritten_at_another_bit_depth(reference, photos, recipe_file, tmp_path, capsys):
    # a 16-bit PNG holding the 8-bit samples decodes to the same numbers, but it is another image: readers
    # divide it by 65535 (nearly black), not 255
    from blursynth.io import read_samples, write_image
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    name = out / "blur" / "000017.png"
    eight = read_samples(name)
    write_image(name, eight.astype(np.uint16))
    assert read_samples(name).dtype == np.uint16 and np.array_equal(read_samples(name), eight)
    capsys.readouterr()
    _run(out, photos, recipe_file, "--verify", "--shard", "1/2", expect=1)
    said = capsys.readouterr().out
    assert "1 difference in 4 pairs checked:" in said and "blur/000017.png: differs" in said, said


def test_a_shard_linked_into_a_finished_folder_is_checked_not_trusted(tmp_path, photos, recipe_file, reference):
    """Shard 1/2 of another --seed merged by symbolic links (``cp -rs``) into a finished folder: its part file, a
    link, is a part file all the same, so its chunk is made again under this seed, not trusted to the manifest."""
    _run(tmp_path / "s1", photos, recipe_file, "--shard", "1/2", "--seed", "4")
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    for path in sorted((tmp_path / "s1").rglob("*")):
        if path.is_file() and path.name != "dataset.json":
            link = out / path.relative_to(tmp_path / "s1")
            link.parent.mkdir(exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(path)
    assert (out / "parts" / "000001.jsonl").is_symlink()
    _run(out, photos, recipe_file)
    assert _snapshot(out) == reference[1]
    assert not [p for p in out.rglob("*") if p.is_symlink()]


def test_write_dataset_refuses_no_workers_and_a_negative_shard_before_writing(tmp_path):
    # workers=0 started no process and reported the run done with nothing written; shard=(-1, 2) owned chunk -1,
    # pairs -16 to -1. The command line's own parsing keeps both out, the library call must too.
    out = tmp_path / "out"
    for kwargs, said in [({"workers": 0}, "--workers 0: must be an integer >= 1"),
                         ({"workers": -2}, "--workers -2: must be an integer >= 1"),
                         ({"shard": (-1, 2)}, r"--shard -1/2: need 0 <= I < N")]:
        with pytest.raises(ds.DatasetError, match=said):
            ds.write_dataset(out, **{"pairs": 2, "crop": 16, "progress": False, **kwargs})
        with pytest.raises(ds.DatasetError, match=said):
            ds.verify_dataset(out, **{"pairs": 2, "crop": 16, "progress": False, **kwargs})
        assert not out.exists(), kwargs


def test_a_frame_too_small_for_procedural_scenes_is_refused_before_out_is_made(tmp_path, recipe_file, capsys):
    # as every other option: found before --out is touched (made in a worker, the error left a dataset.json behind)
    recipe = tmp_path / "small_frame.toml"
    recipe.write_text(RECIPE.replace("frame_px = [200, 300]", "frame_px = [32, 32]"))
    out = tmp_path / "dl"
    assert main(["dataset", "--out", str(out), "--pairs", "4", "--recipe", str(recipe), "--crop", "28", "--quiet"]) == 2
    assert "camera.frame_px" in capsys.readouterr().err and not out.exists()


def test_verify_lists_its_findings_sorted_and_counts_the_manifests_records(reference, photos, recipe_file, tmp_path,
                                                                           capsys):
    # the listing is sorted (workers finish in any order; one worker lists a pair's sharp file before its blurry
    # one); a manifest with a record more than the pairs, a duplicate line pasted in, is no manifest of this dataset
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    (out / "sharp" / "000017.png").unlink()
    (out / "blur" / "000017.png").unlink()
    capsys.readouterr()
    _run(out, photos, recipe_file, "--verify", "--shard", "1/2", expect=1)
    said = capsys.readouterr().out
    assert "2 differences in 4 pairs checked:\n  blur/000017.png: missing\n  sharp/000017.png: missing" in said, said
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(lines + lines[-1:]) + "\n")
    _run(out, photos, recipe_file, "--verify", "--shard", "1/2", expect=1)
    said = capsys.readouterr().out
    assert "manifest.jsonl: holds 21 records, not the 20 pairs of these settings" in said, said


def test_verify_reports_a_manifest_cut_short_as_a_finding(reference, photos, recipe_file, tmp_path, capsys):
    # a damaged manifest is what --verify is for: exit status 1 with the line named, not a refused command (2)
    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text()[:-40])
    capsys.readouterr()
    _run(out, photos, recipe_file, "--verify", expect=1)
    said = capsys.readouterr().out
    assert "manifest.jsonl: line 20 is not a JSON record" in said, said


class _TwoArgumentError(Exception):
    """An exception that pickles but does not unpickle (pickle calls it again with its one message)."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def test_a_worker_error_that_does_not_unpickle_still_says_what_went_wrong(tmp_path, monkeypatch):
    # raised in a worker process, such an exception failed to unpickle in the parent, which then ended in
    # an unrelated TypeError about __init__'s arguments instead of the worker's message
    def failing(*args, **kwargs):
        raise _TwoArgumentError("pair 0", "the scene is out of reach")

    monkeypatch.setattr(ds, "make_pairs", failing)  # (the workers are forked: they inherit it)
    with pytest.raises(RuntimeError, match=r"_TwoArgumentError: pair 0: the scene is out of reach"):
        ds.write_dataset(tmp_path / "set", 2 * ds.CHUNK, crop=16, workers=2, progress=False)


def test_sigterm_interrupts_leaves_an_ignored_sigterm_ignored():
    # as Python leaves SIGINT when a process starts with it ignored: the starter chose so
    from blursynth.interrupt import Terminated, sigterm_interrupts
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            with sigterm_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)  # (handlers run between bytecodes of the main thread)
                assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        except Terminated:  # (a KeyboardInterrupt: uncaught, it would end the whole test session)
            pytest.fail("an ignored SIGTERM interrupted")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with pytest.raises(Terminated), sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(10))
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_interrupts_restores_the_handler_it_found_nested_too():
    # the command line's sigterm_interrupts holds dataset's own: leaving the inner one put SIG_DFL back in
    # place of the outer's handler, and a kill after it ended the process without any clean-up
    from blursynth.interrupt import sigterm_interrupts
    before = signal.getsignal(signal.SIGTERM)

    def mine(signum, frame):
        pass
    try:
        signal.signal(signal.SIGTERM, mine)
        with sigterm_interrupts():
            outer = signal.getsignal(signal.SIGTERM)
            assert outer is not mine
            with sigterm_interrupts():
                pass
            assert signal.getsignal(signal.SIGTERM) is outer
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_verify_report_lists_what_it_found_and_counts_what_it_left_out(capsys):
    from blursynth.cli import _report_check
    assert _report_check("set", {"problems": [], "found": 0, "checked": 5}) == 0
    assert capsys.readouterr().out == "set: 5 pairs checked, every file and record is the one this command makes\n"
    listed = ["blur/000001.png: missing", "sharp/000002.png: differs"]
    assert _report_check("set", {"problems": listed, "found": 2, "checked": 5}) == 1
    said = capsys.readouterr().out
    assert said.startswith("set: 2 differences in 5 pairs checked:\n  blur/000001.png: missing\n"
                           "  sharp/000002.png: differs\n(a file that differs"), said
    assert "more" not in said  # (every finding is listed: no "... and 0 more")
    assert _report_check("set", {"problems": listed[:1], "found": 1, "checked": 5}) == 1
    assert capsys.readouterr().out.startswith("set: 1 difference in 5 pairs checked:\n  blur/000001.png: missing\n(")
    assert _report_check("set", {"problems": listed, "found": 9, "checked": 5}, shown=1) == 1
    assert capsys.readouterr().out.startswith("set: 9 differences in 5 pairs checked:\n  blur/000001.png: missing\n"
                                              "  ... and 8 more\n(")


def test_a_folder_holding_only_what_a_file_browser_leaves_is_empty(tmp_path, capsys):
    # (a folder made in Finder holds a .DS_Store, one Windows showed a Thumbs.db: "exists and is not empty",
    # and the user had to pass --overwrite for a folder with nothing of theirs in it)
    out = tmp_path / "set"
    (out / "sharp").mkdir(parents=True)
    for name in (".DS_Store", "Thumbs.db", "sharp/.DS_Store"):
        (out / name).write_bytes(b"\0\1")
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--crop", "32", "--quiet"]) == 0
    assert (out / "manifest.jsonl").is_file() and (out / ".DS_Store").read_bytes() == b"\0\1"
    assert main(["dataset", "--out", str(out), "--pairs", "2", "--crop", "32", "--quiet", "--verify"]) == 0
    # a file of the user's still counts
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["dataset", "--out", str(mine), "--pairs", "2", "--crop", "32", "--quiet"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
