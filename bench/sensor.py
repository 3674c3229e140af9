"""Throughput of the sensor pipeline, and of its noise step against DeepInverse's, same run.

    OMP_NUM_THREADS=1 python bench/sensor.py [--size 256] [--batch 16] [--repeats 5]

- noise: ``blursynth.sensor.add_noise`` (Gaussian approximation of Poisson-Gaussian noise from
  counter-based per-item noise fields, float32 in and out) against
  ``deepinv.physics.PoissonGaussianNoise`` (true Poisson draws from a stateful torch.Generator) on
  the same batch.
- full: ``pre_blur`` + ``post_blur`` with every step on (sRGB/gamma/Brooks curves, highlight boost,
  noise, clip, Bayer mosaic + bilinear demosaic, 8-bit, JPEG 60-95), and with the defaults.

Figures are medians of round-robin rounds, images/s on one thread.
"""

from __future__ import annotations

import argparse

import torch

from blursynth import sensor as S
from timing import rates  # bench/timing.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, s = args.batch, args.size
    img = torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0))
    print(f"sensor pipeline on {b} RGB images of {s}x{s}, median of {args.repeats} rounds, 1 thread")

    p = S.SensorModel().sample(b, seed=0)
    full = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(60, 95)).sample(b, seed=0)
    fns = {
        "ours_noise": lambda: S.add_noise(img, p, 0, range(b)),
        "full": lambda: S.post_blur(S.pre_blur(img, full), full, 0, range(b)),
        "default": lambda: S.post_blur(S.pre_blur(img, p), p, 0, range(b)),
    }
    try:
        import deepinv

        peer_op = deepinv.physics.PoissonGaussianNoise(gain=p.shot_noise, sigma=p.read_noise.sqrt(),
                                                       rng=torch.Generator())
        fns["peer_noise"] = lambda: peer_op(img, seed=0)
    except ImportError:
        pass
    r = rates(fns, b, args.repeats)
    if "peer_noise" in r:
        print(f"  noise, deepinv PoissonGaussianNoise : {r['peer_noise']:8.1f} images/s")
        print(f"  noise, ours add_noise               : {r['ours_noise']:8.1f} images/s   "
              f"ours/peer {r['ours_noise'] / r['peer_noise']:5.2f}x")
    else:
        print(f"  noise, ours add_noise               : {r['ours_noise']:8.1f} images/s   (deepinv missing: no peer)")
    print(f"  pre_blur + post_blur, every step on : {r['full']:8.1f} images/s")
    print(f"  pre_blur + post_blur, defaults      : {r['default']:8.1f} images/s")


if __name__ == "__main__":
    main()
