"""The transport seam: the in-process implementation against the contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import coral_graph as cg
from coral_graph._types import AgentName, RunId, ThreadId
from coral_graph.transport import LocalTransport, RunTransport


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
