"""The SQLite schema of the event store, its version, and the migration hook.

Every event of a run is kept verbatim in ``events`` (msgpack of
:func:`coral_graph.event_to_dict`); the other tables are denormalised views of
the same events that make the common questions cheap (messages of a thread,
mentions of an agent, LLM spend, errors). ``runs`` holds one summary row per
run, kept up to date by the writer.

Versioning: ``meta.schema_version`` is :data:`SCHEMA_VERSION`. A store written by
an older coral-graph is upgraded by :data:`MIGRATIONS` (``from_version ->
function``) when a *writer* opens it; readers never modify the file, and a file
with a newer version is refused with :class:`StoreVersionError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from coral_graph.store._errors import NotAStoreError, StoreVersionError

__all__ = ["APP", "MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "check_meta", "ensure_schema"]

APP = "coral-graph"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    graph_name TEXT,
    task TEXT,
    entry TEXT,            -- json list
    answer_by TEXT,        -- json list
    graph TEXT,            -- json: name, description, agents[{name,description,kind}], edges[[a,b]]
    budgets TEXT,          -- json
    status TEXT,           -- running | finished | interrupted
    stop_reason TEXT,
    answer TEXT,
    answer_id TEXT,
    error TEXT,
    started_at REAL,
    ended_at REAL,
    messages INTEGER,
    tokens INTEGER,
    cost_usd REAL,
    pid INTEGER,           -- the writer process while status = running
    last_seq INTEGER,      -- the newest stored event
    graph_path TEXT,       -- the graph file the run was started from, if any
    proc_start TEXT,       -- the writer process's start time (tells pid reuse apart)
    usage TEXT             -- json: per-agent usage, set when the run finishes
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT, seq INTEGER, kind TEXT, ts REAL, data BLOB,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
    run_id TEXT, name TEXT, description TEXT, kind TEXT, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS edges (run_id TEXT, src TEXT, dst TEXT);
CREATE INDEX IF NOT EXISTS edges_run ON edges (run_id);
CREATE TABLE IF NOT EXISTS threads (
    run_id TEXT, thread_id TEXT, name TEXT, creator TEXT, created_at REAL,
    closed_at REAL, summary TEXT, state TEXT,
    PRIMARY KEY (run_id, thread_id)
);
CREATE TABLE IF NOT EXISTS participants (
    run_id TEXT, thread_id TEXT, agent TEXT, added_at REAL, removed_at REAL, added_by TEXT
);
CREATE INDEX IF NOT EXISTS participants_thread ON participants (run_id, thread_id);
CREATE TABLE IF NOT EXISTS messages (
    run_id TEXT, message_id TEXT, thread_id TEXT, seq INTEGER, gseq INTEGER,
    sender TEXT, content TEXT, mentions TEXT, ts REAL, reply_to TEXT, metadata TEXT,
    PRIMARY KEY (run_id, message_id)
);
CREATE INDEX IF NOT EXISTS messages_gseq ON messages (run_id, gseq);
CREATE INDEX IF NOT EXISTS messages_thread ON messages (run_id, thread_id, seq);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (run_id, sender);
CREATE TABLE IF NOT EXISTS mentions (
    run_id TEXT, message_id TEXT, thread_id TEXT, gseq INTEGER, agent TEXT
);
CREATE INDEX IF NOT EXISTS mentions_agent ON mentions (run_id, agent);
CREATE TABLE IF NOT EXISTS deliveries (
    run_id TEXT, seq INTEGER, agent TEXT, message_id TEXT, via TEXT, ok INTEGER, duration_s REAL
);
CREATE TABLE IF NOT EXISTS llm_calls (
    run_id TEXT, seq INTEGER, agent TEXT, model TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, cost_usd REAL, latency_s REAL, outcome TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS llm_calls_run ON llm_calls (run_id, agent);
CREATE TABLE IF NOT EXISTS tool_calls (
    run_id TEXT, seq INTEGER, agent TEXT, thread_id TEXT, tool TEXT, arguments TEXT,
    result TEXT, ok INTEGER, duration_s REAL, message_id TEXT
);
CREATE INDEX IF NOT EXISTS tool_calls_run ON tool_calls (run_id, seq);
CREATE TABLE IF NOT EXISTS errors (
    run_id TEXT, seq INTEGER, agent TEXT, message_id TEXT, error_type TEXT, error TEXT,
    traceback TEXT, action TEXT
);
CREATE INDEX IF NOT EXISTS errors_run ON errors (run_id, seq);
"""
"""Version 1. ``events``, ``deliveries`` and the like are append-only; the
(run_id, seq) pairs of ``deliveries``, ``llm_calls``, ``tool_calls`` and
``errors`` point back at ``events``."""

MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
"""``{from_version: upgrade}``: each function brings a store from ``from_version``
to ``from_version + 1`` inside the writer's transaction. Empty while the schema is
at version 1; add an entry (and bump :data:`SCHEMA_VERSION`) with every change."""


def check_meta(conn: sqlite3.Connection, path: str) -> int | None:
    """The schema version of the store behind ``conn``, or None for an empty file.

    Raises:
        NotAStoreError: the file is not SQLite, or SQLite without our ``meta``.
        StoreVersionError: it was written by a newer coral-graph.
    """
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise NotAStoreError(path, str(exc)) from None
    if not tables:
        return None
    if "meta" not in tables:
        raise NotAStoreError(path, "it is an SQLite file without coral-graph's tables")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != APP:
        raise NotAStoreError(path, f"its meta.app is {meta.get('app')!r}, not {APP!r}")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise NotAStoreError(path, "its schema_version is missing or not a number") from None
    if version > SCHEMA_VERSION:
        raise StoreVersionError(path, version, SCHEMA_VERSION)
    return version


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in an empty file, or migrate an older one (writers only)."""
    version = check_meta(conn, path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version is None:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("app", APP), ("schema_version", str(SCHEMA_VERSION))],
            )
        else:
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
