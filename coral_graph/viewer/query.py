"""Read-only queries over the SQLite store, shared by the web viewer and its export.

Everything here returns plain JSON-ready data. The store's schema (see
``coral_graph/store/_schema.py``) is the contract; the viewer opens the database
read-only (``mode=ro``) and never writes, so it can watch a run that another
process is still writing (SQLite WAL lets readers and one writer work together).

Messages are paged by **cursor** (the run-global ``gseq``), never by offset, so the
first or the 100,000th screen of a run costs the same: one index range scan.

>>> Filters.from_params({"thread": "t-1", "errors": "1"}).to_params()
{'thread': 't-1', 'errors': '1'}
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from coral_graph.store import resolve_db
from coral_graph.store._reader import open_reader, writer_alive

__all__ = ["KINDS", "Filters", "RunNotFoundError", "RunReader", "percentile"]

KINDS = ("task", "answer", "llm", "tool")
"""Message kinds a view can filter on: the task (sent by ``user``), answers (that
mention ``user``), messages written by a model (``metadata.model`` set), and
messages that carry tool calls."""

MAX_PAGE = 500
MAX_HITS = 10_000


class RunNotFoundError(LookupError):
    """No run with this id in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} in the store; `coral-graph view` lists the runs")
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class Filters:
    """What a view shows. Every field is optional; they combine with AND.

    Attributes:
        thread: one thread id.
        agent: messages an agent sent **or** was mentioned in.
        sender / mention: the exact sender → mention edge (``from`` / ``to`` in URLs).
        kind: one of :data:`KINDS`.
        errors: only messages whose handling raised.
        q: text search (case-insensitive, Unicode-aware) in content and sender.
    """

    thread: str | None = None
    agent: str | None = None
    sender: str | None = None
    mention: str | None = None
    kind: str | None = None
    errors: bool = False
    q: str | None = None

    _PARAM = {"sender": "from", "mention": "to"}  # noqa: RUF012 - class constant

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Filters:
        """Read filters from URL query parameters (``from``/``to`` for the edge)."""

        def get(name: str) -> str | None:
            value = params.get(cls._PARAM.get(name, name))
            return value if value else None

        kind = get("kind")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        return cls(
            thread=get("thread"),
            agent=get("agent"),
            sender=get("sender"),
            mention=get("mention"),
            kind=kind,
            errors=params.get("errors") in ("1", "true"),
            q=get("q"),
        )

    def to_params(self) -> dict[str, str]:
        """The inverse of :meth:`from_params` (unset fields left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is True:
                out[f.name] = "1"
            elif value:
                out[self._PARAM.get(f.name, f.name)] = value
        return out

    def without_query(self) -> Filters:
        """The same filters without the text search."""
        return Filters(
            self.thread, self.agent, self.sender, self.mention, self.kind, self.errors, None
        )

    def sql(self, run_id: str) -> tuple[str, list[Any]]:
        """A WHERE clause (over ``messages``) and its parameters."""
        where = ["run_id = ?"]
        params: list[Any] = [run_id]
        mentioned = "message_id IN (SELECT message_id FROM mentions WHERE run_id = ? AND agent = ?)"
        if self.thread:
            where.append("thread_id = ?")
            params.append(self.thread)
        if self.agent:
            where.append(f"(sender = ? OR {mentioned})")
            params += [self.agent, run_id, self.agent]
        if self.sender:
            where.append("sender = ?")
            params.append(self.sender)
        if self.mention:
            where.append(mentioned)
            params += [run_id, self.mention]
        if self.kind == "task":
            where.append("sender = 'user'")
        elif self.kind == "answer":
            where.append(mentioned)
            params += [run_id, "user"]
        elif self.kind == "llm":
            where.append(
                "metadata IS NOT NULL AND json_valid(metadata) "
                "AND json_extract(metadata, '$.model') IS NOT NULL"
            )
        elif self.kind == "tool":
            where.append(
                "message_id IN (SELECT message_id FROM tool_calls WHERE run_id = ? "
                "AND message_id IS NOT NULL)"
            )
            params.append(run_id)
        if self.errors:
            where.append(
                "message_id IN (SELECT message_id FROM errors WHERE run_id = ? "
                "AND message_id IS NOT NULL)"
            )
            params.append(run_id)
        if self.q:
            where.append("cg_match(content, sender, ?)")
            params.append(self.q.casefold())
        return " AND ".join(where), params


def _cg_match(content: object, sender: object, needle: object) -> bool:
    if not isinstance(needle, str):
        return False
    if isinstance(content, str) and needle in content.casefold():
        return True
    return isinstance(sender, str) and needle in sender.casefold()


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 to 100) of sorted ``values``, nearest-rank; None if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.0, 4.0)
    """
    if not values:
        return None
    k = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))
    return values[int(k)]


