"""The CLI as a new user meets it: failures in plain sight, readable help, safe text,
whole answers, listings for scripts. In-process with typer's runner, and as real
subprocesses where the terminal or a pipe matters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from openai_stub import OpenAIStub, error
from typer.main import get_command
from typer.testing import CliRunner

from coral_graph.cli import EXIT_BAD_INPUT, EXIT_NO_ANSWER, EXIT_OK, app

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "coral-graph"
VOTING = ROOT / "configs" / "voting.yaml"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORAL_DB", str(tmp_path / "runs.db"))
    return tmp_path


# -- help and version ------------------------------------------------------------------


def _commands() -> list[str]:
    commands: dict[str, Any] = getattr(get_command(app), "commands", {})
    assert "run" in commands
    return [name for name, cmd in commands.items() if not cmd.hidden]


def test_version() -> None:
    import coral_graph

    code, out, _ = invoke("--version")
    assert code == EXIT_OK
    assert out.strip() == f"coral-graph {coral_graph.__version__}"


@pytest.mark.parametrize("name", _commands())
def test_help_shows_readable_types(name: str) -> None:
    code, out, _ = invoke(name, "--help", env={"COLUMNS": "200"})
    assert code == EXIT_OK
    # Typer's own labels are Python annotations: <bool>, <str>, <list[Path]>, {graph}.
    assert not re.search(r"<[a-zA-Z_.\[\]|]+>", out), out
    assert "{" not in out.split("\n\n")[0] + out.splitlines()[1], out


def test_bench_help_lists_its_options() -> None:
    _, out, _ = invoke("bench", "--help", env={"COLUMNS": "200"})
    for option in ("--repeat", "--only", "--quick", "--json", "--store", "--tokens"):
        assert re.search(rf"│ {option}\b", out), option


def test_top_level_help_documents_the_exit_codes() -> None:
    _, out, _ = invoke("--help", env={"COLUMNS": "200"})
    for code in ("0 answered", "1 bad input", "2 no answer", "3 the store failed", "130"):
        assert code in out


# -- failures in plain sight -------------------------------------------------------------


def test_every_llm_call_refused_names_the_cause_everywhere(
    project: Path, openai_stub: OpenAIStub
) -> None:
    """The voting config on a server that answers 401 to every call: the stop reason
    is ``error`` and says why, the counts show each failed call and turn, and the
    stored run says the same in ``runs`` and ``show``."""
    openai_stub.script("m401", [error(401, "Incorrect API key provided: sk-no")] * 10)
    args = ["--model", "openai/m401", "--set", f"defaults.api_base={openai_stub.base_url}"]
    code, out, err = invoke("run", str(VOTING), *args, "--json")
    assert code == EXIT_NO_ANSWER, err
    data = json.loads(out)
    assert data["stop_reason"] == "error"
    assert data["error"].startswith("all 3 LLM calls failed: openai/m401: ")
    assert "Incorrect API key provided" in data["error"]
    assert data["failures"] == {"llm_calls": 3, "tool_calls": 0, "turns": 3}
    for voter in ("voter-a", "voter-b", "voter-c"):
        assert (data["usage"][voter]["llm_errors"], data["usage"][voter]["errors"]) == (1, 1)
    run_id = data["run_id"]

    code, out, _ = invoke("run", str(VOTING), *args)
    assert code == EXIT_NO_ANSWER
    lines = out.splitlines()
    assert lines[0] == "no answer (error)"
    assert lines[1].startswith("error: all 3 LLM calls failed: openai/m401: ")
    assert lines[2] == (
        "failed: 3 LLM calls (voter-a 1, voter-b 1, voter-c 1), "
        "3 turns (voter-a 1, voter-b 1, voter-c 1)"
    )

    _, out, _ = invoke("show", run_id, "--json")
    shown = json.loads(out)
    assert shown["run"]["stop_reason"] == "error"
    assert shown["run"]["error"] == data["error"]
    assert sum(u["llm_errors"] for u in shown["usage"].values()) == 3
    assert len(shown["llm_errors"]) == 3
    _, out, _ = invoke("show", run_id)
    assert "all 3 LLM calls failed" in out
    assert "failed: 3 LLM calls (voter-a 1, voter-b 1, voter-c 1)" in out
    assert out.count("LLM call failed: openai/m401") == 3


def test_a_missing_key_is_refused_before_the_first_message(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, err = invoke("run", str(VOTING), "--model", "openai/gpt-4o-mini")
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: Missing credentials for openai (set OPENAI_API_KEY)")
    assert out == ""
    code, _, err = invoke("run", str(VOTING), "--model", "gpt-unheard-of")
    assert code == EXIT_BAD_INPUT
    assert 'model "gpt-unheard-of": litellm does not know its provider' in err
    assert "openai/gpt-unheard-of" in err
    code, out, _ = invoke("runs", "--json")
    assert json.loads(out) == []  # refused before anything ran: nothing stored


def test_the_python_api_refuses_a_missing_key_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import coral_graph as cg
    from coral_graph.llm import LLMAuthenticationError

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    graph = cg.AgentGraph()
    graph.add_agent("a", cg.LLMAgent("anthropic/claude-3-haiku-20240307"))
    with pytest.raises(LLMAuthenticationError, match=r"set ANTHROPIC_API_KEY"):
        cg.run(graph, "hi", entry=["a"])


def test_subprocess_run_without_a_key(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [str(CLI), "run", str(VOTING), "--model", "openai/gpt-4o-mini"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.splitlines() == [
        "error: Missing credentials for openai (set OPENAI_API_KEY); model openai/gpt-4o-mini"
    ]


# -- helpers -----------------------------------------------------------------------------

ECHO_PY = textwrap.dedent("""
    async def echo(ctx, message):
        await ctx.send_message(message.thread_id, message.content, ["user"])
""")
