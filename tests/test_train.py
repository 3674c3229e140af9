"""The trainer: config from TOML + command line, runs in both modes, exact resume, DDP, bad input."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blursynth.cli import main as blursynth_main
from blursynth.io import ImageError, write_image
from unpaired import config
from unpaired.train import cli, lr_factor, main

# TINY_NET for runs on pairs from disk, which have no synthetic pool to size
TINY_NET = ["--generator", "unet", "--ngf", "4", "--unet-depth", "2", "--crop", "16", "--val-crop", "16",
            "--val-size", "2", "--batch", "2", "--log-every", "1", "--no-progress"]
TINY = TINY_NET + ["--pair-pool", "3", "--pair-pool-size", "24"]
TINY_GAN = ["--mode", "cyclegan", "--generator", "resnet", "--ngf", "4", "--n-blocks", "1", "--ndf", "4",
            "--n-layers-d", "2", "--crop", "32", "--val-crop", "32", "--val-size", "2", "--batch", "2",
            "--pool-size", "2", "--log-every", "1", "--no-progress"]


def weights(run: Path, step: int) -> dict:
    state = torch.load(run / "checkpoints" / f"step_{step:07d}.pt", weights_only=False)
    return {f"{m}.{k}": v for m, sd in state["models"].items() for k, v in sd.items()}


def assert_same_state(a, b, where="checkpoint"):
    """Nested checkpoint contents equal exactly: tensors bit for bit, everything else by ==."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def assert_resumed_as_uninterrupted(a: Path, b: Path, step: int) -> None:
    """Run b (stopped and resumed) saved at ``step`` the checkpoint run a saved, bit for bit: weights,
    optimiser moments, AMP scaler, pools, RNG states and bests; its config differs only in where
    the run is and that it was resumed, and its ``seconds`` (the time it trained) are its own."""
    sa, sb = (torch.load(r / "checkpoints" / f"step_{step:07d}.pt", weights_only=False) for r in (a, b))
    assert sa.pop("seconds") >= 0 and sb.pop("seconds") >= 0
    for cfg, run, resumed in ((sa["config"], a, None), (sb["config"], b, str(b))):
        assert cfg.pop("run_dir") == str(run) and cfg.pop("resume") == resumed
    assert_same_state(sa, sb)


def sample_cell(grid, row: int, col: int, side: int = 16):
    """Image (row, col) of a samples/ grid of ``side`` px crops, 2 px apart and 2 px from the edge."""
    step = side + 2
    return grid[2 + step * row:step * (row + 1), 2 + step * col:step * (col + 1)]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- config


def test_config_toml_then_command_line_override(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('mode = "cyclegan"\nlr = 1\nn-blocks = 4\nresidual = false\nrun_dir = "x"\n')
    cfg = config.parse_args(["--config", str(toml), "--lr", "1e-4", "--residual"])
    assert cfg.mode == "cyclegan" and cfg.n_blocks == 4 and cfg.run_dir == "x"
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float) and cfg.residual is True
    assert config.parse_args(["--out", str(tmp_path / "r")]).run_dir == str(tmp_path / "r")  # --run-dir's alias
    toml.write_text(f'out = "{tmp_path / "o"}"\n')  # ... in a file too (it was an unknown option)
    assert config.parse_args(["--config", str(toml)]).run_dir == str(tmp_path / "o")
    # both spellings on the command line: the last silently won (the same value twice is harmless)
    with pytest.raises(SystemExit) as exc:
        config.parse_args(["--out", "a", "--lr", "1", "--run-dir", "b"])
    assert exc.value.code == 2
    assert "error: --out a and --run-dir b are the same option; give one" in capsys.readouterr().err
    assert config.parse_args(["--out", "a", "--run-dir", "a"]).run_dir == "a"
    toml.write_text('out = "a"\nrun-dir = "b"\n')
    with pytest.raises(config.ConfigError, match="c.toml: give one of run_dir and out, not both"):
        config.parse_args(["--config", str(toml)])
    toml.write_text('val_size = 4\nval-size = 6\n')  # (the last one silently won)
    with pytest.raises(config.ConfigError, match="c.toml: 'val_size' and 'val-size' are the same option; keep one"):
        config.parse_args(["--config", str(toml)])
    # a path's ~ is the home folder, as the shell makes it on the command line (a folder named ~ was made)
    toml.write_text('mode = "reblur"\nout = "~/runs/a"\npairs = "~/pairs"\nblurry = "~"\nval_pairs = "a/~"\n')
    cfg = config.load_toml(toml)
    home = os.path.expanduser("~")
    assert (cfg.run_dir, cfg.pairs, cfg.blurry, cfg.val_pairs) == (f"{home}/runs/a", f"{home}/pairs", home, "a/~")
    toml.write_text('mode = "cyclegan"\nsharp = "~/s"\nval_pairs = "~/v"\nperceptual_weights = "~/vgg.pth"\n')
    cfg = config.load_toml(toml)
    assert (cfg.sharp, cfg.val_pairs, cfg.perceptual_weights) == (f"{home}/s", f"{home}/v", f"{home}/vgg.pth")
    # (and a --blur-recipe given as a file: "~/shake.toml: recipe file not found")
    toml.write_text('mode = "cyclegan"\nblur_model = "shake"\nblur_recipe = "~/shake.toml"\n')
    assert config.load_toml(toml).blur_recipe == f"{home}/shake.toml"
    toml.write_text('mode = "cyclegan"\nblur_model = "shake"\nblur_recipe = "default"\n')  # (a name stays one)
    assert config.load_toml(toml).blur_recipe == "default"
    assert config.parse_args(["--quiet"]).progress is False  # blursynth's spelling of --no-progress
    assert config.parse_args([]).progress is True
    paired, gan = config.parse_args([]), config.parse_args(["--mode", "cyclegan"])
    assert (paired.generator, paired.lr, paired.beta1) == ("unet", 1e-3, 0.9)  # mode-dependent defaults
    assert (gan.generator, gan.lr, gan.beta1, gan.beta2) == ("resnet", 2e-4, 0.5, 0.999)  # the reference
    assert (gan.lambda_cycle, gan.lambda_identity) == (10.0, 0.5)
    shake = ["--mode", "cyclegan", "--blur-model", "shake"]
    # with a camera-shake F: the cycle weighs more and the identity loss is off
    assert (config.parse_args(shake).lambda_cycle, config.parse_args(shake).lambda_identity) == (50.0, 0.0)
    assert config.parse_args(shake + ["--lambda-identity", "0.2"]).lambda_identity == 0.2
    # F's kernel canvas: the recipe's kernel size (41 for default, 65 for gopro-like), 21 for learned kernels
    assert config.parse_args(shake).blur_kernel == 41
    assert config.parse_args(shake + ["--blur-recipe", "gopro-like"]).blur_kernel == 65
    assert config.parse_args(["--mode", "cyclegan", "--blur-model", "kernel"]).blur_kernel == 21


def test_a_config_file_s_tilde_is_the_home_folder_on_the_command_line_too(tmp_path, monkeypatch):
    # (expanded by load_toml alone: `python -m unpaired.train --config my.toml` with out = "~/runs/a" still
    # trained into a folder named ~ in the working directory, and read pairs = "~/pairs" from one)
    monkeypatch.setenv("HOME", str(tmp_path))
    toml = tmp_path / "c.toml"
    toml.write_text('mode = "reblur"\nout = "~/runs/a"\npairs = "~/pairs"\nblurry = "~/photos"\n')
    cfg = config.parse_args(["--config", str(toml)])
    assert (cfg.run_dir, cfg.pairs, cfg.blurry) == (f"{tmp_path}/runs/a", f"{tmp_path}/pairs", f"{tmp_path}/photos")


@pytest.mark.parametrize("text, match", [
    ("learning_rate = 1\n", "unknown option.*learning_rate"),
    ("lrr = 1\n", r"unknown option\(s\) lrr \(did you mean lr\?\); valid options are "),
    ('steps = "ten"\n', "'steps' must be int"),
    ("residual = 1\n", "'residual' must be bool"),
    ('mode = "gan"\n', "--mode must be one of paired, cyclegan, reblur"),
    ("crop = 30\n", "--crop 30 must be a multiple of 8"),
    # sides the generator cannot take: the data was made, then step 1 failed in a traceback
    ("crop = 8\n", r"--crop 8 is below 16 px, the least the unet generator takes \(2 px at its coarsest scale\)"),
    ("mode = 'cyclegan'\ncrop = 4\n", "--crop 4 is below 8 px, the least the resnet generator takes"),
    ("unet_depth = 4\ncrop = 64\nval_crop = 16\n", "--val-crop 16 is below 32 px"),
    # and the discriminators (validation images do not go through them)
    ("mode = 'cyclegan'\ncrop = 16\n", r"--crop 16 is below 24 px, the least the PatchGAN discriminator takes "
                                        r"with --n-layers-d 3 \(3 \* 2\*\*3\)"),
    ("mode = 'cyclegan'\nn_layers_d = 5\n", "--crop 64 is below 96 px, the least the PatchGAN discriminator"),
    ("lr = -1\n", "--lr must be >= 0"),
    # Adam divides by 1 - beta ** step: a beta of 1 divides by zero (torch refuses it, in a traceback)
    ("beta1 = 1.0\n", r"--beta1/--beta2 must lie in \[0, 1\), got 1.0, 0.999"),
    ("beta2 = 1.0\n", r"--beta1/--beta2 must lie in \[0, 1\), got 0.9, 1.0"),
    # seed * 1000 + rank beyond 2**63 failed after the data was made ("Overflow when unpacking long long"),
    # or at the first CycleGAN step, naming that derived seed rather than --seed
    (f"seed = {2 ** 63 // 1000}\n", f"--seed must be at most {2 ** 63 // 1000 - 1} "),
    (f"seed = {2 ** 62}\n", "--seed must be at most"),
    # NaN passed every `< 0` check: torch's "Invalid learning rate: nan", NaN weights, or a loss left off
    ("lr = nan\n", "--lr must be >= 0 and finite, got nan"),
    ("lr = inf\n", "--lr must be >= 0 and finite, got inf"),
    ("perceptual = nan\n", "--perceptual must be >= 0 and finite, got nan"),
    ("grad_clip = nan\n", "--grad-clip must be >= 0 and finite, got nan"),
    ("mode = 'cyclegan'\nlambda_cycle = nan\n", "--lambda-cycle must be >= 0 and finite, got nan"),
    ("mode = 'cyclegan'\nlambda_identity = inf\n", "--lambda-identity must be >= 0 and finite, got inf"),
    ("stop_at = 0\n", "--stop-at must be a step >= 1"),
    ("steps = 5\nstop_at = 10\n", "--stop-at 10 is past --steps 5, where the run ends anyway"),
    ("pair_pool = 0\npair_pool_size = -3\n", "--pair-pool-size must be >= 1, got -3"),
    ("decay_steps = -5\n", r"--decay-steps must be >= 0 \(or -1: half of --steps\), got -5"),  # (was read as -1)
    ("mode = 'cyclegan'\nblurry = 'a'\n", "needs both --blurry DIR and --sharp DIR"),
    ("perceptual = 0.1\n", "vgg16-397923af.pth"),
    ("mode = 'reblur'\nblur_kernel = 65\n", "--crop 64 is smaller than --blur-kernel 65"),
    ('pairs = ""\n', r"--pairs is empty; give it a value \(an unset shell variable\?\) or leave it out"),
    ("not toml [", "not valid TOML"),
    ("device = 'gpu'\n", "--device must be auto, cpu, cuda or cuda:N"),
    ("crop = 160\n", "--crop 160 must be at most --pair-pool-size 128"),
    ("blur_model = 'psf'\n", "--blur-model must be one of network, kernel, shake"),
    ("blur_kernel = 20\n", "--blur-kernel must be odd"),
    ("mode = 'cyclegan'\nblur_model = 'shake'\nblur_kernel = 1\n", "--blur-kernel 1 with --blur-model shake .* blurs nothing"),
    ("mode = 'cyclegan'\nblur_model = 'kernel'\nblur_kernel = 1\n", "--blur-kernel 1 with --blur-model kernel .* blurs nothing"),
    ("blur_model = 'shake'\nblur_recipe = 'nope'\n", "--blur-recipe nope: .*default, gopro-like"),
    # read from a file, it resumed the run's checkpoint with the defaults, not the run's options
    ("resume = 'runs/x'\n", "'resume' belongs on the command line; .* run with --resume runs/x"),
    ("keep_last = 0\n", "--keep-last must be >= 1, got 0"),
    ("val_size = -1\n", "--val-size must be >= 0, got -1"),
    ("workers = -1\n", "--workers must be >= 0, got -1"),
    ("val_crop = 60\n", "--val-crop 60 must be a multiple of 8 for the unet generator"),
    ("device = 'cuda:'\n", "--device must be auto, cpu, cuda or cuda:N"),
    # TOML's booleans are no numbers (Python's bool is an int: True trained 1 step, or at lr 1.0)
    ("steps = true\n", "'steps' must be int, got True"),
    ("lr = true\n", "'lr' must be float, got True"),
])
def test_config_errors_name_the_option(tmp_path, text, match):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(config.ConfigError, match=match):
        config.parse_args(["--config", str(toml)])



