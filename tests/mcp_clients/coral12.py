"""A Coral 1.2-style agent (the official `mcp` client alone): it reads
coral://instruction, takes its task with coral_wait_for_mention, asks calc and noisy
in a thread made with Coral 1.2's argument names, takes calc's answer with
coral_wait_for_agent while noisy's stays unread, then noisy's with
coral_wait_for_message, and answers the planner. Each step prints one JSON line
for tests/test_mcp_coral12.py.

Usage: python coral12.py URL
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from mcp import Client


async def main() -> None:
    async with Client(sys.argv[1]) as client:

        def show(step: str, value: Any) -> None:
            print(json.dumps({"step": step, "value": value}), flush=True)

        async def tool(name: str, **args: Any) -> dict[str, Any]:
            res = await client.call_tool(name, args)
            data: dict[str, Any] = res.structured_content or {}
            assert json.loads(res.content[0].text) == data
            if res.is_error:
                return {"isError": True, **data}
            return data

        tools = {t.name: t for t in (await client.list_tools()).tools}
        show("tools", sorted(tools))
        show("create_schema", sorted(tools["coral_create_thread"].input_schema["properties"]))
        instruction = await client.read_resource("coral://instruction")
        show("instruction", instruction.contents[0].text)  # type: ignore[union-attr]

        task = await tool("coral_wait_for_mention", maxWaitMs=20000)
        show("task", task)
        th = await tool("coral_create_thread", threadName="maths", participantNames=["calc"])
        tid = th["thread"]["id"]
        show("added", await tool("coral_add_participant", threadId=tid, participantName="noisy"))
        sent = await tool(
            "coral_send_message", threadId=tid, content="6 * 7", mentions=["noisy", "calc"]
        )
        show("sent", sent["ok"])
        show("from_calc", await tool("coral_wait_for_agent", agentName="calc", maxWaitMs=20000))
        show("next", await tool("coral_wait_for_message", currentUnixTime=0, maxWaitMs=20000))
        show("none_left", await tool("coral_wait_for_mention", maxWaitMs=0))
        show("unknown_agent", await tool("coral_wait_for_agent", agentName="nobody"))
        show("negative", await tool("coral_wait_for_mention", maxWaitMs=-5))
        show("both_names", await tool("coral_create_thread", threadName="x",
             participantNames=["calc"], participantIds=["calc"]))  # fmt: skip
        await tool(
            "coral_send_message",
            threadId=task["message"]["threadId"],
            content="calc says 42",
            mentions=[task["message"]["senderId"]],
        )


if __name__ == "__main__":
    anyio.run(main)
