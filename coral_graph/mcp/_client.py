"""MCP tool servers for LLM agents: ``LLMAgent(tools=[...])`` and ``tools:`` in YAML.

A server is ``{"command": [...]}`` (launched, spoken to over stdio) or
``{"url": ...}`` (streamable HTTP). Its tools are offered to the model beside the
seven operations (in ``tools`` mode); each call is a ``tool_called`` event with its
arguments and result, and an error (an unknown tool, bad arguments, the server's
``isError``, a dead server) goes back to the model as the tool's result.

Connections live for one turn: the tool list is fetched once and cached, and a
turn connects only when the model calls one of the server's tools, so an agent
whose model never uses them pays nothing. ``max_tool_calls`` caps the MCP calls
of one agent in one run; past it, calls return an error to the model.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coral_graph._context import AgentContext

__all__ = ["MCPServer", "MCPToolbox", "resolve_command"]

_MAX_RESULT_CHARS = 20_000


def resolve_command(command: Sequence[str]) -> list[str]:
    """``python``/``python3`` as the first word means the interpreter running
    coral-graph (so the command sees the same installed packages)."""
    cmd = list(command)
    if cmd and cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable
    return cmd


@dataclass(frozen=True)
class MCPServer:
    """One MCP tool server: ``command`` (stdio) or ``url`` (streamable HTTP).

    Args:
        command: the program and arguments of a stdio server.
        url: the URL of a streamable HTTP server.
        env: extra environment variables for ``command``.
        cwd: the working directory of ``command``.
        name: a prefix for its tools' names when two servers (or a server and the
            seven operations) offer the same name: ``<name>__<tool>``.
    """

    command: tuple[str, ...] | None = None
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                'an MCP tool server is {"command": [program, args…]} (stdio) or '
                '{"url": "http://…"} (streamable HTTP), exactly one of them'
            )
        if self.command is not None and (isinstance(self.command, str) or not self.command):
            raise ValueError('command is a non-empty list, e.g. ["python", "server.py"]')

    @classmethod
    def of(cls, value: MCPServer | Mapping[str, Any], base_dir: Path | None = None) -> MCPServer:
        """From a mapping such as ``{"command": ["python", "srv.py"]}``; a relative
        ``cwd`` is taken against ``base_dir``."""
        if isinstance(value, MCPServer):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"an MCP tool server is a mapping, not {type(value).__name__}")
        unknown = sorted(set(value) - {"command", "url", "env", "cwd", "name"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)} in an MCP tool server; "
                "the keys are command, url, env, cwd, name"
            )
        command = value.get("command")
        cwd = value.get("cwd")
        if cwd is None and command is not None and base_dir is not None:
            cwd = str(base_dir)
        elif cwd is not None and base_dir is not None:
            cwd = str((base_dir / cwd).resolve())
        return cls(
            command=tuple(command) if isinstance(command, list | tuple) else command,
            url=value.get("url"),
            env=dict(value.get("env") or {}),
            cwd=cwd,
            name=value.get("name"),
        )

    def label(self) -> str:
        return self.url if self.url is not None else " ".join(self.command or ())

    def target(self) -> Any:
        """What ``mcp.Client`` connects to."""
        if self.url is not None:
            return self.url
        from mcp import StdioServerParameters

        cmd = resolve_command(self.command or ())
        return StdioServerParameters(
            command=cmd[0], args=cmd[1:], env=dict(self.env) or None, cwd=self.cwd
        )


@dataclass
class _Tool:
    server: int
    remote: str
    schema: dict[str, Any]


class MCPToolbox:
    """The MCP tool servers of one LLM agent (see the module docs).

    Args:
        servers: the servers, as :class:`MCPServer` values or mappings.
        max_tool_calls: MCP tool calls per agent per run (None: no cap).
        reserved: tool names already taken (the seven operations).
        timeout_s: seconds one connection or call may take.
    """

    def __init__(
        self,
        servers: Sequence[MCPServer | Mapping[str, Any]],
        *,
        max_tool_calls: int | None = None,
        reserved: Sequence[str] = (),
        timeout_s: float = 60.0,
    ) -> None:
        if max_tool_calls is not None and max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0 (or None: no cap)")
        self.servers = [MCPServer.of(s) for s in servers]
        self.max_tool_calls = max_tool_calls
        self.reserved = frozenset(reserved)
        self.timeout_s = timeout_s
        self._tools: dict[str, _Tool] | None = None
        self._calls: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"MCPToolbox({[s.label() for s in self.servers]})"

    def __bool__(self) -> bool:
        return bool(self.servers)

    def has(self, name: str) -> bool:
        return self._tools is not None and name in self._tools

    def schemas(self) -> list[dict[str, Any]]:
        """The tools in OpenAI's function-calling format (after :meth:`turn` listed them)."""
        if not self._tools:
            return []
        return [t.schema for t in self._tools.values()]

    @contextlib.asynccontextmanager
    async def turn(self, ctx: AgentContext) -> Any:
        """One turn's connections: listed on first use, opened on the first call,
        closed when the turn ends."""
        async with contextlib.AsyncExitStack() as stack:
            turn = _Turn(self, stack)
            if self._tools is None:
                await turn.list_all(ctx)
            yield turn

    async def _connect(self, stack: contextlib.AsyncExitStack, index: int) -> Any:
        import anyio

        # The first import of the SDK takes a second or more: not on the event loop.
        await anyio.to_thread.run_sync(_import_client)
        from mcp import Client

        server = self.servers[index]
        # No timeout scope around the entry: the client's own task groups outlive
        # it (they close with the turn); its requests have read_timeout_seconds.
        return await stack.enter_async_context(
            Client(server.target(), read_timeout_seconds=self.timeout_s)
        )


