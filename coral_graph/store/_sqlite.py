"""SQLiteStore: every event of every run in one SQLite file, written by one process.

The runtime calls :meth:`SQLiteStore.on_event` synchronously for every event, on
its hot path. That call appends the event to a queue; every ``batch_size``
events the calling thread turns the batch into tuples (one C call per event),
pickles the list and writes it to a pipe, and a timer thread does the same for
what trickles in (every ``flush_interval`` seconds) and on close. At the other
end a writer *process* (:mod:`coral_graph.store._proc`, started with the store,
niced) builds the rows and writes everything it has in one transaction. Row
building, parameter binding and SQLite thus run on another core and never hold
the runtime's GIL; measured on 2 cores this is what makes durability affordable
(see ``_bench.py``).

Encoding a full batch where it fills up, rather than on a thread of its own,
costs the runtime the same CPU but never lets the queue run ahead of the writer:
a thread competing for the GIL with a busy event loop falls behind by tens of
thousands of events, which then all wait to be written when the run ends.

The file is in WAL mode, so readers in other connections or processes never
block the run. A crash of the runtime's process (even SIGKILL) closes the pipe:
the writer commits every complete batch it received, marks the process's runs
``interrupted`` and exits, so the file holds every event up to the last flush.

The queue holds at most ``batch_size`` events. When the writer falls behind, the
pipe (and the writer's read-ahead) fills and writing a batch waits for it
(backpressure on the event loop) rather than dropping anything. If the writer
fails (disk full, file read-only, writer killed), ``on_event`` raises a
:class:`StoreWriteError`, which detaches the store from the runtime
(``Runtime.sink_errors``); :attr:`SQLiteStore.error` holds it and ``close()``
raises it again (or returns it, with ``raise_error=False``). A value the store
cannot hold (a ``datetime`` in metadata, an integer beyond 64 bits) never stops
it: that value is stored as text and the run's ``errors`` table says so (see
:mod:`coral_graph.store._plain`).

A process that forks without exec (``multiprocessing`` with ``fork``) while a
store is open hands the pipe to its children too: the writer then only sees
the end of input once they are gone as well.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import operator
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgpack

from coral_graph._events import EVENT_TYPES, Event, MessageSent
from coral_graph.store._errors import (
    StoreError,
    StoreWriteError,
    StoreWriterDiedError,
    fault_kind,
    write_error,
)
from coral_graph.store._plain import plain_item
from coral_graph.store._schema import connect_writer as _connect_writer

__all__ = ["DEFAULT_DB", "ENV_DB", "SQLiteStore", "open_store", "proc_start_time", "resolve_db"]

DEFAULT_DB = ".coral/coral.db"
"""Where the store lives unless told otherwise (relative to the working directory)."""
ENV_DB = "CORAL_DB"
"""The environment variable that overrides :data:`DEFAULT_DB`."""


def resolve_db(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$CORAL_DB``, else ``.coral/coral.db``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_DB)
    return Path(env) if env else Path(DEFAULT_DB)


def proc_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux, from ``/proc``), to tell a live
    writer from a new process that reused its pid. None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime); fields after the ")" that ends the command name.
    parts = stat[stat.rfind(b")") + 2 :].split()
    return parts[19].decode() if len(parts) > 19 else None


class _Resume:
    """A command in the event queue: the run restarts in this process."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


class _Flush:
    """A command in the event queue: tell the waiter once everything before it is written."""

    __slots__ = ("done", "token")
    _tokens = itertools.count(1)

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token = next(self._tokens)


def _encoders() -> dict[type[Any], Callable[[Any], Any]]:
    """type -> a function giving the item that goes down the pipe (see ``_proc``):
    ``(kind, run_id, seq, ts, ...the other fields)``, built by one C call; a
    message as the plain tuple of its fields."""
    enc: dict[type[Any], Callable[[Any], Any]] = {}
    for cls in EVENT_TYPES.values():
        names = ("kind", *(f.name for f in dataclasses.fields(cls)))
        enc[cls] = operator.attrgetter(*names)
    enc[MessageSent] = lambda e: ("message_sent", e.run_id, e.seq, e.ts, tuple(e.message))
    enc[_Flush] = lambda f: ("!flush", f.token)
    enc[_Resume] = lambda r: ("!resume", r.run_id)
    return enc


class _NotPlain(Exception):
    """A batch holds a value that is not plain data."""


class _PlainPickler(pickle.Pickler):
    """Pickles plain data only. ``reducer_override`` is never called for ``None``,
    bools and exact ``int``/``float``/``str``/``bytes``/``dict``/``list``/``tuple``/
    ``set`` values, so plain batches cost nothing extra; anything else (a
    ``datetime``, a ``MappingProxyType``, an object) stops the pickle, and the
    batch is made plain item by item (:func:`_plain_items`)."""

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


