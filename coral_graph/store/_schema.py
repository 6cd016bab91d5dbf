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

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from coral_graph.store._errors import (
    NotAStoreError,
    StoreCorruptError,
    StoreError,
    StoreVersionError,
    fault_kind,
    write_error,
)
from coral_graph.store._sql import write_transaction

__all__ = [
    "APP",
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_meta",
    "connect_writer",
    "ensure_schema",
]

APP = "coral-graph"
SCHEMA_VERSION = 4

_VIEWS = """
CREATE VIEW IF NOT EXISTS mentions AS
    SELECT m.run_id AS run_id, m.message_id AS message_id, m.thread_id AS thread_id,
        m.gseq AS gseq, j.value AS agent
    FROM messages AS m, json_each(m.mentions) AS j;
CREATE VIEW IF NOT EXISTS deliveries AS
    SELECT run_id, seq, agent, message_id, via, ok, duration_s FROM events
    WHERE kind = 'delivery_handled';
"""

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
CREATE TABLE IF NOT EXISTS delivery_blocks (
    run_id TEXT, first_seq INTEGER, last_seq INTEGER, n INTEGER,
    data BLOB,             -- msgpack: [1, seqs, ts, agents, message_ids, vias, oks, durations]
    PRIMARY KEY (run_id, first_seq)
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
CREATE VIEW IF NOT EXISTS mentions AS
    SELECT m.run_id AS run_id, m.message_id AS message_id, m.thread_id AS thread_id,
        m.gseq AS gseq, j.value AS agent
    FROM messages AS m, json_each(m.mentions) AS j;
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
"""Version 1. ``messages`` has no index by thread or by sender: a run's messages
are reached through ``messages_gseq`` and filtered (a scan of one run, tens of
milliseconds for 100,000 messages), because keeping two more randomly ordered
indexes up to date cost more than all other tables together on the write path.
Stores created before this change keep those indexes (``messages_thread``,
``messages_sender``); both shapes read the same. ``events``, ``llm_calls``
and the like are append-only; the (run_id, seq) pairs of ``llm_calls``,
``tool_calls`` and ``errors`` point back at ``events``.

Version 2 writes as little as possible per delivery, the bulk of every run: a
``delivery_handled`` event is one ``events`` row with its fields in columns
(``data`` NULL; readers rebuild the same msgpack bytes), and ``deliveries`` and
``mentions`` are views (over ``events``, and over ``messages.mentions`` with
``json_each``) with the columns the version 1 tables had.

Version 3 (same tables) drops the blob of a ``message_sent`` event whose message
has no metadata and plain field types: its ``events`` row has ``data`` NULL and
readers rebuild the same msgpack bytes from its ``messages`` row (``gseq`` =
the event's ``seq``).

Version 4 (the current one) writes nothing per event for the two kinds that make
up almost every run. A ``delivery_handled`` event is a few bytes of a
``delivery_blocks`` row: each row holds up to 16,384 deliveries of one run as
msgpack columns ``[1, seqs, ts, agents, message_ids, vias, oks, durations]``
(``first_seq``/``last_seq`` bound its seqs; read with
``StoreReader.deliveries``). A ``message_sent`` event whose message is plain
(no metadata, the event's time is the message's timestamp) has no ``events``
row at all: its ``messages`` row is the event (``gseq`` = seq, ``ts`` = the
event's time). ``events`` keeps every other event, verbatim; a run's events are
``events``, ``messages`` and ``delivery_blocks`` merged by seq, an event in
``events`` taking the place of a ``messages`` row of the same seq. The
``deliveries`` view of versions 2 and 3 is gone: SQLite cannot read msgpack, and
one SQLite row per delivery cost more than the rest of the run's writing."""


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Delivery columns on ``events``; ``deliveries`` and ``mentions`` become views.
    Stored ``data`` is kept, so every event reads exactly as before."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    for col, typ in (
        ("agent", "TEXT"),
        ("message_id", "TEXT"),
        ("via", "TEXT"),
        ("ok", "INTEGER"),
        ("duration_s", "REAL"),
    ):
        if col not in cols:
            conn.execute(f"ALTER TABLE events ADD COLUMN {col} {typ}")
    kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN "
                              "('deliveries', 'mentions')").fetchall())  # fmt: skip
    if kinds.get("deliveries") == "table":
        conn.execute(
            "UPDATE events SET (agent, message_id, via, ok, duration_s) = (SELECT d.agent, "
            "d.message_id, d.via, d.ok, d.duration_s FROM deliveries AS d WHERE "
            "d.run_id = events.run_id AND d.seq = events.seq) WHERE kind = 'delivery_handled'"
        )
        conn.execute("DROP TABLE deliveries")
    if kinds.get("mentions") == "table":
        conn.execute("DROP TABLE mentions")
    for stmt in _VIEWS.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Nothing to change: version 3 only adds a way to store rows (a
    ``message_sent`` event with ``data`` NULL, rebuilt from ``messages``) that
    readers of version 2 would not understand."""


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Deliveries kept in ``events`` columns become blocks; plain ``message_sent``
    rows (``data`` NULL) whose time is their message's timestamp are dropped (the
    ``messages`` row is the event), the others get their blob; the delivery
    columns and the ``deliveries`` view go."""
    # Imported here: _rows imports the event classes, which the schema does not need.
    from coral_graph.store._rows import Rows, message_event_dict, new_packer, write_rows

    conn.execute(
        "CREATE TABLE IF NOT EXISTS delivery_blocks (run_id TEXT, first_seq INTEGER, "
        "last_seq INTEGER, n INTEGER, data BLOB, PRIMARY KEY (run_id, first_seq)) WITHOUT ROWID"
    )
    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    pack = new_packer()
    if "agent" in cols:
        rows = Rows()
        for r in conn.execute(
            "SELECT kind, run_id, seq, ts, agent, message_id, via, ok, duration_s FROM events "
            "WHERE kind = 'delivery_handled' AND data IS NULL ORDER BY run_id, seq"
        ):
            rows.add_delivery((*r[:7], bool(r[7]), r[8]))
        write_rows(conn, rows)
        conn.execute("DELETE FROM events WHERE kind = 'delivery_handled' AND data IS NULL")
    blobs = []
    for r in conn.execute(
        "SELECT e.run_id, e.seq, e.ts, m.message_id, m.thread_id, m.seq, m.sender, m.content, "
        "m.ts, m.reply_to, m.mentions FROM events AS e JOIN messages AS m ON m.run_id = e.run_id "
        "AND m.gseq = e.seq WHERE e.kind = 'message_sent' AND e.data IS NULL AND e.ts != m.ts"
    ):
        d = message_event_dict(r[0], r[1], r[2], r[3:10], json.loads(r[10]))
        blobs.append((pack(d), r[0], r[1]))
    conn.executemany("UPDATE events SET data = ? WHERE run_id = ? AND seq = ?", blobs)
    conn.execute("DELETE FROM events WHERE kind = 'message_sent' AND data IS NULL")
    conn.execute("DROP VIEW IF EXISTS deliveries")
    for col in ("agent", "message_id", "via", "ok", "duration_s"):
        if col in cols:
            conn.execute(f"ALTER TABLE events DROP COLUMN {col}")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
}
"""``{from_version: upgrade}``: each function brings a store from ``from_version``
to ``from_version + 1`` inside the writer's transaction; add an entry (and bump
:data:`SCHEMA_VERSION`) with every change."""


