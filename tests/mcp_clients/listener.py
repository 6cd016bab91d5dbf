"""A fast agent: a listener task keeps one wait_for_mentions in flight at all times,
and the agent answers each message it hands over after a short think (by then its
next wait is already pending). Used by tests/test_mcp_fast.py.

Usage: python listener.py URL ping|pong N
  ping: takes the task, opens a thread with b, sends N pings (one at a time, each
        after b's reply), then answers the user with the count.
  pong: answers each ping of a until the run ends.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from mcp import Client
from mcp.shared.exceptions import MCPError

THINK_S = 0.005


async def listen(client: Client, out: Any) -> None:
    async with out:
        while True:
            try:
                res = await client.call_tool("wait_for_mentions", {"timeoutMs": 20000})
            except MCPError:
                return  # the run is over (410)
            data = res.structured_content or {}
            if res.is_error:
                print("wait ended:", data.get("error"), flush=True)
                return
            for m in data["messages"]:
                await out.send(m)


async def main() -> None:
    url, role, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    send, inbox = anyio.create_memory_object_stream[dict[str, Any]](100)
    async with Client(url) as client:

        async def tool(name: str, **args: Any) -> dict[str, Any]:
            res = await client.call_tool(name, args)
            data: dict[str, Any] = res.structured_content or {}
            if res.is_error:
                raise RuntimeError(f"{name}: {data}")
            return data

        async with anyio.create_task_group() as tg, inbox:
            tg.start_soon(listen, client, send)
            if role == "pong":
                async for m in inbox:
                    await anyio.sleep(THINK_S)  # thinking, while the next wait is pending
                    await tool("send_message", threadId=m["threadId"], content="pong " +
                               m["content"], mentions=[m["senderId"]])  # fmt: skip
                return
            task = await inbox.receive()
            th = await tool("create_thread", threadName="pings", participantIds=["b"])
            tid = th["thread"]["id"]
            for i in range(n):
                await anyio.sleep(THINK_S)
                await tool("send_message", threadId=tid, content=f"ping {i}", mentions=["b"])
                reply = await inbox.receive()
                assert reply["content"] == f"pong ping {i}", reply
            await tool("send_message", threadId=task["threadId"], content=f"{n} round trips",
                       mentions=["user"])  # fmt: skip
            print("done", flush=True)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
