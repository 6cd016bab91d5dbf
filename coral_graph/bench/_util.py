"""Small helpers of the benchmark."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``samples`` (nearest rank)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[k]


def rss_kib() -> float:
    """Resident memory of this process in KiB, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def _pick_clock(name: str) -> Callable[[], float]:
    return time.process_time if name == "cpu" else time.perf_counter


now: Callable[[], float] = _pick_clock(os.environ.get("CORAL_BENCH_CLOCK", "wall"))
"""The benchmark's clock: wall time (``perf_counter``), or with ``--clock cpu`` this
process's CPU time, steadier on a shared, loaded machine (every workload here runs on
one thread, so its CPU time is the time it would take on an idle core)."""


def set_clock(name: str) -> None:
    """Use the ``wall`` or ``cpu`` clock from now on (also in idle subprocesses)."""
    global now
    os.environ["CORAL_BENCH_CLOCK"] = name
    now = _pick_clock(name)
