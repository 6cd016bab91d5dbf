"""The router of one run: inboxes, delivery, the event stream and quiescence.

:class:`Router` owns

* the per-agent :class:`Slot` (inbox, waiter, busy flag, usage), created on an
  agent's first delivery: an idle agent costs no slot, no inbox and no task;
* **feeding** an inbox (:meth:`Router.feed`, the transport's way in) and taking
  from it (:meth:`Router.take`, :meth:`Router.take_all`), with the ``pending``
  count of deliveries fed and not yet taken;
* **busy accounting** (:meth:`Router.set_active`): ``busy`` counts agents inside a
  turn or loop agents not blocked in ``wait_for_mentions``. When ``pending`` and
  ``busy`` are both zero nothing can happen any more in this process and the
  transport is told (``quiet``); it is checked where they change, never by sleeping;
* **emit**: every event goes into the run's event list, to the subscribers and to
  the store's batch queue, in that one function;
* the **stop** state (``finished``, ``stop_reason``, ``done``): the first stop wins.

It is the core's side of the transport seam (it implements
:class:`~coral_graph.transport.RouterPort`). It knows nothing of turns, error
policies or budgets: those belong to the run (``coral_graph._run``).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from coral_graph._events import DeliveryHandled, Event, MessageSent
from coral_graph._model import AgentUsage, Message
from coral_graph._types import AgentName, DeliveryVia, RunId, StopReason

if TYPE_CHECKING:
    import anyio

    from coral_graph._context import AgentContext
    from coral_graph._graph import AgentSpec
    from coral_graph.transport._base import RunSpec, RunTransport

__all__ = ["Router", "Slot"]

Sink = Callable[[Event], None]


class Slot:
    """One agent's state inside a run."""

    __slots__ = (
        "active",
        "ctx",
        "current",
        "exited",
        "inbox",
        "name",
        "restarts",
        "scope",
        "spec",
        "timer",
        "turn_started",
        "usage",
        "waiter",
        "worker",
    )

    def __init__(self, name: AgentName, spec: AgentSpec | None) -> None:
        self.name = name
        self.spec = spec
        self.inbox: deque[Message] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.worker = False
        self.active = False
        self.usage = AgentUsage()
        self.current: Message | None = None
        self.turn_started = 0.0
        self.scope: anyio.CancelScope | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.restarts = 0
        # A loop agent whose run() has returned: nothing reads its inbox any more.
        self.exited = False
        self.ctx: AgentContext = None  # type: ignore[assignment]

    def release(self) -> None:
        """Drop what a finished run no longer needs."""
        self.inbox = deque()
        self.current = None
        self.waiter = None
        self.scope = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _sent_nothing(msg: Message) -> None:
    """A released router's ``sent``."""


def _emit_nothing(event: Event) -> None:
    """A released router's ``emit``: nothing listens any more."""


class HandledLog:
    """A run's two commonest events while nothing subscribes, kept as columns: they
    then cost no event object, no float or int objects and nothing for the cyclic
    GC to scan. :func:`merge_events` builds the events.

    ``message_sent``: the run's event list holds the :class:`Message` itself; the
    k-th such message has the seq ``sent[k]`` (its ``ts`` is the message's).

    ``delivery_handled`` (five appends, see :meth:`Router.handled`), entry ``i``:
    ``seq[i]``; the turn's start and end ``times[2i]``, ``times[2i+1]`` (``ts`` is
    the end, ``duration_s`` the difference); ``refs[2i]`` the tuple ``(agent, via,
    ok)`` (one per agent and outcome, shared) and ``refs[2i+1]`` the message id."""

    __slots__ = ("refs", "sent", "seq", "times")

    def __init__(self) -> None:
        self.sent = array("q")
        self.seq = array("q")
        self.times = array("d")
        self.refs: list[Any] = []

    def __len__(self) -> int:
        return len(self.seq)


def merge_events(run_id: str, events: list[Any], log: HandledLog) -> list[Event]:
    """``events`` (events, and ``message_sent`` kept as its message) with the events
    of ``log`` put in, all in ``seq`` order."""
    seqs, times, refs, sent = log.seq, log.times, log.refs, log.sent

    def handled(i: int) -> DeliveryHandled:
        agent, via, ok = refs[2 * i]
        t0, t1 = times[2 * i], times[2 * i + 1]
        return DeliveryHandled(run_id, seqs[i], t1, agent, refs[2 * i + 1], via, ok, t1 - t0)

    out: list[Event] = []
    n, i, k = len(seqs), 0, 0
    for ev in events:
        if type(ev) is Message:
            ev = MessageSent(run_id, sent[k], ev.timestamp, ev)
            k += 1
        while i < n and seqs[i] < ev.seq:
            out.append(handled(i))
            i += 1
        out.append(ev)
    out.extend(handled(j) for j in range(i, n))
    return out


