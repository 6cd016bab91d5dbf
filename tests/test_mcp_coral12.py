"""Coral 1.2's newer tools and resource, through the official `mcp` client in a
separate process over real HTTP: coral_wait_for_mention / _message / _agent (one
message each), the 1.1+ argument names of the thread tools, and coral://instruction."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import coral_graph as cg
from coral_graph.mcp import TOOL_NAMES, ExternalAgent, MCPHub
from tests.test_mcp import planner

pytestmark = pytest.mark.anyio

CLIENTS = Path(__file__).resolve().parent / "mcp_clients"


async def test_coral_12_waits_names_and_instruction_resource() -> None:
    noise_sent = anyio.Event()

    @cg.agent
    async def noisy(ctx: cg.AgentContext, message: cg.Message) -> None:
        """Answers at once with noise."""
        await ctx.send_message(message.thread_id, "noise", [message.sender])
        noise_sent.set()

    @cg.agent
    async def calc(ctx: cg.AgentContext, message: cg.Message) -> None:
        """Multiplies, once noisy has answered (so that noisy's reply is queued first)."""
        await noise_sent.wait()
        await ctx.send_message(message.thread_id, "42", [message.sender])

    hub = MCPHub()
    g = cg.AgentGraph("coral12", entry=["planner"])
    g.add_agent("planner", planner)
    g.add_agent("outsider", ExternalAgent("asks calc", hub=hub), on_error="stop")
    g.add_agent("calc", calc, description="multiplies")
    g.add_agent("noisy", noisy, description="makes noise")
    g.connect("planner", "outsider", mutual=True)
    g.connect("outsider", "calc", mutual=True)
    g.connect("outsider", "noisy", mutual=True)
    url: dict[str, str] = {}
    ready = anyio.Event()

    def on_event(event: cg.Event) -> None:
        if isinstance(event, cg.AgentLogged) and event.data and "url" in event.data:
            url["outsider"] = event.data["url"]
            ready.set()

    with anyio.fail_after(60):
        async with hub.serving(), cg.open_runtime(g) as rt:
            rt.subscribe(on_event)
            handle = rt.start("6 * 7", entry=["planner"])
            await ready.wait()
            proc = await anyio.open_process(
                [sys.executable, str(CLIENTS / "coral12.py"), url["outsider"]]
            )
            result = await handle.wait()
            assert await proc.wait() == 0
            assert proc.stdout is not None
            out = (await proc.stdout.receive(1_000_000)).decode()
    steps: dict[str, Any] = {}
    for line in out.splitlines():
        row = json.loads(line)
        steps[row["step"]] = row["value"]

    assert result.stop_reason == "answer", result.error
    assert result.answer == "answer: calc says 42"
    for name in ("coral_wait_for_mention", "coral_wait_for_message", "coral_wait_for_agent"):
        assert name in steps["tools"]
        assert name in TOOL_NAMES
    assert "coral_close_session" not in steps["tools"]
    assert steps["create_schema"] == ["participantNames", "threadName"]
    text = steps["instruction"]
    assert "`outsider`" in text
    assert "- `calc`: multiplies" in text
    assert "- `noisy`: makes noise" in text
    assert "planner" in text
    assert "Mention `user`" not in text  # the outsider may not answer the user

    assert steps["task"]["status"] == "Message received"
    assert steps["task"]["message"]["content"] == "6 * 7"
    assert steps["added"]["ok"] is True
    # noisy's reply arrived first, yet the wait for calc takes calc's and leaves it.
    assert steps["from_calc"]["message"]["senderId"] == "calc"
    assert steps["from_calc"]["message"]["content"] == "42"
    assert steps["next"]["message"]["senderId"] == "noisy"
    assert steps["none_left"] == {"ok": True, "status": "Timeout reached", "message": None}
    assert steps["unknown_agent"]["isError"] is True
    assert steps["unknown_agent"]["error"] == "UnknownAgentError"
    assert steps["negative"]["error"] == "InvalidArgumentsError"
    assert "maxWaitMs" in steps["negative"]["message"]
    assert steps["both_names"]["error"] == "InvalidArgumentsError"
    assert "participantNames" in steps["both_names"]["message"]
    # Each single wait that returned a message was one turn of the outsider.
    assert result.usage["outsider"].deliveries == 3


async def test_wait_for_mention_takes_one_and_leaves_the_others_queued() -> None:
    seen: list[object] = []

    class Waiter:
        description = "waits for b, then takes the rest"

        async def run(self, ctx: cg.AgentContext) -> None:
            task = await ctx.wait_for_mention(5)
            assert task is not None
            seen.append(task.content)
            th = await ctx.create_thread("t", ["c"])
            await ctx.send_message(th, "speak", ["c"])
            # c's reply is queued; a wait for b's times out and leaves it, and the run
            # does not end idle meanwhile (an unread mention is work still queued).
            seen.append(await ctx.wait_for_mention(0.2, sender="b"))
            rest = await ctx.wait_for_mentions(5)
            seen.append([m.content for m in rest])
            with pytest.raises(cg.UnknownAgentError):
                await ctx.wait_for_mention(0, sender="nobody")
            await ctx.send_message("t-1", "done", ["user"])

    @cg.agent
    async def c(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "from c", [message.sender])

    g = cg.AgentGraph("one", entry=["a"])
    g.add_agent("a", Waiter())
    g.add_agent("b", c)
    g.add_agent("c", c)
    g.connect("a", "c", mutual=True)
    g.connect("b", "a")
    with anyio.fail_after(20):
        async with cg.open_runtime(g) as rt:
            result = await rt.run("go", entry=["a"])
    assert result.stop_reason == "answer", result.error
    assert seen == ["go", None, ["from c"]]
    assert result.usage["a"].turns == 2
