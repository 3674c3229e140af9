"""python -m unpaired.evaluate on tiny synthetic benchmarks written to a temporary folder."""

import io
import json
import os
import re
import signal

import imageio.v3 as iio
import numpy as np
import pytest
import scipy.signal
import torch

from unpaired import evaluate
from unpaired.train import main as train

SIZE = 64


def _scene(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE + 20, :SIZE + 20]
    img = 0.4 + 0.1 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    for _ in range(10):
        y0, x0 = rng.integers(0, SIZE + 10, 2)
        img[y0:y0 + rng.integers(4, 16), x0:x0 + rng.integers(4, 16)] = rng.random()
    return img


def _kernel(j):
    k = np.zeros((9, 9))
    for i in range(7):
        k[1 + i, 1 + (i * (j + 1)) % 7] = 1.0
    return (k / k.sum()).astype(np.float32)


def _u8(x):
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _write_levin(root, n_images=2, n_kernels=2, offset=(1, -2)):
    """Levin layout; each blurry image is the 'same' convolution, shifted by a few px like the real set."""
    for d in ("sharp", "blurry", "kernels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for j in range(1, n_kernels + 1):
        np.save(root / "kernels" / f"kernel{j}.npy", _kernel(j))
    for i in range(1, n_images + 1):
        big = _scene(i)
        iio.imwrite(root / "sharp" / f"im{i}.png", _u8(big[10:-10, 10:-10]))
        for j in range(1, n_kernels + 1):
            b = scipy.signal.convolve2d(big, _kernel(j), mode="same")
            b = b[10 + offset[0]:10 + offset[0] + SIZE, 10 + offset[1]:10 + offset[1] + SIZE]
            iio.imwrite(root / "blurry" / f"im{i}_kernel{j}.png", _u8(b))
    return root


def _run(args, capsys=None):
    return evaluate.main([*map(str, args), "--quiet"])


def test_levin_benchmark_json_grid_and_improvement(tmp_path):
    data = _write_levin(tmp_path / "levin")
    blurry = _run(["--benchmark", "levin", "--data", data, "--method", "identity"])
    out = _run(["--benchmark", "levin", "--data", data, "--method", "hyperlaplacian",
                "--json", tmp_path / "r.json", "--grid", tmp_path / "g.png"])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {"psnr", "ssim", "error_ratio", "per_image"} <= saved.keys()
    assert len(saved["per_image"]) == 4 and saved["method"] == "hyperlaplacian"
    assert saved["psnr"] == pytest.approx(out["psnr"])
    assert out["psnr"] > blurry["psnr"] + 3 and out["ssim"] > blurry["ssim"]
    # the reference of the error ratio is this very method with the true kernel
    assert saved["error_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert blurry["error_ratio"] > 2
    # the planted offset (blurry content moved by (1, -2)) is undone by the alignment
    for rec in saved["per_image"]:
        assert abs(rec["shift"][0] + 1) < 0.6 and abs(rec["shift"][1] - 2) < 0.6
    grid = iio.imread(tmp_path / "g.png")
    assert grid.shape[0] > 4 * SIZE and grid.shape[1] > 4 * SIZE  # 4 rows; blurry|restored|sharp|kernel


def test_folder_benchmark_reads_a_dataset_layout(tmp_path):
    root = tmp_path / "ds"
    for d in ("blur", "sharp", "kernels"):
        (root / d).mkdir(parents=True)
    for i in range(2):
        big = _scene(10 + i)
        k = _kernel(i)
        sharp = big[10:-10, 10:-10]
        blurred = scipy.signal.convolve2d(big, k, mode="same")[10:-10, 10:-10]
        iio.imwrite(root / "sharp" / f"{i:06d}.png", _u8(np.stack([sharp] * 3, -1)))
        iio.imwrite(root / "blur" / f"{i:06d}.png", _u8(np.stack([blurred] * 3, -1)))
        np.save(root / "kernels" / f"{i:06d}.npy", k)
    (root / "manifest.jsonl").write_text("")
    out = _run(["--benchmark", "folder", "--blurry", root / "blur", "--sharp", root / "sharp",
                "--method", "wiener", "--border", 8, "--json", tmp_path / "f.json"])
    base = evaluate.main(["--benchmark", "folder", "--blurry", str(root / "blur"), "--sharp", str(root / "sharp"),
                          "--border", "8", "--no-progress"])  # (unpaired.train's spelling of --quiet)
    assert out["count"] == 2 and out["psnr"] > base["psnr"] + 2
    assert all(rec["error_ratio"] is not None for rec in out["per_image"])


def test_restorer_hook_with_kernel_estimates(tmp_path):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=2)
    pairs = evaluate.levin_pairs(data)
    reference = evaluate.method_restorer("wiener")

    def blind(blurry, kernel):  # a stand-in "network" returning an image and its kernel estimate
        return reference(blurry, kernel), kernel

    def wrong(blurry, kernel):  # estimates a transposed kernel, deconvolves with it
        return reference(blurry, kernel.T), kernel.T
    result = evaluate.evaluate(pairs, blind, channels=1, reference=reference, progress=False)
    for rec in result["per_image"]:
        assert rec["kernel_ncc"] == pytest.approx(1.0, abs=1e-4) and rec["kernel_centred_error"] < 1e-6
        assert rec["error_ratio"] == pytest.approx(1.0, abs=1e-4)
    result = evaluate.evaluate(pairs, wrong, channels=1, reference=reference, progress=False)
    for rec in result["per_image"]:
        assert rec["kernel_ncc"] < 0.9 and rec["error_ratio"] > 1.5
    # A network's estimate sums only nearly to 1, may dip below 0, and may keep a batch axis: it is scored
    # as the normalised kernel (it stopped the evaluation in the deconvolution's checks, or was taken for
    # a true kernel of the wrong shape).
    for near in (lambda k: 0.99 * k, lambda k: (k - 1e-4)[None], lambda k: 3 * k[None, None]):
        result = evaluate.evaluate(pairs, lambda b, k: (reference(b, k), near(k)), channels=1, reference=reference,
                                   progress=False)
        for rec in result["per_image"]:
            assert rec["kernel_ncc"] > 0.99 and rec["error_ratio"] == pytest.approx(1.0, abs=0.05)
    for bad in (lambda k: torch.zeros_like(k), lambda k: torch.stack([k, k])):
        with pytest.raises(evaluate.EvaluationError, match=r"im1_kernel1.png: the method's kernel estimate has shape"):
            evaluate.evaluate(pairs, lambda b, k: (reference(b, k), bad(k)), channels=1, reference=reference,
                              progress=False)


def test_a_restoration_with_nan_or_inf_is_refused_naming_the_image(tmp_path):
    # a diverged model's NaN outputs were scored: NaN means, printed as results, exit status 0
    pairs = evaluate.levin_pairs(_write_levin(tmp_path / "levin", n_images=1, n_kernels=2))
    for value in (float("nan"), float("inf")):
        def broken(blurry, kernel, value=value):
            out = blurry.clone()
            out[..., 3, 4] = value
            return out
        with pytest.raises(evaluate.EvaluationError, match=r"im1_kernel1.png: the restoration holds 1 NaN or infinite"):
            evaluate.evaluate(pairs, broken, channels=1, progress=False)


def test_checkpoint_is_scored_through_its_generator(tmp_path, capsys):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=2)
    run = tmp_path / "run"
    train(["--ngf", "4", "--unet-depth", "2", "--crop", "16", "--val-crop", "16", "--val-size", "1",
           "--batch", "1", "--steps", "1", "--no-progress", "--run-dir", str(run)])
    trained = run / "checkpoints" / "step_0000001.pt"
    state = torch.load(trained, weights_only=False)
    for name in ("head.weight", "head.bias"):  # a residual generator with a zero head is exactly the identity
        state["models"]["G"][name].zero_()
    torch.save(state, tmp_path / "identity.pt")
    levin = ["--benchmark", "levin", "--data", data]
    blurry = _run(levin + ["--method", "identity"])
    as_net = _run(levin + ["--checkpoint", tmp_path / "identity.pt"])
    net = _run(levin + ["--checkpoint", trained])
    by_folder = _run(levin + ["--checkpoint", run])  # a run folder stands for its best.pt, named
    assert by_folder["method"] == str(run / "checkpoints" / "best.pt")
    assert f"checkpoint: {run / 'checkpoints' / 'best.pt'}" in capsys.readouterr().err
    assert by_folder["psnr"] == _run(levin + ["--checkpoint", run / "checkpoints" / "best.pt"])["psnr"]
    # gray images go through the 3-channel network and come back as their mean
    for key in ("psnr", "ssim", "error_ratio"):
        assert as_net[key] == pytest.approx(blurry[key], rel=1e-6)
    assert net["psnr"] != pytest.approx(blurry["psnr"], rel=1e-6)


