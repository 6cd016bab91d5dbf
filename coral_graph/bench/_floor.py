"""The floor: the same four workloads on plain ``asyncio.Queue``, one task per agent.

No threads, no edges, no events: the least a Python router can do. Our figures are
reported as ratios to these, measured in the same process run.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from coral_graph.bench import _util
from coral_graph.bench._util import percentile, rss_kib

PAYLOAD = "x" * 100


async def pingpong(warmup: int, rounds: int) -> dict[str, Any]:
    qa: asyncio.Queue[Any] = asyncio.Queue()
    qb: asyncio.Queue[Any] = asyncio.Queue()

    async def b() -> None:
        while True:
            msg = await qb.get()
            if msg is None:
                return
            qa.put_nowait(("b", PAYLOAD, msg[2]))

    task = asyncio.create_task(b())
    rtts: list[float] = []
    clock = _util.now
    for _ in range(warmup):
        qb.put_nowait(("a", PAYLOAD, 0))
        await qa.get()
    t_start = clock()
    for i in range(rounds):
        t0 = clock()
        qb.put_nowait(("a", PAYLOAD, i))
        await qa.get()
        rtts.append(clock() - t0)
    total = clock() - t_start
    qb.put_nowait(None)
    await task
    return {
        "round_trips_per_s": rounds / total,
        "p50_rtt_us": percentile(rtts, 50) * 1e6,
        "p99_rtt_us": percentile(rtts, 99) * 1e6,
    }


async def ring(n: int, tokens: int, hops: int) -> dict[str, Any]:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(n)]
    done = asyncio.Event()
    state = {"handled": 0, "forwarded": 0}
    budget = hops - tokens

    async def node(i: int) -> None:
        q = queues[i]
        nxt = queues[(i + 1) % n]
        while True:
            msg = await q.get()
            state["handled"] += 1
            if state["forwarded"] < budget:
                state["forwarded"] += 1
                nxt.put_nowait(msg)
            elif state["handled"] == hops:
                done.set()

    tasks = [asyncio.create_task(node(i)) for i in range(n)]
    await asyncio.sleep(0)
    t0 = _util.now()
    step = n // tokens
    for k in range(tokens):
        queues[k * step].put_nowait(("token", PAYLOAD, k))
    await done.wait()
    elapsed = _util.now() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"deliveries_per_s": hops / elapsed, "deliveries": state["handled"]}


async def fanout(participants: int, messages: int) -> dict[str, Any]:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(participants)]
    done = asyncio.Event()
    total = participants * messages
    state = {"handled": 0}

    async def node(q: asyncio.Queue[Any]) -> None:
        while True:
            await q.get()
            state["handled"] += 1
            if state["handled"] == total:
                done.set()

    tasks = [asyncio.create_task(node(q)) for q in queues]
    await asyncio.sleep(0)
    t0 = _util.now()
    for i in range(messages):
        msg = ("sender", PAYLOAD, i)
        for q in queues:
            q.put_nowait(msg)
    await done.wait()
    elapsed = _util.now() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"deliveries_per_s": total / elapsed, "deliveries": state["handled"]}


async def idle(agents: int) -> dict[str, Any]:
    gc.collect()
    base = rss_kib()
    t0 = _util.now()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(agents)]
    ready = 0

    async def node(q: asyncio.Queue[Any]) -> None:
        nonlocal ready
        ready += 1
        await q.get()

    tasks = [asyncio.create_task(node(q)) for q in queues]
    while ready < agents:  # noqa: ASYNC110 - the floor spins exactly like a caller would
        await asyncio.sleep(0)
    start_s = _util.now() - t0
    gc.collect()
    kib = (rss_kib() - base) / agents
    t1 = _util.now()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    shutdown_s = _util.now() - t1
    return {"start_s": start_s, "kib_per_agent": kib, "shutdown_s": shutdown_s}
