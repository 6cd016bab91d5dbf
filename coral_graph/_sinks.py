"""Event sinks (stores, recorders) and the cyclic-GC setting of running runs."""

from __future__ import annotations

import gc
import os
from collections import deque
from typing import Any, Protocol, TypeGuard

from coral_graph._events import Event

__all__ = ["BatchRecorder", "EventSink"]


class EventSink(Protocol):
    """Anything that consumes events synchronously (a store, a recorder)."""

    def on_event(self, event: Event) -> None:
        """Take one event. Must be fast and must not block: batch the slow work."""


class BatchRecorder(EventSink, Protocol):
    """An event sink that takes events in batches, such as the SQLite store. Given as
    ``open_runtime(store=...)``, it is not called per event: the runtime appends
    each event to ``batch_queue`` — or, for ``delivery_handled``, the commonest
    kind, its plain tuple ``(kind, *fields in dataclass order)`` — and calls
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