def _plain_items(items: list[Any]) -> list[Any]:
    """``items`` with every value the store cannot hold converted, and a note item
    after each event that was changed (see :mod:`coral_graph.store._plain`)."""
    out: list[Any] = []
    for item in items:
        fixed, notes = plain_item(item)
        out.append(fixed)
        out.extend(notes)
    return out


class _Parts:
    """A file for the pickler that keeps what it writes (a few 64 KB frames): the
    frames are joined once, with the length in front, which costs less than
    ``pickle.dumps`` growing one buffer and then copying it behind the length."""

    __slots__ = ("parts", "write")

    def __init__(self) -> None:
        self.parts: list[Any] = [b""]  # the length goes here
        self.write = self.parts.append


def _frame(items: list[Any]) -> bytes:
    """One batch for the pipe: its length (8 bytes, little-endian), then its pickle."""
    out = _Parts()
    try:
        _PlainPickler(out, 5).dump(items)
    except (_NotPlain, TypeError, AttributeError, ValueError, pickle.PicklingError, RecursionError):
        out = _Parts()
        pickle.Pickler(out, 5).dump(_plain_items(items))
    parts = out.parts
    parts[0] = sum(map(len, parts)).to_bytes(8, "little")
    return b"".join(parts)


_START_TIMEOUT = 60.0
"""Seconds the writer process may take to open the store file."""
_LAST_WORDS_S = 5.0
"""Seconds a writer that went away under a send is given for its last report to be read."""
_CHUNK = 20_000
"""Items per batch on the pipe."""
_PIPE_SIZE = 1 << 20


