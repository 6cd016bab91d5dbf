"""Every reader survives bad data: damaged rows (bad UTF-8, bad JSON, bad msgpack)
are named and read around, damaged pages give one clear error, non-finite floats
come out as valid JSON everywhere, and exports never replace what coral-graph did
not write."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from coral_graph.cli import EXIT_BAD_INPUT, app
from coral_graph.store import ExportFolderError, StoreCorruptError, open_reader
from coral_graph.store._json import dumps, loads
from tests.test_store_faults import RID, record, synthetic_run


def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def _strict_json(text: str) -> Any:
    """Parse as a browser would: NaN/Infinity tokens are errors."""

    def refuse(name: str) -> Any:
        raise ValueError(f"invalid JSON token {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def nan_db(tmp_path: Path) -> Path:
    db = tmp_path / "nan.db"
    metas = [
        {
            "score": float("nan"),
            "cost": float("inf"),
            "low": float("-inf"),
            "nested": [float("nan")],
        },
        {"model": "m", "tokens": 3, "latency_s": float("nan"), "cost_usd": "free"},
    ]
    record(db, synthetic_run(metas))
    return db


def test_the_shared_encoder_writes_valid_json_for_non_finite_floats() -> None:
    text = dumps({"a": float("nan"), "b": [float("inf"), {"c": float("-inf")}], "d": 1.5})
    assert _strict_json(text) == {"a": "NaN", "b": ["Infinity", {"c": "-Infinity"}], "d": 1.5}
    # Old stores wrote the bare tokens: they read back as the same strings.
    assert loads('{"a": NaN, "b": -Infinity}') == {"a": "NaN", "b": "-Infinity"}
    assert _strict_json(dumps({"b": b"\xff", "s": {1}})) == {"b": "\ufffd", "s": [1]}


def test_non_finite_floats_are_valid_json_in_show_viewer_and_exports(
    nan_db: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from coral_graph.viewer.query import RunReader
    from coral_graph.viewer.web import create_app

    code, out, err = _cli("show", RID, "--db", str(nan_db))
    assert code == 0, err
    assert "message 2" in out
    code, out, _ = _cli("show", RID, "--json", "--db", str(nan_db))
    assert code == 0
    got = _strict_json(out)
    meta = got["messages"][0]["metadata"]
    assert meta == {"score": "NaN", "cost": "Infinity", "low": "-Infinity", "nested": ["NaN"]}

    reader = RunReader(nan_db)
    with TestClient(create_app(reader), base_url="http://127.0.0.1:8000") as c:
        r = c.get(f"/api/runs/{RID}/messages")
        assert r.status_code == 200, r.text
        items = _strict_json(r.text)["items"]
        assert len(items) == 2
        assert items[0]["metadata"]["cost"] == "Infinity"
        assert items[1]["metadata"]["latency_s"] == "NaN"

    from coral_graph.viewer.web import export_run

    site = export_run(reader, RID, tmp_path / "site").parent
    scripts = list((site / "data").rglob("*.js"))
    assert scripts
    for f in scripts:
        _strict_json(_script_data(f))

    out_file = tmp_path / "run.jsonl"
    code, _, err = _cli(
        "export", RID, "--format", "jsonl", "-o", str(out_file), "--db", str(nan_db)
    )
    assert code == 0, err
    for line in out_file.read_text("utf-8").splitlines():
        _strict_json(line)
    # ... and the JSON Lines export imports again (floats of typed fields included).
    db2 = tmp_path / "again.db"
    code, out, err = _cli("import", str(out_file), "--db", str(db2))
    assert code == 0, err
    with open_reader(db2) as rd:
        assert len(rd.messages(RID)) == 2


# -- damaged rows -------------------------------------------------------------------


def _damaged(tmp_path: Path) -> Path:
    db = tmp_path / "bad.db"
    metas = [{"i": i, "model": "m"} for i in range(6)]
    record(db, synthetic_run(metas))
    conn = sqlite3.connect(db)
    with conn:
        # Bytes that are not UTF-8, where text should be.
        conn.execute("UPDATE messages SET content = CAST(x'41ff42fe' AS TEXT) WHERE gseq = 3")
        conn.execute("UPDATE runs SET task = CAST(x'c328' AS TEXT)")
        # JSON that is not JSON, or of the wrong shape.
        conn.execute("UPDATE messages SET metadata = '{broken' WHERE gseq = 5")
        conn.execute("UPDATE messages SET mentions = '{\"a\": 1}' WHERE gseq = 7")
        conn.execute("UPDATE runs SET graph = '[1, 2', budgets = '\"text\"'")
        # A stored event whose msgpack does not decode.
        conn.execute(
            "UPDATE events SET data = x'c1c1' WHERE seq = (SELECT min(seq) FROM events "
            "WHERE kind = 'message_sent')"
        )
        # Content that is a blob, not text.
        conn.execute("UPDATE messages SET content = x'3432' WHERE gseq = 9")
    conn.close()
    return db


def test_readers_read_around_damaged_rows_and_name_them(tmp_path: Path) -> None:
    db = _damaged(tmp_path)
    with open_reader(db) as rd:
        run = rd.run(RID)
        assert run["task"] == "\ufffd("
        assert run["graph"] == {}
        assert run["budgets"] == {}
        msgs = rd.messages(RID)
        assert len(msgs) == 6
        by = {m["gseq"]: m for m in msgs}
        assert by[3]["content"] == "A\ufffdB\ufffd"
        assert by[5]["metadata"] == {}
        assert by[7]["mentions"] == []
        assert by[9]["content"] == "42"
        events = rd.events(RID)
        blobs = list(rd.event_blobs(RID))
        problems = "\n".join(rd.problems)
    assert len(events) == len(blobs) == len(synthetic_run([0] * 6)) - 1
    assert "messages (run_id run-faults-1, gseq 3): content is not valid UTF-8" in problems
    assert "runs (run_id run-faults-1): task is not valid UTF-8" in problems
    assert "messages (run_id run-faults-1, gseq 5): metadata is not valid JSON" in problems
    assert "messages (run_id run-faults-1, gseq 7): mentions is a JSON dict" in problems
    assert "runs (run_id run-faults-1): graph is not valid JSON" in problems
    assert "events (run_id run-faults-1): a row does not decode" in problems
    assert "gseq 9): content is not text" in problems


def test_every_command_survives_damaged_rows(tmp_path: Path) -> None:
    db = _damaged(tmp_path)
    for args in (
        ("runs", "--db", str(db)),
        ("runs", "--json", "--db", str(db)),
        ("show", RID, "--db", str(db)),
        ("show", RID, "--json", "--db", str(db)),
        ("export", RID, "-o", str(tmp_path / "x.cgx"), "--db", str(db)),
        ("view", RID, "--export", str(tmp_path / "site"), "--db", str(db)),
    ):
        code, _, err = _cli(*args)
        assert code == 0, (args, err)
        if args[0] != "view":
            assert "warning: damaged row" in err, args
    # What was exported imports (the undecodable event is left out, nothing else).
    code, _out, err = _cli("import", str(tmp_path / "x.cgx"), "--db", str(tmp_path / "y.db"))
    assert code == 0, err


def _flip_pages(db: Path, first: int, count: int) -> None:
    with open(db, "r+b") as f:
        page = 4096
        f.seek(page * first)
        f.write(bytes((i * 37 + 11) % 256 for i in range(page * count)))


@pytest.mark.parametrize("where", ["most pages", "two pages mid-file"])
def test_damaged_pages_give_one_clear_error(tmp_path: Path, where: str) -> None:
    db = tmp_path / "pages.db"
    record(db, synthetic_run([{"pad": "x" * 300, "i": i} for i in range(300)]))
    pages = db.stat().st_size // 4096
    assert pages > 8
    if where == "most pages":
        _flip_pages(db, 2, pages - 3)
    else:
        _flip_pages(db, pages // 2, 2)
    with pytest.raises(StoreCorruptError, match=r"\.recover") as got:  # noqa: PT012
        with open_reader(db) as rd:
            rd.messages(RID)
            list(rd.event_blobs(RID))
    assert "\n" not in str(got.value)
    for args in (
        ("runs", "--db", str(db)),
        ("show", RID, "--db", str(db)),
        ("show", RID, "--json", "--db", str(db)),
        ("export", RID, "-o", str(tmp_path / "x.cgx"), "--db", str(db)),
        ("view", RID, "--export", str(tmp_path / "site"), "--db", str(db)),
    ):
        r = CliRunner().invoke(app, list(args))
        # Either the damage is out of the way of this command, or one error line.
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
        if r.exit_code != 0:
            assert r.exit_code == EXIT_BAD_INPUT
            assert ".recover" in r.stderr, (args, r.stderr)
            assert "Traceback" not in r.stderr


def test_the_viewer_answers_a_damaged_page_with_the_recovery_recipe(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from coral_graph.viewer.query import RunReader
    from coral_graph.viewer.web import create_app

    db = tmp_path / "pages.db"
    record(db, synthetic_run([{"pad": "x" * 300, "i": i} for i in range(300)]))
    reader = RunReader(db)
    _flip_pages(db, 2, db.stat().st_size // 4096 - 3)
    answers = []
    with TestClient(create_app(reader), base_url="http://127.0.0.1:8000") as c:
        for url in ("/api/runs", f"/api/runs/{RID}", f"/api/runs/{RID}/messages?limit=500"):
            r = c.get(url)
            answers.append(r.status_code)
            if r.status_code != 200:
                assert r.status_code == 500
                assert ".recover" in r.json()["error"]
    assert 500 in answers


# -- exports never replace what coral-graph did not write ----------------------------


def _script_data(path: Path) -> str:
    """The JSON inside one ``data/*.js`` file of a static export."""
    text = path.read_text("utf-8")
    _, _, rest = text.partition("] = ")
    assert rest.endswith(";\n"), text[:80]
    return rest[:-2]


def test_view_export_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    from coral_graph.viewer.query import RunReader
    from coral_graph.viewer.web import export_run

    db = tmp_path / "c.db"
    record(db, synthetic_run([{"a": 1}] * 3))
    reader = RunReader(db)
    site = tmp_path / "site"
    (site / "static").mkdir(parents=True)
    mine = {"static/app.css": "user's own", "data/messages/00000.js": "[]", "notes.txt": "keep"}
    for rel, text in mine.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    with pytest.raises(ExportFolderError, match="not empty"):
        export_run(reader, RID, site)
    with pytest.raises(ExportFolderError, match="did not write") as got:
        export_run(reader, RID, site, force=True)
    assert "data/messages/00000.js" in str(got.value)
    for rel, text in mine.items():
        assert (site / rel).read_text() == text  # untouched
    # Through the CLI: one line, exit 1.
    code, _, err = _cli("view", RID, "--export", str(site), "--force", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "did not write" in err


def test_view_export_force_replaces_only_its_own_files(tmp_path: Path) -> None:
    from coral_graph.viewer.query import RunReader
    from coral_graph.viewer.web import export_run
    from coral_graph.viewer.web._export import MANIFEST

    db = tmp_path / "c.db"
    record(db, synthetic_run([{"a": 1}] * 3))
    reader = RunReader(db)
    site = tmp_path / "site"
    export_run(reader, RID, site)
    manifest = json.loads((site / MANIFEST).read_text())
    assert "index.html" in manifest["files"]
    assert "data/run.js" in manifest["files"]
    # Files the user added meanwhile, next to and inside the export's folders.
    (site / "README.txt").write_text("mine")
    (site / "static" / "extra.css").write_text("mine too")
    stale = site / "data" / "messages" / "00009.js"
    stale.write_text("[]")
    manifest["files"].append("data/messages/00009.js")  # as if an older, longer export
    (site / MANIFEST).write_text(json.dumps(manifest))
    code, _, err = _cli("view", RID, "--export", str(site), "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "--force" in err
    code, _out, err = _cli("view", RID, "--export", str(site), "--force", "--db", str(db))
    assert code == 0, err
    assert (site / "README.txt").read_text() == "mine"
    assert (site / "static" / "extra.css").read_text() == "mine too"
    assert not stale.exists()
    assert json.loads(_script_data(site / "data" / "run.js"))["run_id"] == RID
    # A link where the export's folder would be is refused.
    other = tmp_path / "elsewhere"
    other.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "x").write_text("x")
    os.symlink(other, linked / "static")
    with pytest.raises(ExportFolderError):
        export_run(reader, RID, linked, force=True)
    assert list(other.iterdir()) == []


def test_export_refuses_to_replace_a_file_without_force(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    record(db, synthetic_run([{"a": 1}]))
    out = tmp_path / "run.cgx"
    out.write_text("precious")
    partial = tmp_path / "run.cgx.partial"
    partial.write_text("also precious")
    code, _, err = _cli("export", RID, "-o", str(out), "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "--force" in err
    assert out.read_text() == "precious"
    code, _, err = _cli("export", RID, "-o", str(out), "--force", "--db", str(db))
    assert code == 0, err
    assert out.read_bytes()[:1] != b"p"
    assert partial.read_text() == "also precious"
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("c.db"))
    assert left == ["run.cgx", "run.cgx.partial"]
