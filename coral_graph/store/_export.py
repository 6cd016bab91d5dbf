"""Export a stored run to a file and import it back: msgpack or JSON Lines.

Both formats carry a header, the run's events in ``seq`` order (each exactly
:func:`coral_graph.event_to_dict`), and an end marker, so a truncated file is
told apart from a complete one. The msgpack format is specified in
``docs/msgpack-format.md``; it is also the wire encoding of events. Exporting
an imported run gives the same bytes again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgpack

from coral_graph._events import EVENT_TYPES, Event, event_from_dict
from coral_graph.store._errors import ExportFormatError, RunExistsError, fault_kind, write_error
from coral_graph.store._json import dumps
from coral_graph.store._reader import StoreReader
from coral_graph.store._rows import Rows, new_packer, write_rows
from coral_graph.store._schema import connect_writer as _connect_writer
from coral_graph.store._sql import write_transaction
from coral_graph.store._sqlite import resolve_db

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "export_run", "import_run", "read_export"]

EXPORT_FORMAT = "coral-graph-export"
EXPORT_VERSION = 1
FORMATS = ("msgpack", "jsonl")


def export_run(reader: StoreReader, run_id: str, out: IO[bytes], fmt: str = "msgpack") -> int:
    """Write run ``run_id`` from ``reader`` to ``out`` in ``fmt`` (``msgpack`` or
    ``jsonl``). Returns the number of events written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    rid = reader.resolve_run(run_id)
    row = reader.run(rid)
    blobs = list(reader.event_blobs(rid))
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "encoding": fmt,
        "run_id": rid,
        "events": len(blobs),
        "graph_path": row.get("graph_path"),
    }
    if fmt == "msgpack":
        pack = new_packer()
        out.write(pack(header))
        crc = 0
        for b in blobs:
            crc = zlib.crc32(b, crc)
            out.write(b)
        out.write(pack({"end": EXPORT_FORMAT, "events": len(blobs), "crc32": crc}))
    else:

        def line(obj: Any) -> bytes:
            # Valid JSON: non-finite floats as "NaN"/"Infinity" (read back by import).
            return dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

        out.write(line(header))
        for b in blobs:
            out.write(line(msgpack.unpackb(b, raw=False, strict_map_key=False)))
        out.write(line({"end": EXPORT_FORMAT, "events": len(blobs)}))
    return len(blobs)


def _check_header(path: str, header: Any, encoding: str) -> dict[str, Any]:
    from coral_graph.store._export_model import Header, ValidationError, describe

    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ExportFormatError(path, "it does not start with a coral-graph export header")
    version = header.get("version")
    if type(version) is int and version > EXPORT_VERSION:
        raise ExportFormatError(
            path,
            f"export version {version!r} is newer than this coral-graph reads "
            f"({EXPORT_VERSION}); upgrade coral-graph",
        )
    try:
        Header.model_validate(header)
    except ValidationError as exc:
        raise ExportFormatError(path, f"the header is invalid: {describe(exc)}") from None
    if header["events"] == 0:
        raise ExportFormatError(path, "it holds no events: there is no run to import")
    return header


def _msgpack_items(path: str, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    u = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1 << 20))
    u.feed(data)
    try:
        header = _check_header(path, next(u), "msgpack")
        n = header["events"]
        start = u.tell()
        items: list[dict[str, Any]] = []
        end: Any = None
        for obj in u:
            if isinstance(obj, dict) and obj.get("end") == EXPORT_FORMAT:
                stop = u.tell()
                end = obj
                break
            items.append(obj)
        else:
            stop = u.tell()
    except StopIteration:
        raise ExportFormatError(path, "the file is empty or truncated") from None
    except ExportFormatError:
        raise
    except Exception as exc:
        raise ExportFormatError(path, f"corrupt msgpack data ({exc})") from None
    if end is None:
        raise ExportFormatError(
            path, f"truncated: the header promises {n} events, found {len(items)} and no end marker"
        )
    if end.get("events") != n or len(items) != n:
        raise ExportFormatError(
            path, f"the header promises {n} events, the file holds {len(items)}"
        )
    body_end = stop - len(new_packer()(end))
    crc = zlib.crc32(data[start:body_end])
    if end.get("crc32") != crc:
        raise ExportFormatError(path, "checksum mismatch: the events were altered or corrupted")
    if stop != len(data):
        raise ExportFormatError(path, "unexpected data after the end marker")
    return header, items


