"""Fault injection for the SQLite store: values it cannot hold, concurrent creators
and importers, a killed writer, a full disk, an immutable file. In each case
nothing that was acknowledged is lost and the failure is one typed error."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coral_graph as cg
from coral_graph._events import (
    DeliveryHandled,
    Event,
    LLMCalled,
    MessageSent,
    RunFinished,
    RunStarted,
    ThreadCreated,
)
from coral_graph.store import (
    RunExistsError,
    SQLiteStore,
    StoreFullError,
    StoreReadOnlyError,
    StoreWriterDiedError,
    export_run,
    import_run,
    open_reader,
)
from coral_graph.store._plain import INT_MAX, UNSTORABLE

RID = "run-faults-1"


def _message(seq: int, content: str, metadata: Any) -> cg.Message:
    return cg.Message(
        f"t-1#{seq}", "t-1", seq, "a", content, ("user",), 1000.0 + seq, None, metadata
    )  # type: ignore[arg-type]


def synthetic_run(metadatas: list[Any], rid: str = RID, budgets: Any = None) -> list[Event]:
    """A run as the runtime would emit it: one message per metadata value, each
    handled once, then the end. Built by hand so the store is tested on its own
    (the runtime refuses some of these values at send time)."""
    evs: list[Event] = [
        RunStarted(
            rid,
            1,
            1000.0,
            "task",
            ["a"],
            ["a"],
            {"name": "g", "agents": [], "edges": [["a", "b"]]},
            budgets or {"max_messages": 10},
        ),
        ThreadCreated(rid, 2, 1000.5, "t-1", "task", "user", ["user", "a"]),
    ]
    seq = 3
    for i, meta in enumerate(metadatas, 1):
        msg = _message(i, f"message {i}", meta)
        evs.append(MessageSent(rid, seq, msg.timestamp, msg))
        evs.append(DeliveryHandled(rid, seq + 1, msg.timestamp + 0.1, "a", msg.id, "handle",
                                   True, 0.01))  # fmt: skip
        seq += 2
    evs.append(RunFinished(rid, seq, 2000.0, "idle", None, None, None, {"a": {"turns": 1}}))
    return evs


def record(db: Path, events: list[Event]) -> None:
    with SQLiteStore(db, batch_size=10_000) as store:
        for e in events:
            store.on_event(e)


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


BAD_VALUES: dict[str, Any] = {
    "datetime": datetime.datetime(2026, 1, 2, 3, 4, 5),
    "date": datetime.date(2026, 1, 2),
    "decimal": decimal.Decimal("1.5"),
    "object": Opaque(),
    "function": len,
    "class": int,
    "huge int": 10**30,
    "negative huge": -(10**25),
    "uint64": 2**64 - 1,
    "tuple key": {(1, 2): "x"},
    "int key": {7: "x"},
    "surrogate": "bad \ud800 text",
    "surrogate key": {"\udcff": 1},
    "set": {1, 2},
    "frozenset": frozenset({3}),
    "mapping proxy": types.MappingProxyType({"k": 1}),
    "bytearray": bytearray(b"ab"),
    "deep": _nested(80),
    "exception": ValueError("boom"),
    "generator": (x for x in ()),
    "nan": float("nan"),
    "inf": float("inf"),
    # Python values of built-in types (marshal would carry them) that are not plain data.
    "complex": 1 + 2j,
    "code": compile("1", "<meta>", "eval"),
    "ellipsis": ...,
}
"""Each kind of value a careless agent may put into a message's metadata."""


