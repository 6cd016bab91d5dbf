"""Events -> rows of every table, built in bulk (the writer's and import's shared path).

This runs on the writer thread, never on the runtime's hot path. It is written for
throughput: one pass over a batch, no per-event JSON for the common kinds, and
every table filled with a few multi-row ``INSERT`` statements. Multi-row inserts
matter beyond SQLite itself: CPython releases the GIL around each
``sqlite3_step``, and a thread that gives the GIL up once per row waits for it
once per row (the convoy effect) while the event loop keeps it busy.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from coral_graph._events import (
    EVENT_TYPES,
    AgentAdded,
    AgentErrored,
    DeliveryHandled,
    Event,
    LLMCalled,
    MessageSent,
    ParticipantAdded,
    ParticipantRemoved,
    RunFinished,
    RunStarted,
    ThreadClosed,
    ThreadCreated,
    ToolCalled,
)
from coral_graph._types import USER
from coral_graph.store._blocks import write_blocks
from coral_graph.store._json import dumps
from coral_graph.store._sql import insert_many, new_packer

__all__ = [
    "DELIVERY_KEYS",
    "Rows",
    "event_dict",
    "insert_many",
    "message_event_dict",
    "new_packer",
    "write_rows",
]

_MSG_KEYS = (
    "id",
    "thread_id",
    "seq",
    "sender",
    "content",
    "mentions",
    "timestamp",
    "reply_to",
    "metadata",
)

_GETTERS: dict[type[Any], tuple[str, tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}
for _cls in EVENT_TYPES.values():
    _names = tuple(f.name for f in dataclasses.fields(_cls))
    _GETTERS[_cls] = (_cls.kind, _names, operator.attrgetter(*_names))
_OMIT_NONE: dict[type[Any], tuple[str, ...]] = {
    c: tuple(f.name for f in dataclasses.fields(c) if f.metadata.get("omit_none"))
    for c in EVENT_TYPES.values()
}
"""Per event type, the fields :func:`coral_graph.event_to_dict` leaves out while None."""


def event_dict(event: Event) -> dict[str, Any]:
    """The same plain data as :func:`coral_graph.event_to_dict` (same keys, same
    order, so the same msgpack bytes), built faster. Mentions stay tuples, which
    msgpack and JSON encode exactly like lists."""
    if type(event) is MessageSent:
        m = event.message
        md = dict(zip(_MSG_KEYS, m, strict=True))
        meta = m.metadata
        md["metadata"] = dict(meta) if meta else {}
        return {
            "kind": "message_sent",
            "run_id": event.run_id,
            "seq": event.seq,
            "ts": event.ts,
            "message": md,
        }
    kind, names, get = _GETTERS[type(event)]
    d: dict[str, Any] = {"kind": kind}
    d.update(zip(names, get(event), strict=True))
    omit = _OMIT_NONE.get(type(event))
    if omit:
        for name in omit:
            if d[name] is None:
                del d[name]
    return d


_INT64 = 2**63
_META_EMPTY = "{}"
_MENTIONS_JSON: dict[tuple[str, ...], str] = {}
"""mentions -> their JSON, shared by every :class:`Rows` of the process (a run has
few distinct mention lists, and the writer makes one ``Rows`` per transaction)."""


def _new_counts() -> list[Any]:
    """A run's counters in a :class:`Rows`: [last_seq, messages, tokens, cost]."""
    return [0, 0, 0, 0.0]