def _jsonl_items(path: str, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    parsed = []
    for i, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportFormatError(path, f"line {i}: corrupt JSON ({exc})") from None
        except RecursionError:
            raise ExportFormatError(path, f"line {i}: JSON nested too deeply") from None
    if not parsed:
        raise ExportFormatError(path, "the file is empty")
    header = _check_header(path, parsed[0], "jsonl")
    n = header["events"]
    end = parsed[-1] if len(parsed) > 1 else None
    if not (isinstance(end, dict) and end.get("end") == EXPORT_FORMAT):
        raise ExportFormatError(
            path, f"truncated: the header promises {n} events and there is no end marker"
        )
    items = parsed[1:-1]
    if end.get("events") != n or len(items) != n:
        raise ExportFormatError(
            path, f"the header promises {n} events, the file holds {len(items)}"
        )
    return header, items


def read_export(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Event]]:
    """Parse and check an export file; returns its header and events.

    Raises:
        ExportFormatError: unreadable, corrupt, truncated, inconsistent, or not an export.
    """
    p = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ExportFormatError(p, exc.strerror or str(exc)) from None
    if not data:
        raise ExportFormatError(p, "the file is empty")
    if data[:1] == b"{":
        header, items = _jsonl_items(p, data)
    else:
        header, items = _msgpack_items(p, data)
    return header, _check_events(p, header["run_id"], items)


def _check_events(path: str, rid: str, items: list[Any]) -> list[Event]:
    """Every record validated against the format's models (see ``_export_model``),
    then turned into events; the first error names the record and the field."""
    from coral_graph.store._export_model import (
        EVENT_ADAPTER,
        ValidationError,
        describe,
        plain_value,
    )

    events: list[Event] = []
    last = 0
    for i, d in enumerate(items, 1):
        if type(d) is not dict:
            raise ExportFormatError(path, f"event {i} is a {type(d).__name__}, not a map")
        kind, seq = d.get("kind"), d.get("seq")
        what = f"event {i} (seq {str(seq)[:24]}, {str(kind)[:40]})"
        try:
            rec = EVENT_ADAPTER.validate_python(d)
        except ValidationError as exc:
            raise ExportFormatError(path, f"{what}: {describe(exc)}") from None
        except RecursionError:
            raise ExportFormatError(path, f"{what}: nested too deeply") from None
        if i == 1 and rec.kind != "run_started":
            raise ExportFormatError(path, f"{what}: the first event must be run_started")
        if rec.run_id != rid:
            raise ExportFormatError(path, f"{what}: of run {rec.run_id!r}, not {rid!r}")
        if rec.seq <= last:
            raise ExportFormatError(path, f"{what}: out of order (after seq {last})")
        last = rec.seq
        data = rec.model_dump(exclude_unset=True)
        # Fields of the event this model does not know yet (added by a newer
        # coral-graph as optional): plain data, passed on as they are.
        for f in dataclasses.fields(EVENT_TYPES[rec.kind]):
            if f.name not in data and f.name in d:
                try:
                    data[f.name] = plain_value(d[f.name], (f.name,))
                except ValueError as exc:
                    raise ExportFormatError(path, f"{what}: {exc}") from None
        events.append(event_from_dict(data))
    return events


def import_run(path: str | os.PathLike[str], db: str | os.PathLike[str] | None = None) -> str:
    """Import an export file into the store ``db``; returns the run id.

    Raises:
        ExportFormatError: the file is not a valid export.
        RunExistsError: the store already holds that run.
    """
    header, events = read_export(path)
    rid = header["run_id"]
    rows = Rows()
    graph_path = header.get("graph_path")
    rows.add(events, new_packer(), lambda _rid: (None, None, graph_path))
    dbp = resolve_db(db)
    conn = _connect_writer(dbp)
    try:
        # The check and the rows in one write transaction: of two processes
        # importing the same file at once, the second waits and finds the run.
        with write_transaction(conn):
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (rid,)).fetchone():
                raise RunExistsError(rid, str(dbp))
            write_rows(conn, rows)
    except sqlite3.Error as exc:
        raise write_error(str(dbp), fault_kind(exc), str(exc)) from None
    finally:
        conn.close()
    return str(rid)


def iter_export_events(path: str | os.PathLike[str]) -> Iterator[Event]:
    """The events of an export file (checked first)."""
    yield from read_export(path)[1]
