"""An external agent written with the official `mcp` client alone (run as its own
process by tests/test_mcp.py): it takes each question it is mentioned with, asks
`calc` in a thread of its own, and answers the asker with calc's reply.

Usage: python relay.py URL [sse] [max-questions]
"""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client
from mcp.client.sse import sse_client


async def main() -> None:
    url = sys.argv[1]
    transport = sys.argv[2] if len(sys.argv) > 2 else "http"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    target = sse_client(url) if transport == "sse" else url
    async with Client(target) as client:  # type: ignore[arg-type]

        async def tool(name: str, **args: object) -> dict:
            res = await client.call_tool(name, args)
            data = json.loads(res.content[0].text)
            assert res.structured_content == data, (res.structured_content, data)
            if res.is_error:
                raise RuntimeError(f"{name}: {data}")
            return data

        agents = await tool("list_agents", includeDetails=True)
        print("reachable:", sorted(a["agentId"] for a in agents["agents"]), flush=True)
        calc_thread = None
        done = 0
        while done < rounds:
            got = await tool("wait_for_mentions", timeoutMs=20000)
            for m in got["messages"]:
                if m["senderId"] == "calc":
                    continue
                if calc_thread is None:
                    th = await tool(
                        "coral_create_thread", threadName="maths", participantIds=["calc"]
                    )
                    calc_thread = th["thread"]["id"]
                await tool(
                    "send_message", threadId=calc_thread, content=m["content"], mentions=["calc"]
                )
                answer = None
                while answer is None:
                    reply = await tool("coral_wait_for_mentions", timeoutMs=20000)
                    for r in reply["messages"]:
                        if r["senderId"] == "calc":
                            answer = r["content"]
                await tool(
                    "send_message",
                    threadId=m["threadId"],
                    content=f"calc says {answer}",
                    mentions=[m["senderId"]],
                )
                done += 1
        print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main)