class Rows:
    """Rows for every table from a stream of events, plus ordered updates."""

    __slots__ = (
        "_mj",
        "agents",
        "deliveries",
        "edges",
        "errors",
        "events",
        "finished",
        "llm_calls",
        "messages",
        "ops",
        "participants",
        "run_counts",
        "runs",
        "threads",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.messages: list[Any] = []
        # delivery_handled events by run, each as its wire item ("delivery_handled",
        # run_id, seq, ts, agent, message_id, via, ok, duration_s[, worker]); written
        # as blocks
        self.deliveries: dict[str, list[tuple[Any, ...]]] = {}
        self.llm_calls: list[Any] = []
        self.tool_calls: list[Any] = []
        self.errors: list[Any] = []
        self.threads: list[Any] = []
        self.participants: list[Any] = []
        self.agents: list[Any] = []
        self.edges: list[Any] = []
        self.runs: list[tuple[Any, ...]] = []
        self.finished: list[tuple[Any, ...]] = []
        self.ops: list[tuple[str, tuple[Any, ...]]] = []
        # run_id -> [last_seq, messages, tokens, cost]
        self.run_counts: defaultdict[str, list[Any]] = defaultdict(_new_counts)
        self._mj = _MENTIONS_JSON

    def clear(self) -> None:
        """Empty every list (after the rows were written), keeping the objects."""
        for name in self.__slots__:
            if name != "_mj":
                getattr(self, name).clear()

    def add_delivery(self, item: tuple[Any, ...]) -> None:
        """A ``delivery_handled`` event as its wire item (see :attr:`deliveries`); the
        run's ``last_seq`` follows when its block is written."""
        rid = item[1]
        got = self.deliveries.get(rid)
        if got is None:
            got = self.deliveries[rid] = []
        got.append(item)

    def add_message(
        self, rid: str, seq: int, ts: float, m: tuple[Any, ...], pack: Callable[[Any], bytes]
    ) -> None:
        """Rows of a ``message_sent`` event; ``m`` is the message or the plain tuple of
        its fields."""
        mid, tid, mseq, sender, content, ms, mts, reply, meta = m
        if (
            not meta
            and ts == mts
            and type(ms) is tuple
            and type(ts) is float
            and type(mts) is float
            and type(mseq) is int
            and type(content) is str
            and type(sender) is str
            and type(mid) is str
            and type(tid) is str
            and (reply is None or type(reply) is str)
        ):
            # Version 4: the messages row alone rebuilds these exact bytes (no
            # events row at all).
            md: dict[str, Any] = {}
        else:
            md = dict(meta) if meta else {}
            # The same keys, in the same order, as event_to_dict (a literal is much
            # cheaper than building it generically).
            data = pack({
                "kind": "message_sent", "run_id": rid, "seq": seq, "ts": ts,
                "message": {
                    "id": mid, "thread_id": tid, "seq": mseq, "sender": sender,
                    "content": content, "mentions": ms, "timestamp": mts,
                    "reply_to": reply, "metadata": md,
                },
            })  # fmt: skip
            self.events.extend((rid, seq, "message_sent", ts, data))
        mj = self._mj
        js = mj.get(ms)
        if js is None:
            if len(mj) > 50_000:
                mj.clear()
            js = mj[ms] = json.dumps(list(ms))
        self.messages.extend((
            rid, mid, tid, mseq, seq, sender, content, js, mts, reply,
            dumps(md) if meta else _META_EMPTY,
        ))  # fmt: skip
        c = self.run_counts[rid]
        if seq > c[0]:
            c[0] = seq
        if sender != USER:  # the task is not counted, as by the run's message budget
            c[1] += 1

    def add(
        self,
        events: Iterable[Event],
        pack: Callable[[Any], bytes],
        run_extra: Callable[[str], tuple[Any, ...]],
    ) -> None:
        """Turn ``events`` into rows. ``run_extra(run_id)`` gives (pid, proc_start,
        graph_path) for a new run row."""
        ev = self.events.extend
        add_delivery = self.add_delivery
        add_message = self.add_message
        counts = self.run_counts
        cur_run: str | None = None
        cur: list[Any] = []
        for e in events:
            t = type(e)
            rid = e.run_id
            seq = e.seq
            if rid != cur_run:
                cur_run = rid
                cur = counts[rid]
            if seq > cur[0]:
                cur[0] = seq
            if t is MessageSent:
                add_message(rid, seq, e.ts, e.message, pack)  # type: ignore[union-attr]
                continue
            if t is DeliveryHandled:
                # The commonest event: a few bytes of a block, no row of its own (a
                # worker's tag, when there is one, is a column of the block).
                assert isinstance(e, DeliveryHandled)
                item: tuple[Any, ...] = ("delivery_handled", rid, seq, e.ts, e.agent,
                                         e.message_id, e.via, e.ok, e.duration_s)  # fmt: skip
                add_delivery(item if e.worker is None else (*item, e.worker))
                continue
            ev((rid, seq, e.kind, e.ts, pack(event_dict(e))))
            if t is LLMCalled:
                assert isinstance(e, LLMCalled)
                self.llm_calls.extend(
                    (
                        rid,
                        seq,
                        e.agent,
                        e.model,
                        e.prompt_tokens,
                        e.completion_tokens,
                        e.cost_usd,
                        e.latency_s,
                        e.outcome,
                        e.error,
                    )
                )
                cur[2] += e.prompt_tokens + e.completion_tokens
                cur[3] += e.cost_usd
            elif t is ToolCalled:
                assert isinstance(e, ToolCalled)
                self.tool_calls.extend(
                    (
                        rid,
                        seq,
                        e.agent,
                        e.thread_id,
                        e.tool,
                        dumps(e.arguments),
                        e.result,
                        e.ok,
                        e.duration_s,
                        e.message_id,
                    )
                )
            elif t is ThreadCreated:
                assert isinstance(e, ThreadCreated)
                self.threads.extend((rid, e.thread_id, e.name, e.creator, e.ts, None, None, "open"))
                for p in e.participants:
                    self.participants.extend((rid, e.thread_id, p, e.ts, None, e.creator))
            elif t is ParticipantAdded:
                assert isinstance(e, ParticipantAdded)
                self.participants.extend((rid, e.thread_id, e.agent, e.ts, None, e.by))
            elif t is ParticipantRemoved:
                assert isinstance(e, ParticipantRemoved)
                self.ops.append(
                    (
                        "UPDATE participants SET removed_at = ? WHERE run_id = ? AND thread_id = ? "
                        "AND agent = ? AND removed_at IS NULL AND added_at <= ?",
                        (e.ts, rid, e.thread_id, e.agent, e.ts),
                    )
                )
            elif t is ThreadClosed:
                assert isinstance(e, ThreadClosed)
                self.ops.append(
                    (
                        "UPDATE threads SET state = 'closed', closed_at = ?, summary = ? "
                        "WHERE run_id = ? AND thread_id = ?",
                        (e.ts, e.summary, rid, e.thread_id),
                    )
                )
            elif t is AgentErrored:
                assert isinstance(e, AgentErrored)
                self.errors.extend(
                    (
                        rid,
                        seq,
                        e.agent,
                        e.message_id,
                        e.error_type,
                        e.error,
                        e.traceback,
                        e.action,
                    )
                )
            elif t is AgentAdded:
                assert isinstance(e, AgentAdded)
                self.agents.extend((rid, e.agent, e.description, e.agent_kind))
            elif t is RunStarted:
                assert isinstance(e, RunStarted)
                g = e.graph
                pid, proc_start, graph_path = run_extra(rid)
                self.runs.append(
                    (
                        rid,
                        g.get("name"),
                        e.task,
                        dumps(e.entry),
                        dumps(e.answer_by),
                        dumps(g),
                        dumps(e.budgets),
                        "running",
                        e.ts,
                        pid,
                        proc_start,
                        graph_path or g.get("path"),
                    )
                )
                for a, b in g.get("edges", ()):
                    self.edges.extend((rid, a, b))
            elif t is RunFinished:
                assert isinstance(e, RunFinished)
                self.finished.append(
                    (
                        e.stop_reason,
                        e.answer,
                        e.answer_id,
                        e.error,
                        e.ts,
                        dumps(e.usage),
                        rid,
                    )
                )


DELIVERY_KEYS = ("kind", "run_id", "seq", "ts", "agent", "message_id", "via", "ok", "duration_s")
"""The plain-data keys of a ``delivery_handled`` event, in :func:`event_to_dict`'s order
(a block's columns hold the last seven), without the optional ``worker`` that
follows them (a block's eighth column)."""


def write_rows(conn: sqlite3.Connection, rows: Rows) -> None:
    """Write ``rows`` in the caller's transaction."""
    for r in rows.runs:
        conn.execute(
            "INSERT OR REPLACE INTO runs (run_id, graph_name, task, entry, answer_by, graph, "
            "budgets, status, started_at, pid, proc_start, graph_path, messages, tokens, "
            "cost_usd, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,0,0.0,0)",
            r,
        )
    insert_many(conn, "INSERT OR IGNORE INTO agents", 4, rows.agents)
    insert_many(conn, "INSERT INTO edges", 3, rows.edges)
    insert_many(conn, "INSERT OR IGNORE INTO threads", 8, rows.threads)
    insert_many(conn, "INSERT INTO participants", 6, rows.participants)
    insert_many(conn, "INSERT OR IGNORE INTO events (run_id, seq, kind, ts, data)", 5, rows.events)
    write_blocks(conn, rows.deliveries, rows.run_counts)
    before = conn.total_changes
    insert_many(conn, "INSERT OR IGNORE INTO messages", 11, rows.messages)
    if conn.total_changes - before != len(rows.messages) // 11:
        _keep_ignored_messages(conn, rows)
    insert_many(conn, "INSERT INTO llm_calls", 10, rows.llm_calls)
    insert_many(conn, "INSERT INTO tool_calls", 10, rows.tool_calls)
    insert_many(conn, "INSERT INTO errors", 8, rows.errors)
    for sql, params in rows.ops:
        conn.execute(sql, params)
    for rid, (last, msgs, tokens, cost) in rows.run_counts.items():
        if not -_INT64 <= tokens < _INT64:  # a provider's absurd count; SQLite holds 64 bits
            tokens = _INT64 - 1 if tokens > 0 else -_INT64
        conn.execute(
            "UPDATE runs SET last_seq = max(coalesce(last_seq, 0), ?), "
            "messages = coalesce(messages, 0) + ?, tokens = coalesce(tokens, 0) + ?, "
            "cost_usd = coalesce(cost_usd, 0) + ? WHERE run_id = ?",
            (last, msgs, tokens, cost, rid),
        )
    for f in rows.finished:
        conn.execute(
            "UPDATE runs SET status = 'finished', stop_reason = ?, answer = ?, answer_id = ?, "
            "error = ?, ended_at = ?, usage = ?, pid = NULL WHERE run_id = ?",
            f,
        )


def message_event_dict(
    rid: str, seq: int, ts: float, msg: tuple[Any, ...], mentions: Any
) -> dict[str, Any]:
    """The plain data of a ``message_sent`` event stored without ``data``, from its
    ``messages`` row (``msg``: message_id, thread_id, seq, sender, content, ts,
    reply_to; ``mentions`` decoded): the same keys, order and values, so the same
    msgpack bytes, as :func:`event_dict`."""
    mid, tid, mseq, sender, content, mts, reply = msg
    return {
        "kind": "message_sent", "run_id": rid, "seq": seq, "ts": ts,
        "message": {
            "id": mid, "thread_id": tid, "seq": mseq, "sender": sender,
            "content": content, "mentions": mentions, "timestamp": mts,
            "reply_to": reply, "metadata": {},
        },
    }  # fmt: skip


def _keep_ignored_messages(conn: sqlite3.Connection, rows: Rows) -> None:
    """Some ``messages`` rows were ignored (their message id was already stored for
    the run): the events of those messages cannot be rebuilt from ``messages``, so
    they get an ``events`` row with their blob after all. Rare (a message id reused
    in a run)."""
    pack = new_packer()
    for r in _chunks(rows.messages, 11):
        rid, mid, tid, mseq, seq, sender, content, js, mts, reply, _meta = r
        got = conn.execute(
            "SELECT 1 FROM messages WHERE run_id = ? AND gseq = ? AND message_id = ?",
            (rid, seq, mid),
        ).fetchone()
        if got is None:
            # A message stored without an events row has its event's time as timestamp.
            d = message_event_dict(
                rid, seq, mts, (mid, tid, mseq, sender, content, mts, reply), json.loads(js)
            )
            conn.execute(
                "INSERT OR IGNORE INTO events (run_id, seq, kind, ts, data) "
                "VALUES (?, ?, 'message_sent', ?, ?)",
                (rid, seq, mts, pack(d)),
            )


def _chunks(flat: list[Any], n: int) -> Iterable[tuple[Any, ...]]:
    it = iter(flat)
    return zip(*([it] * n), strict=True)
