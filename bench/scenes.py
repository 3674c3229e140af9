"""Throughput of the dead-leaves generator against the common Python implementation, same run.

    OMP_NUM_THREADS=1 python bench/scenes.py [--size 256] [--images 16] [--repeats 5]

Ours: ``blursynth.scenes.dead_leaves`` (textured, anti-aliased leaves; batch 1 and batch 16).
Peer: the usual NumPy dead-leaves painter: leaves drawn back to front, each painted through its
bounding-box slice with a boolean disc mask; flat colours, no anti-aliasing, no texture, so it does
less work per leaf than ours. Both paint the same number of leaves with the same radius law.
Everything runs on one thread (the target is >= 20 images/s at 256x256 on one core).
"""

from __future__ import annotations

import argparse

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
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
