"""An agent's log lines (``agent_logged`` events: a process's output, MCP endpoints,
blocked-loop notices) in ``coral-graph show`` and in the live view of ``run``: in
time order among the messages, safe for the terminal, hidden with ``--no-logs``."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coral_graph.cli import EXIT_OK, app

LOG_PY = textwrap.dedent("""
    async def talker(ctx, message):
        ctx.log("before the answer \\x1b]0;pwned\\x07 \\x1b[2J", source="stdout")
        await ctx.send_message(message.thread_id, "the answer", ["user"])
        ctx.log("after the answer", source="mcp", data={"event": "endpoint"})

    async def quiet(ctx, message):
        ctx.log("quiet was here")
""")

LOG_YAML = (
    "name: logs\nagents:\n  talker: {python: 'bots.py:talker'}\n"
    "  quiet: {python: 'bots.py:quiet'}\nentry: [quiet, talker]\nanswer_by: [talker]\n"
    "task: hello\n"
)

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real run, recorded in a SQLite file, whose agents log lines."""
    d = tmp_path_factory.mktemp("logs")
    (d / "bots.py").write_text(LOG_PY)
    (d / "g.yaml").write_text(LOG_YAML)
    db = str(d / "runs.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        code, out, err = invoke("run", "g.yaml", "--db", db, "--json")
    assert code == EXIT_OK, err
    return json.loads(out)["run_id"], db


def _body(out: str) -> list[str]:
    """The transcript lines, without the per-agent totals."""
    return out.split("\nper agent\n")[0].splitlines()


def test_show_prints_log_lines_in_time_order_and_safe(logged_run: tuple[str, str]) -> None:
    rid, db = logged_run
    code, out, _ = invoke("show", rid, "--db", db, "--plain")
    assert code == EXIT_OK
    body = _body(out)
    logs = [line for line in body if line.lstrip().startswith("▸ ")]
    assert "  ▸ quiet [agent] quiet was here" in logs
    assert "  ▸ talker [mcp] after the answer" in logs
    before = next(line for line in logs if "before the answer" in line)
    assert before.startswith("  ▸ talker [stdout] before the answer ")
    # The escape sequences are shown, not sent to the terminal.
    assert "\\x1b]0;pwned\\x07" in before
    assert "\\x1b[2J" in before
    assert not RAW_CONTROL.search(out), repr(out)
    # Time order: the answer's header sits between the two lines talker logged.
    answer = next(i for i, line in enumerate(body) if "talker → @user" in line)
    assert body.index(before) < answer < body.index("  ▸ talker [mcp] after the answer")


def test_show_on_a_terminal_dims_log_lines(
    logged_run: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rid, db = logged_run
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("coral_graph.cli._store._isatty", lambda: True)
    code, out, _ = invoke("show", rid, "--db", db, "--no-pager")
    assert code == EXIT_OK
    assert "\x1b[2m  ▸ quiet [agent] quiet was here\x1b[0m" in out
    # Only our own colour codes reach the terminal: the log line's escapes are shown.
    bare = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not RAW_CONTROL.search(bare), repr(bare)
    assert "\\x1b]0;pwned\\x07" in bare


def test_no_logs_hides_them_everywhere(logged_run: tuple[str, str]) -> None:
    rid, db = logged_run
    _, shown, _ = invoke("show", rid, "--db", db, "--plain")
    code, out, _ = invoke("show", rid, "--db", db, "--plain", "--no-logs")
    assert code == EXIT_OK
    assert "▸" not in "\n".join(_body(out))
    assert "the answer" in out
    # Nothing else changed: the same lines, less the log lines.
    assert _body(out) == [line for line in _body(shown) if not line.startswith("  ▸ ")]
    _, js, _ = invoke("show", rid, "--db", db, "--json", "--no-logs")
    assert json.loads(js)["logs"] == []


def test_show_json_has_log_records(logged_run: tuple[str, str]) -> None:
    rid, db = logged_run
    code, out, _ = invoke("show", rid, "--db", db, "--json")
    assert code == EXIT_OK
    assert not RAW_CONTROL.search(out)  # JSON escapes, read back unchanged
    logs = json.loads(out)["logs"]
    assert {log["kind"] for log in logs} == {"log"}
    by_text = {log["text"]: log for log in logs}
    assert by_text["before the answer \x1b]0;pwned\x07 \x1b[2J"]["source"] == "stdout"
    assert by_text["after the answer"]["data"] == {"event": "endpoint"}
    assert by_text["quiet was here"]["agent"] == "quiet"
    seqs = [log["seq"] for log in logs]
    assert seqs == sorted(seqs)
    assert len(seqs) == 3
    answer = json.loads(out)["messages"][-1]
    assert by_text["before the answer \x1b]0;pwned\x07 \x1b[2J"]["seq"] < answer["gseq"]
    assert by_text["after the answer"]["seq"] > answer["gseq"]


def test_show_filters_apply_to_log_lines(logged_run: tuple[str, str]) -> None:
    rid, db = logged_run
    _, out, _ = invoke("show", rid, "--db", db, "--plain", "--agent", "quiet")
    logs = [line for line in _body(out) if line.startswith("  ▸ ")]
    assert logs == ["  ▸ quiet [agent] quiet was here"]
    _, out, _ = invoke("show", rid, "--db", db, "--plain", "--grep", "AFTER the")
    logs = [line for line in _body(out) if line.startswith("  ▸ ")]
    assert logs == ["  ▸ talker [mcp] after the answer"]
    _, js, _ = invoke("show", rid, "--db", db, "--json", "--thread", "t-1")
    assert json.loads(js)["logs"] == []  # a log line belongs to no thread


def test_the_live_view_prints_mcp_lines_safely() -> None:
    """The live lines of `run`: the URL an external agent connects at (its MCP
    endpoint event) and blocked-loop notices; a process's own output is left to `show`."""
    import io

    from rich.console import Console

    from coral_graph._events import AgentLogged
    from coral_graph.cli._output import Progress

    url = "http://127.0.0.1:4321/mcp/v1/" + "s" * 200 + "/mcp"  # never cut short
    p = Progress()
    p.on_event(AgentLogged("run-x", 1, 0.0, "ext", "mcp", f"MCP endpoint: {url}", {"url": url}))
    p.on_event(AgentLogged("run-x", 2, 0.0, "proc", "stdout", "chatter", None))
    p.on_event(AgentLogged("run-x", 3, 0.0, "a", "watchdog", "blocked [x]\x1b[2J", None))
    buf = io.StringIO()
    p.flush_lines(Console(file=buf, force_terminal=True, width=400))
    out = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())
    assert f"▸ ext [mcp] MCP endpoint: {url}" in out
    assert "▸ a [watchdog] blocked [x]\\x1b[2J" in out
    assert "chatter" not in out
    assert not RAW_CONTROL.search(out), repr(out)


GATED_PY = textwrap.dedent("""
    import os, anyio

    async def gated(ctx, message):
        ctx.log("first line")  # (a message to the user would end the run: the answer)
        while not os.path.exists(os.environ["GATE"]):
            await anyio.sleep(0.02)
        ctx.log("second line \\x1b[2J")
        await ctx.send_message(message.thread_id, "done", ["user"])
""")


def test_show_follow_prints_log_lines_as_they_come(tmp_path: Path) -> None:
    """``show --follow`` on a run another process is writing: a line logged after the
    follower started is printed by the follow loop, safe, in its place."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from coral_graph.store import open_reader

    (tmp_path / "bots.py").write_text(GATED_PY)
    (tmp_path / "g.yaml").write_text("agents:\n  gated: {python: 'bots.py:gated'}\ntask: go\n")
    db, gate = tmp_path / "runs.db", tmp_path / "gate"
    env = {**os.environ, "GATE": str(gate)}
    cli = [sys.executable, "-c", "from coral_graph.cli import main; main()"]
    writer = subprocess.Popen(
        [*cli, "run", "g.yaml", "--db", str(db), "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    follower = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the run is in the store (it cannot end before the gate)
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            assert time.monotonic() < deadline, "the run never showed up in the store"
            time.sleep(0.05)
            try:
                with open_reader(db) as rd:
                    if rd.list_runs():
                        break
            except Exception:
                continue
        follower = subprocess.Popen(
            [*cli, "show", "last", "--follow", "--db", str(db), "--interval", "0.05"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert follower.stdout is not None
        head = follower.stdout.readline()  # its first screen is out: the rest is followed
        gate.touch()
        watchdog = threading.Timer(60, follower.kill)  # a hang fails, never blocks CI
        watchdog.start()
        try:
            out = head + follower.stdout.read()  # (communicate() would lose what readline buffered)
        finally:
            watchdog.cancel()
        _, err = follower.communicate(timeout=30)
        assert follower.returncode == EXIT_OK, err
        _, werr = writer.communicate(timeout=30)
        assert writer.returncode == EXIT_OK, werr
    finally:
        for p in (writer, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    body = _body(out)
    assert "  ▸ gated [agent] first line" in body
    assert "  ▸ gated [agent] second line \\x1b[2J" in body
    assert not RAW_CONTROL.search(out), repr(out)
    done = next(i for i, line in enumerate(body) if line.strip() == "done")
    assert body.index("  ▸ gated [agent] second line \\x1b[2J") < done
    assert body.count("  ▸ gated [agent] first line") == 1  # printed once, not again