@pytest.mark.parametrize("options, name", [
    (["--val-crop"], "--val-crop"),
    (["--pair-pool", "1", "--pair-pool-size"], "--pair-pool-size"),
    (["--pair-pool", "0", "--val-crop", "64", "--crop"], "--crop"),
    (["--mode", "cyclegan", "--pair-pool-size"], "--pair-pool-size"),
])
def test_a_synthetic_side_beyond_the_default_recipes_frame_is_refused_by_its_option(tmp_path, options, name):
    """Synthetic pairs are crops of the default recipe's procedural frame: a larger --val-crop, --pair-pool-size
    or on-the-fly --crop stopped with the recipe's error, naming datasets/default.toml and "enlarge the
    frame or reduce the crop", not the option. The largest side the recipe takes is still accepted."""
    from blursynth.data import SyntheticPairs
    from blursynth.recipe import RecipeError, load_recipe
    recipe = load_recipe("default")
    largest = min(recipe.frame_px) - 2 * recipe.margin
    most = largest // 8 * 8  # (a multiple of the U-Net's size factor)
    SyntheticPairs(1, crop=largest)  # (the recipe takes it: no error)
    with pytest.raises(RecipeError):
        SyntheticPairs(1, crop=largest + 1)
    run = ["--run-dir", str(tmp_path / "r")]
    config.parse_args([*options, str(most), *run])
    with pytest.raises(config.ConfigError, match=rf"^{name} {most + 8} is larger than the synthetic pairs, which are "
                                                 rf"at most {largest} px a side .*; lower {name}"):
        config.parse_args([*options, str(most + 8), *run])


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors save UTF-8 with a byte-order mark: tomllib refused the file as "Invalid statement
    (at line 1, column 1)", at a character the user cannot see. Recipe files take it; so do --config files."""
    toml = tmp_path / "c.toml"
    toml.write_bytes(f"\ufeffsteps = 7\r\nout = '{tmp_path / 'r'}'\r\n".encode("utf-8"))
    cfg = config.parse_args(["--config", str(toml)])
    assert cfg.steps == 7 and cfg.run_dir == str(tmp_path / "r")

def test_workers_beyond_a_few_per_core_are_refused(monkeypatch, tmp_path):
    # each worker is a process with a copy of the data: an absurd --workers forked until the run was killed
    monkeypatch.setattr(config, "usable_cores", lambda: 2, raising=False)
    run = ["--run-dir", str(tmp_path / "r")]
    assert config.parse_args(["--workers", "8", *run]).workers == 8
    for workers in ("9", "99999999999999999999"):
        with pytest.raises(config.ConfigError, match=rf"^--workers must be at most 8 \(4 per core; this process may "
                                                     rf"use 2\), got {workers}$"):
            config.parse_args(["--workers", workers, *run])


def test_config_missing_file_and_bad_flag(tmp_path):
    with pytest.raises(config.ConfigError, match="no such file"):
        config.parse_args(["--config", str(tmp_path / "none.toml")])
    with pytest.raises(SystemExit):  # argparse: invalid float value
        config.parse_args(["--lr", "fast"])
    with pytest.raises(config.ConfigError, match=f"--config {tmp_path}: cannot be read .*pass a TOML file"):
        config.parse_args(["--config", str(tmp_path)])
    (tmp_path / "latin1.toml").write_bytes("lr = 1e-4 # \xe9\n".encode("latin-1"))
    with pytest.raises(config.ConfigError, match="--config .*latin1.toml: not UTF-8 text .*save it as UTF-8"):
        config.parse_args(["--config", str(tmp_path / "latin1.toml")])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(config.ConfigError, match="--run-dir .*afile: is a file"):
        config.parse_args(["--out", str(tmp_path / "afile")])
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.json").write_text('{"model": "resnet50"}')  # another tool's
    with pytest.raises(config.ConfigError, match="holds a config.json that unpaired.train did not write"):
        config.parse_args(["--out", str(tmp_path / "theirs"), "--overwrite"])


@pytest.mark.parametrize("argv, match", [
    (["--mode", "cyclegan", "--pairs", "set"], "--pairs set: only read with --mode paired or reblur, which this run does not use"),
    (["--mode", "cyclegan", "--grad-clip", "0.1"], "--grad-clip 0.1: only read with --mode paired"),
    (["--pool-size", "3"], "--pool-size 3: only read with --mode cyclegan"),
    (["--lambda-cycle", "50"], "--lambda-cycle 50.0: only read with --mode cyclegan"),
    (["--mode", "cyclegan", "--blur-kernel", "9"], "--blur-kernel 9: only read with --blur-model kernel or shake"),
    (["--mode", "cyclegan", "--blur-model", "kernel", "--blur-recipe", "gopro-like"],
     "--blur-recipe gopro-like: only read with --blur-model shake"),
    # (F's model set K's kernel size in reblur mode: 41 px with shake, for the default 21)
    (["--blur-model", "kernel"], "--blur-model kernel: only read with --mode cyclegan"),
    (["--mode", "reblur", "--blur-model", "shake", "--crop", "48"], "--blur-model shake: only read with --mode cyclegan"),
    (["--mode", "reblur", "--blur-model", "shake", "--blur-recipe", "gopro-like", "--crop", "48"],
     "--blur-model shake: only read with --mode cyclegan"),
    (["--n-blocks", "9"], "--n-blocks 9: only read with --generator resnet"),
    (["--mode", "cyclegan", "--unet-depth", "2"], "--unet-depth 2: only read with --generator unet"),
    (["--perceptual-weights", "vgg.pth"], "--perceptual-weights vgg.pth: only read with --perceptual > 0"),
    (["--pairs", "set", "--pair-pool", "64"], r"--pair-pool 64: only read with synthetic data \(no --pairs"),
    (["--mode", "cyclegan", "--blurry", "a", "--sharp", "b", "--pair-pool-size", "256"],
     "--pair-pool-size 256: only read with synthetic data"),
])
def test_options_another_mode_would_ignore_are_refused(tmp_path, argv, match):
    with pytest.raises(config.ConfigError, match=match):
        config.parse_args(argv)
    toml = tmp_path / "c.toml"  # from a file too
    toml.write_text("".join(f"{k[2:]} = {v if v[0].isdigit() else repr(v)}\n" for k, v in zip(argv[::2], argv[1::2])))
    with pytest.raises(config.ConfigError, match=match):
        config.parse_args(["--config", str(toml)])


@pytest.mark.parametrize("argv, option", [
    (["--pairs", ""], "--pairs"), (["--mode", "reblur", "--blurry", ""], "--blurry"), (["--val-pairs", ""], "--val-pairs"),
    (["--mode", "cyclegan", "--blurry", "", "--sharp", ""], "--blurry"), (["--out", ""], "--run-dir"),
    (["--resume", ""], "--resume"), (["--out", " "], "--run-dir"), (["--pairs", "\t"], "--pairs")])
def test_an_empty_path_is_refused_rather_than_read_as_not_given(argv, option):
    # (`--pairs "$DATA"` with DATA unset trained on synthetic pairs, `--blurry ""` without photos, `--resume ""`
    # started a new run, `--out ""` wrote the run into the current folder)
    with pytest.raises(config.ConfigError, match=f"{option} is empty; give it a value"):
        config.parse_args(argv)


def test_options_of_the_mode_or_at_their_defaults_are_accepted():
    assert config.parse_args(["--pool-size", "50", "--grad-clip", "0.05"]).mode == "paired"  # defaults: harmless
    assert config.parse_args(["--lambda-cycle", "10", "--lambda-identity", "0.5"]).mode == "paired"  # (documented ones)
    assert config.parse_args(["--mode", "cyclegan", "--grad-clip", "0.05", "--n-blocks", "6"]).n_blocks == 6
    assert config.parse_args(["--mode", "cyclegan", "--blur-model", "kernel", "--blur-kernel", "9"]).blur_kernel == 9
    assert config.parse_args(["--mode", "cyclegan", "--blur-model", "shake",
                              "--blur-recipe", "gopro-like"]).blur_recipe == "gopro-like"
    assert config.parse_args(["--mode", "reblur", "--blur-model", "network"]).blur_kernel == 21
    assert config.parse_args(["--grad-clip", "inf"]).grad_clip == float("inf")  # (no clip, the norm still logged)


def test_limits_of_options_a_run_does_not_use_are_not_enforced(tmp_path):
    # the crop is cut from the synthetic pool only when there is one (not with --pair-pool 0, --pairs, or
    # CycleGAN's --blurry/--sharp photos); validation crops are not checked without validation; and the
    # PatchGAN's least crop, 3 * 2**n_layers_d, is itself allowed
    big = ["--crop", "160", "--val-crop", "160"]
    assert config.parse_args(["--pair-pool", "0"] + big).crop == 160
    assert config.parse_args(["--pairs", str(tmp_path)] + big).crop == 160
    assert config.parse_args(["--mode", "cyclegan", "--blurry", str(tmp_path), "--sharp", str(tmp_path)] + big).crop == 160
    assert config.parse_args(["--val-size", "0", "--val-crop", "8"]).val_crop == 8
    assert config.parse_args(["--mode", "cyclegan", "--crop", "24"]).crop == 24


def test_a_resume_takes_the_run_s_options_but_not_those_of_its_invocation(tmp_path):
    # a run started with --overwrite (replacing an older one), --no-progress and --stop-at, its folder moved
    # since: resumed, it continues in the folder given, with a bar, to --steps, and is not refused for
    # "--resume and --overwrite" it was never given
    run = tmp_path / "moved"
    run.mkdir()
    started = config.parse_args(["--out", str(tmp_path / "old"), "--overwrite", "--no-progress", "--stop-at", "5",
                                 "--steps", "9", "--ngf", "8"])
    config.save(started, run / "config.json")
    cfg = config.parse_args(["--resume", str(run)])
    assert (cfg.run_dir, cfg.resume, cfg.overwrite, cfg.progress, cfg.stop_at) == (str(run), str(run), False, True, -1)
    assert (cfg.steps, cfg.ngf) == (9, 8)
    # what the checkpoint fixes (the networks' shapes, Adam's betas) is refused, each named
    for argv in (["--beta2", "0.99"], ["--no-residual"], ["--unet-depth", "2"], ["--n-blocks", "3"],
                 ["--generator", "resnet"], ["--ndf", "8"], ["--n-layers-d", "2"], ["--blur-kernel", "9"]):
        with pytest.raises(config.ConfigError, match=f"^{argv[0].replace('--no-', '--')} .*: the run in .* was trained with "):
            config.parse_args(["--resume", str(run)] + argv)


def test_a_run_folder_holding_only_checkpoints_holds_a_run(tmp_path):
    # a run stopped (--stop-at) before its first log line has checkpoints and no metrics.jsonl
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_0000003.pt").write_bytes(b"")
    config.save(config.TrainConfig().resolve(), tmp_path / "run" / "config.json")  # (without it: the test below)
    with pytest.raises(config.ConfigError, match=r"holds a run \(checkpoints\); pass --resume"):
        config.parse_args(["--out", str(tmp_path / "run")])


def test_keeping_the_last_checkpoints_counts_the_last_step_as_scheduled(tmp_path):
    # --steps 5 --ckpt-every 2 --keep-last 2: the schedule writes steps 2, 4 and the last, 5, and keeps 4 and 5
    from unpaired.train import _keep_last
    cfg = config.TrainConfig(steps=5, ckpt_every=2, keep_last=2)
    assert [s for s in range(1, 6) if cfg.checkpoint_due(s)] == [2, 4, 5]
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for step in (2, 4, 5):
        (ckpts / f"step_{step:07d}.pt").write_bytes(b"")
    _keep_last(ckpts, cfg)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000004.pt", "step_0000005.pt"]


def test_lr_schedule_constant_then_linear():
    assert [lr_factor(s, 10, 4) for s in range(11)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_logged_lr_is_the_rate_of_that_update(tmp_path):
    # a record of step s holds the losses of update s (index s - 1) and so the rate that update used;
    # the last update of a decaying schedule still moves the weights (it is not the 0 that follows it)
    run = tmp_path / "run"
    main(TINY + ["--steps", "4", "--decay-steps", "2", "--lr", "1e-3", "--eval-every", "100", "--device", "cpu",
                 "--run-dir", str(run)])
    logged = [(r["step"], r["lr"]) for r in records(run) if "lr" in r]
    assert logged == [(s, pytest.approx(1e-3 * lr_factor(s - 1, 4, 2))) for s in (1, 2, 3, 4)]
    assert logged[-1][1] > 0


def test_logged_seconds_are_the_time_since_the_run_began(tmp_path):
    # README: "seconds" in each --log-every record, the run's elapsed time (not a clock reading)
    import time
    run = tmp_path / "run"
    began = time.time()
    main(TINY + ["--steps", "3", "--eval-every", "100", "--device", "cpu", "--run-dir", str(run)])
    took = time.time() - began
    seconds = [r["seconds"] for r in records(run) if "lr" in r]
    assert len(seconds) == 3 and seconds == sorted(seconds)
    assert 0 <= seconds[0] and seconds[-1] <= took + 0.01  # (rounded to 0.01 s)


def test_logged_seconds_go_on_across_a_resume(tmp_path, monkeypatch):
    # they restarted at 0 on every resume; they go on from the checkpoint's (of a checkpoint older than
    # those, from the last logged). A clock that moves 10 s at each reading, so no step's time is measured.
    import itertools
    import types
    from unpaired import train
    clock = itertools.count(1000.0, 10.0)
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: next(clock)))
    opts = TINY + ["--steps", "4", "--eval-every", "100", "--device", "cpu"]
    for old in (False, True):
        run = tmp_path / f"old{old}"
        main(opts + ["--stop-at", "2", "--run-dir", str(run)])
        if old:  # (as trainers before the field wrote it)
            path = run / "checkpoints" / "step_0000002.pt"
            state = torch.load(path, weights_only=False)
            del state["seconds"]
            torch.save(state, path)
        main(["--resume", str(run), "--no-progress"])
        seconds = [r["seconds"] for r in records(run) if "lr" in r]
        assert len(seconds) == 4 and all(a < b for a, b in zip(seconds, seconds[1:])), (old, seconds)


