"""Round-robin timing shared by the benchmarks.

Each round calls every candidate once, so load changes on a shared machine hit all candidates alike
and the ratios measured in one run stay comparable even when the absolute times drift.
"""

from __future__ import annotations

import statistics
import time


def round_robin(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times in seconds of each ``fn()`` in ``fns`` over ``repeats`` rounds, after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def rates(fns: dict, images: int, repeats: int) -> dict[str, float]:
    """Median images/s of each ``fn()`` (which processes ``images`` images) over ``repeats`` rounds."""
    return {name: images / statistics.median(t) for name, t in round_robin(fns, repeats).items()}


def cpu_note() -> str:
    """One line naming the CPU and the code path torch's CPU FFT runs in MKL, on which every FFT figure
    depends: MKL checks the CPU's vendor and takes a generic path on non-Intel CPUs (2.4-2.8x slower
    transforms on an AMD EPYC) unless that check is overridden (README, "MKL on AMD CPUs")."""
    import ctypes
    import platform

    import torch

    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        pass
    cpu = f"{info.get('model name', platform.processor() or platform.machine())} ({info.get('vendor_id', '?')})"
    if not torch.backends.mkl.is_available():
        return f"CPU: {cpu}; torch's FFT: pocketfft"
    if info.get("vendor_id") == "GenuineIntel":
        return f"CPU: {cpu}; torch's FFT: MKL, Intel code path"
    try:  # found only when a preloaded library overrides MKL's check (torch's own copy is not global)
        overridden = ctypes.CDLL(None).mkl_serv_intel_cpu_true() == 1
    except (AttributeError, OSError, TypeError):  # (TypeError: no CDLL(None) on Windows)
        overridden = False
    if overridden:
        return f"CPU: {cpu}; torch's FFT: MKL, Intel code path (vendor check overridden by LD_PRELOAD)"
    return f"CPU: {cpu}; torch's FFT: MKL, generic code path for non-Intel CPUs (README: \"MKL on AMD CPUs\")"
