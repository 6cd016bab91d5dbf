"""The SQLite event store: recording, reading, bad input, replay, resume, export/import."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

import coral_graph as cg
from coral_graph.store import (
    ExportFormatError,
    NotAStoreError,
    RunExistsError,
    SQLiteStore,
    StoreError,
    StoreVersionError,
    StoreWriterDiedError,
    UnknownRunError,
    _schema,
    export_run,
    import_run,
    open_reader,
    open_store,
    read_export,
    replay,
    resume_run,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def busy_graph() -> cg.AgentGraph:
    """A planner that opens a thread, adds and removes a participant, records model and
    tool calls, fails once, and answers."""
    g = cg.AgentGraph("busy", entry=["planner"])

    @cg.agent
    async def planner(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("work", ["solver"])
            await ctx.add_participant(th, "critic")
            await ctx.remove_participant(th, "critic")
            ctx.record_llm_call(
                model="fake/m", prompt_tokens=10, completion_tokens=5, cost_usd=0.01, latency_s=0.2
            )
            ctx.record_tool_call(
                tool="send_message",
                arguments={"x": 1},
                result="ok",
                ok=True,
                duration_s=0.001,
                thread_id=th.id,
            )
            await ctx.send_message(th, "solve 2+2", ["solver"], metadata={"model": "fake/m"})
        else:
            await ctx.close_thread(message.thread_id, "solved")
            await ctx.send_message("t-1", f"answer: {message.content}", ["user"])

    @cg.agent
    async def solver(ctx: cg.AgentContext, message: cg.Message) -> None:
        if ctx.usage.turns == 1:
            raise ValueError("first try fails")

    @cg.agent
    async def critic(ctx: cg.AgentContext, message: cg.Message) -> None:
        return None

    g.add_agent("planner", planner, description="plans")
    g.add_agent("solver", solver, on_error="continue")
    g.add_agent("critic", critic)
    g.connect("planner", "solver", mutual=True)
    g.connect("planner", "critic")
    return g


def test_records_every_table(tmp_path: Path) -> None:
    g = busy_graph()

    @cg.agent
    async def solver(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "4", ["planner"])

    # The solver raises on its first (and only) turn; use a variant that answers.
    g2 = busy_graph()
    g2.nx.nodes["solver"]["spec"].agent = solver
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        r1 = cg.run(g, "plan", store=store)
        r2 = cg.run(g2, "plan", store=store)
    assert r1.stop_reason == "idle"
    assert r2.stop_reason == "answer"
    with open_reader(db) as rd:
        runs = rd.list_runs()
        assert [r["run_id"] for r in runs] == [r2.run_id, r1.run_id]
        row = rd.run(r2.run_id)
        assert row["status"] == "finished"
        assert row["stop_reason"] == "answer"
        assert row["answer"] == "answer: 4"
        assert row["messages"] == r2.messages == 3
        assert row["tokens"] == 15
        assert row["cost_usd"] == pytest.approx(0.01)
        assert row["last_seq"] == len(r2.events)
        assert row["graph"]["agents"][0]["name"] == "planner"
        assert row["usage"]["planner"]["turns"] == 2
        threads = {t["thread_id"]: t for t in rd.threads(r2.run_id)}
        assert threads["t-2"]["state"] == "closed"
        assert threads["t-2"]["summary"] == "solved"
        assert threads["t-2"]["participants"] == ["planner", "solver"]
        msgs = rd.messages(r2.run_id)
        assert [m["sender"] for m in msgs] == ["user", "planner", "solver", "planner"]
        assert msgs[1]["mentions"] == ["solver"]
        assert msgs[1]["metadata"] == {"model": "fake/m"}
        assert [m["message_id"] for m in rd.messages(r2.run_id, "t-2")] == ["t-2#1", "t-2#2"]
        assert [m["content"] for m in rd.messages(r2.run_id, grep="SOLVE")] == ["solve 2+2"]
        assert len(rd.messages(r2.run_id, agent="solver")) == 2
        assert len(rd.messages(r2.run_id, after_gseq=msgs[1]["gseq"], limit=1)) == 1
        assert rd.tool_calls(r2.run_id)[0]["arguments"] == {"x": 1}
        errs = rd.errors(r1.run_id)
        assert errs[0]["error_type"] == "ValueError"
        assert errs[0]["action"] == "continue"
        assert rd.usage(r2.run_id)["planner"]["llm_calls"] == 1
        assert rd.agents(r2.run_id)[1] == {"name": "solver", "description": "", "kind": "python"}
        conn = rd._conn
        assert (
            conn.execute("SELECT count(*) FROM mentions WHERE run_id=?", (r2.run_id,)).fetchone()[0]
            == 4
        )
        dels = rd.deliveries(r2.run_id)
        assert [(d["agent"], d["via"], d["ok"]) for d in dels] == [
            ("planner", "handle", True),
            ("solver", "handle", True),
            ("planner", "handle", True),
        ]
        assert not any(d["ok"] for d in rd.deliveries(r1.run_id) if d["agent"] == "solver")
        assert [d["seq"] for d in dels] == sorted(d["seq"] for d in dels)
        # Block rows for this run's three deliveries; no events row for them, nor for
        # its plain messages (the message with metadata keeps its blob).
        assert (
            conn.execute(
                "SELECT sum(n) FROM delivery_blocks WHERE run_id=?", (r2.run_id,)
            ).fetchone()[0]
            == 3
        )
        kinds = dict(
            conn.execute(
                "SELECT kind, count(*) FROM events WHERE run_id=? GROUP BY kind", (r2.run_id,)
            ).fetchall()
        )
        assert "delivery_handled" not in kinds
        assert kinds["message_sent"] == 1
        assert (
            conn.execute("SELECT count(*) FROM edges WHERE run_id=?", (r2.run_id,)).fetchone()[0]
            == 3
        )
        removed = conn.execute(
            "SELECT removed_at IS NOT NULL FROM participants WHERE run_id=? AND agent='critic'",
            (r2.run_id,),
        ).fetchone()[0]
        assert removed == 1
        # Every event, exactly: the stored blob is msgpack of event_to_dict.
        blobs = list(rd.event_blobs(r2.run_id))
        assert blobs == [msgpack.packb(cg.event_to_dict(e), use_bin_type=True) for e in r2.events]
        assert rd.events(r2.run_id) == r2.events
        assert rd.events(r2.run_id, after_seq=5) == r2.events[5:]
        assert rd.resolve_run(r2.run_id[:-2]) == r2.run_id
        assert rd.resolve_run("last") == r2.run_id


@pytest.mark.anyio
async def test_open_store_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "dir" / "c.db"
    g = busy_graph()
    async with open_store(db) as store:
        async with cg.open_runtime(g, store=store) as rt:
            result = await rt.run("plan")
        await store.aflush()
        # Readers work while the writer is open.
        with open_reader(db) as rd:
            assert rd.run(result.run_id)["status"] == "finished"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta == {"app": "coral-graph", "schema_version": str(_schema.SCHEMA_VERSION)}


def test_default_path_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from coral_graph.store import resolve_db

    monkeypatch.delenv("CORAL_DB", raising=False)
    assert resolve_db() == Path(".coral/coral.db")
    monkeypatch.setenv("CORAL_DB", str(tmp_path / "env.db"))
    with SQLiteStore() as store:
        assert store.path == tmp_path / "env.db"
    assert (tmp_path / "env.db").exists()
    assert resolve_db("x.db") == Path("x.db")


def _relay_graph(limit: int) -> cg.AgentGraph:
    g = cg.AgentGraph("relay", entry=["a"])

    @cg.agent
    async def relay(ctx: cg.AgentContext, message: cg.Message) -> None:
        other = "b" if ctx.name == "a" else "a"
        if message.sender == "user":
            th = await ctx.create_thread("relay", [other])
            await ctx.send_message(th, "1", [other])
            return
        n = int(message.content)
        if n >= limit:
            if ctx.name == "a":
                await ctx.send_message("t-1", f"done {n}", ["user"])
            else:
                await ctx.send_message(message.thread_id, str(n + 1), [other])
            return
        await ctx.send_message(message.thread_id, str(n + 1), [other])

    g.add_agent("a", relay)
    g.add_agent("b", relay)
    g.connect("a", "b", mutual=True)
    return g


def test_backpressure_drops_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bp.db"
    with SQLiteStore(db, batch_size=8, max_queue=16, flush_interval=0.001) as store:
        result = cg.run(_relay_graph(500), "go", store=store)
        assert store.batches > 1
    with open_reader(db) as rd:
        assert rd.events(result.run_id) == result.events
        assert rd.run(result.run_id)["messages"] == 501


def test_a_writer_that_dies_detaches_the_store_and_the_run_goes_on(tmp_path: Path) -> None:
    from coral_graph.bench import fanout_graph

    store = SQLiteStore(tmp_path / "w.db", batch_size=50)
    os.kill(store._proc.pid, signal.SIGKILL)
    store._proc.wait()

    async def main() -> tuple[cg.RunResult, list[Any]]:
        async with cg.open_runtime(
            fanout_graph(5, 100)[0], store=store, budgets=cg.Budgets(max_messages=None)
        ) as rt:
            result = await rt.run("go", entry=["sender"])
            return result, list(rt.sink_errors)

    result, errors = cg.run_async(main)
    assert result.stop_reason == "idle"
    assert sum(u.deliveries for u in result.usage.values()) == 5 * 100 + 1
    assert len(errors) == 1
    assert isinstance(errors[0][1], StoreWriterDiedError)
    assert "killed (signal 9)" in str(errors[0][1])
    with pytest.raises(StoreWriterDiedError, match="lost its writer process") as got:
        store.close()
    assert "\n" not in str(got.value)
    assert got.value.hint in str(got.value)


def test_close_right_after_a_run_loses_nothing(tmp_path: Path) -> None:
    """close() while the timer thread is writing a batch: whatever the run queued
    meanwhile (its last events, run_finished) is written before the end."""
    from coral_graph.bench import fanout_graph

    for i in range(6):
        db = tmp_path / f"c{i}.db"
        # A timer that drains all the time through a slow pipe: it is mid-batch when
        # the run ends and when close() comes.
        store = SQLiteStore(db, flush_interval=0.0005, batch_size=100_000)
        send = store._send

        def slow_send(data: bytes, send: Any = send) -> None:
            time.sleep(0.01)
            send(data)

        store._send = slow_send  # type: ignore[method-assign]
        result = cg.run(
            fanout_graph(10, 100)[0], "go", entry=["sender"], store=store,
            budgets=cg.Budgets(max_messages=None),
        )  # fmt: skip
        store.close()
        with open_reader(db) as rd:
            row = rd.run(result.run_id)
            assert (row["status"], row["stop_reason"]) == ("finished", "idle"), i
            assert rd.last_seq(result.run_id) == len(result.events)
            assert len(list(rd.event_blobs(result.run_id))) == len(result.events)


@pytest.mark.parametrize("batch_size", [1, 37, 2_000])
def test_concurrent_runs_are_stored_event_for_event(tmp_path: Path, batch_size: int) -> None:
    """Three runs at once in one runtime: their events interleave in the store's
    batches and blocks; each run reads back exactly (bytes of every event)."""
    from coral_graph.bench import fanout_graph, ring_graph

    db = tmp_path / "many.db"
    store = SQLiteStore(db, batch_size=batch_size, flush_interval=0.002)

    async def main() -> list[cg.RunResult]:
        ring, entry, _ = ring_graph(50, 5, 500)
        async with cg.open_runtime(ring, store=store, budgets=cg.Budgets(max_messages=None)) as rt:
            handles = [rt.start("go", entry=entry) for _ in range(2)]
            handles.append(rt.start("once more", entry=entry[:1]))
            return [await h.wait() for h in handles]

    results = cg.run_async(main)
    results.append(
        cg.run(fanout_graph(4, 30)[0], "go", entry=["sender"], store=store,
               budgets=cg.Budgets(max_messages=None))
    )  # fmt: skip
    store.close()
    pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    with open_reader(db) as rd:
        for result in results:
            want = [pack(cg.event_to_dict(e)) for e in result.events]
            assert list(rd.event_blobs(result.run_id)) == want
            assert rd.run(result.run_id)["status"] == "finished"
            assert len(rd.deliveries(result.run_id)) == sum(
                1 for e in result.events if e.kind == "delivery_handled"
            )


def test_a_writer_that_cannot_start_fails_the_store_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from coral_graph.store import _sqlite

    def broken() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.exit(3)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    monkeypatch.setattr(_sqlite, "_spawn_writer", broken)
    with pytest.raises(StoreError, match="could not start its writer"):
        SQLiteStore(tmp_path / "never.db")


def test_flush_by_time_without_close(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db, batch_size=10_000, flush_interval=0.01)
    try:
        result = cg.run(_relay_graph(5), "go", store=store)
        with _deadline(5) as left:
            while True:
                with open_reader(db) as rd:
                    if rd.last_seq(result.run_id) == len(result.events):
                        break
                left()
    finally:
        store.close()


class _deadline:
    """A polling deadline for sync code (no sleep-to-settle: we poll for a fact)."""

    def __init__(self, seconds: float) -> None:
        import time

        self._end = time.monotonic() + seconds

    def __enter__(self) -> Any:
        import time

        def left() -> None:
            if time.monotonic() > self._end:
                raise AssertionError("timed out waiting for the writer")
            time.sleep(0.005)

        return left

    def __exit__(self, *exc: object) -> None:
        return None


# -- bad input ----------------------------------------------------------------------------


def test_not_a_store_is_refused_and_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = {p: _digest(p) for p in (text, other)}
    for p in (text, other):
        with pytest.raises(NotAStoreError, match="not a coral-graph store"):
            open_reader(p)
        with pytest.raises(NotAStoreError):
            SQLiteStore(p)
        assert _digest(p) == before[p]
    missing = tmp_path / "missing.db"
    with pytest.raises(NotAStoreError, match="no such file"):
        open_reader(missing)
    assert not missing.exists()


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = _digest(db)
    with pytest.raises(StoreVersionError, match="version 99") as info:
        open_reader(db)
    assert info.value.found == 99
    with pytest.raises(StoreVersionError):
        SQLiteStore(db)
    assert _digest(db) == before


def test_reader_never_modifies(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with SQLiteStore(db) as store:
        cg.run(busy_graph(), "plan", store=store)
    before = _digest(db)
    with open_reader(db) as rd:
        rid = rd.list_runs()[0]["run_id"]
        rd.messages(rid)
        rd.usage(rid)
        with pytest.raises(UnknownRunError, match="no run 'nope'"):
            rd.run("nope")
    assert _digest(db) == before


DATA = Path(__file__).parent / "data"


def test_version_3_store_migrates_without_changing_a_byte_of_its_events(tmp_path: Path) -> None:
    """``store_v3.db`` was written by coral-graph's schema version 3 (deliveries in
    ``events`` columns, message events rebuilt from ``messages``; an interrupted
    run with one message whose event time differs from its timestamp). A reader
    reads it as it is; a writer migrates it; both give the exact same events."""
    expected = json.loads((DATA / "store_v3.expected.json").read_text())
    db = tmp_path / "v3.db"
    shutil.copy(DATA / "store_v3.db", db)

    def snapshot() -> dict[str, Any]:
        with open_reader(db) as rd:
            out = {}
            for run in rd.list_runs(None):
                rid = run["run_id"]
                blobs = list(rd.event_blobs(rid))
                out[rid] = {
                    "events": len(blobs),
                    "sha256": hashlib.sha256(b"".join(blobs)).hexdigest(),
                    "status": run["status"],
                    "usage": rd.usage(rid),
                }
                assert rd.last_seq(rid) == len(blobs)
            return out

    before = _digest(db)
    with open_reader(db) as rd:
        assert rd.schema_version == 3
        old_deliveries = {r["run_id"]: rd.deliveries(r["run_id"]) for r in rd.list_runs(None)}
    assert snapshot() == expected
    assert _digest(db) == before  # reading never migrates

    SQLiteStore(db).close()
    with open_reader(db) as rd:
        assert rd.schema_version == _schema.SCHEMA_VERSION
        conn = rd._conn
        assert (
            conn.execute(
                "SELECT count(*) FROM events WHERE kind IN ('delivery_handled', 'message_sent') "
                "AND data IS NULL"
            ).fetchone()[0]
            == 0
        )
        assert {r["run_id"]: rd.deliveries(r["run_id"]) for r in rd.list_runs(None)} == (
            old_deliveries
        )
        fanout = max(old_deliveries, key=lambda r: len(old_deliveries[r]))
        assert len(old_deliveries[fanout]) == 5 * 20 + 1  # and the sender's task
    assert snapshot() == expected
    # The migrated store takes new runs and reads them back.
    with SQLiteStore(db) as store:
        result = cg.run(busy_graph(), "plan", store=store)
    with open_reader(db) as rd:
        assert len(rd.events(result.run_id)) == len(result.events)


def test_migration_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.close()
    seen: list[int] = []

    def upgrade(conn: sqlite3.Connection) -> None:
        seen.append(1)
        conn.execute("CREATE TABLE IF NOT EXISTS extra (x)")

    monkeypatch.setitem(_schema.MIGRATIONS, 0, upgrade)
    SQLiteStore(db).close()
    assert seen == [1]
    with open_reader(db) as rd:
        assert rd.schema_version == _schema.SCHEMA_VERSION


# -- replay and resume ----------------------------------------------------------------------


def _interrupt(db: Path, events: list[cg.Event], upto: int) -> str:
    """Store the first ``upto`` events of a run as a run that died (never finished)."""
    with SQLiteStore(db) as store:
        for e in events[:upto]:
            store.on_event(e)
    return events[0].run_id


def test_interrupted_when_writer_gone(tmp_path: Path) -> None:
    db = tmp_path / "i.db"
    result = cg.run(_relay_graph(10), "go")
    rid = _interrupt(db, result.events, 12)
    with open_reader(db) as rd:
        row = rd.run(rid)
        assert row["status"] == "interrupted"
        assert row["last_seq"] == 12
    # A row that says "running" with a dead pid also reads as interrupted.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET status='running', pid=999999999 WHERE run_id=?", (rid,))
    conn.close()
    with open_reader(db) as rd:
        assert rd.run(rid)["status"] == "interrupted"


def test_replay_state() -> None:
    result = cg.run(busy_graph(), "plan")
    full = replay(result.events)
    assert full.finished is not None
    assert full.pending_count == 0
    assert {t: th.participants for t, th in full.threads.items()} == {
        t: th.participants for t, th in result.threads.items()
    }
    assert {t: th.messages for t, th in full.threads.items()} == {
        t: th.messages for t, th in result.threads.items()
    }
    assert full.threads["t-2"].state == result.threads["t-2"].state
    for name, usage in result.usage.items():
        assert full.usage[name].to_dict() == usage.to_dict(), name
    assert full.messages_sent == result.messages
    assert full.tokens == 15
    # Cut just after the planner's message to the solver: the solver's delivery is pending.
    sent = next(
        i
        for i, e in enumerate(result.events)
        if isinstance(e, cg.MessageSent) and e.message.id == "t-2#1"
    )
    part = replay(result.events[: sent + 1])
    assert part.finished is None
    assert [m.id for m in part.pending["solver"]] == ["t-2#1"]
    assert part.cursors[("planner", "t-2")] == 1
    assert part.cursors[("solver", "t-2")] == 0
    assert part.cursors[("critic", "t-2")] == 0  # joined when the thread was empty
    # The planner's turn was still going: not counted, and its delivery is pending
    # (it will be delivered again on resume).
    assert part.usage["planner"].turns == 0
    assert [m.id for m in part.pending["planner"]] == ["t-1#1"]


@pytest.mark.anyio
async def test_resume_continues_with_budgets(tmp_path: Path) -> None:
    db = tmp_path / "res.db"
    g = _relay_graph(40)
    async with cg.open_runtime(g) as rt:
        full = await rt.run("go")
    assert full.answer == "done 40"
    # The process "died" between two turns: a's turn on "14" ended (it sent "15"),
    # and b's delivery of "15" was queued.
    cut = next(
        i
        for i, e in enumerate(full.events)
        if isinstance(e, cg.DeliveryHandled) and e.message_id == "t-2#14"
    )
    rid = _interrupt(db, full.events, cut + 1)
    result = await resume_run(g, rid, db=db)
    assert result.run_id == rid
    assert result.stop_reason == "answer"
    assert result.answer == "done 40"
    assert result.messages == full.messages
    assert [m.content for m in result.threads["t-2"].messages] == [
        m.content for m in full.threads["t-2"].messages
    ]
    assert result.usage["a"].turns == full.usage["a"].turns
    seqs = [e.seq for e in result.events]
    assert seqs == list(range(1, len(seqs) + 1))
    with open_reader(db) as rd:
        row = rd.run(rid)
        assert row["status"] == "finished"
        assert row["stop_reason"] == "answer"
        assert rd.events(rid) == result.events
        assert row["messages"] == full.messages
    with pytest.raises(StoreError, match="already finished"):
        await resume_run(g, rid, db=db)

    # Died in the middle of a's turn on "14" (after it sent "15"): that delivery is
    # delivered again — at least once — so "15" is sent twice.
    db3 = tmp_path / "mid.db"
    rid3 = _interrupt(db3, full.events, cut)
    mid = await resume_run(g, rid3, db=db3)
    contents = [m.content for m in mid.threads["t-2"].messages]
    assert contents[:16] == [str(i) for i in range(1, 16)] + ["15"]

    # Budgets continue from what was spent: 20 messages in all, 16 already used.
    db2 = tmp_path / "budget.db"
    async with cg.open_runtime(g, budgets=cg.Budgets(max_messages=20)) as rt:
        capped = await rt.run("go")
    assert capped.stop_reason == "budget:messages"
    rid2 = _interrupt(db2, capped.events, cut + 1)
    again = await resume_run(g, rid2, db=db2)
    assert again.stop_reason == "budget:messages"
    assert again.messages == 20


@pytest.mark.anyio
async def test_resume_after_answer_only_records_the_end(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    g = _relay_graph(3)
    full = await _run(g)
    rid = _interrupt(db, full.events, len(full.events) - 1)  # lost only run_finished
    result = await resume_run(g, rid, db=db)
    assert result.stop_reason == "answer"
    assert result.answer == full.answer
    assert len(result.events) == len(full.events)


async def _run(g: cg.AgentGraph) -> cg.RunResult:
    async with cg.open_runtime(g) as rt:
        return await rt.run("go")


# -- export / import ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_export_import_round_trip(tmp_path: Path, fmt: str) -> None:
    db = tmp_path / "src.db"
    with SQLiteStore(db, graph_path="g.yaml") as store:
        result = cg.run(busy_graph(), "plan", store=store)
    out = tmp_path / f"run.{fmt}"
    with open_reader(db) as rd, open(out, "wb") as f:
        assert export_run(rd, result.run_id, f, fmt) == len(result.events)
    header, events = read_export(out)
    assert header["version"] == 1
    assert header["run_id"] == result.run_id
    assert events == result.events
    db2 = tmp_path / "dst.db"
    assert import_run(out, db2) == result.run_id
    with pytest.raises(RunExistsError):
        import_run(out, db2)
    out2 = tmp_path / f"again.{fmt}"
    with open_reader(db2) as rd, open(out2, "wb") as f:
        export_run(rd, result.run_id, f, fmt)
        row = rd.run(result.run_id)
        assert row["status"] == "finished"
        assert row["graph_path"] == "g.yaml"
        assert rd.events(result.run_id) == result.events
    assert out2.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_corrupt_exports(tmp_path: Path, fmt: str) -> None:
    db = tmp_path / "src.db"
    with SQLiteStore(db) as store:
        result = cg.run(busy_graph(), "plan", store=store)
    good = tmp_path / "good"
    with open_reader(db) as rd, open(good, "wb") as f:
        export_run(rd, result.run_id, f, fmt)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) * 2 // 3],
        "cut-end": data[: len(data) - 3],
        "flipped": data[:200] + bytes([data[200] ^ 0x20]) + data[201:],
        "empty": b"",
        "garbage": b"\x00\x01garbage" * 10,
        "json": b'{"hello": 1}\n',
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(ExportFormatError):
            read_export(p)
        with pytest.raises(ExportFormatError):
            import_run(p, tmp_path / "dst.db")