def test_bad_checkpoint_is_a_clear_error(tmp_path, refused):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    levin = ["--benchmark", "levin", "--data", data, "--checkpoint"]
    with refused(r"--checkpoint .*none\.pt: no such file"):
        _run(levin + [tmp_path / "none.pt"])
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with refused(r"run: a folder without checkpoints/best\.pt or checkpoints/step_\*\.pt"):
        _run(levin + [tmp_path / "run"])
    torch.save({}, tmp_path / "run" / "checkpoints" / "best.pt")  # a run folder stands for its best.pt
    with refused(r"best\.pt: not a checkpoint written by unpaired\.train"):
        _run(levin + [tmp_path / "run"])
    (tmp_path / "model.pt").write_bytes(b"x")
    with refused(r"model\.pt: not a checkpoint written by unpaired\.train"):
        _run(levin + [tmp_path / "model.pt"])


def test_bad_inputs_name_the_file(tmp_path, refused):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=2)
    bad = data / "kernels" / "kernel2.npy"
    np.save(bad, _kernel(2) * 1.5)
    with refused(r"kernel2\.npy.*sums to 1\.5"):
        _run(["--benchmark", "levin", "--data", data, "--method", "wiener"])
    np.save(bad, _kernel(2))
    (data / "sharp" / "im1.png").unlink()
    with refused(r"im1\.png: no such file"):
        _run(["--benchmark", "levin", "--data", data])
    iio.imwrite(data / "sharp" / "im1.png", np.zeros((SIZE, SIZE + 3), np.uint8))
    with refused(rf"im1_kernel1\.png is {SIZE}x{SIZE} but .*im1\.png is {SIZE + 3}x{SIZE}; "):
        _run(["--benchmark", "levin", "--data", data])
    with refused("no im"):
        _run(["--benchmark", "levin", "--data", tmp_path / "levin" / "sharp"])
    # a mistyped --data was "DATA/blurry: no im{i}_kernel{j}.png files", as if the folder were there but empty
    with refused(rf"^error: --data {re.escape(str(tmp_path / 'nothing'))}: no such folder; pass the Levin 2009 folder"):
        _run(["--benchmark", "levin", "--data", tmp_path / "nothing"])
    with refused(rf"^error: --data {re.escape(str(bad))}: not a folder"):
        _run(["--benchmark", "levin", "--data", bad])
    folder = tmp_path / "f"
    (folder / "blur").mkdir(parents=True)
    (folder / "sharp").mkdir()
    iio.imwrite(folder / "blur" / "a.png", np.zeros((8, 8), np.uint8))
    with refused(r"a\.png: no sharp image"):
        _run(["--benchmark", "folder", "--blurry", folder / "blur", "--sharp", folder / "sharp"])
    # a `blursynth dataset` folder given to the levin benchmark: say which benchmark reads it
    with refused(rf"a folder of pairs, not Levin 2009's; score it with --benchmark folder --blurry {re.escape(str(folder / 'blur'))} "):
        _run(["--benchmark", "levin", "--data", folder])
    with refused("needs --blurry"):
        _run(["--benchmark", "folder", "--blurry", folder / "blur"])
    with refused("--device must be auto, cpu, cuda or cuda:N"):
        _run(["--benchmark", "folder", "--blurry", folder / "blur", "--sharp", folder / "sharp", "--device", "gpu"])
    if not torch.cuda.is_available():
        with refused("no CUDA device is visible; use --device cpu"):
            _run(["--benchmark", "folder", "--blurry", folder / "blur", "--sharp", folder / "sharp", "--device", "cuda"])


