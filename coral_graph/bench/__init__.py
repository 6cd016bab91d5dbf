"""Routing benchmarks: the four workloads of BENCH.md, each beside the
``asyncio.Queue`` floor measured in the same run.

Run ``python -m coral_graph.bench`` or ``coral-graph bench``. Figures are medians of
``--repeat`` runs; the two implementations alternate within each repeat so machine
noise hits both alike. ``--json`` prints one line per (workload, impl) with the
figures named as in BENCH.md.
"""

from __future__ import annotations

from coral_graph.bench._main import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
