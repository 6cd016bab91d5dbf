"""A worker: one process hosting some agents of a graph for every run on that graph.

The agents run through the core: the worker opens a runtime on the graph with a
:class:`~coral_graph.transport.nats.NatsTransport` and joins each run
(``Runtime.join``) when the run starts (the run's ``ctl`` subject announces it),
or at the run's first delivery for one of its agents if it missed the
announcement. Turns, error policies, turn timeouts, budgets and the protocol's
rules are the core's; the worker pulls.

Each hosted agent has one durable pull consumer (``in_<agent>``, one delivery in
flight). A delivery is acknowledged only after the turn that handled it ended and
what the turn published (messages, deliveries, events) is stored on the server,
so a worker that dies mid-turn loses nothing: the server gives the delivery again
(to a restarted worker, or to another one that hosts the agent) once ``ack_wait``
passes without a sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from anyio.abc import TaskGroup
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from coral_graph._budgets import Budgets
from coral_graph._errors import ConfigError, UnknownAgentError
from coral_graph._events import AgentErrored, Event
from coral_graph._graph import AgentGraph
from coral_graph._model import Message
from coral_graph._runtime import Runtime, open_runtime
from coral_graph._types import AgentName, RunId
from coral_graph.transport.nats._conn import DEFAULT_ACK_WAIT_S, Link, ensure_graph
from coral_graph.transport.nats._errors import GraphMismatchError, WireError
from coral_graph.transport.nats._handover import hand_over
from coral_graph.transport.nats._names import GraphIdentity, Names
from coral_graph.transport.nats._run import NatsRun, NatsTransport
from coral_graph.transport.nats._state import RunState
from coral_graph.transport.nats._wire import decode, encode

__all__ = ["HEARTBEAT_S", "Worker", "check_identity", "live_workers"]

HEARTBEAT_S = 1.0
"""How often a worker refreshes its record; one silent for 5 of these is gone."""
_ENDED_KEEP = 1000  # ids of runs that ended here, remembered to drop late deliveries
_PULL_S = 1.0
"""How long one pull request for an agent's next delivery stays open on the server."""
_PULL = json.dumps({"batch": 1, "expires": int(_PULL_S * 0.98 * 1e9)}).encode()
_ACK_NEXT = b"+NXT " + _PULL


class _Inbox:
    """One agent's pull from its durable consumer, on a private subject.

    A pull request asks the server for one delivery (the consumer has one in flight
    at most). The acknowledgement of a handled delivery asks for the next one in
    the same message (``+NXT``): a busy agent costs the server one message per
    delivery less than an acknowledgement followed by a request."""

    def __init__(self, link: Link, names: Names, agent: str) -> None:
        self.nc = link.nc
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{names.inbox_stream}.{names.consumer(agent)}"
        self.inbox = link.nc.new_inbox()
        self.sub: Any = None
        self.open_until = 0.0  # when the request open on the server expires
        # What the server sent, handed over by the connection's reader (no task of
        # the subscription's own in between), and who waits for it.
        self._got: deque[Msg] = deque()
        self._direct = False  # whether the subscription was handed over
        self._waiter: asyncio.Future[None] | None = None

    def _arrived(self, m: Msg) -> None:
        self._got.append(m)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _subscribe(self) -> None:
        self.sub = await self.nc.subscribe(self.inbox)
        self._direct = hand_over(self.sub, self._arrived)  # (else read with next_msg)

    async def _take(self, timeout: float) -> Msg | None:  # noqa: ASYNC109
        """The next message on the inbox, or None after ``timeout`` seconds."""
        got = self._got
        if not self._direct:
            try:
                m: Msg = await self.sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                return None
            return m
        if not got:
            loop = asyncio.get_running_loop()
            w = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, w)
            try:
                await w
            finally:
                timer.cancel()
                self._waiter = None
        return got.popleft() if got else None

    async def next(self) -> Msg | None:
        """The next delivery, or None when none came while a request was open."""
        if self.sub is None:
            await self._subscribe()
        if time.monotonic() >= self.open_until:
            await self.nc.publish(self.api, _PULL, reply=self.inbox)
            self.open_until = time.monotonic() + _PULL_S
        while True:
            left = self.open_until - time.monotonic()
            m = await self._take(max(left, 0.01))
            if m is None:
                self.open_until = 0.0
                return None
            status = m.headers.get("Status") if m.headers and not m.data else None
            if status is None:
                return m
            if status != "100":  # not a heartbeat: a request ended (404, 408, 409)
                self.open_until = 0.0
                return None

    async def ack_next(self, m: Msg) -> None:
        """Acknowledge ``m`` and ask for the next delivery."""
        await self.nc.publish(m.reply, _ACK_NEXT, reply=self.inbox)
        self.open_until = time.monotonic() + _PULL_S

    async def close(self) -> None:
        """Stop pulling: a delivery the open request still brings goes back at once."""
        if self.sub is None:
            return
        with contextlib.suppress(Exception):
            while self.nc.is_connected and (left := self.open_until - time.monotonic()) > 0:
                m = await self._take(left)
                if m is None:
                    break
                if m.data:
                    await m.nak()  # not started: another worker may take it now
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()