def _loads(text: object, default: Any) -> Any:
    if text is None or text == "":
        return default
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(str(text))
    except ValueError:
        return default


_MSG_COLS = "message_id, thread_id, seq, gseq, sender, content, mentions, ts, reply_to, metadata"


class RunReader:
    """Read-only access to the runs of one SQLite database.

    Thread-safe: each thread gets its own read-only connection (the web server
    runs its queries in a thread pool).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_db(path)
        # The store's own reader checks that this is a store of a version we read
        # (NotAStoreError, StoreVersionError otherwise).
        open_reader(self.path).close()
        self._local = threading.local()
        self._cache: dict[tuple[str, ...], Any] = {}
        self._cache_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.create_function("cg_match", 3, _cg_match, deterministic=True)
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA busy_timeout = 5000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _cached(self, key: tuple[str, ...], live: bool, fn: Any) -> Any:
        # Finished runs never change, so their aggregates are computed once.
        if live:
            return fn()
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = fn()
        with self._cache_lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = value
        return value

    # -- runs -----------------------------------------------------------------------

    def runs(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest runs first, as summaries."""
        rows = self.db.execute(
            "SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._run_summary(r) for r in rows]

    def _run_row(self, run_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        return row

    @staticmethod
    def _run_summary(r: sqlite3.Row) -> dict[str, Any]:
        graph = _loads(r["graph"], {})
        started = r["started_at"]
        ended = r["ended_at"]
        status = r["status"]
        if status == "running" and not writer_alive(r["pid"], r["proc_start"]):
            status = "interrupted"  # the writer died (e.g. SIGKILL): not live any more
        end = ended if ended is not None else (time.time() if status == "running" else None)
        return {
            "run_id": r["run_id"],
            "graph_name": r["graph_name"] or graph.get("name", ""),
            "task": r["task"],
            "status": status,
            "live": status == "running",
            "stop_reason": r["stop_reason"],
            "answer": r["answer"],
            "answer_id": r["answer_id"],
            "error": r["error"],
            "started_at": started,
            "ended_at": ended,
            "duration_s": (end - started) if (end is not None and started is not None) else None,
            "messages": r["messages"] or 0,
            "tokens": r["tokens"] or 0,
            "cost_usd": r["cost_usd"] or 0.0,
            "last_seq": r["last_seq"] or 0,
        }

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's summary with its graph, entry, budgets, agents and threads."""
        r = self._run_row(run_id)
        out = self._run_summary(r)
        if out["status"] == "finished":
            return dict(self._cached(("run", run_id), False, lambda: self._run_detail(r, out)))
        return self._run_detail(r, out)

    def _run_detail(self, r: sqlite3.Row, out: dict[str, Any]) -> dict[str, Any]:
        run_id = r["run_id"]
        graph = _loads(r["graph"], {})
        out["graph"] = graph
        out["entry"] = _loads(r["entry"], [])
        out["answer_by"] = _loads(r["answer_by"], [])
        out["budgets"] = _loads(r["budgets"], {})
        out["agents"] = [
            dict(a)
            for a in self.db.execute(
                "SELECT name, description, kind FROM agents WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            )
        ] or list(graph.get("agents", []))
        out["threads"] = self.threads(run_id)
        stats = self.db.execute(
            "SELECT count(*), max(gseq) FROM messages WHERE run_id = ?", (run_id,)
        ).fetchone()
        out["stored_messages"] = stats[0]
        out["last_gseq"] = stats[1] or 0
        out["error_count"] = self.db.execute(
            "SELECT count(*) FROM errors WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        return out

    def threads(self, run_id: str) -> list[dict[str, Any]]:
        """Every thread of a run, oldest first, with participants and counts."""
        db = self.db
        counts = {
            r[0]: (r[1], r[2], r[3])
            for r in db.execute(
                "SELECT thread_id, count(*), max(seq), max(ts) FROM messages "
                "WHERE run_id = ? GROUP BY thread_id",
                (run_id,),
            )
        }
        errors = dict(
            db.execute(
                # A message id is "<thread id>#<seq>": no join with messages needed.
                "SELECT substr(message_id, 1, instr(message_id, '#') - 1) AS tid, count(*) "
                "FROM errors WHERE run_id = ? AND message_id IS NOT NULL GROUP BY tid",
                (run_id,),
            ).fetchall()
        )
        members: dict[str, list[dict[str, Any]]] = {}
        for p in db.execute(
            "SELECT thread_id, agent, added_at, removed_at, added_by FROM participants "
            "WHERE run_id = ? ORDER BY rowid",
            (run_id,),
        ):
            members.setdefault(p["thread_id"], []).append(
                {
                    "agent": p["agent"],
                    "added_at": p["added_at"],
                    "removed_at": p["removed_at"],
                    "added_by": p["added_by"],
                }
            )
        out = []
        for t in db.execute(
            "SELECT thread_id, name, creator, created_at, closed_at, summary, state "
            "FROM threads WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,),
        ):
            n, last_seq, last_ts = counts.get(t["thread_id"], (0, 0, None))
            out.append(
                {
                    "thread_id": t["thread_id"],
                    "name": t["name"],
                    "creator": t["creator"],
                    "created_at": t["created_at"],
                    "closed_at": t["closed_at"],
                    "summary": t["summary"],
                    "state": t["state"] or ("closed" if t["closed_at"] else "open"),
                    "participants": members.get(t["thread_id"], []),
                    "messages": n,
                    "last_seq": last_seq or 0,
                    "last_ts": last_ts,
                    "errors": errors.get(t["thread_id"], 0),
                }
            )
        return out

    # -- messages ---------------------------------------------------------------------

    def _rows_to_messages(self, run_id: str, rows: Iterable[sqlite3.Row]) -> list[dict[str, Any]]:
        msgs = [
            {
                "id": r["message_id"],
                "thread_id": r["thread_id"],
                "seq": r["seq"],
                "gseq": r["gseq"],
                "sender": r["sender"],
                "content": r["content"],
                "mentions": _loads(r["mentions"], []),
                "ts": r["ts"],
                "reply_to": r["reply_to"],
                "metadata": _loads(r["metadata"], {}) or {},
                "tools": [],
                "errors": [],
            }
            for r in rows
        ]
        if not msgs:
            return msgs
        by_id = {m["id"]: m for m in msgs}
        marks = ",".join("?" * len(by_id))
        ids = [run_id, *by_id]
        for t in self.db.execute(
            "SELECT seq, agent, thread_id, tool, arguments, result, ok, duration_s, message_id "
            f"FROM tool_calls WHERE run_id = ? AND message_id IN ({marks}) ORDER BY seq",
            ids,
        ):
            by_id[t["message_id"]]["tools"].append(
                {
                    "seq": t["seq"],
                    "agent": t["agent"],
                    "tool": t["tool"],
                    "arguments": _loads(t["arguments"], {}),
                    "result": t["result"],
                    "ok": bool(t["ok"]),
                    "duration_s": t["duration_s"],
                }
            )
        for e in self.db.execute(
            "SELECT seq, agent, error_type, error, traceback, action, message_id "
            f"FROM errors WHERE run_id = ? AND message_id IN ({marks}) ORDER BY seq",
            ids,
        ):
            by_id[e["message_id"]]["errors"].append(
                {
                    "seq": e["seq"],
                    "agent": e["agent"],
                    "error_type": e["error_type"],
                    "error": e["error"],
                    "traceback": e["traceback"],
                    "action": e["action"],
                }
            )
        return msgs

    def gseq_of(self, run_id: str, message_id: str) -> int | None:
        """The run-global position of a message, or None."""
        row = self.db.execute(
            "SELECT gseq FROM messages WHERE run_id = ? AND message_id = ?", (run_id, message_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def _page(
        self, run_id: str, filters: Filters, *, after: int | None, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        where, params = filters.sql(run_id)
        if before is not None:
            rows = self.db.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE {where} AND gseq < ? "
                "ORDER BY gseq DESC LIMIT ?",
                [*params, before, limit + 1],
            ).fetchall()
            more = len(rows) > limit
            return self._rows_to_messages(run_id, reversed(rows[:limit])), more
        rows = self.db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE {where} AND gseq > ? ORDER BY gseq LIMIT ?",
            [*params, after if after is not None else 0, limit + 1],
        ).fetchall()
        more = len(rows) > limit
        return self._rows_to_messages(run_id, rows[:limit]), more

    def messages(
        self,
        run_id: str,
        filters: Filters = Filters(),
        *,
        after: int | None = None,
        before: int | None = None,
        around: int | None = None,
        end: bool = False,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of the messages that match ``filters``, in ``gseq`` order.

        Exactly one cursor applies: ``after`` (exclusive), ``before`` (exclusive),
        ``around`` (that position in the middle, itself included if it matches),
        ``end`` (the last page); none means the first page.

        Returns:
            ``{"items": [...], "has_before": bool, "has_after": bool}``.
        """
        self._run_row(run_id)
        limit = max(1, min(MAX_PAGE, limit))
        f = filters.without_query()
        if around is not None:
            head, has_before = self._page(run_id, f, after=None, before=around, limit=limit // 2)
            tail, has_after = self._page(
                run_id, f, after=around - 1, before=None, limit=limit - len(head)
            )
            items = head + tail
        elif before is not None or end:
            items, has_before = self._page(
                run_id, f, after=None, before=before if before is not None else 2**62, limit=limit
            )
            has_after = False if end else True
        else:
            items, has_after = self._page(run_id, f, after=after, before=None, limit=limit)
            has_before = bool(after)
        if after is not None and items:
            has_before = self._exists(run_id, f, below=items[0]["gseq"])
        if before is not None and items:
            has_after = self._exists(run_id, f, above=items[-1]["gseq"])
        return {"items": items, "has_before": has_before, "has_after": has_after}

    def _exists(
        self, run_id: str, f: Filters, *, below: int | None = None, above: int | None = None
    ) -> bool:
        where, params = f.sql(run_id)
        if below is not None:
            where += " AND gseq < ?"
            params.append(below)
        if above is not None:
            where += " AND gseq > ?"
            params.append(above)
        return (
            self.db.execute(f"SELECT 1 FROM messages WHERE {where} LIMIT 1", params).fetchone()
            is not None
        )

    def count(self, run_id: str, filters: Filters) -> int:
        """How many messages match ``filters``."""
        where, params = filters.sql(run_id)
        return int(
            self.db.execute(f"SELECT count(*) FROM messages WHERE {where}", params).fetchone()[0]
        )

    def search(self, run_id: str, filters: Filters, *, max_hits: int = MAX_HITS) -> dict[str, Any]:
        """Every message matching ``filters`` (``q`` included), as positions.

        Returns:
            ``{"total": m, "hits": [gseq, …]}`` with at most ``max_hits`` positions,
            so a client can step through "n of m" and jump to off-screen hits.
        """
        self._run_row(run_id)
        where, params = filters.sql(run_id)
        rows = self.db.execute(
            f"SELECT gseq FROM messages WHERE {where} ORDER BY gseq", params
        ).fetchall()
        return {"total": len(rows), "hits": [r[0] for r in rows[:max_hits]]}

    def locate(
        self, run_id: str, filters: Filters, *, after: int, forward: bool = True
    ) -> int | None:
        """The position of the next (or previous) message matching ``filters``."""
        where, params = filters.sql(run_id)
        op, order = (">", "ASC") if forward else ("<", "DESC")
        row = self.db.execute(
            f"SELECT gseq FROM messages WHERE {where} AND gseq {op} ? "
            f"ORDER BY gseq {order} LIMIT 1",
            [*params, after],
        ).fetchone()
        return None if row is None else int(row[0])

    def since(self, run_id: str, gseq: int, limit: int = 500) -> list[dict[str, Any]]:
        """The messages after position ``gseq`` (for live updates)."""
        rows = self.db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE run_id = ? AND gseq > ? ORDER BY gseq LIMIT ?",
            (run_id, gseq, limit),
        ).fetchall()
        return self._rows_to_messages(run_id, rows)

    def status(self, run_id: str) -> dict[str, Any]:
        """The cheap part of a run's summary (for live polling)."""
        return self._run_summary(self._run_row(run_id))

    # -- agents and the graph -----------------------------------------------------------

    def agents(self, run_id: str) -> list[dict[str, Any]]:
        """Per agent: messages sent and mentioned in, tokens, cost, LLM calls, model
        latency and turn duration p50/p95, errors."""
        r = self._run_row(run_id)
        return self._cached(  # type: ignore[no-any-return]
            ("agents", run_id), r["status"] != "finished", lambda: self._agents(run_id)
        )

    def _agents(self, run_id: str) -> list[dict[str, Any]]:
        db = self.db
        names: dict[str, dict[str, Any]] = {}

        def row(name: str) -> dict[str, Any]:
            if name not in names:
                names[name] = {
                    "name": name,
                    "description": "",
                    "kind": "user" if name == "user" else "",
                    "sent": 0,
                    "mentioned": 0,
                    "llm_calls": 0,
                    "tokens": 0,
                    "cost_usd": 0.0,
                    "errors": 0,
                    "turns": 0,
                    "latency_p50": None,
                    "latency_p95": None,
                    "turn_p50": None,
                    "turn_p95": None,
                }
            return names[name]

        for a in db.execute(
            "SELECT name, description, kind FROM agents WHERE run_id = ? ORDER BY rowid", (run_id,)
        ):
            x = row(a["name"])
            x["description"] = a["description"] or ""
            x["kind"] = a["kind"] or ""
        for name, n in db.execute(
            "SELECT sender, count(*) FROM messages WHERE run_id = ? GROUP BY sender", (run_id,)
        ):
            row(name)["sent"] = n
        for name, n in db.execute(
            "SELECT agent, count(*) FROM mentions WHERE run_id = ? GROUP BY agent", (run_id,)
        ):
            row(name)["mentioned"] = n
        for name, n in db.execute(
            "SELECT agent, count(*) FROM errors WHERE run_id = ? GROUP BY agent", (run_id,)
        ):
            row(name)["errors"] = n
        lat: dict[str, list[float]] = {}
        for a in db.execute(
            "SELECT agent, prompt_tokens, completion_tokens, cost_usd, latency_s "
            "FROM llm_calls WHERE run_id = ?",
            (run_id,),
        ):
            x = row(a["agent"])
            x["llm_calls"] += 1
            x["tokens"] += (a["prompt_tokens"] or 0) + (a["completion_tokens"] or 0)
            x["cost_usd"] += a["cost_usd"] or 0.0
            lat.setdefault(a["agent"], []).append(a["latency_s"] or 0.0)
        turns: dict[str, list[float]] = {}
        with open_reader(self.path) as rd:
            for cols in rd.delivery_columns(run_id):
                for name, via, d in zip(cols[2], cols[4], cols[6], strict=True):
                    if via == "handle":
                        turns.setdefault(name, []).append(d or 0.0)
        for name, xs in lat.items():
            xs.sort()
            row(name)["latency_p50"] = percentile(xs, 50)
            row(name)["latency_p95"] = percentile(xs, 95)
        for name, xs in turns.items():
            xs.sort()
            x = row(name)
            x["turns"] = len(xs)
            x["turn_p50"] = percentile(xs, 50)
            x["turn_p95"] = percentile(xs, 95)
        return list(names.values())

    def graph(self, run_id: str) -> dict[str, Any]:
        """The run's agent graph and the exact sender → mention edges it used.

        Returns:
            ``{"nodes": [{name, kind, description}], "edges": [[a, b], …]`` (the
            graph's own edges, with the implicit ``user → entry`` and ``answerer →
            user``) ``, "used": [{"src", "dst", "count"}, …]}``.
        """
        r = self._run_row(run_id)
        return self._cached(  # type: ignore[no-any-return]
            ("graph", run_id), r["status"] != "finished", lambda: self._graph(run_id, r)
        )

    def _graph(self, run_id: str, r: sqlite3.Row) -> dict[str, Any]:
        graph = _loads(r["graph"], {})
        entry = _loads(r["entry"], [])
        answer_by = _loads(r["answer_by"], []) or entry
        nodes = [{"name": "user", "kind": "user", "description": "the caller of the run"}]
        nodes += [
            {
                "name": a.get("name", ""),
                "kind": a.get("kind", ""),
                "description": a.get("description", ""),
            }
            for a in graph.get("agents", [])
        ]
        edges = [list(e) for e in graph.get("edges", [])]
        edges += [["user", e] for e in entry] + [[a, "user"] for a in answer_by]
        seen: set[tuple[str, str]] = set()
        unique = []
        for a, b in edges:
            if (a, b) not in seen:
                seen.add((a, b))
                unique.append([a, b])
        used = [
            {"src": src, "dst": dst, "count": n}
            for src, dst, n in self.db.execute(
                "SELECT m.sender, x.agent, count(*) FROM mentions x JOIN messages m "
                "ON m.run_id = x.run_id AND m.message_id = x.message_id "
                "WHERE x.run_id = ? GROUP BY m.sender, x.agent ORDER BY m.sender, x.agent",
                (run_id,),
            )
        ]
        known = {n["name"] for n in nodes}
        for e in used:
            for name in (e["src"], e["dst"]):
                if name not in known:
                    known.add(name)
                    nodes.append({"name": name, "kind": "", "description": ""})
        return {"nodes": nodes, "edges": unique, "used": used}
