"""Throughput of the sensor pipeline, and of its noise step against DeepInverse's, same run.

    OMP_NUM_THREADS=1 python bench/sensor.py [--size 256] [--batch 16]

- noise: ``blursynth.sensor.add_noise`` (Gaussian approximation of Poisson-Gaussian noise, counter-based
  per-item noise fields computed in float64) against ``deepinv.physics.PoissonGaussianNoise``
  (true Poisson draws from a torch.Generator, float32) on the same batch.
- full: ``pre_blur`` + ``post_blur`` with every step on (sRGB/gamma/Brooks curves, highlight boost,
  noise, clip, Bayer mosaic + bilinear demosaic, 8-bit, JPEG 60-95), images/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from blursynth import sensor as S


def rate(fn, images: int, repeat: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return images * repeat / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, s = args.batch, args.size
    img = torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0))
    print(f"sensor pipeline on {b} RGB images of {s}x{s}, 1 thread")

    p = S.SensorModel().sample(b, seed=0)
    ours = rate(lambda: S.add_noise(img, p, 0, range(b)), b)
    try:
        import deepinv

        gain = p.shot_noise.view(-1)
        peer_op = deepinv.physics.PoissonGaussianNoise(gain=gain, sigma=p.read_noise.sqrt(), rng=torch.Generator())
        peer = rate(lambda: peer_op(img, seed=0), b)
        print(f"  noise, deepinv PoissonGaussianNoise : {peer:8.1f} images/s")
        print(f"  noise, ours add_noise               : {ours:8.1f} images/s   ours/peer {ours / peer:5.2f}x")
    except ImportError:
        print(f"  noise, ours add_noise               : {ours:8.1f} images/s   (deepinv not installed: no peer)")

    full = S.SensorModel(crf=S.CRFS, bayer=S.BAYER, jpeg_quality=(60, 95))
    q = full.sample(b, seed=0)
    r = rate(lambda: S.post_blur(S.pre_blur(img, q), q, 0, range(b)), b)
    print(f"  full pre_blur + post_blur, all on   : {r:8.1f} images/s")
    default = S.SensorModel().sample(b, seed=0)
    r = rate(lambda: S.post_blur(S.pre_blur(img, default), default, 0, range(b)), b)
    print(f"  default SensorModel()               : {r:8.1f} images/s")


if __name__ == "__main__":
    main()
