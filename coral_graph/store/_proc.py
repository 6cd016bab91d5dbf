"""The store's writer process: events in through a pipe, rows out into SQLite.

:class:`~coral_graph.store.SQLiteStore` starts this module as a child process
and feeds it on its stdin. Building rows and running SQLite happen here, on
another core and outside the runtime's GIL; the runtime's process only turns
each event into a tuple (one C call) and writes batches to the pipe. The child
imports only the modules it needs (not ``coral_graph/__init__``), so it is
ready in well under 0.1 s.

The wire (stdin) is private to the two processes (the documented msgpack
format is for exports and the distributed transport): frames of an 8-byte
little-endian length and a pickle (protocol 5) of a list, read back by an
unpickler that refuses every class, so only plain data crosses. The first
frame is ``[{"path", "pid", "proc_start", "graph_path"}]``: the store file and
the identity of the process whose runs these are. Each later frame is a batch
of items: an event as ``(kind, run_id, seq, ts, …its other fields in dataclass
order)`` (a message as the plain tuple of :class:`~coral_graph.Message`'s
fields), or a command: ``("!resume", run_id)``, ``("!flush", token)``,
``("!note", run_id, seq, agent, message_id, text)`` (a value of the event
before it was changed to be stored; see :mod:`coral_graph.store._plain`),
``("!close",)``.

A thread reads the pipe while the writer is in SQLite (up to ``_BUFFER`` bytes
ahead), so the runtime's process is not held up by each commit; everything
read by the time a transaction starts is written in it. Acknowledgements go
back on stdout as msgpack arrays: ``["ready"]`` once the store file is open,
``["flushed", token, transactions]`` once everything before the flush is
committed, ``["error", kind, text]`` when writing failed (``kind`` as
:func:`~coral_graph.store._errors.fault_kind`; the process then exits),
``["closed", transactions]`` at the end.

End of input without ``!close`` means the runtime's process died (even
SIGKILL): everything received is committed, and the runs it was writing are
marked ``interrupted``. A frame cut in the middle is dropped whole, so the
stored events stay a prefix of the run.
"""

from __future__ import annotations

import io
import os
import pickle
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from coral_graph._events import EVENT_TYPES, Event
from coral_graph.store._errors import fault_kind
from coral_graph.store._plain import UNSTORABLE, plain_item
from coral_graph.store._rows import Rows, new_packer, write_rows
from coral_graph.store._sql import write_transaction

__all__ = ["main"]


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only: the batches hold tuples, lists, dicts, str, numbers, None."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the store cannot hold a {module}.{name} value")


def _loads(data: bytes) -> list[Any]:
    return _PlainUnpickler(io.BytesIO(data)).load()  # type: ignore[no-any-return]


_READ = 4 << 20
_NICE = int(os.environ.get("CORAL_STORE_NICE", "10"))
_BUFFER = 64 << 20
"""Bytes of input read ahead while a transaction is being written."""
_MAX_TXN = 100_000
"""Events at which a transaction is written even though more input is ready."""
_DATA_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
)
"""What a bad value in an event raises while its rows are built and written (as
opposed to a fault of the file: those are ``sqlite3.OperationalError``/
``DatabaseError`` and stop the writer)."""


def _decoder() -> Callable[[tuple[Any, ...]], Event]:
    """Wire item -> event. A message stays the plain tuple of its fields: rows are
    built from it by unpacking, exactly as from a :class:`~coral_graph.Message`."""
    types = dict(EVENT_TYPES)

    def decode(item: tuple[Any, ...]) -> Event:
        return types[item[0]](*item[1:])

    return decode