def test_the_perceptual_loss_is_weighed_by_perceptual(tmp_path, monkeypatch):
    # paired objective: pixel + --perceptual x perceptual, from the losses the step logs (a random VGG16
    # trunk stands in for torchvision's weights)
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    vgg = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"])[:16].state_dict().items()}, vgg)
    seen = scaled_objectives(monkeypatch)
    run = tmp_path / "run"
    main(TINY + ["--steps", "1", "--val-size", "0", "--perceptual", "3", "--perceptual-weights", str(vgg),
                 "--device", "cpu", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "lr" in r]
    assert rec["loss_perceptual"] > 0.01 * rec["loss_pixel"]
    assert seen[0] == pytest.approx(rec["loss_pixel"] + 3 * rec["loss_perceptual"], rel=1e-5)


def test_the_learning_rate_decays_over_the_last_half_of_steps_by_default(tmp_path):
    # --decay-steps -1 (the default) is half of --steps: with 4 steps, updates 0-2 at the full rate (2 at
    # (4 - 2) / 2 = 1), the last at half; read raw, -1 left the rate constant
    run = tmp_path / "run"
    main(TINY + ["--steps", "4", "--lr", "1e-3", "--val-size", "0", "--device", "cpu", "--run-dir", str(run)])
    assert [r["lr"] for r in records(run) if "lr" in r] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


def test_options_reach_the_optimiser_the_loss_and_the_pools(tmp_path, monkeypatch):
    # --beta1/--beta2 (Adam), --pixel-loss (the supervised objective) and --pool-size (CycleGAN's image
    # pools, here larger than --batch): each was read, and ignored, without a test failing
    import unpaired.train as train_mod
    names, real = [], train_mod.pixel_loss
    monkeypatch.setattr(train_mod, "pixel_loss", lambda name, *args: names.append(name) or real(name, *args))
    run = tmp_path / "paired"
    main(TINY + ["--steps", "1", "--val-size", "0", "--beta1", "0.7", "--beta2", "0.95", "--pixel-loss", "charbonnier",
                 "--device", "cpu", "--run-dir", str(run)])
    state = torch.load(run / "checkpoints" / "step_0000001.pt", weights_only=False)
    assert [tuple(g["betas"]) for g in state["optimizers"]["gen"]["param_groups"]] == [(0.7, 0.95)]
    assert names == ["charbonnier"]
    run = tmp_path / "cyclegan"
    main(TINY_GAN + ["--pool-size", "3", "--steps", "2", "--val-size", "0", "--pair-pool", "2", "--pair-pool-size", "32",
                 "--device", "cpu", "--run-dir", str(run)])
    pools = torch.load(run / "checkpoints" / "step_0000002.pt", weights_only=False)["pools"][0]
    for k, pool in pools.items():  # (4 fakes offered to a pool of 3: it holds 3)
        assert pool["size"] == 3 and len(pool["images"]) == 3, k

def test_a_resume_may_change_the_learning_rate(tmp_path):
    # the fix for a run that diverged: --lr was fixed by the checkpoint, whose optimiser state held the old rate
    run = tmp_path / "run"
    main(TINY + ["--steps", "4", "--decay-steps", "2", "--stop-at", "2", "--eval-every", "100", "--device", "cpu",
                 "--run-dir", str(run)])
    main(["--resume", str(run), "--lr", "1e-4", "--no-progress"])
    logged = [(r["step"], r["lr"]) for r in records(run) if "lr" in r]
    assert logged == [(1, pytest.approx(1e-3)), (2, pytest.approx(1e-3)), (3, pytest.approx(1e-4)),
                      (4, pytest.approx(1e-4 * lr_factor(3, 4, 2)))]
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-4  # (kept by the next resume)


def test_the_run_keeps_its_input_paths_absolute(tmp_path, monkeypatch):
    # a resume reads them from config.json: relative ones were taken from the folder it was run in
    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(__file__).parents[1] / "datasets" / "default.toml", tmp_path / "mine.toml")
    argv = ["--mode", "cyclegan", "--blurry", "b", "--sharp", "../s", "--blur-model", "shake", "--run-dir", "r"]
    kept = config.kept(config.parse_args(argv + ["--blur-recipe", "mine.toml"]))
    assert (kept["blurry"], kept["sharp"], kept["blur_recipe"]) == (str(tmp_path / "b"), str(tmp_path / ".." / "s"),
                                                                    str(tmp_path / "mine.toml"))
    assert kept["run_dir"] == "r" and kept["pairs"] is None  # (a resume replaces run_dir by its folder)
    assert config.kept(config.parse_args(argv))["blur_recipe"] == "default"  # a name, not a path


# ---------------------------------------------------------------- runs


def test_paired_run_writes_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    result = main(TINY + ["--steps", "3", "--eval-every", "2", "--run-dir", str(run)])
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 3 and saved["crop"] == 16
    recs = records(run)
    assert [r["step"] for r in recs if "loss_pixel" in r] == [1, 2, 3]
    evals = [r for r in recs if "val_psnr" in r]
    assert [r["step"] for r in evals] == [2, 3]
    assert all(np.isfinite(r["val_psnr"]) and 0 < r["val_ssim"] <= 1 for r in evals)
    assert result["val_psnr"] == evals[-1]["val_psnr"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "step_0000003.pt").is_file()
    assert "validation PSNR on 2 held-out pairs: blurry input" in capsys.readouterr().out


def test_the_sample_grid_is_blurry_output_sharp_and_the_blurry_score_is_the_inputs(tmp_path):
    # samples/: rows of blurry | output | sharp (README); val_psnr_blurry and val_ssim_blurry score the blurry
    # input, val_psnr and val_ssim the output, each against the sharp image (--no-residual: the output is far
    # from the input)
    import imageio.v3 as iio

    run = tmp_path / "run"
    main(TINY + ["--steps", "1", "--eval-every", "1", "--no-residual", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "val_psnr" in r]
    grid = iio.imread(run / "samples" / "step_0000001.png").astype(np.float64) / 255
    assert grid.shape[:2] == (2 * 18 + 2, 3 * 18 + 2)
    cell = lambda r, c: sample_cell(grid, r, c)  # noqa: E731
    psnr = lambda a, b: 10 * np.log10(1 / np.mean((a - b) ** 2))  # noqa: E731
    blurry = np.mean([psnr(cell(r, 0), cell(r, 2)) for r in range(2)])
    output = np.mean([psnr(cell(r, 1), cell(r, 2)) for r in range(2)])
    assert abs(rec["val_psnr_blurry"] - output) > 3  # (the output is far from the input: the test can tell)
    assert rec["val_psnr_blurry"] == pytest.approx(blurry, abs=0.3)
    assert rec["val_psnr"] == pytest.approx(output, abs=0.3)
    # and likewise val_ssim_blurry and val_ssim (SSIM of the 8-bit cells, as unpaired.metrics computes it)
    from unpaired import metrics
    ssim = lambda a, b: float(metrics.ssim(*(torch.from_numpy(x).permute(2, 0, 1)[None].float() for x in (a, b))))  # noqa: E731
    blurry = np.mean([ssim(cell(r, 0), cell(r, 2)) for r in range(2)])
    output = np.mean([ssim(cell(r, 1), cell(r, 2)) for r in range(2)])
    assert abs(blurry - output) > 0.05  # (the test can tell them apart)
    assert rec["val_ssim_blurry"] == pytest.approx(blurry, abs=0.02)
    assert rec["val_ssim"] == pytest.approx(output, abs=0.02)


def test_a_new_run_never_mixes_into_an_old_one(tmp_path):
    run = tmp_path / "run"
    main(TINY + ["--steps", "4", "--ckpt-every", "4", "--eval-every", "2", "--run-dir", str(run)])
    (run / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(config.ConfigError, match=f"--run-dir {run}: holds a run .*--resume {run}.*--overwrite"):
        main(TINY + ["--steps", "2", "--run-dir", str(run)])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(config.ConfigError, match="pass one of them"):
        main(TINY + ["--resume", str(run), "--overwrite"])
    # --overwrite: the old run's files go (step 4's checkpoint and sample, its metrics), the user's stay,
    # also inside the run's subfolders
    (run / "checkpoints" / "other_model.pt").write_text("mine")
    (run / "samples" / "figure1.png").write_text("mine")
    # (copies named after the run's files, which no run writes: keep_last and resume leave them alone,
    # and --overwrite removed them with its step_*.pt and step_*.png patterns)
    (run / "checkpoints" / "step_0000004_good.pt").write_text("mine")
    (run / "samples" / "step_0000004_marked.png").write_text("mine")
    main(TINY + ["--steps", "2", "--ckpt-every", "2", "--eval-every", "2", "--run-dir", str(run), "--overwrite"])
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == ["step_0000002.pt", "step_0000004_good.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["figure1.png", "step_0000002.png",
                                                                    "step_0000004_marked.png"]
    assert [r["step"] for r in records(run) if "loss_pixel" in r] == [1, 2]
    assert [(run / f).read_text() for f in ("notes.txt", "checkpoints/other_model.pt")] == ["mine", "mine"]
    # an --overwrite whose start fails (here on its data) removes nothing of the run it was to replace
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (tmp_path / "empty" / "lq").mkdir(parents=True)
    (tmp_path / "empty" / "gt").mkdir()
    with pytest.raises(Exception, match="empty"):
        main(TINY_NET + ["--steps", "2", "--run-dir", str(run), "--overwrite", "--pairs", str(tmp_path / "empty")])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_scores_that_are_not_finite_are_logged_as_valid_json(tmp_path, capsys, monkeypatch):
    # NaN scores were written as bare NaN tokens: not JSON, refused by strict readers. (Losses that are
    # not finite stop the run before they are logged: tests/test_train_diverge.py.)
    from unpaired import metrics
    real, calls = metrics.psnr, []

    def nan_for_the_output(x, y):  # (validation scores the model's output, then the blurry input)
        calls.append(1)
        return real(x, y) * (float("nan") if len(calls) % 2 else 1)
    monkeypatch.setattr(metrics, "psnr", nan_for_the_output)
    run = tmp_path / "run"
    result = main(TINY + ["--steps", "4", "--eval-every", "2", "--run-dir", str(run)])

    def strict(token):
        raise ValueError(f"{token} is not JSON")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=strict) for line in lines]
    assert rows[-1]["step"] == 4 and rows[-1]["val_psnr"] is None
    assert np.isnan(result["val_psnr"]) and np.isfinite(result["val_psnr_blurry"])
    assert "model output not finite; SSIM" in capsys.readouterr().out
    monkeypatch.undo()
    main(["--resume", str(run), "--steps", "5", "--no-progress"])  # (its nulls are read back)
    assert [json.loads(line, parse_constant=strict)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()][-1] == 5


def test_keeps_last_k_checkpoints(tmp_path):
    run = tmp_path / "run"
    main(TINY + ["--steps", "5", "--ckpt-every", "1", "--keep-last", "2", "--eval-every", "100",
                 "--run-dir", str(run)])
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == ["step_0000004.pt", "step_0000005.pt"]


def test_checkpoints_past_step_9999999_are_ordered_by_step(tmp_path):
    # 7-digit names: step_10000000.pt sorted before step_9999999.pt, so keeping the last removed the
    # newest checkpoint, and a resume (or deblur given the run folder) took an older one
    from unpaired.deblur import checkpoint_file
    from unpaired.train import _keep_last
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for step in (9999998, 9999999, 10000000):
        (ckpts / f"step_{step:07d}.pt").write_bytes(b"")
    (ckpts / "step_9999998_copy.pt").write_bytes(b"")  # (not the run's: neither taken nor removed)
    assert checkpoint_file(tmp_path) == ckpts / "step_10000000.pt"
    _keep_last(ckpts, config.TrainConfig(keep_last=2, ckpt_every=1))
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_10000000.pt", "step_9999998_copy.pt", "step_9999999.pt"]


def test_a_run_stopped_off_the_checkpoint_schedule_and_resumed_keeps_the_same_checkpoints(tmp_path):
    # --stop-at 5 writes step 5 (the resume needs it), and keeping the last 2 then removed step 2 and
    # later step 4: the finished run kept steps 5 and 6 where an uninterrupted one keeps 4 and 6
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + ["--device", "cpu", "--steps", "6", "--ckpt-every", "2", "--keep-last", "2", "--eval-every", "100"]
    names = lambda run: sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))  # noqa: E731
    main(opts + ["--run-dir", str(a)])
    main(opts + ["--stop-at", "5", "--run-dir", str(b)])
    assert names(b) == ["step_0000002.pt", "step_0000004.pt", "step_0000005.pt"]
    main(["--resume", str(b), "--no-progress"])
    assert names(a) == names(b) == ["step_0000004.pt", "step_0000006.pt"]
    assert_resumed_as_uninterrupted(a, b, 6)


def test_a_resume_with_another_checkpoint_schedule_keeps_the_run_s_checkpoints(tmp_path):
    # --ckpt-every and --steps may change on resume, but the checkpoints the run had written were then judged
    # by the new schedule: resumed with --ckpt-every 3 --keep-last 5 (to keep more), a run's step 2 and step
    # 4 (of --ckpt-every 2) were removed at once as "off the schedule"; a finished run resumed with a larger
    # --steps lost its last checkpoint, that of the model it had finished with, at the next one
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + ["--device", "cpu", "--eval-every", "100", "--ckpt-every", "2"]
    names = lambda run: [int(p.stem[5:]) for p in sorted((run / "checkpoints").glob("step_*.pt"))]  # noqa: E731
    main(opts + ["--steps", "8", "--keep-last", "3", "--stop-at", "6", "--run-dir", str(a)])
    assert names(a) == [2, 4, 6]
    main(["--resume", str(a), "--ckpt-every", "3", "--keep-last", "5", "--no-progress"])
    assert names(a) == [2, 4, 6, 8]
    main(opts + ["--steps", "3", "--run-dir", str(b)])
    assert names(b) == [2, 3]
    main(["--resume", str(b), "--steps", "5", "--no-progress"])
    assert names(b) == [3, 4, 5]  # (the last 3: --keep-last)


