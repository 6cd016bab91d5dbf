"""A lean MCP client over streamable HTTP, for the benchmark (``bench --mcp``).

The official ``mcp`` client spends 1.0-1.3 ms of its own CPU on every tool call
(httpx, its session's tasks and streams, pydantic models both ways), more than
either server spends answering it. Measured with it alone, a round trip of four
calls across two clients is bounded by the client, not by the server under test.
This client does what the protocol requires and nothing else, so the bench can
also show the servers with a client whose own cost does not hide theirs. It is
used for the floor and for coral-graph alike ("the same client").

What it speaks (MCP streamable HTTP, JSON-RPC 2.0 over HTTP/1.1 POSTs):

* ``protocol`` a handshake-era version (``2025-11-25`` …): ``initialize``, then the
  ``notifications/initialized`` notification; every later request carries the
  ``Mcp-Session-Id`` the server gave and ``MCP-Protocol-Version``; ``DELETE`` ends
  the session.
* ``protocol`` a per-request-envelope version (``2026-07-28``): no handshake; each
  request carries ``params._meta`` with the protocol version and the client's
  capabilities, and the ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name``
  headers matching the body.

Every POST accepts ``application/json`` and ``text/event-stream``; the answer is
read whole (``Content-Length`` or chunked) and parsed as JSON or as SSE events (the
one answering the request's id is its result). Connections are kept alive and
pooled: one per request in flight (HTTP/1.1 does not interleave answers, and a
``wait_for_mentions`` may hold one for a minute). No server-to-client requests:
a server that sends one on a POST's stream is not answered (neither server here
does). Standard library only.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HANDSHAKE", "MODERN", "LeanClient", "LeanClientError"]

HANDSHAKE = "2025-11-25"
"""The newest protocol version reached through the ``initialize`` handshake."""
MODERN = "2026-07-28"
"""The per-request-envelope protocol version (what the official 2.x client uses)."""
_MODERN_VERSIONS = frozenset({MODERN})
_CLIENT_INFO = {"name": "coral-graph-bench-lean", "version": "0.1.0"}


class LeanClientError(Exception):
    """An HTTP refusal (``status``) or a JSON-RPC error (``code``) from the server."""

    def __init__(self, message: str, *, status: int = 200, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class LeanClient:
    """An MCP client session to one streamable HTTP endpoint.

    Use it as an async context manager; :meth:`call_tool` returns the
    ``CallToolResult`` object as the server sent it (``content``,
    ``structuredContent``, ``isError`` …).
    """

    def __init__(self, url: str, *, protocol: str = HANDSHAKE) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean client speaks plain http only, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.protocol = protocol
        self.modern = protocol in _MODERN_VERSIONS
        self.session_id: str | None = None
        self.server_info: dict[str, Any] = {}
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._next_id = 0
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._fixed = (
            f"Host: {host}:{self.port}\r\n"
            "Accept: application/json, text/event-stream\r\n"
            "Content-Type: application/json\r\n"
        )

    async def __aenter__(self) -> LeanClient:
        if not self.modern:
            result = await self.request(
                "initialize",
                {"protocolVersion": self.protocol, "capabilities": {}, "clientInfo": _CLIENT_INFO},
            )
            if result.get("protocolVersion") != self.protocol:
                await self.aclose()
                raise LeanClientError(
                    f"the server answered protocol {result.get('protocolVersion')!r}; "
                    f"this client speaks {self.protocol}"
                )
            self.server_info = result.get("serverInfo", {})
            await self.notify("notifications/initialized")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the session (``DELETE``, handshake era) and close every connection."""
        if self.session_id is not None:
            try:
                await self._http("DELETE", b"", "")
            except (OSError, LeanClientError):
                pass  # the server may be gone already; the session ends with it
            self.session_id = None
        for conn in self._all:
            conn.writer.close()
        self._all.clear()
        self._idle.clear()

    # -- JSON-RPC ---------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """``tools/call``: the result object (an ``isError`` result is returned, not raised)."""
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}})

    async def list_tools(self) -> list[dict[str, Any]]:
        """``tools/list``: the tool objects (one page; neither server here pages)."""
        tools: list[dict[str, Any]] = (await self.request("tools/list", {}))["tools"]
        return tools

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request; its ``result``, or :class:`LeanClientError` for an error."""
        self._next_id += 1
        request_id = self._next_id
        extra = ""
        if self.modern:
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": self.protocol,
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
                },
            }
            extra = f"Mcp-Method: {method}\r\n"
            name = params.get("name") if method in ("tools/call", "prompts/get") else None
            if name is None and method == "resources/read":
                name = params.get("uri")
            if name is not None:
                if not str(name).isascii():
                    raise ValueError("the lean client sends ASCII names only")
                extra += f"Mcp-Name: {name}\r\n"
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
            separators=(",", ":"),
        ).encode()
        status, headers, payload = await self._http("POST", body, extra)
        if status != 200:
            # The envelope era answers a refused request with an HTTP status and a
            # JSON-RPC error body; older servers may send plain text.
            code = _error_code(headers, payload)
            raise LeanClientError(
                f"{method}: HTTP {status}: {payload[:300].decode('utf-8', 'replace')}",
                status=status,
                code=code,
            )
        if method == "initialize" and "mcp-session-id" in headers:
            self.session_id = headers["mcp-session-id"]
        message = _answer(headers.get("content-type", ""), payload, request_id)
        if "error" in message:
            err = message["error"]
            raise LeanClientError(f"{method}: {err.get('message')}", code=err.get("code"))
        result: dict[str, Any] = message["result"]
        return result

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send one notification (the server answers 202 Accepted, no body)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        body = json.dumps(message, separators=(",", ":")).encode()
        status, _headers, payload = await self._http("POST", body, "")
        if status not in (200, 202):
            raise LeanClientError(
                f"{method}: HTTP {status}: {payload[:300].decode('utf-8', 'replace')}",
                status=status,
            )

    # -- HTTP/1.1 ---------------------------------------------------------------------

    async def _http(self, verb: str, body: bytes, extra: str) -> tuple[int, dict[str, str], bytes]:
        head = f"{verb} {self.path} HTTP/1.1\r\n{self._fixed}Content-Length: {len(body)}\r\n"
        if self.session_id is not None:
            head += f"Mcp-Session-Id: {self.session_id}\r\n"
        if self.modern or self.session_id is not None:
            head += f"MCP-Protocol-Version: {self.protocol}\r\n"
        data = (head + extra + "\r\n").encode("latin-1") + body
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            conn.writer.write(data)
            status, headers, payload, keep = await _read_response(conn.reader)
        except BaseException:
            self._drop(conn)  # half a request or answer: the connection is unusable
            raise
        if keep:
            self._idle.append(conn)
        else:
            self._drop(conn)
        return status, headers, payload

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _Conn(reader, writer)
        self._all.add(conn)
        return conn

    def _drop(self, conn: _Conn) -> None:
        self._all.discard(conn)
        conn.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 response: status, headers (lower-case names), body, keep-alive."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("the server closed the connection")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise LeanClientError(f"not an HTTP/1.x response: {line[:100]!r}", status=0)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(await reader.readexactly(size + 2))
        return status, headers, b"".join(c[:-2] for c in chunks), keep
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"])), keep
    return status, headers, await reader.read(), False  # delimited by the close


def _error_code(headers: dict[str, str], payload: bytes) -> int | None:
    """The JSON-RPC error code of a refusal's body, if it holds one."""
    if not headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def _answer(content_type: str, payload: bytes, request_id: int) -> dict[str, Any]:
    """The JSON-RPC response to ``request_id`` in a JSON or an SSE body."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        message: Any = json.loads(payload)
        if isinstance(message, list):  # a batch (older servers may answer so)
            message = next((m for m in message if m.get("id") == request_id), None)
        if isinstance(message, dict) and message.get("id") == request_id:
            return message
    elif kind == "text/event-stream":
        # Events are separated by a blank line; an event's data is its data: lines
        # joined by newlines. Other events (priming, notifications) are skipped.
        for event in payload.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = [
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            ]
            if not data or not any(data):
                continue
            message = json.loads(b"\n".join(data))
            if (
                isinstance(message, dict)
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message
    else:
        raise LeanClientError(f"unexpected content type {content_type!r} for a request")
    raise LeanClientError(f"the server's answer holds no response to request {request_id}")
