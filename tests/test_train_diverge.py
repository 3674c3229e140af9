"""A run whose losses (or weights) become NaN or inf stops at that step, names the checkpoint to go
back to, and writes nothing more: it went on training and checkpointing NaN weights."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train import TINY, TINY_GAN, records
from unpaired import train
from unpaired.train import cli, main

GAN = TINY_GAN + ["--pair-pool", "4", "--pair-pool-size", "32"]  # (the default pool of 512 scenes takes seconds)
KERNEL_GAN = GAN + ["--blur-model", "kernel", "--blur-kernel", "5"]


def files(run: Path) -> dict[str, str]:
    """Every file of the run folder with the SHA-256 of its bytes."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


def assert_finite_checkpoints(run: Path) -> None:
    for path in (run / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        tensors = [t for sd in state["models"].values() for t in sd.values()]
        tensors += [t for o in state["optimizers"].values() for s in o["state"].values() for t in s.values()]
        assert all(t.isfinite().all() for t in tensors if t.is_floating_point()), path


def diverged(capsys, argv: list[str]) -> str:
    """The error line of a run that must stop with exit status 1 and no traceback."""
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def change_call(monkeypatch, target: str, call: int, change=lambda value, *args: value * float("nan")) -> None:
    """Make the ``call``-th call of ``target`` (a function of unpaired.train, or Class.method) return
    ``change(value, *args)`` (default: NaN) instead of its value."""
    module, _, name = target.rpartition(".")
    owner = getattr(train, module) if module else train
    real, calls = getattr(owner, name), []

    def changed(*args):
        calls.append(1)
        value = real(*args)
        return change(value, *args) if len(calls) == call else value
    monkeypatch.setattr(owner, name, changed)


def test_a_nan_loss_stops_the_run_at_that_step_and_writes_nothing(tmp_path, capsys, monkeypatch):
    run, before = tmp_path / "run", {}

    def nan(value, *args):  # (the 5th loss is step 5's: what the folder holds then is what the stop must leave)
        before.update(files(run))
        return value * float("nan")
    change_call(monkeypatch, "pixel_loss", 5, nan)
    line = diverged(capsys, TINY + ["--device", "cpu", "--steps", "8", "--ckpt-every", "2", "--eval-every", "2",
                                    "--run-dir", str(run)])
    assert line == (f"error: the run diverged at step 5: loss_pixel became NaN or inf, and it stopped without saving "
                    f"that step; its last checkpoint, {run}/checkpoints/step_0000004.pt, holds finite weights. Resumed "
                    f"as it is, it would repeat the same steps, so resume with a lower learning rate: --resume {run} "
                    "--lr 0.0005")
    assert files(run) == before and "checkpoints/step_0000004.pt" in before and "checkpoints/best.pt" in before
    assert_finite_checkpoints(run)
    assert records(run)[-1]["step"] == 4  # (valid JSON lines, up to the last good step)
    monkeypatch.undo()
    assert main(["--resume", str(run), "--lr", "5e-4", "--no-progress"])["step"] == 8
    assert_finite_checkpoints(run)


def test_a_huge_lr_stops_at_the_first_nan_and_a_resume_with_a_sane_one_trains_on(tmp_path, capsys):
    # a real divergence: Adam moves every weight by about --lr, so the step after the first update
    # at 1e30 overflows
    run = tmp_path / "run"
    main(TINY + ["--device", "cpu", "--steps", "6", "--ckpt-every", "2", "--eval-every", "2", "--stop-at", "2",
                 "--run-dir", str(run)])
    before = files(run)
    line = diverged(capsys, ["--resume", str(run), "--lr", "1e30", "--grad-clip", "0", "--no-progress"])
    assert re.fullmatch(rf"error: the run diverged at step 4: loss_pixel became NaN or inf, .* its last checkpoint, "
                        rf"{run}/checkpoints/step_0000002.pt, holds finite weights\. .*: --resume {run} --lr 5e\+29 "
                        r"\(or clip the gradient norm, which is off: --grad-clip 0\.05\)", line), line
    after = files(run)  # the resume rewrote config.json (--lr 1e30) and logged step 3, nothing else
    assert {k: v for k, v in after.items() if k not in ("config.json", "metrics.jsonl")} == \
           {k: v for k, v in before.items() if k not in ("config.json", "metrics.jsonl")}
    assert [r["step"] for r in records(run)][-1] == 3
    assert_finite_checkpoints(run)
    assert main(["--resume", str(run), "--lr", "1e-3", "--grad-clip", "0.05", "--no-progress"])["step"] == 6
    assert_finite_checkpoints(run)


def test_a_cyclegan_run_diverging_stops_before_its_update(tmp_path, capsys):
    run = tmp_path / "run"
    main(KERNEL_GAN + ["--device", "cpu", "--steps", "4", "--ckpt-every", "2", "--eval-every", "100",
                       "--stop-at", "2", "--run-dir", str(run)])
    before = files(run)
    line = diverged(capsys, ["--resume", str(run), "--lr", "1e30", "--no-progress"])
    assert re.fullmatch(rf"error: the run diverged at step 4: loss_\w+( and loss_\w+)* became NaN or inf, .* its last "
                        rf"checkpoint, {run}/checkpoints/step_0000002.pt, holds finite weights\. .*: --resume {run} "
                        r"--lr 5e\+29", line), line
    assert files(run)["checkpoints/step_0000002.pt"] == before["checkpoints/step_0000002.pt"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    assert main(["--resume", str(run), "--lr", "2e-4", "--no-progress"])["step"] == 4
    assert_finite_checkpoints(run)


def test_a_nan_discriminator_loss_stops_the_run_too(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    change_call(monkeypatch, "CycleDiscriminators.forward", 2)
    line = diverged(capsys, GAN + ["--device", "cpu", "--steps", "3", "--ckpt-every", "1", "--eval-every", "100",
                                   "--run-dir", str(run)])
    assert line.startswith(f"error: the run diverged at step 2: loss_D became NaN or inf, and it stopped without "
                           f"saving that step; its last checkpoint, {run}/checkpoints/step_0000001.pt, holds finite")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000001.pt"]
    assert_finite_checkpoints(run)


def test_weights_gone_nan_with_finite_losses_are_not_saved(tmp_path, capsys, monkeypatch):
    # an overflowing gradient (here: NaN, from the square root's slope at 0) ruins the weights while
    # the loss stays finite; the checkpoint of that step is not written
    change_call(monkeypatch, "pixel_loss", 4,
                lambda loss, kind, out, sharp: loss + 0 * (out - out.detach()).abs().sqrt().sum())
    run = tmp_path / "run"
    line = diverged(capsys, TINY + ["--device", "cpu", "--steps", "6", "--ckpt-every", "2", "--eval-every", "100",
                                    "--run-dir", str(run)])
    assert line.startswith(f"error: the run diverged at step 4: the weights or Adam's moments became NaN or inf, and "
                           f"it stopped without saving that step; its last checkpoint, {run}/checkpoints/step_0000002")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    assert_finite_checkpoints(run)


def test_a_run_that_diverges_before_its_first_checkpoint_says_so(tmp_path, capsys, monkeypatch):
    change_call(monkeypatch, "pixel_loss", 2)
    run = tmp_path / "run"
    line = diverged(capsys, TINY + ["--device", "cpu", "--steps", "4", "--eval-every", "100", "--run-dir", str(run)])
    assert "it wrote no checkpoint before it, so --resume starts it again at step 0. " in line
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    monkeypatch.undo()
    assert main(["--resume", str(run), "--lr", "5e-4", "--no-progress"])["step"] == 4


def test_resume_refuses_a_checkpoint_of_nan_weights_and_names_the_one_before(tmp_path, refused):
    # as the trainer saved them when it went on after diverging: resumed, the run diverged at once
    run = tmp_path / "run"
    main(TINY + ["--device", "cpu", "--steps", "4", "--ckpt-every", "2", "--eval-every", "100", "--run-dir", str(run)])
    last = run / "checkpoints" / "step_0000004.pt"
    state = torch.load(last, weights_only=True)
    next(iter(state["models"]["G"].values())).fill_(float("nan"))
    torch.save(state, last)
    before = files(run)
    with refused(rf"^error: --resume {run}: {last}: holds weights that are NaN or inf \(saved after the run diverged\); "
                 r"move it aside to resume from step_0000002.pt$"):
        cli(["--resume", str(run), "--steps", "6", "--no-progress"])
    assert files(run) == before
    last.unlink()
    assert main(["--resume", str(run), "--steps", "6", "--no-progress"])["step"] == 6


def test_ddp_ranks_stop_together_when_one_diverges(tmp_path):
    # rank 1's loss alone is NaN: rank 0 must stop at the same step (alone, rank 1 left rank 0 waiting
    # in the all-reduce of its gradients), and say so once
    run = tmp_path / "run"
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text("import os, sys\n"
                      "from unpaired import train\n"
                      "real, calls = train.pixel_loss, []\n"
                      "def fake(*args):\n"
                      "    calls.append(1)\n"
                      "    nan = os.environ['RANK'] == '1' and len(calls) == 3\n"
                      "    return real(*args) * (float('nan') if nan else 1)\n"
                      "train.pixel_loss = fake\n"
                      "train.cli(sys.argv[1:])\n")
    root = Path(__file__).parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           *TINY, "--device", "cpu", "--steps", "5", "--ckpt-every", "2", "--eval-every", "100", "--run-dir", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)})
    assert proc.returncode != 0
    assert proc.stderr.count("error: the run diverged at step 3: loss_pixel became NaN or inf") == 1, proc.stderr
    assert f"{run}/checkpoints/step_0000002.pt, holds finite weights" in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    assert_finite_checkpoints(run)
    assert [r["step"] for r in records(run)] == [1, 2]
    assert json.loads((run / "config.json").read_text())["steps"] == 5
