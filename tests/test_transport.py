"""The transport seam: the in-process implementation against the contract."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import coral_graph as cg
from coral_graph._types import AgentName, RunId, ThreadId
from coral_graph.transport import LocalRun, LocalTransport, RunTransport


class _Port:
    """A RouterPort that records what the transport does to it."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, str]] = []
        self.stops: list[str] = []
        self.run_id = RunId("run-x")
        self.pending = 0
        self.busy = 0
        self.finished = False

    def feed(self, agent: AgentName, msg: cg.Message) -> None:
        self.fed.append((agent, msg.id))

    def feed_all(self, agents: Any, msg: cg.Message) -> None:
        for a in agents:
            self.feed(a, msg)

    def stop(self, reason: str, error: str | None = None) -> None:
        self.stops.append(reason)

    def add_sink(self, fn: Callable[[Any], None]) -> None:
        pass


def _msg(i: int) -> cg.Message:
    return cg.Message(f"t-1#{i}", ThreadId("t-1"), i, AgentName("a"), "x", (), 0.0)  # type: ignore[arg-type]


def test_local_send_feeds_each_target_in_send_order() -> None:
    port = _Port()
    link: RunTransport = LocalTransport().open_run(port)
    for i in (1, 2, 3):
        link.send_nowait([AgentName("b"), AgentName("c")], _msg(i))
    assert port.fed == [
        ("b", "t-1#1"), ("c", "t-1#1"), ("b", "t-1#2"),
        ("c", "t-1#2"), ("b", "t-1#3"), ("c", "t-1#3"),
    ]  # fmt: skip
    link.quiet()
    assert port.stops == ["idle"]


def test_local_threads_update_checks_the_id_and_counters_respect_limits() -> None:
    link = LocalTransport().open_run(_Port())
    th = link.threads.create_nowait("x", AgentName("a"), [AgentName("a")])
    assert th.id == "t-1"
    assert link.threads.create_nowait("y", AgentName("a"), []).id == "t-2"
    assert link.threads.update_nowait(th.id, lambda t: t.name) == "x"
    with pytest.raises(cg.UnknownThreadError):
        link.threads.update_nowait(ThreadId("t-9"), lambda t: t)
    c = link.counters
    assert c.reserve_nowait("messages", 1, 2)
    assert c.reserve_nowait("messages", 1, 2)
    assert not c.reserve_nowait("messages", 1, 2)
    c.release_nowait("messages", 1)
    assert c.value("messages") == 1
    assert c.reserve_nowait("tokens", 10**9, None)


class _AckingRun(LocalRun):
    """The local transport seen as a remote one would be: not immediate, acks wanted,
    every send going through the async forms."""

    __slots__ = ("acks", "sends")
    needs_ack = True
    immediate = False

    def __init__(self, port: Any) -> None:
        super().__init__(port)
        self.acks: list[tuple[str, str]] = []
        self.sends: list[tuple[tuple[str, ...], str]] = []

    async def send(self, targets: Any, msg: cg.Message) -> None:
        self.sends.append((tuple(targets), msg.id))
        await super().send(targets, msg)

    def ack(self, agent: AgentName, msg: cg.Message) -> None:
        self.acks.append((agent, msg.id))


class _AckingTransport:
    def __init__(self) -> None:
        self.runs: list[_AckingRun] = []

    def open_run(self, port: Any) -> _AckingRun:
        run = _AckingRun(port)
        self.runs.append(run)
        return run


def test_a_transport_that_is_not_immediate_gets_async_sends_and_an_ack_per_delivery() -> None:
    @cg.agent
    async def boss(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("work", ["helper"])
            await ctx.send_message(th, "do it", ["helper"])
            return
        await ctx.close_thread(message.thread_id, "done")
        await ctx.send_message(ctx.threads()[0], "all done", ["user"])

    class Helper:
        async def run(self, ctx: cg.AgentContext) -> None:
            for m in await ctx.wait_for_mentions(5):
                await ctx.send_message(m.thread_id, "did it", ["boss"])

    g = cg.AgentGraph()
    g.add_agent("boss", boss)
    g.add_agent("helper", Helper())
    g.connect("boss", "helper", mutual=True)
    transport = _AckingTransport()

    async def main() -> cg.RunResult:
        async with cg.open_runtime(g, transport=transport) as rt:
            return await rt.run("go", entry=["boss"])

    result = cg.run_async(main)
    assert result.answer == "all done"
    (link,) = transport.runs
    handled = [(e.agent, e.message_id) for e in result.events if e.kind == "delivery_handled"]
    assert sorted(link.acks) == sorted(handled)
    assert ("boss", "t-1#1") in link.acks  # the task, acked after boss's turn
    assert ("helper", "t-2#1") in link.acks  # taken through wait_for_mentions
    assert [ids for _, ids in link.sends] == ["t-2#1", "t-2#2"]  # the task is sent at start


class _FeedingRun(LocalRun):
    """A worker's side of a run started elsewhere: it feeds one delivery after
    start(), and decides quiescence as a distributed transport would (here: the
    first time this process is quiet after the feed)."""

    __slots__ = ("stops",)

    def __init__(self, port: Any) -> None:
        super().__init__(port)
        self.stops: list[str] = []

    async def start(self) -> None:
        th = self.threads.create_nowait("remote", AgentName("a"), [AgentName("a"), AgentName("b")])
        msg = cg.Message(f"{th.id}#1", th.id, 1, AgentName("a"), "from elsewhere", ("b",), 0.0)  # type: ignore[arg-type]
        th._messages.append(msg)
        asyncio.get_running_loop().call_soon(self._port.feed, AgentName("b"), msg)

    def stopped(self, reason: str) -> None:
        self.stops.append(reason)


def test_join_hosts_agents_of_a_run_started_elsewhere() -> None:
    got: list[str] = []

    @cg.agent
    async def b(ctx: cg.AgentContext, message: cg.Message) -> None:
        got.append(message.content)

    g = cg.AgentGraph()
    g.add_agent("a", b)
    g.add_agent("b", b)
    g.connect("a", "b", mutual=True)
    runs: list[_FeedingRun] = []

    class T:
        def open_run(self, port: Any) -> _FeedingRun:
            runs.append(_FeedingRun(port))
            return runs[-1]

    async def main() -> cg.RunResult:
        async with cg.open_runtime(g, transport=T()) as rt:
            return await rt.join("run-elsewhere", entry=["a"])

    result = cg.run_async(main)
    assert got == ["from elsewhere"]
    assert result.stop_reason == "idle"
    assert runs[0].stops == ["idle"]
    kinds = [e.kind for e in result.events]
    assert kinds == ["delivery_handled"]  # no run_started/run_finished: the starter records them
