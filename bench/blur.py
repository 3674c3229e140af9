"""Benchmarks of image formation, each section printing our time and the ratio against peers
measured in the same run, on one CPU thread (set before numpy/torch load).

    python bench/blur.py                 # every section
    python bench/blur.py --section uniform --repeats 7

Sections are functions registered in ``SECTIONS``; each prints its own table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from blursynth.blur import blur  # noqa: E402


def timed_ms(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall time in ms of each ``fn()`` in ``fns``, timed round-robin (one call of each per
    round) so that load from other processes hits every candidate alike and ratios stay fair."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _test_kernel(size: int) -> torch.Tensor:
    """A deterministic motion-like kernel (a smeared diagonal stroke), summing to 1."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    along = (xx - c) * 0.8 + (yy - c) * 0.6
    across = -(xx - c) * 0.6 + (yy - c) * 0.8
    k = torch.exp(-(across ** 2) / 2.0) * (along.abs() < size * 0.45)
    return (k / k.sum()).float()


def uniform(repeats: int) -> None:
    """Uniform blur of a 1280x720 RGB image with one kernel, against scipy.signal.fftconvolve,
    kornia.filters.filter2d and deepinv.physics.BlurFFT (kernel passed at every call, as when every
    image of a dataset has its own kernel)."""
    import kornia
    import scipy.signal
    from deepinv.physics import BlurFFT

    x = torch.rand(1, 3, 720, 1280)
    xn = x[0].numpy()
    print(f"\n## uniform blur, 1280x720 RGB float32, 1 thread, median of {repeats} (ms per image)")
    print(f"{'kernel':>7} {'peer':<34} {'peer ms':>9} {'ours':<22} {'ours ms':>8} {'ours/peer':>9}")
    for size in (31, 64):
        k = _test_kernel(size)
        kn = k.numpy()[None]
        physics = BlurFFT(img_size=(3, 720, 1280), filter=k[None, None])
        # peer name -> (call, our boundary that computes the same kind of result)
        peers = {
            "scipy fftconvolve valid": (lambda: scipy.signal.fftconvolve(xn, kn, mode="valid", axes=(-2, -1)),
                                        "valid"),
            "scipy fftconvolve same (zero pad)": (
                lambda: scipy.signal.fftconvolve(xn, kn, mode="same", axes=(-2, -1)), "reflect"),
            "kornia filter2d reflect": (lambda: kornia.filters.filter2d(x, k[None], border_type="reflect"),
                                        "reflect"),
            "deepinv BlurFFT (circular)": (lambda: physics.A(x, filter=k[None, None]), "circular"),
        }
        fns = {name: fn for name, (fn, _) in peers.items()}
        fns.update({"blur " + b: (lambda b=b: blur(x, k, b)) for b in ("valid", "reflect", "circular")})
        with torch.inference_mode():
            ms = timed_ms(fns, repeats)
        best = min(ms[name] for name in peers)
        for name, (_, boundary) in peers.items():
            ours = ms["blur " + boundary]
            print(f"{size:>5}^2 {name:<34} {ms[name]:9.1f} {'blur ' + boundary:<22} {ours:8.1f} "
                  f"{ours / ms[name]:9.2f}")
        for boundary in ("valid", "reflect", "circular"):
            ours = ms["blur " + boundary]
            print(f"{size:>5}^2 {'fastest peer':<34} {best:9.1f} {'blur ' + boundary:<22} {ours:8.1f} "
                  f"{ours / best:9.2f}")


SECTIONS = {"uniform": uniform}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per figure (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.section or SECTIONS:
        SECTIONS[name](args.repeats)


if __name__ == "__main__":
    main()
