"""LLM agents use MCP tool servers: a scripted model calls a stdio server written
with the official SDK (tests/mcp_clients/tool_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

import coral_graph as cg
from coral_graph.config import load_graph
from coral_graph.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parent / "mcp_clients" / "tool_server.py"


def solver(model: ScriptedModel, **kwargs: object) -> cg.AgentGraph:
    g = cg.AgentGraph("tools", entry=["solver"])
    g.add_agent(
        "solver",
        cg.LLMAgent(
            client=model, mode="tools", tools=[{"command": ["python", str(SERVER)]}], **kwargs
        ),
    )
    return g


async def test_a_scripted_model_calls_a_stdio_mcp_tool_server() -> None:
    model = ScriptedModel(
        [
            call("add", a=2, b=3),
            call("explode"),
            call("send_message", content="2 + 3 = 5", mentions=["user"]),
        ]
    )
    with anyio.fail_after(60):
        async with cg.open_runtime(solver(model)) as rt:
            result = await rt.run("2 + 3?")
    assert result.stop_reason == "answer", result.error
    assert result.answer == "2 + 3 = 5"
    # The MCP tools were offered beside the seven operations ...
    offered = [t["function"]["name"] for t in model.requests[0].tools or []]
    assert {"send_message", "wait_for_mentions", "add", "explode"} <= set(offered)
    # ... and each result went back to the model: the sum, then the server's error.
    tool_msgs = [m for m in model.requests[2].messages if m.get("role") == "tool"]
    assert tool_msgs[0]["content"] == "5"
    err = json.loads(tool_msgs[1]["content"])
    assert (err["ok"], err["message"]) == (False, "boom: the reactor is offline")
    calls = [e for e in result.events if isinstance(e, cg.ToolCalled)]
    assert [(e.tool, e.ok) for e in calls] == [
        ("add", True),
        ("explode", False),
        ("send_message", True),
    ]
    assert calls[0].arguments == {"a": 2, "b": 3}
    assert calls[0].result == "5"


async def test_max_tool_calls_caps_the_mcp_calls_of_a_run() -> None:
    model = ScriptedModel(
        [
            call("add", a=1, b=1),
            call("add", a=2, b=2),
            call("send_message", content="done", mentions=["user"]),
        ]
    )
    with anyio.fail_after(60):
        async with cg.open_runtime(solver(model, max_tool_calls=1)) as rt:
            result = await rt.run("add things")
    assert result.stop_reason == "answer", result.error
    calls = [e for e in result.events if isinstance(e, cg.ToolCalled) and e.tool == "add"]
    assert [e.ok for e in calls] == [True, False]
    assert "max_tool_calls (1) reached" in calls[1].result


async def test_a_server_that_cannot_start_is_logged_and_the_agent_goes_on() -> None:
    model = ScriptedModel([call("send_message", content="no tools today", mentions=["user"])])
    g = cg.AgentGraph("tools", entry=["solver"])
    g.add_agent(
        "solver",
        cg.LLMAgent(client=model, mode="tools", tools=[{"command": ["/no/such/server"]}]),
    )
    with anyio.fail_after(60):
        async with cg.open_runtime(g) as rt:
            result = await rt.run("hi")
    assert result.answer == "no tools today"
    logs = [e for e in result.events if isinstance(e, cg.AgentLogged)]
    assert len(logs) == 1
    assert "MCP tool server `/no/such/server` unavailable" in logs[0].text


def test_tools_in_yaml(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        "agents:\n"
        "  solver:\n"
        "    mode: tools\n"
        f"    tools: [{{command: [python, {SERVER}]}}, {{url: 'http://127.0.0.1:9/mcp'}}]\n"
        "    max_tool_calls: 4\n"
    )
    lg = load_graph(tmp_path / "g.yaml")
    agent = lg.graph.spec("solver").agent
    assert isinstance(agent, cg.LLMAgent)
    assert agent.toolbox is not None
    assert agent.toolbox.max_tool_calls == 4
    assert [s.url for s in agent.toolbox.servers] == [None, "http://127.0.0.1:9/mcp"]
    (tmp_path / "bad.yaml").write_text(
        "agents:\n  solver:\n    tools: [{command: [x], url: 'http://127.0.0.1:9/mcp'}]\n"
    )
    with pytest.raises(cg.ConfigError, match="exactly one of them"):
        load_graph(tmp_path / "bad.yaml")