def _refused(args, capsys):
    """Exit status and error line (after argparse's usage block) of a refused command line."""
    with pytest.raises(SystemExit) as exc:
        _run(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage:")
    return exc.value.code, err.strip().splitlines()[-1]


def test_output_options_are_checked_before_evaluating(tmp_path, capsys, monkeypatch):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    (tmp_path / "file").write_text("")

    def fail(*args, **kwargs):
        raise AssertionError("evaluated before the output options were checked")
    monkeypatch.setattr(evaluate, "evaluate", fail)
    levin = ["--benchmark", "levin", "--data", data]
    for option, message in ((["--grid", tmp_path / "g.png", "--grid-rows", 0], "--grid-rows"),
                            (["--grid", tmp_path / "g.png", "--grid-rows", -1], "--grid-rows"),
                            (["--grid", tmp_path / "gridout"], r"--grid .*gridout: .*\.png"),
                            (["--grid", tmp_path / "g.pgm"], r"--grid .*g\.pgm: not a colour image .*\.png"),
                            (["--json", tmp_path], r"--json .*: is a folder"),
                            (["--grid", tmp_path], r"--grid .*: is a folder"),
                            (["--json", tmp_path / "file" / "r.json"], r"--json .*file.*not a folder"),
                            # (into the benchmark's own files: it replaced an image, or was read as one next time)
                            (["--grid", data / "blurry" / "im1_kernel1.png"], r"--grid .*: inside --data "),
                            (["--json", data / "r.json"], r"--json .*r\.json: inside --data .*write it elsewhere"),
                            # (the sheet, written last, replaced the scores)
                            (["--json", tmp_path / "out.png", "--grid", tmp_path / "x" / ".." / "out.png"],
                             r"--json .*out\.png and --grid .*out\.png name the same file")):
        code, err = _refused(levin + option, capsys)
        assert code == 2 and re.search(message, err), (option, err)


def test_outputs_inside_the_folder_benchmarks_inputs_are_refused(tmp_path, capsys, monkeypatch):
    # (a --grid left in --blurry was read by the next run as a blurry image without a sharp twin; a --json in
    # --sharp or --kernels lies among the benchmark's own files)
    root = tmp_path / "ds"
    for d in ("blur", "sharp", "kernels"):
        (root / d).mkdir(parents=True)
    for d in ("blur", "sharp"):
        iio.imwrite(root / d / "000000.png", _u8(np.stack([_scene(1)] * 3, -1)))
    np.save(root / "kernels" / "000000.npy", _kernel(1))

    class Evaluated(Exception):
        pass

    def evaluated(*args, **kwargs):
        raise Evaluated
    monkeypatch.setattr(evaluate, "evaluate", evaluated)
    inputs = ["--benchmark", "folder", "--blurry", root / "blur", "--sharp", root / "sharp", "--kernels",
              root / "kernels"]
    for option, given in ((["--grid", root / "blur" / "g.png"], "--blurry"),
                          (["--json", root / "sharp" / "sub" / "r.json"], "--sharp"),
                          (["--json", root / "kernels" / "r.json"], "--kernels")):
        code, err = _refused(inputs + option, capsys)
        assert code == 2 and re.search(rf"{option[0]} .*: inside {given} .*write it elsewhere", err), (option, err)
    with pytest.raises(Evaluated):  # beside them is fine, in a folder whose name merely starts alike too
        _run(inputs + ["--json", root / "r.json", "--grid", root / "blur2" / "g.png"])


def test_unwritable_output_paths_are_refused_before_evaluating(tmp_path, capsys, monkeypatch):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)

    def fail(*args, **kwargs):
        raise AssertionError("evaluated before the output paths were checked")
    monkeypatch.setattr(evaluate, "evaluate", fail)
    targets = []
    if os.path.isdir("/proc/self"):  # (refuses new files and folders even to root, whom os.access lets through)
        targets += ["/proc/x/a.json", "/proc/a.json"]
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
        targets.append(tmp_path / "ro" / "sub" / "a.json")
    if not targets:
        pytest.skip("no unwritable folder to try")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for target in targets:
        for option in ("--json", "--grid"):
            path = str(target) if option == "--json" else str(target)[:-5] + ".png"
            code, err = _refused(["--benchmark", "levin", "--data", data, option, path], capsys)
            assert code == 2 and re.search(f"{option} {re.escape(path)}: cannot write in ", err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing left behind by the check


def test_output_paths_through_a_link_to_a_missing_folder_are_refused_before_evaluating(tmp_path, capsys,
                                                                                         monkeypatch):
    # (they passed the check, and writing them failed after the whole evaluation: "cannot write (File exists)")
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)

    def fail(*args, **kwargs):
        raise AssertionError("evaluated before the output paths were checked")
    monkeypatch.setattr(evaluate, "evaluate", fail)
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    for option, path in (("--json", tmp_path / "out" / "r.json"), ("--grid", tmp_path / "out" / "sub" / "g.png")):
        code, err = _refused(["--benchmark", "levin", "--data", data, option, path], capsys)
        assert code == 2 and f"{option} {path}: {tmp_path / 'out'} is a link to {tmp_path / 'gone'}, which does " \
            "not exist; make that folder, or choose another path" in err, err
    assert not (tmp_path / "gone").exists()


def test_a_perfect_restoration_is_valid_json(tmp_path):
    # --sharp equal to --blurry: the identity's PSNR is infinite, which json.dumps writes as Infinity
    root = tmp_path / "same"
    root.mkdir()
    iio.imwrite(root / "a.png", _u8(np.stack([_scene(3)] * 3, -1)))
    out = _run(["--benchmark", "folder", "--blurry", root, "--sharp", root, "--method", "identity",
                "--json", tmp_path / "r.json"])
    assert out["psnr"] == float("inf")

    def refuse(name):
        raise AssertionError(f"{name} in the JSON")
    saved = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert saved["psnr"] is None and saved["per_image"][0]["psnr"] is None and saved["ssim"] == pytest.approx(1)