class SQLiteStore:
    """The embedded event store. Give it to ``open_runtime(graph, store=...)``.

    Args:
        path: the SQLite file (default: ``$CORAL_DB`` or ``.coral/coral.db``); its
            folder is created.
        graph_path: the graph file the runs come from (kept for ``coral-graph resume``).
        batch_size: queued events that are handed to the writer at once, without
            waiting for the timer (the queue never holds more).
        flush_interval: seconds between flushes when events trickle in.
        max_queue: an upper bound on ``batch_size`` (from when the queue could run
            ahead of the writer; beyond the batch, the pipe to the writer and its
            read-ahead bound what is in flight, and a full pipe makes the run wait).

    Use it as a context manager (sync or async) or call :meth:`close`: closing
    flushes every queued event.

    >>> import tempfile, coral_graph as cg
    >>> from coral_graph.store import SQLiteStore, open_reader
    >>> @cg.agent
    ... async def echo(ctx, message):
    ...     await ctx.send_message(message.thread_id, "hi", ["user"])
    >>> g = cg.AgentGraph(); g.add_agent("echo", echo)
    >>> db = tempfile.mkdtemp() + "/coral.db"
    >>> with SQLiteStore(db) as store:
    ...     result = cg.run(g, "hello", entry=["echo"], store=store)
    >>> with open_reader(db) as reader:
    ...     reader.run(result.run_id)["stop_reason"]
    'answer'
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        graph_path: str | os.PathLike[str] | None = None,
        batch_size: int = 2_000,
        flush_interval: float = 0.05,
        max_queue: int = 200_000,
    ) -> None:
        self.path = resolve_db(path)
        self.graph_path = str(graph_path) if graph_path is not None else None
        # Checked (and created or migrated) here, so a bad file fails at once.
        _connect_writer(self.path).close()
        self._batch = max(1, min(batch_size, max_queue))
        self._interval = flush_interval
        self._q: deque[Any] = deque()
        self._enc = _encoders()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._reported: tuple[str, str] | None = None
        self._died = False
        self._fault: StoreError | None = None
        self._pid = os.getpid()
        self._proc_start = proc_start_time(self._pid)
        self._flushes: dict[int, _Flush] = {}
        self.batches = 0
        """Batches handed to the writer process so far."""
        self.transactions = 0
        """Transactions the writer process reported committed (updated on flush and close)."""
        self._proc = _spawn_writer()
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._out = self._proc.stdin.fileno()
        self._in = self._proc.stdout.fileno()
        _grow_pipe(self._out)
        init = {
            "path": str(self.path),
            "pid": self._pid,
            "proc_start": self._proc_start,
            "graph_path": self.graph_path,
        }
        self._send(_frame([init]))
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._acks, name="coral-store-acks", daemon=True)
        self._reader.start()
        # Wait until the writer has the file open: a run that starts at once then
        # never waits on a writer still starting up (tens of milliseconds of
        # interpreter start), and a writer that cannot start fails here, not mid-run.
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._ready.wait(0.05):
            if not self._reader.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                self._proc.wait()
                self._close_pipes()
                if self._reported is not None:
                    raise write_error(str(self.path), *self._reported)
                why = self._error or f"no answer in {_START_TIMEOUT:.0f} s"
                raise StoreError(f"the store {self.path} could not start its writer: {why}")
        self._thread = threading.Thread(target=self._timer, name="coral-store-timer", daemon=True)
        self._thread.start()
        # A store nobody closed still flushes at interpreter exit.
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- the hot path -----------------------------------------------------------

    @property
    def batch_queue(self) -> deque[Any]:
        """Where the runtime queues events (or their plain tuples) for the writer; see
        :class:`coral_graph.BatchRecorder`."""
        return self._q

    @property
    def batch_size(self) -> int:
        """Queued events at which the runtime calls :meth:`drain`."""
        return self._batch

    def on_event(self, event: Event) -> None:
        """Queue ``event`` for the writer (for an event source other than
        ``open_runtime(store=...)``, which queues through :attr:`batch_queue`);
        every ``batch_size`` events, hand the batch to the writer process."""
        q = self._q
        q.append(event)
        if len(q) >= self._batch:
            self.drain()

    def drain(self) -> None:
        """Hand everything queued to the writer process now.

        Raises:
            StoreError: the writer has failed (nothing more is taken).
        """
        self._drain()
        if self._error is not None:
            self._raise()

    def _drain(self) -> None:
        """Encode everything queued and write it to the writer process, in order
        (whichever thread calls; one at a time)."""
        with self._send_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        q = self._q
        n = len(q)
        if not n or self._error is not None:
            return
        popleft = q.popleft
        enc = self._enc
        try:
            while n:
                k = min(n, _CHUNK)
                n -= k
                batch = [popleft() for _ in range(k)]
                # A plain tuple (kind, *fields) is already what goes down the pipe.
                self._send(_frame([x if type(x) is tuple else enc[type(x)](x) for x in batch]))
                self.batches += 1
        except Exception as exc:
            if self._error is None:
                self._error = exc
            q.clear()
            self._end()

    # -- commands -----------------------------------------------------------------

    def mark_resumed(self, run_id: str) -> None:
        """Record that ``run_id`` continues in this process (used by resume)."""
        self._q.append(_Resume(run_id))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event queued so far is written (committed)."""
        if self._closed:
            return
        cmd = _Flush()
        self._flushes[cmd.token] = cmd
        self._q.append(cmd)
        self._wake.set()
        while not cmd.done.wait(0.05):
            if self._error is not None or not self._reader.is_alive():
                break
        self._flushes.pop(cmd.token, None)
        self._raise()

    async def aflush(self) -> None:
        """:meth:`flush` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.flush)

    @property
    def error(self) -> StoreError | None:
        """Why the store stopped writing (a :class:`StoreWriteError`, or a
        :class:`StoreCorruptError`), or None while all is well. Final once
        :meth:`close` has returned."""
        if self._fault is not None:
            return self._fault
        if self._error is None and self._reported is None and not self._died:
            return None
        path = str(self.path)
        err: StoreError
        if (
            self._reported is None
            and isinstance(self._error, (BrokenPipeError, ConnectionError))
            and self._reader.is_alive()
            and threading.current_thread() is not self._reader
        ):
            # The writer went away under a send: why (e.g. "disk full") may still be in
            # its pipe, behind the acknowledgements. Read it before calling it a death.
            self._reader.join(_LAST_WORDS_S)
        if self._reported is not None:
            err = write_error(path, *self._reported)
        else:
            rc = self._proc.poll()
            exc = self._error
            if rc is not None and rc < 0:
                err = StoreWriterDiedError(path, f"its writer process was killed (signal {-rc})")
            elif self._died or isinstance(exc, (BrokenPipeError, ConnectionError)):
                status = f" (exit status {rc})" if rc else ""
                err = StoreWriterDiedError(path, f"its writer process ended unexpectedly{status}")
            elif isinstance(exc, StoreError):
                err = exc
            else:
                assert exc is not None
                err = write_error(path, fault_kind(exc), f"{type(exc).__name__}: {exc}")
        if not self._reader.is_alive():
            self._fault = err  # the writer has said all it will say
        return err

    def _raise(self) -> None:
        err = self.error
        if err is not None:
            raise err from (self._error if self._error is not err else None)

    def close(self, *, raise_error: bool = True) -> StoreError | None:
        """Flush every queued event, stop the writer and close the file. Runs of this
        process still marked ``running`` are marked ``interrupted``.

        Args:
            raise_error: raise the store's :attr:`error`, if it stopped writing
                (the default); with False, return it instead (None when all is well),
                so a caller can report the run first and the store's problem after.

        Raises:
            StoreWriteError: the store stopped writing (disk full, file read-only,
                writer killed); what was committed before is kept.
        """
        if not self._closed:
            self._closing = True
            self._wake.set()
            self._thread.join()
            self._closed = True
            self._reader.join()
            self._proc.wait()
            self._close_pipes()
            if isinstance(self.error, StoreWriterDiedError):
                self._mark_interrupted()
        if raise_error:
            self._raise()
        return self.error

    def _mark_interrupted(self) -> None:
        """The writer died: mark this process's unfinished runs ``interrupted`` from
        here (best effort; the file itself is fine), so readers need not guess."""
        import sqlite3

        try:
            conn = sqlite3.connect(str(self.path), timeout=2.0)
            try:
                with conn:
                    conn.execute(
                        "UPDATE runs SET status = 'interrupted', stop_reason = coalesce("
                        "stop_reason, 'interrupted') WHERE status = 'running' AND pid = ?",
                        (self._pid,),
                    )
            finally:
                conn.close()
        except sqlite3.Error:
            pass

    def _close_pipes(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- the feeding thread and the acknowledgements -------------------------------

    def _send(self, data: bytes) -> None:
        fd = self._out
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _timer(self) -> None:
        """Every ``flush_interval`` (or when woken by a flush or close), write what
        is queued; on close, write the rest and the end of input."""
        while True:
            if not self._closing:
                self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
            if self._closing:
                with self._send_lock:
                    # What was queued while the drain above was writing (the run's
                    # last events, when close() came in the middle of a batch).
                    self._drain_locked()
                    if self._error is None:
                        try:
                            self._send(_frame([("!close",)]))
                        except OSError as exc:
                            self._error = exc
                    self._end()
                return

    def _end(self) -> None:
        stdin = self._proc.stdin
        if stdin is not None:
            try:
                stdin.close()
            except OSError:
                pass

    def _acks(self) -> None:
        """Read the writer process's acknowledgements until it exits."""
        unpacker = msgpack.Unpacker(raw=False)
        closed = False
        while True:
            try:
                data = os.read(self._in, 65536)
            except OSError:
                data = b""
            if not data:
                break
            unpacker.feed(data)
            for msg in unpacker:
                what = msg[0]
                if what == "ready":
                    self._ready.set()
                elif what == "flushed":
                    self.transactions = msg[2]
                    f = self._flushes.pop(msg[1], None)
                    if f is not None:
                        f.done.set()
                elif what == "closed":
                    self.transactions = msg[1]
                    closed = True
                elif what == "error" and self._reported is None:
                    self._reported = (str(msg[1]), str(msg[2]))
                    if self._error is None:
                        self._error = StoreWriteError(str(self.path), str(msg[2]))
        if not closed and self._reported is None:
            self._died = True
            if self._error is None:
                self._error = StoreWriterDiedError(str(self.path), "its writer process ended")
        for f in list(self._flushes.values()):
            f.done.set()


