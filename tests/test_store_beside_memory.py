"""Agents keep memory in the store file (tables named ``coral_…``: the auction's, an
eval's). When such a table is written before the store's own schema — a run with
``--no-store``, or through the Python API without a store — the file is still a
store to be: the next recorded run adds the schema beside the memory, keeps it, and
is readable. Any other SQLite file is still refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import coral_graph as cg
from coral_graph.store import NotAStoreError, SQLiteStore, StoreReader


def _echo_graph() -> cg.AgentGraph:
    @cg.agent
    async def echo(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "hi", ["user"])

    g = cg.AgentGraph(entry=["echo"])
    g.add_agent("echo", echo)
    return g


def _memory_file(db: Path, table: str) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"CREATE TABLE {table} (kind TEXT PRIMARY KEY, wins INTEGER)")
        conn.execute(f"INSERT INTO {table} VALUES ('sum', 3)")
    conn.close()


def test_a_file_with_only_an_agents_memory_becomes_a_store_and_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / ".coral" / "coral.db"
    _memory_file(db, "coral_auction_memory")
    with SQLiteStore(db) as store:
        result = cg.run(_echo_graph(), "hello", store=store)
    assert result.answer == "hi"
    reader = StoreReader(db)
    try:
        assert reader.run(result.run_id)["status"] == "finished"
    finally:
        reader.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT wins FROM coral_auction_memory").fetchall() == [(3,)]
    conn.close()


def test_any_other_sqlite_file_is_still_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    _memory_file(db, "inventory")
    with pytest.raises(NotAStoreError, match="without coral-graph's tables"):
        SQLiteStore(db)