def test_a_perfect_restoration_s_error_ratio_of_0_is_counted(tmp_path):
    # an error ratio of 0 (no error at all) is under every threshold, not a missing ratio
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "a.png", _u8(np.stack([_scene(3)] * 3, -1)))
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "a.npy", _kernel(1))
    out = _run(["--benchmark", "folder", "--blurry", tmp_path / "blur", "--sharp", tmp_path / "sharp"])
    assert out["per_image"][0]["error_ratio"] == 0
    assert out["error_ratio_below"] == {f"{t:g}": 1.0 for t in evaluate.ERROR_RATIO_THRESHOLDS}


def test_a_kernel_panel_shows_the_kernel_scaled_to_its_maximum_and_centred():
    # (its taps, about 1/7 each, were drawn as they are: a near-black panel)
    k = torch.from_numpy(_kernel(1))
    panel = evaluate._kernel_panel(k, (3, 20, 24))
    assert panel.shape == (3, 20, 24) and float(panel.max()) == pytest.approx(1.0)
    big = panel[0, 1:19, 3:21]  # the 9x9 kernel enlarged twice, centred
    torch.testing.assert_close(big, (k / k.max()).repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert float(panel.sum()) == pytest.approx(3 * 4 * float((k / k.max()).sum()), rel=1e-5)


def test_the_grid_rows_are_blurry_restored_sharp_and_at_most_max_rows(tmp_path):
    # write_grid's contact sheet: one row per pair, blurry | restored | sharp (4 px apart), the first max_rows pairs
    h, w = 12, 16
    flat = lambda v: torch.full((1, 3, h, w), v)  # noqa: E731
    images = [{"blurry": flat(0.0), "restored": flat(0.5), "sharp": flat(1.0), "k_est": None, "k_true": None}] * 3
    evaluate.write_grid(tmp_path / "g.png", images, max_rows=2)
    grid = iio.imread(tmp_path / "g.png").astype(np.float64) / 255
    assert grid.shape[:2] == (2 * (h + 4) + 4, 3 * (w + 4) + 4)
    for row in range(2):
        cells = [grid[4 + row * (h + 4):][:h, 4 + col * (w + 4):][:, :w] for col in range(3)]
        assert [round(float(c.mean()), 2) for c in cells] == [0.0, 0.5, 1.0]


def test_the_levin_benchmark_is_scored_in_gray(tmp_path, monkeypatch):
    # Levin et al.'s images are gray: a network restorer sees them as one channel (its three outputs averaged),
    # not as three equal channels scored apart
    seen, real = [], evaluate.method_restorer

    def recording(name):
        restore = real(name)
        return lambda blurry, kernel: seen.append(blurry.shape[1]) or restore(blurry, kernel)
    monkeypatch.setattr(evaluate, "method_restorer", recording)
    _run(["--benchmark", "levin", "--data", _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)])
    assert seen and set(seen) == {1}


def test_a_non_blind_method_needs_a_2d_kernel_and_gives_values_in_0_1():
    restore = evaluate.method_restorer("wiener")
    blurry = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for kernel in (None, torch.ones(2, 2, 3, 3) / 9):  # (none, or a projective grid of local kernels)
        with pytest.raises(evaluate.EvaluationError, match="--method wiener needs a 2-D true kernel"):
            restore(blurry, kernel)
    # (Richardson-Lucy on noise overshoots white: the scores are of the image as displayed, clipped to [0, 1])
    out = evaluate.method_restorer("rl")(blurry, torch.from_numpy(_kernel(1)))
    assert out.shape == blurry.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_a_file_name_that_is_not_utf8_is_printed_and_scored(tmp_path, monkeypatch):
    # stdout is strict under a UTF-8 locale other than C: the table of a pair named b"\xe9t\xe9" failed to print
    # in a traceback after every image was scored, and --json was never written
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdout", stdout)
    root = tmp_path / "same"
    root.mkdir()
    iio.imwrite(os.fsdecode(os.fsencode(root) + b"/\xe9t\xe9.png"), _u8(np.stack([_scene(3)] * 3, -1)))
    out = _run(["--benchmark", "folder", "--blurry", root, "--sharp", root, "--method", "identity",
                "--json", tmp_path / "r.json"])
    assert out["count"] == 1 and (tmp_path / "r.json").is_file()
    stdout.flush()
    assert b"\\udce9t\\udce9" in stdout.buffer.getvalue()


def test_a_failed_write_is_one_line(tmp_path, capsys, monkeypatch):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)

    def full(path, obj):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(evaluate, "write_json", full)
    with pytest.raises(SystemExit, match=r"^error: --json .*r\.json: cannot write \(No space left on device\)$"):
        _run(["--benchmark", "levin", "--data", data, "--json", tmp_path / "r.json"])
    assert "mean (1)" in capsys.readouterr().out  # the scores were printed before the write failed


def _ctrl_c():
    raise KeyboardInterrupt


def _kill():  # what `kill` runs: the SIGTERM handler in place (the default one would end pytest)
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


