"""Training benchmarks: iteration speed, and what short trainings reach on held-out synthetic pairs.

    python bench/train.py speed                 # s/iteration of CycleGAN: reference 256 px and CPU-sized 128 px
    python bench/train.py speed --device cuda   # the same on a GPU (both loops in bfloat16 autocast, channels-last)
    python bench/train.py paired   [--steps N]  # paired training on the embedded defaults, PSNR gain (goal +2 dB, <= 15 min)
    python bench/train.py cyclegan [--steps N]  # CycleGAN on unpaired synthetic domains, PSNR gain (goal +0.5 dB, <= 30 min)
    python bench/train.py cyclegan --blur-model network --steps 1800 --generator resnet   # the reference F
    python bench/train.py reblur   [--steps N] [--levin DATA] [--blurry DIR --photo-curve C ...]
                                                # kernel-prediction self-supervision; with --levin, every step
                                                # checkpoint and the blurry input scored on Levin et al. 2009

``speed`` times ``python -m unpaired.train --mode cyclegan`` (data, forward, backward, both optimisers,
image pools, logging) against a bare PyTorch loop of the same networks and losses on random tensors
measured in the same run; the ratio ours/bare is the trainer's overhead. Run folders go to
``--out`` (default ``runs/bench``). Options the script does not know go to ``unpaired.train`` (they
override its settings).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unpaired.config import parse_args, pick_device  # noqa: E402
from unpaired.data import validation_pairs  # noqa: E402
from unpaired.deblur import load_generator  # noqa: E402
from unpaired.evaluate import main as evaluate  # noqa: E402
from unpaired.losses import ImagePool, lsgan_loss  # noqa: E402
from unpaired.models import PatchDiscriminator, ResnetGenerator, init_weights  # noqa: E402
from unpaired.train import main as train  # noqa: E402

# paired: steps of the default network that fit the 15-minute budget on the idle 2-core CPU, pair pool included
PAIRED_STEPS = 8000
# cyclegan: steps of its setting below (5-10 min on the idle 2-core CPU: +0.38 dB at 240 steps,
# +0.56 at 720, +0.66 at 1200)
CYCLEGAN_STEPS = 1200
# reblur: the paired defaults' length (3.5 min on one thread without photos, 6.2 with Levin's 32)
REBLUR_STEPS = 2000
SETTINGS = {"reference 256px ngf64 9 blocks": (256, 64, 9), "cpu 128px ngf32 6 blocks": (128, 32, 6)}


def bare_cyclegan_seconds(size: int, ngf: int, n_blocks: int, iters: int, device: torch.device,
                          warmup: int = 1) -> float:
    """Seconds per CycleGAN iteration of a plain loop (the networks and losses only, random inputs);
    on CUDA in bfloat16 autocast and channels-last, as the trainer's ``--amp auto`` runs there."""
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    nets = [init_weights(ResnetGenerator(ngf, n_blocks), 0), init_weights(ResnetGenerator(ngf, n_blocks), 1),
            init_weights(PatchDiscriminator(64, 3), 2), init_weights(PatchDiscriminator(64, 3), 3)]
    g, f, da, db = [net.to(device, memory_format=fmt) for net in nets]
    opt_g = torch.optim.Adam([*g.parameters(), *f.parameters()], 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*da.parameters(), *db.parameters()], 2e-4, betas=(0.5, 0.999))
    pool_a, pool_b = ImagePool(50, 0, 0), ImagePool(50, 0, 1)
    l1 = torch.nn.functional.l1_loss
    times = []
    for it in range(warmup + iters):
        a, b = [torch.rand(1, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(2)]
        t = time.perf_counter()
        for p in [*da.parameters(), *db.parameters()]:
            p.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            fb, fa = g(a), f(b)
            loss = (lsgan_loss(db(fb), True) + lsgan_loss(da(fa), True) + 10 * (l1(f(fb), a) + l1(g(fa), b))
                    + 5 * (l1(g(b), b) + l1(f(a), a)))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        for p in [*da.parameters(), *db.parameters()]:
            p.requires_grad_(True)
        fb, fa = pool_b.query(fb), pool_a.query(fa)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss_d = 0.5 * (lsgan_loss(db(b), True) + lsgan_loss(db(fb), False)
                            + lsgan_loss(da(a), True) + lsgan_loss(da(fa), False))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        if cuda:
            torch.cuda.synchronize(device)
        if it >= warmup:
            times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def ours_cyclegan_seconds(size: int, ngf: int, n_blocks: int, iters: int, out: Path, device: torch.device,
                          warmup: int = 1) -> float:
    """Seconds per iteration of ``unpaired.train --mode cyclegan`` from its metrics.jsonl timestamps."""
    run = out / f"speed_{size}_{ngf}_{n_blocks}"
    train(["--mode", "cyclegan", "--generator", "resnet", "--ngf", str(ngf), "--n-blocks", str(n_blocks),
           "--crop", str(size), "--pair-pool-size", str(size), "--batch", "1", "--steps", str(warmup + iters),
           "--log-every", "1", "--eval-every", "1000000", "--ckpt-every", "1000000", "--val-size", "0",
           "--no-progress", "--device", str(device), "--run-dir", str(run), "--overwrite"])
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    secs = [r["seconds"] for r in recs if "loss_D" in r]
    return (secs[-1] - secs[warmup - 1]) / iters


def speed(args) -> None:
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    for name, (size, ngf, blocks) in SETTINGS.items():
        # alternate the two a few times and keep each one's best: a shared machine's load comes and goes
        ours, bare = float("inf"), float("inf")
        for _ in range(args.repeats):
            ours = min(ours, ours_cyclegan_seconds(size, ngf, blocks, args.iters, Path(args.out), device))
            bare = min(bare, bare_cyclegan_seconds(size, ngf, blocks, args.iters, device))
        print(f"CycleGAN {name}, batch 1, forward+backward+update: ours {ours:.3f} s/it, "
              f"bare PyTorch loop {bare:.3f} s/it, ratio ours/bare {ours / bare:.2f} "
              f"(best of {args.repeats} x {args.iters} iterations)")


def checkerboard_peak(x: torch.Tensor) -> float:
    """Mean ratio of the power at each frequency of period 2 or 4 along either axis (where the
    generator's stride-2 layers would put a checkerboard) to the mean power of its 8 neighbouring
    frequencies, over a batch ``(B, C, H, W)`` with sides multiples of 4: about 1 without a periodic
    pattern, whatever the image's sharpness or noise (both spread over all high frequencies)."""
    spec = torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)).abs().square().sum(1)  # (B, H, W)
    h, w = spec.shape[-2:]
    ratios = []
    for r in range(0, h, h // 4):
        for c in range(0, w, w // 4):
            if r or c:  # not the (zero) mean
                around = [spec[:, (r + i) % h, (c + j) % w] for i in (-1, 0, 1) for j in (-1, 0, 1) if i or j]
                ratios.append(spec[:, r, c] / torch.stack(around).mean(0))
    return torch.stack(ratios).mean().item()


@torch.no_grad()
def artefacts(run: Path, argv: list[str]) -> str:
    """Colour shift and checkerboard of the run's final generator on its held-out pairs, against the
    blurry input and the sharp target: the sample grids' visual check, in numbers."""
    cfg = parse_args(argv)
    g, _ = load_generator(sorted((run / "checkpoints").glob("step_*.pt"))[-1])
    val, _ = validation_pairs(cfg)
    blur = torch.stack([v["blur"] for v in val])
    sharp = torch.stack([v["sharp"] for v in val])
    out = g(blur).clamp(0, 1)
    shift = lambda x: (x.mean((-2, -1)) - sharp.mean((-2, -1))).abs().mean().item() * 255  # noqa: E731
    return (f"colour shift (|mean per channel - target's|, 8-bit levels): blurry {shift(blur):.2f}, output "
            f"{shift(out):.2f}; checkerboard (power at period-2/4 frequencies over their neighbours', 1 = "
            f"none): sharp {checkerboard_peak(sharp):.2f}, blurry {checkerboard_peak(blur):.2f}, output "
            f"{checkerboard_peak(out):.2f}")


def quality(args, mode: str) -> None:
    run = Path(args.out) / mode
    common = ["--steps", str(args.steps), "--val-size", str(args.val_size), "--run-dir", str(run), "--overwrite",
              "--eval-every", str(max(1, args.steps // 5)), "--ckpt-every", str(max(1, args.steps // 5)),
              "--keep-last", "5"]  # (the five step checkpoints, which --levin scores)
    # cyclegan: batches of 8 small crops (at batch 1 a discriminator trained alone on these domains
    # stayed near chance, 55-60%, for 600 steps; at batch 8 it reached 91% in 300); the F that draws
    # camera shake of the default recipe, with that F's defaults of 41 px kernels, cycle weight 50 and
    # no identity loss (the reference network F leaves G the identity, then paints specks); the U-Net
    # (the ResNet generator's transposed convolutions left a faint checkerboard: 5x the power of the
    # neighbouring frequencies)
    extra = {"paired": [], "reblur": ["--mode", "reblur"],
             "cyclegan": ["--mode", "cyclegan", "--generator", "unet", "--ngf", "16", "--crop", "64", "--batch", "8",
                          "--blur-model", "shake"]}[mode]
    t = time.time()
    result = train(common + extra + args.rest)
    minutes = (time.time() - t) / 60
    gain = result["val_psnr"] - result["val_psnr_blurry"]
    goal = {"paired": (2.0, 15), "cyclegan": (0.5, 30)}.get(mode)  # (reblur: no goal set)
    verdict = "" if goal is None else (f"; goal +{goal[0]} dB in {goal[1]} min: "
                                       f"{'met' if gain >= goal[0] and minutes <= goal[1] else 'NOT met'}")
    print(f"{mode}: {args.steps} steps in {minutes:.1f} min; held-out PSNR {result['val_psnr_blurry']:.2f} dB "
          f"blurry -> {result['val_psnr']:.2f} dB ({gain:+.2f} dB{verdict}); SSIM {result['val_ssim_blurry']:.4f} -> "
          f"{result['val_ssim']:.4f}; samples in {run / 'samples'}")
    print(artefacts(run, common + extra + args.rest))
    if args.levin:
        levin_table(run, args.levin)


def levin_table(run: Path, data: str) -> None:
    """Levin et al. 2009's protocol (``unpaired.evaluate --benchmark levin``) for the blurry input and
    every step checkpoint of ``run``, with the photos' re-blur error logged at that step (``--mode
    reblur --blurry``) and which of ``best.pt`` (synthetic validation, which need not follow real
    photos) and ``best_reblur.pt`` (the photos' re-blur error) hold that step."""
    logged = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val_reblur" in record:
            logged[record["step"]] = record["val_reblur"]
    chosen = {}  # step -> the best*.pt files that hold it
    for name in ("best.pt", "best_reblur.pt"):
        if (run / "checkpoints" / name).is_file():
            step = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["step"]
            chosen.setdefault(step, []).append(name)
    print(f"Levin 2009 ({data}): PSNR dB / SSIM / the photos' re-blur error logged at that step")
    for name, method in [("blurry input", ["--method", "identity"])] + [
            (f"step {int(p.stem.split('_')[1])}", ["--checkpoint", str(p)])
            for p in sorted((run / "checkpoints").glob("step_*.pt"))]:
        with contextlib.redirect_stdout(io.StringIO()):  # (evaluate prints its own table)
            scores = evaluate(["--benchmark", "levin", "--data", data, "--quiet", *method])
        step = int(name.split()[1]) if name.startswith("step") else None
        print(f"  {name:>14}: {scores['psnr']:.2f} / {scores['ssim']:.3f}"
              + (f" / {logged[step]:.4f}" if step in logged else "")
              + (f"  ({', '.join(chosen[step])})" if step in chosen else ""))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "paired", "cyclegan", "reblur"))
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per setting (speed)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats per setting (speed)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps (paired: {PAIRED_STEPS}, cyclegan: {CYCLEGAN_STEPS}, reblur: {REBLUR_STEPS})")
    parser.add_argument("--levin", default=None, metavar="DATA",
                        help="after training, score every step checkpoint on Levin et al. 2009 (the folder with sharp/, "
                             "blurry/, kernels/)")
    parser.add_argument("--val-size", type=int, default=64, help="held-out pairs")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--device", default="auto", help="speed: auto (default: CUDA when present), cpu or cuda")
    args, rest = parser.parse_known_args()
    args.rest = rest  # any other option goes to unpaired.train
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    if args.what == "speed":
        speed(args)
    else:
        args.steps = args.steps or {"paired": PAIRED_STEPS, "cyclegan": CYCLEGAN_STEPS, "reblur": REBLUR_STEPS}[args.what]
        quality(args, args.what)


if __name__ == "__main__":
    cli()
