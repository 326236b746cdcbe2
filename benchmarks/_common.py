"""Shared timing helpers for the benchmark scripts.

Every benchmark runs a fast path and a plain baseline in one process, checks that they agree,
and prints medians (the machine is shared and noisy), the speed-up, and achieved GFLOP/s next
to the machine's measured matmul throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int = 1024, *, dtype: torch.dtype = torch.float32, repeats: int = 7) -> float:
    """The machine's measured dense matmul throughput in GFLOP/s (median of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype)
    b = torch.randn(n, n, generator=g, dtype=dtype)
    seconds = median_time(lambda: a @ b, repeats=repeats)
    return 2 * n**3 / seconds / 1e9


def report(
    name: str,
    fast_s: float,
    base_s: float,
    *,
    flops: float | None = None,
    peak: float | None = None,
    target: float | None = None,
) -> float:
    """Print one benchmark line and return the speed-up ``base_s / fast_s``."""
    ratio = base_s / fast_s
    line = (
        f"{name}: fast {fast_s * 1e3:.2f} ms, baseline {base_s * 1e3:.2f} ms, speed-up {ratio:.1f}x"
    )
    if target is not None:
        line += f" (target >= {target:g}x: {'PASS' if ratio >= target else 'FAIL'})"
    if flops is not None:
        gflops = flops / fast_s / 1e9
        line += f", {gflops:.1f} GFLOP/s"
        if peak is not None:
            line += f" = {100 * gflops / peak:.0f}% of matmul {peak:.1f} GFLOP/s"
    print(line, flush=True)
    return ratio
