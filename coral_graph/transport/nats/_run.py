"""The NATS transport behind the core's seam (:mod:`coral_graph.transport._base`).

A worker process runs the graph's agents through the core (``Runtime.join``) with a
:class:`NatsTransport`; each run it takes part in gets a :class:`NatsRun`:

* ``threads`` (:class:`NatsThreads`): the run's threads in the graph's key-value
  bucket. ``update`` runs the core's rule check on a copy of the thread's current
  state and commits it with one compare-and-set of the thread's header; on a
  conflict it runs the check again on a fresh copy;
* ``counters`` (:class:`NatsCounters`): counters in the bucket, reserved by
  compare-and-set, so the core's message budget and LLM ledger hold across workers;
* ``send``: one JetStream publish per target (``Nats-Msg-Id`` de-duplicates a
  publish made twice); the worker's pull loop feeds what arrives through
  ``port.feed`` (:meth:`NatsRun.take`) and ``ack`` lets it acknowledge the broker
  message once the turn's publishes are stored;
* ``stopped`` sets the run record's stop reason (once, by CAS) and broadcasts it;
  a stop from elsewhere reaches ``port.stop``;
* every event this process emits in the run is published on the run's event
  subject, where the recorder puts all workers' events in one order: the events
  so far in one record, queued with the deliveries that follow them and sent
  together at the end of the event loop's step (see :meth:`NatsRun._queue`), so a
  turn usually costs one event record, and each stream one acknowledgement.

What a replayed turn repeats: the transport knows the one delivery each hosted
agent has in flight (``max_ack_pending = 1``), so the ``n``-th operation of that
turn has a name, its origin ``<turn>.<n>``. The ``n``-th thread created takes an id
derived from it, and a message is appended with its origin in the same
compare-and-set (the thread header's ``lo``, then the message's key). When the
delivery comes again after a crash, those operations find what they made and make
the same thread and the same message id again instead of new ones: nothing is
appended twice, the broker drops the deliveries it already has, and the recorder
drops a repeated event of the same message or thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from coral_graph._events import AgentErrored, Event, event_to_dict
from coral_graph._model import Message, Thread
from coral_graph._types import USER, AgentName, StopReason, ThreadId
from coral_graph.transport.nats._conn import DEFAULT_ACK_WAIT_S
from coral_graph.transport.nats._errors import GraphMismatchError, MessageTooLargeError
from coral_graph.transport.nats._origin import Origin
from coral_graph.transport.nats._shared import Inflight, NatsCounters, NatsThreads, needs_await
from coral_graph.transport.nats._state import (
    OriginWatch,
    Replica,
    RunState,
    answer_of,
    origin_lost_error,
)
from coral_graph.transport.nats._wire import encode, encode_events

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from coral_graph._graph import AgentGraph
    from coral_graph.transport._base import RouterPort
    from coral_graph.transport.nats._worker import Worker

__all__ = ["NatsCounters", "NatsRun", "NatsThreads", "NatsTransport"]


# What _queue takes: (stream, subject, data, headers), or _EVENTS: "the events so far".
# Stream "" is a plain subject (a change notice).
_Item = tuple[str, str, bytes, dict[str, str] | None] | object
_EVENTS = object()
_INBOX, _EVENTS_STREAM = "inbox", "events"


class NatsRun:
    """One run in this process over NATS (a :class:`~coral_graph.transport.RunTransport`)."""

    needs_ack = True
    immediate = False

    state: RunState
    replica: Replica
    worker: Worker

    def __init__(self, transport: NatsTransport, port: RouterPort) -> None:
        self.transport = transport
        self.port = port
        self.run_id = port.run_id
        self.threads = NatsThreads(self)
        self.counters = NatsCounters(self)
        self.inflight: dict[str, Inflight] = {}
        self.record: dict[str, Any] = {}
        self.loops: list[str] = []  # loop agents hosted here
        # The starting process's side of the run (None in a process that joined it).
        self.origin: Origin | None = None
        # The run's threads once it ended, rebuilt from the transcript (the starting
        # process's result: its copy of the bucket may lag after a reconnect).
        self.final_threads: dict[ThreadId, Thread] | None = None
        # This process leaves the run without ending it (a worker drained by SIGTERM).
        self.leaving = False
        self._remote_stop = False
        self._recording = False  # an event of another process is being recorded here
        self._events: list[Event] = []
        self._unsettled: list[asyncio.Future[Any]] = []
        # What is queued to publish (see _queue), and a failure to publish it.
        self._out: list[_Item] = []
        self._out_lock = asyncio.Lock()
        self._out_error: Exception | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._busy: bool | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._busy_lock = asyncio.Lock()
        self._feeds = 0
        self._started = False
        self._changes = ""
        # The connection's drop count when the copy of the run was last read whole
        # (notices made while it was down are lost: see Worker._heartbeat).
        self.synced = 0

    # -- the RunTransport -------------------------------------------------------

    async def start(self) -> None:
        spec = self.port.spec
        w = self.worker = await self.transport.host(spec.graph)
        self.state = RunState(w.kv, self.run_id, w.id, w.link.asker)
        self.state.on_write = self.notice
        self.replica = Replica(self.state)
        self._origin_watch = OriginWatch(self.state)
        self.record = w.records.get(self.run_id, {})
        self.loops = [a for a in w.agents if w.graph.spec(a).is_loop]
        self._changes = w.names.changes(self.run_id)
        if self.transport.hosted:
            drops = w.link.drops
            # (A snapshot that failed is read again by the worker's heartbeat.)
            self.synced = drops if await self.replica.start(w.link.nc, self._changes) else -1
        self._started = True
        if self.loops:
            await self._set_busy(True)
        w.joined(self)
        if not spec.joining:
            self.origin = Origin(self, self.transport.wait_workers_s)
            await self.origin.start()

    def hosts(self, agent: AgentName) -> bool:
        return agent in self.transport.hosted

    def send_nowait(self, targets: Sequence[AgentName], msg: Message) -> None:
        needs_await("send_message")

    async def send(self, targets: Sequence[AgentName], msg: Message) -> None:
        """Publish one delivery per target after this process's events so far (see
        :meth:`_queue`); the broker's acknowledgements are awaited before the turn's
        delivery is acknowledged (:meth:`settle`)."""
        w = self.worker
        data = msg.to_dict()
        rid = self.run_id
        self._queue(_EVENTS)
        for t in targets:
            self._queue(
                (_INBOX, w.names.inbox(rid, t), encode("d", run=rid, to=t, msg=data),
                 {"Nats-Msg-Id": f"{rid}/{msg.id}>{t}"})
            )  # fmt: skip
        if msg.sender == USER and self.origin is not None:
            # The task (or a message of the user's): stored before the idle scan runs.
            await self._stored()
            self.origin.posted()

    def ack(self, agent: AgentName, msg: Message) -> None:
        inf = self.inflight.get(agent)
        if inf is not None and inf.msg.id == msg.id:
            del self.inflight[agent]
            if not inf.done.done():
                inf.done.set_result(None)

    def quiet(self) -> None:
        if self.loops and not self.port.finished:
            # Nothing queued and nobody busy here: once what this process published
            # is stored, its loop agents hold no work (see the idle scan).
            self._spawn(self._quiet(self._feeds))

    def stopped(self, reason: StopReason) -> None:
        if self._remote_stop or self.leaving or not self._started:
            return
        # Stored before the delivery of the turn that stopped the run is acknowledged
        # (settle waits for it): else the idle scan could see everything acknowledged
        # and end the run as idle first.
        self._stopping = asyncio.get_running_loop().create_task(self._broadcast(reason))

    async def finish(self) -> None:
        """The run stopped here. In the process that started it: wait for the turns
        the stop cut short elsewhere and for everyone's events, and count the usage
        of the agents that ran elsewhere (then the core records ``run_finished``)."""
        if self._stopping is not None:
            with contextlib.suppress(Exception):
                await self._stopping
        if self.origin is not None:
            await self.origin.finish()

    async def aclose(self) -> None:
        if not self._started:
            return
        try:
            if self.origin is not None:
                await self.origin.aclose()
            if self._stopping is not None:
                with contextlib.suppress(Exception):
                    await self._stopping
            while self._tasks:
                t = self._tasks.pop(0)
                with contextlib.suppress(Exception):
                    await t
            self.counters.give_back()
            with contextlib.suppress(Exception):
                await self.settle()
        finally:
            # Turns cut short by the stop: their deliveries are acknowledged (by the
            # pull loops, after settling), so nothing of a finished run comes back.
            for inf in list(self.inflight.values()):
                if not inf.done.done():
                    inf.done.set_result(None)
            self.inflight.clear()
            await self.replica.aclose()
            self.worker.left(self)

    # -- the worker's side -----------------------------------------------------

    async def take(self, agent: AgentName, m: Msg, msg: Message) -> None:
        """Feed one delivery from the broker to ``agent`` and wait until its turn has
        ended and what the turn published is stored; then acknowledge it."""
        st = self.state
        port = self.port
        turn = f"{msg.thread_id}.{msg.seq}.{agent}"
        attempt = int(m.metadata.num_delivered)
        sender = msg.sender
        graph = self.worker.graph
        entry = self.record.get("entry") or []
        if not ((sender == USER and agent in entry) or graph.has_edge(sender, agent)):
            # Edges are checked again at the receiver.
            self.publish_event(
                AgentErrored(
                    self.run_id, 0, time.time(), agent, msg.id, "EdgeNotAllowedError",
                    f"refused at the receiver: no edge {sender} -> {agent}", "", "continue",
                )
            )  # fmt: skip
            await self.settle()
            await m.ack_sync()
            return
        # Has this turn run before? A delivery comes again after a worker died in its
        # turn, and also (with its delivery count reset) after a nats-server that was
        # killed lost its newest acknowledgements. Most deliveries are known new (see
        # Worker.first_handling); for the others, each operation of the turn looks
        # for what it made the first time (see NatsThreads).
        maybe = not await self.worker.first_handling(m)
        inf = Inflight(m, msg, turn, maybe)
        if attempt > 1:
            self.redelivered(agent, inf)
        if (self.record.get("budgets") or {}).get("max_turns") is not None:
            if attempt == 1:  # (a turn handled again was counted the first time)
                limit = self.record["budgets"]["max_turns"]
                if await st.reserve(f"turns.{agent}", 1, limit) is None:
                    port.stop("budget:turns")
                    await self.settle()
                    await m.ack_sync()
                    return
        await self.replica.catch_up(msg.thread_id, msg.seq)
        self._feeds += 1  # a quiet() before this no longer holds
        if self.loops:
            await self._set_busy(True)
        if port.finished:
            await self.settle()
            await m.ack_sync()
            return
        self.inflight[agent] = inf
        port.feed(agent, msg)
        # While the turn runs, the server hears every third of ack_wait that it is alive.
        loop = asyncio.get_running_loop()
        every = self.worker.ack_wait_s / 3

        def alive() -> None:
            if not inf.done.done():
                self._spawn(_quietly(m.in_progress()))
                timer[0] = loop.call_later(every, alive)

        timer = [loop.call_later(every, alive)]
        try:
            await inf.done
        finally:
            timer[0].cancel()
        await self.settle()
        await self.worker.acknowledge(agent, m)

    def redelivered(self, agent: str, inf: Inflight) -> None:
        """Record (once) that ``agent``'s delivery ``inf`` is handled again: its
        delivery count says so, or its turn finds what it made the first time."""
        if inf.told:
            return
        inf.told = True
        msg, attempt = inf.msg, int(inf.m.metadata.num_delivered)
        self.publish_event(
            AgentErrored(
                self.run_id, 0, time.time(), agent, msg.id,
                "Redelivered",
                f"delivery {msg.id} handled again (attempt {attempt}): its earlier "
                "handling did not reach its acknowledgement (a worker or the NATS "
                "server stopped)", "", "continue",
            )
        )  # fmt: skip

    def remote_stop(self, reason: str) -> None:
        """A stop from another process: end the run here without broadcasting it (the
        starting process reads the stop, its error and answer from the run's record)."""
        if self.port.finished:
            return
        if self.origin is not None:
            self.origin.wake()
            return
        self._remote_stop = True
        self.port.stop(reason)  # type: ignore[arg-type]

    def adopt(self, record: dict[str, Any]) -> None:
        """End the run here as its record says it ended (a stop made elsewhere)."""
        self._remote_stop = True
        reason = str(record.get("stop_reason") or "error")
        self.port.stop(reason, record.get("error"), answer_of(record))  # type: ignore[arg-type]

    async def resync(self) -> None:
        """Read the run's state again (the worker's heartbeat does it when the
        connection dropped since :attr:`synced`: the change notices made meanwhile
        are lost)."""
        drops = self.worker.link.drops
        if await self.replica.snapshot():
            self.synced = drops

    async def check_origin(self) -> None:
        """End the run when the process that started it is gone (its heartbeat has not
        changed for ``ORIGIN_LOST_S``): without it nobody detects the run's end,
        records its transcript or reads its result, and the agents would go on
        working (and spending) for nobody. Called by the worker's heartbeat."""
        by = await self._origin_watch.gone(self.worker.link.drops)
        if by is not None and not self.port.finished:
            await self.end_as("error", origin_lost_error(by, self.run_id))

    async def end_as(self, reason: StopReason, error: str | None = None) -> None:
        """End the run for everyone with ``reason``, unless another process ended it
        first: then as that process did."""
        if await self.worker.end_run(self.state, reason, error=error):
            self._remote_stop = True  # broadcast already
            self.port.stop(reason, error)
            return
        cur = await self.state.record()
        self.adopt(cur[0] if cur is not None else {})

    def record_remote(self, ev: Event) -> None:
        """Put an event of another process into this process's transcript."""
        self._recording = True
        try:
            self.port.record(ev)
        finally:
            self._recording = False

    # -- publishing ---------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        """The sink of this process's events in the run (published in order)."""
        if self._recording:
            return
        self._events.append(ev)
        if self.origin is not None:
            self.origin.transcript.append(ev)

    def notice(self, key: str, value: bytes, rev: int) -> None:
        """Announce a change stored here (``RunState.on_write``) to the run's other
        processes: queued (see :meth:`_queue`), so it leaves before the deliveries
        that follow it, in the same write."""
        self._queue(("", f"{self._changes}.{rev}.{key}", value, None))

    def publish_event(self, ev: Event) -> None:
        """An event this transport makes itself (a redelivery, a refused delivery)."""
        self._events.append(ev)

    def _queue(self, item: _Item) -> None:
        """Publish ``item`` after everything queued before it: at the end of this step
        of the event loop (a task), before this run's next compare-and-set, or in
        :meth:`settle`, whichever comes first.

        So what a turn publishes as it ends leaves together: its deliveries, and
        before them one record with the events so far (:data:`_EVENTS` marks where;
        those of a turn that ends right after its last send, as most do, include its
        ``delivery_handled``). In each batch only the last publish to each stream
        asks for an acknowledgement: the server stores one connection's messages to
        one stream in their order, so that acknowledgement says the others of the
        batch are stored too."""
        self._out.append(item)
        if len(self._out) == 1:
            self._spawn(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await self.flush_out()
        except Exception as exc:  # settle raises it: the delivery stays unacknowledged
            self._out_error = exc

    async def flush_out(self, events: bool = False) -> None:
        """Publish what is queued (:meth:`_queue`), in order; with ``events`` also the
        events so far."""
        async with self._out_lock:
            items, self._out = self._out, []
            if events and self._events:
                items.append(_EVENTS)
            if not items:
                return
            w = self.worker
            batch: list[tuple[str, str, bytes, dict[str, str] | None]] = []
            for it in items:
                if it is _EVENTS:
                    if self._events:
                        evs, self._events = self._events, []
                        subject = w.names.events(self.run_id)
                        dicts = [event_to_dict(ev) for ev in evs]
                        for data in encode_events(w.tag, dicts, w.max_payload - 1024):
                            batch.append((_EVENTS_STREAM, subject, data, None))
                else:
                    batch.append(it)  # type: ignore[arg-type]
            # (A change notice, stream "", is a plain publish: never acknowledged.)
            last = {stream: i for i, (stream, *_) in enumerate(batch) if stream}
            for i, (stream, subject, data, headers) in enumerate(batch):
                await self.publish_later(subject, data, headers, ack=last.get(stream) == i)

    async def flush_events(self) -> None:
        """Publish the events so far (and what is queued before them)."""
        await self.flush_out(events=True)

    async def publish_later(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        *,
        ack: bool = True,
    ) -> None:
        """Publish without waiting for the server's acknowledgement; :meth:`settle`
        waits for all of them.

        ``ack=False`` asks for no acknowledgement at all: only for a publish that an
        acknowledged publish to the same stream follows (one of a batch but its
        stream's last, see :meth:`_queue`; a message key before the header's
        compare-and-set). The server stores one connection's messages to one stream
        in their order, so that later acknowledgement says this one is stored too
        (one ack message less for the server to make and this process to read)."""
        link = self.worker.link
        if not ack:
            await link.nc.publish(subject, data, headers=headers)
            return
        if link.asker is not None:
            self._unsettled.append(await link.asker.send(subject, data, headers))
        else:
            self._unsettled.append(await link.js.publish_async(subject, data, headers=headers))

    async def settle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the server has stored everything published so far, and the
        run's stop if this process stopped it; raises (and so leaves the delivery
        unacknowledged) if it has not within ``timeout``."""
        await self._stored(timeout)
        if self._stopping is not None:
            await asyncio.wait_for(asyncio.shield(self._stopping), timeout)

    async def _stored(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.flush_out(events=True)
        if self._out_error is not None:
            exc, self._out_error = self._out_error, None
            raise exc
        await self.counters.settle()
        pending, self._unsettled = self._unsettled, []
        if pending:
            async with asyncio.timeout(timeout):
                for fut in pending:
                    await fut

    def check_size(self, msg: Message) -> None:
        """Refuse a message whose delivery or header record would pass the server's
        max payload (before anything is written)."""
        size = len(encode("th", id=msg.thread_id, last=msg.to_dict(), participants=[]))
        limit = self.worker.max_payload - 4096  # the header's other fields, the subject
        if size > limit:
            raise MessageTooLargeError(size, limit)

    # -- background work of the run ------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        # Awaited by aclose: nothing outlives the run.
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _broadcast(self, reason: StopReason) -> None:
        await self._stored()
        port = self.port
        await self.worker.end_run(self.state, reason, error=port.error, answer=port.answer)

    async def _quiet(self, feeds: int) -> None:
        await self._stored()
        if feeds == self._feeds and self.port.pending == 0 and self.port.busy == 0:
            await self._set_busy(False, feeds)

    async def _set_busy(self, busy: bool, feeds: int | None = None) -> None:
        async with self._busy_lock:
            if feeds is not None and feeds != self._feeds:
                return  # fed since: still busy
            if self._busy is busy:
                return
            st = self.state
            await self.worker.kv.put(st.busy_key(self.worker.id), b"1" if busy else b"0")
            self._busy = busy


async def _quietly(aw: Any) -> None:
    with contextlib.suppress(Exception):
        await aw


class NatsTransport:
    """Runs over NATS JetStream: ``open_runtime(graph, transport=NatsTransport(url))``.

    In the process that starts runs (``rt.run(task)``), the agents run in worker
    processes (``coral-graph worker``); this process posts the task, waits up to
    ``wait_workers_s`` for a worker for every agent, detects the end and records
    every worker's events into its transcript (the runtime's store, subscribers and
    result). ``graph``: the :class:`~coral_graph.config.LoadedGraph` the runtime's
    graph came from, whose resolved definitions identify it to the workers
    (default: the runtime's graph). The connection is opened at the first run and
    closed with the runtime.

    A worker process passes its :class:`Worker` (``worker=``) and joins runs."""

    def __init__(
        self,
        url: str | None = None,
        *,
        graph: Any = None,
        wait_workers_s: float = 10.0,
        ack_wait_s: float = DEFAULT_ACK_WAIT_S,
        connect_timeout: float = 5.0,
        worker: Worker | None = None,
    ) -> None:
        if url is None and worker is None:
            raise TypeError("NatsTransport needs the NATS server's url (or a worker)")
        self.url = url
        self.graph = graph
        self.wait_workers_s = wait_workers_s
        self.ack_wait_s = ack_wait_s
        self.connect_timeout = connect_timeout
        self.worker = worker
        self._own = worker is None  # the connection is this transport's to close
        self._lock = asyncio.Lock()
        self._sub: Any = None
        self._sink_added = False

    @property
    def hosted(self) -> list[str]:
        """The agents that run in this process."""
        return self.worker.agents if self.worker is not None else []

    def open_run(self, port: RouterPort) -> NatsRun:
        run = NatsRun(self, port)
        if not self._sink_added:
            # One sink for the runtime (a port's sinks see every run of it): each event
            # goes to the run it belongs to.
            self._sink_added = True
            port.add_sink(self._route)
        return run

    def _route(self, ev: Event) -> None:
        w = self.worker
        if w is not None:
            w.route_event(ev)

    async def host(self, graph: AgentGraph) -> Worker:
        """This process on the graph's streams and bucket (connected at the first run)."""
        async with self._lock:
            if self.worker is not None:
                return self.worker
            from coral_graph.transport.nats import identity_of
            from coral_graph.transport.nats._conn import connect
            from coral_graph.transport.nats._worker import Worker

            assert self.url is not None
            link = await connect(self.url, timeout=self.connect_timeout, name="coral-graph-run")
            try:
                identity = identity_of(self.graph if self.graph is not None else graph)
                w = Worker(link, graph, identity, ack_wait_s=self.ack_wait_s, origin=True)
                try:
                    await w.open()
                except GraphMismatchError as exc:
                    if self.graph is None:  # workers started from a file hash its definitions
                        raise GraphMismatchError(
                            exc.graph,
                            [
                                *exc.differences,
                                "this process knows the graph only as an AgentGraph: pass "
                                "NatsTransport(url, graph=load_graph(...)) to identify it by "
                                "its graph file, as the workers do",
                            ],
                        ) from None
                    raise
                self._sub = await link.nc.subscribe(w.names.all_ctl, cb=w.on_ctl)
            except BaseException:
                await link.close()
                raise
            self.worker = w
            return w

    async def aclose(self) -> None:
        """Close the connection this transport opened (the runtime closes it)."""
        w = self.worker
        if not self._own or w is None:
            return
        self.worker = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await w.link.close()
