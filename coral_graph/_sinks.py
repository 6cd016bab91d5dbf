"""Who receives a runtime's events, and the cyclic-GC setting of running runs.

* :class:`EventSink` and :class:`BatchRecorder`: what a store is to the runtime;
* :class:`_Subscriptions` (a base of :class:`~coral_graph.Runtime`): its
  subscribers, its recorder (one store at a time, fed through its queue), its
  event streams and their back-pressure, and the sinks that failed;
* the GC setting while runs are going (see ``_gc_run_started``).
"""

from __future__ import annotations

import gc
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

import anyio

from coral_graph._errors import RuntimeClosedError
from coral_graph._events import Event
from coral_graph._streams import EventStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from coral_graph._run import _Run
    from coral_graph._types import RunId

__all__ = ["BatchRecorder", "EventSink"]


class EventSink(Protocol):
    """Anything that consumes events synchronously (a store, a recorder)."""

    def on_event(self, event: Event) -> None:
        """Take one event. Must be fast and must not block: batch the slow work."""


class BatchRecorder(EventSink, Protocol):
    """An event sink that takes events in batches, such as the SQLite store. Given as
    ``open_runtime(store=...)``, it is not called per event: the runtime appends
    each event to ``batch_queue`` — or, for the two commonest kinds,
    ``delivery_handled`` and ``message_sent``, its plain tuple ``(kind, *fields in
    dataclass order)``, the message as the plain tuple of its fields, a delivery's
    optional last field ``worker`` left out while None (``DeliveryHandled(*t[1:])``
    rebuilds it either way) — and calls
    ``drain()`` whenever ``batch_size`` are queued. ``drain`` may raise: the
    recorder is then detached and the error kept in ``Runtime.sink_errors``.
    ``Runtime.attach(recorder)`` attaches it the same way; ``on_event`` itself is
    for event sources other than a runtime."""

    batch_queue: deque[Any]
    batch_size: int

    def drain(self) -> None:
        """Take everything queued so far."""


# A run keeps every message and event it makes (they are its transcript), so the
# objects it allocates are long-lived by design. With CPython's default gen-0
# threshold (700) the cyclic GC rescans them every few hundred sends, which more
# than doubled the cost of a send in our measurements. While any run is active the
# gen-0 threshold is raised to at least _GC_GEN0; the previous thresholds come back
# when the last run ends. Set CORAL_GC_TUNING=0 to leave the GC alone.
_GC_GEN0 = 50_000
_gc_active = 0
_gc_saved: tuple[int, int, int] | None = None


def _gc_run_started() -> None:
    global _gc_active, _gc_saved
    _gc_active += 1
    if _gc_active == 1 and os.environ.get("CORAL_GC_TUNING", "1") != "0":
        current = gc.get_threshold()
        if current[0] < _GC_GEN0:
            _gc_saved = current
            gc.set_threshold(_GC_GEN0, current[1], current[2])


def _gc_run_ended() -> None:
    global _gc_active, _gc_saved
    _gc_active -= 1
    if _gc_active == 0 and _gc_saved is not None:
        if gc.get_threshold()[0] == _GC_GEN0:  # nobody else changed it meanwhile
            gc.set_threshold(*_gc_saved)
        _gc_saved = None


def _is_recorder(obj: object) -> TypeGuard[BatchRecorder]:
    return all(hasattr(obj, a) for a in ("batch_queue", "batch_size", "drain", "on_event"))


class _Subscriptions:
    """The receiving end of a runtime's events (see the module docstring)."""

    _runs: dict[RunId, _Run]

    def __init__(self) -> None:
        self._sinks: list[Callable[[Event], None]] = []
        self._recorder: BatchRecorder | None = None
        self.sink_errors: list[tuple[Callable[[Event], None], BaseException]] = []
        self._streams: list[EventStream] = []
        self._pressure = 0
        self._relief: anyio.Event | None = None

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``fn(event)`` for every event from now on; returns an unsubscribe
        function. ``fn`` runs on the hot path: keep it fast, batch slow work (a
        store attaches with :meth:`attach`)."""
        self._sinks.append(fn)
        return lambda: self._remove_sink(fn)

    def _remove_sink(self, fn: Callable[[Event], None]) -> None:
        if fn in self._sinks:
            self._sinks.remove(fn)

    def attach(self, store: EventSink) -> Callable[[], None]:
        """Record every event from now on into ``store``; returns a detach function.

        A :class:`BatchRecorder` (such as the SQLite store) becomes the runtime's
        recorder and gets events through its queue, without a call per event (one
        recorder at a time); any other :class:`EventSink` is subscribed."""
        if _is_recorder(store):
            if self._recorder is not None and self._recorder is not store:
                raise RuntimeClosedError("the runtime already records into another store")
            self._set_recorder(store)
            return lambda: self._drop_recorder(store)
        return self.subscribe(store.on_event)

    def _set_recorder(self, rec: BatchRecorder) -> None:
        self._recorder = rec
        for run in self._runs.values():  # runs already going record from now on
            run.router.set_recorder(rec)

    def _drop_recorder(self, rec: BatchRecorder) -> None:
        if self._recorder is rec:
            self._recorder = None
            for run in self._runs.values():
                run.router.set_recorder(None)

    def _recorder_failed(self, rec: BatchRecorder, exc: BaseException) -> None:
        if self._recorder is rec:
            self.sink_errors.append((rec.on_event, exc))
        self._drop_recorder(rec)

    def _on_sink_error(self, fn: Callable[[Event], None], exc: BaseException) -> None:
        # A broken subscriber must not break the run: it is detached and kept here.
        self._remove_sink(fn)
        self.sink_errors.append((fn, exc))

    def events(self, run_id: str | None = None, *, max_buffer: int = 10_000) -> EventStream:
        """An async stream of events (of one run, or all), from now on."""
        stream = EventStream(self, run_id, max_buffer)
        self._streams.append(stream)
        self._sinks.append(stream.on_event)
        return stream

    def _relieve(self) -> None:
        self._pressure -= 1
        if self._pressure <= 0 and self._relief is not None:
            self._relief.set()
            self._relief = None

    async def _wait_relief(self) -> None:
        while self._pressure > 0:
            if self._relief is None:
                self._relief = anyio.Event()
            await self._relief.wait()