class Router:
    """Delivery, events and quiescence of one run (see the module docstring)."""

    def __init__(
        self,
        run_id: RunId,
        spec: RunSpec,
        *,
        sinks: list[Sink],
        on_sink_error: Callable[[Sink, BaseException], None],
        recorder: Any,
        on_recorder_error: Callable[[Any, BaseException], None],
    ) -> None:
        self.run_id = run_id
        self.spec = spec
        self.slots: dict[str, Slot] = {}
        self.pending = 0
        self.busy = 0
        # Events, and message_sent events as their bare message (see HandledLog).
        self.events: list[Any] = []
        self.finished = False
        self.stop_reason: StopReason | None = None
        self.error: str | None = None
        # The message that answered the task (set by the run before its stop).
        self.answer: Message | None = None
        self.ended_at: float | None = None
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.next_seq: Callable[[], int] = _counter(1)
        self.link: RunTransport = None  # type: ignore[assignment]  # set by the run
        # Set by the run: start the worker of a handler-style agent, make a slot.
        self.spawn: Callable[[Slot], None] = _no_spawn
        self.make_slot: Callable[[str], Slot] = _no_slot
        # The runtime's subscribers (a live list: subscribing reaches runs going).
        self.sinks = sinks
        self._recorder = recorder
        self._on_recorder_error = on_recorder_error
        self.rec_q: deque[Any] | None = None
        self.rec_lim = 0
        if recorder is not None:
            self.set_recorder(recorder)
        events_append = self.events.append
        hl = self.handled_log = HandledLog()
        h_seq, h_time, h_ref = hl.seq.append, hl.times.append, hl.refs.append
        self.sent_seq = hl.sent.append
        router = self

        def fanout(event: Event) -> None:
            broken: list[tuple[Sink, Exception]] | None = None
            for sink in sinks:
                try:
                    sink(event)
                except Exception as exc:
                    # Detached after the loop: removing it now would shift the list
                    # and the next sink would miss this event.
                    if broken is None:
                        broken = []
                    broken.append((sink, exc))
            if broken is not None:
                for bad, err in broken:
                    on_sink_error(bad, err)

        def emit(event: Event) -> None:
            """Into the run's events, to the subscribers and to the store's queue."""
            events_append(event)
            if sinks:
                fanout(event)
            rq = router.rec_q
            if rq is not None:
                rq.append(event)
                if len(rq) >= router.rec_lim:
                    router.rec_drain()

        def handled(agent: str, mid: str, via: DeliveryVia, ok: bool, t0: float, t1: float) -> None:
            """Emit ``delivery_handled`` of a turn from ``t0`` to ``t1``, the commonest
            event. Without subscribers it goes into the columns of
            :class:`HandledLog` (``RunResult.events`` builds the event on first
            access), and the store gets ``(kind, *fields)``: making the event object
            is most of this
            function's cost. A handler's worker does the same without the call when
            nothing subscribes (``_turns.py``)."""
            seq = router.next_seq()
            if sinks:
                ev = DeliveryHandled(run_id, seq, t1, agent, mid, via, ok, t1 - t0)
                events_append(ev)
                fanout(ev)
            else:
                h_seq(seq)
                h_time(t0)
                h_time(t1)
                h_ref((agent, via, ok))
                h_ref(mid)
            rq = router.rec_q
            if rq is not None:
                rq.append(("delivery_handled", run_id, seq, t1, agent, mid, via, ok, t1 - t0))
                if len(rq) >= router.rec_lim:
                    router.rec_drain()

        def sent(msg: Message) -> None:
            """Emit ``message_sent``. Without subscribers it is kept as the message and
            its seq in :class:`HandledLog` (``AgentContext.send_message_nowait`` does
            that without the call when nothing listens at all), and the store gets
            the plain tuple ``("message_sent", run_id, seq, ts, (*message fields,))``."""
            seq = router.next_seq()
            if sinks:
                ev = MessageSent(run_id, seq, msg.timestamp, msg)
                events_append(ev)
                fanout(ev)
            else:
                events_append(msg)
                router.sent_seq(seq)
            rq = router.rec_q
            if rq is not None:
                rq.append(("message_sent", run_id, seq, msg.timestamp, tuple(msg)))
                if len(rq) >= router.rec_lim:
                    router.rec_drain()

        self.emit = emit
        self.handled = handled
        self.sent = sent

    # -- the RouterPort ---------------------------------------------------------

    def feed(self, agent: AgentName, msg: Message) -> None:
        """Queue one delivery of ``msg`` for ``agent`` and wake it (see :meth:`feed_all`)."""
        self.feed_all((agent,), msg)

    def feed_all(self, agents: Sequence[AgentName], msg: Message) -> None:
        """Queue one delivery of ``msg`` for each of ``agents`` and wake them: the one
        place an inbox is fed. Appends happen in call order, so FIFO per (sender,
        recipient)."""
        slots = self.slots
        self.pending += len(agents)
        for agent in agents:
            slot = slots.get(agent)
            if slot is None:
                slot = self.make_slot(agent)
            slot.inbox.append(msg)
            fut = slot.waiter
            if fut is not None:
                slot.waiter = None
                if not fut.done():
                    fut.set_result(None)
            elif not slot.worker:
                self._wake(slot)

    def stop(
        self, reason: StopReason, error: str | None = None, answer: Message | None = None
    ) -> None:
        """End the run with ``reason``; the first stop wins."""
        if self.finished:
            return
        self.finished = True
        self.stop_reason = reason
        if error is not None:
            self.error = error
        if answer is not None:
            self.answer = answer
        self.ended_at = time.time()
        if not self.done.done():
            self.done.set_result(None)
        link = self.link
        if link is not None:
            link.stopped(reason)

    def add_sink(self, fn: Sink) -> None:
        """Call ``fn(event)`` for every event of every run of this runtime from now on."""
        self.sinks.append(fn)

    def record(self, event: Event) -> None:
        """An event another process of the run emitted, numbered here, in place (see
        :meth:`~coral_graph.transport.RouterPort.record`)."""
        event.run_id = self.run_id
        event.seq = self.next_seq()
        self.emit(event)

    def merge_usage(self, usage: Mapping[str, AgentUsage]) -> None:
        """The usage of agents that ran in other processes (see
        :meth:`~coral_graph.transport.RouterPort.merge_usage`)."""
        for name, u in usage.items():
            slot = self.slots.get(name)
            if slot is None:
                slot = self.make_slot(name)
            slot.usage = u

    # -- inboxes ------------------------------------------------------------------

    def _wake(self, slot: Slot) -> None:
        if self.finished:
            return
        spec = slot.spec
        if spec is not None and not spec.is_loop:
            self.spawn(slot)
        elif slot.exited:
            # Nobody will take this delivery (the loop agent has returned): it stays
            # in the inbox, bounded by max_inbox, but is no work that keeps the run
            # from going idle.
            self.pending -= 1

    def take_all(self, slot: Slot) -> list[Message]:
        """Every delivery of the inbox, oldest first."""
        msgs = list(slot.inbox)
        slot.inbox.clear()
        self.pending -= len(msgs)
        return msgs

    def take_at(self, slot: Slot, index: int) -> Message:
        """The delivery at ``index`` of the inbox; the others stay queued."""
        msg = slot.inbox[index]
        del slot.inbox[index]
        self.pending -= 1
        return msg

    def park(self, slot: Slot) -> asyncio.Future[None]:
        """A future that the next delivery to ``slot`` completes."""
        fut: asyncio.Future[None] = self.loop.create_future()
        slot.waiter = fut
        return fut

    def set_active(self, slot: Slot, active: bool) -> None:
        """Mark ``slot`` busy or not; nothing queued and nobody busy is quiescence."""
        if slot.active == active:
            return
        slot.active = active
        if active:
            self.busy += 1
        else:
            self.busy -= 1
            if self.busy == 0 and self.pending == 0 and not self.finished:
                self.link.quiet()

    def drop_unread(self, slot: Slot) -> None:
        """A loop agent returned: what waits in its inbox is no work any more."""
        self.pending -= len(slot.inbox)

    # -- the store's batch queue ------------------------------------------------------

    def set_recorder(self, rec: Any) -> None:
        self._recorder = rec
        self.rec_q = rec.batch_queue if rec is not None else None
        self.rec_lim = rec.batch_size if rec is not None else 0

    def rec_drain(self) -> None:
        """Hand the recorder's full batch over; a recorder that fails is detached."""
        rec = self._recorder
        if rec is None:
            self.rec_q = None
            return
        try:
            rec.drain()
        except Exception as exc:
            self._on_recorder_error(rec, exc)

    def release(self) -> None:
        """Let go of the run's bulk (events, inboxes) once its result is taken."""
        self.events = []
        self.handled_log = HandledLog()
        self.sent_seq = self.handled_log.sent.append
        self.emit = _emit_nothing
        self.handled = _handled_nothing
        self.sent = _sent_nothing
        self.rec_q = None
        for slot in self.slots.values():
            slot.release()
        self.slots = {}


def _handled_nothing(
    agent: str, mid: str, via: DeliveryVia, ok: bool, t0: float, t1: float
) -> None:
    """A released router's ``handled``."""


def _counter(start: int) -> Callable[[], int]:
    import itertools

    return itertools.count(start).__next__


def _no_spawn(slot: Slot) -> None:  # pragma: no cover - replaced by the run
    raise AssertionError("router not bound to a run")


def _no_slot(name: str) -> Slot:  # pragma: no cover - replaced by the run
    raise AssertionError("router not bound to a run")