@pytest.mark.parametrize("val_size", ["0", "1", "2"])
def test_a_run_ends_naming_its_folder(tmp_path, capsys, val_size):
    # (without validation it ended without a word of where its checkpoints are)
    run = tmp_path / "run"
    main(TINY + ["--steps", "1", "--val-size", val_size, "--eval-every", "1", "--no-progress", "--run-dir", str(run)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"run folder: {run}"
    if val_size != "0":  # (one pair was "1 held-out pairs")
        noun = "pair" if val_size == "1" else "pairs"
        assert lines[-2].startswith(f"validation PSNR on {val_size} held-out {noun}: blurry input")


def test_a_run_folder_whose_name_is_not_utf8_is_named_at_the_end(tmp_path, monkeypatch):
    # stdout is strict under a UTF-8 locale other than C: the last line, naming the run folder, failed after
    # the run had finished (a traceback, exit status 1, for a run that had written all its checkpoints)
    import io
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdout", stdout)
    run = tmp_path / os.fsdecode(b"r\xe9sultat")
    main(TINY + ["--steps", "1", "--val-size", "0", "--run-dir", str(run)])
    assert (run / "checkpoints" / "step_0000001.pt").is_file()
    stdout.flush()
    assert stdout.buffer.getvalue().decode().splitlines()[-1].endswith("r\\udce9sultat")


def test_a_run_folder_in_use_by_another_trainer_is_refused_and_left_alone(tmp_path, refused):
    # (a job requeued while its first copy still ran: both wrote the folder's metrics and checkpoints)
    from blursynth.io import lock_folder
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--ckpt-every", "1", "--eval-every", "100", "--run-dir", str(run)])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    fd = lock_folder(run)  # (what the other trainer holds)
    if fd is None:
        pytest.skip("no folder locks on this file system")
    try:
        for argv in (["--resume", str(run), "--steps", "4"],
                     TINY + ["--steps", "2", "--overwrite", "--run-dir", str(run)]):
            with refused(rf"^error: --out {re.escape(str(run))}: another training run is using this folder; "
                         "wait for it to end"):
                cli(argv + ["--no-progress"])
    finally:
        os.close(fd)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    main(["--resume", str(run), "--steps", "4", "--no-progress"])  # once it is free
    main(["--resume", str(run), "--steps", "5", "--no-progress"])  # (and this process let it go at its end)


def skip_without_folder_locks(folder: Path) -> None:
    """Skip the test where ``folder``'s file system takes no locks (``lock_folder`` gives None there)."""
    from blursynth.io import lock_folder
    probe = lock_folder(folder)
    if probe is None:
        pytest.skip("no folder locks on this file system")
    os.close(probe)


def test_a_new_run_holds_its_folder_while_it_trains(tmp_path, monkeypatch):
    # (two trainers started together on one new --out: the second found no lock on the folder the first had
    # just made, and both wrote their checkpoints and metrics there)
    from blursynth.io import lock_folder
    from unpaired import train
    skip_without_folder_locks(tmp_path)
    run, refused = tmp_path / "run", []
    remove = train._remove_temporaries

    def another_trainer_tries(folder):  # (called once the new run's folder is made and held)
        try:
            os.close(lock_folder(folder))
        except BlockingIOError:
            refused.append(folder)
        return remove(folder)
    monkeypatch.setattr(train, "_remove_temporaries", another_trainer_tries)
    main(TINY + ["--steps", "1", "--val-size", "0", "--run-dir", str(run)])
    assert refused == [run]


@pytest.mark.parametrize("other, error", [("training", "another training run is using this folder"),
                                          ("ended", "holds a run \\(metrics.jsonl\\)")])
def test_a_run_whose_new_folder_another_run_made_meanwhile_stops_and_leaves_it(tmp_path, refused, monkeypatch,
                                                                               other, error):
    # (two trainers started together on one new --out: the first made the folder while the second was making
    # its data; the second, finding the folder there, neither locked it nor checked it again, and trained
    # beside the first, or after it into its run, both writing metrics.jsonl, config.json and checkpoints)
    from blursynth.io import lock_folder
    from unpaired import train
    skip_without_folder_locks(tmp_path)
    run, held = tmp_path / "run", []
    spec = train.generator_spec

    def the_other_run_made_it(cfg):  # (called once this run's data is made)
        run.mkdir()
        (run / "metrics.jsonl").write_text('{"step": 1}\n')
        if other == "training":
            held.append(lock_folder(run))
        return spec(cfg)
    monkeypatch.setattr(train, "generator_spec", the_other_run_made_it)
    try:
        with refused(rf"^error: --\S+ {re.escape(str(run))}: {error}"):
            cli(TINY + ["--steps", "1", "--val-size", "0", "--run-dir", str(run)])
    finally:
        for fd in held:
            os.close(fd)
    assert [p.name for p in run.iterdir()] == ["metrics.jsonl"]
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_resume_refuses_a_damaged_checkpoint_and_names_the_one_before(tmp_path, refused):
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--ckpt-every", "1", "--eval-every", "100", "--run-dir", str(run)])
    last = run / "checkpoints" / "step_0000002.pt"
    cut = last.read_bytes()[:2000]
    last.write_bytes(cut)
    with refused(r"^error: --resume .*step_0000002.pt: not a checkpoint written by "
                                         r"unpaired.train, or cut short \(.+\); move it aside to resume from step_0000001.pt$"):
        cli(["--resume", str(run), "--no-progress", "--steps", "9"])
    assert last.read_bytes() == cut  # nothing removed or rewritten
    assert json.loads((run / "config.json").read_text())["steps"] == 2  # nor the run's config (read first)
    torch.save({"G": torch.zeros(1)}, last)  # loads, but is not a training state
    with pytest.raises(ValueError, match=r"step_0000002.pt: not a checkpoint written by unpaired.train \(it has no models, optimizers, step\)"):
        main(["--resume", str(run), "--no-progress"])
    last.unlink()
    main(["--resume", str(run), "--no-progress"])  # from step 1, as the message says
    assert torch.load(last, weights_only=True)["step"] == 2


def test_resume_refuses_what_the_checkpoint_fixes_and_changes_nothing(tmp_path, refused):
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--eval-every", "100", "--run-dir", str(run)])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for argv, match in ((["--ngf", "8"], "--ngf 8: the run in .* was trained with 4, and a resumed run keeps its "
                                         "networks and optimiser; drop --ngf"),
                        (["--beta1", "0.5"], "--beta1 0.5: .*trained with 0.9"),  # (the optimiser's state would win)
                        (["--mode", "cyclegan"], "--mode cyclegan: .*trained with paired"),
                        (["--out", str(tmp_path / "elsewhere")], "--resume .* continues the run in that folder; drop --run-dir/--out")):
        with refused(f"^error: {match}"):
            cli(["--resume", str(run), "--steps", "3"] + argv)
    toml = tmp_path / "c.toml"  # a --config file's out, too (it was silently replaced by the resumed folder)
    toml.write_text(f"out = '{tmp_path / 'elsewhere'}'\n")
    with refused(r"^error: --resume .* continues the run in that folder; drop --run-dir/--out .*elsewhere in --config"):
        cli(["--resume", str(run), "--steps", "3", "--config", str(toml)])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before and not (tmp_path / "elsewhere").exists()
    (run / "config.json").write_text("{not json")
    with pytest.raises(config.ConfigError, match=r"config.json is not the JSON that unpaired.train writes"):
        main(["--resume", str(run)])
    (run / "config.json").write_bytes(before[run / "config.json"])
    with pytest.raises(ValueError, match="--stop-at 1: the run in .* is already at step 2"):
        main(["--resume", str(run), "--stop-at", "1"])
    # a --steps below the run's step: it named "--stop-at -1", an option not given
    with refused(r"^error: --steps 1: the run in .* is already at step 2$"):
        cli(["--resume", str(run), "--steps", "1"])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    main(["--resume", str(run) + "/", "--out", str(run), "--steps", "3", "--ngf", "4",  # the same folder spelt
          "--no-progress"])                                                               # otherwise, and longer
    assert json.loads((run / "config.json").read_text())["steps"] == 3


def test_resume_with_an_edited_config_is_one_line_and_keeps_the_config(tmp_path, refused):
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--eval-every", "100", "--run-dir", str(run)])
    edited = json.loads((run / "config.json").read_text()) | {"ngf": 8}
    (run / "config.json").write_text(json.dumps(edited))
    with refused(r"^error: --resume .*step_0000002.pt does not fit this run's options "
                                         r"\(RuntimeError: .*\); was config.json edited\?$"):
        cli(["--resume", str(run), "--steps", "3"])
    assert json.loads((run / "config.json").read_text()) == edited  # not rewritten by the failed resume


@pytest.mark.parametrize("pool", [[], ["--pair-pool", "0"]], ids=["pair-pool", "on-the-fly"])
def test_paired_resume_equals_uninterrupted(tmp_path, pool):
    # on the CPU, where every kernel is deterministic (CUDA's convolution backward is not, by default)
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + pool + ["--device", "cpu"]
    main(opts + ["--steps", "6", "--eval-every", "100", "--run-dir", str(a)])
    main(opts + ["--steps", "6", "--stop-at", "3", "--eval-every", "100", "--run-dir", str(b)])
    main(["--resume", str(b), "--no-progress"])
    # the whole checkpoint, not only the weights: optimiser moments, pools, RNG states, bests
    assert_resumed_as_uninterrupted(a, b, 6)
    # the resumed run's log continues the first part's without duplicates
    assert [r["step"] for r in records(b) if "loss_pixel" in r] == [1, 2, 3, 4, 5, 6]
    la = [r["loss_pixel"] for r in records(a) if "loss_pixel" in r]
    lb = [r["loss_pixel"] for r in records(b) if "loss_pixel" in r]
    np.testing.assert_allclose(lb, la, rtol=1e-5)


class ForcedScaler(torch.amp.GradScaler):
    """A GradScaler that scales (initial scale 2 ** 16) also where the run would have none, on the CPU."""

    def __init__(self, device, enabled=True):
        super().__init__(device, enabled=True)

def test_a_resume_continues_the_amp_scaler_where_it_stopped(tmp_path, monkeypatch):
    # float16 autocast (CUDA without bfloat16) scales the loss with a GradScaler whose scale and growth
    # count go into the checkpoint; a resume must carry on from them, not from a fresh scaler. Forced on
    # here on the CPU (where the run itself uses bfloat16 and no scaler), it counts one per clean step.
    monkeypatch.setattr(torch.amp, "GradScaler", ForcedScaler)
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + ["--device", "cpu", "--steps", "4", "--eval-every", "100"]
    main(opts + ["--run-dir", str(a)])
    main(opts + ["--stop-at", "2", "--run-dir", str(b)])
    main(["--resume", str(b), "--no-progress"])
    for run in (a, b):
        scaler = torch.load(run / "checkpoints" / "step_0000004.pt", weights_only=False)["scaler"]
        assert scaler["_growth_tracker"] == 4 and scaler["scale"] == 2.0 ** 16, run


def test_gradients_are_unscaled_before_they_are_clipped(tmp_path, monkeypatch):
    # float16 autocast scales the loss (by 2 ** 16 at first): --grad-clip must clip, and grad_norm log, the
    # true gradient, so a run with a scaler logs the norms of one without
    runs = []
    for scaled in (False, True):
        if scaled:
            monkeypatch.setattr(torch.amp, "GradScaler", ForcedScaler)
        runs.append(tmp_path / f"scaled-{scaled}")
        main(TINY + ["--steps", "1", "--grad-clip", "0.01", "--val-size", "0", "--device", "cpu",
                     "--run-dir", str(runs[-1])])
    plain, scaled = ([r["grad_norm"] for r in records(run)] for run in runs)
    assert plain[0] > 0.01 and scaled == pytest.approx(plain, rel=1e-4)

def test_a_run_without_a_scaler_resumes_where_one_is_needed(tmp_path, monkeypatch):
    # a run on the CPU or with bfloat16 saves an empty scaler state; resumed with --device on a GPU without
    # bfloat16 (float16, loss scaling), its empty state stopped the resume ("was config.json edited?")
    run = tmp_path / "run"
    main(TINY + ["--device", "cpu", "--steps", "4", "--stop-at", "2", "--eval-every", "100", "--run-dir", str(run)])

    class Scaler(torch.amp.GradScaler):  # (as on such a GPU: the scaler is on)
        def __init__(self, device, enabled=True):
            super().__init__(device, enabled=True)

    monkeypatch.setattr(torch.amp, "GradScaler", Scaler)
    main(["--resume", str(run), "--no-progress"])
    scaler = torch.load(run / "checkpoints" / "step_0000004.pt", weights_only=False)["scaler"]
    assert scaler["scale"] == 2.0 ** 16 and scaler["_growth_tracker"] == 2  # a fresh scaler's, two clean steps on


