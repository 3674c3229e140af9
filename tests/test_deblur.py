"""Inference: seamless tiling, same size/bit depth out, per-file errors."""

import io
import os
import shutil
import signal
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from blursynth.io import write_image
from unpaired import deblur
from unpaired.deblur import _window, deblur_image, main
from unpaired.models import build_generator, size_factor
from unpaired.train import main as train


def conv_net(seed=0):
    """Fully convolutional, translation equivariant, receptive radius 2 (zero padding only at borders)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(6, 3, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


@settings(max_examples=12, deadline=None)
@given(h=st.integers(9, 90), w=st.integers(9, 90), tile=st.sampled_from([16, 24, 40]),
       overlap=st.sampled_from([8, 12]))
def test_tiled_equals_untiled_away_from_border(h, w, tile, overlap):
    net = conv_net()
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    with torch.no_grad():
        whole = net(x).clamp(0, 1)
    tiled = deblur_image(net, x, tile=tile, overlap=overlap, factor=1)  # (plain convolutions: any grid)
    assert tiled.shape == x.shape
    torch.testing.assert_close(tiled[..., 2:-2, 2:-2], whole[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def conv_stack(radius, seed=0):
    """``radius`` 3x3 convolutions (stride 1, zero padding): receptive radius ``radius``."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(radius):
        layers += [torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return net.eval()


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_the_tiling_condition_is_exact(radius):
    # README and deblur_image: a receptive radius r <= overlap // 4 gives the untiled result except
    # within r px of the image border; one more pixel of radius does not
    x = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(radius))
    net = conv_stack(radius)
    with torch.no_grad():
        whole = net(x).clamp(0, 1)
    r = radius
    for overlap in (4 * r, 4 * r + 3):  # overlap // 4 == r
        tiled = deblur_image(net, x, tile=24, overlap=overlap, factor=1)
        torch.testing.assert_close(tiled[..., r:-r, r:-r], whole[..., r:-r, r:-r], atol=1e-5, rtol=0)
    tiled = deblur_image(net, x, tile=24, overlap=4 * r - 1, factor=1)  # overlap // 4 == r - 1
    assert (tiled - whole)[..., r:-r, r:-r].abs().max() > 1e-4
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert "receptive radius r is at most `--overlap` // 4" in readme and "except within r px of the image border" in readme


def test_tiles_start_on_the_network_s_grid():
    # A network that pools 4x4 cells: exactly tileable only if every tile starts on the image's grid of 4.
    # --overlap 20 put tiles at -10 + 28 k before (10 px of context), off that grid: all 4 px cells shifted.
    def net(x):
        return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="nearest")

    x = torch.rand(1, 3, 96, 100, generator=torch.Generator().manual_seed(0))
    for overlap in (20, 21, 30):
        tiled = deblur_image(net, x, tile=48, overlap=overlap, factor=4)
        torch.testing.assert_close(tiled[..., 4:-4, 4:-4], net(x)[..., 4:-4, 4:-4], atol=1e-6, rtol=0)


def test_the_overlap_is_rounded_up_to_the_network_s_grid():
    # deblur_image: the overlap is rounded *up* to a multiple of factor (below the tile), so what a user
    # asks for is the least context a tile gets: --overlap 9 with factor 4 tiles as 12, and a receptive
    # radius of 12 // 4 = 3 is still restored exactly (rounded down to 8 it would not be)
    x = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(7))
    net = conv_stack(3)
    with torch.no_grad():
        whole = net(x).clamp(0, 1)
    tiled = deblur_image(net, x, tile=24, overlap=9, factor=4)
    assert torch.equal(tiled, deblur_image(net, x, tile=24, overlap=12, factor=4))
    torch.testing.assert_close(tiled[..., 3:-3, 3:-3], whole[..., 3:-3, 3:-3], atol=1e-5, rtol=0)


