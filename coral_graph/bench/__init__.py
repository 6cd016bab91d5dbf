"""Routing benchmarks: the four workloads of BENCH.md, each beside the
``asyncio.Queue`` floor measured in the same run.

Run ``python -m coral_graph.bench`` or ``coral-graph bench``. Figures are medians of
``--repeat`` runs; the two implementations alternate within each repeat so machine
noise hits both alike. ``--json`` prints one line per (workload, impl) with the
figures named as in BENCH.md. ``--clock cpu`` times with the process's CPU time,
steadier than the wall clock on a shared, loaded machine.

:func:`workload` runs one workload once (on coral-graph or on the floor);
:func:`ring_graph` and :func:`fanout_graph` build the workloads' graphs (also handy
as test fixtures); :func:`main` is the command line.
"""

from __future__ import annotations

from coral_graph.bench._coral import fanout_graph, ring_graph
from coral_graph.bench._main import BenchConfig, main, run_bench, workload
from coral_graph.bench._util import percentile

__all__ = [
    "BenchConfig",
    "fanout_graph",
    "main",
    "percentile",
    "ring_graph",
    "run_bench",
    "workload",
]