def test_one_unstorable_value_never_costs_the_other_events(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    metas: list[Any] = [{"ok": 1}]
    for name, value in BAD_VALUES.items():
        metas += [{"name": name, "value": value}, {"ok": name}]
    events = synthetic_run(metas)
    record(db, events)
    with open_reader(db) as rd:
        run = rd.run(RID)
        assert run["status"] == "finished"
        assert run["stop_reason"] == "idle"
        msgs = rd.messages(RID)
        assert [m["content"] for m in msgs] == [f"message {i}" for i in range(1, len(metas) + 1)]
        # Every event is there, in order, seq for seq.
        assert [e["seq"] for e in rd.event_dicts(RID)] == [e.seq for e in events]
        assert len(rd.deliveries(RID)) == len(metas)
        notes = [e for e in rd.errors(RID) if e["error_type"] == UNSTORABLE]
    by_seq = {n["seq"]: n["error"] for n in notes}
    for m, meta in zip(msgs, metas, strict=True):
        if "ok" in meta:
            assert m["metadata"] == meta
            assert m["gseq"] not in by_seq
            continue
        name = meta["name"]
        value = meta["value"]
        if name in ("nan", "inf", "bytearray", "set", "frozenset", "mapping proxy"):
            continue  # held as they are (or as their plain equivalent)
        assert m["gseq"] in by_seq, name
        note = by_seq[m["gseq"]]
        # The note names the event and the field.
        assert f"message_sent (seq {m['gseq']})" in note, note
        assert "message.metadata" in note, note
        if name == "datetime":
            assert "datetime.datetime value cannot be stored" in note
            assert m["metadata"]["value"] == str(value)
        if name == "huge int":
            assert m["metadata"]["value"] == str(value)
            assert "outside the signed 64-bit range" in note


def test_an_integer_beyond_64_bits_in_a_typed_field_is_clamped_and_said(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    events = synthetic_run([None, None], budgets={"max_messages": 99999999999999999999999999})
    events.insert(3, LLMCalled(RID, 100, 1000.7, "a", "m", 10**40, 5, 0.5, 0.1, "ok", None))
    events.sort(key=lambda e: e.seq)
    record(db, events)
    with open_reader(db) as rd:
        run = rd.run(RID)
        assert run["status"] == "finished"
        assert run["budgets"]["max_messages"] == "99999999999999999999999999"
        assert len(rd.messages(RID)) == 2
        notes = " | ".join(e["error"] for e in rd.errors(RID))
        assert "budgets['max_messages']" in notes
        assert (
            f"prompt_tokens: {10**40} is outside the signed 64-bit range; stored as {INT_MAX}"
            in (notes)
        )
        assert run["tokens"] == INT_MAX


_plain_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.sampled_from(list(BAD_VALUES.values())),
)
_meta = st.dictionaries(
    st.one_of(st.text(max_size=4), st.integers(), st.tuples(st.integers())),
    st.recursive(
        _plain_leaf,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
        ),
        max_leaves=6,
    ),
    max_size=3,
)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(metas=st.lists(_meta, min_size=1, max_size=25))
def test_any_metadata_leaves_every_event_stored(tmp_path: Path, metas: list[Any]) -> None:
    db = tmp_path / f"h{time.monotonic_ns()}.db"
    events = synthetic_run(metas)
    record(db, events)
    with open_reader(db) as rd:
        assert rd.run(RID)["status"] == "finished"
        assert [e["seq"] for e in rd.event_dicts(RID)] == [e.seq for e in events]
        assert len(rd.messages(RID)) == len(metas)
        # What was changed is said, once per changed event at most.
        seqs = [e["seq"] for e in rd.errors(RID)]
        assert len(seqs) == len(set(seqs))


# -- concurrent processes -------------------------------------------------------------


def _create(db: str, barrier: Any, q: Any) -> None:
    from coral_graph.store import _schema

    check = _schema.check_meta

    def slow_check(*args: Any) -> Any:
        # Widen the window between looking at the file and creating the schema,
        # so that a check made outside the write lock fails every time.
        got = check(*args)
        time.sleep(0.05)
        return got

    _schema.check_meta = slow_check  # type: ignore[assignment]  # a forked child's own copy
    barrier.wait()
    try:
        SQLiteStore(db).close()
        q.put("ok")
    except Exception as exc:
        q.put(f"{type(exc).__name__}: {exc}")


def _import(path: str, db: str, barrier: Any, q: Any) -> None:
    import contextlib

    from coral_graph.store import _export

    begin = _export.write_transaction

    @contextlib.contextmanager
    def slow_begin(conn: Any) -> Any:
        # Widen the window before the write lock: an "is it new?" check made
        # before taking the lock then sees the run missing in every process.
        time.sleep(0.05)
        with begin(conn) as c:
            yield c

    _export.write_transaction = slow_begin  # type: ignore[assignment]  # the child's own copy
    barrier.wait()
    try:
        import_run(path, db)
        q.put("ok")
    except RunExistsError:
        q.put("exists")
    except Exception as exc:
        q.put(f"{type(exc).__name__}: {exc}")


def _race(target: Any, args: tuple[Any, ...], n: int) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, q)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    return out


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    for trial in range(4):
        db = tmp_path / f"new{trial}" / "c.db"
        got = _race(_create, (str(db),), 12)
        assert got == ["ok"] * 12
        with open_reader(db) as rd:
            assert rd.schema_version == 4
            assert rd._conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 2


