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
