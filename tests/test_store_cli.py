"""The store's commands (runs, show, export, import, resume) and crash safety with a
real process killed by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from interrupt import interrupt
from typer.testing import CliRunner

import coral_graph as cg
from coral_graph.cli import EXIT_BAD_INPUT, app
from coral_graph.store import SQLiteStore, open_reader

RELAY_PY = """
import os
import anyio


async def relay(ctx, message):
    limit = int(os.environ.get("RELAY_LIMIT", "40"))
    other = "b" if ctx.name == "a" else "a"
    if message.sender == "user":
        th = await ctx.create_thread("relay", [other])
        await ctx.send_message(th, "1", [other])
        return
    delay = float(os.environ.get("RELAY_SLEEP", "0"))
    if delay:
        await anyio.sleep(delay)
    n = int(message.content)
    gate = os.environ.get("RELAY_GATE")
    if gate and n == int(os.environ["RELAY_GATE_AT"]):
        # a named pipe: blocks until the test opens it for writing and closes it
        await anyio.to_thread.run_sync(lambda: open(gate).read())
    if n >= limit and ctx.name == "a":
        await ctx.send_message("t-1", f"done {n}", ["user"], metadata={"model": "m", "tokens": 7})
    else:
        await ctx.send_message(message.thread_id, str(n + 1), [other])
"""

RELAY_YAML = """\
name: relay
agents:
  a: {kind: python, python: relay.py:relay}
  b: {kind: python, python: relay.py:relay}
edges: ["a <-> b"]
entry: [a]
"""

WRITER = """
import sys
import coral_graph as cg
from coral_graph.config import load_graph
from coral_graph.store import SQLiteStore

