"""Deliveries tagged with the worker process (``host:pid``) that handled them, as in a
distributed run: stored, read back, exported, imported and shown; an untagged
delivery (one process) is stored and encoded exactly as before the tag existed."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import msgpack
import pytest
from test_store import _relay_graph
from test_store_faults import record
from typer.testing import CliRunner

import coral_graph as cg
from coral_graph.cli import app
from coral_graph.store import (
    ExportFormatError,
    SQLiteStore,
    export_run,
    import_run,
    open_reader,
    read_export,
)
from coral_graph.store._blocks import decode_block
from coral_graph.store._plain import plain_item

W_PONG = "host-b.example:4242"


def _tagged_run() -> list[cg.Event]:
    """A run's events as a recorder of a distributed run gives them: ``b`` ran on a
    worker process (its deliveries tagged), ``a`` in the starting process (not)."""
    result = cg.run(_relay_graph(6), "go")
    assert result.stop_reason == "answer"
    return [
        dataclasses.replace(e, worker=W_PONG)
        if isinstance(e, cg.DeliveryHandled) and e.agent == "b"
        else e
        for e in result.events
    ]


def _block_formats(db: Path, rid: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT data FROM delivery_blocks WHERE run_id = ? ORDER BY first_seq", (rid,)
        ).fetchall()
    conn.close()
    return [msgpack.unpackb(r[0])[0] for r in rows]


def _pack(e: cg.Event) -> bytes:
    return msgpack.packb(cg.event_to_dict(e), use_bin_type=True)  # type: ignore[no-any-return]


def test_a_tagged_delivery_round_trips_through_the_store(tmp_path: Path) -> None:
    events = _tagged_run()
    rid = events[0].run_id
    db = tmp_path / "w.db"
    with SQLiteStore(db) as store:
        for e in events:
            store.on_event(e)
        plain = cg.run(_relay_graph(6), "go", store=store)  # the runtime's own path
    with open_reader(db) as rd:
        assert rd.events(rid) == events
        assert list(rd.event_blobs(rid)) == [_pack(e) for e in events]
        dels = rd.deliveries(rid)
        assert {(d["agent"], d["worker"]) for d in dels} == {("a", None), ("b", W_PONG)}
        assert [d["seq"] for d in rd.deliveries(rid, after_seq=dels[2]["seq"])] == [
            d["seq"] for d in dels[3:]
        ]
        assert {d["worker"] for d in rd.deliveries(plain.run_id)} == {None}
        assert rd.events(plain.run_id) == plain.events
        assert rd.usage(rid)["b"]["deliveries"] == sum(d["agent"] == "b" for d in dels)
        assert not rd.problems
    # The tag is a column of the run's block (format 2), no events row of its own; a
    # run in one process keeps format 1 blocks, byte for byte as before.
    assert _block_formats(db, rid) == [2]
    assert _block_formats(db, plain.run_id) == [1]
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT count(*) FROM events WHERE kind = 'delivery_handled'").fetchone()
    conn.close()
    assert n[0] == 0


def test_an_untagged_delivery_encodes_as_before() -> None:
    e = cg.DeliveryHandled("r", 3, 1.5, "a", "t-1#1", "handle", True, 0.25)  # positional
    assert e.worker is None
    d = cg.event_to_dict(e)
    assert "worker" not in d  # old readers and stored bytes see no change
    assert cg.event_from_dict(d) == e
    tagged = dataclasses.replace(e, worker="h:1")
    assert cg.event_to_dict(tagged)["worker"] == "h:1"
    assert cg.event_from_dict(cg.event_to_dict(tagged)) == tagged


def test_a_block_of_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        decode_block(msgpack.packb([3, [1], [1.0], ["a"], ["m"], ["handle"], [True], [0.1]]))
    cols = decode_block(msgpack.packb([1, [1, 2], [1.0, 2.0], ["a", "b"], ["m", "n"],
                                       ["handle", "wait"], [True, True], [0.1, 0.0]]))  # fmt: skip
    assert list(cols[7]) == [None, None]


def test_an_unstorable_value_in_a_delivery_without_worker_is_still_fixed() -> None:
    """The runtime's delivery items have no worker element: the slow path that makes a
    bad value storable must still take them apart field by field."""
    fixed, notes = plain_item(("delivery_handled", "r", 2**70, 1.0, "a", "m", "handle", True, 0.1))
    assert fixed[2] == 2**63 - 1
    assert notes
    assert "seq" in notes[0][-1]


@pytest.mark.parametrize("fmt", ["msgpack", "jsonl"])
def test_export_import_keeps_the_worker(tmp_path: Path, fmt: str) -> None:
    events = _tagged_run()
    rid = events[0].run_id
    db = tmp_path / "src.db"
    record(db, events)
    out = tmp_path / f"run.{fmt}"
    with open_reader(db) as rd, open(out, "wb") as f:
        assert export_run(rd, rid, f, fmt) == len(events)
    assert read_export(out)[1] == events
    db2 = tmp_path / "dst.db"
    assert import_run(out, db2) == rid
    again = tmp_path / f"again.{fmt}"
    with open_reader(db2) as rd, open(again, "wb") as f:
        assert rd.events(rid) == events
        export_run(rd, rid, f, fmt)
    assert again.read_bytes() == out.read_bytes()
    assert _block_formats(db2, rid) == [2]


def test_an_export_with_a_worker_that_is_not_text_is_refused(tmp_path: Path) -> None:
    events = _tagged_run()
    db = tmp_path / "src.db"
    record(db, events)
    out = tmp_path / "run.jsonl"
    with open_reader(db) as rd, open(out, "wb") as f:
        export_run(rd, events[0].run_id, f, "jsonl")
    lines = out.read_text().splitlines()
    bad = [
        json.dumps({**d, "worker": 4242}) if d.get("worker") else line
        for line in lines
        for d in [json.loads(line)]
    ]
    out.write_text("\n".join(bad) + "\n")
    with pytest.raises(ExportFormatError, match="worker"):
        read_export(out)


def test_show_says_which_worker_handled_each_delivery(tmp_path: Path) -> None:
    events = _tagged_run()
    rid = events[0].run_id
    db = tmp_path / "w.db"
    record(db, events)
    runner = CliRunner()
    res = runner.invoke(app, ["show", rid, "--db", str(db), "--plain"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    handled = [line for line in lines if "handled by" in line]
    n_b = sum(isinstance(e, cg.DeliveryHandled) and e.agent == "b" for e in events)
    assert len(handled) == n_b == 3
    assert all(f"handled by b on {W_PONG} (turn," in line for line in handled)
    # each line is placed where the turn ended: after the message it delivered
    for line in handled:
        tid, n = line.split()[1].split("#")
        header = next(i for i, x in enumerate(lines) if x.endswith(f"[{tid} relay #{n}]"))
        assert lines[header].split()[1:4] == ["a", "→", "@b"]
        assert header < lines.index(line)
    res = runner.invoke(app, ["show", rid, "--db", str(db), "--json"])
    data = json.loads(res.stdout)
    assert [d["worker"] for d in data["deliveries"] if d["agent"] == "b"] == [W_PONG] * n_b
    assert {d["worker"] for d in data["deliveries"] if d["agent"] == "a"} == {None}
    # --agent a: none of b's lines; a run in one process: no such line at all
    res = runner.invoke(app, ["show", rid, "--db", str(db), "--plain", "--agent", "a"])
    assert "handled by" not in res.stdout
    with SQLiteStore(db) as store:
        plain = cg.run(_relay_graph(6), "go", store=store)
    res = runner.invoke(app, ["show", plain.run_id, "--db", str(db), "--plain"])
    assert res.exit_code == 0
    assert "handled by" not in res.stdout