def _wake(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


async def live_workers(workers: KeyValue) -> list[dict[str, Any]]:
    """The records of the live workers: the ``workers`` bucket forgets a record that
    was not refreshed for a few seconds (its max age)."""
    out: list[dict[str, Any]] = []
    try:
        keys = await workers.keys()
    except nats.js.errors.NoKeysError:
        return out
    for k in keys:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            e = await workers.get(k)
            if e.value is None:
                continue
            try:
                out.append(decode(e.value, "w"))
            except WireError:
                continue
    return out


async def check_identity(kv: KeyValue, workers: KeyValue, mine: GraphIdentity) -> None:
    """Refuse (:class:`GraphMismatchError`) when live workers run another version of
    this graph; otherwise record ``mine`` as the graph's identity."""
    for rec in await live_workers(workers):
        if rec["graph_hash"] != mine.hash:
            e = await _identity(kv)
            theirs = e if e is not None and e.hash == rec["graph_hash"] else None
            diffs = (
                mine.differences(theirs)
                if theirs is not None
                else [f"worker {rec['host']}:{rec['pid']} runs graph hash {rec['graph_hash']}"]
            )
            raise GraphMismatchError(mine.name, diffs)
    await kv.put("graph", encode("g", identity=mine.to_dict()))


async def _identity(kv: KeyValue) -> GraphIdentity | None:
    try:
        e = await kv.get("graph")
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    if e.value is None:
        return None
    return GraphIdentity.from_dict(decode(e.value, "g")["identity"])


class Worker:
    """Hosts ``agents`` of ``graph`` over the connection ``link``."""

    def __init__(
        self,
        link: Link,
        graph: AgentGraph,
        identity: GraphIdentity,
        agents: list[str] | None = None,
        *,
        ack_wait_s: float = DEFAULT_ACK_WAIT_S,
        log: Callable[[str], None] | None = None,
        origin: bool = False,
    ) -> None:
        self.link = link
        self.graph = graph
        self.identity = identity
        self.names = Names.for_graph(identity.name)
        self.requested = agents
        self.agents: list[str] = []
        self.ack_wait_s = ack_wait_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # The process that starts runs hosts nothing; its events are tagged "run:…".
        self.tag = f"run:{self.host}:{self.pid}" if origin else f"{self.host}:{self.pid}"
        self.id = f"{self.host}-{self.pid}-{secrets.token_hex(3)}".replace(".", "_")
        self.max_payload = int(link.nc.max_payload or 1 << 20)
        self.kv: KeyValue = None  # type: ignore[assignment]
        self.workers: KeyValue = None  # type: ignore[assignment]
        self.handled = 0
        # Runs this process takes part in (joined), being joined, and ended here.
        self.runs: dict[str, NatsRun] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self._joining: dict[str, anyio.Event] = {}
        self._ended: dict[str, None] = {}
        self._rt: Runtime | None = None
        self._tg: TaskGroup | None = None
        self._draining = asyncio.Event()
        # (link.drops, the inbox stream's last sequence) read together: see first_handling.
        self._mark: tuple[int, int] = (-1, 0)
        self._inboxes: dict[str, _Inbox] = {}
        # The delivery each agent's loop has taken and not finished with (see hand_back).
        self._held: dict[str, Msg] = {}
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))

    @property
    def loops(self) -> list[str]:
        """The loop agents (``async def run(ctx)``) hosted here."""
        return [a for a in self.agents if self.graph.spec(a).is_loop]

    async def open(self) -> None:
        """Make the graph's streams and bucket (if they are not there) and check that
        the live workers run the same graph."""
        self.kv, self.workers = await ensure_graph(
            self.link, self.names, self.graph.agents, ack_wait_s=self.ack_wait_s
        )
        await check_identity(self.kv, self.workers, self.identity)

    async def start(self) -> list[str]:
        """:meth:`open`, pick the agents and register. Returns the hosted agents."""
        await self.open()
        await self._read_mark()
        others = await live_workers(self.workers)
        taken = {a for rec in others for a in rec["agents"]}
        if self.requested:
            unknown = [a for a in self.requested if a not in self.graph]
            if unknown:
                raise UnknownAgentError(unknown[0], self.graph.agents)
            self.agents = list(dict.fromkeys(self.requested))
        else:
            self.agents = [a for a in self.graph.agents if a not in taken]
        twice = [a for a in self.loops if a in taken]
        if twice:
            raise ConfigError(
                f"agent {twice[0]!r} is loop-style (async def run(ctx)) and a live worker "
                "hosts it already: a loop agent runs in one process (two would each run "
                "its run(ctx)); stop that worker first or host another agent",
                field=f"agents.{twice[0]}",
            )
        # A missing API key or an unknown model of a hosted agent: refused now, not at
        # the first run (this also loads litellm before any turn needs it).
        self.graph.check_ready(self.agents)
        await self._register()
        return self.agents

    async def first_handling(self, m: Msg) -> bool:
        """Whether delivery ``m`` is certainly handled for the first time, known
        without asking the bucket.

        A delivery is given again after the worker handling it died (the server
        counts a second attempt) or after a nats-server that was killed lost its
        newest acknowledgements (the count may start at 1 again). The second case
        needs a server restart, which drops this process's connection. So a first
        attempt stored in the inbox after the last sequence read here, while the
        connection has not dropped since, is new; any other delivery may repeat a
        turn, and each operation of that turn looks for its origin in the bucket
        (see ``RunState.find_origin``)."""
        md = m.metadata
        if md.num_delivered != 1 or md.sequence is None:
            return False
        if self._mark[0] != self.link.drops and not await self._read_mark():
            return False
        return self._mark[0] == self.link.drops and md.sequence.stream > self._mark[1]

    async def _read_mark(self) -> bool:
        drops = self.link.drops
        try:
            info = await self.link.js.stream_info(self.names.inbox_stream)
        except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError):
            return False
        if self.link.drops != drops or info.state is None:
            return False
        self._mark = (drops, int(info.state.last_seq or 0))
        return True

    async def _register(self) -> None:
        await self.workers.put(
            self.id,
            encode(
                "w",
                id=self.id,
                host=self.host,
                pid=self.pid,
                agents=self.agents,
                loops=self.loops,
                graph_hash=self.identity.hash,
                ts=time.time(),
            ),
        )

    def drain(self) -> None:
        """Stop taking deliveries; turns in progress finish and are acknowledged."""
        self._draining.set()

    @property
    def in_progress(self) -> int:
        """How many deliveries taken here are not finished with yet (turns running,
        or waiting for what they published to be stored)."""
        return len(self._held)

    async def hand_back(self) -> int:
        """Stop now instead of draining: give the deliveries taken here and not
        finished back to the server (a negative acknowledgement), so they come again
        at once to a live worker of their agent instead of after ``ack_wait``. The
        turns they began are cut short, as by a crash: their replay finds what they
        made (see ``NatsThreads``). Returns how many were handed back."""
        held = list(self._held.values())
        for m in held:
            with contextlib.suppress(Exception):
                await m.nak()
        with contextlib.suppress(Exception):
            await self.link.nc.flush(timeout=1)
        return len(held)

    async def serve(self) -> None:
        """Handle deliveries until :meth:`drain`; then leave the runs (without ending
        them: other workers go on) and deregister."""
        sub = await self.link.nc.subscribe(self.names.all_ctl, cb=self.on_ctl)
        try:
            async with open_runtime(
                self.graph, transport=NatsTransport(worker=self), store=False
            ) as rt:
                self._rt = rt
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._heartbeat)
                    async with anyio.create_task_group() as pulls:
                        for a in self.agents:
                            pulls.start_soon(self._agent_loop, AgentName(a))
                    # Drained: every delivery taken here was handled and acknowledged.
                    for run in self.runs.values():
                        run.leaving = True
                    tg.cancel_scope.cancel()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self.link.nc.is_connected:
                # (Without a server the record is forgotten by itself within
                # WORKER_TTL_S: waiting out the delete's timeout would only delay
                # the exit.)
                with contextlib.suppress(Exception):
                    await self.workers.delete(self.id)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await self._register()
            # A stop broadcast missed (e.g. during a reconnect) is read from the record;
            # so are the changes of the run's state noticed while the connection was
            # down.
            for run in list(self.runs.values()):
                with contextlib.suppress(Exception):
                    cur = await run.state.record()
                    if cur is not None and cur[0]["status"] != "running":
                        run.remote_stop(str(cur[0].get("stop_reason") or "error"))
                    elif run.synced != self.link.drops:
                        await run.resync()
                with contextlib.suppress(Exception):
                    if run.origin is None:  # (the starting process does not watch itself)
                        await run.check_origin()

    # -- runs -----------------------------------------------------------------

    def route_event(self, ev: Event) -> None:
        """The runtime's sink: each event to the run it belongs to."""
        run = self.runs.get(ev.run_id)
        if run is not None:
            run.on_event(ev)

    def joined(self, run: NatsRun) -> None:
        """``run`` has started here (called by its ``start``)."""
        self.runs[run.run_id] = run
        ev = self._joining.get(run.run_id)
        if ev is not None:
            ev.set()

    def left(self, run: NatsRun) -> None:
        if self.runs.get(run.run_id) is run:
            del self.runs[run.run_id]
        self._ended[run.run_id] = None
        while len(self._ended) > _ENDED_KEEP:
            del self._ended[next(iter(self._ended))]

    async def _run_for(self, run_id: str) -> NatsRun | str:
        """The run joined here, joining it first if needed; or why it cannot be:
        ``"ended"``, ``"unknown"``."""
        run = self.runs.get(run_id)
        if run is not None:
            return run
        if run_id in self._ended:
            return "ended"
        ev = self._joining.get(run_id)
        if ev is None:
            cur = await RunState(self.kv, run_id).record()
            if cur is None:
                return "unknown"
            rec = cur[0]
            if rec["status"] != "running":
                self._ended[run_id] = None
                return "ended"
            if run_id in self.runs or run_id in self._joining:
                return await self._run_for(run_id)  # joined meanwhile
            if str(rec["graph_hash"]) != self.identity.hash:
                await self._refuse(run_id, rec)
                return "ended"
            ev = self._joining[run_id] = anyio.Event()
            self.records[run_id] = rec
            assert self._tg is not None
            self._tg.start_soon(self._join, run_id, rec, ev, name=f"coral-join-{run_id}")
        await ev.wait()
        return self.runs.get(run_id) or "ended"

    async def end_run(
        self,
        state: RunState,
        reason: str,
        *,
        error: str | None = None,
        answer: Message | None = None,
    ) -> bool:
        """End the run of ``state`` for everyone: its record's stop, set once by
        compare-and-set, then broadcast on its ``ctl`` subject (a worker that misses
        the broadcast reads the record). Returns False when another process ended it
        first (nothing is broadcast then)."""
        if not await state.finish(reason, error=error, answer=answer):
            return False
        rid = state.run_id
        await self.link.nc.publish(self.names.ctl(rid), encode("stop", run=rid, reason=reason))
        return True

    async def _refuse(self, run_id: str, rec: dict[str, Any]) -> None:
        error = (
            f"worker {self.tag} has another version of the graph than the run "
            f"(hash {self.identity.hash} vs {rec['graph_hash']})"
        )
        await self.end_run(RunState(self.kv, run_id), "error", error=error)
        self._ended[run_id] = None

    async def _join(self, run_id: str, rec: dict[str, Any], ev: anyio.Event) -> None:
        assert self._rt is not None
        try:
            await self._rt.join(
                RunId(run_id),
                str(rec["task"]),
                entry=list(rec["entry"]),
                answer_by=list(rec["answer_by"]),
                budgets=Budgets(**rec["budgets"]),
            )
        except Exception as exc:
            # This process cannot take part (e.g. an LLM agent's key is missing): the
            # run ends with the reason, never waits for it.
            self._log(f"coral-graph worker: cannot join {run_id}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.end_run(
                    RunState(self.kv, run_id), "error", error=f"worker {self.tag}: {exc}"
                )
        finally:
            self._joining.pop(run_id, None)
            self.records.pop(run_id, None)
            self._ended.setdefault(run_id, None)
            ev.set()

    async def on_ctl(self, m: Msg) -> None:
        try:
            rec = decode(m.data)
            if rec["t"] not in ("stop", "start"):
                raise WireError(f"unexpected record type {rec['t']!r}")
            rid = str(rec["run"])
        except (WireError, KeyError) as exc:
            self._log(
                f"coral-graph worker: skipped a malformed control message on {m.subject}: {exc}"
            )
            return
        if rec["t"] == "stop":
            run = self.runs.get(rid)
            if run is not None:
                run.remote_stop(str(rec["reason"]))
        elif self.agents and rid not in self.runs and rid not in self._joining:
            # A run started: this worker joins it now, not at its first delivery (which
            # would wait for the join), and the loop agents hosted here start in it.
            assert self._tg is not None
            self._tg.start_soon(self._join_quietly, rid)

    async def _join_quietly(self, run_id: str) -> None:
        try:
            await self._run_for(run_id)
        except Exception as exc:
            self._log(f"coral-graph worker: cannot join {run_id}: {type(exc).__name__}: {exc}")

    # -- deliveries -------------------------------------------------------------

    async def _agent_loop(self, agent: AgentName) -> None:
        box = self._inboxes[agent] = _Inbox(self.link, self.names, agent)
        try:
            while not self._draining.is_set():
                try:
                    m = await box.next()
                except (nats.errors.Error, OSError) as exc:
                    # The server is restarting or unreachable: the client reconnects.
                    self._log(f"coral-graph worker: {agent}: {type(exc).__name__}: {exc}; retrying")
                    box.open_until = 0.0
                    await anyio.sleep(0.5)
                    continue
                if m is None:
                    continue
                if self._draining.is_set():
                    with contextlib.suppress(Exception):
                        await m.nak()  # not started: another worker may take it now
                    continue
                self._held[agent] = m
                try:
                    await self._take(agent, m)
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    # The turn ran but its end could not be stored (the server went
                    # away): the delivery is not acknowledged and comes again.
                    self._log(
                        f"coral-graph worker: {agent}: {type(exc).__name__}: {exc}; "
                        "will be redelivered"
                    )
                finally:
                    self._held.pop(agent, None)
        finally:
            with anyio.CancelScope(shield=True):
                await box.close()

    async def acknowledge(self, agent: AgentName, m: Msg) -> None:
        """Acknowledge a delivery whose turn ended and whose publishes are stored; the
        same message asks for the agent's next delivery unless this worker drains.
        Not waited for: the server has it before anything else this process sends."""
        box = self._inboxes.get(agent)
        if box is None or self._draining.is_set() or not m.reply:
            await m.ack()
        else:
            await box.ack_next(m)

    async def _take(self, agent: AgentName, m: Msg) -> None:
        run_id = Names.run_of(m.subject)
        try:
            d = decode(m.data, "d")
            msg = Message.from_dict(d["msg"])
        except (WireError, KeyError, TypeError, ValueError) as exc:
            await self._foreign(m, run_id, str(exc))
            return
        if run_id is None or d["run"] != run_id or d["to"] != agent:
            await self._foreign(m, run_id, "the record's run or recipient is not its subject's")
            return
        run = await self._run_for(run_id)
        if run == "unknown":
            await self._foreign(m, None, f"no run {run_id} on this graph")
            return
        if isinstance(run, str) or run.port.finished:
            await m.ack_sync()  # the run ended: nothing more is handled in it
            return
        await run.take(agent, m, msg)
        self.handled += 1

    async def _foreign(self, m: Msg, run_id: str | None, why: str) -> None:
        self._log(f"coral-graph worker: skipped a malformed message on {m.subject}: {why}")
        run = self.runs.get(run_id) if run_id is not None else None
        if run is not None:
            run.publish_event(
                AgentErrored(
                    run.run_id, 0, time.time(), "user", None, "WireError",
                    f"skipped a malformed message on {m.subject}: {why}", "", "continue",
                )
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await run.settle()
        with contextlib.suppress(Exception):
            await m.term()
