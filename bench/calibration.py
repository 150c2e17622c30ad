"""A fixed pure-Python loop timed in the same run, so CPU per message compares across machines.

`cpu_figure` prints a bench's CPU µs per message and that divided by the loop's CPU µs: a
machine twice as fast halves both, the quotient stays.
"""

from __future__ import annotations

import resource
import statistics

LOOP = 100_000
"""Iterations of the calibration loop (a few ms of CPU on the development machine)."""


def process_cpu() -> float:
    """CPU seconds of this process, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loop() -> int:
    total = 0
    table = {}
    for i in range(LOOP):
        key = i & 1023
        table[key] = table.get(key, 0) + (i * 7) % 13
        total += len(str(i))
    return total + len(table)


def calibration_us(runs: int = 7) -> float:
    """Median CPU µs of one calibration loop."""
    times = []
    for _ in range(runs):
        t0 = process_cpu()
        _loop()
        times.append(process_cpu() - t0)
    return statistics.median(times) * 1e6


def cpu_figure(cpu_us_per_message: float, calibration: float, per: str = "msg") -> str:
    """`N µs CPU/msg (Q calibration loops)`: Q = N / the loop's CPU µs, comparable between machines."""
    return (f"{cpu_us_per_message:,.1f} us CPU/{per} = {cpu_us_per_message / calibration:.4f} x the calibration loop"
            f" ({LOOP:,} iterations: {calibration:,.0f} us CPU)")
