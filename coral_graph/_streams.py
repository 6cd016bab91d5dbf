"""EventStream: the runtime's events as an async iterator, with backpressure."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from coral_graph._events import Event

if TYPE_CHECKING:
    from coral_graph._sinks import _Subscriptions

__all__ = ["EventStream"]


class EventStream:
    """An async iterator over the runtime's events, with a bounded buffer.

    When the buffer holds ``max_buffer`` events the runtime applies backpressure:
    agents pause between turns until the consumer catches up. Nothing is dropped.
    So read it concurrently with the run (in another task), and use it as an async
    context manager so it is closed (and the pressure lifted) when you stop reading.
    A stream of one run (``rt.events(run_id)``) ends after that run's
    ``run_finished`` event; a stream of all runs ends when the runtime closes.
    """

    def __init__(self, rt: _Subscriptions, run_id: str | None, max_buffer: int) -> None:
        self._rt = rt
        self._run_id = run_id
        self._buf: deque[Event] = deque()
        self._max = max(1, max_buffer)
        self._waiter: asyncio.Future[None] | None = None
        self._pressing = False
        self._closed = False

    def on_event(self, event: Event) -> None:
        if self._closed or (self._run_id is not None and event.run_id != self._run_id):
            return
        self._buf.append(event)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        if self._run_id is not None and event.kind == "run_finished":
            # A stream of one run ends after that run's last event. (The sink stays
            # registered but ignores everything: removing it here would shift the
            # list the runtime is iterating.)
            self._end()
            return
        if not self._pressing and len(self._buf) >= self._max:
            self._pressing = True
            self._rt._pressure += 1

    def _release(self) -> None:
        if self._pressing:
            self._pressing = False
            self._rt._relieve()

    def close(self) -> None:
        """Stop receiving; buffered events are discarded and pressure is lifted."""
        if self._closed:
            return
        self._closed = True
        self._rt._remove_sink(self.on_event)
        if self in self._rt._streams:
            self._rt._streams.remove(self)
        self._buf.clear()
        self._release()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self) -> None:
        self._closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buf:
            if self._closed:
                raise StopAsyncIteration
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = fut
            await fut
        ev = self._buf.popleft()
        if self._pressing and len(self._buf) <= self._max // 2:
            self._release()
        return ev

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
