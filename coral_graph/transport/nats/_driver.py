"""Starting a run on NATS and seeing it to its end: the task posted, the workers
waited for, quiescence detected exactly, the stop broadcast, the events recorded.

Quiescence (``idle``) without a timeout: a delivery is acknowledged only after its
turn ended and the turn's messages and events are on the server, so "nothing queued
and nothing in a turn" is exactly "every agent's consumer has ``num_pending == 0``
and ``num_ack_pending == 0``". One scan reads the inbox stream's last sequence,
then every consumer, then the last sequence again: any delivery published meanwhile
moves it, so a scan that sees all zeros and an unchanged sequence saw a quiet moment
of the whole graph. (Runs of one graph share its consumers: one run's ``idle`` waits
for the other runs' inboxes to be quiet too. It is never early, it can be late.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from coral_graph._budgets import Budgets
from coral_graph._events import (
    AgentAdded,
    Event,
    MessageSent,
    RunFinished,
    RunStarted,
    ThreadCreated,
    event_to_dict,
)
from coral_graph._graph import AgentGraph
from coral_graph._model import Message, Thread
from coral_graph._results import RunResult
from coral_graph._runtime import new_run_id
from coral_graph._types import USER, MessageId, RunId, StopReason, ThreadId
from coral_graph.store import replay
from coral_graph.transport.nats._conn import DEFAULT_ACK_WAIT_S, Link, ensure_graph
from coral_graph.transport.nats._names import GraphIdentity, Names
from coral_graph.transport.nats._record import Recorder
from coral_graph.transport.nats._state import RunState
from coral_graph.transport.nats._wire import decode, encode
from coral_graph.transport.nats._worker import check_identity, live_workers

__all__ = ["DistributedRun", "is_quiet"]

_POLL_S = (0.002, 0.2)  # the idle scan's pause: starts short, doubles while busy


async def is_quiet(
    link: Link,
    names: Names,
    agents: Sequence[str],
    state: RunState | None = None,
    loop_workers: Sequence[str] = (),
) -> bool:
    """One exact scan: nothing queued for, and nothing in a turn of, any agent, and
    no worker hosting loop agents busy (``loop_workers``: their ids).

    A delivery's turn is over when it is acknowledged, and what it published is
    stored before that; a loop agent's worker marks itself busy before it
    acknowledges what the agent took, and quiet only after what it published is
    stored. So work moves from one place the scan reads to another without a gap,
    and a scan that sees all zeros with the inbox stream's last sequence unchanged
    saw a quiet moment."""
    js = link.js
    before = (await js.stream_info(names.inbox_stream)).state.last_seq
    for a in agents:
        info = await js.consumer_info(names.inbox_stream, names.consumer(a))
        if info.num_pending or info.num_ack_pending:
            return False
    if state is not None:
        for wid in loop_workers:
            if await state.busy(wid) is not False:
                return False  # busy, or not joined yet
    after = (await js.stream_info(names.inbox_stream)).state.last_seq
    return before == after


class DistributedRun:
    """One run of ``graph`` whose agents live in worker processes."""

    def __init__(
        self,
        link: Link,
        graph: AgentGraph,
        identity: GraphIdentity,
        *,
        budgets: Budgets | None = None,
        entry: Sequence[str] | None = None,
        answer_by: Sequence[str] | None = None,
        wait_workers_s: float = 10.0,
        ack_wait_s: float = DEFAULT_ACK_WAIT_S,
        max_content_chars: int = 100_000,
        sink: Callable[[Event], None] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.link = link
        self.graph = graph
        self.identity = identity
        self.names = Names.for_graph(identity.name)
        self.budgets = budgets or Budgets()
        ent, ans = graph.validate(entry, answer_by)
        self.entry = ent
        self.answer_by = ans
        self.wait_workers_s = wait_workers_s
        self.ack_wait_s = ack_wait_s
        self.max_content_chars = max_content_chars
        self.sink = sink
        self.run_id = RunId(run_id or new_run_id())
        self.missing: list[str] = []
        self.workers: Any = None
        self.recorder: Recorder | None = None
        self._stopped = asyncio.Event()

    async def _emit(self, ev: Event) -> None:
        data = encode("e", worker=f"run:{self.run_id}", ev=event_to_dict(ev))
        await self.link.js.publish(self.names.events(self.run_id), data)

    async def run(self, task: str) -> RunResult:
        """Post ``task`` and wait for the run's end; returns its result."""
        link, names, rid = self.link, self.names, self.run_id
        kv, self.workers = await ensure_graph(
            link, names, self.graph.agents, ack_wait_s=self.ack_wait_s
        )
        await check_identity(kv, self.workers, self.identity)
        state = RunState(kv, rid)
        t0 = time.time()
        await kv.create(
            f"r.{rid}",
            encode(
                "run",
                status="running",
                graph_hash=self.identity.hash,
                task=task,
                entry=list(self.entry),
                answer_by=list(self.answer_by),
                budgets=self.budgets.to_dict(),
                max_content_chars=self.max_content_chars,
                started_at=t0,
            ),
        )
        sub = await link.nc.subscribe(names.ctl(rid), cb=self._on_ctl)
        self.recorder = rec = Recorder(link, names, rid, self.sink)
        await rec.start()
        try:
            await self._post(state, task, t0)
            await self._watch(state, t0)
            return await self._end(state, t0)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cancel(state, t0))
            raise
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await rec.aclose()

    async def _on_ctl(self, m: Msg) -> None:
        with contextlib.suppress(Exception):
            decode(m.data, "stop")
            self._stopped.set()

    async def _announce(self) -> None:
        """Tell the workers the run started (those hosting loop agents join it)."""
        with contextlib.suppress(Exception):
            await self.link.nc.publish(
                self.names.ctl(self.run_id), encode("start", run=self.run_id)
            )

    async def _post(self, state: RunState, task: str, t0: float) -> None:
        rid = self.run_id
        g = self.graph
        await self._emit(
            RunStarted(
                rid, 0, t0, task, list(self.entry), list(self.answer_by), g.snapshot(),
                self.budgets.to_dict(),
            )
        )  # fmt: skip
        for a in g.agents:
            spec = g.spec(a)
            await self._emit(AgentAdded(rid, 0, t0, a, spec.description, spec.kind))
        if not await self._wait_workers():
            return
        members = [USER, *self.entry]
        await self._announce()
        th = Thread(ThreadId(f"t-task-{rid[-6:]}"), "task", USER, members, time.time())
        msg = Message(MessageId(f"{th.id}#1"), th.id, 1, USER, task, tuple(self.entry), time.time())
        th._messages.append(msg)
        await state.create_thread(th)
        await self._emit(ThreadCreated(rid, 0, th.created_at, th.id, th.name, USER, list(members)))
        await self._emit(MessageSent(rid, 0, msg.timestamp, msg))
        for e in self.entry:
            await self.link.js.publish(
                self.names.inbox(rid, e),
                encode("d", run=rid, to=e, msg=msg.to_dict()),
                headers={"Nats-Msg-Id": f"{rid}/{msg.id}>{e}"},
            )

    async def _wait_workers(self) -> bool:
        """Wait until every agent has a live worker, at most ``wait_workers_s``."""
        deadline = time.monotonic() + self.wait_workers_s
        while True:
            hosted = {a for w in await live_workers(self.workers) for a in w["agents"]}
            self.missing = [a for a in self.graph.agents if a not in hosted]
            if not self.missing:
                return True
            if time.monotonic() >= deadline:
                kv = await self.link.js.key_value(self.names.bucket)
                state = RunState(kv, self.run_id)
                await self._stop(state, "error", error=self._missing_text())
                return False
            await asyncio.sleep(0.1)

    def _missing_text(self) -> str:
        ms = ", ".join(self.missing)
        return (
            f"no worker hosts {ms} (waited {self.wait_workers_s:g} s): start "
            f"`coral-graph worker GRAPH --nats {self.link.url} --agents {','.join(self.missing)}`"
        )

    async def _stop(self, state: RunState, reason: str, *, error: str | None = None) -> None:
        if await state.finish(reason, error=error):
            await self.link.nc.publish(
                self.names.ctl(self.run_id), encode("stop", run=self.run_id, reason=reason)
            )
        self._stopped.set()

    async def _watch(self, state: RunState, t0: float) -> None:
        """Until the run is finished: the idle scan, the wall-clock budget, and agents
        whose deliveries wait with no live worker to take them."""
        pause = _POLL_S[0]
        timeout = self.budgets.timeout_s
        orphan_since: dict[str, float] = {}
        last_workers = 0.0
        hosted: set[str] = set(self.graph.agents)
        # Workers hosting loop agents: the run is not idle while one is busy or has
        # not joined yet.
        loop_workers = [str(w["id"]) for w in await live_workers(self.workers) if w.get("loops")]
        while not self._stopped.is_set():
            try:
                cur = await state.record()
                if cur is None or cur[0]["status"] != "running":
                    return
                if timeout is not None and time.time() - t0 > timeout:
                    await self._stop(state, "budget:time")
                    return
                if await is_quiet(self.link, self.names, self.graph.agents, state, loop_workers):
                    await self._stop(state, "idle")
                    return
                now = time.monotonic()
                if now - last_workers > 1.0:
                    last_workers = now
                    live = await live_workers(self.workers)
                    hosted = {a for w in live for a in w["agents"]}
                    loop_workers = [str(w["id"]) for w in live if w.get("loops")]
                    for wid in loop_workers:
                        if await state.busy(wid) is None:
                            await self._announce()  # a worker that missed the start
                            break
                    for a in self.graph.agents:
                        if a in hosted:
                            orphan_since.pop(a, None)
                        else:
                            orphan_since.setdefault(a, now)
                    waiting = await self._waiting_agents()
                    self.missing = [
                        a for a in waiting
                        if a in orphan_since and now - orphan_since[a] >= self.wait_workers_s
                    ]  # fmt: skip
                    if self.missing:
                        await self._stop(state, "error", error=self._missing_text())
                        return
            except (nats.errors.Error, nats.js.errors.Error, OSError):
                pass  # the server is restarting: the client reconnects; scan again
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), pause)
            pause = min(pause * 2, _POLL_S[1])

    async def _waiting_agents(self) -> list[str]:
        out: list[str] = []
        for a in self.graph.agents:
            info = await self.link.js.consumer_info(self.names.inbox_stream, self.names.consumer(a))
            if info.num_pending or info.num_ack_pending:
                out.append(a)
        return out

    async def _settle(self, wait_s: float = 5.0) -> None:
        """After the stop: give turns in progress (cancelled by the stop) a moment to
        end and publish their events, so the transcript has them."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            busy = False
            with contextlib.suppress(Exception):
                for a in self.graph.agents:
                    info = await self.link.js.consumer_info(
                        self.names.inbox_stream, self.names.consumer(a)
                    )
                    if info.num_ack_pending:
                        busy = True
                        break
            if not busy:
                return
            await asyncio.sleep(0.02)

    async def _end(self, state: RunState, t0: float) -> RunResult:
        await self._settle()
        rec = self.recorder
        assert rec is not None
        await rec.caught_up()
        cur = await state.record()
        r: dict[str, Any] = cur[0] if cur is not None else {}
        answer = Message.from_dict(r["answer"]) if r.get("answer") else None
        reason = cast("StopReason", str(r.get("stop_reason") or "error"))
        ended = float(r.get("ended_at") or time.time())
        usage = replay(rec.events).usage
        await self._emit(
            RunFinished(
                self.run_id, 0, ended, reason,
                answer.id if answer else None, answer.content if answer else None,
                r.get("error"), {n: u.to_dict() for n, u in usage.items()},
            )
        )  # fmt: skip
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(rec.finished.wait(), 10.0)
        # The whole transcript, up to run_finished (events that came meanwhile too).
        final = replay(rec.events)
        usage = final.usage
        return RunResult(
            run_id=self.run_id,
            stop_reason=reason,
            answer=answer.content if answer else None,
            answer_message=answer,
            error=r.get("error"),
            usage=usage,
            messages=sum(u.messages_sent for u in usage.values()),
            duration_s=ended - t0,
            threads=final.threads,
            log=list(rec.events),
        )

    async def _cancel(self, state: RunState, t0: float) -> None:
        """The caller was interrupted: the run ends as ``cancelled`` everywhere."""
        await self._stop(state, "cancelled")
        await self._emit(
            RunFinished(self.run_id, 0, time.time(), "cancelled", None, None, None, {})
        )
