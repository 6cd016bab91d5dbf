"""MCP for coral-graph (the ``[mcp]`` extra): agents written anywhere join a graph,
and LLM agents use MCP tool servers.

* :class:`ExternalAgent` (``kind: external``): someone else connects it; the run
  prints its URL.
* :class:`ProcessAgent` (``kind: process``): the run launches a command with the
  environment Coral gives its agents (``CORAL_CONNECTION_URL`` …).
* :class:`MCPHub`: the HTTP server of their endpoints (127.0.0.1 by default, one
  secret per agent and run).

Both speak Coral's seven tools (v0 names and the ``coral_`` aliases of v1.0) and
Coral 1.2's single-message waits, with coral-graph's rules behind them; see
``docs/mcp.md``. Importing this package does
not import the MCP SDK: it loads when a server starts.
"""

from __future__ import annotations

from coral_graph.mcp._agents import (
    AgentConnectionError,
    ExternalAgent,
    ProcessAgent,
    ProcessAgentError,
    graph_hubs,
)
from coral_graph.mcp._client import MCPServer, MCPToolbox
from coral_graph.mcp._server import Endpoint, MCPHub, default_hub
from coral_graph.mcp._tools import MAX_WAIT_MS, TOOL_NAMES, ToolError, call_tool

__all__ = [
    "MAX_WAIT_MS",
    "TOOL_NAMES",
    "AgentConnectionError",
    "Endpoint",
    "ExternalAgent",
    "MCPHub",
    "MCPServer",
    "MCPToolbox",
    "ProcessAgent",
    "ProcessAgentError",
    "ToolError",
    "call_tool",
    "default_hub",
    "graph_hubs",
]
