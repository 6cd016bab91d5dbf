"""The recorder: a run's events, from every worker, in one order, into one transcript.

Workers publish events with ``seq`` 0 on ``coral.<g>.<run>.events``; the recorder
reads that subject in stream order, numbers the events 1, 2, 3 … (the stream's
order is the run's order), keeps the run's threads and usage, and hands every event
to a sink such as the SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from coral_graph._events import (
    AgentErrored,
    Event,
    MessageSent,
    RunFinished,
    ThreadCreated,
    event_from_dict,
)
from coral_graph.transport.nats._conn import Link
from coral_graph.transport.nats._errors import WireError
from coral_graph.transport.nats._handover import hand_over, run_now, stream_seq
from coral_graph.transport.nats._names import Names
from coral_graph.transport.nats._state import OriginWatch, RunState, answer_of, read_errors
from coral_graph.transport.nats._wire import decode, events_of

__all__ = ["Recorder", "record_all", "stream_seq"]

_STALLED_S = 1.0  # no progress for this long after a reconnect: subscribe again
_CHECK_S = 1.0  # how often a recorder looks whether the run's starter is gone


class Recorder:
    """Records one run's events: ``sink`` gets each, as read.

    ``keep`` (a reader that records a run by itself, e.g. ``coral-graph record``):
    number the events 1, 2, 3 … and keep them in :attr:`events` (the run's threads
    and usage are :func:`coral_graph.store.replay` of them). Without it the events
    are neither numbered (``seq`` 0) nor kept: the sink numbers them (the starting
    process's runtime, ``port.record``), and each event object is the sink's."""

    def __init__(
        self,
        link: Link,
        names: Names,
        run_id: str,
        sink: Callable[[Event], None] | None = None,
        *,
        skip_from: str | None = None,
        keep: bool = True,
    ) -> None:
        self.link = link
        # Events of this worker tag are not recorded (the starting process records
        # its own events itself).
        self.skip_from = skip_from
        self.names = names
        self.run_id = run_id
        self.sink = sink
        self.keep = keep
        self.events: list[Event] = []
        self.count = 0  # events recorded
        # Ids of messages and threads recorded: the replay of a turn that a crash
        # interrupted makes the same ones again, and their events come twice.
        self._seen_ids: set[str] = set()
        self.finished = asyncio.Event()
        self._sub: Any = None
        self.received = 0  # event records read
        # When the last one was read (the idle scan waits while they come).
        self.heard_at = time.monotonic()
        self._stream_seq = 0  # the newest stream sequence read
        self._epoch = 0  # the connection's reconnect count when subscribed
        self.handed_over = False  # whether records skip nats-py's subscription task

    async def start(self, from_seq: int | None = None) -> None:
        """Subscribe to the run's events: all of them, or from stream sequence
        ``from_seq`` on."""
        self._epoch = self.link.reconnects
        if from_seq is None:
            self._sub = await self.link.js.subscribe(
                self.names.events(self.run_id),
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        else:
            self._sub = await self.link.js.subscribe(
                self.names.events(self.run_id),
                cb=self._on_msg,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq
                ),
            )
        # Each record is read as the connection reads it, not in a task of the
        # subscription's own (_on_msg never waits for anything).
        self.handed_over = hand_over(self._sub, run_now(self._on_msg))

    async def end_orphaned(self, kv: KeyValue) -> None:
        """Until the run is recorded to its end: should the process that started it
        be gone (its heartbeat still for ``ORIGIN_LOST_S``, see
        :class:`~coral_graph.transport.nats._state.OriginWatch`) once the run's record
        says it ended (its workers end such a run), nobody will publish its
        ``run_finished``: it is made here, from the run's record and the events
        recorded, after every event stored was read. So the transcript of such a run
        ends as the run did instead of staying "running" (or "interrupted")."""
        state = RunState(kv, self.run_id)
        watch = OriginWatch(state)
        while not self.finished.is_set():
            await asyncio.sleep(_CHECK_S)
            if await watch.gone(self.link.drops) is None:
                continue  # (the run's record is read only once its starter is gone)
            try:
                cur = await state.record()
            except read_errors():
                continue
            if cur is None or cur[0].get("status") == "running":
                continue
            await self.caught_up()
            if self.finished.is_set():
                return
            rec = cur[0]
            answer = answer_of(rec)
            from coral_graph.store import replay

            usage = replay(self.events).usage if self.keep else {}
            self.add(
                RunFinished(
                    self.run_id, 0, float(rec.get("ended_at") or time.time()),
                    str(rec.get("stop_reason") or "error"),  # type: ignore[arg-type]
                    answer.id if answer is not None else None,
                    answer.content if answer is not None else None,
                    rec.get("error"),
                    {a: u.to_dict() for a, u in usage.items()},
                )
            )  # fmt: skip

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def caught_up(self, timeout: float = 15.0) -> bool:  # noqa: ASYNC109
        """Wait until every event stored so far on the run's subject was read: the
        stream's last message on the subject is asked for, and its sequence waited
        for. After the connection was lost (a nats-server restart loses the ordered
        consumer), a reader that makes no progress subscribes again from the event
        after the last one it read."""
        deadline = time.monotonic() + timeout
        target: int | None = None
        progress = (self._stream_seq, time.monotonic())
        while time.monotonic() < deadline:
            try:
                if target is None:
                    last = await self.link.js.get_last_msg(
                        self.names.events_stream, self.names.events(self.run_id)
                    )
                    target = int(last.seq or 0)
                if self._stream_seq >= target:
                    return True
                now = time.monotonic()
                if self._stream_seq != progress[0]:
                    progress = (self._stream_seq, now)
                elif now - progress[1] > _STALLED_S and self.link.reconnects != self._epoch:
                    await self.aclose()
                    await self.start(from_seq=self._stream_seq + 1)
                    progress = (self._stream_seq, now)
            except nats.js.errors.NotFoundError:
                return True  # nothing published on the run's subject
            except Exception:
                pass  # the server is restarting: ask again
            await asyncio.sleep(0.02)
        return False

    async def _on_msg(self, m: Msg) -> None:
        self.received += 1
        self.heard_at = time.monotonic()
        seq = stream_seq(m.reply)
        if seq is not None:
            if seq <= self._stream_seq:
                return  # read already (a subscription made again after a reconnect)
            self._stream_seq = seq
        try:
            env = decode(m.data)
            evs = events_of(env)
        except (WireError, KeyError) as exc:
            env, evs = {}, [exc]
        w = env.get("worker")
        if self.skip_from is not None and w == self.skip_from:
            return
        # The transcript says which worker process made each message and handled
        # each delivery (after a crash, the redelivered turn shows the worker that
        # ran it again); a run's own tag ("run:…") is no worker.
        tag = w if isinstance(w, str) and not w.startswith("run:") else None
        for item in evs:
            if self.finished.is_set():
                return  # after run_finished: not part of the transcript
            try:
                if isinstance(item, Exception):
                    raise item
                if not isinstance(item, dict):
                    raise TypeError(f"an event is a map, not {type(item).__name__}")
                if tag is not None:
                    _tag(item, tag)
                ev = event_from_dict(item)
            except (WireError, KeyError, TypeError, ValueError) as exc:
                ev = AgentErrored(
                    self.run_id, 0, time.time(), "user", None, "WireError",
                    f"skipped a malformed event on {m.subject}: {exc}", "", "continue",
                )  # fmt: skip
            self.add(ev)

    def add(self, ev: Event) -> None:
        """Record ``ev`` (an event this recorder owns: it is changed in place), unless
        it repeats a message or thread recorded already."""
        t = type(ev)
        if t is MessageSent or t is ThreadCreated:
            key = ev.message.id if t is MessageSent else f"thread:{ev.thread_id}"  # type: ignore[union-attr]
            if key in self._seen_ids:
                return  # made again by a replayed turn: recorded once
            self._seen_ids.add(key)
        self.count += 1
        ev.run_id = self.run_id
        if self.keep:
            ev.seq = self.count
            self.events.append(ev)
        if self.sink is not None:
            self.sink(ev)
        if t is RunFinished:
            self.finished.set()


def _tag(d: dict[str, Any], worker: str) -> None:
    """Put the worker that made an event (plain data) on it: on a ``message_sent``'s
    message (its metadata, unless the message has its own ``worker`` there), on a
    ``delivery_handled``."""
    kind = d.get("kind")
    if kind == "message_sent":
        msg = d.get("message")
        if isinstance(msg, dict):
            meta = msg.get("metadata")
            if not meta:
                msg["metadata"] = {"worker": worker}
            elif isinstance(meta, dict):
                meta.setdefault("worker", worker)
    elif kind == "delivery_handled":
        d["worker"] = worker


async def record_all(
    link: Link,
    names: Names,
    sink: Callable[[Event], None],
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Record every run of the graph that starts from now on, until ``stop`` is set.
    Returns the number of events recorded."""
    recs: dict[str, Recorder] = {}
    skipped: set[str] = set()
    kv = await link.js.key_value(names.bucket)
    # (Each run whose starting process is gone gets its end from its record.)
    orphans: list[asyncio.Task[None]] = []

    async def on_msg(m: Msg) -> None:
        rid = Names.run_of(m.subject)
        if rid is None or rid in skipped:
            return
        rec = recs.get(rid)
        if rec is None:
            # A run that began before this recorder has no run_started here: skip it
            # rather than store a transcript without its start.
            try:
                evs = events_of(decode(m.data))
                if not evs:
                    return  # an empty record (it only says that records before it are stored)
                first = evs[0].get("kind")
            except (WireError, KeyError, AttributeError):
                first = None
            if first != "run_started":
                skipped.add(rid)
                return
            rec = recs[rid] = Recorder(link, names, rid, sink)
            orphans.append(asyncio.get_running_loop().create_task(rec.end_orphaned(kv)))
        await rec._on_msg(m)

    sub = await link.js.subscribe(
        names.all_events, cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    if on_ready is not None:
        on_ready()  # subscribed: every run that starts from now on is recorded
    try:
        await stop.wait()
    finally:
        for t in orphans:
            t.cancel()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return sum(r.count for r in recs.values())