def check_meta(conn: sqlite3.Connection, path: str) -> int | None:
    """The schema version of the store behind ``conn``, or None for an empty file.

    Raises:
        NotAStoreError: the file is not SQLite, or SQLite without our ``meta``.
        StoreVersionError: it was written by a newer coral-graph.
        StoreCorruptError: SQLite finds its pages damaged.
    """
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta_rows = (
            conn.execute("SELECT key, value FROM meta").fetchall() if "meta" in tables else []
        )
    except sqlite3.DatabaseError as exc:
        if fault_kind(exc) == "corrupt":
            raise StoreCorruptError(path, str(exc)) from None
        raise NotAStoreError(path, str(exc)) from None
    if not tables or all(t.startswith(("coral_", "sqlite_")) for t in tables):
        # Empty, or only the tables agents keep in the store as their memory (names
        # start with coral_, e.g. the auction's, an eval's): written before the
        # store's own schema (a run with --no-store); the schema is added beside them.
        return None
    if "meta" not in tables:
        raise NotAStoreError(path, "it is an SQLite file without coral-graph's tables")
    meta = dict(meta_rows)
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
    """Create the schema in an empty file, or migrate an older one (writers only).

    The check runs inside the write transaction: processes that create the same new
    store at the same moment take turns, and the later ones find it made."""
    with write_transaction(conn):
        version = check_meta(conn, path)
        if version is None:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [("app", APP), ("schema_version", str(SCHEMA_VERSION))],
            )
        else:
            # A write that changes nothing: SQLite opens a file it may not write
            # (immutable, read-only) read-only without a word, and a writer must
            # learn that here, not with the run's first batch.
            conn.execute("UPDATE meta SET value = value WHERE key = 'app'")
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )


