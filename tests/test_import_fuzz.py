"""The import format under attack: every malformed export is refused with one
ExportFormatError naming the record and the field, and nothing is written; what
is accepted reads back in full through every reader. Hypothesis mutates valid
exports (re-encoded with a correct checksum, so the content checks are what is
tested) and feeds random msgpack."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coral_graph as cg
from coral_graph._events import EVENT_TYPES
from coral_graph.store import (
    ExportFormatError,
    RunExistsError,
    SQLiteStore,
    export_run,
    import_run,
    open_reader,
)
from coral_graph.store._export_model import RECORDS
from tests.test_store import busy_graph

_FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A real run's export (every kind of event the busy graph makes), decoded."""
    where = tmp_path_factory.mktemp("fuzz")
    db = where / "src.db"
    with SQLiteStore(db) as store:
        result = cg.run(busy_graph(), "plan", store=store)
    out = where / "run.cgx"
    with open_reader(db) as rd, open(out, "wb") as f:
        export_run(rd, result.run_id, f)
    u = msgpack.Unpacker(raw=False)
    u.feed(out.read_bytes())
    items = list(u)
    return items[0], items[1:-1]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("empty") / "empty.db"
    SQLiteStore(db).close()
    return db


def encode(header: dict[str, Any], events: list[Any], fmt: str = "msgpack") -> bytes:
    """An export file of these records, with a correct count and checksum."""
    if fmt == "jsonl":
        lines = [
            {**header, "encoding": "jsonl", "events": len(events)},
            *events,
            {"end": "coral-graph-export", "events": len(events)},
        ]
        return b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    body = b"".join(pack(e) for e in events)
    end = {"end": "coral-graph-export", "events": len(events), "crc32": zlib.crc32(body)}
    return pack({**header, "events": len(events)}) + body + pack(end)


