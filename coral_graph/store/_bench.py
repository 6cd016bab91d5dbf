"""The cost of durability: ring and fanout with the SQLite store off and on.

The workloads are BENCH.md's, built with the public API: handler agents that
forward a token to their successor in a thread the two share (ring), and one
sender that mentions every participant of one thread (fanout). With the store on,
the timed span includes closing the store (the final flush), so the figure is
end-to-end durable throughput.

Run it: ``python -m coral_graph.store._bench [--quick]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coral_graph as cg
from coral_graph.store._sqlite import SQLiteStore

__all__ = ["durability_bench", "fanout_graph", "ring_graph"]


def ring_graph(
    n: int = 1000, tokens: int = 100, hops: int = 2000
) -> tuple[cg.AgentGraph, list[str]]:
    """N agents in a ring; ``tokens`` tokens start at evenly spaced agents and each is
    handled ``hops`` times (so ``tokens * hops`` deliveries in all)."""
    g = cg.AgentGraph("ring")
    names = [f"a{i}" for i in range(n)]
    threads: dict[str, str] = {}

    def make(name: str, succ: str) -> Any:
        async def handle(ctx: cg.AgentContext, message: cg.Message) -> None:
            hop = 0 if message.sender == "user" else int(message.content)
            if hop + 1 >= hops:
                return
            tid = threads.get(name)
            if tid is None:
                tid = threads[name] = ctx.create_thread_nowait("ring-" + name, [succ]).id
            ctx.send_message_nowait(tid, str(hop + 1), (succ,))

        return cg.agent(handle)

    for i, name in enumerate(names):
        g.add_agent(name, make(name, names[(i + 1) % n]))
    for i in range(n):
        g.connect(names[i], names[(i + 1) % n])
    step = max(1, n // tokens)
    return g, [names[i * step] for i in range(tokens)]


def fanout_graph(participants: int = 50, messages: int = 2000) -> tuple[cg.AgentGraph, list[str]]:
    """One sender posts ``messages`` messages into one thread, each mentioning all
    ``participants``; every participant counts what it handles."""
    g = cg.AgentGraph("fanout")
    names = [f"p{i}" for i in range(participants)]

    async def send(ctx: cg.AgentContext, message: cg.Message) -> None:
        th = ctx.create_thread_nowait("fanout", names)
        ms = tuple(names)
        for i in range(messages):
            ctx.send_message_nowait(th.id, f"message {i}", ms)

    async def count(ctx: cg.AgentContext, message: cg.Message) -> None:
        return None

    g.add_agent("sender", cg.agent(send))
    for n in names:
        g.add_agent(n, cg.agent(count))
        g.connect("sender", n)
    return g, ["sender"]


def _measure(
    build: Callable[[], tuple[cg.AgentGraph, list[str]]], db: Path | None
) -> tuple[float, float]:
    """(deliveries/s until the run returned, deliveries/s including the final flush)."""
    graph, entry = build()

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
    *, repeats: int = 3, quick: bool = False, workdir: str | None = None
) -> dict[str, dict[str, float]]:
    """Deliveries per second of ring and fanout with the store off and on, in this
    process (medians of ``repeats``, off and on interleaved). ``quick`` shrinks the
    workloads tenfold.

    Returns:
        ``{"ring": {...}, "fanout": {...}}``, each with ``off``; ``on`` (the run
        with the store attached, timed until the run returns — the writer may lag
        by up to ``max_queue`` events); ``on_durable`` (timed until the store is
        closed, every event committed); and the ratios ``ratio`` (on/off) and
        ``ratio_durable`` (on_durable/off).
    """
    scale = 10 if quick else 1
    work: dict[str, Callable[[], tuple[cg.AgentGraph, list[str]]]] = {
        "ring": lambda: ring_graph(1000, 100 // scale, 2000),
        "fanout": lambda: fanout_graph(50, 2000 // scale),
    }
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name, build in work.items():
            offs: list[float] = []
            ons: list[float] = []
            durables: list[float] = []
            for i in range(repeats):
                offs.append(_measure(build, None)[0])
                on, durable = _measure(build, Path(tmp) / f"{name}-{i}.db")
                ons.append(on)
                durables.append(durable)
            off = _median(offs)
            out[name] = {
                "off": off,
                "on": _median(ons),
                "on_durable": _median(durables),
                "ratio": _median(ons) / off,
                "ratio_durable": _median(durables) / off,
            }
    return out


if __name__ == "__main__":
    print(
        json.dumps(
            durability_bench(quick="--quick" in sys.argv, repeats=1 if "--once" in sys.argv else 3),
            indent=2,
        )
    )
