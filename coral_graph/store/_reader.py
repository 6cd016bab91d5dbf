"""StoreReader: read-only access to a store, for the CLI, the viewers and resume.

A reader opens the file with a ``mode=ro`` URI: it never creates, migrates or
modifies it, and it never blocks the writer (WAL). It checks that the file is a
coral-graph store of a version it understands before anything else.

A run whose row says ``running`` but whose writer process is gone (its pid is
dead, or belongs to a newer process) reads as ``interrupted``: that is how a run
killed with SIGKILL shows up.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from coral_graph.store._errors import AmbiguousRunError, NotAStoreError, UnknownRunError
from coral_graph.store._guard import guarded
from coral_graph.store._json import loads
from coral_graph.store._read_events import EventReads
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


class StoreReader(EventReads):
    """Read-only queries over a store. Get one from :func:`open_reader`.

    Rows come back as plain dicts (JSON-ready); JSON columns are decoded.

    A damaged row never stops a query: it is read as well as it can be (bad UTF-8
    as U+FFFD, bad JSON as an empty value, an undecodable event left out) and
    named in :attr:`problems`; a damaged page raises :class:`StoreCorruptError`.
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

    def _json(self, text: Any, default: Any, table: str, key: str, col: str) -> Any:
        """A JSON column's value; ``default`` (and a problem) if it is not JSON of
        the type of ``default``."""
        if text is None or text == "":
            return default
        try:
            value = loads(text)
        except (ValueError, TypeError, RecursionError):
            self._problem(table, key, f"{col} is not valid JSON; read as {default!r}")
            return default
        if type(value) is not type(default):
            self._problem(
                table, key, f"{col} is a JSON {type(value).__name__}; read as {default!r}"
            )
            return default
        return value

    def _run_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        key = f"run_id {d.get('run_id')}"
        for k in _JSON_COLS:
            if d.get(k) is not None:
                d[k] = self._json(d[k], [] if k in ("entry", "answer_by") else {}, "runs", key, k)
        for k in ("graph_name", "task", "status", "stop_reason", "answer", "error"):
            if d.get(k) is not None and type(d[k]) is not str:
                self._problem("runs", key, f"{k} is not text")
                d[k] = str(d[k])
        for k in ("started_at", "ended_at"):
            if d.get(k) is not None and type(d[k]) not in (int, float):
                self._problem("runs", key, f"{k} is not a number; read as none")
                d[k] = None
        if d["status"] == "running" and not writer_alive(d["pid"], d.pop("proc_start")):
            d["status"] = "interrupted"
        d.pop("proc_start", None)
        start, end = d.get("started_at"), d.get("ended_at")
        d["duration_s"] = (end - start) if start is not None and end is not None else None
        return d

    @guarded
    def list_runs(self, limit: int | None = 50) -> list[dict[str, Any]]:
        """The newest runs first (``limit`` None for all)."""
        sql = f"SELECT {_RUN_COLS} FROM runs ORDER BY started_at DESC"
        rows = self._conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [self._run_dict(r) for r in rows]

    @guarded
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
                like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                found = conn.execute(
                    "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                    "ORDER BY started_at DESC LIMIT 6",
                    (like + "%",),
                ).fetchall()
                if len(found) > 1:
                    count = conn.execute(
                        "SELECT count(*) FROM runs WHERE run_id LIKE ? ESCAPE '\\'",
                        (like + "%",),
                    ).fetchone()[0]
                    raise AmbiguousRunError(
                        run_id, str(self.path), [str(r[0]) for r in found[:5]], count
                    )
                row = found[0] if found else None
        if row is None:
            known = [r["run_id"] for r in self.list_runs(5)]
            raise UnknownRunError(run_id, str(self.path), known)
        return str(row[0])

    @guarded
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

    @guarded
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
                    got = self._mentions(ms, run_id, r[3])
                    if type(ms) is str:
                        cache[ms] = got
                d["mentions"] = list(got)
            else:
                d["mentions"] = []
            meta = r[9]
            d["metadata"] = (
                self._json(meta, {}, "messages", f"run_id {run_id}, gseq {r[3]}", "metadata")
                if meta and meta != "{}"
                else {}
            )
            if type(r[5]) is not str or type(r[4]) is not str:
                self._text_fields(d, run_id)
            out.append(d)
        return out

    def _mentions(self, text: Any, run_id: str, gseq: Any) -> list[str]:
        got: list[Any] = self._json(
            text, [], "messages", f"run_id {run_id}, gseq {gseq}", "mentions"
        )
        if not all(type(x) is str for x in got):
            self._problem("messages", f"run_id {run_id}, gseq {gseq}", "mentions are not all names")
            got = [x for x in got if type(x) is str]
        return got

    def _text_fields(self, d: dict[str, Any], run_id: str) -> None:
        """A damaged row whose content or sender is not text: read as text."""
        for k in ("content", "sender"):
            v = d[k]
            if type(v) is not str:
                self._problem("messages", f"run_id {run_id}, gseq {d['gseq']}", f"{k} is not text")
                d[k] = (
                    v.decode("utf-8", "replace")
                    if isinstance(v, bytes)
                    else ""
                    if v is None
                    else str(v)
                )

    @guarded
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

    @guarded
    def agents(self, run_id: str) -> list[dict[str, Any]]:
        """The agents of the run: name, description, kind."""
        rows = self._conn.execute(
            "SELECT name, description, kind FROM agents WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [dict(r) for r in rows]

    @guarded
    def tool_calls(self, run_id: str) -> list[dict[str, Any]]:
        """Tool calls in order, arguments decoded."""
        out = []
        for r in self._conn.execute(
            "SELECT seq, agent, thread_id, tool, arguments, result, ok, duration_s, message_id "
            "FROM tool_calls WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ):
            d = dict(r)
            d["arguments"] = self._json(
                d["arguments"], {}, "tool_calls", f"run_id {run_id}, seq {d['seq']}", "arguments"
            )
            d["ok"] = bool(d["ok"])
            out.append(d)
        return out

    @guarded
    def llm_calls(self, run_id: str, *, failed: bool = False) -> list[dict[str, Any]]:
        """Model calls in order (``failed``: only those whose outcome is not ``ok``)."""
        rows = self._conn.execute(
            "SELECT seq, agent, model, prompt_tokens, completion_tokens, cost_usd, latency_s, "
            "outcome, error FROM llm_calls WHERE run_id = ?"
            + (" AND outcome != 'ok'" if failed else "")
            + " ORDER BY seq",
            (run_id,),
        )
        return [dict(r) for r in rows]

    @guarded
    def errors(self, run_id: str) -> list[dict[str, Any]]:
        """Agent errors in order."""
        rows = self._conn.execute(
            "SELECT seq, agent, message_id, error_type, error, traceback, action FROM errors "
            "WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [dict(r) for r in rows]

    @guarded
    def usage(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per-agent totals: from the run's final usage when it finished, else
        computed from the stored rows so far."""
        row = self._conn.execute("SELECT usage FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and row[0]:
            got = self._json(row[0], {}, "runs", f"run_id {run_id}", "usage")
            if got:
                return dict(got)
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
                    "llm_errors": 0,
                    "tool_errors": 0,
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
        for name, n, pt, ct, cost, lat, bad in conn.execute(
            "SELECT agent, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), "
            "sum(latency_s), sum(outcome != 'ok') FROM llm_calls WHERE run_id = ? GROUP BY agent",
            (run_id,),
        ):
            s = slot(name)
            s.update(
                llm_calls=n,
                llm_errors=bad or 0,
                prompt_tokens=pt or 0,
                completion_tokens=ct or 0,
                cost_usd=cost or 0.0,
                llm_latency_s=lat or 0.0,
            )
            s["tokens"] = s["prompt_tokens"] + s["completion_tokens"]
        for name, n in conn.execute(
            "SELECT agent, count(*) FROM tool_calls WHERE run_id = ? AND NOT ok GROUP BY agent",
            (run_id,),
        ):
            slot(name)["tool_errors"] = n
        return out


def open_reader(path: str | os.PathLike[str] | None = None) -> StoreReader:
    """Open a store read-only (default path as for the writer).

    Raises:
        NotAStoreError: no such file, not SQLite, or not coral-graph's schema.
        StoreVersionError: written by a newer coral-graph.
    """
    return StoreReader(path)
