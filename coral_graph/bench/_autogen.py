"""The same workloads on Microsoft's autogen-core runtime, when it is installed
(``pip install coral-graph[bench]``): a reference, measured in the same run.

No ``from __future__ import annotations`` here: autogen-core reads the handlers'
type hints at registration.
"""

import asyncio
import gc
from dataclasses import dataclass
from typing import Any

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
)

from coral_graph.bench import _util
from coral_graph.bench._util import percentile, rss_kib

PAYLOAD = "x" * 100


@dataclass
class Note:
    content: str
    sender: str
    index: int


class _Pong(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("pong")

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> Note:
        return Note(PAYLOAD, "b", message.index)


async def pingpong(warmup: int, rounds: int) -> dict[str, Any]:
    rt = SingleThreadedAgentRuntime()
    await _Pong.register(rt, "b", _Pong)
    rt.start()
    target = AgentId("b", "default")
    for i in range(warmup):
        await rt.send_message(Note(PAYLOAD, "a", i), target)
    rtts: list[float] = []
    clock = _util.now
    t_start = clock()
    for i in range(rounds):
        t0 = clock()
        await rt.send_message(Note(PAYLOAD, "a", i), target)
        rtts.append(clock() - t0)
    total = clock() - t_start
    await rt.stop()
    return {
        "round_trips_per_s": rounds / total,
        "p50_rtt_us": percentile(rtts, 50) * 1e6,
        "p99_rtt_us": percentile(rtts, 99) * 1e6,
    }


class _State:
    def __init__(self, total: int, budget: int) -> None:
        self.total = total
        self.budget = budget
        self.handled = 0
        self.forwarded = 0
        self.done = asyncio.Event()


class _RingNode(RoutedAgent):
    def __init__(self, nxt: str, state: _State) -> None:
        super().__init__("ring")
        self._next = TopicId(nxt, "default")
        self._state = state

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        st = self._state
        st.handled += 1
        if st.forwarded < st.budget:
            st.forwarded += 1
            await self.publish_message(message, self._next)
        elif st.handled == st.total:
            st.done.set()


async def ring(n: int, tokens: int, hops: int) -> dict[str, Any]:
    rt = SingleThreadedAgentRuntime()
    state = _State(hops, hops - tokens)
    for i in range(n):
        nxt = f"n{(i + 1) % n}"
        await _RingNode.register(rt, f"n{i}", lambda nxt=nxt: _RingNode(nxt, state))
        await rt.add_subscription(TypeSubscription(f"n{i}", f"n{i}"))
    rt.start()
    t0 = _util.now()
    step = n // tokens
    for k in range(tokens):
        await rt.publish_message(Note(PAYLOAD, "user", k), TopicId(f"n{k * step}", "default"))
    await state.done.wait()
    elapsed = _util.now() - t0
    await rt.stop()
    return {"deliveries_per_s": hops / elapsed, "deliveries": state.handled}


class _Counter(RoutedAgent):
    def __init__(self, state: _State) -> None:
        super().__init__("counter")
        self._state = state

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        st = self._state
        st.handled += 1
        if st.handled == st.total:
            st.done.set()


async def fanout(participants: int, messages: int) -> dict[str, Any]:
    rt = SingleThreadedAgentRuntime()
    total = participants * messages
    state = _State(total, 0)
    for i in range(participants):
        await _Counter.register(rt, f"p{i}", lambda: _Counter(state))
        await rt.add_subscription(TypeSubscription("fan", f"p{i}"))
    rt.start()
    t0 = _util.now()
    topic = TopicId("fan", "default")
    for i in range(messages):
        await rt.publish_message(Note(PAYLOAD, "sender", i), topic)
    await state.done.wait()
    elapsed = _util.now() - t0
    await rt.stop()
    return {"deliveries_per_s": total / elapsed, "deliveries": state.handled}


async def idle(agents: int) -> dict[str, Any]:
    gc.collect()
    base = rss_kib()
    t0 = _util.now()
    rt = SingleThreadedAgentRuntime()
    state = _State(1, 0)
    # autogen-core instantiates agents on demand from a registered type; `get(...,
    # lazy=False)` creates each of them now (registering 100,000 types is quadratic).
    await _Counter.register(rt, "a", lambda: _Counter(state))
    for i in range(agents):
        await rt.get("a", f"k{i}", lazy=False)
    rt.start()
    start_s = _util.now() - t0
    gc.collect()
    kib = (rss_kib() - base) / agents
    t1 = _util.now()
    await rt.stop()
    shutdown_s = _util.now() - t1
    return {"start_s": start_s, "kib_per_agent": kib, "shutdown_s": shutdown_s}
