"""Connects, takes its mentions once, prints them, then blocks in a long
wait_for_mentions (tests/test_mcp.py kills it there)."""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client


async def main() -> None:
    async with Client(sys.argv[1]) as client:
        res = await client.call_tool("wait_for_mentions", {"timeoutMs": 20000})
        for m in json.loads(res.content[0].text)["messages"]:
            print("got", m["content"], flush=True)
        print("waiting", flush=True)
        await client.call_tool("wait_for_mentions", {"timeoutMs": 60000})
        print("unexpected: the second wait returned", flush=True)


if __name__ == "__main__":
    anyio.run(main)
