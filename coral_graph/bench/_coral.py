"""The four BENCH.md workloads through coral-graph's public API, with the full
semantics on: edge checks, thread append, mention delivery, events recorded in
memory (every run keeps its events in ``RunResult.events``)."""

from __future__ import annotations

import gc
from typing import Any

import coral_graph as cg
from coral_graph.bench import _util
from coral_graph.bench._util import percentile, rss_kib

PAYLOAD = "x" * 100
UNLIMITED = cg.Budgets(max_messages=None, max_turns=None, turn_timeout_s=None)


class _Pinger:
    """A: opens a thread with B, pings, and times each round trip."""

    def __init__(self, warmup: int, rounds: int) -> None:
        self.warmup = warmup
        self.rounds = rounds
        self.sent = 0
        self.t0 = 0.0
        self.t_start = 0.0
        self.rtts: list[float] = []
        self.thread: cg.Thread | None = None
        self.total = 0.0

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        clock = _util.now
        if self.thread is None:
            self.thread = ctx.create_thread_nowait("pingpong", ["b"])
        else:
            now = clock()
            if self.sent > self.warmup:
                self.rtts.append(now - self.t0)
            if self.sent == self.warmup:
                self.t_start = now
            if self.sent == self.warmup + self.rounds:
                self.total = now - self.t_start
                return
        self.sent += 1
        self.t0 = clock()
        ctx.send_message_nowait(self.thread, PAYLOAD, ("b",))


async def _pong(ctx: cg.AgentContext, message: cg.Message) -> None:
    ctx.send_message_nowait(message.thread_id, PAYLOAD, ("a",))


async def pingpong(warmup: int, rounds: int, store: Any = None) -> dict[str, Any]:
    g = cg.AgentGraph("pingpong")
    pinger = _Pinger(warmup, rounds)
    g.add_agent("a", pinger)
    g.add_agent("b", cg.agent(_pong))
    g.connect("a", "b", mutual=True)
    async with cg.open_runtime(g, budgets=UNLIMITED, store=store or False) as rt:
        result = await rt.run("go", entry=["a"])
    assert result.stop_reason == "idle", result.stop_reason
    assert len(pinger.rtts) == rounds, len(pinger.rtts)
    return {
        "round_trips_per_s": rounds / pinger.total,
        "p50_rtt_us": percentile(pinger.rtts, 50) * 1e6,
        "p99_rtt_us": percentile(pinger.rtts, 99) * 1e6,
        "events": len(result.events),
    }


class _RingNode:
    __slots__ = ("next", "state", "thread")

    def __init__(self, nxt: str, state: dict[str, int]) -> None:
        self.next = nxt
        self.state = state
        self.thread: cg.Thread | None = None

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        state = self.state
        state["handled"] += 1
        if state["forwarded"] < state["budget"]:
            state["forwarded"] += 1
            th = self.thread
            if th is None:
                th = self.thread = ctx.create_thread_nowait("ring", [self.next])
            ctx.send_message_nowait(th, PAYLOAD, (self.next,))


def ring_graph(n: int, tokens: int, hops: int) -> tuple[cg.AgentGraph, list[str], dict[str, int]]:
    """The ring of BENCH.md: edges i -> i+1 (mod n), ``tokens`` entry agents."""
    names = [f"n{i}" for i in range(n)]
    state = {"handled": 0, "forwarded": 0, "budget": hops - tokens}
    g = cg.AgentGraph("ring")
    for i, name in enumerate(names):
        g.add_agent(name, _RingNode(names[(i + 1) % n], state))
    for i, name in enumerate(names):
        g.connect(name, names[(i + 1) % n])
    step = n // tokens
    return g, [names[k * step] for k in range(tokens)], state


async def ring(n: int, tokens: int, hops: int, store: Any = None) -> dict[str, Any]:
    g, entry, state = ring_graph(n, tokens, hops)
    async with cg.open_runtime(g, budgets=UNLIMITED, store=store or False) as rt:
        t0 = _util.now()
        result = await rt.run("token", entry=entry)
        elapsed = _util.now() - t0
    assert result.stop_reason == "idle", result.stop_reason
    assert state["handled"] == hops, state
    return {"deliveries_per_s": hops / elapsed, "deliveries": state["handled"]}


class _Counter:
    __slots__ = ("state",)

    def __init__(self, state: dict[str, int]) -> None:
        self.state = state

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        self.state["handled"] += 1


def fanout_graph(participants: int, messages: int) -> tuple[cg.AgentGraph, dict[str, int]]:
    """The fanout of BENCH.md: one sender, ``participants`` counters in one thread."""
    names = [f"p{i}" for i in range(participants)]
    state = {"handled": 0}

    async def sender(ctx: cg.AgentContext, message: cg.Message) -> None:
        th = ctx.create_thread_nowait("fanout", names)
        mentions = tuple(names)
        for _ in range(messages):
            ctx.send_message_nowait(th, PAYLOAD, mentions)

    g = cg.AgentGraph("fanout")
    g.add_agent("sender", cg.agent(sender))
    for name in names:
        g.add_agent(name, _Counter(state))
    g.connect("sender", names)
    return g, state


async def fanout(participants: int, messages: int, store: Any = None) -> dict[str, Any]:
    g, state = fanout_graph(participants, messages)
    async with cg.open_runtime(g, budgets=UNLIMITED, store=store or False) as rt:
        t0 = _util.now()
        result = await rt.run("go", entry=["sender"])
        elapsed = _util.now() - t0
    assert result.stop_reason == "idle", result.stop_reason
    total = participants * messages
    assert state["handled"] == total, state
    return {"deliveries_per_s": total / elapsed, "deliveries": state["handled"]}


class _Idle:
    __slots__ = ()

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        return None


async def idle(agents: int) -> dict[str, Any]:
    # networkx is imported by the first AgentGraph: load it before the baseline, so
    # that neither the start time nor the memory per agent counts a module import.
    cg.AgentGraph("warm-up")
    gc.collect()
    base = rss_kib()
    t0 = _util.now()
    g = cg.AgentGraph("idle")
    one = _Idle()
    gc.freeze()  # a bulk build: keep the cyclic GC from rescanning what we just made
    for i in range(agents):
        g.add_agent(f"a{i}", one, description="idle")
    gc.unfreeze()
    probe: dict[str, int] = {"handled": 0}

    async def last(ctx: cg.AgentContext, message: cg.Message) -> None:
        probe["handled"] += 1

    g.add_agent("probe", cg.agent(last))
    cm = cg.open_runtime(g, budgets=UNLIMITED, store=False)
    rt = await cm.__aenter__()
    handle = rt.start("wake", entry=["probe"])
    await handle.started()
    start_s = _util.now() - t0
    gc.collect()
    kib = (rss_kib() - base) / agents
    t1 = _util.now()
    result = await handle.wait()
    await cm.__aexit__(None, None, None)
    shutdown_s = _util.now() - t1
    assert probe["handled"] == 1, probe
    assert result.stop_reason == "idle", result.stop_reason
    return {"start_s": start_s, "kib_per_agent": kib, "shutdown_s": shutdown_s}
