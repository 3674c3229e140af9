"""Throughput of the dead-leaves generator against the common Python implementation, same run.

    OMP_NUM_THREADS=1 python bench/scenes.py [--size 256] [--images 16] [--repeats 5]
    OMP_NUM_THREADS=1 python bench/scenes.py --memory 1024 2048 4096 8192   # peak memory of one image

Ours: ``blursynth.scenes.dead_leaves`` (textured, anti-aliased leaves; batch 1 and batch 16).
Peer: the usual NumPy dead-leaves painter: leaves drawn back to front, each painted through its
bounding-box slice with a boolean disc mask; flat colours, no anti-aliasing, no texture, so it does
less work per leaf than ours. Both paint the same number of leaves with the same radius law.
Everything runs on one thread (the target is >= 20 images/s at 256x256 on one core).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from blursynth.scenes import DeadLeaves, dead_leaves
from timing import rates  # bench/timing.py


def peer_dead_leaves(size: int, leaves: int, alpha: float, rmin: float, rmax: float, margin: float,
                     gen: np.random.Generator) -> np.ndarray:
    """Back-to-front painter, one Python iteration per leaf (the reference approach)."""
    img = np.zeros((size, size, 3), np.float32)
    e = 1.0 - alpha
    r_all = (rmin ** e + gen.random(leaves) * (rmax ** e - rmin ** e)) ** (1.0 / e)
    c_all = gen.uniform(-margin, size - 1 + margin, (leaves, 2))
    colours = gen.random((leaves, 3)).astype(np.float32)
    for k in range(leaves - 1, -1, -1):  # back to front
        r, (cx, cy) = r_all[k], c_all[k]
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img[y0:y1, x0:x1][mask] = colours[k]
    return img


def _peak_child(size: int) -> None:
    """Render one ``size`` x ``size`` image; print the seconds and the peak resident memory it added (MiB)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    dead_leaves(1, size, seed=1)
    seconds = time.perf_counter() - start
    print(seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)


def memory(sizes: list[int]) -> None:
    """Peak memory of one image per size, each in a fresh process (the peak is a high-water mark)."""
    print("dead leaves, one image per process, default options, 1 thread: peak memory above the imports")
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--peak-child", str(size)], check=True,
                             capture_output=True, text=True).stdout.split()
        seconds, mib = float(out[0]), float(out[1])
        print(f"  {size:>5} x {size:<5}: {seconds:6.2f} s, {mib:7.0f} MiB, {mib * 2**20 / size**2:5.0f} bytes per pixel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory", type=int, nargs="+", metavar="SIZE",
                    help="instead: peak memory of rendering one image of each size")
    ap.add_argument("--peak-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.peak_child:
        return _peak_child(args.peak_child)
    if args.memory:
        return memory(args.memory)
    opt = DeadLeaves()
    s, n = args.size, args.images
    m = opt.leaves(s, s)
    print(f"dead leaves {s}x{s}, {m} leaves per image, {n} images per round, median of {args.repeats} "
          "round-robin rounds, 1 thread")

    def ours(batch):
        return lambda: [dead_leaves(batch, s, seed=1, start=i) for i in range(0, n, batch)]

    gen = np.random.default_rng(1)
    r = rates({
        "peer": lambda: [peer_dead_leaves(s, m, opt.alpha, opt.rmin, opt._rmax(s, s), opt._margin(s, s), gen)
                         for _ in range(n)],
        "ours1": ours(1),
        "ours16": ours(min(16, n)),
    }, n, args.repeats)
    print(f"  peer (NumPy bounding-box painter, flat) : {r['peer']:7.1f} images/s")
    print(f"  ours batch 1                            : {r['ours1']:7.1f} images/s   ours/peer {r['ours1'] / r['peer']:5.2f}x")
    print(f"  ours batch {min(16, n):<2d}                           : {r['ours16']:7.1f} images/s   "
          f"ours/peer {r['ours16'] / r['peer']:5.2f}x")


if __name__ == "__main__":
    main()