def test_a_run_split_by_stop_at_logs_and_validates_as_an_uninterrupted_one(tmp_path, capsys):
    # the --stop-at step was logged and validated off the schedule: the resumed run's metrics.jsonl had
    # records an uninterrupted run lacks, and the model of that step could become its best.pt
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + ["--device", "cpu", "--steps", "6", "--log-every", "4", "--eval-every", "4"]
    main(opts + ["--run-dir", str(a)])
    main(opts + ["--stop-at", "3", "--run-dir", str(b)])
    assert not (b / "metrics.jsonl").exists() and not (b / "checkpoints" / "best.pt").exists()
    assert (b / "checkpoints" / "step_0000003.pt").is_file()
    assert main(["--resume", str(b), "--stop-at", "5", "--no-progress"]) == {"step": 5, **{
        k: v for k, v in records(b)[-1].items() if k != "step"}}  # (the scores of step 4, the last validated)
    assert "validation PSNR on 2 held-out pairs at step 4: blurry input" in capsys.readouterr().out
    main(["--resume", str(b), "--no-progress"])
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(records(b)) == drop(records(a))
    assert [r["step"] for r in records(a)] == [4, 4, 6, 6]
    best_a, best_b = (torch.load(r / "checkpoints" / "best.pt", weights_only=False) for r in (a, b))
    assert best_b["step"] == best_a["step"] and best_b["best"] == best_a["best"]
    assert sorted(p.name for p in (b / "samples").iterdir()) == sorted(p.name for p in (a / "samples").iterdir())


