"""The cost of durability: ring and fanout with the SQLite store off and on.

The workloads are BENCH.md's ring and fanout, the very graphs of the routing
benchmark (``coral_graph.bench._coral``), run here with the store off and on in
interleaved pairs. With the store on there are two figures: until the run returns,
and until the store is closed (the final flush: every event committed, the
end-to-end durable throughput). The issue's target is at least half the
throughput with the store off.

Run it: ``python -m coral_graph.store._bench [--quick]`` or ``coral-graph bench --store``.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import coral_graph as cg
from coral_graph.bench._coral import fanout_graph, ring_graph
from coral_graph.store._sqlite import SQLiteStore

__all__ = ["durability_bench"]


def _measure(
    build: Callable[[], tuple[cg.AgentGraph, list[str]]], db: Path | None
) -> tuple[float, float]:
    """(deliveries/s until the run returned, deliveries/s including the final flush)."""
    graph, entry = build()
    # Start every measurement from the same heap: a full collection left over from
    # an earlier run would land in this one (on or off) at random.
    gc.collect()

    async def main() -> tuple[int, float, float]:
        store = SQLiteStore(db) if db is not None else None
        t0 = time.perf_counter()
        async with cg.open_runtime(
            graph, store=store, budgets=cg.Budgets(max_messages=None), max_inbox=1_000_000
        ) as rt:
            result = await rt.run("go", entry=entry)
        t1 = time.perf_counter()
        if store is not None:
            await store.aclose()
        t2 = time.perf_counter()
        return sum(u.deliveries for u in result.usage.values()), t1 - t0, t2 - t0

    deliveries, run_s, durable_s = cg.run_async(main)
    return deliveries / run_s, deliveries / durable_s


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def durability_bench(
    *, repeats: int = 5, quick: bool = False, workdir: str | None = None
) -> dict[str, dict[str, float]]:
    """Deliveries per second of ring and fanout with the store off and on, in this
    process: ``repeats`` pairs of runs, off then on. ``quick`` shrinks the workloads
    tenfold.

    Returns:
        ``{"ring": {...}, "fanout": {...}}``, each with the medians ``off``; ``on``
        (the run with the store attached, timed until the run returns — the writer
        process may still be writing its last batch); ``on_durable`` (timed until
        the store is closed: every event committed); and ``ratio`` and
        ``ratio_durable``, the medians of each pair's on/off and on_durable/off.
        This machine's speed drifts from run to run by far more than the store's
        cost; a pair's ratio compares two runs made within a second of each other.
    """
    scale = 10 if quick else 1
    tokens = 100 // scale
    # The graphs of the routing benchmark (BENCH.md's workloads), built fresh per run.
    work: dict[str, Callable[[], tuple[cg.AgentGraph, list[str]]]] = {
        "ring": lambda: ring_graph(1000, tokens, tokens * 2000)[:2],
        "fanout": lambda: (fanout_graph(50, 2000 // scale)[0], ["sender"]),
    }
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name, build in work.items():
            offs: list[float] = []
            ons: list[float] = []
            durables: list[float] = []
            for i in range(repeats):
                offs.append(_measure(build, None)[0])
                db = Path(tmp) / f"{name}-{i}.db"
                on, durable = _measure(build, db)
                ons.append(on)
                durables.append(durable)
                for p in db.parent.glob(db.name + "*"):
                    p.unlink()
            out[name] = {
                "off": _median(offs),
                "on": _median(ons),
                "on_durable": _median(durables),
                "ratio": _median([a / b for a, b in zip(ons, offs, strict=True)]),
                "ratio_durable": _median([a / b for a, b in zip(durables, offs, strict=True)]),
            }
    return out


if __name__ == "__main__":
    print(
        json.dumps(
            durability_bench(quick="--quick" in sys.argv, repeats=1 if "--once" in sys.argv else 5),
            indent=2,
        )
    )
