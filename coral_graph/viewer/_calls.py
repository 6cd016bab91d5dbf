"""The model calls and the turn timeline of :class:`~coral_graph.viewer.query.RunReader`.

Each ``llm_called`` event is kept verbatim in the store's ``events`` table (msgpack):
tokens, cost, latency, outcome and error, and, for inspection, the message whose
delivery the agent was handling, the attempt number, the prompt as sent and the
response. They are decoded once per run and kept (incrementally for a live run:
events are append-only, so only the ones after the last seen are read).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from coral_graph.store._reader import open_reader
from coral_graph.viewer._base import ReaderBase

_S = TypeVar("_S")

__all__ = ["MAX_TURNS", "CallQueries"]

MAX_TURNS = 5_000
"""Turns drawn on a timeline at most (the first ones; the answer says how many)."""

_SUMMARY = (
    "seq",
    "ts",
    "agent",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "outcome",
    "error",
    "message_id",
    "attempt",
)


@dataclass
class _RunCalls:
    """The decoded calls of one run, in seq order, and what indexes them."""

    last_seq: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    by_message: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ok_by_agent: dict[str, list[int]] = field(default_factory=dict)  # seqs of ok calls
    lock: threading.Lock = field(default_factory=threading.Lock)


def _summary(call: dict[str, Any]) -> dict[str, Any]:
    return {k: call.get(k) for k in _SUMMARY}


def _call_of(seq: int, ts: float, data: bytes) -> dict[str, Any] | None:
    try:
        e = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return None  # a damaged row: the llm_calls table still counts it
    if not isinstance(e, dict):
        return None
    return {
        "seq": seq,
        "ts": ts,
        "agent": str(e.get("agent", "")),
        "model": str(e.get("model", "")),
        "prompt_tokens": e.get("prompt_tokens") or 0,
        "completion_tokens": e.get("completion_tokens") or 0,
        "cost_usd": e.get("cost_usd") or 0.0,
        "latency_s": e.get("latency_s") or 0.0,
        "outcome": str(e.get("outcome", "")),
        "error": e.get("error"),
        "message_id": e.get("message_id"),
        "attempt": e.get("attempt") or 1,
        "request": e.get("request"),
        "response": e.get("response"),
    }


@dataclass
class _RunHandled:
    """The deliveries of one run that a worker process handled (a distributed run),
    by message id; read up to ``last_seq`` (incrementally for a live run)."""

    last_seq: int = 0
    by_message: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class CallQueries(ReaderBase):
    """Model calls (summaries, one in full), the per-agent timeline, and which worker
    process handled each delivery."""

    _calls_lock = threading.Lock()

    def _run_cache(self, attr: str, run_id: str, make: Callable[[], _S], keep: int) -> _S:
        """The cache entry of ``run_id`` in this reader's cache ``attr``, made by
        ``make`` if missing; the cache is emptied once it holds ``keep`` runs."""
        store: dict[str, _S] = self.__dict__.setdefault(attr, {})
        with self._calls_lock:
            entry = store.get(run_id)
            if entry is None:
                if len(store) >= keep:
                    store.clear()
                entry = store[run_id] = make()
            return entry

    def _run_handled(self, run_id: str) -> _RunHandled:
        rh = self._run_cache("_handled_by_run", run_id, _RunHandled, 64)
        with rh.lock, open_reader(self.path) as rd:
            after = rh.last_seq
            for cols in rd.delivery_columns(run_id, after):
                seqs, workers = cols[0], cols[7]
                if seqs:
                    rh.last_seq = max(rh.last_seq, max(seqs))
                if workers.count(None) == len(workers):
                    continue  # one process's deliveries: nothing to say
                for seq, name, mid, via, ok, d, w in zip(
                    seqs, cols[2], cols[3], cols[4], cols[5], cols[6], workers, strict=True
                ):
                    if w is not None and seq > after:
                        rh.by_message.setdefault(mid, []).append(
                            {"seq": seq, "agent": name, "worker": w, "via": via,
                             "ok": bool(ok), "duration_s": d}
                        )  # fmt: skip
        return rh

    def attach_handled(self, run_id: str, msgs: list[dict[str, Any]]) -> None:
        """Give each message the deliveries of it that a worker process handled
        (``handled``: agent, worker ``host:pid``, via, ok, duration; empty in one
        process)."""
        by = self._run_handled(run_id).by_message
        for m in msgs:
            m["handled"] = list(by.get(m["id"], ()))

    def _run_calls(self, run_id: str) -> _RunCalls:
        # Prompts can be large: a few runs only.
        rc = self._run_cache("_calls_by_run", run_id, _RunCalls, 16)
        with rc.lock:
            rows = self.db.execute(
                "SELECT seq, ts, data FROM events WHERE run_id = ? AND kind = 'llm_called' "
                "AND seq > ? ORDER BY seq",
                (run_id, rc.last_seq),
            ).fetchall()
            for seq, ts, data in rows:
                rc.last_seq = seq
                call = _call_of(seq, ts, data) if isinstance(data, bytes) else None
                if call is None:
                    continue
                rc.calls.append(call)
                mid = call["message_id"]
                if mid:
                    rc.by_message.setdefault(mid, []).append(_summary(call))
                if call["outcome"] == "ok":
                    rc.ok_by_agent.setdefault(call["agent"], []).append(seq)
        return rc

    def llm_calls(self, run_id: str, *, full: bool = False) -> list[dict[str, Any]]:
        """Every model call of the run, oldest first; without prompt and response
        unless ``full``."""
        self._run_row(run_id)
        calls = self._run_calls(run_id).calls
        return [dict(c) for c in calls] if full else [_summary(c) for c in calls]

    def llm_call(self, run_id: str, seq: int) -> dict[str, Any]:
        """One model call in full: the prompt as sent and the response too.

        Raises:
            LookupError: no model call at ``seq`` in this run.
        """
        self._run_row(run_id)
        rc = self._run_calls(run_id)
        i = bisect.bisect_left([c["seq"] for c in rc.calls], seq)
        if i == len(rc.calls) or rc.calls[i]["seq"] != seq:
            raise _NoCallError(run_id, seq)
        return dict(rc.calls[i])

    def attach_calls(self, run_id: str, msgs: list[dict[str, Any]]) -> None:
        """Give each message the calls made while it was handled (``llm_calls``) and,
        for a message a model wrote, the call that produced it (``produced_by``)."""
        rc = self._run_calls(run_id)
        for m in msgs:
            m["llm_calls"] = rc.by_message.get(m["id"], [])
            seqs = rc.ok_by_agent.get(m["sender"])
            meta = m.get("metadata")
            if seqs and isinstance(meta, dict) and meta.get("model"):
                i = bisect.bisect_left(seqs, m["gseq"])
                m["produced_by"] = seqs[i - 1] if i else None
            else:
                m["produced_by"] = None

    def call_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per agent: ``{"calls": n, "failed": k}`` (failed: outcome other than ok)."""
        out: dict[str, dict[str, int]] = {}
        for c in self._run_calls(run_id).calls:
            x = out.setdefault(c["agent"], {"calls": 0, "failed": 0})
            x["calls"] += 1
            if c["outcome"] != "ok":
                x["failed"] += 1
        return out

    def timeline(self, run_id: str, max_turns: int = MAX_TURNS) -> dict[str, Any]:
        """Turns and model calls per agent, on one clock.

        Returns:
            ``{"start", "end", "agents": [names], "turns": [{agent, start, end, ok,
            message_id, worker}], "calls": [summaries], "turns_total": n}`` (``worker``:
            ``host:pid`` of the worker process that ran the turn, None in one
            process); a turn's ``end``
            is when it was recorded, its start that minus its duration (likewise a
            call's latency).
        """
        run = self._run_row(run_id)
        turns: list[dict[str, Any]] = []
        total = 0
        with open_reader(self.path) as rd:
            for cols in rd.delivery_columns(run_id):
                for ts, name, mid, via, ok, d, w in zip(
                    cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], strict=True
                ):
                    if via != "handle":
                        continue
                    total += 1
                    if len(turns) < max_turns:
                        end = float(ts)
                        turns.append(
                            {
                                "agent": name,
                                "start": end - float(d or 0.0),
                                "end": end,
                                "ok": bool(ok),
                                "message_id": mid,
                                "worker": w,
                            }
                        )
        calls = self.llm_calls(run_id)
        agents: list[str] = [
            r[0]
            for r in self.db.execute(
                "SELECT name FROM agents WHERE run_id = ? ORDER BY rowid", (run_id,)
            )
        ]
        for name in [t["agent"] for t in turns] + [c["agent"] for c in calls]:
            if name not in agents:
                agents.append(name)
        starts = [t["start"] for t in turns] + [c["ts"] - c["latency_s"] for c in calls]
        ends = [t["end"] for t in turns] + [c["ts"] for c in calls]
        start = min([run["started_at"], *starts] if run["started_at"] else starts or [0.0])
        end = max([x for x in (run["ended_at"], *ends) if x is not None] or [start])
        return {
            "start": start,
            "end": end,
            "agents": agents,
            "turns": turns,
            "calls": calls,
            "turns_total": total,
        }


class _NoCallError(LookupError):
    def __init__(self, run_id: str, seq: int) -> None:
        super().__init__(f"no model call at seq {seq} in run {run_id!r}")
