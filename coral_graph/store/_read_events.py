"""How a reader gets a run's events and deliveries back, for every schema version.

Version 4 keeps a run's events in three tables (``events``, ``messages``,
``delivery_blocks``; see ``docs/store.md``) merged here by seq; versions 1 to 3
are read as they were written. Mixed into :class:`~coral_graph.store.StoreReader`.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Callable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgpack

from coral_graph._events import Event, event_from_dict
from coral_graph.store._blocks import decode_block
from coral_graph.store._guard import ReadGuard, guarded
from coral_graph.store._rows import DELIVERY_KEYS, message_event_dict, new_packer

__all__ = ["EventReads"]

_DELIVERY_COLS = ("seq", "ts", "agent", "message_id", "via", "ok", "duration_s", "worker")


def _mentions_decoder(bad: Callable[[Any], None]) -> Callable[[str], list[Any]]:
    """Decodes ``messages.mentions`` (JSON), caching the lists: a run has few.
    ``bad(value)`` is told of a value that is not a JSON list (read as [])."""
    cache: dict[str, list[Any]] = {}
    loads = json.loads

    def mentions(js: str) -> list[Any]:
        ms = cache.get(js)
        if ms is None:
            try:
                ms = loads(js)
            except (ValueError, TypeError, RecursionError):
                ms = None
            if type(ms) is not list:
                bad(js)
                return []
            if len(cache) > 50_000:
                cache.clear()
            cache[js] = ms
        return list(ms)

    return mentions


class EventReads(ReadGuard):
    """A run's raw events and deliveries (needs ``_conn``, ``schema_version``, ``path``).

    Damaged rows are read around (see :mod:`coral_graph.store._guard`): an
    ``events`` row whose msgpack does not decode, or a delivery block of an
    unknown layout, is left out and named in :attr:`problems`."""

    _conn: sqlite3.Connection
    schema_version: int
    path: Path

    def _event_rows(self, run_id: str, after_seq: int) -> Iterator[tuple[Any, ...]]:
        """Versions 1 to 3: (data, kind, run_id, seq, ts, agent, message_id, via, ok,
        duration_s, and the ``messages`` row of a version 3 ``message_sent`` kept
        without ``data``: message_id, thread_id, seq, sender, content, ts, reply_to,
        mentions) in order; ``data`` is None for the events kept in columns."""
        if self.schema_version >= 3:
            sql = (
                "SELECT e.data, e.kind, e.run_id, e.seq, e.ts, e.agent, e.message_id, e.via, "
                "e.ok, e.duration_s, m.message_id, m.thread_id, m.seq, m.sender, m.content, "
                "m.ts, m.reply_to, m.mentions FROM events AS e LEFT JOIN messages AS m "
                "ON e.data IS NULL AND e.kind = 'message_sent' AND m.run_id = e.run_id "
                "AND m.gseq = e.seq WHERE e.run_id = ? AND e.seq > ? ORDER BY e.seq"
            )
        elif self.schema_version >= 2:
            sql = (
                "SELECT data, kind, run_id, seq, ts, agent, message_id, via, ok, duration_s "
                "FROM events WHERE run_id = ? AND seq > ? ORDER BY seq"
            )
        else:
            sql = "SELECT data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq"
        cur = self._conn.execute(sql, (run_id, after_seq))
        cur.row_factory = None
        return iter(cur)

    def _column_dicts(self, run_id: str, after_seq: int) -> Iterator[tuple[Any, ...]]:
        """(data, plain data or None): the plain data when ``data`` is None (rebuilt
        from the columns, a block or the ``messages`` row), else None."""
        if self.schema_version >= 4:
            yield from self._merged(run_id, after_seq)
            return
        keys = DELIVERY_KEYS
        mentions = self._mentions_of(run_id)
        for row in self._event_rows(run_id, after_seq):
            data = row[0]
            if data is not None:
                yield data, None
            elif row[1] == "message_sent":
                if row[10] is None:
                    self._problem(
                        "events", f"run_id {run_id}, seq {row[3]}", "its message row is missing"
                    )
                    continue
                yield (
                    None,
                    message_event_dict(row[2], row[3], row[4], row[10:17], mentions(row[17])),
                )
            else:
                d = dict(zip(keys, row[1:10], strict=True))
                d["ok"] = bool(d["ok"])
                yield None, d

    def _merged(self, run_id: str, after_seq: int) -> Iterator[tuple[Any, ...]]:
        """Version 4: ``events``, ``messages`` and ``delivery_blocks`` merged by seq."""
        conn = self._conn
        cur = conn.execute(
            "SELECT seq, 0, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        )
        cur.row_factory = None
        mcur = conn.execute(
            "SELECT gseq, 1, message_id, thread_id, seq, sender, content, ts, reply_to, "
            "mentions FROM messages WHERE run_id = ? AND gseq > ? ORDER BY gseq",
            (run_id, after_seq),
        )
        mcur.row_factory = None
        mentions = self._mentions_of(run_id)
        last = after_seq
        # heapq.merge keeps the order of the streams for equal seqs: a stored event
        # comes first and takes the place of the messages row of the same seq.
        merged = heapq.merge(cur, mcur, self._delivery_rows(run_id, after_seq), key=itemgetter(0))
        for row in merged:
            seq = row[0]
            if seq == last:
                continue
            last = seq
            tag = row[1]
            if tag == 0:
                yield row[2], None
            elif tag == 1:
                yield None, message_event_dict(run_id, seq, row[7], row[2:9], mentions(row[9]))
            else:
                yield None, row[2]

    def _mentions_of(self, run_id: str) -> Callable[[str], list[Any]]:
        return _mentions_decoder(
            lambda js: self._problem(
                "messages", f"run_id {run_id}", f"mentions {str(js)[:40]!r} are not a JSON list"
            )
        )

    def _delivery_rows(self, run_id: str, after_seq: int) -> Iterator[tuple[Any, ...]]:
        """``(seq, 2, plain data)`` of every delivery after ``after_seq``, in order."""
        for cols in self._blocks(run_id, after_seq):
            for seq, ts, agent, mid, via, ok, dur, worker in zip(*cols, strict=True):
                if seq > after_seq:
                    d = {
                        "kind": "delivery_handled", "run_id": run_id, "seq": seq, "ts": ts,
                        "agent": agent, "message_id": mid, "via": via, "ok": ok,
                        "duration_s": dur,
                    }  # fmt: skip
                    if worker is not None:  # as event_to_dict: no key while None
                        d["worker"] = worker
                    yield seq, 2, d

    def _blocks(self, run_id: str, after_seq: int = 0) -> Iterator[list[Any]]:
        """The decoded columns of the run's delivery blocks that reach past ``after_seq``."""
        cur = self._conn.execute(
            "SELECT data, first_seq FROM delivery_blocks WHERE run_id = ? AND last_seq > ? "
            "ORDER BY first_seq",
            (run_id, after_seq),
        )
        cur.row_factory = None
        for data, first in cur:
            try:
                cols = decode_block(data)
                if len({len(c) for c in cols}) != 1:
                    raise ValueError("its columns differ in length")
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                self._problem(
                    "delivery_blocks",
                    f"run_id {run_id}, first_seq {first}",
                    f"not a delivery block ({str(exc)[:80]}); its deliveries are left out",
                )
                continue
            yield cols

    @guarded
    def deliveries(self, run_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Every handled delivery of the run in order: ``seq``, ``ts``, ``agent``,
        ``message_id``, ``via`` (``handle`` or ``wait``), ``ok``, ``duration_s``,
        ``worker`` (``host:pid`` of the worker process that handled it in a
        distributed run, else None); those after ``after_seq``."""
        return [
            dict(zip(_DELIVERY_COLS, r, strict=True))
            for cols in self.delivery_columns(run_id, after_seq)
            for r in zip(*cols, strict=True)
            if r[0] > after_seq
        ]

    @guarded
    def delivery_columns(self, run_id: str, after_seq: int = 0) -> Iterator[list[Any]]:
        """The run's deliveries in column chunks, in order: each a list of eight
        equally long sequences ``[seqs, ts, agents, message_ids, vias, oks,
        durations, workers]`` (cheaper than :meth:`deliveries` for aggregates).
        With ``after_seq``, the chunks that reach past it (whole: they may begin
        before it)."""
        if self.schema_version >= 4:
            yield from self._blocks(run_id, after_seq)
            return
        cur = self._conn.execute(
            "SELECT seq, ts, agent, message_id, via, ok, duration_s FROM events "
            "WHERE run_id = ? AND kind = 'delivery_handled' ORDER BY seq"
            if self.schema_version >= 2
            else "SELECT d.seq, e.ts, d.agent, d.message_id, d.via, d.ok, d.duration_s "
            "FROM deliveries AS d JOIN events AS e ON e.run_id = d.run_id AND e.seq = d.seq "
            "WHERE d.run_id = ? ORDER BY d.seq",
            (run_id,),
        )
        cur.row_factory = None
        rows = [(*r[:5], bool(r[5]), r[6]) for r in cur]
        if rows:
            yield [*(list(c) for c in zip(*rows, strict=True)), [None] * len(rows)]

    def _unpack(self, run_id: str, data: Any) -> dict[str, Any] | None:
        """A stored event's plain data; None (and a problem) if it does not decode."""
        try:
            d = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if type(d) is not dict or type(d.get("seq")) is not int:
                raise ValueError("not an event map")
        except Exception as exc:
            self._problem(
                "events",
                f"run_id {run_id}",
                f"a row does not decode ({type(exc).__name__}: {str(exc)[:60]}); left out",
            )
            return None
        return d

    @guarded
    def event_dicts(self, run_id: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Every stored event of the run after ``after_seq``, as plain data, in order."""
        for data, d in self._column_dicts(run_id, after_seq):
            if d is None:
                d = self._unpack(run_id, data)
                if d is None:
                    continue
            yield d

    @guarded
    def event_blobs(self, run_id: str) -> Iterator[bytes]:
        """The msgpack bytes of every event, in order (as stored, or rebuilt exactly
        for the events kept in columns). A stored blob that does not decode is left
        out (see :attr:`problems`)."""
        pack = new_packer()
        for data, d in self._column_dicts(run_id, 0):
            if d is None:
                if self._unpack(run_id, data) is None:
                    continue
                yield bytes(data)
            else:
                yield pack(d)

    @guarded
    def events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """Every stored event of the run after ``after_seq``, in order (a stored
        event that is not a valid event is left out; see :attr:`problems`)."""
        out = []
        for d in self.event_dicts(run_id, after_seq):
            try:
                out.append(event_from_dict(d))
            except Exception as exc:
                self._problem(
                    "events",
                    f"run_id {run_id}, seq {d.get('seq')}",
                    f"not a valid event ({type(exc).__name__}: {str(exc)[:60]}); left out",
                )
        return out

    @guarded
    def last_seq(self, run_id: str) -> int:
        """The newest stored event's seq (0 when none)."""
        sql = "SELECT max(seq) FROM events WHERE run_id = ?"
        if self.schema_version >= 4:
            sql = (
                "SELECT max(coalesce((SELECT max(seq) FROM events WHERE run_id = ?1), 0), "
                "coalesce((SELECT max(gseq) FROM messages WHERE run_id = ?1), 0), "
                "coalesce((SELECT max(last_seq) FROM delivery_blocks WHERE run_id = ?1), 0))"
            )
        row = self._conn.execute(sql, (run_id,)).fetchone()
        return int(row[0] or 0)

    @guarded
    def logs(self, run_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """The run's ``agent_logged`` events after ``after_seq``, in order, as dicts
        with ``seq``, ``ts``, ``agent``, ``source``, ``text`` and ``data`` (a row that
        does not decode is left out; see :attr:`problems`)."""
        rows = self._conn.execute(
            "SELECT data FROM events WHERE run_id = ? AND kind = 'agent_logged' AND seq > ? "
            "ORDER BY seq",
            (run_id, after_seq),
        ).fetchall()
        out = []
        for (data,) in rows:
            d = self._unpack(run_id, data) if data is not None else None
            if d is None:
                continue
            out.append(
                {
                    "seq": d["seq"],
                    "ts": d.get("ts"),
                    "agent": str(d.get("agent") or ""),
                    "source": str(d.get("source") or ""),
                    "text": str(d.get("text") or ""),
                    "data": d.get("data"),
                }
            )
        return out