lg = load_graph(sys.argv[2])
store = SQLiteStore(sys.argv[1], graph_path=sys.argv[2], flush_interval=0.01)
cg.run(lg.graph, "go", store=store)
"""


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    (tmp_path / "relay.py").write_text(RELAY_PY)
    path = tmp_path / "relay.yaml"
    path.write_text(RELAY_YAML)
    return path


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _stored_run(db: Path, relay: Path) -> str:
    from coral_graph.config import load_graph

    with SQLiteStore(db, graph_path=relay) as store:
        return cg.run(load_graph(relay).graph, "go", store=store).run_id


def test_runs_and_show(tmp_path: Path, relay: Path) -> None:
    db = tmp_path / "c.db"
    rid = _stored_run(db, relay)
    code, out, _ = _invoke("runs", "--db", str(db))
    assert code == 0
    assert rid in out
    assert "answer" in out
    assert "relay" in out
    code, out, _ = _invoke("runs", "--db", str(db), "--json")
    listed = json.loads(out)[0]
    assert (listed["messages"], listed["messages_sent"]) == (42, 41)  # the task counted once
    code, out, _ = _invoke("show", rid, "--db", str(db), "--plain")
    assert code == 0
    assert "a → @b" in out
    assert "a → @user" in out
    assert "done 40" in out
    assert "m · 7 tokens" in out  # folded usage of the answer
    assert "per agent" in out
    assert "\x1b[" not in out
    code, out, _ = _invoke("show", "last", "--db", str(db), "--json")
    data = json.loads(out)
    assert data["run"]["run_id"] == rid
    assert len(data["messages"]) == 42
    assert data["usage"]["a"]["messages_sent"] == 21
    code, out, _ = _invoke("show", rid, "--db", str(db), "--json", "--thread", "t-1")
    assert [m["content"] for m in json.loads(out)["messages"]] == ["go", "done 40"]
    code, out, _ = _invoke("show", rid, "--db", str(db), "--json", "--grep", "DONE")
    assert len(json.loads(out)["messages"]) == 1
    code, out, _ = _invoke("show", rid, "--db", str(db), "--json", "--agent", "user")
    assert len(json.loads(out)["messages"]) == 2


def test_bad_input_exits_1_without_traceback(tmp_path: Path, relay: Path) -> None:
    db = tmp_path / "c.db"
    _stored_run(db, relay)
    notdb = tmp_path / "x.txt"
    notdb.write_text("nope")
    newer = tmp_path / "new.db"
    SQLiteStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    conn.close()
    corrupt = tmp_path / "bad.msgpack"
    corrupt.write_bytes(b"\x85\xa6format\xb2coral-graph-export")
    cases = [
        (("show", "run-nope", "--db", str(db)), "no run 'run-nope'"),
        (("runs", "--db", str(notdb)), "not a coral-graph store"),
        (("show", "x", "--db", str(tmp_path / "missing.db")), "no such file"),
        (("runs", "--db", str(newer)), "schema version 7"),
        (("import", str(corrupt), "--db", str(db)), "not a valid coral-graph export"),
        (("export", "nope", "--db", str(db)), "no run 'nope'"),
        (("resume", "nope", "--db", str(db)), "no run 'nope'"),
        (("resume", "last", "--db", str(db)), "already finished"),
    ]
    for args, message in cases:
        code, out, err = _invoke(*args)
        assert code == EXIT_BAD_INPUT, args
        assert message in err, (args, err)
        assert "Traceback" not in err + out


def test_export_import_cli(tmp_path: Path, relay: Path) -> None:
    db = tmp_path / "c.db"
    rid = _stored_run(db, relay)
    for fmt in ("msgpack", "jsonl"):
        out = tmp_path / f"r.{fmt}"
        code, _, err = _invoke("export", rid, "--format", fmt, "-o", str(out), "--db", str(db))
        assert code == 0, err
        other = tmp_path / f"{fmt}.db"
        code, stdout, err = _invoke("import", str(out), "--db", str(other))
        assert code == 0, err
        assert stdout.strip() == rid
        with open_reader(db) as a, open_reader(other) as b:
            assert a.events(rid) == b.events(rid)
    code, _, err = _invoke("export", rid, "--format", "xml", "--db", str(db))
    assert code == EXIT_BAD_INPUT
    assert "unknown format" in err


def _killed_mid_run(tmp_path: Path, relay: Path) -> Path:
    """A store whose last run a SIGKILL interrupted after at least 30 messages."""
    db = tmp_path / "crash.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "RELAY_LIMIT": "1000000", "RELAY_SLEEP": "0.002"}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(relay)], env=env)
    try:
        deadline = time.monotonic() + 30
        seen = 0
        while seen < 30:
            assert proc.poll() is None, "the writer process ended early"
            assert time.monotonic() < deadline, "no progress from the writer process"
            time.sleep(0.02)
            if db.exists():
                try:
                    with open_reader(db) as rd:
                        runs = rd.list_runs()
                        seen = runs[0]["messages"] if runs else 0
                except Exception:
                    seen = 0
        with open_reader(db) as rd:
            assert rd.run("last")["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return db


def test_sigkill_mid_run_then_resume(
    tmp_path: Path, relay: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _killed_mid_run(tmp_path, relay)
    with open_reader(db) as rd:
        row = rd.run("last")
        rid = row["run_id"]
        assert row["status"] == "interrupted"
        events = rd.events(rid)
        assert [e.seq for e in events] == list(range(1, row["last_seq"] + 1))
        assert len(rd.messages(rid)) >= 30
        assert rd._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The CLI as a real process reads the killed run.
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from coral_graph.cli import main; main()",
            "show",
            rid,
            "--db",
            str(db),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["status"] == "interrupted"
    # Resume it with the graph file stored in the run; it now stops 10 hops later.
    last = max(int(m["content"]) for m in json.loads(shown.stdout)["messages"][1:])
    monkeypatch.setenv("RELAY_LIMIT", str(last + 10))
    monkeypatch.setenv("RELAY_SLEEP", "0")
    code, out, err = _invoke("resume", rid, "--db", str(db))
    assert code == 0, err
    # The same result block as `run`: the answer, the stop line, where it is saved.
    lines = out.splitlines()
    assert lines[0].startswith("done ")
    assert int(lines[0].split()[1]) in (last + 10, last + 11)  # a answers on its turn
    assert lines[1].startswith("stop: answer · ")
    assert lines[2].startswith(f"run: {rid} saved in ")
    assert err == f"resumed {rid}\n"
    with open_reader(db) as rd:
        row = rd.run(rid)
        assert row["status"] == "finished"
        assert row["stop_reason"] == "answer"
        contents = [m["content"] for m in rd.messages(rid, "t-2")]
        # Every hop is there; a delivery in flight at the kill is delivered again (at
        # least once), which may repeat hops, never more than twice.
        numbers = [int(c) for c in contents]
        assert sorted(set(numbers)) == list(range(1, max(numbers) + 1))
        assert max(Counter(numbers).values()) <= 2
        seqs = [e.seq for e in rd.events(rid)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_show_follow_tails_a_run_written_by_another_process(tmp_path: Path, relay: Path) -> None:
    import threading

    db = tmp_path / "live.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The writer stops after message 10 until the follower has printed it: "live" is
    # a handshake, not a race between the two processes' speeds.
    env = {**os.environ, "RELAY_LIMIT": "30", "RELAY_GATE": str(gate), "RELAY_GATE_AT": "10"}
    writer = subprocess.Popen([sys.executable, str(script), str(db), str(relay)], env=env)
    follower: subprocess.Popen[str] | None = None
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            with open(gate, "w"):
                pass

    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the run to be in the store (it cannot end before the gate)
            assert writer.poll() is None, "the writer process ended before it was followed"
            assert time.monotonic() < deadline, "the run never showed up in the store"
            time.sleep(0.02)
            try:
                with open_reader(db) as rd:
                    if rd.list_runs():
                        break
            except Exception:
                continue
        follower = subprocess.Popen(
            [sys.executable, "-c", "from coral_graph.cli import main; main()", "show", "last",
             "--follow", "--db", str(db), "--interval", "0.05"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert follower.stdout is not None
        watchdog = threading.Timer(90, follower.kill)  # a hang fails, never blocks CI
        watchdog.start()
        lines: list[tuple[str, bool]] = []  # (line, was the writer still running)
        try:
            for line in follower.stdout:
                lines.append((line.rstrip("\n"), writer.poll() is None))
                if line.strip() == "10":
                    release()
        finally:
            watchdog.cancel()
        assert follower.wait(30) == 0, follower.stderr.read() if follower.stderr else ""
        assert writer.wait(30) == 0
    finally:
        if not released and writer.poll() is None:
            writer.kill()
        for p in (writer, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if follower is not None:
            for stream in (follower.stdout, follower.stderr):
                if stream is not None:
                    stream.close()
    text = [line for line, _ in lines]
    assert "\x1b[" not in "".join(text)  # not a TTY: plain output
    hops = [line for line in text if "→ @" in line]
    # Messages were printed while the other process was still writing them...
    live = [line for line, running in lines if running and "→ @" in line]
    assert live, "nothing was printed while the run was going"
    # ...and every one of them exactly once, in order, through the answer.
    assert len(hops) == 1 + 30 + 1  # the task, the relay, the answer
    numbers = [int(line) for line in text if line.strip().isdigit()]
    assert numbers == list(range(1, 31))
    assert any("done 30" in line for line in text)
    assert any("answer" in line for line in text[-12:])  # the totals at the end


def test_ctrl_c_stops_a_resumed_run_even_if_sigint_was_ignored(tmp_path: Path, relay: Path) -> None:
    """`coral-graph resume` runs agents as `run` does, and Ctrl-C stops it as it stops
    `run` (exit 130), also when its parent ignored SIGINT (a command started in the
    background by a shell without job control), where Python's own handling is off."""
    db = _killed_mid_run(tmp_path, relay)
    with open_reader(db) as rd:
        rid = rd.run("last")["run_id"]
        before = rd.run("last")["messages"]
    cmd = [sys.executable, "-c", "from coral_graph.cli import main; main()"]
    env = {**os.environ, "RELAY_LIMIT": "1000000", "RELAY_SLEEP": "0.002"}

    def progressing() -> bool:
        with open_reader(db) as rd:
            return bool(rd.run(rid)["messages"] > before + 5)

    code, _out, err = interrupt(
        [*cmd, "resume", rid, "--db", str(db)], progressing, inherited_sigint="ignored", env=env
    )
    assert code == 130, err
    with open_reader(db) as rd:
        assert rd.run(rid)["stop_reason"] == "cancelled"
