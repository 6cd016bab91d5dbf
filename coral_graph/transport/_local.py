"""The in-process transport: a deque per agent and a wake-up, all synchronous."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from coral_graph._errors import UnknownThreadError
from coral_graph._model import Thread
from coral_graph._types import AgentName, StopReason, ThreadId

if TYPE_CHECKING:
    from coral_graph._model import Message
    from coral_graph.transport._base import RouterPort

__all__ = ["LocalCounters", "LocalRun", "LocalThreads", "LocalTransport"]

R = TypeVar("R")


class LocalThreads:
    """The threads of a run in this process: live :class:`Thread` objects by id."""

    __slots__ = ("_ids", "get_nowait", "threads")

    def __init__(self) -> None:
        self.threads: dict[ThreadId, Thread] = {}
        self._ids = itertools.count(1)
        # The live thread by id (the dict's own get: no Python frame on the hot path).
        self.get_nowait: Callable[[ThreadId], Thread | None] = self.threads.get

    async def get(self, thread_id: ThreadId) -> Thread | None:
        return self.threads.get(thread_id)

    def create_nowait(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        tid = ThreadId(f"t-{next(self._ids)}")
        th = Thread(tid, name, creator, participants, time.time())
        self.threads[tid] = th
        return th

    async def create(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        return self.create_nowait(name, creator, participants)

    def update_nowait(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        th = self.threads.get(thread_id)
        if th is None:
            raise UnknownThreadError(thread_id)
        return change(th, *args)

    async def update(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        return self.update_nowait(thread_id, change, *args)

    def all_nowait(self) -> dict[ThreadId, Thread]:
        return self.threads

    def restore(self, threads: dict[ThreadId, Thread]) -> None:
        """Put back the threads of a stored run; new ids continue after the highest."""
        self.threads.update(threads)
        top = max((int(t.rsplit("-", 1)[-1]) for t in threads if t.startswith("t-")), default=0)
        self._ids = itertools.count(top + 1)


class LocalCounters:
    """The run's counters in this process."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def reserve_nowait(self, name: str, amount: float, limit: float | None) -> bool:
        now = self.values.get(name, 0)
        if limit is not None and now + amount > limit:
            return False
        self.values[name] = now + amount
        return True

    async def reserve(self, name: str, amount: float, limit: float | None) -> bool:
        return self.reserve_nowait(name, amount, limit)

    def release_nowait(self, name: str, amount: float) -> None:
        self.values[name] = self.values.get(name, 0) - amount

    def value(self, name: str) -> float:
        return self.values.get(name, 0)


class LocalRun:
    """One run in this process: ``send`` feeds the recipients' inboxes directly."""

    __slots__ = ("_port", "counters", "send_nowait", "threads")

    needs_ack = False
    immediate = True

    def __init__(self, port: RouterPort) -> None:
        self._port = port
        # Straight to the router's inboxes: one call per message, whatever the fanout.
        self.send_nowait: Callable[[Sequence[AgentName], Message], None] = port.feed_all
        self.threads = LocalThreads()
        self.counters = LocalCounters()

    async def start(self) -> None:
        return None

    def hosts(self, agent: AgentName) -> bool:
        return True

    async def send(self, targets: Sequence[AgentName], msg: Message) -> None:
        self.send_nowait(targets, msg)

    def ack(self, agent: AgentName, msg: Message) -> None:
        return None

    def quiet(self) -> None:
        # One process: nothing queued and nobody busy here is quiescence itself.
        self._port.stop("idle")

    def stopped(self, reason: StopReason) -> None:
        return None

    async def aclose(self) -> None:
        return None


class LocalTransport:
    """The default transport: every agent of the run in this process."""

    def open_run(self, port: RouterPort) -> LocalRun:
        return LocalRun(port)
