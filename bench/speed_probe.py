"""How fast the machine is right now: a fixed single-core workload timed in the bench's own
process around each run.

On a shared VM the same code's figures moved up to 2x within an hour (four sessions at once: p50
2.4 s, then 4.4 s twenty minutes later, the server's CPU per turn up from 3.4 to 4.3 s with
nothing else running): the host gave fewer cycles. A ratio between two runs (four sessions
against one) holds only if the machine ran at the same speed for both; the probe says whether
it did.
"""

from __future__ import annotations

import statistics
import time

DRIFT = 0.10
"""Probes further apart than this (relative) mean the machine's speed changed between them."""


def cpu_probe_ms(rounds: int = 7, n: int = 200_000) -> float:
    """Median time of ``rounds`` runs of a fixed pure-Python loop (~10-20 ms each here)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            total += i * i
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def drifted(a: list[float], b: list[float]) -> bool:
    """Whether any probe of ``a`` and any of ``b`` differ by more than DRIFT."""
    values = [*a, *b]
    return bool(values) and max(values) > min(values) * (1 + DRIFT)