class _Writer:
    def __init__(self, init: dict[str, Any], out: Callable[[Any], None]) -> None:
        from pathlib import Path

        from coral_graph.store._schema import connect_writer

        self.conn = connect_writer(Path(init["path"]))
        self.pid = init["pid"]
        self.proc_start = init.get("proc_start")
        self.graph_path = init.get("graph_path")
        self.runs: set[str] = set()
        self.out = out
        self.pack = new_packer()
        self.decode = _decoder()
        self.txns = 0
        self.items: list[Any] = []
        self.events = 0

    def run_extra(self, run_id: str) -> tuple[Any, ...]:
        self.runs.add(run_id)
        return (self.pid, self.proc_start, self.graph_path)

    def add(self, batch: list[Any]) -> None:
        self.items.extend(batch)
        self.events += len(batch)

    def write(self) -> None:
        """Write every item received so far in one transaction; then acknowledge.
        A value that cannot be written makes the transaction start over item by
        item (:meth:`_write_each`): one bad event never costs the others."""
        items, self.items, self.events = self.items, [], 0
        if not items:
            return
        try:
            flushes = self._write_all(items)
        except _DATA_ERRORS:
            flushes = self._write_each(items)
        self.txns += 1
        for token in flushes:
            self.out(["flushed", token, self.txns])

    def _write_all(self, items: list[Any]) -> list[Any]:
        conn = self.conn
        decode = self.decode
        rows = Rows()
        flushes: list[Any] = []
        events: list[Event] = []
        dels = rows.deliveries
        pack = self.pack
        add_message = rows.add_message
        add_delivery = rows.add_delivery
        cur_rid: Any = None
        cur: list[Any] = []
        with write_transaction(conn):
            for item in items:
                kind = item[0]
                if kind == "delivery_handled":
                    # The bulk of every run: kept as the wire item, written as a
                    # block of columns (see _blocks.encode_block).
                    if item[1] == cur_rid:
                        cur.append(item)
                    else:
                        add_delivery(item)
                        cur_rid = item[1]
                        cur = dels[cur_rid]
                    continue
                if kind == "message_sent":
                    # Rows straight from the wire item (rows of different tables
                    # need no common order; each table keeps the events' order).
                    add_message(item[1], item[2], item[3], item[4], pack)
                    continue
                if kind[0] != "!":
                    events.append(decode(item))
                    continue
                if events:
                    rows.add(events, self.pack, self.run_extra)
                    events = []
                if kind == "!flush":
                    flushes.append(item[1])
                elif kind == "!note":
                    self._note(rows, item)
                elif kind == "!resume":
                    write_rows(conn, rows)
                    rows.clear()
                    cur_rid = None
                    self._resume(item[1])
            if events:
                rows.add(events, self.pack, self.run_extra)
            write_rows(conn, rows)
        return flushes

    def _resume(self, run_id: str) -> None:
        self.runs.add(run_id)
        self.conn.execute(
            "UPDATE runs SET status = 'running', stop_reason = NULL, ended_at = NULL,"
            " pid = ?, proc_start = ? WHERE run_id = ?",
            (self.pid, self.proc_start, run_id),
        )

    @staticmethod
    def _note(rows: Rows, item: tuple[Any, ...]) -> None:
        """A ``("!note", run_id, seq, agent, message_id, text)`` command: a row of the
        run's ``errors`` table saying what the store changed or dropped."""
        _, rid, seq, agent, mid, text = item
        rows.errors.extend((rid, seq, agent, mid, UNSTORABLE, text, "", "continue"))

    def _write_one(self, item: tuple[Any, ...]) -> None:
        rows = Rows()
        kind = item[0]
        if kind == "delivery_handled":
            rows.add_delivery(item)
        elif kind == "message_sent":
            rows.add_message(item[1], item[2], item[3], item[4], self.pack)
        else:
            rows.add([self.decode(item)], self.pack, self.run_extra)
        write_rows(self.conn, rows)

    def _write_each(self, items: list[Any]) -> list[Any]:
        """The slow path: every item in a savepoint of its own. An item whose rows
        fail is made storable (:func:`plain_item`: values as text, with a note in
        ``errors``); if even that fails it is dropped, and the note says so."""
        conn = self.conn
        flushes: list[Any] = []
        with write_transaction(conn):
            for item in items:
                kind = item[0]
                if kind == "!flush":
                    flushes.append(item[1])
                    continue
                if kind == "!resume":
                    self._resume(item[1])
                    continue
                if kind == "!note":
                    rows = Rows()
                    self._note(rows, item)
                    write_rows(conn, rows)
                    continue
                conn.execute("SAVEPOINT item")
                try:
                    self._write_one(item)
                except _DATA_ERRORS as exc:
                    conn.execute("ROLLBACK TO item")
                    self._write_fixed(item, exc)
                conn.execute("RELEASE item")
        return flushes

    def _write_fixed(self, item: tuple[Any, ...], exc: BaseException) -> None:
        conn = self.conn
        fixed, notes = plain_item(item)
        try:
            self._write_one(fixed)
        except _DATA_ERRORS as again:
            conn.execute("ROLLBACK TO item")
            text = (
                f"{item[0]} (seq {item[2]!r}) could not be stored and was dropped: "
                f"{type(again).__name__}: {str(again)[:300]}"
            )
            notes = [("!note", str(item[1]), item[2], None, None, text)]
        if not notes:
            notes = [
                (
                    "!note", item[1], item[2], None, None,
                    f"{item[0]} (seq {item[2]!r}): stored after an error "
                    f"({type(exc).__name__}: {str(exc)[:300]})",
                )
            ]  # fmt: skip
        rows = Rows()
        for note in notes:
            self._note(rows, note)
        try:
            write_rows(conn, rows)
        except _DATA_ERRORS:  # pragma: no cover - a note is plain text
            pass

    def checkpoint(self) -> None:
        """Copy committed pages from the WAL into the database file (PASSIVE: never
        waits for readers)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def finish(self) -> None:
        """Mark this process's runs that are still ``running`` as ``interrupted``."""
        try:
            if self.runs:
                self.conn.executemany(
                    "UPDATE runs SET status = 'interrupted', stop_reason = coalesce(stop_reason,"
                    " 'interrupted') WHERE run_id = ? AND status = 'running' AND pid = ?",
                    [(r, self.pid) for r in self.runs],
                )
        finally:
            self.conn.close()


