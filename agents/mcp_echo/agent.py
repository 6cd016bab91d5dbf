"""mcp_echo: an agent that joins a coral-graph (or Coral) run over MCP, written with
the official `mcp` client alone - no coral-graph import.

Copy this folder to bring in an agent written with any framework: replace
`respond()` with a call into LangChain, CrewAI, CAMEL or your own code, and point a
graph at it:

    agents:
      mine:
        kind: process
        command: [python, agent.py]     # run with the graph's Python, in this folder
        description: what the others see in list_agents()

The run launches the command with the environment Coral gives its agents:
CORAL_CONNECTION_URL (this agent's streamable HTTP endpoint, secret included),
CORAL_SSE_URL, CORAL_AGENT_ID, CORAL_SESSION_ID and, when set, CORAL_PROMPT_SYSTEM.
The same script works as `kind: external`: run it yourself with the URL the run
prints (`python agent.py URL`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
from mcp import Client
from mcp.shared.exceptions import MCPError

WAIT_MS = 30_000  # one wait_for_mentions call; the run's own budgets bound the rest


def respond(text: str, sender: str) -> str:
    """The agent's brain: replace this with your framework's call."""
    return f"echo: {text}"


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call one of the seven tools; the result is JSON (also in structuredContent)."""
    result = await client.call_tool(tool, arguments)
    data: dict[str, Any] = result.structured_content or json.loads(result.content[0].text)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {data.get('error')}: {data.get('message')}")
    return data


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ["CORAL_CONNECTION_URL"]
    me = os.environ.get("CORAL_AGENT_ID", "mcp_echo")
    async with Client(url) as client:
        reachable = await call(client, "list_agents", includeDetails=True)
        names = ", ".join(a["agentId"] for a in reachable["agents"])
        print(f"{me} connected; it can reach: {names}", flush=True)
        while True:
            try:
                got = await call(client, "wait_for_mentions", timeoutMs=WAIT_MS)
            except MCPError:
                # The endpoint is gone: its run ended (HTTP 410) while we were away.
                print(f"{me}: the run is over", flush=True)
                return
            except RuntimeError as exc:
                if "RunEndedError" in str(exc):
                    print(f"{me}: the run is over", flush=True)
                    return
                raise
            for message in got["messages"]:
                reply = respond(message["content"], message["senderId"])
                await call(
                    client,
                    "send_message",
                    threadId=message["threadId"],
                    content=reply,
                    mentions=[message["senderId"]],
                )
                print(f"answered {message['senderId']} in {message['threadId']}", flush=True)


if __name__ == "__main__":
    anyio.run(main)
