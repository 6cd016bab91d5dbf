"""External agents over MCP: the official `mcp` client, in separate processes, over
real HTTP on 127.0.0.1 (streamable HTTP and SSE)."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import coral_graph as cg
from coral_graph.mcp import ExternalAgent, MCPHub

pytestmark = pytest.mark.anyio

CLIENTS = Path(__file__).resolve().parent / "mcp_clients"


@cg.agent
async def planner(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Hands the task to the outsider and answers with what comes back."""
    if message.sender == "user":
        th = await ctx.create_thread("ask", ["outsider"])
        await ctx.send_message(th, message.content, ["outsider"])
    else:
        await ctx.send_message("t-1", f"answer: {message.content}", ["user"])


@cg.agent
async def calc(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Multiplies two numbers: 'a * b'."""
    a, b = (int(x) for x in re.findall(r"\d+", message.content)[:2])
    await ctx.send_message(message.thread_id, str(a * b), [message.sender])


def relay_graph(outsider: ExternalAgent) -> cg.AgentGraph:
    g = cg.AgentGraph("relay", entry=["planner"])
    g.add_agent("planner", planner)
    g.add_agent("outsider", outsider, on_error="stop")
    g.add_agent("calc", calc)
    g.connect("planner", "outsider", mutual=True)
    g.connect("outsider", "calc", mutual=True)
    return g


class Endpoints:
    """Collects the endpoint URLs the run emits."""

    def __init__(self) -> None:
        self.urls: dict[str, dict[str, Any]] = {}
        self.ready = anyio.Event()
        self.logs: list[cg.AgentLogged] = []

    def on_event(self, event: cg.Event) -> None:
        if isinstance(event, cg.AgentLogged):
            self.logs.append(event)
            if event.data and event.data.get("event") == "endpoint":
                self.urls[event.agent] = event.data
                self.ready.set()


async def spawn(*args: str) -> anyio.abc.Process:
    return await anyio.open_process([sys.executable, *args])


async def output(proc: anyio.abc.Process) -> tuple[int, str, str]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = b""
    err = b""
    async with anyio.create_task_group() as tg:

        async def read_out() -> None:
            nonlocal out
            async for chunk in proc.stdout:  # type: ignore[union-attr]
                out += chunk

        async def read_err() -> None:
            nonlocal err
            async for chunk in proc.stderr:  # type: ignore[union-attr]
                err += chunk

        tg.start_soon(read_out)
        tg.start_soon(read_err)
    code = await proc.wait()
    return code, out.decode(), err.decode()


@pytest.fixture
async def hub() -> AsyncIterator[MCPHub]:
    h = MCPHub()
    async with h.serving():
        yield h


async def run_with_client(
    graph: cg.AgentGraph,
    task: str,
    client: Callable[[dict[str, Any]], list[str]],
    *,
    budgets: cg.Budgets | None = None,
) -> tuple[cg.RunResult, tuple[int, str, str], Endpoints]:
    eps = Endpoints()
    with anyio.fail_after(60):
        async with cg.open_runtime(graph, budgets=budgets) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start(task, entry=["planner"])
            await eps.ready.wait()
            proc = await spawn(*client(eps.urls["outsider"]))
            result = await handle.wait()
            out = await output(proc)
    return result, out, eps


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_external_agent_joins_a_run_to_its_answer(hub: MCPHub, transport: str) -> None:
    outsider = ExternalAgent("asks calc", hub=hub)
    result, (code, out, err), eps = await run_with_client(
        relay_graph(outsider),
        "6 * 7",
        lambda u: [
            str(CLIENTS / "relay.py"),
            u["url"]
            if transport == "http"
            else u["sse_url"] + "?agentId=outsider&agentDescription=x",
            transport,
        ],
    )
    assert result.stop_reason == "answer", (result.error, err)
    assert result.answer == "answer: calc says 42"
    assert code == 0, err
    assert "reachable: ['calc', 'planner']" in out
    # The outsider's turns are counted like anyone's; its messages are in the transcript.
    assert result.usage["outsider"].messages_sent == 2
    senders = [e.message.sender for e in result.events if isinstance(e, cg.MessageSent)]
    assert senders.count("outsider") == 2
    events = [e.data["event"] for e in eps.logs if e.data and e.agent == "outsider"]
    assert events[:2] == ["endpoint", "connected"]
