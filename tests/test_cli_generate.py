"""`blursynth generate` and `blursynth inspect`: outputs, reproducibility and bad input."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from blursynth import cli
from blursynth import kernel as K
from blursynth.camera import Camera
from blursynth.cli import main
from blursynth.pairs import make_pairs, recipe_kernels
from blursynth.recipe import load_recipe
from blursynth.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]


def _generate(tmp_path, *extra, name="out"):
    out = tmp_path / name
    code = main(["generate", "--trajectories", "70", "--kernel-size", "15", "--out", str(out), "--quiet", *extra])
    return code, out


def test_quiet_has_the_spelling_of_unpaired_train_too(tmp_path, capsys):
    assert main(["generate", "--trajectories", "5", "--kernel-size", "9", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("wrote 5 kernels of 9x9 to ")  # no bar; the summary line stays


def test_generate_writes_kernels_summary_and_contact_sheet(tmp_path):
    code, out = _generate(tmp_path)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "kernels.npz", "summary.json"]
    data = np.load(out / "kernels.npz")
    k = data["kernels"]
    assert k.shape == (70, 15, 15) and k.dtype == np.float32
    assert np.allclose(k.sum((1, 2)), 1, atol=1e-5) and (k >= 0).all()
    assert int(data["seed"]) == 0 and data["index"].tolist() == list(range(70))
    steps = data["t"].shape[1]
    assert data["t"].shape == (70, steps) and steps >= 32
    assert data["rotation"].shape == data["translation"].shape == (70, steps, 3)
    assert data["paths_px"].shape == (70, steps, 2)
    assert data["param_exposure_s"].shape == (70,)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 70 and summary["model"] == "shake6d" and summary["kernel_size"] == 15
    assert set(summary["percentiles"]) == {"extent_px", "length_px", "rms_radius_px"}
    assert summary["percentiles"]["extent_px"]["5"] <= summary["percentiles"]["extent_px"]["95"]
    sheet = iio.imread(out / "contact_sheet.png")
    # 8 tiles per row of 15 px enlarged 3 times plus 2 px borders; 64 kernels make 8 rows.
    assert sheet.shape == (8 * 47 + 2, 8 * 47 + 2)


def test_output_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        code, out = _generate(tmp_path)
    finally:
        os.umask(old)
    assert code == 0
    assert out.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())


def test_recorded_trajectories_reproduce_the_kernels(tmp_path):
    code, out = _generate(tmp_path)
    assert code == 0
    data = np.load(out / "kernels.npz")
    config = json.loads(str(data["config"]))
    traj = Trajectory(t=torch.from_numpy(data["t"]), rotation=torch.from_numpy(data["rotation"]),
                      translation=torch.from_numpy(data["translation"]))
    cam = Camera(config["focal_px"], *config["image_size"])
    assert torch.equal(K.kernels(traj, cam, 15), torch.from_numpy(data["kernels"]))


def test_config_keys_keep_their_order(tmp_path):
    # kernels.npz stores the config as JSON text: the same command must give the same bytes as before
    # --recipe was added, so its keys keep the order earlier versions wrote
    _, out = _generate(tmp_path)
    config = json.loads(str(np.load(out / "kernels.npz")["config"]))
    assert list(config) == ["model", "model_config", "seed", "kernel_size", "fit", "trajectories",
                            "focal_length_mm", "image_size", "focal_px", "depth_m"]


def test_chunking_does_not_change_the_output(tmp_path):
    _, a = _generate(tmp_path, "--chunk", "7", "--seed", "3", name="a")
    _, b = _generate(tmp_path, "--chunk", "64", "--seed", "3", name="b")
    _, c = _generate(tmp_path, "--seed", "4", name="c")
    ka, kb, kc = (np.load(p / "kernels.npz")["kernels"] for p in (a, b, c))
    assert np.array_equal(ka, kb) and not np.array_equal(ka, kc)
    # the whole file, not just the arrays: its zip entries carry a fixed time, not the time of writing
    assert (a / "kernels.npz").read_bytes() == (b / "kernels.npz").read_bytes()
    with zipfile.ZipFile(a / "kernels.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_random_walk_kernels_do_not_depend_on_the_chunk(tmp_path):
    # item 149 is the one whose walk used to round differently in a chunk of 1 (see test_trajectory)
    args = ["generate", "--model", "randomwalk", "--kernel-size", "65", "--trajectories", "152", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--chunk", "149", "--out", str(tmp_path / "b")]) == 0  # items 149-151 apart
    assert (tmp_path / "a" / "kernels.npz").read_bytes() == (tmp_path / "b" / "kernels.npz").read_bytes()


def test_random_walk_model(tmp_path):
    code, out = _generate(tmp_path, "--model", "randomwalk")
    assert code == 0
    data = np.load(out / "kernels.npz")
    assert data["path_px"].shape[0] == 70 and "rotation" not in data.files
    assert np.allclose(data["param_length_px"], 60 / 64 * 15)


def test_overwrite_replaces_generates_files_and_keeps_the_users(tmp_path):
    code, out = _generate(tmp_path)
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "photo.jpg").write_bytes(b"x")
    assert _generate(tmp_path, "--overwrite", "--seed", "5")[0] == 0
    assert sorted(os.listdir(out)) == ["contact_sheet.png", "kernels.npz", "mine", "notes.txt", "summary.json"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "photo.jpg").read_bytes() == b"x"
    assert int(np.load(out / "kernels.npz")["seed"]) == 5 and json.loads((out / "summary.json").read_text())["seed"] == 5


def test_overwrite_through_a_link_writes_in_its_target(tmp_path):
    (tmp_path / "disk" / "kernels").mkdir(parents=True)
    (tmp_path / "disk" / "kernels" / "notes.txt").write_text("x")
    (tmp_path / "out").symlink_to(tmp_path / "disk" / "kernels")
    assert _generate(tmp_path, "--overwrite")[0] == 0
    assert (tmp_path / "out").is_symlink() and sorted(os.listdir(tmp_path)) == ["disk", "out"]
    assert sorted(os.listdir(tmp_path / "disk" / "kernels")) == ["contact_sheet.png", "kernels.npz", "notes.txt",
                                                                 "summary.json"]


def test_an_existing_folder_gets_the_files_in_place_summary_last(tmp_path, monkeypatch):
    # A folder that cannot be renamed (a mount point: EBUSY) is written in place, file by file; the old
    # summary.json goes first and the new one comes last, so a folder with one is one run's whole output.
    code, out = _generate(tmp_path)
    replace, moves = os.replace, []

    def no_folder_renames(src, dst):
        if Path(dst) == out:
            raise OSError(16, "Device or resource busy")
        if Path(dst).parent == out:  # (not the atomic writes into the staged folder)
            moves.append((Path(dst).name, (out / "summary.json").exists()))
        replace(src, dst)
    monkeypatch.setattr(cli.os, "replace", no_folder_renames)
    assert _generate(tmp_path, "--overwrite", "--seed", "3")[0] == 0
    assert moves == [("kernels.npz", False), ("contact_sheet.png", False), ("summary.json", False)]
    assert sorted(os.listdir(out)) == ["contact_sheet.png", "kernels.npz", "summary.json"]  # (no staged folder left)
    assert json.loads((out / "summary.json").read_text())["seed"] == 3


def test_an_empty_existing_folder_needs_no_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    assert _generate(tmp_path)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(os.listdir(tmp_path / "out")) == ["contact_sheet.png", "kernels.npz", "summary.json"]


def test_a_link_to_a_folder_holding_only_a_killed_runs_staging_is_empty(tmp_path):
    # the staged folders are named after the link's target, and were counted as content through the link
    (tmp_path / "disk" / "kernels" / ".kernels.k1ll3d_x.tmp").mkdir(parents=True)
    (tmp_path / "out").symlink_to(tmp_path / "disk" / "kernels")
    assert _generate(tmp_path)[0] == 0
    assert (tmp_path / "disk" / "kernels" / "summary.json").is_file()


def test_an_out_that_cannot_be_listed_is_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    scandir = os.scandir

    def refuse(path="."):  # (root lists any folder: the refusal of a folder without read permission is stood in for)
        if Path(path) == tmp_path / "out":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)
    monkeypatch.setattr(cli.os, "scandir", refuse)
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "out")], "--out")
    assert "cannot list it (Permission denied)" in err


def test_runs_ending_at_once_in_one_folder_never_mix_their_files(tmp_path, monkeypatch):
    # Two runs into one existing folder: run B's moves came between run A's, leaving B's kernels.npz under A's
    # summary.json. The moves now hold a lock on the folder: here B ends while A holds it, and waits.
    import threading
    out = tmp_path / "out"
    out.mkdir()
    replace, started, b_done = os.replace, threading.Event(), []

    def slow_replace(src, dst):
        replace(src, dst)
        if Path(dst) == out / "kernels.npz" and not started.is_set():  # run A, after its first move
            started.set()
            b = threading.Thread(target=lambda: b_done.append(_generate(tmp_path, "--seed", "2", "--overwrite")[0]))
            b.start()
            b.join(timeout=3)  # B blocks on the lock: it cannot finish while A moves
            assert b.is_alive() and not b_done
            slow_replace.b = b
    monkeypatch.setattr(cli.os, "replace", slow_replace)
    assert _generate(tmp_path, "--seed", "1")[0] == 0
    slow_replace.b.join(timeout=120)
    assert b_done == [0]
    seeds = {int(np.load(out / "kernels.npz")["seed"]), json.loads((out / "summary.json").read_text())["seed"]}
    assert seeds == {2}


def test_a_folder_where_generate_writes_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "out" / "kernels.npz").mkdir(parents=True)
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "out"), "--overwrite"],
                 "--out")
    assert "kernels.npz there is a folder" in err
    assert os.listdir(tmp_path / "out") == ["kernels.npz"]


def test_recipe_kernels_are_the_kernels_of_the_recipes_pairs(tmp_path):
    # Kernel i of `generate --recipe R` is the kernel `dataset --recipe R` stores for pair i
    # (procedural scenes): the same draws of trajectory, focal length and fit, whatever the chunk.
    out = tmp_path / "k"
    assert main(["generate", "--recipe", "default", "--trajectories", "5", "--chunk", "2", "--seed", "3",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["dataset", "--recipe", "default", "--pairs", "3", "--crop", "32", "--seed", "3",
                 "--out", str(tmp_path / "set"), "--quiet"]) == 0
    data = np.load(out / "kernels.npz")
    manifest = [json.loads(line) for line in (tmp_path / "set" / "manifest.jsonl").read_text().splitlines()]
    for record in manifest:
        i = record["index"]
        assert np.array_equal(data["kernels"][i], np.load(tmp_path / "set" / record["kernel"]))
        assert data["param_focal_px"][i] == pytest.approx(record["params"]["camera"]["focal_px"], rel=1e-12)
    recipe = load_recipe("default")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == json.loads(json.dumps(recipe.to_dict()))
    assert (summary["kernel_size"], summary["fit"]) == (recipe.kernel_size, recipe.kernel_fit)
    # the recorded trajectory and focal length give the kernels back (rotation only: depth inf)
    traj = Trajectory(t=torch.from_numpy(data["t"]), rotation=torch.from_numpy(data["rotation"]),
                      translation=torch.from_numpy(data["translation"]))
    paths = K.kernel_paths(traj, Camera(1.0, 1, 1)) * torch.from_numpy(data["param_focal_px"]).float()[:, None, None]
    assert torch.allclose(paths, torch.from_numpy(data["paths_px"]), atol=1e-4)
    assert torch.equal(K.rasterize(torch.from_numpy(data["paths_px"]), recipe.kernel_size, traj.t, fit="scale"),
                       torch.from_numpy(data["kernels"]))


def test_recipe_kernels_of_a_redrawing_and_a_projective_recipe():
    levin = load_recipe("levin-like")  # kernel.fit = "resample": redrawn as the pairs are
    kernels = torch.cat([c.kernels for c in recipe_kernels(levin, 4, seed=1, chunk=3)])
    assert torch.equal(kernels, make_pairs(levin, range(4), seed=1)["kernel"])
    realblur = load_recipe("realblur-like")
    chunk = next(recipe_kernels(realblur, 4, seed=1))  # the principal point's blur
    size = realblur.kernel_size
    assert chunk.kernels.shape == (4, size, size) and (chunk.kernels >= 0).all()
    assert torch.allclose(chunk.kernels.sum((1, 2)), torch.ones(4), atol=1e-5)
    assert {"focal_mm", "focal_px", "depth_m", "fit_scale", "redraws"} <= set(chunk.trajectory.params)


def test_recipe_kernels_checks_n_before_it_reads_the_device_and_takes_device_none():
    """chunk=None reads the device for the default chunk: n=-1 must still be named first, and
    device=None (the CPU, as before the default chunk) still work."""
    levin = load_recipe("levin-like")
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 0"):
            next(recipe_kernels(levin, bad, device="no_such_device"))
    assert torch.equal(next(recipe_kernels(levin, 2, seed=1, device=None)).kernels,
                       next(recipe_kernels(levin, 2, seed=1, chunk=2)).kernels)


def _fails(capsys, tmp_path, argv, option):
    before = set(os.listdir(tmp_path))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert option in err, err
    assert set(os.listdir(tmp_path)) == before  # nothing half-written, no temporary left behind
    return err


@pytest.mark.parametrize("args, option", [
    (["--trajectories", "0"], "--trajectories"),
    (["--trajectories", "-4"], "--trajectories"),
    (["--trajectories", "many"], "--trajectories"),
    (["--exposure", "0", "0.1"], "--exposure"),
    (["--exposure", "-0.01", "0.1"], "--exposure"),
    (["--exposure", "0.2", "0.1"], "--exposure"),
    (["--focal-length", "0"], "--focal-length"),
    (["--focal-length", "-35"], "--focal-length"),
    (["--kernel-size", "4"], "--kernel-size"),
    (["--kernel-size", "1"], "--kernel-size"),
    (["--model", "randomwalk", "--exposure", "0.1", "0.2"], "--exposure"),
    # the random walk is drawn in pixels: camera options would be ignored, so they are refused
    (["--model", "randomwalk", "--focal-length", "35"], "--focal-length"),
    (["--model", "randomwalk", "--depth", "1"], "--depth"),
    (["--model", "randomwalk", "--image-size", "640x480"], "--image-size"),
    # values that would only fail later, on memory or on a 64-bit conversion
    (["--kernel-size", "100001"], "--kernel-size"),
    (["--exposure", "1e9", "1e10"], "--exposure"),
    (["--seed", str(2 ** 63)], "--seed"),
    (["--image-size", "100000x800"], "--image-size"),
    (["--kernel-size", "3", "--fit", "error", "--focal-length", "400", "--chunk", "20"], "--fit"),
    # values the library refuses, or that give NaN paths, in a traceback
    (["--focal-length", "inf"], "--focal-length"),
    (["--focal-length", "1e300", "--fit", "scale"], "--focal-length"),
    (["--focal-length", "nan"], "--focal-length"),
    (["--depth", "1e-300"], "--depth"),
    (["--depth", "nan"], "--depth"),
    (["--model", "randomwalk", "--length", "1e300", "1e300", "--fit", "scale"], "--length"),
    (["--model", "randomwalk", "--length", "10", "inf"], "--length"),
])
def test_bad_generate_arguments_fail_with_one_line(capsys, tmp_path, args, option):
    _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "50", "--quiet", *args], option)


@pytest.mark.parametrize("args, allowed", [
    (["--depth", "-inf"], "at least 0.01 metres, got -inf"), (["--depth", "-1e-3"], "at least 0.01 metres, got -1e-3"),
    (["--depth", "-nan"], "at least 0.01 metres, got -nan"),
    (["--focal-length", "-inf"], "at least 4 and at most 2000 mm, got -inf"),
    # (two values: "expected 2 arguments")
    (["--exposure", "-inf", "1"], "must be a positive number, got -inf"),
    (["--exposure", "0.1", "-1e-3"], "must be a positive number, got -1e-3"),
    (["--model", "randomwalk", "--length", "-1e3", "5"], "above 0 and at most 2550 pixels, got -1e3"),
])
def test_a_value_that_starts_like_an_option_is_checked_as_a_value(capsys, tmp_path, args, allowed):
    # (argparse took -inf or -1e-3, not plain negative numbers to it, for an option: "expected one argument")
    option = next(a for a in args if a in ("--depth", "--focal-length", "--exposure", "--length"))
    err = _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--quiet", *args], option)
    assert allowed in err


@pytest.mark.parametrize("args, option", [
    (["--model", "randomwalk"], "--model"), (["--kernel-size", "15"], "--kernel-size"), (["--fit", "error"], "--fit"),
    (["--exposure", "0.1", "0.2"], "--exposure"), (["--focal-length", "35"], "--focal-length"),
    (["--image-size", "640x480"], "--image-size"), (["--depth", "1"], "--depth"), (["--length", "5", "9"], "--length"),
])
def test_options_a_recipe_sets_are_refused_beside_it(capsys, tmp_path, args, option):
    err = _fails(capsys, tmp_path, ["generate", "--recipe", "gopro-like", "--out", str(tmp_path / "out"), *args], option)
    assert "--recipe" in err


def test_an_unknown_recipe_or_one_whose_kernel_is_too_small_is_one_line(capsys, tmp_path):
    err = _fails(capsys, tmp_path, ["generate", "--recipe", "nope", "--out", str(tmp_path / "out")], "nope")
    assert "gopro-like" in err
    small = tmp_path / "small.toml"
    small.write_text('[kernel]\nsize = 3\nfit = "error"\n')
    err = _fails(capsys, tmp_path, ["generate", "--recipe", str(small), "--trajectories", "20", "--quiet",
                                    "--out", str(tmp_path / "out")], "kernel.size")
    assert "small.toml" in err and re.search(r": kernel \d+: its path spans", err)  # the item, named as a kernel


def test_existing_or_unwritable_output_is_refused(capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("x")
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "out")], "--out")
    assert "--overwrite" in err and "other files are kept" in err
    (tmp_path / "file").write_text("x")
    _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "file")], "--out")
    _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "file" / "sub")], "--out")
    for out in ("", ".", ".."):  # not a folder that can be made and renamed into place
        _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", out, "--overwrite"], "--out")


def test_an_output_folder_that_cannot_be_made_is_one_line(capsys, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cli.tempfile, "mkdtemp", refuse)  # (as in /proc, or a read-only mount, even for root)
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "o")], "--out")
    assert "cannot make a folder there (Permission denied)" in err


@pytest.mark.skipif(not hasattr(__import__("resource"), "RLIMIT_FSIZE") if os.name == "posix" else True,
                    reason="a file-size limit stands for a disk that fills up")
def test_a_disk_that_fills_up_after_the_space_check_is_one_line(tmp_path):
    # The free-space check passes (the disk is large), then writes fail: another job filled the disk, or
    # the staging's headers, contact sheet and summary did not fit beside twice the arrays. That was an
    # OSError traceback; it is one line naming the file, exit code 1, the staged files removed.
    import resource
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-m", "blursynth", "generate", "--trajectories", "300", "--out",
                          str(tmp_path / "k"), "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=120,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert re.match(r"blursynth generate: error: --out .*k: cannot write \S+ \(File too large\)", run.stderr)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    # a run long enough to be stopped half way, by the signal a job scheduler or `kill` sends
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # (keeping where the deps are)
    proc = subprocess.Popen([sys.executable, "-m", "blursynth", "generate", "--trajectories", "2000000",
                             "--kernel-size", "15", "--out", str(tmp_path / "big")], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": path})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big.*.tmp")) and time.monotonic() < deadline:  # staging has begun
        time.sleep(0.1)
    proc.terminate()
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert err.strip().endswith("blursynth generate: interrupted; nothing was written to the output folder"), err
    assert list(tmp_path.iterdir()) == []  # the staged folder went with it


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory locks")
def test_the_next_run_removes_what_runs_killed_outright_left_behind(tmp_path):
    # SIGKILL cannot be cleaned up after: the staged folder (up to twice kernels.npz's size), beside a new
    # --out or inside an existing one, stayed for good.
    import fcntl
    (tmp_path / "out").mkdir()
    killed = [tmp_path / ".out.k1ll3d_x.tmp", tmp_path / "out" / ".out.k1ll3d_y.tmp"]
    for folder in killed:
        (folder / ".kernels.abcdefgh.parts").mkdir(parents=True)
        (folder / ".kernels.abcdefgh.parts" / "kernels.npy").write_bytes(b"x" * 100)
        os.utime(folder, (time.time() - 3600,) * 2)  # killed an hour ago
    live = tmp_path / ".out.l1ve_run.tmp"  # a run with the same --out, still writing
    live.mkdir()
    os.utime(live, (time.time() - 3600,) * 2)  # (its lock alone keeps it)
    # a run that started at the same instant: mkdtemp has made its folder, flock not yet taken
    starting = tmp_path / "out" / ".out.st4rt1ng.tmp"
    starting.mkdir()
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert _generate(tmp_path)[0] == 0  # (out holds only staged folders: empty, no --overwrite needed)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path / "out")) == [".out.st4rt1ng.tmp", "contact_sheet.png", "kernels.npz",
                                                    "summary.json"]
    assert sorted(os.listdir(tmp_path)) == [".out.l1ve_run.tmp", "out"]


def test_a_killed_runs_staged_folder_gone_before_its_lock_is_passed_over(tmp_path, monkeypatch):
    # (another run's clean-up removed it between the listing and the lock: this run is not stopped by that)
    killed = tmp_path / ".out.k1ll3d_x.tmp"
    killed.mkdir()
    os.utime(killed, (time.time() - 3600,) * 2)
    hold = cli._hold

    def removed_first(folder):
        if folder == killed:
            killed.rmdir()
        return hold(folder)
    monkeypatch.setattr(cli, "_hold", removed_first)
    assert _generate(tmp_path)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert cli._hold(tmp_path / "nowhere") is None


def test_a_run_the_disk_cannot_hold_is_refused_at_its_first_chunk(capsys, tmp_path, monkeypatch):
    import blursynth.cli as cli
    usage = shutil.disk_usage(tmp_path)
    # 70 kernels of 15x15 and their paths make about 0.2 MB; report less than twice that as free
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "70", "--kernel-size", "15", "--chunk", "20",
                                    "--out", str(tmp_path / "out"), "--quiet"], "--out")
    assert "kernels.npz would take " in err and " but 98 KiB are free there" in err  # (it said "0.0 GiB")
    assert "0.0 GiB" not in err
    assert list(tmp_path.iterdir()) == []  # nothing staged is left behind
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda path: usage._replace(free=10_000_000))
    assert _generate(tmp_path)[0] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_unavailable_device_is_refused(capsys, tmp_path):
    _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--device", "cuda", "--out", str(tmp_path / "o")],
           "--device")


def test_a_gpu_number_beyond_those_visible_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--device", "cuda:1", "--out", str(tmp_path / "o")],
           "--device cuda:1: 1 GPU(s) are visible, numbered from 0; use cuda:0 to cuda:0")


@pytest.mark.parametrize("command", ["generate", "dataset"])
def test_the_meta_device_is_refused(capsys, tmp_path, command):
    # torch allocates on "meta" but its tensors hold no values: the run ended in a traceback
    size = ["--trajectories", "5"] if command == "generate" else ["--pairs", "2", "--crop", "16"]
    _fails(capsys, tmp_path, [command, *size, "--device", "meta", "--quiet", "--out", str(tmp_path / "o")], "--device meta")


@pytest.mark.parametrize("command", ["generate", "dataset"])
def test_a_device_type_this_machine_cannot_allocate_on_is_refused(capsys, tmp_path, command):
    # (a device torch names but this machine lacks: the run ended in a traceback at its first tensor there)
    size = ["--trajectories", "5"] if command == "generate" else ["--pairs", "2", "--crop", "16"]
    _fails(capsys, tmp_path, [command, *size, "--device", "fpga", "--quiet", "--out", str(tmp_path / "o")],
           "--device fpga: cannot allocate on it here; use cpu")


def test_inspect_prints_the_summary_and_renders(capsys, tmp_path):
    _, out = _generate(tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(out / "kernels.npz"), "--render", "0", "69", "--out", str(tmp_path / "png")]) == 0
    text = capsys.readouterr().out
    assert "70 kernels of 15x15" in text and "extent_px" in text and "exposure_s" in text
    image = iio.imread(tmp_path / "png" / "kernel_69.png")
    assert image.ndim == 2 and image.shape[0] == 15 * 8 and image.max() > 0
    assert main(["inspect", str(out / "kernels.npz"), "--render", "70"]) == 2
    assert capsys.readouterr().out == ""  # refused before the summary is printed
    _fails(capsys, tmp_path, ["inspect", str(tmp_path / "missing.npz")], "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _fails(capsys, tmp_path, ["inspect", str(tmp_path / "junk.npz")], "junk.npz: not a readable .npz")
    np.save(tmp_path / "000000.npy", np.ones((3, 3)) / 9)
    _fails(capsys, tmp_path, ["inspect", str(tmp_path / "000000.npy")], "000000.npy: one kernel (a dataset's")
    _fails(capsys, tmp_path, ["inspect", str(out)], f"is a folder; pass {out / 'kernels.npz'}")


def test_inspect_names_the_recipe_of_recipe_kernels(capsys, tmp_path):
    # it printed the model, seed and fit alone: nothing said the kernels were gopro-like's
    out = tmp_path / "k"
    assert main(["generate", "--recipe", "gopro-like", "--trajectories", "4", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out / "kernels.npz")]) == 0
    assert "4 kernels of 65x65, recipe gopro-like, model shake6d" in capsys.readouterr().out


def test_inspect_reproduces_the_summary_a_slice_at_a_time(capsys, tmp_path, monkeypatch):
    # generate measures its kernels chunk by chunk as it makes them; inspect measures the written
    # (memory-mapped) file in its own slices, here 16 kernels at a time: the percentiles must agree
    _, out = _generate(tmp_path, "--chunk", "25")
    monkeypatch.setattr(cli, "INSPECT_SLICE", 16)
    capsys.readouterr()
    assert main(["inspect", str(out / "kernels.npz")]) == 0
    text = capsys.readouterr().out
    for name, values in json.loads((out / "summary.json").read_text())["percentiles"].items():
        line = "  ".join(f"p{q}={values[str(q)]:.2f}" for q in sorted(map(int, values)))
        assert f"{name:14s} {line}" in text


def test_inspect_refuses_a_file_as_out_and_a_huge_zoom(capsys, tmp_path):
    code, out = _generate(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["inspect", str(out / "kernels.npz"), "--render", "0", "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["inspect", str(out / "kernels.npz"), "--render", "0", "--zoom", "1000"]) == 2
    err = capsys.readouterr().err
    assert "--zoom" in err and err.count("\n") == 1


@pytest.mark.parametrize("change, words", [
    (lambda d: {name: v[:0] if name in ("kernels", "paths_px", "t") else v for name, v in d.items()}, "N >= 1"),
    (lambda d: {**d, "paths_px": d["paths_px"][:10]}, "paths_px (10,"),  # (gave figures of 10 paths)
    (lambda d: {**d, "kernels": d["kernels"][0]}, "kernels (15, 15)"),
    (lambda d: {**d, "config": np.array("not json")}, "config is not a JSON object"),
    (lambda d: {**d, "config": np.array("[1, 2]")}, "config is not a JSON object"),
], ids=["empty", "fewer-paths", "one-kernel", "config-text", "config-list"])
def test_inspect_refuses_arrays_generate_does_not_write_in_one_line(capsys, tmp_path, change, words):
    # an empty, mismatched or reshaped file (e.g. cut with NumPy) ended in a traceback or wrong figures
    _, out = _generate(tmp_path)
    np.savez(tmp_path / "odd.npz", **change(dict(np.load(out / "kernels.npz"))))
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "odd.npz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and words in captured.err, captured.err


def test_render_draws_a_few_segments_at_a_time(tmp_path, monkeypatch):
    # all segments at once took a canvas each: a 255 px kernel at --zoom 32 needed 24 GB and was killed
    rs = np.random.RandomState(0)
    path = np.cumsum(rs.randn(200, 2), 0)
    t = np.linspace(0, 1, 200)
    kernel = K.rasterize(torch.from_numpy(path)[None].float(), 31, torch.from_numpy(t)[None], fit="scale")[0]
    drawn = []
    rasterize = K.rasterize

    def bounded(paths, size, *args, **kwargs):
        drawn.append(len(paths) * size[0] * size[1])
        assert drawn[-1] <= max(1 << 24, size[0] * size[1]), "drew the whole path at once"  # (64 MB)
        return rasterize(paths, size, *args, **kwargs)
    monkeypatch.setattr(K, "rasterize", bounded)
    cli.render_item(tmp_path / "a.png", kernel, path, t, zoom=32)
    assert len(drawn) > 1
    monkeypatch.setattr(K, "rasterize", rasterize)
    monkeypatch.setattr(cli, "RENDER_PIXELS", 1 << 40)  # one batch: the same picture
    cli.render_item(tmp_path / "b.png", kernel, path, t, zoom=32)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_an_out_under_a_link_to_a_missing_folder_is_refused_naming_the_link(capsys, tmp_path):
    # A purged scratch disk leaves such links: `--out link/x` failed with "File exists", and `--out link` made the
    # missing target's folders (on whatever disk is there now) and wrote into them.
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "scratch")
    _, out = _generate(tmp_path, name="k")
    capsys.readouterr()
    for target in (tmp_path / "link", tmp_path / "link" / "x"):
        for argv in (["generate", "--trajectories", "5", "--out", str(target), "--quiet"],
                     ["inspect", str(out / "kernels.npz"), "--render", "0", "--out", str(target)]):
            err = _fails(capsys, tmp_path, argv, f"--out {target}")
            assert f"{tmp_path / 'link'} is a link to {tmp_path / 'gone' / 'scratch'}, which does not exist" in err, err
            assert "choose another --out" in err and not (tmp_path / "gone").exists()


def test_inspect_refuses_out_and_zoom_without_render(capsys, tmp_path):
    # (`inspect FILE --out previews`, --render forgotten, printed the summary and wrote nothing, without a word)
    _, out = _generate(tmp_path)
    capsys.readouterr()
    for extra, option in ((["--out", str(tmp_path / "previews")], "--out"), (["--zoom", "4"], "--zoom")):
        err = _fails(capsys, tmp_path, ["inspect", str(out / "kernels.npz"), *extra], option)
        assert f"{option} applies to the PNGs of --render, which was not given; add --render" in err, err
    assert main(["inspect", str(out / "kernels.npz"), "--render", "1", "--zoom", "2", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "kernel_1.png").is_file()


def test_inspect_render_into_an_unwritable_out_is_one_line(capsys, tmp_path):
    _, out = _generate(tmp_path)
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    targets = [tmp_path / "afile" / "sub"] + [Path(p) for p in ("/proc/x", "/proc") if os.path.isdir("/proc/self")]
    for target in targets:  # (/proc refuses new files even to root, whom os.access lets through)
        assert main(["inspect", str(out / "kernels.npz"), "--render", "0", "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {target}" in err, err


def test_the_readme_recipe_table_gives_generates_extent_percentiles():
    # the table's figures were the bounding box's diagonal at the 10th/50th/90th percentile, which
    # summary.json's extent_px (its longer side, 5th..95th) never shows: they looked 10-30% off
    text = (ROOT / "README.md").read_text()
    assert "extent of the blur, px (5th / 50th / 95th percentile)" in text
    for name in ("default", "gopro-like", "realblur-like", "levin-like"):
        row = re.search(rf"^\| `{name}` \|.*\| ([\d.]+) / ([\d.]+) / ([\d.]+) \|$", text, re.M)
        chunk = next(recipe_kernels(load_recipe(name), 300, seed=0))
        stats = cli.percentiles([cli.kernel_measures(chunk.kernels.numpy(), chunk.paths_px.numpy())])["extent_px"]
        assert [float(v) for v in row.groups()] == [float(f"{stats[q]:.2g}") for q in ("5", "50", "95")], name


def test_bounds_of_generate_options_are_in_the_readme():
    text = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert f"{cli.FOCAL_MM_RANGE[0]:g} to {cli.FOCAL_MM_RANGE[1]:g} mm" in text
    assert f"at least {cli.MIN_DEPTH_M:g} m" in text and f"at most {cli.MAX_LENGTH_PX} px" in text


def test_inspect_into_a_closed_pipe_is_quiet(tmp_path):
    # `blursynth inspect FILE | head -1`: the reader goes away before the summary is written
    # (stdout buffered, as in a shell: with PYTHONUNBUFFERED set, as some CI and containers have it, every
    # print failed at once inside main's try, and a main that no longer flushed there passed unnoticed, while
    # in a shell the summary waited in the buffer and the flush at exit said "Exception ignored", status 120)
    _, out = _generate(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "blursynth", "inspect", str(out / "kernels.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""


def test_an_os_error_of_inspect_is_not_reported_as_generates_full_disk(tmp_path, capsys, monkeypatch):
    # main words an OSError as generate's "cannot write ... free some space" only for generate: inspect's
    # summary printed to a full disk (`> /full/summary.txt`) would have read "blursynth generate: error:
    # --out None: cannot write kernels.npz"
    import errno
    _, out = _generate(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cli, "percentiles", full_disk)
    capsys.readouterr()
    with pytest.raises(OSError, match="No space left on device"):
        main(["inspect", str(out / "kernels.npz")])
    assert "generate" not in capsys.readouterr().err


def test_module_entry_point_exit_code_and_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blursynth", "generate", "--kernel-size", "8",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--kernel-size" in proc.stderr and "try 9" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_options_and_the_dataset_command_report_one_line(capsys, tmp_path):
    _fails(capsys, tmp_path, ["generate", "--bogus"], "--bogus")
    _fails(capsys, tmp_path, ["dataset", "--pairs", "0", "--out", str(tmp_path / "d")], "--pairs")
    assert main(["dataset", "--help"]) == 0
    assert "--pairs" in capsys.readouterr().out


def test_a_camera_that_reaches_the_scene_is_one_line_naming_depth(capsys, tmp_path, monkeypatch):
    # The shake model's own translation stays millimetres short of --depth's 0.01 m, but a camera that
    # reached the scene plane raised from the library as a traceback; it is a usage error like the fit's.
    from blursynth.camera import check_short_of_plane

    def reaching(*args, **kwargs):
        check_short_of_plane(torch.tensor([0.02]), 0.01)
        yield from ()
    monkeypatch.setattr(K, "generate", reaching)
    code, out = _generate(tmp_path, "--depth", "0.01")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--depth" in err and "reaching it" in err
    assert not out.exists()


def test_a_recipe_whose_camera_reaches_the_scene_is_one_line_naming_its_key(capsys, tmp_path):
    # recipe_kernels words it as a RecipeError on camera.depth_m: generate --recipe let it out as a traceback
    near = tmp_path / "near.toml"
    near.write_text("[trajectory]\nexposure_s = [2.0, 3.0]\ntranslation_m_s = [0.5, 1.0]\ndrift_hz = [0.3, 0.31]\n"
                    "[camera]\ndepth_m = 0.01\nframe_px = [100, 100]\n")
    out = tmp_path / "out"
    err = _fails(capsys, tmp_path, ["generate", "--recipe", str(near), "--trajectories", "5", "--quiet",
                                    "--out", str(out)], "camera.depth_m")
    assert "near.toml" in err and "reaching it" in err
    assert not out.exists()


def test_summary_counts_the_redrawn_and_the_scaled_items_and_names_the_version(tmp_path):
    # README: summary.json holds the redrawn / scaled counts (items with param_redraws > 0, with
    # param_fit_scale < 1) and the version; these runs have one of each at this seed
    from blursynth import __version__
    for fit in ("resample", "scale"):
        code, out = _generate(tmp_path, "--fit", fit, name=fit)
        assert code == 0
        data = np.load(out / "kernels.npz")
        summary = json.loads((out / "summary.json").read_text())
        redrawn, scaled = int((data["param_redraws"] > 0).sum()), int((data["param_fit_scale"] < 1).sum())
        assert 0 < redrawn + scaled < 70
        assert (summary["redrawn"], summary["scaled"]) == (redrawn, scaled)
        assert summary["version"] == __version__


def test_contact_sheet_shows_the_first_64_kernels_in_order_across_chunks(tmp_path):
    # README: the first 64 kernels, 8 per row, each scaled to its maximum (tiles of 15 * 3 px, 2 px apart)
    code, out = _generate(tmp_path, "--chunk", "20")
    assert code == 0
    data = np.load(out / "kernels.npz")
    assert data["index"].tolist() == list(range(70))
    sheet = iio.imread(out / "contact_sheet.png").astype(np.float64) / 255
    for i in (0, 19, 20, 41, 63):
        k = data["kernels"][i].astype(np.float64)
        tile = np.kron(k / k.max(), np.ones((3, 3)))
        y, x = 2 + (i // 8) * 47, 2 + (i % 8) * 47
        np.testing.assert_allclose(sheet[y:y + 45, x:x + 45], tile, atol=1 / 255, err_msg=f"tile {i}")


def test_summary_percentiles_cover_every_chunk(tmp_path):
    # percentiles of the whole run (README: of the path's extent and length), not of one chunk
    code, out = _generate(tmp_path, "--chunk", "20")
    data = np.load(out / "kernels.npz")
    summary = json.loads((out / "summary.json").read_text())
    paths = data["paths_px"].astype(np.float64)
    extent = (paths.max(1) - paths.min(1)).max(1)
    length = np.sqrt((np.diff(paths, axis=1) ** 2).sum(-1)).sum(1)
    for name, values in (("extent_px", extent), ("length_px", length)):
        for q in (5, 25, 50, 75, 95):
            assert summary["percentiles"][name][str(q)] == pytest.approx(np.percentile(values, q), abs=2e-3), (name, q)


def test_kernel_measures_on_kernels_and_paths_measured_by_hand():
    # extent: longer side of the path's bounding box; length: sum of its segments; RMS radius: root of
    # the kernel's total second central moment (about its own centre of mass, not the kernel centre)
    k = np.zeros((2, 5, 5), np.float32)
    k[0, 2, 0] = k[0, 2, 2] = 0.5  # x at -2 and 0: mean -1, variance 1
    k[1, 0, 3] = k[1, 3, 3] = 0.5  # y at -2 and 1: mean -0.5, variance 2.25
    paths = np.array([[[0, 0], [3, 0], [3, 4]], [[0, 0], [1, 1], [2, 2]]], np.float32)
    m = cli.kernel_measures(k, paths)
    np.testing.assert_allclose(m["rms_radius_px"], [1.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(m["extent_px"], [4.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(m["length_px"], [7.0, 2 * 2 ** 0.5], rtol=1e-6)


def test_generate_defaults_are_the_documented_ones(tmp_path):
    # README: --trajectories 10000, --kernel-size 31, --fit resample (the shake6d model), --exposure 1/30 1/4,
    # --focal-length 50 on --image-size 1200x800, --depth inf, --out ./blursynth-kernels
    args = cli.build_parser().parse_args(["generate"])
    assert args.trajectories == 10000 and args.out == Path("blursynth-kernels") and args.seed == 0
    out = tmp_path / "o"
    assert main(["generate", "--trajectories", "3", "--out", str(out), "--quiet"]) == 0
    data = np.load(out / "kernels.npz")
    config = json.loads(str(data["config"]))
    assert (config["model"], config["kernel_size"], config["fit"]) == ("shake6d", 31, "resample")
    assert data["kernels"].shape == (3, 31, 31)
    assert config["model_config"]["exposure_s"] == pytest.approx([1 / 30, 1 / 4])
    assert (config["focal_length_mm"], config["image_size"], config["depth_m"]) == (50, [1200, 800], None)
    assert config["focal_px"] == pytest.approx(50 * 1442.2205 / 43.2666, rel=1e-4)  # diagonals: px over mm


def test_generate_uses_and_records_the_camera_options(tmp_path):
    code, out = _generate(tmp_path, "--exposure", "0.02", "0.03", "--focal-length", "85", "--image-size", "640x480",
                          "--depth", "0.2")
    assert code == 0
    data = np.load(out / "kernels.npz")
    config = json.loads(str(data["config"]))
    summary = json.loads((out / "summary.json").read_text())
    for record in (config, summary):
        assert (record["focal_length_mm"], record["image_size"], record["depth_m"]) == (85, [640, 480], 0.2)
        assert record["focal_px"] == pytest.approx(85 * 800 / 43.2666, rel=1e-4)  # 640x480: an 800 px diagonal
    exposure = data["param_exposure_s"]
    assert ((exposure >= 0.02 * (1 - 1e-6)) & (exposure <= 0.03 * (1 + 1e-6))).all()
    # the depth was used: the recorded trajectories give the kernels back at 0.2 m, and not at infinity
    traj = Trajectory(t=torch.from_numpy(data["t"]), rotation=torch.from_numpy(data["rotation"]),
                      translation=torch.from_numpy(data["translation"]))
    cam = Camera(config["focal_px"], 640, 480)
    kernels = torch.from_numpy(data["kernels"])
    assert torch.equal(K.kernels(traj, cam, 15, depth_m=0.2), kernels)
    assert not torch.equal(K.kernels(traj, cam, 15), kernels)


def test_a_range_of_one_value_is_taken(tmp_path):
    # LOW == HIGH is a valid range (the refusal asks for LOW <= HIGH): every item gets that value
    code, out = _generate(tmp_path, "--exposure", "0.05", "0.05", name="shake")
    assert code == 0
    np.testing.assert_allclose(np.load(out / "kernels.npz")["param_exposure_s"], 0.05, rtol=1e-6)
    code, out = _generate(tmp_path, "--model", "randomwalk", "--length", "9", "9", name="walk")
    assert code == 0
    np.testing.assert_allclose(np.load(out / "kernels.npz")["param_length_px"], 9, rtol=1e-6)


def test_an_exposure_range_reaching_past_10_s_is_refused(capsys, tmp_path):
    # README: --exposure at most 10 s; the upper end alone past it is refused too
    err = _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "5", "--quiet",
                                    "--exposure", "0.1", "20"], "--exposure")
    assert "at most 10 s" in err


def test_recipe_kernels_record_the_frame_as_width_x_height(tmp_path):
    # image_size is spelt as --image-size takes it, WxH: gopro-like's frames are 1280x720
    out = tmp_path / "k"
    assert main(["generate", "--recipe", "gopro-like", "--trajectories", "2", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["image_size"] == [1280, 720]
    assert json.loads(str(np.load(out / "kernels.npz")["config"]))["image_size"] == [1280, 720]


def test_an_out_that_appears_during_an_overwrite_run_gets_its_files(capsys, tmp_path, monkeypatch):
    """Two runs with the same new --out and --overwrite (say, two seeds in a job array): the one that ended
    second found the folder made and threw its whole output away, advising --overwrite, which it had."""
    out = tmp_path / "out"
    sheet = cli.write_contact_sheet

    def another_run_ends_first(path, kernels, *args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "summary.json").write_text("{}")
        (out / "notes.txt").write_text("mine")
        return sheet(path, kernels, *args, **kwargs)
    monkeypatch.setattr(cli, "write_contact_sheet", another_run_ends_first)
    assert main(["generate", "--trajectories", "5", "--seed", "4", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["contact_sheet.png", "kernels.npz", "notes.txt", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["seed"] == 4 and int(np.load(out / "kernels.npz")["seed"]) == 4
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staged folder left beside it
    # not asked to overwrite: refused as before, the folder that appeared left as it is
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["generate", "--trajectories", "5", "--out", str(out), "--quiet"]) == 2
    assert "appeared while the run wrote" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt", "summary.json"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_negative_seed_is_refused_in_one_line(capsys, tmp_path):
    # (non_negative_int: -1 is a value to refuse, not a seed for the library to trip over)
    _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "5", "--quiet",
                              "--seed", "-1"], "--seed")


def test_option_bounds_take_their_ends_and_refuse_just_past_them(capsys, tmp_path):
    # README: --kernel-size 3..KERNEL_SIZE_MAX, --focal-length within FOCAL_MM_RANGE, --length above 0 and at most
    # MAX_LENGTH_PX, --zoom 1..MAX_ZOOM, --image-size sides of 1 px or more: each end is taken, the next value past it is refused
    assert cli.kernel_size(str(cli.KERNEL_SIZE_MAX)) == cli.KERNEL_SIZE_MAX
    lo, hi = cli.FOCAL_MM_RANGE
    focal = cli.bounded_float(lo, hi, "mm", "--focal-length 85")
    assert focal(str(lo)) == lo and focal(str(hi)) == hi
    length = cli.bounded_float(0, cli.MAX_LENGTH_PX, "pixels", "--length 10 29", above=True)
    assert length(str(cli.MAX_LENGTH_PX)) == cli.MAX_LENGTH_PX
    assert cli.zoom(str(cli.MAX_ZOOM)) == cli.MAX_ZOOM
    for parse, text in ((cli.kernel_size, str(cli.KERNEL_SIZE_MAX + 2)), (focal, str(hi * 1.001)), (length, "0"),
                        (cli.zoom, str(cli.MAX_ZOOM + 1))):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    for args, option in ((["--kernel-size", str(cli.KERNEL_SIZE_MAX + 2)], "--kernel-size"),
                         (["--model", "randomwalk", "--length", "0", "5"], "--length"),
                         (["--image-size", "640x0"], "--image-size"), (["--image-size", "0x480"], "--image-size")):
        _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "5", "--quiet",
                                  *args], option)


def test_length_with_the_camera_shake_model_is_refused_not_ignored(capsys, tmp_path):
    # (--length sets the random walk; shake6d, the default model, would draw its own extent and drop it)
    err = _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "5", "--quiet",
                                    "--length", "5", "9"], "--length")
    assert "--exposure" in err


def test_a_range_is_drawn_across_from_low_to_high(tmp_path):
    # --exposure and --length LOW HIGH: the model gets the whole range, and 70 draws fall within it, not all on LOW
    code, out = _generate(tmp_path, "--exposure", "0.01", "0.2", name="shake")
    assert code == 0
    data = np.load(out / "kernels.npz")
    assert json.loads(str(data["config"]))["model_config"]["exposure_s"] == [0.01, 0.2]
    drawn = data["param_exposure_s"]
    assert drawn.min() >= 0.01 * (1 - 1e-6) and drawn.max() <= 0.2 * (1 + 1e-6) and drawn.max() > 0.05
    code, out = _generate(tmp_path, "--model", "randomwalk", "--length", "4", "12", name="walk")
    assert code == 0
    drawn = np.load(out / "kernels.npz")["param_length_px"]
    assert drawn.min() >= 4 - 1e-4 and drawn.max() <= 12 + 1e-4 and drawn.max() > 8


def test_an_out_holding_only_a_users_folder_is_not_empty(capsys, tmp_path):
    (tmp_path / "out" / "mine").mkdir(parents=True)
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "out")], "--out")
    assert "--overwrite" in err


def test_an_out_in_a_folder_that_cannot_be_written_is_refused_before_the_run(capsys, tmp_path, monkeypatch):
    # (root may write anywhere: the refusal is checked with os.access saying what it says to other users)
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    err = _fails(capsys, tmp_path, ["generate", "--trajectories", "5", "--out", str(tmp_path / "out")], "--out")
    assert "cannot write" in err


def test_a_link_to_a_folder_gets_a_killed_runs_staging_there_removed(tmp_path):
    # the link is followed: the staged folders of runs killed outright are those named after its target
    killed = tmp_path / "disk" / "kernels" / ".kernels.k1ll3d_x.tmp"
    killed.mkdir(parents=True)
    os.utime(killed, (time.time() - 3600,) * 2)
    (tmp_path / "out").symlink_to(tmp_path / "disk" / "kernels")
    assert _generate(tmp_path)[0] == 0
    assert sorted(os.listdir(tmp_path / "disk" / "kernels")) == ["contact_sheet.png", "kernels.npz", "summary.json"]


def test_a_path_that_does_not_fit_names_the_kernel_size_it_needs(capsys, tmp_path):
    # --fit error: the one line gives the fix as a kernel size that holds the path, not only "a larger" one
    err = _fails(capsys, tmp_path, ["generate", "--out", str(tmp_path / "out"), "--trajectories", "50", "--quiet",
                                    "--kernel-size", "3", "--fit", "error", "--focal-length", "400"], "--fit")
    spans = re.search(r"spans ([\d.]+) x ([\d.]+) px", err)
    needed = re.search(r"use --kernel-size (\d+) or more", err)
    assert spans and needed, err
    size = int(needed.group(1))
    assert size % 2 == 1 and size > 3 and size >= max(float(spans.group(1)), float(spans.group(2))), err


def test_inspect_draws_a_scaled_items_path_shrunk_as_its_kernel_was(tmp_path, monkeypatch):
    # --fit scale: the path is drawn with the item's own param_fit_scale, as the kernel was rasterised
    _, out = _generate(tmp_path, "--fit", "scale")
    fit_scale = np.load(out / "kernels.npz")["param_fit_scale"]
    i = int(np.argmin(fit_scale))
    assert fit_scale[i] < 1  # (this seed has a scaled item)
    drawn = []
    monkeypatch.setattr(cli, "render_item", lambda path, kernel, path_px, t, zoom, scale: drawn.append(scale))
    assert main(["inspect", str(out / "kernels.npz"), "--render", str(i), "--out", str(tmp_path / "png")]) == 0
    assert drawn == [pytest.approx(float(fit_scale[i]))]


def test_inspect_renders_an_index_given_twice_once(capsys, tmp_path, monkeypatch):
    _, out = _generate(tmp_path)
    drawn = []
    monkeypatch.setattr(cli, "render_item", lambda path, kernel, path_px, t, zoom, scale: drawn.append(path.name))
    capsys.readouterr()
    assert main(["inspect", str(out / "kernels.npz"), "--render", "3", "1", "3", "--out", str(tmp_path / "png")]) == 0
    assert drawn == ["kernel_3.png", "kernel_1.png"]
    assert capsys.readouterr().out.count("wrote ") == 2


def test_a_folder_holding_only_what_a_file_browser_leaves_is_empty_to_generate(tmp_path, capsys):
    out = tmp_path / "k"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0\1")
    assert main(["generate", "--out", str(out), "--trajectories", "4", "--quiet"]) == 0
    assert (out / "kernels.npz").is_file() and (out / ".DS_Store").read_bytes() == b"\0\1"
    (out / "notes.txt").write_text("keep")  # (a file of the user's still counts)
    assert main(["generate", "--out", str(out), "--trajectories", "4", "--quiet"]) == 2
    assert "is not empty" in capsys.readouterr().err