def test_processes_importing_one_export_at_once_import_it_once(tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    record(src, synthetic_run([{"a": 1}] * 5))
    out = tmp_path / "run.cgx"
    with open_reader(src) as rd, open(out, "wb") as f:
        export_run(rd, RID, f)
    for trial in range(2):
        db = tmp_path / f"dst{trial}.db"
        SQLiteStore(db).close()
        got = _race(_import, (str(out), str(db)), 5)
        assert sorted(got) == ["exists"] * 4 + ["ok"]
        with open_reader(db) as rd:
            conn = rd._conn
            for table in ("runs", "edges", "participants", "threads", "messages", "events"):
                want = (
                    open_reader(src)
                    ._conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (RID,))
                    .fetchone()[0]
                )
                n = conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (RID,))
                assert n.fetchone()[0] == want, table


# -- a writer that dies, a full disk, an immutable file ------------------------------


def _flushed_run(store: SQLiteStore, rid: str, n: int) -> list[Event]:
    events = synthetic_run([{"i": i} for i in range(n)], rid=rid)
    for e in events:
        store.on_event(e)
    store.flush()
    return events


def test_a_killed_writer_is_one_typed_error_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.db"
    store = SQLiteStore(db, batch_size=50)
    kept = _flushed_run(store, "run-kept", 30)
    # A second run, half acknowledged, then the writer is killed.
    second = synthetic_run([{"i": i} for i in range(40)], rid="run-cut")
    for e in second[:40]:
        store.on_event(e)
    store.flush()
    os.kill(store._proc.pid, signal.SIGKILL)
    for e in second[40:]:
        store.on_event(e) if store.error is None else None
    err = store.close(raise_error=False)
    assert isinstance(err, StoreWriterDiedError)
    assert "killed (signal 9)" in str(err)
    assert err.hint in str(err)
    with pytest.raises(StoreWriterDiedError):
        store.close()
    with open_reader(db) as rd:
        assert [e["seq"] for e in rd.event_dicts("run-kept")] == [e.seq for e in kept]
        got = [e["seq"] for e in rd.event_dicts("run-cut")]
        assert got[:40] == [e.seq for e in second[:40]]
        assert rd.run("run-cut")["status"] == "interrupted"
        assert rd.run("run-kept")["status"] == "finished"


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 600 KB tmpfs (root only)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_one_typed_error_and_keeps_what_was_acknowledged(
    small_disk: Path,
) -> None:
    db = small_disk / "f.db"
    store = SQLiteStore(db, batch_size=20)
    kept = _flushed_run(store, "run-kept", 20)
    big = "x" * 20_000
    events = synthetic_run([{"pad": big}] * 200, rid="run-big")
    for e in events:
        if store.error is not None:
            break
        try:
            store.on_event(e)
        except StoreFullError:
            break
    err = store.close(raise_error=False)
    assert isinstance(err, StoreFullError), err
    assert "disk" in str(err)
    assert err.hint in str(err)
    assert "\n" not in str(err)
    with open_reader(db) as rd:
        assert [e["seq"] for e in rd.event_dicts("run-kept")] == [e.seq for e in kept]
        assert rd.run("run-kept")["status"] == "finished"


def test_an_immutable_store_is_refused_at_open_and_left_as_it_was(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root")
    db = tmp_path / "i.db"
    record(db, synthetic_run([{"a": 1}]))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    if subprocess.run(["chattr", "+i", str(db)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        with pytest.raises(StoreReadOnlyError, match="cannot be written") as got:
            SQLiteStore(db)
        assert "make the file and its folder writable" in str(got.value)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=False)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with open_reader(db) as rd:
        assert rd.run(RID)["status"] == "finished"


# -- a new store appears whole --------------------------------------------------------


def _eval_tables(db: str, barrier: Any, q: Any) -> None:
    from coral_graph.eval._runner import EvalTables

    barrier.wait()
    try:
        EvalTables(Path(db)).close()
        q.put("ok")
    except Exception as exc:
        q.put(f"{type(exc).__name__}: {exc}")


def test_a_new_store_path_exists_only_once_its_schema_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coral_graph.store import _schema

    db = tmp_path / "s" / "new.db"
    seen: list[bool] = []
    real = _schema.ensure_schema

    def spy(conn: Any, path: str) -> None:
        seen.append(db.exists())
        real(conn, path)

    monkeypatch.setattr(_schema, "ensure_schema", spy)
    SQLiteStore(db).close()
    # the schema was written while nobody could open the path (a reader polling for
    # it, or eval's tables, would otherwise find a file without meta)
    assert seen[0] is False
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("new.db")) == []
    with open_reader(db) as rd:
        assert rd.schema_version == 4


def test_eval_tables_and_stores_created_at_once_share_one_store(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_eval_tables if i % 2 else _create, args=(str(db), barrier, q))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert got == ["ok"] * 8
    with open_reader(db) as rd:
        assert rd.schema_version == 4
        names = {r[0] for r in rd._conn.execute("SELECT name FROM sqlite_master")}
    assert {"meta", "runs", "coral_evals"} <= names
