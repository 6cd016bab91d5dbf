"""StoreReader: read-only access to a store, for the CLI, the viewers and resume.

A reader opens the file with a ``mode=ro`` URI: it never creates, migrates or
modifies it, and it never blocks the writer (WAL). It checks that the file is a
coral-graph store of a version it understands before anything else.

A run whose row says ``running`` but whose writer process is gone (its pid is
dead, or belongs to a newer process) reads as ``interrupted``: that is how a run
killed with SIGKILL shows up.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgpack

from coral_graph._events import Event, event_from_dict
from coral_graph.store._errors import NotAStoreError, StoreError, UnknownRunError
from coral_graph.store._rows import DELIVERY_KEYS, decode_block, message_event_dict, new_packer
from coral_graph.store._schema import check_meta
from coral_graph.store._sqlite import proc_start_time, resolve_db

__all__ = ["StoreReader", "open_reader", "writer_alive"]


def writer_alive(pid: int | None, proc_start: str | None) -> bool:
    """Whether process ``pid`` (started at ``proc_start``, when known) still runs."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return False
    if proc_start is not None:
        now = proc_start_time(pid)
        if now is not None and now != proc_start:
            return False
    return True


_RUN_COLS = (
    "run_id, graph_name, task, entry, answer_by, graph, budgets, status, stop_reason, answer, "
    "answer_id, error, started_at, ended_at, messages, tokens, cost_usd, pid, last_seq, "
    "graph_path, proc_start, usage"
)
_JSON_COLS = ("entry", "answer_by", "graph", "budgets", "usage")
_DELIVERY_COLS = ("seq", "ts", "agent", "message_id", "via", "ok", "duration_s")
_MSG_KEYS = (
    "message_id",
    "thread_id",
    "seq",
    "gseq",
    "sender",
    "content",
    "mentions",
    "ts",
    "reply_to",
    "metadata",
)