class _Input:
    """Reads ``fd`` on its own thread while the writer is busy in SQLite (which
    releases the GIL), so the runtime's process can keep feeding the pipe instead
    of waiting for the end of each transaction. At most about ``_BUFFER`` bytes
    are held: then the pipe fills and pushes back as before."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.cond = threading.Condition()
        threading.Thread(target=self._run, name="coral-store-input", daemon=True).start()

    def _run(self) -> None:
        cond = self.cond
        while True:
            try:
                data = os.read(self.fd, _READ)
            except OSError:
                data = b""
            with cond:
                if not data:
                    self.eof = True
                    cond.notify_all()
                    return
                self.chunks.append(data)
                self.size += len(data)
                cond.notify_all()
                while self.size >= _BUFFER:
                    cond.wait()

    def ready(self) -> bool:
        """More input is waiting."""
        return bool(self.chunks)

    def get(self) -> bytes:
        """Everything read so far (waiting for some); empty at the end of input."""
        with self.cond:
            while not self.chunks and not self.eof:
                self.cond.wait()
            data = b"".join(self.chunks)
            self.chunks.clear()
            self.size = 0
            self.cond.notify_all()
        return data


def serve(fd_in: int, fd_out: int) -> int:
    """Read batches from ``fd_in`` until ``!close`` or end of input; acknowledge on
    ``fd_out``. Returns the process's exit status."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def out(obj: Any) -> None:
        data = packer.pack(obj)
        try:
            while data:
                data = data[os.write(fd_out, data) :]
        except OSError:
            pass  # nobody listens any more (the runtime's process is gone)

    writer: _Writer | None = None
    closed = False
    buf = bytearray()
    inp = _Input(fd_in)
    try:
        while not closed:
            data = inp.get()
            if not data:
                break  # end of input: the runtime's process died or dropped us
            buf += data
            pos = 0
            end = len(buf)
            while end - pos >= 8:
                n = int.from_bytes(buf[pos : pos + 8], "little")
                if end - pos - 8 < n:
                    break
                batch = _loads(bytes(buf[pos + 8 : pos + 8 + n]))
                pos += 8 + n
                if writer is None:
                    writer = _Writer(batch[0], out)
                    out(["ready"])
                    continue
                if batch and batch[-1][0] == "!close":
                    writer.add(batch[:-1])
                    closed = True
                    break
                writer.add(batch)
            del buf[:pos]
            if writer is None or closed:
                continue
            # Keep reading while more input is ready (a bigger transaction is a
            # cheaper one), then write what we have.
            if writer.events < _MAX_TXN and inp.ready():
                continue
            writer.write()
            if not inp.ready():
                # Idle: move the log into the database now, so that closing (which
                # checkpoints whatever is left) has little left to do.
                writer.checkpoint()
        if writer is not None:
            writer.write()
            writer.finish()
            out(["closed", writer.txns])
        return 0
    except Exception as exc:
        reason = str(exc) if isinstance(exc, sqlite3.Error) else f"{type(exc).__name__}: {exc}"
        out(["error", fault_kind(exc), reason])
        return 1


def main() -> None:
    """The child process's entry point."""
    try:
        # The run comes first: on a busy machine the writer takes the spare CPU
        # (and the queue, bounded, pushes back if it falls too far behind).
        os.nice(_NICE)
    except (AttributeError, OSError):  # pragma: no cover - not POSIX
        pass
    status = serve(sys.stdin.fileno(), sys.stdout.fileno())
    # Everything is committed, closed and acknowledged: skip the interpreter's
    # teardown (module cleanup, tens of milliseconds the runtime would wait for).
    os._exit(status)
