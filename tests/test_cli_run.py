"""The coral-graph CLI: run, validate, schema, graph, agents — in-process with
CliRunner, and as a real subprocess (including Ctrl-C)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from interrupt import INHERITED_SIGINT, interrupt
from typer.testing import CliRunner

from coral_graph.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK, app
from coral_graph.config import graph_schema
from coral_graph.testing import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "coral-graph"

AGENTS_PY = '''
import os, pathlib
import anyio


async def echo(ctx, message):
    await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])


async def quiet(ctx, message):
    """Never answers."""


async def sleepy(ctx, message):
    pathlib.Path(os.environ["CORAL_TEST_MARK"]).write_text("started")
    await anyio.sleep(60)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "bots.py").write_text(AGENTS_PY)
    (tmp_path / "echo.yaml").write_text(
        textwrap.dedent("""
        name: echo
        agents:
          echo: {python: "bots.py:echo"}
          quiet: {python: "bots.py:quiet"}
        edges: [echo -> quiet]
        task: default task
    """)
    )
    (tmp_path / "sleepy.yaml").write_text(
        "agents:\n  sleepy: {python: 'bots.py:sleepy'}\ntask: wait\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORAL_DB", str(tmp_path / "runs.db"))
    return tmp_path


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def stored_stop_reason(db: Path, run_id: str) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute("select stop_reason from runs where run_id = ?", (run_id,)).fetchone()
    assert row is not None, f"{run_id} is not in {db}"
    return str(row[0])


def test_run_prints_the_answer_and_how_to_open_the_run(project: Path) -> None:
    code, out, err = invoke("run", "echo.yaml", "--task", "hi")
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0] == "echo: hi"
    assert lines[1].startswith("stop: answer · 2 messages · 0 tokens")  # the task and the answer
    run_id = lines[2].split()[1]
    assert f"coral-graph show {run_id}" in lines[2]
    assert stored_stop_reason(project / "runs.db", run_id) == "answer"


def test_run_json_task_file_and_default_task(project: Path) -> None:
    (project / "task.txt").write_text("from a file")
    code, out, _ = invoke("run", "echo.yaml", "--task-file", "task.txt", "--json", "--db", "x.db")
    assert code == EXIT_OK
    data = json.loads(out)
    assert (data["graph"], data["stop_reason"], data["answer"]) == (
        "echo",
        "answer",
        "echo: from a file",
    )
    assert data["db"] == "x.db"
    assert Path("x.db").exists()
    code, out, _ = invoke("run", "echo.yaml", "--json", "--no-store")
    assert json.loads(out)["answer"] == "echo: default task"
    assert json.loads(out)["db"] is None


def test_run_set_overrides_and_exit_code_2(project: Path) -> None:
    code, out, _ = invoke(
        "run", "echo.yaml", "--set", "entry=quiet", "--set", "answer_by=[quiet]", "--json"
    )
    assert code == EXIT_NO_ANSWER
    assert json.loads(out)["stop_reason"] == "idle"
    code, out, _ = invoke("run", "echo.yaml", "--set", "budgets.max_messages=0", "--json")
    assert code == EXIT_NO_ANSWER
    assert json.loads(out)["stop_reason"] == "budget:messages"


def test_run_bad_input_exits_1_without_a_traceback(project: Path) -> None:
    (project / "bad.yaml").write_text("agents:\n  a: {use: solver, temprature: 1}\nentry: b\n")
    code, out, err = invoke("run", "bad.yaml", "--task", "x")
    assert code == EXIT_BAD_INPUT
    assert err.splitlines() == [
        'bad.yaml:2:20: agents.a.temprature: unknown key "temprature" '
        '— did you mean "temperature"?',
        'bad.yaml:3:8: entry: unknown agent "b"',
    ]
    assert "Traceback" not in out + err
    code, _, err = invoke("run", "echo.yaml", "--task", "a", "--task-file", "t.txt")
    assert code == EXIT_BAD_INPUT
    assert "not both" in err
    code, _, err = invoke("run", "missing.yaml")
    assert code == EXIT_BAD_INPUT
    assert "missing.yaml: no such file" in err
    code, _, err = invoke("run", "echo.yaml", "--set", "task=", "--no-store")
    assert code == EXIT_BAD_INPUT
    assert "no task" in err


@pytest.fixture
def scripted() -> Iterator[ScriptedModel]:
    model = ScriptedModel({"planner": ["@calculator 2 ** 10", "FINAL: 1024"]}, name="cli-quick")
    yield model
    model.close()


def test_run_a_config_with_llm_agents_on_a_scripted_model(
    project: Path, scripted: ScriptedModel
) -> None:
    code, out, err = invoke(
        "run", str(ROOT / "configs/quickstart.yaml"), "--model", "scripted/cli-quick", "--json"
    )
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["answer"] == "1024"
    assert data["usage"]["planner"]["llm_calls"] == 2
    assert data["usage"]["calculator"]["messages_sent"] == 1


def test_validate(project: Path) -> None:
    code, out, _ = invoke("validate", *(str(p) for p in sorted((ROOT / "configs").glob("*.yaml"))))
    assert code == EXIT_OK
    assert len(out.splitlines()) >= 4
    assert all(line.startswith("ok: ") for line in out.splitlines())
    (project / "bad.yaml").write_text("agents:\n  a: {kind: lm}\n")
    code, out, err = invoke("validate", "echo.yaml", "bad.yaml", "missing.yaml")
    assert code == EXIT_BAD_INPUT
    assert out.startswith("ok: echo.yaml: 2 agents, 1 edges, entry echo")
    assert err.splitlines() == [
        'bad.yaml:2:13: agents.a.kind: expected one of "llm", "python", "human", '
        '"process", "external", got a string ("lm") — did you mean "llm"?',
        "missing.yaml: no such file",
        "2 files have problems",
    ]


def test_schema() -> None:
    code, out, _ = invoke("schema")
    assert code == EXIT_OK
    assert json.loads(out) == graph_schema()
    code, out, _ = invoke("schema", "--agent")
    assert json.loads(out)["title"] == "coral-graph agent definition"


def test_graph_drawings(project: Path) -> None:
    code, out, _ = invoke("graph", "echo.yaml")
    assert code == EXIT_OK
    assert out.splitlines()[0].startswith("user")
    assert "echo" in out
    assert "quiet" in out
    code, out, _ = invoke("graph", "echo.yaml", "--format", "mermaid")
    assert out.splitlines() == [
        "flowchart LR",
        "  user((user))",
        '  echo["echo<br/><i>python</i>"]',
        '  quiet["quiet<br/><i>python</i>"]',
        "  user --> echo",
        "  echo --> quiet",
        "  echo -.-> user",
    ]
    code, out, _ = invoke("graph", "echo.yaml", "--format", "dot")
    assert '"echo" -> "quiet";' in out
    assert out.startswith('digraph "echo" {')
    code, _, _err = invoke("graph", "echo.yaml", "--format", "png")
    assert code == EXIT_BAD_INPUT


def test_agents_lists_and_shows_the_registry(project: Path) -> None:
    code, out, _ = invoke("agents")
    assert code == EXIT_OK
    for name in (
        "planner",
        "researcher",
        "solver",
        "critic",
        "summariser",
        "answerer",
        "calculator",
    ):
        assert name in out
    code, out, _ = invoke("agents", "calculator")
    assert code == EXIT_OK
    assert "python: calculator.py:Calculator" in out
    code, _, err = invoke("agents", "planer")
    assert code == EXIT_BAD_INPUT
    assert 'did you mean "planner"' in err


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CORAL_DB": str(project / "runs.db"),
        "COLUMNS": "100",
        "CORAL_TEST_MARK": str(project / "mark"),
    }


def test_subprocess_run(project: Path) -> None:
    proc = subprocess.run(
        [str(CLI), "run", "echo.yaml", "--task", "from a process", "--json"],
        capture_output=True,
        text=True,
        env=_env(project),
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "echo: from a process"
    assert stored_stop_reason(project / "runs.db", data["run_id"]) == "answer"


@pytest.mark.parametrize("inherited_sigint", INHERITED_SIGINT)
def test_ctrl_c_cancels_the_run_and_exits_130(project: Path, inherited_sigint: str) -> None:
    code, out, err = interrupt(
        [str(CLI), "run", "sleepy.yaml", "--json"],
        (project / "mark").exists,  # the agent's turn has begun
        inherited_sigint=inherited_sigint,
        env=_env(project),
    )
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    data = json.loads(out)
    assert data["stop_reason"] == "cancelled"
    assert stored_stop_reason(project / "runs.db", data["run_id"]) == "cancelled"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_exit_codes_are_documented() -> None:
    import coral_graph.cli._app as app_module

    doc = app_module.__doc__ or ""
    for code in ("0", "1", "2", "130"):
        assert f"* {code} " in doc
