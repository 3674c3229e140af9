"""Benchmarks of image formation, each section printing our time and the ratio against peers
measured in the same run, on one CPU thread (set before numpy/torch load); the uniform section also
on every core, each library then given the same thread count.

    python bench/blur.py                 # every section
    python bench/blur.py --section uniform --repeats 7 --threads 1 2
    python bench/blur.py --section projective --section dataset --repeats 4
    python bench/blur.py --device cuda     # every section on a GPU (scipy, CPU-only, left out)

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

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from blursynth.blur import blur  # noqa: E402
from timing import cpu_note, round_robin  # noqa: E402  (bench/timing.py)


def timed_ms(fns: dict, repeats: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Median wall time in ms of each ``fn()`` in ``fns``, timed round-robin (on CUDA, to completion)."""
    if device.startswith("cuda"):
        fns = {name: (lambda fn=fn: (fn(), torch.cuda.synchronize(device))) for name, fn in fns.items()}
    return {name: statistics.median(t) * 1e3 for name, t in round_robin(fns, repeats, warmup).items()}


def _test_kernel(size: int) -> torch.Tensor:
    """A deterministic motion-like kernel (a smeared diagonal stroke), summing to 1."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    along = (xx - c) * 0.8 + (yy - c) * 0.6
    across = -(xx - c) * 0.6 + (yy - c) * 0.8
    k = torch.exp(-(across ** 2) / 2.0) * (along.abs() < size * 0.45)
    return (k / k.sum()).float()


def uniform(repeats: int, threads: list[int], device: str = "cpu") -> None:
    """Uniform blur of a 1280x720 RGB image with one kernel, against scipy.signal.fftconvolve,
    kornia.filters.filter2d and fft_conv, and deepinv.physics.functional.conv2d_fft (kernel passed at
    every call, as when every image of a dataset has its own kernel), and OpenCV's filter2D where it is
    installed, once per thread count: every library gets the same number of threads (torch's intra-op
    threads, scipy.fft.set_workers for scipy, cv2.setNumThreads for OpenCV). On CUDA the thread counts
    do not apply and scipy and OpenCV (CPU only) are left out."""
    import kornia
    import numpy as np
    import scipy.fft
    import scipy.signal
    from deepinv.physics.functional import conv2d_fft

    try:  # optional: not a dependency of the package
        import cv2
    except ImportError:
        cv2 = None
        print("(OpenCV not installed, so cv2.filter2D, albumentations' blur, is left out: pip install -e \".[bench]\")")

    cuda = device.startswith("cuda")
    x = torch.rand(1, 3, 720, 1280).to(device)
    xn = x[0].cpu().numpy()
    xhwc = np.ascontiguousarray(xn.transpose(1, 2, 0))
    for n_threads in [1] if cuda else threads:
        torch.set_num_threads(n_threads)
        if cv2 is not None:
            cv2.setNumThreads(n_threads)
        where = device if cuda else f"{n_threads} thread(s) each"
        print(f"\n## uniform blur, 1280x720 RGB float32, {where}, median of {repeats} (ms per image)")
        print(f"{'kernel':>7} {'peer':<34} {'peer ms':>9} {'ours':<22} {'ours ms':>8} {'ours/peer':>9}")
        for size in (31, 64):
            k = _test_kernel(size).to(device)
            kn = k.cpu().numpy()[None]
            # peer name -> (call, our boundary that computes the same kind of result)
            peers = {
                "scipy fftconvolve valid": (
                    lambda: scipy.signal.fftconvolve(xn, kn, mode="valid", axes=(-2, -1)), "valid"),
                "scipy fftconvolve same (zero pad)": (
                    lambda: scipy.signal.fftconvolve(xn, kn, mode="same", axes=(-2, -1)), "reflect"),
                "kornia filter2d reflect": (
                    lambda: kornia.filters.filter2d(x, k[None], border_type="reflect"), "reflect"),
                # kornia's FFT path, which its docs give for large kernels (filter2d is a direct
                # convolution: 10-30x slower than this at these sizes); "conv": true convolution, as ours
                "kornia fft_conv valid": (
                    lambda: kornia.filters.fft_conv(x, k[None], padding="valid", behaviour="conv"), "valid"),
                "kornia fft_conv reflect": (
                    lambda: kornia.filters.fft_conv(x, k[None], border_type="reflect", behaviour="conv"), "reflect"),
                # deepinv's function for a kernel given at each call, in our three boundaries. (Its
                # BlurFFT.A(x, filter=k), timed here before, rebuilds the operator's SVD-style
                # parameters at every call, per-channel spectra, their phase and modulus, and took
                # 4x as long as conv2d_fft's circular mode for the same result.)
                "deepinv conv2d_fft valid": (lambda: conv2d_fft(x, k[None, None], padding="valid"), "valid"),
                "deepinv conv2d_fft reflect": (lambda: conv2d_fft(x, k[None, None], padding="reflect"), "reflect"),
                "deepinv conv2d_fft circular": (lambda: conv2d_fft(x, k[None, None], padding="circular"), "circular"),
            }
            if cv2 is not None and not cuda:
                # albumentations' blurs (MotionBlur ...) call this: OpenCV correlates, so the kernel is
                # flipped, with its anchor on our centre tap; BORDER_REFLECT_101 is torch's "reflect"
                flipped, anchor = kn[0, ::-1, ::-1].copy(), ((size - 1) // 2,) * 2
                peers["opencv filter2D reflect"] = (lambda: cv2.filter2D(
                    xhwc, -1, flipped, anchor=anchor, borderType=cv2.BORDER_REFLECT_101).transpose(2, 0, 1), "reflect")
            if cuda:
                peers = {name: peer for name, peer in peers.items() if not name.startswith("scipy")}
            if not hasattr(kornia.filters, "fft_conv"):  # (kornia releases before it)
                peers = {name: peer for name, peer in peers.items() if "fft_conv" not in name}
            # A peer that does our job must give our result, or its time is not comparable. (scipy's
            # "same" pads with zeros, not by reflection: not checked. kornia correlates, which is the
            # convolution for this point-symmetric kernel.)
            with torch.inference_mode():
                for name, (fn, boundary) in peers.items():
                    if "zero pad" not in name:
                        ours = blur(x, k, boundary)
                        diff = (torch.as_tensor(fn()).to(device).reshape(ours.shape) - ours).abs().max().item()
                        if diff > 1e-3:  # (TF32 convolutions on a GPU; a shifted or wrong-boundary result: > 1e-2)
                            raise AssertionError(f"{name} differs from blur {boundary} by {diff:.2e} ({size}^2)")
            fns = {name: fn for name, (fn, _) in peers.items()}
            fns.update({"blur " + b: (lambda b=b: blur(x, k, b)) for b in ("valid", "reflect", "circular")})
            with torch.inference_mode(), scipy.fft.set_workers(n_threads):
                ms = timed_ms(fns, repeats, device=device)
            best = min(ms[name] for name in peers)
            for name, (_, boundary) in peers.items():
                ours = ms["blur " + boundary]
                print(f"{size:>5}^2 {name:<34} {ms[name]:9.2f} {'blur ' + boundary:<22} {ours:8.2f} "
                      f"{ours / ms[name]:9.2f}")
            for boundary in ("valid", "reflect", "circular"):
                ours = ms["blur " + boundary]
                print(f"{size:>5}^2 {'fastest peer':<34} {best:9.2f} {'blur ' + boundary:<22} {ours:8.2f} "
                      f"{ours / best:9.2f}")
    torch.set_num_threads(1)


def projective(repeats: int, device: str = "cpu") -> None:
    """Projective (spatially varying) blur: blursynth.nonuniform.render_nonuniform (exact exposure
    integral of homography warps) against deepinv.physics.SpaceVaryingBlur (product-convolution with
    10 eigen-PSFs of 31x31 motion kernels, the fastest of its direct and FFT modes), same image sizes.
    Our cost grows with the motion (one warp per 0.5 px of the largest displacement in the frame), so
    it is measured over several CameraShake draws of the default recipe at 35 mm (the mean of their
    medians), timed round-robin with the peers."""
    from deepinv.physics.blur import SpaceVaryingBlur
    from deepinv.physics.generator import MotionBlurGenerator, ProductConvolutionBlurGenerator

    from blursynth.camera import Camera
    from blursynth.nonuniform import motion_samples, render_nonuniform
    from blursynth.recipe import load_recipe

    shakes = load_recipe("default").trajectory_sampler().sample(repeats, seed=0)
    where = device if device.startswith("cuda") else "1 thread"
    print(f"\n## projective blur, RGB float32, {where}, {repeats} camera shakes (images/s, higher is faster)")
    print(f"{'size':>9} {'peer':<40} {'peer img/s':>10} {'ours img/s':>10} {'warps':>6} {'speed ours/peer':>15}")
    for h, w in ((256, 256), (720, 1280)):
        x = torch.rand(1, 3, h, w).to(device)
        cam = Camera.from_35mm(35.0, w, h)
        torch.manual_seed(0)  # deepinv's generator draws from torch's global RNG (ours does not)
        params = ProductConvolutionBlurGenerator(psf_generator=MotionBlurGenerator((31, 31)), img_size=(h, w)).step(1)
        params = {key: v.to(device) if torch.is_tensor(v) else v for key, v in params.items()}
        peers = {f"deepinv SpaceVaryingBlur fft={fft}": SpaceVaryingBlur(**params, use_fft=fft, device=device)
                 for fft in (False, True)}
        with torch.inference_mode():
            warps = [motion_samples(shakes[i], cam)[0].t.shape[1] for i in range(len(shakes))]
            # The peers and every shake in the same round-robin rounds (they were timed in two
            # separate blocks, so a change of load on the shared machine hit one side only).
            fns = {name: (lambda p=p: p(x)) for name, p in peers.items()}
            fns.update({i: (lambda i=i: render_nonuniform(x, shakes[i], cam)) for i in range(len(shakes))})
            ms = timed_ms(fns, max(1, repeats // 2), device=device)
            peer_ms = {name: ms[name] for name in peers}
            ours_ms = {i: ms[i] for i in range(len(shakes))}
        ours = 1e3 / statistics.mean(ours_ms.values())
        name = min(peer_ms, key=peer_ms.get)
        peer = 1e3 / peer_ms[name]
        print(f"{w:>4}x{h:<4} {name:<40} {peer:10.2f} {ours:10.2f} {statistics.mean(warps):6.1f} "
              f"{peer_ms[name] / statistics.mean(ours_ms.values()):15.2f}")


def _dataset_child(out: str, pairs: int, workers: int, sharp: str | None, device: str = "cpu") -> None:
    """Run in a fresh process: write a dataset, print JSON with the time and the peak RSS (MiB)."""
    import json
    import resource

    from blursynth.dataset import write_dataset
    from blursynth.recipe import load_recipe

    load_recipe("default")  # import everything a run imports before the watermark is reset
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS watermark (VmHWM) to the current RSS
        fh.write("5")
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    write_dataset(out, pairs, "default", sharp=sharp, workers=workers, overwrite=True, device=device, progress=False)
    seconds = time.perf_counter() - t0
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage) - before.ru_utime - before.ru_stime  # imports excluded
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rss_main_mib": int(status["VmHWM"].split()[0]) / 1024,
                      "rss_worker_mib": usage[1].ru_maxrss / 1024}))


def _dataset_run(pairs: int, workers: int, sharp: str | None, device: str = "cpu") -> dict:
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import blur; "
                f"blur._dataset_child({tmp + '/set'!r}, {pairs}, {workers}, {sharp!r}, {device!r})")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def dataset(repeats: int, sharp: str | None = None, device: str = "cpu") -> None:
    """`blursynth dataset` throughput (default recipe: 256x256 pairs, dead-leaves scenes, camera shake,
    uniform blur in linear light, highlight boost, Poisson-Gaussian noise, sRGB curve, 8-bit PNG)
    with 1 and 2 worker processes, and peak memory as the number of pairs grows. Each run is a
    fresh process (imports excluded from the time, counted in the memory).

    A shared machine's speed drifts from minute to minute, so the section runs ``repeats`` rounds,
    alternating which worker count goes first, and reports the median and the range of the
    rounds' speed-ups. CPU seconds per pair (all processes) show what a second worker costs in
    itself: with no parallel overhead and two free cores they would be equal."""
    from blursynth.dataset import CHUNK

    # 24 chunks (the unit of work) per run, shared equally by two workers, so that the steady state
    # a real dataset runs in outweighs each process's start (its first chunk is 10-40% slower).
    pairs = 24 * CHUNK
    print(f"\n## blursynth dataset, default recipe, 256x256, {pairs} pairs per run, pixels on {device} "
          "(pairs/s, higher is faster)")
    print(f"{'round':>6} {'1 worker':>9} {'2 workers':>9} {'speed-up':>8} {'CPU s/pair 1 / 2':>17}")
    rounds = []
    for r in range(max(1, repeats)):
        runs = {n: _dataset_run(pairs, n, sharp, device) for n in ((1, 2) if r % 2 == 0 else (2, 1))}
        one, two = runs[1], runs[2]
        rounds.append((pairs / one["seconds"], pairs / two["seconds"], one["seconds"] / two["seconds"]))
        print(f"{r + 1:>6} {rounds[-1][0]:9.2f} {rounds[-1][1]:9.2f} {rounds[-1][2]:8.2f} "
              f"{one['cpu_seconds'] / pairs:11.3f} / {two['cpu_seconds'] / pairs:.3f}")
    speedups = sorted(s for _, _, s in rounds)
    print(f"{'median':>6} {statistics.median(r[0] for r in rounds):9.2f} {statistics.median(r[1] for r in rounds):9.2f} "
          f"{statistics.median(speedups):8.2f}   (speed-up range {speedups[0]:.2f}-{speedups[-1]:.2f})")
    # Peak resident memory: the main process (after imports; it only schedules chunks) and the
    # largest worker (imports included: a forked worker shares the parent's pages).
    print(f"\n{'pairs':>7} {'peak RSS main MiB':>18} {'peak RSS worker MiB':>20}  (workers=2)")
    for n in (3 * CHUNK, 24 * CHUNK, 96 * CHUNK):
        r = _dataset_run(n, 2, sharp, device)
        print(f"{n:>7} {r['rss_main_mib']:18.0f} {r['rss_worker_mib']:20.0f}")


SECTIONS = {"uniform": lambda args: uniform(args.repeats, args.threads, args.device),
            "projective": lambda args: projective(args.repeats, args.device),
            "dataset": lambda args: dataset(args.repeats, device=args.device)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per figure (median)")
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                        help="thread counts of the uniform section, each given to every library "
                             "(default: 1 and every core)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where every library computes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(cpu_note())
    for name in args.section or SECTIONS:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