def test_resume_on_other_validation_images_starts_the_best_afresh(tmp_path, capsys):
    # best.pt's score was kept across a resume with another --val-size, and compared with scores of
    # other images: a model that scored higher on the new set never replaced it
    run = tmp_path / "r"
    main(TINY + ["--steps", "6", "--stop-at", "2", "--eval-every", "2", "--run-dir", str(run)])
    ckpt = run / "checkpoints" / "step_0000002.pt"
    state = torch.load(ckpt, weights_only=False)
    state["best"] = 99.0  # as if the old validation images had been easy
    torch.save(state, ckpt)
    capsys.readouterr()
    main(["--resume", str(run), "--stop-at", "4", "--no-progress"])  # the same images: the best stands
    assert "validation" not in capsys.readouterr().err and records(run)[-1]["step"] == 4
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["step"] == 2
    main(["--resume", str(run), "--val-size", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert "resume: other validation images than at step 4 (another --val-size, --val-crop, --val-pairs or --seed); " \
           "best.pt's 99.00 dB" in err
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["step"] == 6 and best["best"] == records(run)[-1]["val_psnr"] < 99


@pytest.mark.parametrize("blur_model", ["network", "kernel", "shake"])
def test_cyclegan_resume_equals_uninterrupted(tmp_path, blur_model):
    # the pool (size 2, batch 2) starts swapping images at step 2, so its state must survive the resume;
    # the kernel F draws its kernels and noise from the global RNG, which the checkpoint carries
    a, b = tmp_path / "a", tmp_path / "b"
    kernel = [] if blur_model == "network" else ["--blur-kernel", "5"]
    opts = TINY_GAN + ["--blur-model", blur_model, "--device", "cpu"] + kernel  # deterministic kernels
    main(opts + ["--steps", "4", "--eval-every", "100", "--run-dir", str(a)])
    main(opts + ["--steps", "4", "--stop-at", "2", "--eval-every", "100", "--run-dir", str(b)])
    main(["--resume", str(b), "--no-progress"])
    assert {k.split(".")[0] for k in weights(a, 4)} == {"G", "F", "D_sharp", "D_blur"}
    assert_resumed_as_uninterrupted(a, b, 4)
    first = next(r for r in records(a) if "loss_D" in r)
    keys = [k for k in ("loss_gan_G", "loss_gan_F", "loss_cycle", "loss_identity", "loss_D") if k in first]
    assert len(keys) >= 4  # (no identity loss with the shake F)
    np.testing.assert_allclose([[r[k] for k in keys] for r in records(b) if "loss_D" in r],
                               [[r[k] for k in keys] for r in records(a) if "loss_D" in r], rtol=1e-5, atol=1e-7)


def scaled_objectives(monkeypatch) -> list[float]:
    """The values each step hands to its GradScaler (the objectives being minimised), as they come."""
    seen = []

    class Recording(torch.amp.GradScaler):
        def scale(self, outputs):
            seen.append(float(outputs.detach()))
            return super().scale(outputs)

    monkeypatch.setattr(torch.amp, "GradScaler", Recording)
    return seen


def test_cyclegan_generator_objective_weighs_identity_as_a_fraction_of_the_cycle_weight(tmp_path, monkeypatch):
    # --lambda-identity is a fraction of --lambda-cycle (config, and the CycleGAN reference): G and F
    # minimise gan_G + gan_F + lc * cycle + lc * li * identity, from the losses the step logs
    seen = scaled_objectives(monkeypatch)
    run = tmp_path / "r"
    # (--no-residual: a residual G starts as the identity, with no identity loss to weigh)
    main(TINY_GAN + ["--steps", "1", "--val-size", "0", "--pair-pool", "2", "--pair-pool-size", "32", "--no-residual",
                     "--lambda-cycle", "7", "--lambda-identity", "0.3", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "loss_identity" in r]
    objective = rec["loss_gan_G"] + rec["loss_gan_F"] + 7 * rec["loss_cycle"] + 7 * 0.3 * rec["loss_identity"]
    assert rec["loss_identity"] > 0.01 and seen[0] == pytest.approx(objective, rel=1e-5)


def test_cyclegan_discriminators_judge_their_own_domain_with_lsgan_targets():
    # D_sharp: real sharp -> 1, fake sharp -> 0; D_blur likewise; the loss is half their sum. With D(x) = x
    # and constant images: 0.5 * ((0.8 - 1)^2 + 0.3^2 + (0.6 - 1)^2 + 0.1^2) = 0.15
    from unpaired.train import CycleDiscriminators

    discs = CycleDiscriminators(torch.nn.Identity(), torch.nn.Identity())
    const = lambda v: torch.full((2, 1, 4, 4), v)  # noqa: E731
    assert float(discs(const(0.8), const(0.3), const(0.6), const(0.1))) == pytest.approx(0.15)


def test_a_cyclegan_step_routes_each_domain_to_its_discriminator_through_the_pool(tmp_path, monkeypatch):
    # G's adversarial loss asks D_sharp about G's output and F's asks D_blur about F's; the discriminators
    # then see the real batch of their domain and that domain's fakes, as the image pool returns them;
    # the cycle loss is the L1 of both cycles (--no-residual: a residual G and F start as the identity)
    from unpaired import train

    seen, outs = [], []

    class Recording(train.PatchDiscriminator):
        def forward(self, x):
            seen.append((self.which, x.detach().clone()))
            return super().forward(x)

    made = []

    def make(*args, **kwargs):
        d = Recording(*args, **kwargs)
        d.which = ("D_sharp", "D_blur")[len(made)]
        made.append(d)
        return d

    forward = train.CycleGenerators.forward

    def recording_forward(self, blur, sharp, identity):
        o = forward(self, blur, sharp, identity)
        outs.append((blur.clone(), sharp.clone(), {k: v.detach().clone() for k, v in o.items()}))
        return o

    monkeypatch.setattr(train, "PatchDiscriminator", make)
    monkeypatch.setattr(train.CycleGenerators, "forward", recording_forward)
    run = tmp_path / "r"
    # (--device cpu: on a GPU, --amp auto runs G in bfloat16 and the pool keeps float32 copies)
    main(TINY_GAN + ["--steps", "1", "--val-size", "0", "--pair-pool", "2", "--pair-pool-size", "32",
                     "--lambda-identity", "0", "--no-residual", "--device", "cpu", "--run-dir", str(run)])
    ((blur, sharp, o),) = outs
    expected = [("D_sharp", o["fake_sharp"]), ("D_blur", o["fake_blur"]), ("D_sharp", sharp), ("D_sharp", o["fake_sharp"]),
                ("D_blur", blur), ("D_blur", o["fake_blur"])]
    assert [w for w, _ in seen] == [w for w, _ in expected]
    for (w, x), (_, y) in zip(seen, expected):
        torch.testing.assert_close(x, y, msg=lambda m, w=w: f"{w}: {m}")
    (rec,) = [r for r in records(run) if "loss_cycle" in r]
    l1 = lambda a, b: float((a - b).abs().mean())  # noqa: E731
    assert min(l1(o["rec_blur"], blur), l1(o["rec_sharp"], sharp)) > 0.01  # (--no-residual: both cycles count)
    assert rec["loss_cycle"] == pytest.approx(l1(o["rec_blur"], blur) + l1(o["rec_sharp"], sharp), rel=1e-5)
    pools = torch.load(run / "checkpoints" / "step_0000001.pt", weights_only=False)["pools"][0]
    for k, fake in (("sharp", o["fake_sharp"]), ("blur", o["fake_blur"])):  # (pool of 2: both kept, as they came)
        assert pools[k]["count"] == 2 and torch.equal(torch.stack(pools[k]["images"]), fake)


def test_a_kernel_blur_f_s_centre_penalty_is_part_of_the_generators_objective(tmp_path, monkeypatch):
    # --blur-model kernel: F's kernels are held centred by a penalty (README) added, unweighted, to the
    # objective of G and F: gan_G + gan_F + lc * cycle + lc * li * identity + centre
    seen = scaled_objectives(monkeypatch)
    run = tmp_path / "r"
    main(TINY_GAN + ["--steps", "1", "--val-size", "0", "--pair-pool", "2", "--pair-pool-size", "32", "--no-residual",
                     "--blur-model", "kernel", "--blur-kernel", "5", "--lambda-cycle", "7", "--lambda-identity", "0.3",
                     "--device", "cpu", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "loss_centre" in r]
    objective = (rec["loss_gan_G"] + rec["loss_gan_F"] + 7 * rec["loss_cycle"] + 7 * 0.3 * rec["loss_identity"]
                 + rec["loss_centre"])
    assert rec["loss_centre"] > 1e-4 * abs(objective) and seen[0] == pytest.approx(objective, rel=1e-6)


def test_the_largest_seed_trains(tmp_path):
    # every seed the trainer derives from it (per process, validation, F, the sharp domain) stays in range
    main(TINY_GAN + ["--pair-pool", "2", "--pair-pool-size", "32", "--steps", "2", "--seed", str(config.MAX_SEED),
                     "--run-dir", str(tmp_path / "r")])
    assert (tmp_path / "r" / "checkpoints" / "step_0000002.pt").is_file()


def test_resume_refuses_another_pool_size(tmp_path, refused):
    # the checkpoint's image pools kept their size: --pool-size was ignored, while config.json recorded it
    run = tmp_path / "run"
    main(TINY_GAN + ["--pair-pool", "2", "--pair-pool-size", "32", "--steps", "2", "--stop-at", "1",
                     "--run-dir", str(run)])
    with refused(r"^error: --pool-size 6: the run in .* was trained with 2, and a resumed run keeps"):
        cli(["--resume", str(run), "--pool-size", "6", "--no-progress"])
    assert json.loads((run / "config.json").read_text())["pool_size"] == 2
    main(["--resume", str(run), "--pool-size", "2", "--no-progress"])  # (the same: harmless)


def test_a_cyclegan_resume_with_another_crop_starts_its_image_pools_empty(tmp_path, capsys):
    # the pools held past fakes of the old --crop: mixed with new ones, the first resumed step failed in a
    # traceback ("stack expects each tensor to be equal size")
    run = tmp_path / "run"
    main(TINY_GAN + ["--pair-pool", "2", "--pair-pool-size", "48", "--steps", "3", "--stop-at", "2",
                     "--run-dir", str(run)])
    main(["--resume", str(run), "--crop", "48", "--no-progress"])
    assert "resume: checkpoint has image pools of 32x32 px images, this run's --crop is 48; pools start empty" \
        in capsys.readouterr().err
    pools = torch.load(run / "checkpoints" / "step_0000003.pt", weights_only=False)["pools"][0]
    assert [tuple(t.shape) for t in pools["sharp"]["images"]] == [(3, 48, 48)] * 2


def test_kernel_blur_f_learns_from_its_discriminator_only():
    """With --blur-model kernel there is no blurry->sharp->blurry cycle and the sharp->blurry->sharp
    cycle does not reach F (it would shrink F's kernels towards the identity); the identity loss is G's."""
    from unpaired.models import KernelBlurGenerator, ResnetGenerator, init_weights
    from unpaired.train import CycleGenerators

    torch.manual_seed(0)
    gens = CycleGenerators(init_weights(ResnetGenerator(4, 1, residual=True), 0), init_weights(KernelBlurGenerator(5), 1))
    blur, sharp = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = gens(blur, sharp, identity=True)
    assert set(out) == {"fake_sharp", "fake_blur", "kernel", "rec_sharp", "idt_sharp"}
    torch.nn.functional.l1_loss(out["rec_sharp"], sharp).backward()
    assert all(p.grad is None for p in gens.F.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gens.G.parameters())
    out = gens(blur, sharp, identity=False)
    out["fake_blur"].mean().backward()  # the adversarial loss does reach F
    assert all(p.grad is not None for p in gens.F.parameters())


def test_a_network_f_closes_both_cycles_and_each_cycle_trains_both_generators():
    """The reference CycleGAN: rec_blur = F(G(blur)), rec_sharp = G(F(sharp)), idt_sharp = G(sharp),
    idt_blur = F(blur), and each cycle loss reaches both G and F (nothing detached in between)."""
    from unpaired.models import ResnetGenerator, init_weights
    from unpaired.train import CycleGenerators

    g, f = init_weights(ResnetGenerator(4, 1, residual=False), 0), init_weights(ResnetGenerator(4, 1, residual=False), 1)
    gens = CycleGenerators(g, f)
    gen = torch.Generator().manual_seed(2)
    blur, sharp = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    out = gens(blur, sharp, identity=True)
    with torch.no_grad():
        expected = {"fake_sharp": g(blur), "fake_blur": f(sharp), "rec_blur": f(g(blur)), "rec_sharp": g(f(sharp)),
                    "idt_sharp": g(sharp), "idt_blur": f(blur)}
    assert set(out) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(out[k].detach(), v, msg=k)
    for rec, target in (("rec_blur", blur), ("rec_sharp", sharp)):
        gens.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(out[rec], target).backward(retain_graph=True)
        for name, net in (("G", g), ("F", f)):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), (rec, name)


def test_cyclegan_on_folders_with_names_that_are_not_utf8(tmp_path):
    # b"\xe9t\xe9.png" (Latin-1, from an old Windows share or camera card) is a valid file name: the
    # digest of the folders' file names that checkpoints keep must not crash on it
    rng = np.random.default_rng(0)
    for name in ("blurry", "sharp"):
        write_image(tmp_path / name / os.fsdecode(b"\xe9t\xe9.png"), rng.random((3, 40, 40)).astype(np.float32))
    main(TINY_GAN + ["--steps", "1", "--blurry", str(tmp_path / "blurry"), "--sharp", str(tmp_path / "sharp"),
                     "--run-dir", str(tmp_path / "run")])
    assert (tmp_path / "run" / "checkpoints" / "step_0000001.pt").is_file()


def test_cyclegan_on_folders_skips_unusable_photos(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, sizes in (("blurry", [(40, 50), (40, 50), (44, 70)]), ("sharp", [(36, 64), (36, 64)])):
        for i, size in enumerate(sizes):
            write_image(tmp_path / name / f"{i}.png", rng.random((3, *size)).astype(np.float32))
    (tmp_path / "sharp" / "notes.txt").write_text("ignored")
    (tmp_path / "blurry" / "empty.jpg").touch()
    (tmp_path / "blurry" / "text.png").write_text("not an image")
    write_image(tmp_path / "sharp" / "small.png", rng.random((3, 20, 90)).astype(np.float32))
    run = tmp_path / "run"
    # every photo is drawn in 8 steps of 2 (3 blurry, 2 sharp); --val-crop 48 is above the blurry
    # photos' height, so the sample grid crops all three (40x50, 40x50, 44x70) to 40x40
    main(TINY_GAN + ["--steps", "8", "--eval-every", "8", "--val-size", "3", "--val-crop", "48", "--blurry", str(tmp_path / "blurry"),
                     "--sharp", str(tmp_path / "sharp"), "--run-dir", str(run)])
    assert (run / "samples" / "step_0000008.png").is_file()  # grids without pairs: blurry | output
    assert not any("val_psnr" in r for r in records(run))
    assert all(len(r) > 1 for r in records(run))  # (no record of a validation that had nothing to score)
    err = capsys.readouterr().err
    assert "--blurry: skipped 2 of 5 files" in err and "--sharp: skipped 1 of 3 files" in err
    assert "empty.jpg: empty file" in err and "text.png: cannot be read as an image" in err
    assert "small.png: 90x20 is smaller than --crop 32; lower --crop or remove it" in err
    # a resume says when the folders no longer hold the files the run started with
    main(["--resume", str(run), "--steps", "9", "--no-progress"])
    assert "resume:" not in capsys.readouterr().err
    write_image(tmp_path / "sharp" / "2.png", rng.random((3, 36, 64)).astype(np.float32))
    main(["--resume", str(run), "--steps", "10", "--no-progress"])
    assert "resume: other usable files than at step 9 in --sharp (2 files then, 3 now)" in capsys.readouterr().err
    for f in (tmp_path / "sharp").glob("[0-9].png"):
        f.unlink()
    with pytest.raises(ImageError, match=r"--sharp .*sharp: no usable image; .*small\.png: 90x20 is smaller"):
        main(TINY_GAN + ["--steps", "1", "--blurry", str(tmp_path / "blurry"), "--sharp", str(tmp_path / "sharp"),
                         "--run-dir", str(tmp_path / "r2")])


def _folder_pairs(root: Path, seed: int, n: int = 4) -> None:
    """``n`` lq/ + gt/ pairs of 24 px in ``root``, the blurry one half as bright."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.random((3, 24, 24)).astype(np.float32)
        write_image(root / "gt" / f"{i}.png", img)
        write_image(root / "lq" / f"{i}.png", img * 0.5)


def test_paired_on_folder_pairs_holds_out_validation(tmp_path, capsys):
    _folder_pairs(tmp_path / "pairs", seed=1)
    run = tmp_path / "run"
    result = main(TINY_NET + ["--steps", "2", "--pairs", str(tmp_path / "pairs"), "--run-dir", str(run)])
    assert result["val_psnr_blurry"] < 20  # the held-out pairs are the half-bright ones
    assert "pairs: 2 pairs for training, the last 2 held out for validation" in capsys.readouterr().err
    # held-out pairs smaller than --val-crop, of different sizes: one crop size that fits them all
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(20, 28), (28, 20)], start=2):
        img = rng.random((3, h, w)).astype(np.float32)
        write_image(tmp_path / "pairs" / "gt" / f"{i}.png", img)
        write_image(tmp_path / "pairs" / "lq" / f"{i}.png", img * 0.5)
    main(TINY_NET + ["--steps", "1", "--val-crop", "32", "--pairs", str(tmp_path / "pairs"), "--run-dir", str(run),
                 "--overwrite"])
    assert [r["step"] for r in records(run) if "val_psnr" in r] == [1]
    with pytest.raises(ImageError, match=r"--pairs \S*pairs: no usable pair; \S*lq/0\.png: 24x24 is smaller than "
                                         r"--crop 32; lower --crop or remove the pair"):
        main(TINY_NET + ["--steps", "1", "--crop", "32", "--pairs", str(tmp_path / "pairs"), "--run-dir", str(run),
                     "--overwrite"])


def test_validation_images_too_small_to_validate_on_are_refused_at_start(tmp_path, refused):
    # all are cropped to the smallest one's side: below what the generator (or SSIM) takes, the first
    # validation, --eval-every steps in, failed in a traceback (exit status 1)
    _folder_pairs(tmp_path / "pairs", seed=5)  # 24 px
    for d in ("lq", "gt"):
        write_image(tmp_path / "pairs" / d / "3.png", np.zeros((3, 10, 40), np.float32))
    opts = ["--steps", "2", "--eval-every", "2", "--run-dir", str(tmp_path / "r")]
    with refused(r"^error: --pairs \(held out for validation\): \S*lq/3\.png is 40x10, too small to validate on "
                 r"\(validation crops must be at least 11 px, in multiples of 4, for the unet generator and SSIM\); "
                 r"remove it, or pass --val-size 0$"):
        cli(TINY_NET + opts + ["--pairs", str(tmp_path / "pairs")])
    with refused(r"^error: --val-pairs: \S*lq/3\.png is 40x10, too small to validate on \(validation crops must "
                 r"be at least 16 px, in multiples of 8, for the unet generator\)"):
        cli(TINY + opts + ["--unet-depth", "3", "--val-size", "4", "--val-pairs", str(tmp_path / "pairs")])
    assert not (tmp_path / "r").exists()
    main(TINY + opts + ["--val-size", "3", "--val-pairs", str(tmp_path / "pairs")])  # (the first 3: 24 px)


def test_unusable_training_pairs_are_skipped_and_listed_at_start(tmp_path, capsys):
    # a pair that does not decode, differs in size from its twin or is smaller than --crop was read only
    # when a step drew it: the run ended there (hours in, with --steps 20000), and a resume drew it again
    pairs = tmp_path / "pairs"
    _folder_pairs(pairs, seed=4, n=6)
    (pairs / "lq" / "1.png").write_text("not an image")
    write_image(pairs / "gt" / "2.png", np.zeros((3, 24, 32), np.float32))
    for d in ("lq", "gt"):
        write_image(pairs / d / "3.png", np.zeros((3, 8, 24), np.float32))
    run = tmp_path / "run"
    main(TINY_NET + ["--steps", "8", "--eval-every", "100", "--pairs", str(pairs), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert "--pairs: skipped 3 of 4 pairs:\n" in err
    assert f"{pairs / 'lq' / '1.png'}: cannot be read as an image" in err
    assert f"{pairs / 'lq' / '2.png'} is 24x24 but {pairs / 'gt' / '2.png'} is 32x24; a blurry image and its " \
           "sharp twin must have the same size" in err
    assert f"{pairs / 'lq' / '3.png'}: 24x8 is smaller than --crop 16; lower --crop or remove the pair" in err
    assert "pairs: 1 pairs for training, the last 2 held out" in err
    assert (run / "checkpoints" / "step_0000008.pt").is_file()
    main(["--resume", str(run), "--steps", "9", "--no-progress"])  # the same usable pairs: nothing to say
    assert "resume: other usable files" not in capsys.readouterr().err


def test_a_written_dataset_missing_a_kernel_file_trains_on_its_images(tmp_path):
    # the trainers use a written dataset's images and tone curves, never its true kernels: a missing or
    # damaged kernel file was read anyway, and ended the run at the step that first drew its pair
    # (after its images had passed the check at start)
    pairs = tmp_path / "pairs"
    assert blursynth_main(["dataset", "--out", str(pairs), "--pairs", "6", "--crop", "24", "--quiet"]) == 0
    (pairs / "kernels" / "000001.npy").unlink()
    (pairs / "kernels" / "000002.npy").write_text("not an array")
    run = tmp_path / "run"
    main(TINY_NET + ["--steps", "4", "--pairs", str(pairs), "--run-dir", str(run)])
    assert (run / "checkpoints" / "step_0000004.pt").is_file()


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="--pairs .*neither manifest.jsonl nor lq/ \\+ gt/"):
        main(TINY_NET + ["--steps", "1", "--pairs", str(tmp_path), "--run-dir", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match="--blurry .*no such folder"):
        main(TINY_GAN + ["--steps", "1", "--blurry", str(tmp_path / "x"), "--sharp", str(tmp_path),
                         "--run-dir", str(tmp_path / "r")])
    (tmp_path / "photo.png").write_bytes(b"")  # (a photo given for its folder was called "no such folder")
    with pytest.raises(FileNotFoundError, match="--blurry .*photo.png: is a file, not a folder; pass the folder"):
        main(TINY_GAN + ["--steps", "1", "--blurry", str(tmp_path / "photo.png"), "--sharp", str(tmp_path),
                         "--run-dir", str(tmp_path / "r")])
    with pytest.raises(config.ConfigError, match="--resume .*no config.json"):
        main(["--resume", str(tmp_path)])
    assert not (tmp_path / "r").exists()  # a start that failed writes nothing
    main(TINY + ["--steps", "1", "--eval-every", "100", "--run-dir", str(tmp_path / "r")])


def test_a_run_dir_below_a_file_is_refused_before_the_data_is_made(tmp_path, refused):
    # making the folder failed in a NotADirectoryError traceback, once the data had been made
    (tmp_path / "afile").write_text("")
    for run in (tmp_path / "afile" / "run", tmp_path / "afile" / "a" / "b"):
        with refused(rf"^error: --run-dir {run}: {tmp_path / 'afile'} is a file, so the folder cannot be made "
                     r"there; choose another --run-dir$"):
            cli(TINY + ["--steps", "1", "--run-dir", str(run)])


def test_a_run_dir_through_a_link_to_a_missing_folder_is_refused_before_the_data_is_made(tmp_path, refused):
    # (a link to a folder that is gone, as a purged scratch disk leaves: making the folder failed in a
    # FileExistsError traceback, once the data had been made)
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    for run in (tmp_path / "runs", tmp_path / "runs" / "a" / "b"):
        with refused(rf"^error: --run-dir {run}: {tmp_path / 'runs'} is a link to {tmp_path / 'gone'}, which does "
                     r"not exist; make that folder, or choose another --run-dir$"):
            cli(TINY + ["--steps", "1", "--run-dir", str(run)])
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("name, was", [("samples", "file"), ("checkpoints", "file"), ("metrics.jsonl", "folder")])
def test_a_file_where_the_run_keeps_a_folder_is_refused_before_the_data_is_made(tmp_path, refused, name, was):
    # (a samples file ended a resume in a FileExistsError traceback once the data was made; a checkpoints
    # file, a run with --overwrite at its first checkpoint; a metrics.jsonl folder, at its first log)
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--stop-at", "1", "--eval-every", "100", "--run-dir", str(run)])
    if (run / name).is_dir():
        shutil.rmtree(run / name)
        (run / name).write_text("")
    else:
        (run / name).unlink()
        (run / name).mkdir()
    pattern = rf"^error: --run-dir {run}: {run / name} is a {was}, where the run writes its .* of that name; move it aside$"
    for argv in (["--resume", str(run)], TINY + ["--steps", "1", "--overwrite", "--run-dir", str(run)]):
        with refused(pattern):
            cli(argv + ["--no-progress"])


def test_a_run_that_lost_its_config_json_gets_the_same_advice_either_way(tmp_path, refused):
    # a new run in the folder said "pass --resume", and --resume said "no config.json there; pass the run folder"
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--stop-at", "1", "--eval-every", "100", "--run-dir", str(run)])
    (run / "config.json").unlink()
    at = re.escape(str(run))
    advice = (rf"{at}: holds a run \(metrics.jsonl\) but not its config.json, which --resume needs \(it holds the "
              r"run's options\); put it back \(each checkpoints/step_\*.pt holds a copy of it, under the key "
              rf"'config'\) and continue with --resume {at}, start the run again with --overwrite, or choose "
              "another --run-dir$")
    new_run = TINY + ["--steps", "2", "--run-dir", str(run)]
    for argv, option in ((new_run, "--run-dir"), (["--resume", str(run)], "--resume")):
        with refused(f"^error: {option} {advice}"):
            cli(argv + ["--no-progress"])
    state = torch.load(run / "checkpoints" / "step_0000001.pt", weights_only=False)
    (run / "config.json").write_text(json.dumps(state["config"]))  # as the line says
    main(["--resume", str(run), "--no-progress"])
    assert [r["step"] for r in records(run) if "lr" in r] == [1, 2]


def test_command_line_reports_errors_in_one_line(tmp_path, refused):
    with refused("^error: --mode must be one of"):
        cli(["--mode", "gan"])
    with refused("^error: --pairs .*neither manifest.jsonl"):
        cli(TINY_NET + ["--pairs", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")])
    with refused(r"^error: --val-crop 8 is smaller than SSIM's 11 px window"):  # (it failed at the first validation)
        cli(TINY + ["--val-crop", "8", "--run-dir", str(tmp_path / "r")])
    cli(TINY + ["--val-crop", "8", "--val-size", "0", "--steps", "1", "--run-dir", str(tmp_path / "ok")])
    if not torch.cuda.is_available():
        with refused("^error: --device cuda: no CUDA device is visible"):
            cli(TINY + ["--device", "cuda", "--run-dir", str(tmp_path / "r")])


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    # torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 must not reach for a GPU that is not there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert config.pick_device("auto", 0) == torch.device("cuda", 0)
    with pytest.raises(config.ConfigError, match="process 1 needs GPU 1 but 1 are visible.*--device cpu"):
        config.pick_device("auto", 1)
    assert config.pick_device("cpu", 1) == torch.device("cpu")


def test_a_gpu_number_beyond_those_visible_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert config.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(config.ConfigError, match=r"--device cuda:2: 2 GPU\(s\) are visible.*cuda:0 to cuda:1"):
        config.pick_device("cuda:2")


@pytest.mark.parametrize("opts", [TINY, TINY_GAN + ["--blur-model", "shake", "--blur-kernel", "9"]])
def test_mixed_precision_trains(tmp_path, opts):
    # --amp on runs every forward under autocast (bfloat16 here on the CPU; on CUDA --amp auto selects it)
    run = tmp_path / "r"
    result = main(opts + ["--amp", "on", "--steps", "3", "--eval-every", "3", "--run-dir", str(run)])
    losses = [v for r in records(run) for k, v in r.items() if k.startswith("loss")]
    assert losses and all(np.isfinite(losses)) and np.isfinite(result["val_psnr"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("opts", [TINY, TINY_GAN + ["--blur-model", "shake", "--blur-kernel", "9"]])
def test_cuda_training_selects_mixed_precision(tmp_path, opts):
    run = tmp_path / "r"
    result = main(opts + ["--device", "cuda", "--steps", "3", "--eval-every", "3", "--run-dir", str(run)])
    state = torch.load(run / "checkpoints" / "step_0000003.pt", weights_only=False)
    assert state["config"]["amp"] == "auto" and state["rng"][0]["cuda"] is not None
    assert np.isfinite(result["val_psnr"])


# ---------------------------------------------------------------- DDP


@pytest.mark.parametrize("mode", ["paired", "reblur"])
def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path, mode):
    # rank r of step s reads positions (2 s + r) * 2 + [0, 2), i.e. exactly the 4 positions one
    # process with batch 4 reads; averaged gradients of the two halves equal the whole batch's
    one, two = tmp_path / "one", tmp_path / "two"
    i = TINY.index("--batch")
    args = TINY[:i] + TINY[i + 2:] + ["--steps", "3", "--eval-every", "100", "--device", "cpu"]  # gloo
    if mode == "reblur":  # (G and the kernel predictor in one DDP unit, the photos' crops by position too)
        (tmp_path / "photos").mkdir()
        for j in range(3):
            write_image(tmp_path / "photos" / f"p{j}.png", torch.rand(3, 24 + 8 * j, 32, generator=torch.Generator().manual_seed(j)))
        args += ["--mode", "reblur", "--blur-kernel", "5", "--blurry", str(tmp_path / "photos")]
    main(args + ["--batch", "4", "--run-dir", str(one)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "unpaired.train", *args, "--batch", "2", "--run-dir", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    w1, w2 = weights(one, 3), weights(two, 3)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)
    # only rank 0 wrote: one log line per step, with the losses of the whole batch, the mean of the ranks'
    # (rank 0's alone, of its half, were logged)
    logged = [[r for r in records(run) if "loss_pixel" in r] for run in (one, two)]
    assert [r["step"] for r in logged[1]] == [1, 2, 3]
    for r1, r2 in zip(*logged):
        assert r1.keys() == r2.keys()
        for k in r1.keys() - {"seconds"}:
            assert r2[k] == pytest.approx(r1[k], rel=1e-4), (r1["step"], k)


def test_ddp_cyclegan_checkpoints_every_rank_pool(tmp_path):
    run = tmp_path / "gan"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unpaired.train",
           *TINY_GAN, "--steps", "2", "--eval-every", "100", "--device", "cpu", "--run-dir", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "step_0000002.pt", weights_only=False)
    assert len(state["pools"]) == 2  # rank 1's image pools were gathered for an exact resume
    assert all(p["sharp"]["count"] == 4 for p in state["pools"])  # 2 steps x batch 2 queried on each rank
    # each rank draws from its own streams: with one seed, both ranks' pools would swap in lockstep, and a
    # kernel-blur F would give both halves of the batch the same kernels and noise
    assert len({p[k]["seed"] for p in state["pools"] for k in ("sharp", "blur")}) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert [r["step"] for r in records(run) if "loss_D" in r] == [1, 2]


def test_ddp_kernel_blur_resume_equals_uninterrupted(tmp_path):
    # each rank draws F's kernels and noise from its own global RNG (seeded by rank): a resume must
    # give every rank back its own state, not rank 0's
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY_GAN + ["--blur-model", "kernel", "--blur-kernel", "5", "--pair-pool", "4", "--pair-pool-size", "32",
                       "--eval-every", "100", "--device", "cpu"]

    def torchrun(*argv):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "unpaired.train", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun(*opts, "--steps", "4", "--run-dir", str(a))
    torchrun(*opts, "--steps", "4", "--stop-at", "2", "--run-dir", str(b))
    torchrun("--resume", str(b), "--no-progress")
    assert_resumed_as_uninterrupted(a, b, 4)  # (every rank's pools and RNG state included)


def test_resume_after_a_kill_mid_write_drops_the_torn_line_and_the_temporaries(tmp_path):
    # SIGKILL (or a full disk) while appending to metrics.jsonl leaves a line cut short, and one while
    # writing a checkpoint or sample grid leaves atomic_path's temporary: --resume used to stop on the
    # first ("error: Unterminated string ...", for good) and never removed the second.
    run = tmp_path / "run"
    main(TINY + ["--device", "cpu", "--steps", "4", "--stop-at", "2", "--eval-every", "100", "--run-dir", str(run)])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "lr": 0.0002, "loss_pi')
    stale = [run / "checkpoints" / ".step_0000004.abc123_x.tmp.pt", run / "samples" / ".step_0000004.q1w2e3r4.tmp.png"]
    for path in stale:
        path.write_bytes(b"half")
    main(["--resume", str(run), "--no-progress"])
    assert [r["step"] for r in records(run) if "loss_pixel" in r] == [1, 2, 3, 4]
    assert not any(path.exists() for path in stale)


def test_a_new_run_removes_the_temporaries_of_a_start_killed_early(tmp_path):
    # killed while writing its config.json (or first sample grid), a run leaves no metrics and no
    # checkpoint, so the same command starts afresh: it kept the temporary for good
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    stale = [run / ".config.k3y_9abc.tmp.json", run / "samples" / ".step_0000001.q1w2e3r4.tmp.png"]
    for path in stale:
        path.write_bytes(b"half")
    main(TINY + ["--device", "cpu", "--steps", "1", "--eval-every", "100", "--run-dir", str(run)])
    assert not any(path.exists() for path in stale)


def test_a_kill_before_the_oldest_checkpoint_is_removed_is_made_good_on_resume(tmp_path, monkeypatch):
    # Killed after the last step's checkpoint was written but before the oldest was removed, the run had
    # nothing left to do on --resume, which never removed it: one checkpoint more than --keep-last, for good.
    run = tmp_path / "run"
    real = Path.unlink

    def killed(self, *args, **kwargs):
        if self.name == "step_0000002.pt":  # removed after step 4's checkpoint
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        main(TINY + ["--device", "cpu", "--steps", "4", "--ckpt-every", "1", "--keep-last", "2", "--eval-every", "100",
                     "--run-dir", str(run)])
    monkeypatch.undo()
    assert len(list((run / "checkpoints").glob("step_*.pt"))) == 3
    main(["--resume", str(run), "--no-progress"])
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == ["step_0000003.pt", "step_0000004.pt"]


def test_a_run_killed_before_its_first_checkpoint_may_be_resumed_with_a_lower_ckpt_every(tmp_path):
    # (killed at step 3 of a run checkpointing every 4 steps, it had no checkpoint; `--resume RUN --ckpt-every 2`
    # was refused with "no checkpoints/step_*.pt to resume from, though metrics.jsonl reaches step 3; put them
    # back": the new --ckpt-every was taken for the one the run had trained with)
    run = tmp_path / "run"
    main(TINY + ["--device", "cpu", "--steps", "6", "--ckpt-every", "4", "--eval-every", "100",
                 "--run-dir", str(run)])
    for path in (run / "checkpoints").glob("*.pt"):  # as if killed at step 3, before its first checkpoint
        path.unlink()
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in (run / "metrics.jsonl").read_text()
                                                .splitlines() if json.loads(line)["step"] <= 3))
    assert main(["--resume", str(run), "--ckpt-every", "2", "--no-progress"])["step"] == 6
    assert [r["step"] for r in records(run) if "lr" in r] == list(range(1, 7))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == [f"step_000000{i}.pt" for i in (2, 4, 6)]


def test_a_run_killed_before_its_first_checkpoint_is_started_again_by_resume(tmp_path, monkeypatch):
    # Killed after it logged (and validated) but before its first checkpoint, a run's folder was refused
    # by the same command ("holds a run ...; pass --resume") and by --resume ("no checkpoints/step_*.pt
    # to resume from"): only --overwrite went on. With the defaults that is any kill in steps 50-499.
    from unpaired import train
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY + ["--device", "cpu", "--steps", "6", "--ckpt-every", "4", "--eval-every", "2"]
    main(opts + ["--run-dir", str(a)])
    real = train.atomic_path

    def killed(path):
        if Path(path).name == "step_0000004.pt":
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(train, "atomic_path", killed)
    with pytest.raises(KeyboardInterrupt):
        main(opts + ["--run-dir", str(b)])
    monkeypatch.undo()
    assert (b / "checkpoints" / "best.pt").exists() and not list((b / "checkpoints").glob("step_*.pt"))
    with pytest.raises(config.ConfigError, match="holds a run"):
        main(opts + ["--run-dir", str(b)])
    main(["--resume", str(b), "--no-progress"])
    for name in ("step_0000006.pt", "best.pt"):
        sa, sb = (torch.load(run / "checkpoints" / name, weights_only=True) for run in (a, b))
        assert sa["step"] == sb["step"]
        for m in sa["models"]:
            for k, v in sa["models"][m].items():
                assert torch.equal(sb["models"][m][k], v), (name, m, k)
    untimed = lambda run: [{k: v for k, v in r.items() if k != "seconds"} for r in records(run)]  # noqa: E731
    assert untimed(b) == untimed(a)
    # a run whose checkpoints were removed after it went past the first is not started again: that
    # would truncate its metrics and replace its best.pt
    for path in (a / "checkpoints").glob("step_*.pt"):
        path.unlink()
    kept = (a / "metrics.jsonl").read_bytes(), (a / "checkpoints" / "best.pt").read_bytes()
    with pytest.raises(ValueError, match="no checkpoints/step_.*pt to resume from, though metrics.jsonl reaches "
                                         "step 6; put them back, or pass --overwrite"):
        main(["--resume", str(a), "--no-progress"])
    assert ((a / "metrics.jsonl").read_bytes(), (a / "checkpoints" / "best.pt").read_bytes()) == kept


def test_a_full_disk_is_one_line_and_leaves_no_checkpoint(tmp_path, capsys, monkeypatch):
    # torch.save's own writer reported a full disk as "RuntimeError: [enforce fail at inline_container.cc]
    # ... unexpected pos", a traceback naming neither the file nor the cause.
    import errno
    real = Path.write_bytes

    def full(self, data):
        if self.suffix == ".pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli(TINY + ["--device", "cpu", "--steps", "2", "--ckpt-every", "1", "--no-progress", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err
    assert "error: cannot write " in err and "step_0000001.pt (No space left on device)" in err and "--resume" in err
    assert not list((run / "checkpoints").glob("*.pt")) and not list((run / "checkpoints").glob(".*"))


def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path, capsys, monkeypatch):
    # A write() that fails names no file: the line said "cannot write None (No space left on device)".
    import builtins
    import errno

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def full_metrics(file, mode="r", *a, **kw):
        fh = builtins.open(file, mode, *a, **kw)
        return Full(fh) if Path(file).name == "metrics.jsonl" and "a" in mode else fh

    monkeypatch.setattr("unpaired.train.open", full_metrics, raising=False)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli(TINY + ["--device", "cpu", "--steps", "2", "--log-every", "1", "--no-progress", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err
    assert f"error: cannot write {run / 'metrics.jsonl'} (No space left on device)" in err and "--resume" in err


def test_an_unreadable_photo_folder_is_not_called_a_write_error(tmp_path, capsys, monkeypatch):
    # EACCES comes from reading inputs too: "cannot write <the photo folder> ... make room there" was wrong
    import errno
    real = Path.iterdir

    def denied(self):
        if self.name == "sharp":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    rng = np.random.default_rng(0)
    for name in ("blurry", "sharp"):
        write_image(tmp_path / name / "0.png", rng.random((3, 40, 40)).astype(np.float32))
    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(SystemExit) as exc:
        cli(TINY_GAN + ["--steps", "1", "--blurry", str(tmp_path / "blurry"), "--sharp", str(tmp_path / "sharp"),
                        "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err
    assert f"error: {tmp_path / 'sharp'}: Permission denied; give this user access" in err
    assert "cannot write" not in err and "make room" not in err


def test_a_bad_pair_read_in_a_dataloader_worker_is_one_line(tmp_path, refused, monkeypatch):
    # --workers N: the worker's ImageError comes back wrapped by the DataLoader ("Caught ImageError in
    # DataLoader worker process 0." and the worker's traceback); it must read as with --workers 0
    monkeypatch.setattr("unpaired.train.usable_pairs", lambda *args: [])  # as if they broke after the start
    _folder_pairs(tmp_path / "pairs", seed=2)
    for i in range(2):  # both training pairs (the last 2 are held out)
        (tmp_path / "pairs" / "lq" / f"{i}.png").write_text("not an image")
    for workers in ("0", "1"):
        with refused(r"^error: \S*lq/[01]\.png: cannot be read as an image [^\n]*\n\Z"):
            cli(TINY_NET + ["--steps", "1", "--workers", workers, "--pairs", str(tmp_path / "pairs"),
                        "--run-dir", str(tmp_path / f"r{workers}")])


@pytest.mark.parametrize("signum, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_or_sigterm_finishes_the_step_and_checkpoints_it(tmp_path, signum, code):
    # Ctrl-C printed a 40-line KeyboardInterrupt traceback and SIGTERM (a job scheduler's stop) killed
    # the run silently; both lost every step since the last --ckpt-every checkpoint.
    import signal
    import time
    run = tmp_path / "run"
    opts = TINY + ["--device", "cpu", "--eval-every", "100000", "--ckpt-every", "100000", "--steps", "100000"]
    command = [sys.executable, "-m", "unpaired.train", *opts]
    where = {"cwd": Path(__file__).parents[1], "env": {**os.environ, "OMP_NUM_THREADS": "1"}}
    proc = subprocess.Popen(command + ["--run-dir", str(run)], **where,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    step = int(last.split("stopped at step ")[1].split()[0])
    assert last == (f"stopped at step {step} of 100000 ({signum}); {run}/checkpoints/step_{step:07d}.pt written: "
                    f"continue with --resume {run}")
    # that checkpoint is the one a run told to stop there writes, so resuming it repeats an uninterrupted run
    # (made the same way, in a process of one thread: another thread count sums the gradients in another order)
    subprocess.run(command + ["--stop-at", str(step), "--run-dir", str(tmp_path / "ref")], **where, check=True,
                   capture_output=True)
    mine, ref = weights(run, step), weights(tmp_path / "ref", step)
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    assert main(["--resume", str(run), "--stop-at", str(step + 1)])["step"] == step + 1


def test_a_sigterm_to_the_whole_group_stops_a_run_with_workers_in_one_line(tmp_path):
    # Some schedulers signal every process of a job: the DataLoader workers then die mid-step, and the
    # main process's step failed in a traceback.
    import signal
    import time
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "unpaired.train", *TINY, "--device", "cpu", "--workers", "2",
                             "--eval-every", "100000", "--ckpt-every", "100000", "--steps", "100000",
                             "--run-dir", str(run)], cwd=Path(__file__).parents[1], start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 143 and len(lines) == 1, err
    assert lines[0].startswith(("stopped at step ", "interrupted; the run folder keeps its last checkpoint")), err


@pytest.mark.parametrize("lost", [ConnectionResetError(104, "Connection reset by peer"), EOFError()])
def test_a_worker_lost_while_handing_over_a_batch_after_sigterm_is_a_clean_stop(tmp_path, monkeypatch, lost):
    # The race of the test above, made certain: the SIGTERM comes in, and the batch being received
    # from a worker that it ended fails instead of the DataLoader's RuntimeError: a reset connection,
    # or the end of one (EOFError) when the worker died while sharing the batch's memory.
    import signal

    from torch.utils.data import DataLoader

    import unpaired.train as train_mod
    from blursynth.interrupt import Terminated

    class Dying(DataLoader):
        def __iter__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            raise lost
            yield

    monkeypatch.setattr(train_mod, "DataLoader", Dying)
    with pytest.raises(Terminated):
        main(TINY + ["--steps", "3", "--eval-every", "100", "--device", "cpu", "--run-dir", str(tmp_path / "r")])


def test_the_loader_gets_workers_that_leave_ctrl_c_to_the_main_process_which_stops_them(tmp_path, monkeypatch):
    # --workers was not checked to reach the DataLoader, nor its workers to ignore SIGINT: a Ctrl-C (sent to
    # the whole process group) then killed them mid-step instead of letting the main process finish the step
    import signal

    from torch.utils.data import DataLoader

    import unpaired.train as train_mod
    made, iterators = [], []

    class Recorded(DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

        def __iter__(self):
            iterators.append(super().__iter__())
            return iterators[-1]

    monkeypatch.setattr(train_mod, "DataLoader", Recorded)
    main(TINY + ["--steps", "1", "--val-size", "0", "--workers", "2", "--device", "cpu", "--run-dir", str(tmp_path / "r")])
    assert [kw["num_workers"] for kw in made] == [2]
    # ... and the run stops them itself: left to the iterator's __del__, workers a group signal had killed
    # made torch print an ignored-exception traceback after the run's last line
    assert len(iterators) == 1 and iterators[0]._shutdown
    before = signal.getsignal(signal.SIGINT)
    try:
        made[0]["worker_init_fn"](0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_workers_left_running_at_exit_do_not_keep_the_process_alive(tmp_path):
    # The workers ignored SIGTERM too, which is how multiprocessing ends the workers of a DataLoader
    # still iterating when Python exits: such a process never exited (the test suite hung in CI).
    script = ("from torch.utils.data import DataLoader\n"
              "from unpaired.train import _ignore_ctrl_c\n"
              "it = iter(DataLoader(list(range(100)), num_workers=1, worker_init_fn=_ignore_ctrl_c))\n"
              "next(it)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_decay_steps_zero_is_no_decay_and_the_ends_of_steps_are_accepted():
    """--decay-steps 0 keeps the rate constant to the end (only -1 means half of --steps); --decay-steps and
    --stop-at may equal --steps (only past it are they refused)."""
    cfg = config.from_mapping({"steps": 10, "decay_steps": 0}).resolve()
    cfg.validate()
    assert cfg.total_decay_steps() == 0 and [lr_factor(s, 10, 0) for s in range(10)] == [1.0] * 10
    assert config.from_mapping({"steps": 10}).resolve().total_decay_steps() == 5
    for values in ({"steps": 10, "decay_steps": 10}, {"steps": 10, "stop_at": 10}):
        config.from_mapping(values).resolve().validate()
    for values, flag in (({"steps": 10, "decay_steps": 11}, "decay-steps"), ({"steps": 10, "stop_at": 11}, "stop-at")):
        with pytest.raises(config.ConfigError, match=flag):
            config.from_mapping(values).resolve().validate()


def test_an_infinite_validation_psnr_is_said_not_finite_not_nan(tmp_path, capsys):
    """Held-out pairs whose blurry image equals the sharp one (made without blur) score an infinite PSNR,
    logged as null: the summary printed "nan dB" and a "+nan dB" gain."""
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.random((3, 24, 24)).astype(np.float32)
        for side in ("gt", "lq"):
            write_image(tmp_path / "pairs" / side / f"{i}.png", img)
    run = tmp_path / "run"
    main(TINY_NET + ["--steps", "2", "--pairs", str(tmp_path / "pairs"), "--run-dir", str(run)])
    assert [r["val_psnr_blurry"] for r in records(run) if "val_psnr" in r] == [None]
    out = capsys.readouterr().out
    assert "blurry input not finite, model output " in out and "nan" not in out, out
    assert "null in metrics.jsonl, is infinite where the images equal their sharp twins" in out


def test_a_signal_the_run_was_started_with_ignored_stays_ignored():
    # `python -m unpaired.train ... &` in a script: the shell ignores SIGINT for it, since it shares the
    # script's Ctrl-C; taking it anyway stopped a background run when the user stopped the script's foreground
    import signal
    from unpaired.train import _stop_requests
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for ignored in (signal.SIGINT, signal.SIGTERM):
            other = signal.SIGTERM if ignored == signal.SIGINT else signal.SIGINT
            signal.signal(ignored, signal.SIG_IGN)
            signal.signal(other, signal.default_int_handler)
            with _stop_requests(True) as stop:
                os.kill(os.getpid(), ignored)
                assert stop == []
                os.kill(os.getpid(), other)  # (handlers run between bytecodes of the main thread)
                assert stop == [other]
            assert signal.getsignal(ignored) is signal.SIG_IGN
            assert signal.getsignal(other) is signal.default_int_handler
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_second_signal_interrupts_at_once(signum):
    # README/cli: the first Ctrl-C or SIGTERM finishes the step under way; a second one interrupts at once
    # (a step stuck on I/O can still be ended), as KeyboardInterrupt (status 130) or Terminated (143)
    import signal
    from blursynth.interrupt import Terminated
    from unpaired.train import _stop_requests
    sig = getattr(signal, signum)
    raised = Terminated if signum == "SIGTERM" else KeyboardInterrupt
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(KeyboardInterrupt) as err:  # (either: an exact type is checked below)
            with _stop_requests(True) as stop:
                os.kill(os.getpid(), sig)  # (handlers run between bytecodes of the main thread)
                assert stop == [sig]
                os.kill(os.getpid(), sig)
                raise AssertionError("the second signal was not raised")
        assert type(err.value) is raised  # (Terminated is a KeyboardInterrupt)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_signal_in_the_last_step_ends_the_run_as_finished(tmp_path, capsys, monkeypatch):
    # the step under way is finished and checkpointed: when it is the last, the run is done, and it ends
    # as a finished run (its result and summary), not as "stopped at step 2 of 2 ... continue with --resume"
    import signal

    import unpaired.train as train_mod
    calls = []
    real = train_mod.pixel_loss

    def interrupted_in_step_2(*args):
        calls.append(1)
        if len(calls) == 2:  # (paired mode: one pixel loss per step, none at validation)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)
    monkeypatch.setattr(train_mod, "pixel_loss", interrupted_in_step_2)
    run = tmp_path / "run"
    try:
        result = main(TINY + ["--steps", "2", "--eval-every", "100", "--device", "cpu", "--run-dir", str(run)])
    except KeyboardInterrupt as exc:  # (Stopped, or the signal itself: a failure, not the session's interruption)
        pytest.fail(f"{type(exc).__name__}: {exc}")
    assert len(calls) == 2 and result["step"] == 2 and "val_psnr" in result
    assert "validation PSNR on 2 held-out pairs" in capsys.readouterr().out
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] == ["step_0000002.pt"]

def test_cyclegan_discriminators_follow_the_generators_learning_rate_schedule(tmp_path):
    # the reference CycleGAN decays both optimisers; D left at the full rate passed every other test
    run = tmp_path / "run"
    main(TINY_GAN + ["--steps", "4", "--decay-steps", "2", "--lr", "1e-3", "--stop-at", "3", "--eval-every", "100",
                     "--device", "cpu", "--run-dir", str(run)])
    optimizers = torch.load(run / "checkpoints" / "step_0000003.pt", weights_only=False)["optimizers"]
    assert set(optimizers) == {"gen", "disc"}
    for name, state in optimizers.items():  # (the rate of the next update, step index 3)
        assert [g["lr"] for g in state["param_groups"]] == [pytest.approx(1e-3 * lr_factor(3, 4, 2))], name


def test_each_cyclegan_step_updates_the_generators_and_the_discriminators_once(tmp_path):
    # one step is one Adam update of G and F (optimiser "gen") and one of both discriminators ("disc"):
    # D's update stepping G's optimiser a second time, or G's update left out, passed every other test (a
    # resumed run still repeats an uninterrupted one). Adam counts the updates of each parameter.
    run = tmp_path / "run"
    main(TINY_GAN + ["--steps", "2", "--ckpt-every", "1", "--keep-last", "2", "--val-size", "0", "--pair-pool", "2",
                     "--pair-pool-size", "32", "--eval-every", "100", "--device", "cpu", "--run-dir", str(run)])
    optimizers = torch.load(run / "checkpoints" / "step_0000002.pt", weights_only=False)["optimizers"]
    assert set(optimizers) == {"gen", "disc"}
    for name, state in optimizers.items():
        params = [i for g in state["param_groups"] for i in g["params"]]
        assert sorted(state["state"]) == sorted(params), name  # (every parameter of the unit was updated)
        assert {float(s["step"]) for s in state["state"].values()} == {2.0}, name
    before, after = weights(run, 1), weights(run, 2)
    for net in ("G", "F", "D_sharp", "D_blur"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(f"{net}.")), net

def test_paired_records_log_gs_gradient_norm_before_clipping(tmp_path):
    # README: "grad_norm" (G's, paired and reblur, before clipping) in every --log-every record
    run = tmp_path / "run"
    main(TINY + ["--steps", "2", "--log-every", "1", "--grad-clip", "1e-6", "--eval-every", "100", "--device", "cpu",
                 "--run-dir", str(run)])
    norms = [r["grad_norm"] for r in records(run) if "lr" in r]
    assert len(norms) == 2 and all(n > 1e-6 for n in norms)  # (before clipping: above the clip itself)
