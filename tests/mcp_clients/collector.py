"""Connects, collects N mentions (argv[2]), and answers the last sender with all of
their contents. Used by tests/test_mcp.py."""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client


async def main() -> None:
    want = int(sys.argv[2])
    got: list[dict] = []
    async with Client(sys.argv[1]) as client:
        while len(got) < want:
            res = await client.call_tool("wait_for_mentions", {"timeoutMs": 20000})
            assert not res.is_error, res.content
            got += json.loads(res.content[0].text)["messages"]
        last = got[-1]
        await client.call_tool(
            "send_message",
            {
                "threadId": last["threadId"],
                "content": "got: " + ", ".join(m["content"] for m in got),
                "mentions": [last["senderId"]],
            },
        )


if __name__ == "__main__":
    anyio.run(main)