def _counts(db: Path) -> dict[str, int]:
    with open_reader(db) as rd:
        conn = rd._conn
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def check_import(data: bytes, empty_store: Path, tmp: Path) -> str | None:
    """Import ``data`` into a copy of an empty store: either one ExportFormatError
    and nothing written, or a run every reader reads back in full. Returns the
    error text (None when accepted)."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "x.cgx"
    path.write_bytes(data)
    db = tmp / "db.db"
    shutil.copy(empty_store, db)
    before = _counts(db)
    try:
        rid = import_run(path, db)
    except ExportFormatError as exc:
        assert _counts(db) == before, "a refused import wrote something"
        text = str(exc)
        assert "\n" not in text
        return text
    with open_reader(db) as rd:
        run = rd.run(rid)
        assert run["run_id"] == rid
        n = len(rd.events(rid))
        assert n == len(list(rd.event_blobs(rid))) > 0
        rd.messages(rid)
        rd.threads(rid)
        rd.tool_calls(rid)
        rd.errors(rid)
        rd.usage(rid)
        assert rd.problems == []
        again = tmp / "again.cgx"
        with open(again, "wb") as f:
            export_run(rd, rid, f)
    with pytest.raises(RunExistsError):
        import_run(path, db)
    return None


def test_the_model_knows_every_field_of_every_event() -> None:
    """A new event field must get a type in the import model (else it would pass
    unchecked, as plain data at most)."""
    for kind, cls in EVENT_TYPES.items():
        known = set(RECORDS[kind].model_fields)
        missing = {f.name for f in dataclasses.fields(cls)} - known
        assert not missing, f"{kind}: {missing} not in coral_graph/store/_export_model.py"


class Ext:
    """Values that are not plain data in the msgpack sense."""

    ext = msgpack.ExtType(7, b"\x00\x01")


def _nest(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def _nest_map(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = {"k": v}
    return v


# Each: (what, mutate(events) -> None, a word the error must contain).
CASES: list[tuple[str, Any, str]] = [
    ("content a dict", lambda ev: _msg(ev).update(content={"a": 1}), "message.content"),
    ("content an int", lambda ev: _msg(ev).update(content=5), "message.content"),
    ("nested mentions", lambda ev: _msg(ev).update(mentions=[["solver"]]), "message.mentions"),
    ("mentions a string", lambda ev: _msg(ev).update(mentions="solver"), "message.mentions"),
    ("huge seq", lambda ev: ev[-1].update(seq=2**63), "seq"),
    ("uint64 seq", lambda ev: ev[-1].update(seq=2**64 - 1), "seq"),
    ("negative seq", lambda ev: ev[1].update(seq=-1), "seq"),
    ("seq a float", lambda ev: ev[1].update(seq=2.0), "seq"),
    ("seq a string", lambda ev: ev[1].update(seq="2"), "seq"),
    ("seq repeated", lambda ev: ev[2].update(seq=ev[1]["seq"]), "out of order"),
    ("ts a string", lambda ev: ev[1].update(ts="now"), "ts"),
    ("metadata a list", lambda ev: _msg(ev).update(metadata=[1]), "message.metadata"),
    ("ext in metadata", lambda ev: _msg(ev).update(metadata={"x": Ext.ext}), "extension"),
    (
        "timestamp ext",
        lambda ev: _msg(ev).update(metadata={"t": msgpack.Timestamp(1, 0)}),
        "extension",
    ),
    ("int key", lambda ev: _msg(ev).update(metadata={1: "x"}), "not a string"),
    ("bytes key", lambda ev: _msg(ev).update(metadata={b"k": "x"}), "not a string"),
    ("deep list", lambda ev: _msg(ev).update(metadata={"d": _nest(200)}), "nested deeper"),
    ("deep map", lambda ev: _msg(ev).update(metadata={"d": _nest_map(200)}), "nested deeper"),
    (
        "huge int in budgets",
        lambda ev: ev[0]["budgets"].update(max_messages=2**64 - 1),
        "64-bit",
    ),
    ("unknown kind", lambda ev: ev[1].update(kind="run_exploded"), "kind"),
    ("kind missing", lambda ev: ev[1].pop("kind"), "kind"),
    # The file's own text in the error is escaped: the error stays one line.
    ("kind a newline", lambda ev: ev[0].update(kind="\n"), "\\n"),
    ("field missing", lambda ev: _msg(ev).pop("sender"), "message.sender"),
    ("other run", lambda ev: ev[3].update(run_id="run-other"), "of run"),
    ("event a list", lambda ev: ev.__setitem__(2, [1, 2]), "not a map"),
    ("first not run_started", lambda ev: ev.pop(0), "run_started"),
    ("ok a string", lambda ev: _kind(ev, "delivery_handled").update(ok="yes"), "ok"),
    (
        "tokens a float",
        lambda ev: _kind(ev, "llm_called").update(prompt_tokens=1.5),
        "prompt_tokens",
    ),
    (
        "arguments a string",
        lambda ev: _kind(ev, "tool_called").update(arguments="x"),
        "arguments",
    ),
    ("graph an int", lambda ev: ev[0].update(graph=5), "graph"),
    # The keys of the graph that the store and the viewer read have their type.
    ("graph edges null", lambda ev: ev[0]["graph"].update(edges=None), "edges"),
    ("graph edges of ints", lambda ev: ev[0]["graph"].update(edges=[[1, 2]]), "edges"),
    ("graph edge of three", lambda ev: ev[0]["graph"].update(edges=[["a", "b", "c"]]), "edges"),
    ("graph edges a map", lambda ev: ev[0]["graph"].update(edges={"a": "b"}), "edges"),
    ("graph agents null", lambda ev: ev[0]["graph"].update(agents=None), "agents"),
    ("graph agent a string", lambda ev: ev[0]["graph"].update(agents=["a"]), "agents"),
    ("graph agent no name", lambda ev: ev[0]["graph"].update(agents=[{"kind": "x"}]), "agents"),
    ("graph name an int", lambda ev: ev[0]["graph"].update(name=7), "name"),
]


def _kind(events: list[Any], kind: str) -> dict[str, Any]:
    return next(e for e in events if isinstance(e, dict) and e.get("kind") == kind)


def _msg(events: list[Any]) -> dict[str, Any]:
    m: dict[str, Any] = _kind(events, "message_sent")["message"]
    return m


@pytest.mark.parametrize(("what", "mutate", "word"), CASES, ids=[c[0] for c in CASES])
def test_each_malformed_export_is_refused_naming_record_and_field(
    valid: tuple[dict[str, Any], list[dict[str, Any]]],
    empty_store: Path,
    tmp_path: Path,
    what: str,
    mutate: Any,
    word: str,
) -> None:
    header, events = valid
    events = msgpack.unpackb(msgpack.packb(events, use_bin_type=True), raw=False)  # a deep copy
    mutate(events)
    err = check_import(encode(header, events), empty_store, tmp_path)
    assert err is not None, what
    assert word in err, err
    assert "event " in err or "header" in err, err


def test_an_export_without_events_is_refused(
    valid: tuple[dict[str, Any], list[dict[str, Any]]], empty_store: Path, tmp_path: Path
) -> None:
    header, _ = valid
    for fmt in ("msgpack", "jsonl"):
        err = check_import(encode(header, [], fmt), empty_store, tmp_path / fmt)
        assert err is not None
        assert "no events" in err
    # Through the CLI: exit 1, one line, no run id printed.
    from typer.testing import CliRunner

    from coral_graph.cli import EXIT_BAD_INPUT, app

    (tmp_path / "e.cgx").write_bytes(encode(header, []))
    r = CliRunner().invoke(app, ["import", str(tmp_path / "e.cgx"), "--db", str(tmp_path / "d.db")])
    assert r.exit_code == EXIT_BAD_INPUT
    assert r.stdout == ""
    assert "no events" in r.stderr


def test_a_valid_export_still_imports_byte_for_byte(
    valid: tuple[dict[str, Any], list[dict[str, Any]]], empty_store: Path, tmp_path: Path
) -> None:
    header, events = valid
    data = encode(header, events)
    assert check_import(data, empty_store, tmp_path) is None
    assert hashlib.sha256((tmp_path / "again.cgx").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )


_nasty = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=6),
    st.just(Ext.ext),
    st.just(msgpack.Timestamp(5, 0)),
    # a fresh object per draw: a later mutation may write inside it, and a shared
    # one (st.just) grew from example to example, even into a cycle (RecursionError
    # on one run, not on its replay)
    st.builds(_nest, st.just(100)),
    st.dictionaries(
        st.one_of(st.text(max_size=3), st.integers(), st.binary(max_size=2)),
        st.integers(),
        max_size=2,
    ),
    st.lists(st.one_of(st.text(max_size=3), st.lists(st.text(max_size=2))), max_size=3),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@_FUZZ
@given(data=st.data(), fmt=st.sampled_from(["msgpack", "jsonl"]))
def test_mutated_exports_never_crash_and_never_write_part_of_a_run(
    valid: tuple[dict[str, Any], list[dict[str, Any]]],
    empty_store: Path,
    tmp_path: Path,
    data: st.DataObject,
    fmt: str,
) -> None:
    header, events = valid
    events = msgpack.unpackb(msgpack.packb(events, use_bin_type=True), raw=False)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(events) - 1))
        paths = _paths(events[i])
        path = data.draw(st.sampled_from(paths))
        value = data.draw(_nasty)
        if fmt == "jsonl":
            try:  # JSON has no bytes or ext types, and only text keys
                value = json.loads(json.dumps(value, default=str))
            except (TypeError, ValueError):
                value = str(value)
        target = events[i]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    where = tmp_path / f"m{data.draw(st.integers(0, 10**9))}"
    try:
        encoded = encode(header, events, fmt)
    except (TypeError, ValueError, OverflowError):
        return  # not encodable as such a file at all
    check_import(encoded, empty_store, where)


@_FUZZ
@given(blob=st.binary(max_size=400), keep_header=st.booleans())
def test_random_bytes_are_refused_cleanly(
    valid: tuple[dict[str, Any], list[dict[str, Any]]],
    empty_store: Path,
    tmp_path: Path,
    blob: bytes,
    keep_header: bool,
) -> None:
    header, _events = valid
    data = blob
    if keep_header:
        data = msgpack.packb(header, use_bin_type=True) + blob
    where = tmp_path / hashlib.sha1(data).hexdigest()[:12]
    assert check_import(data, empty_store, where) is not None
