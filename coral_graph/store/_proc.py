"""The store's writer process: events in through a pipe, rows out into SQLite.

:class:`~coral_graph.store.SQLiteStore` starts this module as a child process
(``python -c "from coral_graph.store._proc import main; main()"``) and feeds it
on its stdin. Building rows and running SQLite happen here, on another core and
outside the runtime's GIL; the runtime's process only turns each event into a
compact tuple and writes msgpack batches to the pipe.

The wire (stdin), a stream of msgpack objects:

* first, a map ``{"path", "pid", "proc_start", "graph_path"}``: the store file
  and the identity of the process whose runs these are;
* then batches: arrays of items. An item is an event as ``[kind, run_id, seq,
  ts, …the event's other fields in dataclass order]`` (a message as the array of
  :class:`~coral_graph.Message`'s fields), or a command: ``["!resume", run_id]``,
  ``["!flush", token]``, ``["!close"]``.

Everything readable at once is written in one transaction. Acknowledgements go
back on stdout as msgpack arrays: ``["flushed", token, transactions]`` once
everything before the flush is committed, ``["error", text]`` when writing
failed (the process then exits), ``["closed", transactions]`` at the end.

End of input without ``!close`` means the runtime's process died (even
SIGKILL): everything received is committed, and the runs it was writing are
marked ``interrupted``. A batch cut in the middle is never half-applied: only
complete msgpack objects are read.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from typing import Any

import msgpack

from coral_graph._events import EVENT_TYPES, Event, MessageSent
from coral_graph._model import Message
from coral_graph.store._rows import Rows, new_packer, write_rows

__all__ = ["main"]

_READ = 1 << 20
_MAX_TXN = 100_000
"""Events at which a transaction is written even though more input is ready."""


def _decoder() -> Callable[[list[Any]], Event]:
    types = dict(EVENT_TYPES)
    ms = MessageSent

    def decode(item: list[Any]) -> Event:
        cls = types[item[0]]
        if cls is ms:
            m = item[4]
            meta = m[8]
            return ms(
                item[1],
                item[2],
                item[3],
                Message(m[0], m[1], m[2], m[3], m[4], tuple(m[5]), m[6], m[7], meta or None),
            )
        return cls(*item[1:])

    return decode


class _Writer:
    def __init__(self, init: dict[str, Any], out: Callable[[Any], None]) -> None:
        from pathlib import Path

        from coral_graph.store._sqlite import _connect_writer

        self.conn = _connect_writer(Path(init["path"]))
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
        """Write every item received so far in one transaction; then acknowledge."""
        items, self.items, self.events = self.items, [], 0
        if not items:
            return
        conn = self.conn
        decode = self.decode
        rows = Rows()
        flushes: list[Any] = []
        events: list[Event] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                kind = item[0]
                if kind[0] != "!":
                    events.append(decode(item))
                    continue
                if events:
                    rows.add(events, self.pack, self.run_extra)
                    events = []
                if kind == "!flush":
                    flushes.append(item[1])
                elif kind == "!resume":
                    write_rows(conn, rows)
                    rows = Rows()
                    self.runs.add(item[1])
                    conn.execute(
                        "UPDATE runs SET status = 'running', stop_reason = NULL, ended_at = NULL,"
                        " pid = ?, proc_start = ? WHERE run_id = ?",
                        (self.pid, self.proc_start, item[1]),
                    )
            if events:
                rows.add(events, self.pack, self.run_extra)
            write_rows(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.txns += 1
        for token in flushes:
            self.out(["flushed", token, self.txns])

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

    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=1 << 31, use_list=True
    )
    writer: _Writer | None = None
    closed = False
    try:
        while not closed:
            data = os.read(fd_in, _READ)
            if not data:
                break  # end of input: the runtime's process died or dropped us
            unpacker.feed(data)
            for obj in unpacker:
                if writer is None:
                    writer = _Writer(obj, out)
                    continue
                if obj and obj[-1][0] == "!close":
                    writer.add(obj[:-1])
                    closed = True
                    break
                writer.add(obj)
            if writer is None or closed:
                continue
            # Keep reading while more input is ready (a bigger transaction is a
            # cheaper one), then write what we have.
            if writer.events < _MAX_TXN and select.select([fd_in], [], [], 0)[0]:
                continue
            writer.write()
        if writer is not None:
            writer.write()
            writer.finish()
            out(["closed", writer.txns])
        return 0
    except Exception as exc:
        out(["error", f"{type(exc).__name__}: {exc}"])
        return 1


def main() -> None:
    """The child process's entry point."""
    sys.exit(serve(sys.stdin.fileno(), sys.stdout.fileno()))
