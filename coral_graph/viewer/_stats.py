"""The aggregate views of :class:`~coral_graph.viewer.query.RunReader`.

Per-agent statistics (messages, tokens, cost, latency and turn percentiles,
errors) and the sender → mention graph; :func:`percentile` computes the
percentiles. A finished run's aggregates are computed once and cached.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from coral_graph.store._reader import open_reader
from coral_graph.viewer._base import loads
from coral_graph.viewer._calls import CallQueries

__all__ = ["StatsQueries", "percentile"]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 to 100) of sorted ``values``, nearest-rank; None if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.0, 4.0)
    """
    if not values:
        return None
    k = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))
    return values[int(k)]


class StatsQueries(CallQueries):
    """Per-agent statistics and the mention graph."""

    def agents(self, run_id: str) -> list[dict[str, Any]]:
        """Per agent: messages sent and mentioned in, tokens, cost, LLM calls, model
        latency and turn duration p50/p95, and errors: ``errors`` is the sum of
        ``turn_errors`` (turns that raised), ``llm_failed`` and ``tool_failed``."""
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
                    "turn_errors": 0,
                    "llm_failed": 0,
                    "tool_failed": 0,
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
            row(name)["turn_errors"] = n
        for name, n in db.execute(
            "SELECT agent, count(*) FROM tool_calls WHERE run_id = ? AND NOT ok GROUP BY agent",
            (run_id,),
        ):
            row(name)["tool_failed"] = n
        for name, c in self.call_counts(run_id).items():
            row(name)["llm_failed"] = c["failed"]
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
        for x in names.values():
            # One error count: turns that raised, model calls and tool calls that failed.
            x["errors"] = x["turn_errors"] + x["llm_failed"] + x["tool_failed"]
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
        graph = loads(r["graph"], {})
        entry = loads(r["entry"], [])
        answer_by = loads(r["answer_by"], []) or entry
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
