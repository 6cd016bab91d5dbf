"""The run and message queries of :class:`~coral_graph.viewer.query.RunReader`.

Runs and their threads, and the messages of a run paged by ``gseq`` cursor,
counted, searched and followed live.
"""

from __future__ import annotations

import shlex
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from coral_graph.store._reader import writer_alive
from coral_graph.viewer._base import loads
from coral_graph.viewer._calls import CallQueries
from coral_graph.viewer._filters import Filters

__all__ = ["MAX_HITS", "MAX_PAGE", "RunQueries"]

MAX_PAGE = 500
MAX_HITS = 10_000


_MSG_COLS = "message_id, thread_id, seq, gseq, sender, content, mentions, ts, reply_to, metadata"


class RunQueries(CallQueries):
    """Runs, threads and pages of messages (with the model calls made for them)."""

    # -- runs -----------------------------------------------------------------------

    def runs(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest runs first, as summaries (with their failure counts)."""
        rows = self.db.execute(
            "SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        ids = [r["run_id"] for r in rows]
        counts = self._per_run(
            "SELECT run_id, count(*) FROM messages WHERE run_id IN ({}) GROUP BY run_id", ids
        )
        errors = self._per_run(
            "SELECT run_id, count(*) FROM errors WHERE run_id IN ({}) GROUP BY run_id", ids
        )
        llm = self._per_run(
            "SELECT run_id, count(*), sum(outcome != 'ok') FROM llm_calls "
            "WHERE run_id IN ({}) GROUP BY run_id",
            ids,
        )
        tools = self._per_run(
            "SELECT run_id, sum(NOT ok) FROM tool_calls WHERE run_id IN ({}) GROUP BY run_id", ids
        )
        out = []
        for r in rows:
            rid = r["run_id"]
            x = self._run_summary(r, counts.get(rid, (0,))[0])
            calls, failed = llm.get(rid, (0, 0))
            x["llm_calls"] = calls or 0
            x["llm_failed"] = failed or 0
            x["turn_errors"] = errors.get(rid, (0,))[0] or 0
            x["tool_failed"] = tools.get(rid, (0,))[0] or 0
            x["error_count"] = x["turn_errors"] + x["llm_failed"] + x["tool_failed"]
            out.append(x)
        return out

    def _per_run(self, sql: str, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = sql.format(",".join("?" * len(part)))
            out.update({r[0]: tuple(r[1:]) for r in self.db.execute(q, part)})
        return out

    def _count(self, run_id: str) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM messages WHERE run_id = ?", (run_id,)).fetchone()[
                0
            ]
        )

    def _run_summary(self, r: sqlite3.Row, count: int) -> dict[str, Any]:
        """A run's row as the viewer shows it. ``messages`` is every stored message of
        the run, the task included (the same number the threads and views add up to)."""
        graph = loads(r["graph"], {})
        started = r["started_at"]
        ended = r["ended_at"]
        status = r["status"]
        if status == "running" and not writer_alive(r["pid"], r["proc_start"]):
            status = "interrupted"  # the writer died (e.g. SIGKILL): not live any more
        end = ended if ended is not None else (time.time() if status == "running" else None)
        out = {
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
            "messages": count,
            "tokens": r["tokens"] or 0,
            "cost_usd": r["cost_usd"] or 0.0,
            "last_seq": r["last_seq"] or 0,
            "resume": None,
        }
        if status == "interrupted":
            cmd = ["coral-graph", "resume", r["run_id"], "--db", str(self.path.resolve())]
            if not (r["graph_path"] if "graph_path" in r.keys() else None):
                cmd += ["--graph", "GRAPH.yaml"]
            out["resume"] = shlex.join(cmd)
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's summary with its graph, entry, budgets, agents, threads and counts
        (``error_count`` adds turn errors, failed model calls and failed tool calls)."""
        r = self._run_row(run_id)
        out = self._run_summary(r, self._count(run_id))
        if out["status"] == "finished":
            return dict(self._cached(("run", run_id), False, lambda: self._run_detail(r, out)))
        return self._run_detail(r, out)

    def _run_detail(self, r: sqlite3.Row, out: dict[str, Any]) -> dict[str, Any]:
        run_id = r["run_id"]
        graph = loads(r["graph"], {})
        out["graph"] = graph
        out["entry"] = loads(r["entry"], [])
        out["answer_by"] = loads(r["answer_by"], [])
        out["budgets"] = loads(r["budgets"], {})
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
        out["turn_errors"] = self.db.execute(
            "SELECT count(*) FROM errors WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        out["tool_failed"] = self.db.execute(
            "SELECT count(*) FROM tool_calls WHERE run_id = ? AND NOT ok", (run_id,)
        ).fetchone()[0]
        calls = self.call_counts(run_id).values()
        out["llm_calls"] = sum(c["calls"] for c in calls)
        out["llm_failed"] = sum(c["failed"] for c in calls)
        failed = [c for c in self._run_calls(run_id).calls if c["outcome"] != "ok"]
        out["first_llm_error"] = (
            {k: failed[0][k] for k in ("seq", "agent", "model", "outcome", "error")}
            if failed
            else None
        )
        out["error_count"] = out["turn_errors"] + out["llm_failed"] + out["tool_failed"]
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
        for c in self._run_calls(run_id).calls:  # failed model calls count as errors too
            if c["outcome"] != "ok" and c["message_id"]:
                tid = str(c["message_id"]).split("#", 1)[0]
                errors[tid] = errors.get(tid, 0) + 1
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
                "mentions": loads(r["mentions"], []),
                "ts": r["ts"],
                "reply_to": r["reply_to"],
                "metadata": loads(r["metadata"], {}) or {},
                "tools": [],
                "errors": [],
            }
            for r in rows
        ]
        if not msgs:
            return msgs
        self.attach_calls(run_id, msgs)
        self.attach_handled(run_id, msgs)
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
                    "arguments": loads(t["arguments"], {}),
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
        filters: Filters = Filters(),  # noqa: B008 - a frozen dataclass, like a constant
        *,
        after: int | None = None,
        before: int | None = None,
        around: int | None = None,
        end: bool = False,
        limit: int = 100,
        count: bool = False,
    ) -> dict[str, Any]:
        """One page of the messages that match ``filters``, in ``gseq`` order.

        Exactly one cursor applies: ``after`` (exclusive), ``before`` (exclusive),
        ``around`` (that position in the middle, itself included if it matches),
        ``end`` (the last page); none means the first page.

        Returns:
            ``{"items": [...], "has_before": bool, "has_after": bool}``; with
            ``count``, also ``total`` (the messages matching the filters, search
            aside) and ``upto`` (the run's last position), both read in the same
            snapshot as the page: a live client counts exactly the messages after
            ``upto`` that it is sent later, so its count never drifts.
        """
        if not count:
            return self._messages(run_id, filters, after, before, around, end, limit)
        db = self.db
        db.execute("BEGIN")  # one read snapshot for the page and its counts
        try:
            page = self._messages(run_id, filters, after, before, around, end, limit)
            page["total"] = self.count(run_id, filters.without_query())
            page["upto"] = db.execute(
                "SELECT coalesce(max(gseq), 0) FROM messages WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
        finally:
            db.execute("COMMIT")
        return page

    def _messages(
        self,
        run_id: str,
        filters: Filters,
        after: int | None,
        before: int | None,
        around: int | None,
        end: bool,
        limit: int,
    ) -> dict[str, Any]:
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
        return self._run_summary(self._run_row(run_id), self._count(run_id))