@given(st.integers(8, 64).flatmap(lambda t: st.tuples(st.just(t), st.integers(0, t // 2))))
def test_window_is_a_partition_of_unity(args):
    # with overlap <= tile / 2 at most two tiles share a pixel and their weights add to exactly 1
    # (beyond that the blend still divides by the summed weights)
    tile, overlap = args
    w = _window(tile, overlap, "cpu")
    stride = tile - overlap
    # sum of the windows of tiles stride apart, over the span where the inner ones overlap
    total = torch.zeros(tile + 3 * stride)
    for k in range(4):
        total[k * stride:k * stride + tile] += w
    assert torch.allclose(total[tile - overlap // 2: tile + 2 * stride - overlap // 2], torch.tensor(1.0))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(["--ngf", "4", "--unet-depth", "2", "--crop", "16", "--val-crop", "16", "--val-size", "1",
           "--batch", "1", "--steps", "1", "--no-progress", "--run-dir", str(run)])
    return run / "checkpoints" / "step_0000001.pt"


def test_a_model_that_outputs_nan_writes_nothing_and_says_why(tmp_path, checkpoint, capsys):
    # a float TIFF was written with the NaN values as they were; an 8-bit PNG failed naming no cause
    state = torch.load(checkpoint, weights_only=True)
    for v in state["models"]["G"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    iio.imwrite(tmp_path / "float.tif", np.random.default_rng(0).random((17, 22, 3)).astype(np.float32))
    write_image(tmp_path / "a.png", np.random.default_rng(1).random((3, 20, 20)).astype(np.float32))
    assert main([str(tmp_path / "float.tif"), str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "nan.pt"),
                 "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "float.tif: the network's output holds 1122 NaN or infinite values" in err and "a.png: the network's" in err
    assert not list((tmp_path / "out").glob("*"))


def test_cli_keeps_size_format_and_bit_depth(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "rgb16.tif", rng.random((3, 37, 53)).astype(np.float32), bits=16)
    write_image(tmp_path / "in" / "gray16.png", rng.random((1, 19, 23)).astype(np.float32), bits=16)
    iio.imwrite(tmp_path / "in" / "float.tif", rng.random((17, 22, 3)).astype(np.float32))
    iio.imwrite(tmp_path / "in" / "gray.png", (rng.random((30, 41)) * 255).astype(np.uint8))
    write_image(tmp_path / "in" / "photo.jpg", rng.random((3, 70, 45)).astype(np.float32), quality=90)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    files = [str(tmp_path / "in" / n)
             for n in ("rgb16.tif", "broken.png", "gray.png", "photo.jpg", "gray16.png", "float.tif")]
    rc = main(files + ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--tile", "32",
                       "--overlap", "8"])
    assert rc == 1  # one file failed ...
    err = capsys.readouterr().err
    assert "broken.png: cannot be read as an image" in err and "1 of 6 file(s) failed" in err
    rgb16 = iio.imread(tmp_path / "out" / "rgb16.tif")  # ... the others were processed
    gray16 = iio.imread(tmp_path / "out" / "gray16.png")
    assert gray16.shape == (19, 23) and gray16.dtype == np.uint16
    floats = iio.imread(tmp_path / "out" / "float.tif")
    assert floats.shape == (17, 22, 3) and floats.dtype == np.float32
    gray = iio.imread(tmp_path / "out" / "gray.png")
    jpg = iio.imread(tmp_path / "out" / "photo.jpg")
    assert rgb16.shape == (37, 53, 3) and rgb16.dtype == np.uint16
    assert gray.shape == (30, 41) and gray.dtype == np.uint8
    assert jpg.shape == (70, 45, 3) and jpg.dtype == np.uint8
    assert not (tmp_path / "out" / "broken.png").exists()


def test_cli_writes_jpeg_at_quality_95(tmp_path, checkpoint):
    # Pillow's default quality 75 would add blocks and ringing to the detail just restored
    from PIL import Image
    photo = np.random.default_rng(4).random((3, 24, 32)).astype(np.float32)
    write_image(tmp_path / "in" / "photo.jpg", photo, quality=98)
    write_image(tmp_path / "q95.jpg", photo, quality=95)
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4"]) == 0
    with Image.open(tmp_path / "out" / "photo.jpg") as out, Image.open(tmp_path / "q95.jpg") as q95:
        assert out.quantization == q95.quantization


@pytest.mark.parametrize("flag", ["--quiet", "--no-progress"])
def test_cli_quiet_hides_the_progress_bars(tmp_path, checkpoint, capsys, flag):
    # spelt as in blursynth and unpaired.train/evaluate, for scripts and logs
    rng = np.random.default_rng(5)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 24)).astype(np.float32))
    args = [str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--tile", "16",
            "--overlap", "4"]
    assert main(args) == 0
    assert "deblur:" in capsys.readouterr().err  # two files: a bar over them
    assert main(args + ["--overwrite", flag]) == 0
    captured = capsys.readouterr()
    assert "deblur:" not in captured.err and "tiles" not in captured.err
    assert captured.out.count(" -> ") == 2 and (tmp_path / "out" / "b.png").exists()


def test_cli_keeps_16bit_pgm_and_ppm_16bit(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(3)
    for name, shape in (("deep.pgm", (20, 24)), ("deep.ppm", (20, 24, 3))):
        (tmp_path / "in").mkdir(exist_ok=True)
        head = b"P5" if len(shape) == 2 else b"P6"  # netpbm by hand: header, then big-endian samples
        samples = rng.integers(0, 65536, size=shape).astype(">u2")
        (tmp_path / "in" / name).write_bytes(head + b"\n24 20\n65535\n" + samples.tobytes())
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4"]) == 0
    for name, head in (("deep.pgm", b"P5"), ("deep.ppm", b"P6")):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(head + b"\n24 20\n65535\n"), data[:20]
        assert len(data) == len(head + b"\n24 20\n65535\n") + 2 * 20 * 24 * (1 if head == b"P5" else 3)
    # a 16-bit file whose suffix names an 8-bit format is refused, not written with 8 bits
    write_image(tmp_path / "png.png", rng.random((1, 20, 24)).astype(np.float32), bits=16)
    (tmp_path / "png.png").rename(tmp_path / "png.jpg")
    assert main([str(tmp_path / "png.jpg"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 1
    assert "png.jpg: a 16-bit image, but .jpg holds 8 bits" in capsys.readouterr().err
    assert not (tmp_path / "out" / "png.jpg").exists()


def test_cli_output_colour_type_follows_the_file_not_the_pixels(tmp_path, checkpoint):
    # a gray photo saved as RGB stays RGB, and a gray file stays gray
    rng = np.random.default_rng(2)
    plane = rng.random((1, 20, 24)).astype(np.float32)
    for name in ("rgb.png", "rgb.jpg", "rgb16.tif"):
        write_image(tmp_path / "in" / name, np.repeat(plane, 3, axis=0), bits=16 if "16" in name else 8)
    write_image(tmp_path / "in" / "gray.png", plane)
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4"]) == 0
    for name in ("rgb.png", "rgb.jpg", "rgb16.tif"):
        assert iio.imread(tmp_path / "out" / name).shape == (20, 24, 3), name
    assert iio.imread(tmp_path / "out" / "gray.png").shape == (20, 24)


def test_cli_folder_leaves_out_hidden_files(tmp_path, checkpoint, capsys):
    # macOS leaves ._photo.png beside photo.png on other file systems: a folder of photos copied
    # from a Mac must not fail on them (exit status 1) nor write them
    write_image(tmp_path / "in" / "photo.png", np.random.default_rng(2).random((3, 20, 24)).astype(np.float32))
    (tmp_path / "in" / "._photo.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4"]) == 0
    assert "error" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_cli_names_a_fifo_in_a_folder_as_what_it_is(tmp_path, checkpoint, capsys):
    # a FIFO named photo.png, which ls lists, was reported as "no such file" (by the trainers' photo
    # checks too), where `blursynth dataset` says what it is
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(2).random((3, 20, 24)).astype(np.float32))
    os.mkfifo(tmp_path / "in" / "fifo.png")
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'in' / 'fifo.png'}: not a regular file (a FIFO, socket or device); remove it\n" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_cli_takes_folders_and_never_overwrites_what_it_was_not_asked_to(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 24)).astype(np.float32))
    write_image(tmp_path / "other" / "a.png", rng.random((3, 20, 24)).astype(np.float32))
    inputs = sorted((tmp_path / "in").iterdir()) + sorted((tmp_path / "other").iterdir())
    before = {p: p.read_bytes() for p in inputs}
    base = ["--tile", "16", "--overlap", "4", "--checkpoint", str(checkpoint)]

    def refused(argv, message):
        assert main(base + argv) == 2
        assert message in capsys.readouterr().err
        assert {p: p.read_bytes() for p in inputs} == before

    refused([str(tmp_path / "in"), "--out", str(tmp_path / "in")], "would overwrite the input")
    refused([str(tmp_path / "in"), str(tmp_path / "other"), "--out", str(tmp_path / "out")],
            "would both be written to")
    refused([str(tmp_path / "in"), "--out", str(tmp_path / "in" / "a.png")], "exists and is not a folder")
    # a mistyped input (or a pattern the shell left unexpanded) was a read error after the checkpoint was
    # loaded and --out made: exit status 1, as if the run had failed
    refused([str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "*.JPG"), "--out", str(tmp_path / "out")],
            f"error: {tmp_path / 'in' / '*.JPG'}: no such file or folder; check the path")
    (tmp_path / "empty").mkdir()
    refused([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "empty")],
            "empty: a folder without checkpoints/best.pt or checkpoints/step_*.pt")
    assert not (tmp_path / "out").exists()

    # A run folder stands for its best.pt or, with none (CycleGAN on photos), its latest step_*.pt; the
    # file used is named. The earlier step here is no checkpoint at all, so picking it would fail.
    run = tmp_path / "gan"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoints" / "step_0000010.pt")
    torch.save({}, run / "checkpoints" / "step_0000002.pt")
    for folder, used in ((checkpoint.parents[1], checkpoint.parent / "best.pt"), (run, run / "checkpoints" / "step_0000010.pt")):
        one = [str(tmp_path / "in" / "a.png"), "--tile", "16", "--overlap", "4"]
        assert main(one + ["--checkpoint", str(folder), "--out", str(tmp_path / "by-folder")]) == 0
        assert f"checkpoint: {used}" in capsys.readouterr().err
        assert main(one + ["--checkpoint", str(used), "--out", str(tmp_path / "by-file")]) == 0
        assert "checkpoint:" not in capsys.readouterr().err  # (a file is the one given: nothing to say)
        assert (tmp_path / "by-folder" / "a.png").read_bytes() == (tmp_path / "by-file" / "a.png").read_bytes()
        for out in ("by-folder", "by-file"):
            shutil.rmtree(tmp_path / out)

    assert main(base + [str(tmp_path / "in"), str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.jpg"]  # a.png once
    done = (tmp_path / "out" / "a.png").read_bytes()
    refused([str(tmp_path / "in"), "--out", str(tmp_path / "out")], "a.png and 1 more already exist; pass --overwrite")
    assert (tmp_path / "out" / "a.png").read_bytes() == done
    assert main(base + [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--overwrite"]) == 0


def test_cli_writes_an_output_for_a_link_to_another_input(tmp_path, checkpoint, capsys):
    # b.png -> a.png: two names, two outputs; inputs were told apart by their resolved path alone, so b.png
    # was left out without a word (a file named twice is still deblurred once)
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(4).random((3, 20, 24)).astype(np.float32))
    (tmp_path / "in" / "b.png").symlink_to("a.png")
    assert main([str(tmp_path / "in"), str(tmp_path / "in" / "a.png"), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert (tmp_path / "out" / "a.png").read_bytes() == (tmp_path / "out" / "b.png").read_bytes()


def test_cli_deblurs_and_names_a_file_whose_name_is_not_utf8(tmp_path, checkpoint, monkeypatch):
    # stdout is strict under a UTF-8 locale other than C: the line naming b"\xe9t\xe9.png" failed after its
    # output was written, which was then counted as failed (exit status 1, a message naming no file)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdout", stdout)
    name = os.fsdecode(b"\xe9t\xe9.png")
    write_image(tmp_path / "in" / name, np.random.default_rng(5).random((3, 20, 24)).astype(np.float32))
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    assert (tmp_path / "out" / name).is_file()
    stdout.flush()
    assert b"\\udce9t\\udce9.png" in stdout.buffer.getvalue()


def test_cli_refuses_an_empty_path_rather_than_take_the_current_folder(tmp_path, checkpoint, capsys, monkeypatch):
    # an unset shell variable: --out "$OUT" wrote into the current folder, --overwrite replacing its files of the
    # inputs' names, and an input "$PHOTOS" deblurred the current folder's images
    rng = np.random.default_rng(3)
    write_image(tmp_path / "in" / "a.png", rng.random((3, 20, 24)).astype(np.float32))
    write_image(tmp_path / "here" / "a.png", rng.random((3, 20, 24)).astype(np.float32))
    monkeypatch.chdir(tmp_path / "here")
    before = (tmp_path / "here" / "a.png").read_bytes()
    base = ["--tile", "16", "--overlap", "4", "--checkpoint", str(checkpoint), "--quiet"]
    for argv, option in (([str(tmp_path / "in"), "--out", "", "--overwrite"], "--out"),
                         (["", "--out", str(tmp_path / "out")], "input"),
                         ([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--checkpoint", ""], "--checkpoint"),
                         ([str(tmp_path / "in"), "--out", " "], "--out")):  # ("$DIR $NAME", both unset)
        with pytest.raises(SystemExit) as exit_:
            main(base + argv)
        assert exit_.value.code == 2 and f"error: {option} is empty" in capsys.readouterr().err
    assert (tmp_path / "here" / "a.png").read_bytes() == before and not (tmp_path / "out").exists()


def test_skip_existing_finishes_a_stopped_run_as_an_uninterrupted_one(tmp_path, checkpoint, capsys):
    # a run stopped half way could only be redone in full (--overwrite), and a kill mid-write left
    # atomic_path's temporary in --out for good
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.jpg", "c.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 24)).astype(np.float32))
    base = [str(tmp_path / "in"), "--tile", "16", "--overlap", "4", "--checkpoint", str(checkpoint), "--quiet"]
    assert main(base + ["--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tmp_path / "whole" / "a.png", out / "a.png")  # the stopped run: a.png done, b.jpg cut short
    (out / ".b.k2x9_q0a.tmp.jpg").write_bytes(b"half")
    (out / ".notes.k2x9_q0a.tmp.txt").write_bytes(b"not ours")  # a temporary of no output: kept
    (out / "a.png").touch()
    before = (out / "a.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(base + ["--out", str(out), "--skip-existing"]) == 0
    assert "--skip-existing: 1 of 3 output(s) already in --out" in capsys.readouterr().err
    assert (out / "a.png").stat().st_mtime_ns == before  # kept, not rewritten
    assert sorted(p.name for p in out.iterdir()) == [".notes.k2x9_q0a.tmp.txt", "a.png", "b.jpg", "c.png"]
    for name in ("a.png", "b.jpg", "c.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    with pytest.raises(SystemExit, match="2"):  # (argparse's error)
        main(base + ["--out", str(out), "--skip-existing", "--overwrite"])
    assert "--overwrite replaces the outputs already in --out and --skip-existing keeps them" in capsys.readouterr().err


def _ctrl_c():
    raise KeyboardInterrupt


def _kill():  # what `kill` runs: the SIGTERM handler in place (the default one would end pytest)
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


@pytest.mark.parametrize("interrupt, code", [(_ctrl_c, 130), (_kill, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_is_one_line_and_skip_existing_finishes_it(tmp_path, checkpoint, capsys, monkeypatch,
                                                                       interrupt, code):
    # Ctrl-C printed a 30-line traceback and SIGTERM ended the run without a word
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 24)).astype(np.float32))
    base = [str(tmp_path / "in"), "--tile", "16", "--overlap", "4", "--checkpoint", str(checkpoint), "--quiet"]
    assert main(base + ["--out", str(tmp_path / "whole")]) == 0
    calls, real = [], deblur.deblur_file

    def stopped_at_the_second(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            interrupt()
        return real(*args, **kwargs)

    monkeypatch.setattr(deblur, "deblur_file", stopped_at_the_second)
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "out")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m unpaired.deblur: interrupted; run the same command with --skip-existing")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    monkeypatch.setattr(deblur, "deblur_file", real)
    assert main(base + ["--out", str(tmp_path / "out"), "--skip-existing"]) == 0
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_cli_bad_checkpoint(tmp_path, capsys):
    write_image(tmp_path / "x.png", np.zeros((3, 8, 8), np.float32))  # (a missing input is refused first)
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    # (not "not a checkpoint ... or cut short": the file is not there at all)
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")]) == 2
    assert f"--checkpoint {tmp_path / 'none.pt'}: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "not a checkpoint written by unpaired.train" in capsys.readouterr().err

    class Unpickled:  # what a malicious checkpoint holds: unpickling it would create the marker file
        def __reduce__(self):
            return open, (str(tmp_path / "ran"), "w")
    torch.save({"generator_spec": {}, "models": {"G": Unpickled()}}, tmp_path / "evil.pt")
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "holds Python objects that unpaired.train never writes" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()
    # a TorchScript model: torch's words advised weights_only=False (which runs the file's code), after a warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch.jit.script is deprecated in newer releases)
        torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(tmp_path / "ts.pt"))
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "ts.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ts.pt: a TorchScript model (torch.jit.save), not a checkpoint" in err and "weights_only" not in err
    assert "Warning" not in err, err


@pytest.mark.parametrize("spec", [{"kind": "unet", "ngf": 4, "depth": 2, "residual": True}, "unet",
                                  {"kind": "unet", "ngf": 8, "depth": 2, "residual": True, "colour": 1}])
def test_cli_checkpoint_whose_weights_do_not_fit_its_spec(tmp_path, capsys, spec):
    # weights of another size, a spec that is no dict, a key the network does not take: each was a traceback (exit 1)
    weights = build_generator({"kind": "unet", "ngf": 8, "depth": 2, "residual": True}, seed=0).state_dict()
    torch.save({"generator_spec": spec, "models": {"G": weights}}, tmp_path / "edited.pt")
    write_image(tmp_path / "x.png", np.zeros((3, 16, 16), np.float32))
    assert main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "edited.pt"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --checkpoint ") and "edited.pt: its weights G do not fit its generator_spec" in err
    assert len(err.splitlines()) == 1


def test_cli_bad_device(tmp_path, checkpoint, capsys):
    write_image(tmp_path / "x.png", np.zeros((3, 8, 8), np.float32))  # (a missing input is refused first)
    args = [str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    assert main(args + ["--device", "gpu"]) == 2
    assert "--device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(args + ["--device", "cuda"]) == 2
        assert "no CUDA device is visible; use --device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("options, named", [(["--tile", "0"], "--tile"), (["--tile", "64", "--overlap", "64"], "--overlap"),
                                             (["--overlap", "-4"], "--overlap")])
def test_cli_checks_tile_and_overlap_before_loading(tmp_path, options, named, capsys):
    # the checkpoint does not exist: a refusal that names it would mean the options were checked too late
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")] + options)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in err and "none.pt" not in err
    assert err.split("error: ", 1)[1].startswith(f"{named} must")  # (the option at fault, not one it bounds)


def test_overlap_must_fit_in_tile():
    with pytest.raises(ValueError, match="overlap"):
        deblur_image(conv_net(), torch.rand(1, 3, 20, 20), tile=16, overlap=16)
    with pytest.raises(ValueError, match=r"image must be \(B, C, H, W\), got \(3, 20, 20\)"):
        deblur_image(conv_net(), torch.rand(3, 20, 20), tile=16, overlap=4)


def test_tile_larger_than_image_shrinks_to_it():
    # --tile 4096 on a 40x50 photo padded it to one 4096x4096 tile (55 s; --tile 100000 asked for 120 GB)
    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    x = torch.rand(1, 3, 40, 50)
    out = deblur_image(net, x, tile=4096, overlap=32, factor=4)
    # the image itself, rounded up to a multiple of 4 (one tile has no neighbour to take context from)
    assert seen == [(40, 52)]
    torch.testing.assert_close(out, x)
    # only the axis the tile overshoots shrinks: 40 rows fit one tile, 300 columns take several
    seen.clear()
    deblur_image(net, torch.rand(1, 3, 40, 300), tile=128, overlap=32, factor=4)
    assert seen and all(s == (40, 128) for s in seen)
    # a tile that shrinks still holds two strides of the network, whatever the overlap
    seen.clear()
    x = torch.rand(1, 3, 1, 5)
    torch.testing.assert_close(deblur_image(net, x, tile=64, overlap=31, factor=4), x)
    assert seen == [(8, 8)]
    # ... and, of an odd side (size factor 1) shorter than the overlap, is weighted 1 throughout
    x = torch.rand(1, 3, 5, 7)
    torch.testing.assert_close(deblur_image(net, x, tile=64, overlap=40, factor=1), x)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["resnet", "unet"]), h=st.integers(2, 12), w=st.integers(2, 12),
       overlap=st.integers(0, 40), extra=st.integers(0, 20), seed=st.integers(0, 2 ** 31 - 1))
def test_an_image_one_tile_holds_is_restored_as_the_network_restores_it_whole(kind, h, w, overlap, extra, seed):
    """With the default --overlap 32 a 128 px image went through the network as a 160 px tile with 16 px
    of mirrored context: the ResNet's instance norm averaged that in, so deblur and evaluate --checkpoint
    differed everywhere from what training validated, net(image). The real generators, sides in units
    of their size factor (tanh outputs: a residual one starts as the identity, which hides the padding)."""
    spec = {"kind": kind, "ngf": 4, "residual": False, **({"n_blocks": 1} if kind == "resnet" else {"depth": 2})}
    net = build_generator(spec, seed=seed % 1000).eval()
    factor = size_factor(spec)
    x = torch.rand(2, 3, h * factor, w * factor, generator=torch.Generator().manual_seed(seed))
    tile = max(h, w) * factor + factor * (extra // factor)  # any tile that holds the image
    with torch.no_grad():
        whole = net(x).clamp(0, 1)
    torch.testing.assert_close(deblur_image(net, x, tile=tile, overlap=min(overlap, tile - 1), factor=factor),
                               whole, atol=1e-6, rtol=0)


def test_tiles_hold_two_strides_of_the_network(tmp_path, checkpoint):
    # --tile 8, or --overlap 0 on a tiny image, gave the default U-Net (size factor 8) 8 px tiles, 1 px at
    # its coarsest level, and its reflect padding failed in a traceback
    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    for tile, overlap, size in ((8, 4, (40, 50)), (256, 0, (1, 1)), (256, 0, (3, 2))):
        seen.clear()
        x = torch.rand(1, 3, *size)
        torch.testing.assert_close(deblur_image(net, x, tile=tile, overlap=overlap, factor=8), x)
        assert seen and all(s[0] >= 16 and s[1] >= 16 for s in seen)
    for name, size in (("tiny.png", (1, 1)), ("small.png", (3, 2)), ("photo.png", (40, 50))):
        write_image(tmp_path / name, np.random.default_rng(0).random((3, *size)).astype(np.float32))
    for options in (["--overlap", "0"], ["--tile", "4", "--overlap", "2"]):  # (this checkpoint: factor 4)
        out = tmp_path / f"out{options[1]}"
        assert main([str(tmp_path / n) for n in ("tiny.png", "small.png", "photo.png")]
                    + ["--checkpoint", str(checkpoint), "--out", str(out), "--quiet"] + options) == 0
        assert iio.imread(out / "small.png").shape == (3, 2, 3)


def test_load_restorer_refuses_integer_images_and_a_missing_cuda(checkpoint):
    from unpaired.inference import load_restorer

    restore = load_restorer(checkpoint)
    x = torch.rand(1, 3, 20, 24)
    with pytest.raises(TypeError, match=r"float in \[0, 1\], got torch.uint8; convert with .float\(\) / 255"):
        restore((x * 255).to(torch.uint8))  # was restored as if its 0-255 values were far above white
    assert restore(x).shape == x.shape
    with pytest.raises(TypeError, match="blurry image must be a torch.Tensor, got ndarray"):
        restore(x.numpy())
    for bad in (x[0], x[:, :2]):  # (no batch axis; two channels: neither gray nor RGB)
        with pytest.raises(ValueError, match=r"blurry image must be \(B, 1 or 3, H, W\), got "):
            restore(bad)
    if not torch.cuda.is_available():  # was torch's own multi-line error, after the checkpoint was read
        for device in ("cuda", torch.device("cuda", 0)):
            with pytest.raises(ValueError) as err:
                load_restorer(checkpoint, device=device)
            assert "no CUDA device is visible; use --device cpu" in str(err.value) and "\n" not in str(err.value)


def test_load_restorer_gives_a_gray_image_the_mean_of_its_three_restored_channels(checkpoint):
    from unpaired.inference import load_restorer

    restore = load_restorer(checkpoint)
    gray = torch.rand(2, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    rgb = restore(gray.expand(-1, 3, -1, -1))
    assert not torch.equal(rgb[:, :1], rgb[:, 1:2])  # (the net treats the channels apart: a real choice)
    assert torch.equal(restore(gray), rgb.mean(1, keepdim=True))


def test_load_restorer_tiles_as_the_deblur_command_does_by_default(checkpoint):
    # load_restorer (and evaluate --checkpoint through it) restores an image wider than a tile as
    # `unpaired.deblur` with its defaults --tile 256 --overlap 32 does: blended tiles, no seams
    from unpaired.deblur import load_generator
    from unpaired.inference import load_restorer

    net, factor = load_generator(checkpoint)
    x = torch.rand(1, 3, 24, 300, generator=torch.Generator().manual_seed(1))
    assert torch.equal(load_restorer(checkpoint)(x), deblur_image(net, x, tile=256, overlap=32, factor=factor))


def test_checkpoint_restorer_for_evaluate(checkpoint):
    from unpaired.evaluate import checkpoint_restorer

    restore = checkpoint_restorer(checkpoint)
    gray = torch.rand(1, 1, 21, 30)
    out = restore(gray, None)
    assert out.shape == gray.shape and 0 <= out.min() and out.max() <= 1
    rgb = torch.rand(1, 3, 21, 30)
    assert restore(rgb, torch.ones(3, 3) / 9).shape == rgb.shape
    # a one-step residual generator is still close to the identity
    assert (restore(rgb, None) - rgb).abs().mean() < 0.1


def test_cli_stops_at_a_full_disk_and_names_an_out_it_cannot_create(tmp_path, checkpoint, capsys, monkeypatch):
    import errno

    from unpaired import deblur
    rng = np.random.default_rng(5)
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 20)).astype(np.float32))
    args = [str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--tile", "16", "--overlap", "4", "--quiet"]
    calls = []

    def full(net, src, dst, *rest, **kw):
        calls.append(src.name)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(deblur, "deblur_file", full)
    assert main(args + ["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert calls == ["a.png"]  # (it tried all three, failing each the same way)
    assert "No space left on device" in err and "2 file(s) not tried: --out" in err and "free space" in err

    def read_only(self, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(args + ["--out", str(tmp_path / "nowhere")]) == 2  # (a PermissionError traceback before)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: --out" in err and "cannot create it (Permission denied)" in err


def test_cli_gives_a_gray_file_the_mean_of_its_three_restored_channels(tmp_path, checkpoint):
    # a gray file goes through the RGB network as three equal channels and comes back gray: as their
    # mean (as load_restorer, and so evaluate --checkpoint, gives it), not one of them. A residual
    # generator whose head has zero weights adds its bias to the input: here a different one per channel.
    state = torch.load(checkpoint, weights_only=True)
    state["models"]["G"]["head.weight"].zero_()
    state["models"]["G"]["head.bias"].copy_(torch.tensor([0.1, -0.2, 0.04]))
    torch.save(state, tmp_path / "biased.pt")
    write_image(tmp_path / "in" / "gray.png", np.random.default_rng(6).random((1, 20, 24)).astype(np.float32), bits=16)
    assert main([str(tmp_path / "in"), "--checkpoint", str(tmp_path / "biased.pt"), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    x = iio.imread(tmp_path / "in" / "gray.png").astype(np.float64) / 65535
    expected = np.mean([np.clip(x + b, 0, 1) for b in (0.1, -0.2, 0.04)], axis=0)
    out = iio.imread(tmp_path / "out" / "gray.png")
    assert out.dtype == np.uint16
    np.testing.assert_allclose(out / 65535, expected, atol=1.5 / 65535)


def test_cli_tiles_with_the_documented_defaults_and_the_options_given(tmp_path, checkpoint, monkeypatch):
    # --tile 256 and --overlap 32 unless given (the help text; the README measures the default 32)
    seen = []

    def spy(net, image, tile, overlap, factor, **kwargs):
        seen.append((tile, overlap))
        return image.float()
    monkeypatch.setattr(deblur, "deblur_image", spy)
    write_image(tmp_path / "a.png", np.random.default_rng(7).random((3, 20, 24)).astype(np.float32))
    args = [str(tmp_path / "a.png"), "--checkpoint", str(checkpoint), "--quiet"]
    assert main(args + ["--out", str(tmp_path / "defaults")]) == 0
    assert main(args + ["--out", str(tmp_path / "given"), "--tile", "64", "--overlap", "8"]) == 0
    assert seen == [(256, 32), (64, 8)]


def test_cli_writes_jpeg_spelt_jpeg_at_quality_95_too(tmp_path, checkpoint):
    from PIL import Image
    photo = np.random.default_rng(8).random((3, 24, 32)).astype(np.float32)
    write_image(tmp_path / "in" / "photo.jpeg", photo, quality=98)
    write_image(tmp_path / "in" / "IMG_0001.JPG", photo, quality=98)  # (as cameras name them)
    write_image(tmp_path / "q95.jpg", photo, quality=95)
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    for name in ("photo.jpeg", "IMG_0001.JPG"):
        with Image.open(tmp_path / "out" / name) as out, Image.open(tmp_path / "q95.jpg") as q95:
            assert out.quantization == q95.quantization, name


def test_cli_writes_jpeg_spelt_jfif_or_jpe_at_quality_95_too(tmp_path, checkpoint):
    # (Pillow writes these suffixes as JPEG, at its default quality 75 unless told; browsers save .jfif)
    from PIL import Image
    photo = np.random.default_rng(8).random((3, 24, 32)).astype(np.float32)
    write_image(tmp_path / "q95.jpg", photo, quality=95)
    names = ("photo.jfif", "IMG.JPE")
    for name in names:
        shutil.copy(tmp_path / "q95.jpg", tmp_path / name)
    assert main([*(str(tmp_path / name) for name in names), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "out"), "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    for name in names:
        with Image.open(tmp_path / "out" / name) as out, Image.open(tmp_path / "q95.jpg") as q95:
            assert out.format == "JPEG" and out.quantization == q95.quantization, name


@pytest.mark.parametrize("name", ["float.tiff", "FLOAT.TIF"])
def test_cli_keeps_a_float_tiff_float_when_its_suffix_is_tiff(tmp_path, checkpoint, name):
    # (in capitals, imageio handed the write to Pillow, which cannot write float RGB: a traceback)
    (tmp_path / "in").mkdir()
    iio.imwrite(tmp_path / "float.tif", np.random.default_rng(9).random((17, 22, 3)).astype(np.float32))
    (tmp_path / "float.tif").rename(tmp_path / "in" / name)
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    (tmp_path / "out" / name).rename(tmp_path / "out.tif")
    out = iio.imread(tmp_path / "out.tif")
    assert out.shape == (17, 22, 3) and out.dtype == np.float32


def test_cli_refuses_to_replace_even_a_single_earlier_output(tmp_path, checkpoint, capsys):
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(10).random((3, 20, 24)).astype(np.float32))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"earlier")
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert "a.png already exist; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "a.png").read_bytes() == b"earlier"


@pytest.mark.parametrize("below", ["", "sub"])
def test_cli_names_an_out_that_is_a_link_to_a_missing_folder(tmp_path, checkpoint, capsys, below):
    # (it said "cannot create it (File exists)", as train and evaluate did before they named the link)
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(11).random((3, 20, 24)).astype(np.float32))
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    out = tmp_path / "link" / below
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which does not exist; make that folder" in err
    assert err.count("\n") == 1 and not (tmp_path / "gone").exists()


def test_cli_names_the_input_of_a_16_bit_file_it_cannot_write(tmp_path, checkpoint, capsys):
    # the file to rename or convert is the input, not the output that was never written
    write_image(tmp_path / "deep.png", np.random.default_rng(11).random((1, 20, 24)).astype(np.float32), bits=16)
    (tmp_path / "in").mkdir()
    (tmp_path / "deep.png").rename(tmp_path / "in" / "deep.jpg")
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert f"error: {tmp_path / 'in' / 'deep.jpg'}: a 16-bit image, but .jpg holds 8 bits" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_an_image_of_another_float_dtype_goes_through_the_network_in_its_weights_dtype(dtype):
    # a float64 image (NumPy's default: torch.from_numpy(photo / 255)) or a half one met the float32
    # weights in a traceback from inside the network ("Input type (double) and bias type (float)")
    net = build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": True}, seed=0).eval()
    x = torch.rand(2, 3, 37, 51, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = deblur_image(net, x, tile=16, overlap=8, factor=4)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, deblur_image(net, x.float(), tile=16, overlap=8, factor=4))
    with pytest.raises(TypeError, match="float"):
        deblur_image(net, (x.float() * 255).to(torch.uint8), tile=16, overlap=8, factor=4)


def test_a_batch_of_no_images_gives_a_batch_of_no_images(checkpoint):
    # the network takes a batch of none; tiling it ended in torch.cat's "expected a non-empty list"
    from unpaired.inference import load_restorer
    net = build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": True}, seed=0).eval()
    out = deblur_image(net, torch.rand(0, 3, 37, 51), tile=16, overlap=8, factor=4)
    assert out.shape == (0, 3, 37, 51) and out.dtype == torch.float32
    assert load_restorer(checkpoint)(torch.rand(0, 1, 20, 20)).shape == (0, 1, 20, 20)


def test_tiles_round_the_tile_up_to_the_size_factor_and_keep_an_overlap_rounding_to_it():
    # --tile 30 with size factor 4 tiles at 32 (rounded up, as documented); --overlap 13 with --tile 16 stays 13,
    # since rounded up to 16 it would leave no stride between the tiles
    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    x = torch.rand(1, 3, 40, 300, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(deblur_image(net, x, tile=30, overlap=8, factor=4), x)
    assert seen and all(s == (32, 32) for s in seen)
    torch.testing.assert_close(deblur_image(net, x, tile=16, overlap=13, factor=4), x)


def test_the_context_beyond_the_image_border_is_reflected():
    # a 3x3 mean (receptive radius 1) restores the image as it restores the image padded by reflection, up to
    # the border itself: the tiles at the border see reflected context (edge replication gave other border rows)
    def net(x):
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)

    x = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(4))
    expected = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    torch.testing.assert_close(deblur_image(net, x, tile=24, overlap=8, factor=1), expected, atol=1e-6, rtol=0)


def test_a_float_tiff_cut_short_by_a_full_disk_leaves_no_output(tmp_path, checkpoint, capsys, monkeypatch):
    # outputs are written whole or not at all (--skip-existing keeps what is there): a float TIFF was written
    # in place, so a full disk (or a kill) mid-write left a partial file that looked complete
    import errno
    iio.imwrite(tmp_path / "float.tif", np.random.default_rng(12).random((17, 22, 3)).astype(np.float32))
    real = iio.imwrite

    def full(path, image, **kwargs):
        Path(path).write_bytes(b"II*\x00 cut short")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deblur.iio, "imwrite", full)
    assert main([str(tmp_path / "float.tif"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.setattr(deblur.iio, "imwrite", real)


def test_a_reblur_run_folder_names_its_other_best_checkpoint(tmp_path, checkpoint, capsys):
    # a reblur run keeps best.pt (pairs' PSNR) and best_reblur.pt (photos' re-blur error): given the folder,
    # deblur takes best.pt and names the other choice
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("best.pt", "best_reblur.pt"):
        shutil.copy(checkpoint, ckpts / name)
    write_image(tmp_path / "a.png", np.random.default_rng(13).random((3, 20, 24)).astype(np.float32))
    assert main([str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint: {ckpts / 'best.pt'} (the run's other choice" in err and f"{ckpts / 'best_reblur.pt'})" in err


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 128512512 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError("Unable to allocate 1.5 GiB for an array")])
def test_an_image_too_large_for_memory_is_named_with_the_fix_and_the_others_are_deblurred(
        tmp_path, checkpoint, capsys, monkeypatch, error):
    # (a traceback that lost every later file and did not say that a smaller --tile needs less memory)
    rng = np.random.default_rng(8)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 20)).astype(np.float32))
    real, calls = deblur.deblur_image, []

    def first_too_big(net, image, *args, **kwargs):  # (a.png, the first in order)
        calls.append(image.shape)
        if len(calls) == 1:
            raise error
        return real(net, image, *args, **kwargs)
    monkeypatch.setattr(deblur, "deblur_image", first_too_big)
    args = [str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args + ["--tile", "2048"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a.png: out of memory (" in err and "lower --tile (now 2048" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png"]

    def broken(*args, **kwargs):
        raise RuntimeError("not about memory")
    monkeypatch.setattr(deblur, "deblur_image", broken)
    with pytest.raises(RuntimeError, match="not about memory"):  # (other errors are bugs: not hidden)
        main(args + ["--overwrite"])


def test_a_reader_that_stops_reading_stdout_fails_no_file(tmp_path, checkpoint, capsys, monkeypatch):
    # (deblur ... | head -1: the BrokenPipeError of each later "src -> dst" line, an OSError, counted that
    # written output as a failed file: "error: [Errno 32] Broken pipe", "2 of 3 file(s) failed", exit status 1)
    read, write = os.pipe()
    os.close(read)  # (the reader is gone)
    stdout = open(write, "w", buffering=1)  # (line by line, as a terminal, so the first line meets the gone reader)
    monkeypatch.setattr("sys.stdout", stdout)
    rng = np.random.default_rng(9)
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "in" / name, rng.random((3, 20, 20)).astype(np.float32))
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--tile", "16", "--overlap", "4", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Broken pipe" not in err and "failed" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    stdout.close()


@pytest.mark.parametrize("flag", ["--overwrite", "--skip-existing"])
def test_a_folder_where_an_output_would_go_is_named_before_anything_is_done(tmp_path, checkpoint, capsys, flag):
    # (--overwrite failed that file after restoring it, in "[Errno 21] Is a directory", naming no fix;
    # --skip-existing took the folder for an output already there, so that input never got one)
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(10).random((3, 20, 20)).astype(np.float32))
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--quiet",
                 flag]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'a.png'} is a folder, where the output of that name would go; rename or move it" in err
    assert (tmp_path / "out" / "a.png").is_dir()


def test_a_png_whose_data_ends_before_its_last_row_is_named_and_the_others_are_deblurred(
        tmp_path, checkpoint, capsys, short_png):
    # (Pillow reads it with the missing rows black, without a word: it was restored and written as a photo)
    rng = np.random.default_rng(9)
    (tmp_path / "in").mkdir()
    short_png(tmp_path / "in" / "a.png", (rng.random((20, 20, 3)) * 255).astype(np.uint8))
    write_image(tmp_path / "in" / "b.png", rng.random((3, 20, 20)).astype(np.float32))
    assert main([str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "a.png: its image data ends before its last row" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png"]