_CHILD = """
import sys, types
from pathlib import Path
# Only the modules the writer needs: not coral_graph's __init__ (networkx, anyio...).
root = Path(sys.argv[1])
for name, where in (("coral_graph", root), ("coral_graph.store", root / "store")):
    mod = types.ModuleType(name)
    mod.__path__ = [str(where)]
    sys.modules[name] = mod
from coral_graph.store._proc import main
main()
"""


def _spawn_writer() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parent.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
        start_new_session=True,
    )


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
    except (OSError, ImportError, ValueError):  # pragma: no cover - not Linux, or capped
        pass


def _close_at_exit(ref: weakref.ReferenceType[SQLiteStore]) -> None:
    store = ref()
    if store is not None:
        try:
            store.close()
        except Exception:  # pragma: no cover - nothing left to report to at exit
            pass


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str] | None = None, **options: Any
) -> AsyncIterator[SQLiteStore]:
    """Open a :class:`SQLiteStore` for the block; it is flushed and closed at the end.

    >>> import tempfile, coral_graph as cg
    >>> from coral_graph.store import open_store
    >>> @cg.agent
    ... async def echo(ctx, message):
    ...     await ctx.send_message(message.thread_id, "hi", ["user"])
    >>> g = cg.AgentGraph(); g.add_agent("echo", echo)
    >>> async def main():
    ...     async with open_store(tempfile.mkdtemp() + "/c.db") as store:
    ...         async with cg.open_runtime(g, store=store) as rt:
    ...             return await rt.run("hello", entry=["echo"])
    >>> cg.run_async(main).stop_reason
    'answer'
    """
    store = await anyio.to_thread.run_sync(lambda: SQLiteStore(path, **options))
    try:
        yield store
    finally:
        await store.aclose()
