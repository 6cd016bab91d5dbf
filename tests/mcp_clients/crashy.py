"""A process agent (the `mcp` client alone) that crashes on its first launch: it
connects, then exits with code 3. Launched again (the marker file exists), it
answers each mention with "recovered: <text>". Used by tests/test_mcp.py."""

from __future__ import annotations

import json
import os
import sys

import anyio
from mcp import Client


async def main() -> None:
    marker = anyio.Path(os.environ["CRASH_MARKER"])
    async with Client(os.environ["CORAL_CONNECTION_URL"]) as client:
        await client.call_tool("list_agents", {"includeDetails": False})
        if not await marker.exists():
            await marker.write_text("crashed once")
            print("crashing on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        while True:
            res = await client.call_tool("wait_for_mentions", {"timeoutMs": 10000})
            data = json.loads(res.content[0].text)
            if res.is_error:
                return
            for m in data["messages"]:
                await client.call_tool(
                    "send_message",
                    {
                        "threadId": m["threadId"],
                        "content": f"recovered: {m['content']}",
                        "mentions": [m["senderId"]],
                    },
                )


if __name__ == "__main__":
    anyio.run(main)