def _wal(conn: sqlite3.Connection, wait_s: float = 10.0) -> str:
    """Switch to WAL mode; returns the mode in force. Leaving the rollback journal
    of a new file takes an exclusive lock for which SQLite does not wait (its busy
    handler is not called): processes creating one store at once retry here."""
    deadline = time.monotonic() + wait_s
    pause = 0.002
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY") or (
                "locked" in str(exc)
            )
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=256
    )
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _create_whole(path: Path) -> None:
    """Make a new store at ``path`` in one step: schema and WAL mode are written
    to a private file beside it, which is then hard-linked into place.

    Nobody ever sees ``path`` empty or half made: a reader polling for the file, or
    a second program writing its own tables into it (``eval``), would otherwise
    find a file without ``meta`` and call it "not a coral-graph store". When two
    processes create at once the link of the later one fails and it uses the
    first one's file. Where hard links are refused (some file systems) the file
    is left for the caller to create in place, serialised by BEGIN IMMEDIATE."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    try:
        conn = _open(tmp)
        try:
            ensure_schema(conn, str(path))
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()  # the last connection: the WAL is checkpointed and removed
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: same schema, use theirs
        except OSError:
            pass  # no hard links here: created in place by the caller
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def connect_writer(path: Path) -> sqlite3.Connection:
    """A writer's connection to ``path``: created, schema ensured, WAL mode.

    Raises:
        NotAStoreError: the file is not a coral-graph store.
        StoreVersionError: written by a newer coral-graph.
        StoreReadOnlyError: the file or its folder cannot be written.
        StoreFullError: no space left to create or extend it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(str(path), fault_kind(exc), f"cannot create its folder: {exc}") from None
    conn: sqlite3.Connection | None = None
    try:
        if not path.exists():
            _create_whole(path)
        conn = _open(path)
        ensure_schema(conn, str(path))
        mode = _wal(conn)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        kind = fault_kind(exc)
        if kind in ("full", "readonly"):
            raise write_error(str(path), kind, str(exc)) from None
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
            raise write_error(str(path), "readonly", str(exc)) from None
        raise NotAStoreError(str(path), str(exc)) from None
    if mode != "wal":  # pragma: no cover - e.g. a file system without shared memory
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
    # NORMAL in WAL mode: a commit survives a process crash; only a power loss can
    # lose the newest transactions. The cache keeps the index pages in memory.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA wal_autocheckpoint = 4000")
    return conn
