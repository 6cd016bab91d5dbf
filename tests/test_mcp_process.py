"""Process agents: launched with Coral's environment, output in the transcript,
crashes under on_error, bad commands named; and the YAML kinds and CLI flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

import coral_graph as cg
from coral_graph.cli import app
from coral_graph.config import load_graph
from coral_graph.mcp import MCPHub, ProcessAgent

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = Path(__file__).resolve().parent / "mcp_clients"


@cg.agent
async def asker(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Asks the worker, answers with its reply."""
    if message.sender == "user":
        th = await ctx.create_thread("job", ["worker"])
        await ctx.send_message(th, message.content, ["worker"])
    else:
        await ctx.send_message("t-1", message.content, ["user"])


def graph(worker: ProcessAgent, on_error: str = "stop") -> cg.AgentGraph:
    g = cg.AgentGraph("proc", entry=["asker"])
    g.add_agent("asker", asker)
    g.add_agent("worker", worker, on_error=on_error)
    g.connect("asker", "worker", mutual=True)
    return g


async def run(g: cg.AgentGraph, task: str = "hello") -> cg.RunResult:
    with anyio.fail_after(60):
        async with cg.open_runtime(g) as rt:
            return await rt.run(task, entry=["asker"])


async def test_process_agent_gets_corals_environment_and_its_output_is_logged() -> None:
    worker = ProcessAgent(
        ["python", str(ROOT / "agents" / "mcp_echo" / "agent.py")],
        "echoes",
        system_prompt="be brief",
        hub=MCPHub(),
    )
    result = await run(graph(worker))
    assert result.stop_reason == "answer", result.error
    assert result.answer == "echo: hello"
    logs = [e for e in result.events if isinstance(e, cg.AgentLogged) and e.agent == "worker"]
    stdout = [e.text for e in logs if e.source == "stdout"]
    assert "worker connected; it can reach: asker" in stdout
    started = next(e for e in logs if e.data and e.data.get("event") == "started")
    assert started.data is not None
    assert isinstance(started.data["pid"], int)
    env = worker.environment(
        type("E", (), {"url": "U", "sse_url": "S", "name": "worker", "run_id": "R"})()  # type: ignore[arg-type]
    )
    assert (env["CORAL_CONNECTION_URL"], env["CORAL_SSE_URL"]) == ("U", "S")
    assert (env["CORAL_AGENT_ID"], env["CORAL_SESSION_ID"]) == ("worker", "R")
    assert env["CORAL_PROMPT_SYSTEM"] == "be brief"
    assert worker.pid is None  # stopped with the run


async def test_a_crashed_process_agent_is_restarted(tmp_path: Path) -> None:
    worker = ProcessAgent(
        ["python", str(CLIENTS / "crashy.py")],
        env={"CRASH_MARKER": str(tmp_path / "crashed")},
        hub=MCPHub(),
    )
    result = await run(graph(worker, on_error="restart"))
    assert result.stop_reason == "answer", result.error
    assert result.answer == "recovered: hello"
    errors = [e for e in result.events if isinstance(e, cg.AgentErrored)]
    assert [(e.agent, e.action, e.error_type) for e in errors] == [
        ("worker", "restart", "ProcessAgentError")
    ]
    assert "exited with code 3" in errors[0].error
    stderr = [
        e.text for e in result.events if isinstance(e, cg.AgentLogged) and e.source == "stderr"
    ]
    assert "crashing on purpose" in stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/no/such/program", "--flag"], "cannot start its command `/no/such/program --flag`"),
        ([sys.executable, "-c", "raise SystemExit(7)"], "exited with code 7 before it connected"),
        ([sys.executable, "-c", "pass"], "exited with code 0 before it connected"),
    ],
)
async def test_a_command_that_cannot_run_is_an_error_naming_agent_and_command(
    command: list[str], expected: str
) -> None:
    result = await run(graph(ProcessAgent(command, hub=MCPHub())))
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "agent worker" in result.error
    assert expected in result.error


# -- YAML and the CLI --------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    (tmp_path / "bits.py").write_text(
        "import coral_graph as cg\n\n"
        "@cg.agent\n"
        "async def asker(ctx, message):\n"
        "    if message.sender == 'user':\n"
        "        th = await ctx.create_thread('job', ['worker'])\n"
        "        await ctx.send_message(th, message.content, ['worker'])\n"
        "    else:\n"
        "        await ctx.send_message('t-1', message.content, ['user'])\n"
    )
    return path


GRAPH = """
agents:
  asker: {kind: python, python: "bits.py:asker"}
  worker: %s
edges: [asker <-> worker]
task: hi there
"""


def test_yaml_process_agent_runs_from_the_registry(tmp_path: Path) -> None:
    path = write(tmp_path, GRAPH % "{use: mcp_echo, connect_timeout_s: 60}")
    lg = load_graph(path)
    spec = lg.graph.spec("worker")
    assert (spec.kind, spec.on_error) == ("process", "stop")
    assert isinstance(spec.agent, ProcessAgent)
    assert spec.agent.cwd == ROOT / "agents" / "mcp_echo"
    result = lg.run()
    assert result.stop_reason == "answer", result.error
    assert result.answer == "echo: hi there"


@pytest.mark.parametrize(
    ("worker", "message"),
    [
        ("{kind: process}", "a process agent needs command:"),
        ("{kind: external, command: [x]}", '"command" applies to process agents'),
        ("{kind: python, python: 'bits.py:asker', connect_timeout_s: 3}",
         '"connect_timeout_s" applies to process or external agents'),
        ("{kind: external, connect_timeout_s: -1}", "connect_timeout_s: must be > 0"),
    ],
)  # fmt: skip
def test_yaml_mcp_kinds_are_checked(tmp_path: Path, worker: str, message: str) -> None:
    path = write(tmp_path, GRAPH % worker)
    with pytest.raises(cg.ConfigError, match="worker") as info:
        load_graph(path)
    assert message in str(info.value)


def test_cli_prints_the_external_url_and_names_an_agent_that_never_connects(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, GRAPH % "{kind: external, connect_timeout_s: 0.5}")
    result = CliRunner().invoke(app, ["run", str(path), "--no-store", "--mcp-port", "0"])
    assert result.exit_code == 2, result.output
    assert "agent worker (external) connects at http://127.0.0.1:" in result.stderr
    assert "/mcp/v1/" in result.stderr
    assert "worker did not connect" in result.stdout


def test_cli_refuses_a_remote_mcp_host_without_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, GRAPH % "{kind: external}")
    result = CliRunner().invoke(app, ["run", str(path), "--no-store", "--mcp-host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "--mcp-allow-remote" in result.stderr


async def test_a_process_that_ignores_sigterm_is_killed() -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(120)"
    )
    worker = ProcessAgent(
        ["python", "-c", stubborn], hub=MCPHub(), connect_timeout_s=0.5, stop_grace_s=0.2
    )
    result = await run(graph(worker))
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "did not connect" in result.error
    started = next(
        e for e in result.events
        if isinstance(e, cg.AgentLogged) and e.data and e.data.get("event") == "started"
    )  # fmt: skip
    assert started.data is not None
    pid = started.data["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # SIGKILL after the grace period; reaped