@pytest.mark.parametrize("interrupt, code", [(_ctrl_c, 130), (_kill, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_evaluation_is_one_line(tmp_path, capsys, monkeypatch, interrupt, code):
    # Ctrl-C printed a traceback, SIGTERM ended it without a word
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)

    def stopped(*args, **kwargs):
        interrupt()
    monkeypatch.setattr(evaluate, "evaluate", stopped)
    with pytest.raises(SystemExit) as stop:
        _run(["--benchmark", "levin", "--data", data, "--json", tmp_path / "r.json"])
    assert stop.value.code == code and not (tmp_path / "r.json").exists()
    assert capsys.readouterr().err.strip() == ("python -m unpaired.evaluate: interrupted; run it again (--json and "
                                               "--grid are written at the end, each whole or not at all)")


def test_border_and_radius_are_checked(tmp_path, capsys, refused):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    for option in ("--border", "--radius"):
        code, err = _refused(["--benchmark", "levin", "--data", data, option, -3], capsys)
        assert code == 2 and f"argument {option}: must be >= 0, got -3" in err
    # a border eating the whole image names the image and the largest border it allows
    # (that largest border leaves SSIM's 11 px window: 31, once advised, left 2 px and a traceback)
    with refused(rf"^error: .*im1\.png: {SIZE}x{SIZE} is too small for a 40 px border; "
                                         rf"use --border {(SIZE - 11) // 2} or less"):
        _run(["--benchmark", "levin", "--data", data, "--border", 40])
    for border in (SIZE // 2 - 1, (SIZE - 11) // 2 + 1):
        with refused(rf"^error: .*im1\.png: {SIZE}x{SIZE} is too small for a {border} px border; "
                     rf"use --border {(SIZE - 11) // 2} or less \(and --radius below it\)$"):
            _run(["--benchmark", "levin", "--data", data, "--border", border])
    assert _run(["--benchmark", "levin", "--data", data, "--border", (SIZE - 11) // 2])["count"] == 1
    # --radius 30 raises the border to 31 (with a note): the same error, not a traceback
    with refused(rf"too small for a 31 px border; use --border {(SIZE - 11) // 2} or less \(and --radius below it\)$"):
        _run(["--benchmark", "levin", "--data", data, "--radius", 30])


@pytest.mark.parametrize("side", [1, 5, 10])
def test_an_image_smaller_than_the_ssim_window_is_named(tmp_path, refused, side):
    # it ended in metrics.levin_scores' traceback (exit status 1), naming no file and advising border 0
    for d in ("b", "s"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "x.png", np.full((side, side + 3, 3), 128, np.uint8))
    for method in ("identity", "wiener"):
        with refused(rf"^error: .*x\.png: {side + 3}x{side} is smaller than the 11 px window of SSIM and cannot "
                     r"be scored; remove the pair or use larger images$"):
            _run(["--benchmark", "folder", "--blurry", tmp_path / "b", "--sharp", tmp_path / "s", "--method", method])


def test_a_stray_file_in_a_levin_folder_is_skipped_and_named(tmp_path, capsys):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=2)
    (data / "blurry" / "im1_kernel1 copy.png").write_bytes((data / "blurry" / "im1_kernel1.png").read_bytes())
    (data / "blurry" / "notes.txt").write_text("")
    (data / "blurry" / "._im1_kernel1.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # (hidden: skipped unnamed)
    out = _run(["--benchmark", "levin", "--data", data])
    assert [r["name"] for r in out["per_image"]] == ["im1_kernel1", "im1_kernel2"]
    err = capsys.readouterr().err
    assert "skipped 2 files not named im{i}_kernel{j}.png: im1_kernel1 copy.png, notes.txt" in err


def test_a_border_raised_above_the_radius_is_said(tmp_path, capsys):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    out = _run(["--benchmark", "levin", "--data", data, "--radius", 10, "--border", 5])
    assert out["border"] == 11
    assert "note: border raised from 5 to 11 px: it must exceed --radius 10" in capsys.readouterr().err


def test_options_the_benchmark_does_not_use_are_refused(tmp_path, capsys):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    code, err = _refused(["--benchmark", "levin", "--data", data, "--kernels", "nope"], capsys)
    assert code == 2 and "--benchmark levin does not use --kernels" in err
    code, err = _refused(["--benchmark", "levin", "--data", data, "--blurry", data, "--sharp", data], capsys)
    assert code == 2 and "--benchmark levin does not use --blurry, --sharp" in err
    code, err = _refused(["--benchmark", "folder", "--blurry", data / "blurry", "--sharp", data / "sharp",
                          "--data", data], capsys)
    assert code == 2 and "--benchmark folder does not use --data" in err


def test_two_images_with_one_name_are_refused(tmp_path, refused):
    root = tmp_path / "ds"
    for d in ("blur", "sharp"):
        (root / d).mkdir(parents=True)
        iio.imwrite(root / d / "000001.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(root / "blur" / "000001.jpg", np.zeros((16, 16), np.uint8))
    with refused(r"blur/000001\.jpg and .*blur/000001\.png: two images named 000001"):
        _run(["--benchmark", "folder", "--blurry", root / "blur", "--sharp", root / "sharp"])


def test_a_kernel_of_the_wrong_shape_stops_any_method(tmp_path, refused):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    np.save(data / "kernels" / "kernel1.npy", np.stack([_kernel(1)] * 3))  # 3-D: neither a kernel nor a grid
    with refused(r"kernel1\.npy: a kernel must be a 2-D array .*got shape \(3, 9, 9\)"):
        _run(["--benchmark", "levin", "--data", data])  # --method identity does not use the kernel
    # a projective blursynth dataset's rows x cols grid of local kernels: scored, without error ratio
    np.save(data / "kernels" / "kernel1.npy", np.stack([np.stack([_kernel(1)] * 2)] * 2))
    assert _run(["--benchmark", "levin", "--data", data])["error_ratio"] is None


@pytest.mark.parametrize("values, kind", [(np.array([["a", "b"], ["c", "d"]]), "<U1"),
                                          (np.full((3, 3), 1 / 9 + 0.5j), "complex128")])
def test_a_kernel_that_holds_no_real_numbers_is_refused(tmp_path, refused, values, kind):
    # strings escaped as numpy's "could not convert string to float" (a traceback); complex lost its imaginary part
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    np.save(data / "kernels" / "kernel1.npy", values)
    with refused(rf"kernel1\.npy: holds {kind} values, not real numbers"):
        _run(["--benchmark", "levin", "--data", data])


def test_a_kernel_file_that_is_an_archive_is_refused(tmp_path, refused):
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    with open(data / "kernels" / "kernel1.npy", "wb") as fh:  # (np.savez into a .npy name: np.load gives an NpzFile)
        np.savez(fh, k=_kernel(1))
    with refused(r"kernel1\.npy: holds an archive of arrays, not one array"):
        _run(["--benchmark", "levin", "--data", data])


def test_a_folder_pair_without_its_kernel_is_refused_before_evaluating(tmp_path):
    # (else the benchmark stopped at that pair, after scoring the ones before it)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        for name in ("0.png", "1.png"):
            iio.imwrite(tmp_path / d / name, _u8(np.stack([_scene(1)] * 3, -1)))
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "0.npy", _kernel(1))
    with pytest.raises(evaluate.EvaluationError, match=r"1\.png: no kernel .*1\.npy; add it or pass --kernels"):
        evaluate.folder_pairs(tmp_path / "blur", tmp_path / "sharp")


def test_a_kernel_larger_than_its_image_is_refused(tmp_path):
    for name in ("b.png", "s.png"):
        iio.imwrite(tmp_path / name, np.zeros((12, 14, 3), np.uint8))
    np.save(tmp_path / "k.npy", np.full((15, 15), 1 / 225, np.float32))
    pair = evaluate.Pair("b", tmp_path / "b.png", tmp_path / "s.png", tmp_path / "k.npy")
    # (the message said what, not what to do: a gopro-like dataset with --crop 64 has 65 px kernels)
    with pytest.raises(evaluate.EvaluationError, match=r"k\.npy: \(15, 15\) kernel is larger than .*b\.png \(12x14\); "
                                                       r"score pairs at least the kernel's size"):
        evaluate.load_pair(pair, 3)


def test_a_restoration_of_another_size_is_refused_naming_the_image(tmp_path):
    # (it reached the scorer, whose error named neither the image nor the method)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", _u8(np.stack([_scene(1)] * 3, -1)))
    pairs = evaluate.folder_pairs(tmp_path / "blur", tmp_path / "sharp")
    with pytest.raises(evaluate.EvaluationError,
                       match=r"0\.png: the method returned \(1, 3, 84, 83\), expected \(1, 3, 84, 84\)"):
        evaluate.evaluate(pairs, lambda blurry, kernel: blurry[..., :-1], radius=0, border=0, progress=False)


def test_folder_benchmark_leaves_out_hidden_files(tmp_path):
    # macOS leaves ._name beside each file it copies to other file systems: not an image, not a pair
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", _u8(np.stack([_scene(1)] * 3, -1)))
    (tmp_path / "blur" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    pairs = evaluate.folder_pairs(tmp_path / "blur", tmp_path / "sharp")
    assert [p.name for p in pairs] == ["0"]
    (tmp_path / "sharp" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    out = evaluate.main(["--benchmark", "folder", "--blurry", str(tmp_path / "blur"), "--sharp",
                         str(tmp_path / "sharp"), "--quiet"])
    assert out["count"] == 1


def test_only_the_grid_rows_keep_their_images(tmp_path, monkeypatch):
    # every pair's blurry, restored and sharp tensors were kept to the end for the grid, with or without
    # --grid: 33 MB a pair at 1280x720 RGB, 37 GB for a benchmark of a thousand pairs
    data = _write_levin(tmp_path / "levin", n_images=2, n_kernels=2)
    kept, real = [], evaluate.evaluate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        kept.append(len(out["images"]))
        return out
    monkeypatch.setattr(evaluate, "evaluate", spy)
    assert _run(["--benchmark", "levin", "--data", data])["count"] == 4
    _run(["--benchmark", "levin", "--data", data, "--grid", tmp_path / "g.png", "--grid-rows", 3])
    assert kept == [0, 3]
    assert iio.imread(tmp_path / "g.png").shape[0] == 3 * (SIZE + 4) + 4  # 3 rows of 64 px, 4 px apart


def test_the_cumulative_error_ratios_are_reported(tmp_path, capsys):
    # Levin et al. score a method by the share of images under each error ratio (below 2 to 3 is a
    # success), not by the mean, which one failed image dominates; only the mean was reported.
    data = _write_levin(tmp_path / "levin", n_images=2, n_kernels=2)
    reference = evaluate.method_restorer("wiener")

    def half(blurry, kernel):  # kernel 1: the reference itself (ratio 1); kernel 2: a flat grey guess
        same = torch.equal(kernel.cpu(), torch.from_numpy(_kernel(1)))
        return reference(blurry, kernel) if same else torch.full_like(blurry, 0.5)
    result = evaluate.evaluate(evaluate.levin_pairs(data), half, channels=1, reference=reference, progress=False)
    ratios = [rec["error_ratio"] for rec in result["per_image"]]
    assert sorted(ratios)[:2] == pytest.approx([1.0, 1.0]) and min(sorted(ratios)[2:]) > 4
    assert result["error_ratio_below"] == {key: 0.5 for key in ("1.5", "2", "2.5", "3", "3.5", "4")}
    assert "error ratio at most 1.5 / 2 / 2.5 / 3 / 3.5 / 4: 50% / 50% / 50% / 50% / 50% / 50%" in \
        evaluate.format_table(result)
    # the command writes them; without kernels there are none, written as null
    saved = _run(["--benchmark", "levin", "--data", data, "--method", "wiener", "--json", tmp_path / "r.json"])
    ratios = [rec["error_ratio"] for rec in saved["per_image"]]
    assert json.loads((tmp_path / "r.json").read_text())["error_ratio_below"] == {
        f"{t:g}": sum(r <= t for r in ratios) / 4 for t in (1.5, 2, 2.5, 3, 3.5, 4)}
    assert "error ratio at most" in capsys.readouterr().out
    for d in ("b", "s"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "x.png", _u8(np.stack([_scene(2)] * 3, -1)))
    out = _run(["--benchmark", "folder", "--blurry", tmp_path / "b", "--sharp", tmp_path / "s", "--json",
                tmp_path / "f.json"])
    assert out["error_ratio_below"] is None and json.loads((tmp_path / "f.json").read_text())["error_ratio_below"] is None
    assert "error ratio at most" not in capsys.readouterr().out


def test_error_ratio_below_counts_ratios_at_most_each_threshold():
    # "the share of images whose ratio is at most" each threshold: a ratio equal to one counts
    assert evaluate.error_ratio_below([1.5, 2.0, 3.2, 5.0]) == {"1.5": 0.25, "2": 0.5, "2.5": 0.5, "3": 0.5,
                                                                 "3.5": 0.75, "4": 0.75}
    assert evaluate.error_ratio_below([]) is None


def test_the_summary_scores_are_plain_means_of_the_per_image_records(tmp_path):
    data = _write_levin(tmp_path / "levin", n_images=2, n_kernels=2)
    out = _run(["--benchmark", "levin", "--data", data, "--method", "wiener"])
    records = out["per_image"]
    assert len({round(r["psnr"], 3) for r in records}) == 4  # (different scores: a median or a subset would differ)
    for key in ("psnr", "ssim", "error_ratio"):
        assert out[key] == pytest.approx(sum(r[key] for r in records) / 4, rel=1e-9), key
    assert out["seconds_per_image"] == pytest.approx(sum(r["seconds"] for r in records) / 4, rel=1e-2)


def test_the_default_radius_and_border_of_each_benchmark(tmp_path, capsys):
    # README: levin aligns within 10 px and crops 15; folder neither aligns nor crops
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    out = _run(["--benchmark", "levin", "--data", data])
    assert (out["benchmark"], out["radius"], out["border"]) == ("levin", 10, 15)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.png").write_bytes((data / "blurry" / "im1_kernel1.png").read_bytes())
    out = _run(["--benchmark", "folder", "--blurry", tmp_path / "f", "--sharp", tmp_path / "f"])
    assert (out["benchmark"], out["radius"], out["border"]) == ("folder", 0, 0)
    assert out["per_image"][0]["shift"] == [0, 0]
    assert "note:" not in capsys.readouterr().err


def test_a_border_equal_to_the_radius_is_raised(tmp_path, capsys):
    # "a border not above the radius is raised to radius + 1, with a note"
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=1)
    out = _run(["--benchmark", "levin", "--data", data, "--radius", 6, "--border", 6])
    assert out["border"] == 7
    assert "note: border raised from 6 to 7 px: it must exceed --radius 6" in capsys.readouterr().err


def test_levin_pairs_are_ordered_by_number_not_by_name(tmp_path):
    # im1_kernel10 sorts before im1_kernel2 as text
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=11)
    assert [p.name for p in evaluate.levin_pairs(data)] == [f"im1_kernel{j}" for j in range(1, 12)]


def test_folder_pairs_take_suffixes_in_capitals(tmp_path):
    # cameras write IMG_0001.JPG: such files are images, paired by name as the others
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "IMG_0001.PNG", _u8(np.stack([_scene(4)] * 3, -1)), extension=".png")
    assert [p.name for p in evaluate.folder_pairs(tmp_path / "blur", tmp_path / "sharp")] == ["IMG_0001"]


def test_the_error_ratio_of_a_kernel_estimate_is_the_reference_deconvolution_s_with_it(tmp_path):
    # Levin's definition: a method that returns a kernel is judged by the reference run with that kernel,
    # not by its own image: the true kernel beside a flat grey image has ratio 1
    pairs = evaluate.levin_pairs(_write_levin(tmp_path / "levin", n_images=1, n_kernels=1))
    reference = evaluate.method_restorer("wiener")
    result = evaluate.evaluate(pairs, lambda b, k: (torch.full_like(b, 0.5), k), channels=1, reference=reference,
                               progress=False)
    assert result["per_image"][0]["error_ratio"] == pytest.approx(1.0, abs=1e-4)


def test_a_border_leaving_exactly_the_ssim_window_is_taken(tmp_path):
    # the advised largest border, (side - 11) // 2, leaves 11 px of a 33 px image: SSIM's window fits
    for d in ("b", "s"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "x.png", _u8(np.stack([_scene(5)[:33, :33]] * 3, -1)))
    out = _run(["--benchmark", "folder", "--blurry", tmp_path / "b", "--sharp", tmp_path / "s", "--border", 11])
    assert out["count"] == 1 and out["border"] == 11


def test_the_grid_has_a_column_for_the_estimated_kernel(tmp_path):
    # README: blurry | restored | sharp | [estimated] | true kernel, cells of 64 px 4 px apart
    pairs = evaluate.levin_pairs(_write_levin(tmp_path / "levin", n_images=1, n_kernels=1))
    reference = evaluate.method_restorer("wiener")
    for name, restore, columns in (("plain", reference, 4), ("blind", lambda b, k: (reference(b, k), k), 5)):
        result = evaluate.evaluate(pairs, restore, channels=1, reference=reference, progress=False)
        evaluate.write_grid(tmp_path / f"{name}.png", result["images"])
        assert iio.imread(tmp_path / f"{name}.png").shape[1] == columns * (SIZE + 4) + 4, name


@pytest.mark.parametrize("where, blurry", [("blur", "."), ("blur/inner", "..")])
def test_the_kernels_beside_a_blurry_folder_given_as_dot_are_found(tmp_path, monkeypatch, where, blurry):
    # (Path(".").parent is "." itself: run inside blur/, the kernels were looked for in blur/kernels,
    # and the pairs silently had no kernels, so no error ratios, and non-blind methods refused them)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", _u8(np.stack([_scene(1)] * 3, -1)))
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "0.npy", _kernel(1))
    (tmp_path / "blur" / "inner").mkdir()
    monkeypatch.chdir(tmp_path / where)
    pairs = evaluate.folder_pairs(blurry, tmp_path / "sharp")
    assert pairs[0].kernel is not None and pairs[0].kernel.resolve() == tmp_path / "kernels" / "0.npy"


@pytest.mark.parametrize("option", ["--sharp", "--blurry", "--checkpoint", "--json", "--grid"])
def test_an_empty_path_option_is_refused(tmp_path, capsys, monkeypatch, option):
    # ("" is the current folder: --sharp "$SHARP" run in blur/ scored the blurry images against themselves)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", _u8(np.stack([_scene(1)] * 3, -1)))
    monkeypatch.chdir(tmp_path / "blur")
    args = {"--blurry": ".", "--sharp": "../sharp", option: " " if option == "--json" else ""}
    code, err = _refused(["--benchmark", "folder", *[x for item in args.items() for x in item]], capsys)
    assert code == 2 and f"argument {option}: empty; give a path (an unset shell variable?)" in err


def test_a_reader_that_stops_reading_the_table_loses_no_output(tmp_path, monkeypatch):
    # (evaluate ... --json r.json | head: a table longer than the pipe holds ended in a BrokenPipeError
    # traceback once everything was scored, and --json and --grid were never written)
    read, write = os.pipe()
    os.close(read)  # (the reader is gone)
    stdout = open(write, "w", buffering=1)
    monkeypatch.setattr("sys.stdout", stdout)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", _u8(np.stack([_scene(1)] * 3, -1)))
    out = evaluate.main(["--benchmark", "folder", "--blurry", str(tmp_path / "blur"), "--sharp",
                         str(tmp_path / "sharp"), "--json", str(tmp_path / "r.json"), "--grid",
                         str(tmp_path / "g.png"), "--quiet"])
    assert out["count"] == 1 and json.loads((tmp_path / "r.json").read_text())["count"] == 1
    assert (tmp_path / "g.png").is_file()
    stdout.close()


@pytest.mark.parametrize("suffix, rows", [(".webp", 2), (".gif", 8)])
def test_a_grid_too_large_for_its_format_is_one_line(tmp_path, capsys, suffix, rows):
    # (WebP takes at most 16383 px a side, GIF 65535: 32 rows of 720p pairs passed WebP's, and each was a
    # traceback once everything was scored)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        for i in range(rows):
            iio.imwrite(tmp_path / d / f"{i}.png", np.zeros((8200, 12, 3), np.uint8))
    grid = tmp_path / f"g{suffix}"
    with pytest.raises(SystemExit, match=rf"^error: --grid .*g\{suffix}: cannot write \(.*\); name a \.png, or "
                                         r"draw fewer rows with --grid-rows$"):
        _run(["--benchmark", "folder", "--blurry", tmp_path / "blur", "--sharp", tmp_path / "sharp",
              "--json", tmp_path / "r.json", "--grid", grid])
    assert f"mean ({rows})" in capsys.readouterr().out and (tmp_path / "r.json").is_file() and not grid.exists()


def test_a_grid_its_encoder_refuses_in_a_struct_error_is_one_line_too(tmp_path, monkeypatch):
    # (another Pillow release packs a GIF side over 65535 px into 16 bits and fails in struct.error, not ValueError:
    # the traceback came back there)
    import struct
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
        iio.imwrite(tmp_path / d / "0.png", np.zeros((16, 16, 3), np.uint8))

    def refuse(path, images, max_rows):
        raise struct.error("'H' format requires 0 <= number <= 65535")
    monkeypatch.setattr(evaluate, "write_grid", refuse)
    with pytest.raises(SystemExit, match=r"^error: --grid .*g\.gif: cannot write \('H' format requires .*\); name a "
                                         r"\.png, or draw fewer rows with --grid-rows$"):
        _run(["--benchmark", "folder", "--blurry", tmp_path / "blur", "--sharp", tmp_path / "sharp",
              "--grid", tmp_path / "g.gif"])


def test_a_basicsr_layout_dataset_given_to_the_levin_benchmark_is_sent_to_the_folder_one(tmp_path, refused):
    # (as a blursynth-layout one is: it was "DATA/blurry: no im{i}_kernel{j}.png files", the folder of pairs
    # written by `blursynth dataset --layout basicsr` taken for an empty Levin folder)
    for d in ("lq", "gt", "kernels"):
        (tmp_path / "ds" / d).mkdir(parents=True)
    with refused(rf"^error: --data .*ds: a folder of pairs, not Levin 2009's; score it with --benchmark folder "
                 rf"--blurry {re.escape(str(tmp_path / 'ds' / 'lq'))} --sharp {re.escape(str(tmp_path / 'ds' / 'gt'))}$"):
        _run(["--benchmark", "levin", "--data", tmp_path / "ds"])


def test_running_out_of_memory_names_the_image_and_the_way_out(tmp_path, capsys, monkeypatch):
    # A pair too large for the memory left was a traceback that named no image.
    data = _write_levin(tmp_path / "levin", n_images=1, n_kernels=2)
    pairs = evaluate.levin_pairs(data)
    calls = []

    def starved(blurry, kernel):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: "
                               "you tried to allocate 1234567890 bytes.")
        return blurry
    with pytest.raises(evaluate.EvaluationError, match=r"im1_kernel2.png: out of memory on cpu \(.*not enough "
                       r"memory.*\); free memory, or score on a device with more"):
        evaluate.evaluate(pairs, starved, channels=1, progress=False)
    # other errors are not taken for it
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate.evaluate(pairs, lambda b, k: (_ for _ in ()).throw(RuntimeError("shape mismatch")), channels=1,
                          progress=False)
    # the command: one line, exit status 2, no --json written
    monkeypatch.setattr(evaluate, "method_restorer", lambda name: starved)
    calls.clear()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--benchmark", "levin", "--data", str(data), "--method", "wiener", "--quiet",
                       "--json", str(tmp_path / "scores.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "scores.json").exists()
    err = capsys.readouterr().err
    assert "out of memory on cpu" in err and "Traceback" not in err


def test_a_png_whose_data_ends_before_its_last_row_is_refused_naming_it(tmp_path, refused, short_png):
    # (Pillow reads it with the missing rows black, without a word: it was scored as it was)
    for d in ("blur", "sharp"):
        (tmp_path / d).mkdir()
    scene = _u8(np.stack([_scene(1)] * 3, -1))
    iio.imwrite(tmp_path / "blur" / "a.png", scene)
    short_png(tmp_path / "sharp" / "a.png", scene)
    with refused(r"^error: .*sharp/a\.png: its image data ends before its last row"):
        _run(["--benchmark", "folder", "--blurry", tmp_path / "blur", "--sharp", tmp_path / "sharp"])
