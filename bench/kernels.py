"""Kernel generation throughput against peer libraries, end-to-end CLI time, and memory of a large run.

Run from the repository root:

    python bench/kernels.py                 # everything (about a minute on 2 cores)
    python bench/kernels.py --quick         # fewer kernels, no memory checks

All timings use one thread (torch.set_num_threads(1)) and report the best of --repeat round-robin rounds in
kernels/s, with the ratio ours/theirs against each peer measured in the same run. Ours is the whole
job: CameraShake sampling (6-DoF), projection through the camera, exposure-weighted sub-pixel
rasterisation with the default fit policy. Peers are optional: a missing one prints "not installed".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from blursynth import kernel as K  # noqa: E402
from blursynth.camera import Camera  # noqa: E402
from blursynth.trajectory import CameraShake  # noqa: E402
from timing import round_robin  # noqa: E402  (bench/timing.py)


def best_of(fns: dict, repeat: int) -> dict:
    """Best time in seconds of each ``fn`` over ``repeat`` round-robin rounds (after one warm-up each)."""
    return {name: min(t) for name, t in round_robin(fns, repeat).items()}


def ours(n: int, size: int):
    camera = Camera.from_35mm(50, 1200, 800)
    model = CameraShake()

    def run():
        for chunk in K.generate(model, n, camera, size, seed=0):  # the default chunk, as users get it
            pass
    return run


def deepinv_peer(n: int, size: int, batch: int):
    try:
        from deepinv.physics.generator import MotionBlurGenerator
    except ImportError:
        return None
    gen = MotionBlurGenerator((size, size), device="cpu")

    def run():
        for a in range(0, n, batch):
            gen.step(batch_size=min(batch, n - a), seed=a)
    return run


def kornia_peer(n: int, size: int, batch: int):
    try:
        from kornia.filters import get_motion_kernel2d
    except ImportError:
        return None
    k = size if size % 2 else size + 1  # kornia needs odd sizes
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(n, generator=g) * 360
    direction = torch.rand(n, generator=g) * 2 - 1

    def run():
        for a in range(0, n, batch):
            get_motion_kernel2d(k, angle[a:a + batch], direction[a:a + batch])
    return run


def albumentations_peer(n: int, size: int, batch: int):  # (one kernel per call: batch is not used)
    try:
        import albumentations as A
    except ImportError:
        return None
    k = size if size % 2 else size + 1
    transform = A.MotionBlur(blur_limit=(k, k), p=1.0)
    transform.set_random_seed(0)

    def run():
        for _ in range(n):
            transform.get_params()
    return run


# Each batched peer runs at every batch size here and is credited with its fastest: kornia's
# throughput depends on it by 3x (at 31x31 here 37,000 kernels/s in one batch of 2,000, then printed
# as 4096; 118,000 in batches of 64-256, where its output stays in the cache).
PEER_BATCHES = {"deepinv MotionBlurGenerator (batched)": (deepinv_peer, (64, 256, 1000)),
                "kornia get_motion_kernel2d (batched)": (kornia_peer, (64, 256, 1024, 4096)),
                "albumentations MotionBlur.get_params": (albumentations_peer, (1,))}


def throughput(n: int, repeat: int) -> None:
    print(f"== kernels/s, one thread, best of {repeat} round-robin rounds (ours: n = {n}, default chunk; "
          f"peers: n / 10 rounded up to whole batches, at their fastest batch size of those listed)")
    count = max(500, n // 10)
    # Whole batches only: with n / 10 kernels (2,000 at the default n) "batch 4096" ran one batch of
    # 2,000 and was printed as batches of 4096, and a last partial batch is not the batch size named.
    counts = {batch: -(-count // batch) * batch for _, batches in PEER_BATCHES.values() for batch in batches}
    for size in (31, 64):
        fns = {"ours": ours(n, size)}
        for name, (make, batches) in PEER_BATCHES.items():
            for batch in batches:
                fn = make(counts[batch], size, batch)
                if fn is None:
                    print(f"{size}x{size}  {name}: not installed")
                    break
                fns[name, batch] = fn
        best = best_of(fns, repeat)
        mine = n / best["ours"]
        print(f"{size}x{size}  ours (CameraShake 6-DoF + projection + sub-pixel splat, chunk "
              f"{K.default_chunk(size)}): {mine:10,.0f} kernels/s")
        for name, (_, batches) in PEER_BATCHES.items():
            rate = {batch: counts[batch] / best[name, batch] for batch in batches if (name, batch) in best}
            if rate:
                batch = max(rate, key=rate.get)
                theirs = rate[batch]
                label = f"{name}, batch {batch}" if len(batches) > 1 else name
                print(f"{size}x{size}  {label}: {theirs:10,.0f} kernels/s   ratio ours/theirs {mine / theirs:6.2f}x")


def random_walk(n: int, repeat: int) -> None:
    """Boracchi & Foi walks (2000 steps, 64x64 canvas as in their paper); their Python port does ~6.6/s here."""
    from blursynth.trajectory import RandomWalk2D
    model = RandomWalk2D()

    def run():
        for chunk in K.generate(model, n, None, 65, seed=0):
            pass
    best = best_of({"rw": run}, repeat)["rw"]
    print(f"== RandomWalk2D (Boracchi & Foi, 2000 steps, 65x65): {n / best:,.0f} kernels/s, one thread, "
          f"best of {repeat} (n = {n})")


def end_to_end(trajectories: int, repeat: int) -> None:
    print(f"== whole process: python -m blursynth generate --trajectories {trajectories} (best of {repeat})")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # (cwd=ROOT: python -m finds this checkout first)

    def once(cmd):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    floor = total = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):  # alternate, so both see the same load
            floor = min(floor, once([sys.executable, "-c", "import torch"]))
            total = min(total, once([sys.executable, "-m", "blursynth", "generate", "--trajectories",
                                     str(trajectories), "--out", str(Path(tmp) / "k"), "--overwrite", "--quiet"]))
    print(f"generate --trajectories {trajectories}: {total:.2f} s start to files on disk "
          f"('import torch' alone, best of the same rounds: {floor:.2f} s)")


_MEMORY_CHILD = """
import sys, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from blursynth import kernel as K
from blursynth.camera import Camera
from blursynth.trajectory import CameraShake

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MB