class StoreReader:
    """Read-only queries over a store. Get one from :func:`open_reader`.

    Rows come back as plain dicts (JSON-ready); JSON columns are decoded.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = resolve_db(path)
        p = str(self.path)
        if not self.path.is_file():
            raise NotAStoreError(p, "no such file (run something first, or pass --db)")
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise NotAStoreError(p, str(exc)) from None
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA busy_timeout = 5000")
            version = check_meta(self._conn, p)
        except BaseException:
            self._conn.close()
            raise
        if version is None:
            self._conn.close()
            raise NotAStoreError(p, "the file is empty")
        self.schema_version = version

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------

    def _run_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for k in _JSON_COLS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        if d["status"] == "running" and not writer_alive(d["pid"], d.pop("proc_start")):
            d["status"] = "interrupted"
        d.pop("proc_start", None)
        start, end = d.get("started_at"), d.get("ended_at")
        d["duration_s"] = (end - start) if start is not None and end is not None else None
        return d

    def list_runs(self, limit: int | None = 50) -> list[dict[str, Any]]:
        """The newest runs first (``limit`` None for all)."""
        sql = f"SELECT {_RUN_COLS} FROM runs ORDER BY started_at DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [self._run_dict(r) for r in rows]

    def resolve_run(self, run_id: str) -> str:
        """The full id of ``run_id``, which may be a unique prefix, ``last`` or ``latest``."""
        conn = self._conn
        if run_id in ("last", "latest"):
            row = conn.execute(
                "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1"
            ).fetchone()
        else:
            row = conn.execute("SELECT run_id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None and run_id:
                found = conn.execute(
                    "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
                    (run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
                ).fetchall()
                row = found[0] if len(found) == 1 else None
        if row is None:
            known = [r["run_id"] for r in self.list_runs(5)]
            raise UnknownRunError(run_id, str(self.path), known)
        return str(row[0])

    def run(self, run_id: str) -> dict[str, Any]:
        """The summary row of ``run_id`` (see the ``runs`` table).

        Raises:
            UnknownRunError: no such run.
        """
        rid = self.resolve_run(run_id)
        row = self._conn.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (rid,)
        ).fetchone()
        return self._run_dict(row)

    # -- the transcript ---------------------------------------------------------------

    def messages(
        self,
        run_id: str,
        thread_id: str | None = None,
        *,
        after_gseq: int = 0,
        limit: int | None = None,
        agent: str | None = None,
        grep: str | None = None,
    ) -> list[dict[str, Any]]:
        """Messages in event order. ``agent`` keeps those it sent or was mentioned in;
        ``grep`` those whose content contains the text (case-insensitive)."""
        sql = (
            "SELECT message_id, thread_id, seq, gseq, sender, content, mentions, ts, reply_to, "
            "metadata FROM messages WHERE run_id = ? AND gseq > ?"
        )
        args: list[Any] = [run_id, after_gseq]
        if thread_id is not None:
            sql += " AND thread_id = ?"
            args.append(thread_id)
        if agent is not None:
            sql += (
                " AND (sender = ? OR message_id IN (SELECT message_id FROM mentions "
                "WHERE run_id = ? AND agent = ?))"
            )
            args += [agent, run_id, agent]
        if grep:
            sql += " AND instr(lower(content), lower(?)) > 0"
            args.append(grep)
        sql += " ORDER BY gseq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        # Built by hand (no sqlite3.Row, cached JSON for repeated mentions): a
        # 100,000-message run must load in well under a second.
        out = []
        loads = json.loads
        cache: dict[str, list[str]] = {}
        keys = _MSG_KEYS
        cur = self._conn.execute(sql, args)
        cur.row_factory = None
        for r in cur:
            d = dict(zip(keys, r, strict=True))
            ms = r[6]
            if ms:
                got = cache.get(ms)
                if got is None:
                    got = cache[ms] = loads(ms)
                d["mentions"] = list(got)
            else:
                d["mentions"] = []
            meta = r[9]
            d["metadata"] = loads(meta) if meta and meta != "{}" else {}
            out.append(d)
        return out

    def threads(self, run_id: str) -> list[dict[str, Any]]:
        """Threads with their participants (``participants``: current members in join
        order) and message counts."""
        conn = self._conn
        out = []
        counts = dict(
            conn.execute(
                "SELECT thread_id, count(*) FROM messages WHERE run_id = ? GROUP BY thread_id",
                (run_id,),
            ).fetchall()
        )
        parts: dict[str, list[str]] = {}
        for p in conn.execute(
            "SELECT thread_id, agent FROM participants WHERE run_id = ? AND removed_at IS NULL "
            "ORDER BY rowid",
            (run_id,),
        ):
            parts.setdefault(p[0], []).append(p[1])
        for r in conn.execute(
            "SELECT thread_id, name, creator, created_at, closed_at, summary, state FROM threads "
            "WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,),
        ):
            d = dict(r)
            d["participants"] = parts.get(d["thread_id"], [])
            d["messages"] = counts.get(d["thread_id"], 0)
            out.append(d)
        return out

    def agents(self, run_id: str) -> list[dict[str, Any]]:
        """The agents of the run: name, description, kind."""
        rows = self._conn.execute(
            "SELECT name, description, kind FROM agents WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [dict(r) for r in rows]

    def tool_calls(self, run_id: str) -> list[dict[str, Any]]:
        """Tool calls in order, arguments decoded."""
        out = []
        for r in self._conn.execute(
            "SELECT seq, agent, thread_id, tool, arguments, result, ok, duration_s, message_id "
            "FROM tool_calls WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ):
            d = dict(r)
            d["arguments"] = json.loads(d["arguments"]) if d["arguments"] else {}
            d["ok"] = bool(d["ok"])
            out.append(d)
        return out

    def errors(self, run_id: str) -> list[dict[str, Any]]:
        """Agent errors in order."""
        rows = self._conn.execute(
            "SELECT seq, agent, message_id, error_type, error, traceback, action FROM errors "
            "WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [dict(r) for r in rows]

    def usage(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per-agent totals: from the run's final usage when it finished, else
        computed from the stored rows so far."""
        row = self._conn.execute("SELECT usage FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and row[0]:
            return dict(json.loads(row[0]))
        out: dict[str, dict[str, Any]] = {}

        def slot(name: str) -> dict[str, Any]:
            return out.setdefault(
                name,
                {
                    "turns": 0,
                    "messages_sent": 0,
                    "deliveries": 0,
                    "errors": 0,
                    "llm_calls": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "tokens": 0,
                    "cost_usd": 0.0,
                    "llm_latency_s": 0.0,
                },
            )

        conn = self._conn
        for name, n in conn.execute(
            "SELECT sender, count(*) FROM messages WHERE run_id = ? AND sender != 'user' "
            "GROUP BY sender",
            (run_id,),
        ):
            slot(name)["messages_sent"] = n
        for cols in self.delivery_columns(run_id):
            for name, via in zip(cols[2], cols[4], strict=True):
                s = slot(name)
                s["deliveries"] += 1
                if via == "handle":
                    s["turns"] += 1
        for name, n in conn.execute(
            "SELECT agent, count(*) FROM errors WHERE run_id = ? GROUP BY agent", (run_id,)
        ):
            slot(name)["errors"] = n
        for name, n, pt, ct, cost, lat in conn.execute(
            "SELECT agent, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
            "sum(latency_s) FROM llm_calls WHERE run_id = ? GROUP BY agent",
            (run_id,),
        ):
            s = slot(name)
            s.update(
                llm_calls=n,
                prompt_tokens=pt or 0,
                completion_tokens=ct or 0,
                cost_usd=cost or 0.0,
                llm_latency_s=lat or 0.0,
            )
            s["tokens"] = s["prompt_tokens"] + s["completion_tokens"]
        return out

    # -- raw events -------------------------------------------------------------------

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
        loads = json.loads
        cache: dict[str, list[Any]] = {}
        for row in self._event_rows(run_id, after_seq):
            data = row[0]
            if data is not None:
                yield data, None
            elif row[1] == "message_sent":
                if row[10] is None:
                    raise StoreError(
                        f"{self.path}: event {row[3]} of run {run_id} has lost its message"
                    )
                js = row[17]
                ms = cache.get(js)
                if ms is None:
                    if len(cache) > 50_000:
                        cache.clear()
                    ms = cache[js] = loads(js)
                yield None, message_event_dict(row[2], row[3], row[4], row[10:17], list(ms))
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
        loads = json.loads
        cache: dict[str, list[Any]] = {}
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
                js = row[9]
                ms = cache.get(js)
                if ms is None:
                    if len(cache) > 50_000:
                        cache.clear()
                    ms = cache[js] = loads(js)
                yield None, message_event_dict(run_id, seq, row[7], row[2:9], list(ms))
            else:
                yield None, row[2]

    def _delivery_rows(self, run_id: str, after_seq: int) -> Iterator[tuple[Any, ...]]:
        """``(seq, 2, plain data)`` of every delivery after ``after_seq``, in order."""
        for cols in self._blocks(run_id, after_seq):
            for seq, ts, agent, mid, via, ok, dur in zip(*cols, strict=True):
                if seq > after_seq:
                    yield seq, 2, {
                        "kind": "delivery_handled", "run_id": run_id, "seq": seq, "ts": ts,
                        "agent": agent, "message_id": mid, "via": via, "ok": ok,
                        "duration_s": dur,
                    }  # fmt: skip

    def _blocks(self, run_id: str, after_seq: int = 0) -> Iterator[list[Any]]:
        """The decoded columns of the run's delivery blocks that reach past ``after_seq``."""
        cur = self._conn.execute(
            "SELECT data FROM delivery_blocks WHERE run_id = ? AND last_seq > ? ORDER BY first_seq",
            (run_id, after_seq),
        )
        cur.row_factory = None
        for (data,) in cur:
            try:
                yield decode_block(data)
            except (ValueError, msgpack.UnpackException) as exc:
                raise StoreError(f"{self.path}: a delivery block of run {run_id}: {exc}") from None

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        """Every handled delivery of the run in order: ``seq``, ``ts``, ``agent``,
        ``message_id``, ``via`` (``handle`` or ``wait``), ``ok``, ``duration_s``."""
        return [
            dict(zip(_DELIVERY_COLS, r, strict=True))
            for cols in self.delivery_columns(run_id)
            for r in zip(*cols, strict=True)
        ]

    def delivery_columns(self, run_id: str) -> Iterator[list[Any]]:
        """The run's deliveries in column chunks, in order: each a list of seven
        equally long sequences ``[seqs, ts, agents, message_ids, vias, oks,
        durations]`` (cheaper than :meth:`deliveries` for aggregates)."""
        if self.schema_version >= 4:
            yield from self._blocks(run_id)
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
            yield [list(c) for c in zip(*rows, strict=True)]

    def event_dicts(self, run_id: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Every stored event of the run after ``after_seq``, as plain data, in order."""
        unpackb = msgpack.unpackb
        for data, d in self._column_dicts(run_id, after_seq):
            if d is None:
                yield unpackb(data, raw=False, strict_map_key=False)
            else:
                yield d

    def event_blobs(self, run_id: str) -> Iterator[bytes]:
        """The msgpack bytes of every event, in order (as stored, or rebuilt exactly
        for the events kept in columns)."""
        pack = new_packer()
        for data, d in self._column_dicts(run_id, 0):
            yield bytes(data) if d is None else pack(d)

    def events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """Every stored event of the run after ``after_seq``, in order."""
        return [event_from_dict(d) for d in self.event_dicts(run_id, after_seq)]

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


def open_reader(path: str | os.PathLike[str] | None = None) -> StoreReader:
    """Open a store read-only (default path as for the writer).

    Raises:
        NotAStoreError: no such file, not SQLite, or not coral-graph's schema.
        StoreVersionError: written by a newer coral-graph.
    """
    return StoreReader(path)
