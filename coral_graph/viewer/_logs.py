"""The log lines of a run for :class:`~coral_graph.viewer.query.RunReader`.

Each ``agent_logged`` event (see :class:`coral_graph.AgentLogged`) is kept verbatim in
the store's ``events`` table (msgpack): what a process agent printed (``source``
``stdout``/``stderr``), what happened to an MCP connection (``source`` ``mcp``, the
endpoint URLs of an ``external`` agent among them) and blocked-loop notices
(``source`` ``watchdog``).
"""

from __future__ import annotations

from typing import Any

import msgpack

from coral_graph.viewer._base import ReaderBase

__all__ = ["MAX_LOG_LINES", "LogQueries"]

MAX_LOG_LINES = 5_000
"""Log lines returned at most (the last ones; the answer says how many there are)."""


def _line_of(seq: int, ts: float, data: object) -> dict[str, Any]:
    e: Any = None
    if isinstance(data, bytes):
        try:
            e = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException):
            e = None
    if not isinstance(e, dict):
        # A damaged row still shows, as such: a failure is never hidden.
        return {
            "seq": seq,
            "ts": ts,
            "agent": "",
            "source": "store",
            "text": "(unreadable log event)",
            "data": None,
        }
    d = e.get("data")
    return {
        "seq": seq,
        "ts": ts,
        "agent": str(e.get("agent", "")),
        "source": str(e.get("source", "")),
        "text": str(e.get("text", "")),
        "data": d if isinstance(d, dict) else None,
    }


class LogQueries(ReaderBase):
    """The ``agent_logged`` events of a run and the MCP endpoints among them."""

    def logs(self, run_id: str, limit: int = MAX_LOG_LINES) -> dict[str, Any]:
        """The run's log lines, oldest first (the last ``limit``), with ``total``
        and ``endpoints``: per external/process agent its latest MCP endpoint
        (``agent``, ``url``, ``sse_url``, ``seq``)."""
        self._run_row(run_id)
        db = self.db
        total = db.execute(
            "SELECT count(*) FROM events WHERE run_id = ? AND kind = 'agent_logged'", (run_id,)
        ).fetchone()[0]
        rows = db.execute(
            "SELECT seq, ts, data FROM events WHERE run_id = ? AND kind = 'agent_logged' "
            "ORDER BY seq DESC LIMIT ?",
            (run_id, max(0, limit)),
        ).fetchall()
        lines = [_line_of(seq, ts, data) for seq, ts, data in reversed(rows)]
        return {
            "total": total,
            "truncated": total > len(lines),
            "lines": lines,
            "endpoints": self._endpoints(run_id),
        }

    def _endpoints(self, run_id: str) -> list[dict[str, Any]]:
        # Read apart from the (possibly truncated) lines: an endpoint is logged at the
        # start of a run, before any output that could push it out of the window.
        found: dict[str, dict[str, Any]] = {}
        for seq, ts, data in self.db.execute(
            "SELECT seq, ts, data FROM events WHERE run_id = ? AND kind = 'agent_logged' "
            "AND instr(data, ?) > 0 ORDER BY seq",
            (run_id, b"sse_url"),
        ):
            line = _line_of(seq, ts, data)
            d = line["data"] or {}
            if line["source"] == "mcp" and d.get("event") == "endpoint" and d.get("url"):
                found[line["agent"]] = {
                    "agent": line["agent"],
                    "url": str(d["url"]),
                    "sse_url": str(d.get("sse_url") or ""),
                    "seq": seq,
                }
        return list(found.values())