n, size, keep = {n}, {size}, {keep}
cam, model = Camera.from_35mm(50, 1200, 800), CameraShake()
list(K.generate(model, 100, cam, size))  # warm-up: allocator and lazy imports
out = np.ones((n, size, size), np.float32) if keep else None  # touched: resident from here on
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS watermark (VmHWM) to the current RSS
base = status("VmRSS")
for chunk in K.generate(model, n, cam, size):
    if keep:
        out[chunk.start:chunk.start + len(chunk.kernels)] = chunk.kernels.numpy()
print(base, status("VmHWM"))
"""


def memory(n: int, size: int) -> None:
    print(f"== memory: {n:,} kernels of {size}x{size} through blursynth.kernel.generate "
          f"(default chunk: {K.default_chunk(size)})")
    out_mb = n * size * size * 4 / 2**20
    for keep in (False, True):
        code = _MEMORY_CHILD.format(root=str(ROOT), n=n, size=size, keep=keep)
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        seconds = time.perf_counter() - start
        base, peak = (float(v) for v in res.stdout.split())
        what = f"kept in a preallocated {out_mb:,.0f} MB array" if keep else "streamed (each chunk dropped)"
        print(f"{what}: peak RSS {peak - base:,.0f} MB above the RSS before the run "
              f"(includes the {K.default_chunk(size) * size * size * 4 / 2**20:.0f} MB kernels of one chunk), {seconds:.1f} s")


def cli_memory(counts: list[int]) -> None:
    """Peak RSS of whole ``blursynth generate`` processes as --trajectories grows: the command writes
    kernels.npz chunk by chunk (blursynth.io.NpzWriter), so it should stay flat."""
    print("== memory: python -m blursynth generate, peak RSS of the whole process (31x31, default chunk 4096)")
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # (cwd=ROOT: python -m finds this checkout first)
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            cmd = [sys.executable, "-m", "blursynth", "generate", "--trajectories", str(n), "--out",
                   str(Path(tmp) / "k"), "--overwrite", "--quiet"]
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True,
                                 env=env, cwd=ROOT)
            size = (Path(tmp) / "k" / "kernels.npz").stat().st_size / 2**20
            print(f"--trajectories {n:>9,}: peak RSS {float(res.stdout):,.0f} MB, kernels.npz {size:,.0f} MB, "
                  f"{time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, skip the memory checks")
    parser.add_argument("-n", type=int, default=None, help="kernels per timing run (default 20000, quick 4000)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-n", type=int, default=100_000, help="kernels in the memory check (default 100000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.n or (4000 if args.quick else 20000)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    throughput(n, args.repeat)
    random_walk(max(500, n // 10), min(args.repeat, 3))
    end_to_end(10000, 1 if args.quick else args.repeat)
    if not args.quick:
        memory(args.memory_n, 64)
        cli_memory([args.memory_n // 10, args.memory_n, 4 * args.memory_n])


if __name__ == "__main__":
    main()