class _Turn:
    def __init__(self, box: MCPToolbox, stack: contextlib.AsyncExitStack) -> None:
        self.box = box
        self.stack = stack
        self.clients: dict[int, Any] = {}
        self.failed: dict[int, str] = {}
        self.listed: dict[str, _Tool] | None = None

    def has(self, name: str) -> bool:
        return name in self.listed if self.listed is not None else self.box.has(name)

    def schemas(self) -> list[dict[str, Any]]:
        if self.listed is not None:
            return [t.schema for t in self.listed.values()]
        return self.box.schemas()

    async def _client(self, index: int) -> Any:
        if index in self.failed:
            raise RuntimeError(self.failed[index])
        client = self.clients.get(index)
        if client is None:
            try:
                client = await self.box._connect(self.stack, index)
            except Exception as exc:
                server = self.box.servers[index]
                self.failed[index] = (
                    f"the MCP tool server `{server.label()}` is unavailable: "
                    f"{type(exc).__name__}: {exc}"
                )
                raise RuntimeError(self.failed[index]) from exc
            self.clients[index] = client
        return client

    async def list_all(self, ctx: AgentContext) -> None:
        """Fetch every server's tools. A server that fails is logged (an
        ``agent_logged`` event) and left out of this turn; the list is cached only
        once every server answered."""
        box = self.box
        tools: dict[str, _Tool] = {}
        complete = True
        for i, server in enumerate(box.servers):
            try:
                client = await self._client(i)
                listed = await client.list_tools()
            except Exception as exc:
                complete = False
                ctx.log(
                    f"MCP tool server `{server.label()}` unavailable: {exc}",
                    source="mcp",
                    data={"event": "tools_unavailable", "server": server.label()},
                )
                continue
            for t in listed.tools:
                name = t.name
                if name in box.reserved or name in tools:
                    name = f"{server.name or f'mcp{i + 1}'}__{t.name}"
                schema = dict(t.input_schema or {"type": "object", "properties": {}})
                schema.setdefault("type", "object")
                tools[name] = _Tool(
                    i,
                    t.name,
                    {
                        "type": "function",
                        "function": {
                            "name": name,
                            "description": (t.description or t.name)[:1024],
                            "parameters": schema,
                        },
                    },
                )
        box._tools = tools if complete else None
        self.listed = tools

    async def call(self, ctx: AgentContext, name: str, raw_arguments: str) -> tuple[str, bool]:
        """Call tool ``name`` for the agent of ``ctx``; returns the text the model
        sees and whether it worked. Recorded as a ``tool_called`` event."""
        box = self.box
        t0 = time.perf_counter()
        args: dict[str, Any] = {}
        ok = False
        known = self.listed if self.listed is not None else box._tools
        tool = known.get(name) if known else None
        try:
            if tool is None:
                raise ValueError(f"there is no tool {name!r}")
            try:
                parsed = json.loads((raw_arguments or "").strip() or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{name}: the arguments are not valid JSON ({exc.msg}); send a JSON object"
                ) from None
            if not isinstance(parsed, dict):
                raise ValueError(f"{name}: the arguments must be a JSON object")
            args = parsed
            used = box._calls.get(ctx.run_id, 0)
            if box.max_tool_calls is not None and used >= box.max_tool_calls:
                raise ValueError(
                    f"max_tool_calls ({box.max_tool_calls}) reached for this run: no more MCP "
                    "tool calls; answer with what you have"
                )
            box._calls[ctx.run_id] = used + 1
            if len(box._calls) > 1000:
                box._calls.pop(next(iter(box._calls)))
            client = await self._client(tool.server)
            result = await client.call_tool(tool.remote, args)
            text = _result_text(result)
            ok = not result.is_error
        except Exception as exc:
            text = json.dumps(
                {"ok": False, "error": type(exc).__name__, "message": str(exc)},
                ensure_ascii=False,
            )
        ctx.record_tool_call(
            tool=name,
            arguments=args if args else {"raw": raw_arguments},
            result=text,
            ok=ok,
            duration_s=time.perf_counter() - t0,
        )
        return text, ok


def _import_client() -> None:
    import mcp

    del mcp


def _result_text(result: Any) -> str:
    parts = [getattr(c, "text", None) for c in result.content or ()]
    texts = [p for p in parts if isinstance(p, str)]
    if texts:
        text = "\n".join(texts)
    elif result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    else:
        text = "(no content)"
    if result.is_error:
        text = json.dumps({"ok": False, "error": "ToolError", "message": text}, ensure_ascii=False)
    if len(text) > _MAX_RESULT_CHARS:
        text = text[:_MAX_RESULT_CHARS] + f"… ({len(text) - _MAX_RESULT_CHARS} more characters)"
    return text
