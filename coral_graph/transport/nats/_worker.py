"""A worker: one process hosting some agents of a graph for every run on that graph.

Each hosted agent has one durable pull consumer (``in_<agent>``, one delivery in
flight). A delivery is acknowledged only after the turn that handled it ended and
its events were stored on the server, so a worker that dies mid-turn loses nothing:
the server gives the delivery again (to a restarted worker, or to another one that
hosts the agent) once ``ack_wait`` passes without a sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from coral_graph._budgets import Budgets
from coral_graph._errors import BudgetExceededError
from coral_graph._events import AgentErrored, DeliveryHandled, Event, event_to_dict
from coral_graph._graph import AgentGraph
from coral_graph._model import AgentUsage, Message
from coral_graph._types import USER, AgentName
from coral_graph.transport.nats._conn import DEFAULT_ACK_WAIT_S, Link, ensure_graph
from coral_graph.transport.nats._context import NatsContext
from coral_graph.transport.nats._errors import (
    GraphMismatchError,
    MessageTooLargeError,
    WireError,
)
from coral_graph.transport.nats._names import GraphIdentity, Names
from coral_graph.transport.nats._state import Replica, RunState
from coral_graph.transport.nats._wire import decode, encode

__all__ = ["HEARTBEAT_S", "Worker", "WorkerRun", "check_identity", "live_workers"]

HEARTBEAT_S = 1.0
"""How often a worker refreshes its record; one silent for 5 of these is gone."""
_LLM_COUNTERS = ("llm_calls", "tokens", "cost")


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


class WorkerRun:
    """What one worker knows of one run: its record, shared state and replica."""

    def __init__(self, worker: Worker, run_id: str, record: dict[str, Any]) -> None:
        self.worker = worker
        self.run_id = run_id
        self.graph: AgentGraph = worker.graph
        self.task = str(record["task"])
        self.entry = [AgentName(a) for a in record["entry"]]
        self.answer_by = {AgentName(a) for a in record["answer_by"]}
        self.budgets = Budgets(**record["budgets"])
        self.max_content_chars = int(record.get("max_content_chars") or 100_000)
        self.graph_hash = str(record["graph_hash"])
        self.state = RunState(worker.kv, run_id)
        self.replica = Replica(self.state)
        self.finished = record["status"] != "running"
        self.stop_reason: str | None = record.get("stop_reason")
        self.turns: set[asyncio.Task[Any]] = set()
        # Turns inside an operation that changes shared state (reserve, append, emit,
        # deliver): a stop or a timeout cancels them when the operation is complete,
        # never half-way (a reserved message is always appended and recorded).
        self._committing: dict[asyncio.Task[Any], int] = {}
        self._cancel_later: set[asyncio.Task[Any]] = set()
        self.llm_totals = {k: 0.0 for k in _LLM_COUNTERS}
        self.pending_stop: str | None = None
        self._queued: list[Event] = []
        # Acknowledgements of publishes sent without waiting: all of them are awaited
        # (settle) before the turn's delivery is acknowledged.
        self._unsettled: list[asyncio.Future[Any]] = []

    # -- events ---------------------------------------------------------------

    def emit_nowait(self, ev: Event) -> None:
        """Queue an event; it is published before the next one, or at the turn's end."""
        self._queued.append(ev)

    async def emit(self, ev: Event, **extra: Any) -> None:
        """Publish ``ev`` after what was queued. The server's acknowledgement is
        awaited by :meth:`settle`, before the turn's delivery is acknowledged."""
        await self.flush()
        await self._publish(ev, extra)

    async def flush(self) -> None:
        while self._queued:
            await self._publish(self._queued.pop(0), {})

    async def _publish(self, ev: Event, extra: dict[str, Any]) -> None:
        w = self.worker
        data = encode("e", worker=w.tag, ev=event_to_dict(ev), **extra)
        await self.publish_later(w.names.events(self.run_id), data)

    async def publish_later(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish without waiting for the server's acknowledgement (one connection
        keeps the order); :meth:`settle` waits for all of them."""
        fut = await self.worker.link.js.publish_async(subject, data, headers=headers)
        self._unsettled.append(fut)

    async def settle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the server has stored everything published so far; raises (and
        so leaves the delivery unacknowledged) if it has not within ``timeout``."""
        await self.flush()
        pending, self._unsettled = self._unsettled, []
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), timeout)

    # -- deliveries and the stop ----------------------------------------------

    def check_payload(
        self, tid: str, content: str, mentions: tuple[str, ...], metadata: Any
    ) -> None:
        msg = Message(tid, tid, 1 << 40, "x" * 64, content, mentions, 0.0, None, metadata)  # type: ignore[arg-type]
        size = len(encode("d", run=self.run_id, to="x" * 64, msg=msg.to_dict()))
        limit = self.worker.max_payload - 1024  # headers and subject
        if size > limit:
            raise MessageTooLargeError(size, limit)

    async def remember(self, turn: str, n: int, ref: str) -> None:
        """Remember what the n-th operation of ``turn`` made (for a replay)."""
        await self.publish_later(self.state.key_subject(f"{self.run_id}.c.{turn}.{n}"),
                                 encode("c", ref=ref))  # fmt: skip

    async def deliver(self, msg: Message, targets: list[AgentName]) -> None:
        """One delivery per target, de-duplicated by the server on its id."""
        w = self.worker
        data = msg.to_dict()
        for t in targets:
            await self.publish_later(
                w.names.inbox(self.run_id, t),
                encode("d", run=self.run_id, to=t, msg=data),
                headers={"Nats-Msg-Id": f"{self.run_id}/{msg.id}>{t}"},
            )

    async def stop(
        self, reason: str, *, error: str | None = None, answer: Message | None = None
    ) -> None:
        """End the run with ``reason`` unless it has ended; tell every process."""
        if await self.state.finish(reason, error=error, answer=answer):
            w = self.worker
            await w.link.nc.publish(
                w.names.ctl(self.run_id), encode("stop", run=self.run_id, reason=reason)
            )
        self.mark_finished(reason)

    def mark_finished(self, reason: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop_reason = reason
        current = asyncio.current_task()
        for t in list(self.turns):
            if t is not current:
                self.cancel_turn(t)

    def cancel_turn(self, task: asyncio.Task[Any]) -> None:
        """Cancel a turn now, or as soon as its operation in progress is complete."""
        if task in self._committing:
            self._cancel_later.add(task)
        else:
            task.cancel()

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Around one operation that changes shared state: not cancelled half-way."""
        task = asyncio.current_task()
        if task is None or task not in self.turns:
            yield
            return
        self._committing[task] = self._committing.get(task, 0) + 1
        try:
            yield
        finally:
            n = self._committing.pop(task) - 1
            if n:
                self._committing[task] = n
            elif task in self._cancel_later:
                self._cancel_later.discard(task)
                task.cancel()  # delivered at the turn's next await

    # -- LLM budgets -----------------------------------------------------------

    async def load_llm_totals(self) -> None:
        b = self.budgets
        if b.max_llm_calls is None and b.max_tokens is None and b.max_cost_usd is None:
            return
        for k in _LLM_COUNTERS:
            self.llm_totals[k] = float((await self.state.counter(k))[0])

    def check_llm_budget(
        self, usage: AgentUsage, *, tokens: int, cost_usd: float, calls: int
    ) -> None:
        if self.finished:
            from coral_graph._errors import RuntimeClosedError

            raise RuntimeClosedError(f"run {self.run_id} has ended ({self.stop_reason})")
        b, t = self.budgets, self.llm_totals
        checks = (
            ("llm_calls", b.max_llm_calls, t["llm_calls"] + usage.llm_calls + calls),
            ("tokens", b.max_tokens, t["tokens"] + usage.tokens + tokens),
            ("cost", b.max_cost_usd, t["cost"] + usage.cost_usd + cost_usd),
        )
        for name, limit, value in checks:
            if limit is not None and value > limit:
                self.pending_stop = f"budget:{name}"
                raise BudgetExceededError(name, limit)

    async def settle_llm(self, usage: AgentUsage) -> None:
        if usage.llm_calls:
            await self.state.reserve("llm_calls", usage.llm_calls, None)
            await self.state.reserve("tokens", usage.tokens, None)
            await self.state.reserve("cost", usage.cost_usd, None)


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
        self.tag = f"{self.host}:{self.pid}"
        self.id = f"{self.host}-{self.pid}-{secrets.token_hex(3)}".replace(".", "_")
        self.max_payload = int(link.nc.max_payload or 1 << 20)
        self.runs: dict[str, WorkerRun] = {}
        self.kv: KeyValue = None  # type: ignore[assignment]
        self.workers: KeyValue = None  # type: ignore[assignment]
        self.handled = 0
        self._draining = asyncio.Event()
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))

    async def start(self) -> list[str]:
        """Make the graph's streams and bucket, check the graph, pick the agents,
        and register. Returns the hosted agents."""
        self.kv, self.workers = await ensure_graph(
            self.link, self.names, self.graph.agents, ack_wait_s=self.ack_wait_s
        )
        await check_identity(self.kv, self.workers, self.identity)
        loops = [a for a in self.graph.agents if self.graph.spec(a).is_loop]
        if self.requested:
            unknown = [a for a in self.requested if a not in self.graph]
            if unknown:
                from coral_graph._errors import UnknownAgentError

                raise UnknownAgentError(unknown[0], self.graph.agents)
            self.agents = list(dict.fromkeys(self.requested))
        else:
            taken = {a for rec in await live_workers(self.workers) for a in rec["agents"]}
            self.agents = [a for a in self.graph.agents if a not in taken and a not in loops]
        bad = [a for a in self.agents if a in loops]
        if bad:
            from coral_graph._errors import ConfigError

            raise ConfigError(
                f"agent {bad[0]!r} is loop-style (async def run(ctx)); the NATS transport "
                "hosts handler-style agents (async def handle(ctx, message)) only",
                field=f"agents.{bad[0]}",
            )
        await self._register()
        return self.agents

    async def _register(self) -> None:
        await self.workers.put(
            self.id,
            encode(
                "w",
                id=self.id,
                host=self.host,
                pid=self.pid,
                agents=self.agents,
                graph_hash=self.identity.hash,
                ts=time.time(),
            ),
        )

    def drain(self) -> None:
        """Stop taking deliveries; turns in progress finish and are acknowledged."""
        self._draining.set()

    async def serve(self) -> None:
        """Handle deliveries until :meth:`drain`; then deregister."""
        sub = await self.link.nc.subscribe(self.names.all_ctl, cb=self._on_ctl)
        tasks = [asyncio.create_task(self._heartbeat())]
        tasks += [asyncio.create_task(self._agent_loop(a)) for a in self.agents]
        try:
            await asyncio.gather(*tasks[1:])
        finally:
            tasks[0].cancel()
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.workers.delete(self.id)
            for run in self.runs.values():
                await run.replica.aclose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await self._register()

    async def _on_ctl(self, m: Msg) -> None:
        try:
            rec = decode(m.data, "stop")
        except WireError as exc:
            self._log(
                f"coral-graph worker: skipped a malformed control message on {m.subject}: {exc}"
            )
            return
        run = self.runs.get(str(rec["run"]))
        if run is not None:
            run.mark_finished(str(rec["reason"]))

    async def _agent_loop(self, agent: str) -> None:
        names = self.names
        js = self.link.js
        sub = None
        while not self._draining.is_set():
            try:
                if sub is None:
                    sub = await js.pull_subscribe_bind(
                        durable=names.consumer(agent), stream=names.inbox_stream
                    )
                msgs = await sub.fetch(1, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                # The server is restarting or unreachable: the client reconnects.
                self._log(f"coral-graph worker: {agent}: {type(exc).__name__}: {exc}; retrying")
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                if self._draining.is_set():
                    with contextlib.suppress(Exception):
                        await m.nak()  # not started: another worker may take it now
                    continue
                await self._guarded(agent, m)

    async def _guarded(self, agent: str, m: Msg) -> None:
        try:
            await self._handle(agent, m)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            # The turn ran but its end could not be stored (the server went away):
            # the delivery is not acknowledged and comes again.
            self._log(
                f"coral-graph worker: {agent}: {type(exc).__name__}: {exc}; will be redelivered"
            )

    async def _run(self, run_id: str) -> WorkerRun | None:
        run = self.runs.get(run_id)
        if run is not None:
            return run
        state = RunState(self.kv, run_id)
        cur = await state.record()
        if cur is None:
            return None
        run = WorkerRun(self, run_id, cur[0])
        await run.replica.start()
        self.runs[run_id] = run
        return run

    async def _foreign(self, m: Msg, run_id: str | None, why: str) -> None:
        self._log(f"coral-graph worker: skipped a malformed message on {m.subject}: {why}")
        if run_id is not None:
            run = self.runs.get(run_id)
            if run is not None:
                with contextlib.suppress(Exception):
                    await run.emit(
                        AgentErrored(
                            run_id, 0, time.time(), "user", None, "WireError",
                            f"skipped a malformed message on {m.subject}: {why}", "", "continue",
                        )
                    )  # fmt: skip
        with contextlib.suppress(Exception):
            await m.term()

    async def _handle(self, agent: str, m: Msg) -> None:
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
        run = await self._run(run_id)
        if run is None:
            await self._foreign(m, None, f"no run {run_id} on this graph")
            return
        if run.finished:
            await m.ack_sync()  # the run ended: nothing more is handled in it
            return
        if run.graph_hash != self.identity.hash:
            await run.stop(
                "error",
                error=f"worker {self.tag} has another version of the graph than the run "
                f"(hash {self.identity.hash} vs {run.graph_hash})",
            )
            await m.ack_sync()
            return
        meta = m.metadata
        # A turn is known by what it handles (message, recipient), not by the stream
        # sequence: a delivery published twice (a replay whose first copy the server
        # no longer remembers) is still the same turn.
        turn = f"{msg.thread_id}.{msg.seq}.{agent}"
        attempt = int(meta.num_delivered)
        sender = msg.sender
        if not ((sender == USER and agent in run.entry) or self.graph.has_edge(sender, agent)):
            await run.emit(
                AgentErrored(
                    run_id, 0, time.time(), agent, msg.id, "EdgeNotAllowedError",
                    f"refused at the receiver: no edge {sender} -> {agent}", "", "continue",
                )
            )  # fmt: skip
            await m.ack_sync()
            return
        # Has this turn begun before? A delivery comes again after a worker died in
        # its turn, and also (with its delivery count reset) after a nats-server that
        # was killed lost its newest acknowledgements: so ask the bucket, not the count.
        replay = await run.state.made(turn, 0) is not None
        b = run.budgets
        if not replay:
            if b.max_turns is not None:
                if await run.state.reserve(f"turns.{agent}", 1, b.max_turns) is None:
                    await run.stop("budget:turns")
                    await m.ack_sync()
                    return
            await run.remember(turn, 0, "turn")
        if replay or attempt > 1:
            await run.emit(
                AgentErrored(
                    run_id, 0, time.time(), agent, msg.id, "Redelivered",
                    f"delivery {msg.id} handled again (attempt {attempt}): its earlier "
                    "handling did not reach its acknowledgement (a worker or the NATS "
                    "server stopped)", "", "continue",
                )
            )  # fmt: skip
        await run.replica.catch_up(msg.thread_id, msg.seq)
        await run.load_llm_totals()
        ctx = NatsContext(run, AgentName(agent), turn, replay=replay or attempt > 1)
        ok = await self._turn(run, agent, ctx, msg, m)
        if run.finished and run.stop_reason is not None and ok is None:
            await run.settle()
            await m.ack_sync()  # cancelled because the run ended
            return
        await run.settle_llm(ctx.usage)
        if run.pending_stop is not None:
            await run.stop(run.pending_stop)
            run.pending_stop = None
        dur = time.time() - ctx.t0
        await run.emit(
            DeliveryHandled(run_id, 0, time.time(), agent, msg.id, "handle", bool(ok), dur),
            attempt=attempt,
            usage=ctx.usage.to_dict(),
        )
        # The turn's messages, deliveries and events are stored before the ack: so a
        # crash loses nothing, and "no unacknowledged delivery" means "no turn whose
        # effects are still on their way" (the idle scan relies on it).
        await run.settle()
        await m.ack_sync()
        self.handled += 1

    async def _turn(
        self, run: WorkerRun, agent: str, ctx: NatsContext, msg: Message, m: Msg
    ) -> bool | None:
        """Run one turn; True/False for ok/failed, None when cancelled by the stop."""
        spec = self.graph.spec(agent)
        handle = spec.agent.handle  # type: ignore[union-attr]
        limit = spec.turn_timeout_s or run.budgets.turn_timeout_s
        ctx.t0 = time.time()
        beat = asyncio.create_task(self._keep_alive(m))
        # NatsContext has AgentContext's public shape (duck-typed: the core's context
        # is bound to the in-process router).
        task = asyncio.create_task(handle(ctx, msg))  # type: ignore[arg-type]
        run.turns.add(task)
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
            if not done:
                run.cancel_turn(task)
                with contextlib.suppress(BaseException):
                    await task
                from coral_graph._errors import TurnTimeoutError

                await self._failed(run, agent, msg, TurnTimeoutError(agent, limit or 0.0))
                return False
            if task.cancelled():
                return None
            exc = task.exception()
            if exc is None:
                return True
            if isinstance(exc, Exception):
                await self._failed(run, agent, msg, exc)
                return False
            raise exc
        finally:
            run.turns.discard(task)
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat

    async def _keep_alive(self, m: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await m.in_progress()

    async def _failed(self, run: WorkerRun, agent: str, msg: Message, exc: BaseException) -> None:
        spec = self.graph.spec(agent)
        action = spec.on_error
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        await run.emit(
            AgentErrored(
                run.run_id, 0, time.time(), agent, msg.id, type(exc).__name__, str(exc), tb, action
            )
        )
        if isinstance(exc, BudgetExceededError) and run.pending_stop is None:
            return
        if action == "stop":
            await run.stop("error", error=f"{agent}: {type(exc).__name__}: {exc}")
        elif action == "restart":
            hook = getattr(spec.agent, "on_restart", None)
            if hook is not None:
                try:
                    res = hook()
                    if inspect.isawaitable(res):
                        await res
                except Exception as hook_exc:
                    await run.stop("error", error=f"{agent}: on_restart failed: {hook_exc!r}")
