"""Noticing a blocked event loop: an agent that spins or calls blocking code.

Agents share one event loop. An agent that runs ``while True: pass`` or calls
``time.sleep(8)`` holds it: no other agent runs, turn timeouts cannot fire and the
loop cannot see Ctrl-C. Agents must not block; blocking code belongs in a thread::

    result = await anyio.to_thread.run_sync(blocking_function, arg)

:class:`LoopWatchdog` is a daemon thread that sees when the loop has not ticked for
``after_s`` seconds and says which agent holds it (the agent whose turn is on the
loop thread's stack right now, and where it is), on stderr and — once the loop is
back — as an ``agent_logged`` event of the run (source ``watchdog``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

__all__ = ["BlockedLoop", "LoopWatchdog", "handle_interrupts", "holder", "install_interrupt"]

HARD_EXIT_AFTER_S = 5.0
"""After a second Ctrl-C, how long the process may take to end before it is ended hard."""

_AGENT_FRAMES = frozenset({"_work", "_loop_main"})


@dataclass(frozen=True, slots=True)
class BlockedLoop:
    """A block of the event loop: who held it, where, and for how long so far."""

    agent: str | None
    where: str
    seconds: float

    def message(self) -> str:
        who = f'agent "{self.agent}"' if self.agent else "code outside any agent's turn"
        return (
            f"coral-graph: the event loop has been blocked for {self.seconds:.1f} s by {who} "
            f"({self.where}); no other agent runs and turn timeouts cannot fire until it "
            "returns. Agents must not block: run blocking code with "
            "`await anyio.to_thread.run_sync(fn)`. Press Ctrl-C twice to end the process."
        )


def holder(frame: FrameType | None) -> tuple[str | None, str]:
    """The agent whose turn is on the stack ending at ``frame``, and the innermost
    code location (``file:line in function``)."""
    where = "unknown"
    if frame is not None:
        code = frame.f_code
        where = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
    f = frame
    while f is not None:
        if f.f_code.co_name in _AGENT_FRAMES and "slot" in f.f_code.co_varnames:
            slot = f.f_locals.get("slot")
            name = getattr(slot, "name", None)
            return (str(name) if name is not None else None), where
        f = f.f_back
    return None, where


class LoopWatchdog:
    """Watch ``loop`` from a daemon thread; call ``report`` (from that thread) once
    per block longer than ``after_s``, and ``recovered`` (on the loop) when it ends."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        after_s: float,
        *,
        report: Callable[[BlockedLoop], None] | None = None,
        recovered: Callable[[BlockedLoop], None] | None = None,
    ) -> None:
        self.loop = loop
        self.after_s = after_s
        self.report = report if report is not None else _to_stderr
        self.recovered = recovered
        self.blocks: list[BlockedLoop] = []
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._pending: BlockedLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="coral-loop-watchdog", daemon=True)

    def start(self) -> None:
        """Start ticking on the loop (call it on the loop's thread) and watching."""
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._last = time.monotonic()
        block = self._pending
        if block is not None:
            self._pending = None
            if self.recovered is not None:
                self.recovered(block)
        if not self._stop.is_set():
            self._timer = self.loop.call_later(self.after_s / 4, self._tick)

    def _watch(self) -> None:
        interval = max(0.05, self.after_s / 4)
        reported_at = 0.0
        while not self._stop.wait(interval):
            last = self._last
            stalled = time.monotonic() - last
            if stalled < self.after_s or reported_at == last:
                continue
            reported_at = last
            agent, where = holder(sys._current_frames().get(self._loop_thread))
            block = BlockedLoop(agent, where, stalled)
            self.blocks.append(block)
            self._pending = block
            try:
                self.report(block)
            except Exception:  # pragma: no cover - a report must never kill the watchdog
                pass


def _to_stderr(block: BlockedLoop) -> None:
    try:
        sys.stderr.write(block.message() + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # pragma: no cover - stderr closed
        pass


def install_interrupt(
    loop: asyncio.AbstractEventLoop, on_first: Callable[[], None], *, exit_code: int = 130
) -> Callable[[], None]:
    """Ctrl-C handling that works even when an agent blocks the loop.

    The first SIGINT schedules ``on_first`` on ``loop`` (e.g. cancel the run). The
    second raises :class:`KeyboardInterrupt` in the main thread at once — a Python
    signal handler runs between bytecodes, so it also breaks a spinning agent and
    interrupts ``time.sleep`` — and, should anything swallow it, ends the process
    with ``exit_code`` after :data:`HARD_EXIT_AFTER_S` seconds. Returns a function
    that puts the previous handler back. Call it from the main thread.
    """
    count = 0
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count == 1:
            loop.call_soon_threadsafe(on_first)
            return
        backstop = threading.Timer(HARD_EXIT_AFTER_S, os._exit, (exit_code,))
        backstop.daemon = True
        backstop.start()
        raise KeyboardInterrupt

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    return restore


@contextmanager
def handle_interrupts(on_first: Callable[[], None], *, exit_code: int = 130) -> Iterator[None]:
    """Ctrl-C handling for a program that runs agents, inside the ``with`` block.

    The first Ctrl-C calls ``on_first`` on the running event loop (cancel the run:
    ``RunHandle.cancel``); the second raises :class:`KeyboardInterrupt` at once, even
    while an agent blocks the loop, and ends the process with ``exit_code`` should
    anything swallow it (see :func:`install_interrupt`). The previous handler comes
    back at the end of the block. Outside the main thread, where Python cannot
    install signal handlers, it does nothing. ``coral-graph run`` uses it.

    >>> import coral_graph as cg
    >>> @cg.agent
    ... async def quiet(ctx, message):
    ...     pass
    >>> g = cg.AgentGraph(); g.add_agent("a", quiet)
    >>> async def main():
    ...     async with cg.open_runtime(g) as rt:
    ...         handle = rt.start("task", entry=["a"])
    ...         with cg.handle_interrupts(handle.cancel):
    ...             return await handle.wait()
    >>> cg.run_async(main).stop_reason
    'idle'
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    restore = install_interrupt(asyncio.get_running_loop(), on_first, exit_code=exit_code)
    try:
        yield
    finally:
        restore()
