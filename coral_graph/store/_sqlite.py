"""SQLiteStore: every event of every run in one SQLite file, written by one thread.

The runtime calls :meth:`SQLiteStore.on_event` synchronously for every event, on
its hot path. That call only appends the event to a queue. One writer thread
drains the queue in batches — by size (``batch_size`` events wake it early) and
by time (every ``flush_interval`` seconds) — serialises them (msgpack) and
writes each batch in one transaction. The file is in WAL mode, so readers in
other connections or processes never block the run, and a crash (even SIGKILL)
leaves every committed batch readable.

The queue is bounded by ``max_queue``: when it is full, ``on_event`` waits for
the writer to drain it (backpressure on the event loop) rather than drop
anything. If the writer fails (disk full, file removed), ``on_event`` raises
:class:`StoreError`, which detaches the store from the runtime
(``Runtime.sink_errors``) and ``close()`` raises it again.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from coral_graph._events import Event
from coral_graph.store._errors import NotAStoreError, StoreError
from coral_graph.store._rows import Rows, new_packer, write_rows
from coral_graph.store._schema import ensure_schema

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

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _connect_writer(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        ensure_schema(conn, str(path))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise NotAStoreError(str(path), str(exc)) from None
    if mode != "wal":  # pragma: no cover - e.g. a file system without shared memory
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
    # NORMAL in WAL mode: a commit survives a process crash; only a power loss can
    # lose the newest transactions. The cache keeps the index pages in memory.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA wal_autocheckpoint = 4000")
    return conn


class SQLiteStore:
    """The embedded event store. Give it to ``open_runtime(graph, store=...)``.

    Args:
        path: the SQLite file (default: ``$CORAL_DB`` or ``.coral/coral.db``); its
            folder is created.
        graph_path: the graph file the runs come from (kept for ``coral-graph resume``).
        batch_size: queued events that wake the writer before its timer.
        flush_interval: seconds between flushes when events trickle in.
        max_queue: queued events at which ``on_event`` waits for the writer.

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
        self._conn = _connect_writer(self.path)
        self._batch = max(1, batch_size)
        self._interval = flush_interval
        self._max = max(self._batch, max_queue)
        self._q: deque[Any] = deque()
        self._wake = threading.Event()
        self._space = threading.Condition()
        self._kicked = False
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._pid = os.getpid()
        self._proc_start = proc_start_time(self._pid)
        self._runs: set[str] = set()
        self.batches = 0
        """Transactions written so far."""
        self._thread = threading.Thread(target=self._writer, name="coral-store-writer", daemon=True)
        self._thread.start()
        # A store nobody closed still flushes at interpreter exit.
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- the hot path -----------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Queue ``event`` for the writer (the runtime calls this for every event)."""
        q = self._q
        q.append(event)
        if len(q) >= self._batch:
            self._kick()

    def _kick(self) -> None:
        if self._error is not None:
            raise StoreError(f"the store {self.path} stopped writing: {self._error!r}")
        if not self._kicked:
            self._kicked = True
            self._wake.set()
        if len(self._q) >= self._max:
            # Backpressure: the writer is behind by max_queue events. Wait (the
            # GIL is released) until it has drained half of them; drop nothing.
            with self._space:
                while len(self._q) >= self._max // 2 and self._error is None:
                    if not self._thread.is_alive():
                        break
                    self._wake.set()
                    self._space.wait(0.1)

    # -- commands -----------------------------------------------------------------

    def mark_resumed(self, run_id: str) -> None:
        """Record that ``run_id`` continues in this process (used by resume)."""
        self._q.append(_Resume(run_id))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event queued so far is written (committed)."""
        if self._closed:
            return
        cmd = _Flush()
        self._q.append(cmd)
        self._wake.set()
        while not cmd.done.wait(0.05):
            if self._error is not None or not self._thread.is_alive():
                break
        self._raise()

    async def aflush(self) -> None:
        """:meth:`flush` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.flush)

    def _raise(self) -> None:
        if self._error is not None:
            raise StoreError(f"the store {self.path} stopped writing: {self._error!r}") from (
                self._error
            )

    def close(self) -> None:
        """Flush every queued event, stop the writer and close the file. Runs of this
        process still marked ``running`` are marked ``interrupted``."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._closed = True
        try:
            if self._error is None and self._runs:
                marks = [(r, self._pid) for r in self._runs]
                self._conn.executemany(
                    "UPDATE runs SET status = 'interrupted', stop_reason = coalesce(stop_reason,"
                    " 'interrupted') WHERE run_id = ? AND status = 'running' AND pid = ?",
                    marks,
                )
        finally:
            self._conn.close()
        self._raise()

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

    # -- the writer thread ---------------------------------------------------------

    def _writer(self) -> None:
        q = self._q
        pack = new_packer()
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._kicked = False
            closing = self._closing
            n = len(q)
            if n:
                popleft = q.popleft
                batch = [popleft() for _ in range(n)]
                try:
                    self._write(batch, pack)
                except Exception as exc:
                    self._error = exc
                    for item in batch:
                        if isinstance(item, _Flush):
                            item.done.set()
                    with self._space:
                        self._space.notify_all()
                    return
                with self._space:
                    self._space.notify_all()
            elif closing:
                return

    def _run_extra(self, run_id: str) -> tuple[Any, ...]:
        self._runs.add(run_id)
        return (self._pid, self._proc_start, self.graph_path)

    def _write(self, batch: list[Any], pack: Any) -> None:
        conn = self._conn
        rows = Rows()
        flushes: list[_Flush] = []
        events: list[Event] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if isinstance(item, (_Resume, _Flush)):
                    if events:
                        rows.add(events, pack, self._run_extra)
                        events = []
                    if isinstance(item, _Flush):
                        flushes.append(item)
                        continue
                    write_rows(conn, rows)
                    rows = Rows()
                    self._runs.add(item.run_id)
                    conn.execute(
                        "UPDATE runs SET status = 'running', stop_reason = NULL, ended_at = NULL,"
                        " pid = ?, proc_start = ? WHERE run_id = ?",
                        (self._pid, self._proc_start, item.run_id),
                    )
                else:
                    events.append(item)
            if events:
                rows.add(events, pack, self._run_extra)
            write_rows(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.batches += 1
        for f in flushes:
            f.done.set()


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
