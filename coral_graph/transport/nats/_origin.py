"""The side of a run over NATS that only the process that started it has
(``Runtime.run`` with a :class:`~coral_graph.transport.nats.NatsTransport`).

:class:`Origin` writes the run's record and keeps its heartbeat (the workers end a
run whose starting process is gone), waits for a worker for every agent, tells
the workers hosting loop agents that the run started, records every other
process's events into this process's transcript (``port.record``), and watches
the run until it stops: quiescence detected exactly, agents whose deliveries wait
with no live worker, a stop made elsewhere. Posting the task, the time budget,
cancellation and ``run_finished`` are the core's.

Quiescence (``idle``) without a timeout: a delivery is acknowledged only after its
turn ended and the turn's messages and events are on the server, so "nothing
queued and nothing in a turn" is exactly "every agent's consumer has
``num_pending == 0`` and ``num_ack_pending == 0``". One scan reads the inbox
stream's last sequence, then every consumer (and the busy flag of every worker
hosting loop agents), then the last sequence again: any delivery published
meanwhile moves it, so a scan that sees all zeros and an unchanged sequence saw a
quiet moment of the whole graph. (Runs of one graph share its consumers: one run's
``idle`` waits for the other runs' inboxes to be quiet too. It is never early, it
can be late.)
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors

from coral_graph._events import Event, MessageSent
from coral_graph.transport.nats._record import Recorder
from coral_graph.transport.nats._wire import encode

if TYPE_CHECKING:
    from coral_graph.transport.nats._conn import Link
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._run import NatsRun
    from coral_graph.transport.nats._state import RunState

__all__ = ["Origin", "is_quiet"]

_POLL_S = (0.002, 0.2)  # the idle scan's pause: starts short, doubles while busy
_SILENCE_S = 0.02  # the run's events silent this long: the idle scan may run
_CHECK_S = 1.0  # how often the run's record and the live workers are read
_SETTLE_S = 5.0  # after the stop: how long turns cut short elsewhere may take to end


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


class Origin:
    """What the starting process does for run ``run`` (see the module docstring)."""

    def __init__(self, run: NatsRun, wait_workers_s: float) -> None:
        self.run = run
        self.wait_workers_s = wait_workers_s
        self.missing: list[str] = []
        # The run's events in this process's order: its own and, as recorded here,
        # every other process's (the run's threads and usage are their replay).
        self.transcript: list[Event] = []
        self.posted_elsewhere = 0  # messages posted by agents in other processes
        self.recorder: Recorder | None = None
        self._workers: list[dict[str, Any]] = []  # the live workers, as last read
        self._posted = asyncio.Event()
        self._wake = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the run's record, record the others' events, wait for the workers;
        then watch the run (once the task is posted)."""
        run = self.run
        spec = run.port.spec
        w = run.worker
        await w.kv.create(
            f"r.{run.run_id}",
            encode(
                "run",
                status="running",
                graph_hash=w.identity.hash,
                task=spec.task,
                entry=list(spec.entry),
                answer_by=list(spec.answer_by),
                budgets=spec.budgets.to_dict(),
                max_content_chars=spec.max_content_chars,
                started_at=time.time(),
            ),
        )
        # The workers end a run whose starting process is gone (see NatsRun.check_origin).
        self._beating = asyncio.get_running_loop().create_task(self._beat())
        # Not kept nor numbered by the recorder: the core numbers each event once
        # (port.record) and keeps it in the run's events; the transcript here is for
        # the replay at the end.
        self.recorder = rec = Recorder(
            w.link, w.names, run.run_id, self._record, skip_from=w.tag, keep=False
        )
        await rec.start()
        if not await self._wait_workers():
            await run.end_as("error", self._missing_text())
            return
        await self._announce()
        self._watch = asyncio.get_running_loop().create_task(self._watch_run())
        self._watch.add_done_callback(self._watch_ended)

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        """The watch never fails silently: a run nobody watches would never end."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.run.port.stop("error", f"the run's watch failed: {type(exc).__name__}: {exc}")

    def posted(self) -> None:
        """The task's deliveries are stored: the idle scan may begin."""
        self._posted.set()

    def wake(self) -> None:
        """A stop was broadcast: look at the run's record now."""
        self._wake.set()

    def _record(self, ev: Event) -> None:
        self.transcript.append(ev)
        if type(ev) is MessageSent:
            self.posted_elsewhere += 1
        self.run.record_remote(ev)

    async def finish(self) -> None:
        """After the stop: let the turns the stop cut short elsewhere end and their
        events arrive, then count the usage of the agents that ran elsewhere."""
        from coral_graph.store import replay

        run = self.run
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
        await self._settle()
        if self.recorder is not None:
            await self.recorder.caught_up()
        if self.transcript:
            state = replay(self.transcript)
            hosted = run.transport.hosted
            run.port.merge_usage({a: u for a, u in state.usage.items() if a not in hosted})
            run.final_threads = state.threads
        # The run's message count, as the budget counts it: the task (posted here)
        # is not counted; every message an agent posted was posted elsewhere.
        run.counters.settled("messages", self.posted_elsewhere)

    async def aclose(self) -> None:
        for task in (self._watch, self._beating):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.recorder is not None:
            await self.recorder.aclose()

    async def _beat(self) -> None:
        """This process is alive: the run's heartbeat key, every ``_CHECK_S``, until
        the run is closed here (the stop's settling included)."""
        run = self.run
        while True:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                await run.state.beat(run.worker.tag)
            await asyncio.sleep(_CHECK_S)

    # -- the workers -----------------------------------------------------------------

    async def _live(self) -> list[dict[str, Any]]:
        from coral_graph.transport.nats._worker import live_workers

        return await live_workers(self.run.worker.workers)

    async def _wait_workers(self) -> bool:
        """Wait until every agent has a live worker, at most ``wait_workers_s``."""
        graph = self.run.port.spec.graph
        deadline = time.monotonic() + self.wait_workers_s
        while True:
            self._workers = await self._live()
            hosted = {a for w in self._workers for a in w["agents"]}
            hosted.update(self.run.worker.agents)
            self.missing = [a for a in graph.agents if a not in hosted]
            if not self.missing:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def _missing_text(self) -> str:
        ms = ", ".join(self.missing)
        # The graph's file, when the run's graph came from one (else a placeholder).
        path = getattr(self.run.transport.graph, "path", None) or "GRAPH"
        return (
            f"no worker hosts {ms} (waited {self.wait_workers_s:g} s): start "
            f"`coral-graph worker {shlex.quote(str(path))} --nats {self.run.worker.link.url} "
            f"--agents {','.join(self.missing)}`"
        )

    async def _announce(self) -> None:
        """Tell the workers the run started (those hosting loop agents join it)."""
        w = self.run.worker
        with contextlib.suppress(Exception):
            await w.link.nc.publish(
                w.names.ctl(self.run.run_id), encode("start", run=self.run.run_id)
            )

    # -- watching --------------------------------------------------------------------

    async def _watch_run(self) -> None:
        """Until the run is finished: a stop made elsewhere, the idle scan, and agents
        whose deliveries wait with no live worker to take them."""
        run = self.run
        port = run.port
        w = run.worker
        state = run.state
        agents = list(port.spec.graph.agents)
        while not self._posted.is_set():
            if port.finished:
                return
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._posted.wait(), 0.2)
        pause = _POLL_S[0]
        silence = _POLL_S[0]  # how long the events must be silent before a scan
        # The task was just posted: its deliveries wait, no scan could find it quiet.
        last_scan = time.monotonic()
        orphan_since: dict[str, float] = {}
        # Workers hosting loop agents: the run is not idle while one is busy or has
        # not joined yet.
        # (As read just before the task was posted: reading the workers' bucket costs
        # the server a consumer.)
        loop_workers = [str(x["id"]) for x in self._workers if x.get("loops")]
        last_check = time.monotonic()
        while not port.finished:
            woken = self._wake.is_set()
            self._wake.clear()
            now = time.monotonic()
            try:
                if woken or now - last_check >= _CHECK_S:
                    # A stop made elsewhere: its broadcast wakes this loop; the record
                    # is also read now and then, for a broadcast missed in a reconnect.
                    cur = await state.record()
                    if cur is None or cur[0]["status"] != "running":
                        run.adopt(cur[0] if cur is not None else {})
                        return
                if now >= self._scan_due(last_scan, pause, silence):
                    if await is_quiet(w.link, w.names, agents, state, loop_workers):
                        await run.end_as("idle")
                        return
                    last_scan = time.monotonic()
                    pause = min(pause * 2, _POLL_S[1])
                elif silence < _SILENCE_S and now < self._heard_at() + silence:
                    # Events still come: look again less often.
                    silence = min(silence * 2, _SILENCE_S)
                if now - last_check >= _CHECK_S:
                    last_check = now
                    live = await self._live()
                    hosted = {a for x in live for a in x["agents"]}
                    loop_workers = [str(x["id"]) for x in live if x.get("loops")]
                    for wid in loop_workers:
                        if await state.busy(wid) is None:
                            await self._announce()  # a worker that missed the start
                            break
                    for a in agents:
                        if a in hosted:
                            orphan_since.pop(a, None)
                        else:
                            orphan_since.setdefault(a, now)
                    waiting = await self._waiting_agents(agents)
                    self.missing = [
                        a for a in waiting
                        if a in orphan_since and now - orphan_since[a] >= self.wait_workers_s
                    ]  # fmt: skip
                    if self.missing:
                        await run.end_as("error", self._missing_text())
                        return
            except (nats.errors.Error, nats.js.errors.Error, OSError):
                # The server is restarting: the client reconnects; scan again later.
                last_scan = time.monotonic()
                pause = min(pause * 2, _POLL_S[1])
            due = min(self._scan_due(last_scan, pause, silence), last_check + _CHECK_S)
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(due - time.monotonic(), 0.001))

    def _heard_at(self) -> float:
        assert self.recorder is not None
        return self.recorder.heard_at

    def _scan_due(self, last_scan: float, pause: float, silence: float) -> float:
        """When the next idle scan is due: ``pause`` after the last one, and once the
        run's event subject has been silent for ``silence``.

        A turn publishes its events before its delivery is acknowledged, so while
        they keep coming the run is not over: a scan then (a few requests to the
        server for each agent) would find it busy. Waiting for a silence only delays
        a scan, never makes one wrong, and the run's last events are followed by a
        silence, so ``idle`` is still found, within about ``silence`` (at most
        :data:`_SILENCE_S`) of the last turn, unless a scan ran less than ``pause``
        (at most :data:`_POLL_S`'s longest) before."""
        return max(last_scan + pause, self._heard_at() + silence)

    async def _waiting_agents(self, agents: Sequence[str]) -> list[str]:
        w = self.run.worker
        out: list[str] = []
        for a in agents:
            info = await w.link.js.consumer_info(w.names.inbox_stream, w.names.consumer(a))
            if info.num_pending or info.num_ack_pending:
                out.append(a)
        return out

    async def _settle(self) -> None:
        """Give turns in progress elsewhere (cut short by the stop) a moment to end
        and publish their events, so the transcript has them."""
        w = self.run.worker
        agents = list(self.run.port.spec.graph.agents)
        deadline = time.monotonic() + _SETTLE_S
        while time.monotonic() < deadline:
            busy = False
            with contextlib.suppress(Exception):
                for a in agents:
                    info = await w.link.js.consumer_info(w.names.inbox_stream, w.names.consumer(a))
                    if info.num_ack_pending:
                        busy = True
                        break
            if not busy:
                return
            await asyncio.sleep(0.02)
