"""The MCP endpoint of a graph's external and process agents (the ``[mcp]`` extra).

One HTTP server (Uvicorn) per :class:`MCPHub`, bound to 127.0.0.1 unless told
otherwise. Each agent of a run gets its own endpoint, reachable only with its
secret in the URL, as Coral >= 1.2 does::

    http://127.0.0.1:PORT/mcp/v1/<secret>/mcp     streamable HTTP
    http://127.0.0.1:PORT/mcp/v1/<secret>/sse/    SSE (Coral v0's ?agentId=… query accepted)

Every request is checked before the MCP SDK sees it: the Host header must name
this server (DNS rebinding), a browser's Origin must be a loopback origin, the
secret must belong to a live agent (401; 410 once its run ended), and a
``?agentId=`` must match the agent. Each endpoint is a low-level SDK ``Server``
whose handlers run the agent's :class:`~coral_graph.AgentContext` operations (see
:mod:`coral_graph.mcp._tools`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from coral_graph.mcp._tools import (
    WAIT_TOOLS,
    ToolError,
    call_tool,
    instruction_text,
    state_view,
    tool_specs,
)

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from starlette.types import Receive, Scope, Send

    from coral_graph._context import AgentContext

__all__ = ["Endpoint", "MCPHub", "default_hub"]

STATE_URI = "coral://state"
INSTRUCTION_URI = "coral://instruction"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_MAX_SESSIONS = 16
"""Open MCP sessions per agent endpoint (a flood of connections is refused)."""
_MAX_REQUESTS = 512
"""Requests in flight across the hub before new ones get 503."""
IDLE_SETTLE_S = 0.25
"""How long an agent's ``wait_for_mentions`` must be pending before the agent counts
as idle. A client may keep a wait in flight while it sends (MCP allows concurrent
requests): its send can reach the server just after its wait, and the run must not
end ``idle`` in between. Calls that did reach the server keep the agent busy
until they finish (see :meth:`Endpoint.call`)."""
_CLOSE_GRACE_S = 2.0
"""How long a closing endpoint lets the POSTs in flight write their answers."""
_MAX_BODY = 4 * 1024 * 1024
"""The SDK's request body limit (a larger body goes to the SDK, which refuses it)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _InProgress:
    """A count of things in progress (calls, requests), awaitable until it is zero."""

    __slots__ = ("_none_left", "count")

    def __init__(self) -> None:
        self.count = 0
        self._none_left: anyio.Event | None = None

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if not self.count and self._none_left is not None:
            self._none_left.set()
            self._none_left = None

    async def wait_none(self) -> None:
        """Return once nothing is in progress."""
        while self.count:
            if self._none_left is None:
                self._none_left = anyio.Event()
            await self._none_left.wait()


class Endpoint:
    """One agent's MCP endpoint in one run: its secret, URLs and connection state."""

    def __init__(self, hub: MCPHub, ctx: AgentContext, secret: str) -> None:
        self.hub = hub
        self.ctx = ctx
        self.name = ctx.name
        self.secret = secret
        self.run_id = ctx.run_id
        self._scopes: set[anyio.CancelScope] = set()
        self._calling = anyio.Event()
        self._busy_calls = _InProgress()  # calls other than waits
        self._server_info: dict[str, Any] = {}
        self.connected = anyio.Event()
        self.gone = anyio.Event()
        self.back = anyio.Event()
        self.closed = False
        self.seen_at: float | None = None
        self.connects = 0
        self.sse_streams = 0
        self._server: Server[Any] | None = None
        self._http: Any = None
        self._sse: Any = None
        self._stop = anyio.Event()
        self._posts = _InProgress()  # POSTs of the session protocol being answered

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, run={self.run_id})"

    @property
    def url(self) -> str:
        """The streamable HTTP URL (``CORAL_CONNECTION_URL``)."""
        return f"{self.hub.base_url}/mcp/v1/{self.secret}/mcp"

    @property
    def sse_url(self) -> str:
        """The SSE URL (``CORAL_SSE_URL``)."""
        return f"{self.hub.base_url}/mcp/v1/{self.secret}/sse/"

    @property
    def calls_in_flight(self) -> int:
        """Tool calls of the agent being served right now."""
        return len(self._scopes)

    async def wait_calling(self) -> None:
        """Return once a tool call of the agent is in flight."""
        await self._calling.wait()

    # -- connection state ------------------------------------------------------------

    def seen(self) -> None:
        """A request of the agent arrived: it is connected."""
        self.seen_at = time.monotonic()
        if not self.connected.is_set() or self.gone.is_set():
            self.connects += 1
            self.ctx.log(
                "connected to its MCP endpoint" + (" again" if self.connects > 1 else ""),
                source="mcp",
                data={"event": "connected", "connects": self.connects},
            )
        self.connected.set()
        if self.gone.is_set():
            self.gone = anyio.Event()
            self.back.set()

    def lost(self, why: str) -> None:
        """The agent went away (its stream closed, or it dropped a call in flight)."""
        if self.closed or self.gone.is_set():
            return
        self.back = anyio.Event()
        self.gone.set()
        self.ctx.log(
            f"disconnected from its MCP endpoint ({why}); its mentions wait in its inbox",
            source="mcp",
            data={"event": "disconnected", "why": why},
        )

    # -- the SDK server ----------------------------------------------------------------

    def _build(self) -> None:
        import mcp_types as types
        from mcp.server.lowlevel import Server
        from mcp.server.sse import SseServerTransport
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        specs = tool_specs()
        tools = [types.Tool(name=n, description=d, input_schema=s) for n, d, s in specs]
        schemas = {n: s for n, _d, s in specs}
        endpoint = self

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            endpoint.seen()
            return types.ListToolsResult(tools=tools)

        async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            data, is_error = await endpoint.call(params.name, params.arguments)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
                structured_content=data,
                is_error=is_error,
            )

        async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
            endpoint.seen()
            return types.ListResourcesResult(
                resources=[
                    types.Resource(
                        uri=STATE_URI,
                        name="state",
                        description="This agent's view of the run: the agents it can reach, "
                        "its threads and their messages",
                        mime_type="application/json",
                    ),
                    types.Resource(
                        uri=INSTRUCTION_URI,
                        name="instruction",
                        description="How to use the tools in this run, and the agents this "
                        "one can reach",
                        mime_type="text/markdown",
                    ),
                ]
            )

        async def read_resource(
            ctx: Any, params: types.ReadResourceRequestParams
        ) -> types.ReadResourceResult:
            endpoint.seen()
            uri = str(params.uri)
            if uri == STATE_URI:
                text = json.dumps(state_view(endpoint.ctx), ensure_ascii=False)
                mime = "application/json"
            elif uri == INSTRUCTION_URI:
                text, mime = instruction_text(endpoint.ctx), "text/markdown"
            else:
                from mcp.shared.exceptions import MCPError

                raise MCPError(
                    -32602,
                    f"unknown resource {uri}; the resources are {STATE_URI} and {INSTRUCTION_URI}",
                )
            return types.ReadResourceResult(
                contents=[types.TextResourceContents(uri=uri, mime_type=mime, text=text)]
            )

        global _MODERN
        if not _MODERN:
            from mcp_types.version import MODERN_PROTOCOL_VERSIONS

            _MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
        self._server_info = {
            "io.modelcontextprotocol/serverInfo": {"name": "coral-graph", "version": "0.1.0"}
        }
        self._server = Server(
            "coral-graph",
            version="0.1.0",
            instructions=f"You are agent {self.name} of a coral-graph run. Use the tools to "
            "talk to the other agents; read coral://instruction for how, and coral://state "
            "for your threads.",
            on_list_tools=list_tools,
            on_call_tool=call,
            # Without it the SDK runs the whole tools/list handler before every
            # tools/call (to check Mcp-Param headers): 14 schemas per call.
            get_tool_input_schema=schemas.get,
            on_list_resources=list_resources,
            on_read_resource=read_resource,
        )
        self._http = StreamableHTTPSessionManager(
            app=self._server, max_sessions=_MAX_SESSIONS, session_idle_timeout=600.0
        )
        self._sse = SseServerTransport("/sse/")

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the endpoint's session manager until :meth:`close`."""
        self._build()
        async with self._http.run():
            task_status.started()
            await self._stop.wait()

    async def call(
        self, name: str, arguments: dict[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        """Run one tool call; returns the result object and whether it is an error.

        Every call other than a wait keeps the agent busy while it runs: a wait of
        the same agent that arrives meanwhile starts waiting (and the agent counts
        as idle, after :data:`IDLE_SETTLE_S`) only once those calls are done.
        """
        self.seen()
        t0 = time.perf_counter()
        cs = anyio.CancelScope()
        self._scopes.add(cs)
        self._calling.set()
        busy = self._busy_calls if name not in WAIT_TOOLS else contextlib.nullcontext()
        try:
            with busy, cs:
                try:
                    result = await call_tool(
                        self.ctx,
                        name,
                        arguments,
                        before_wait=self._busy_calls.wait_none,
                        idle_after=IDLE_SETTLE_S,
                    )
                    return result, False
                except ToolError as exc:
                    data = exc.to_dict()
        except BaseException:
            # Cancelled from outside: the client dropped the call (its connection
            # closed). A wait cancelled before it returned drained nothing.
            self.lost("a call was dropped")
            raise
        finally:
            self._scopes.discard(cs)
            if not self._scopes:
                self._calling = anyio.Event()
        if cs.cancelled_caught:
            data = {
                "ok": False,
                "error": "RunEndedError",
                "message": f"run {self.run_id} has ended; nothing more can happen in it",
            }
        # A failed call is never hidden: it is an event of the transcript.
        self.ctx.record_tool_call(
            tool=name,
            arguments=dict(arguments or {}),
            result=json.dumps(data, ensure_ascii=False),
            ok=False,
            duration_s=time.perf_counter() - t0,
        )
        return data, True

    def close(self) -> None:
        """End the endpoint: calls in flight return "run ended", new ones get 410.

        The session manager stops once the POSTs in flight have written their
        answers (at most :data:`_CLOSE_GRACE_S`): the call whose message ended the
        run (an answer, a budget) gets its result like any other."""
        self.closed = True
        for cs in list(self._scopes):
            cs.cancel()
        tg = self.hub._tg
        if not self._posts.count or tg is None:
            self._stop.set()
            return
        tg.start_soon(self._stop_after_posts)

    async def _stop_after_posts(self) -> None:
        with anyio.move_on_after(_CLOSE_GRACE_S, shield=True):
            await self._posts.wait_none()
        self._stop.set()

    # -- HTTP ---------------------------------------------------------------------------

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, rest: str, headers: dict[str, str]
    ) -> None:
        if rest == "mcp":
            method = scope["method"]
            if method == "DELETE":
                self.lost("the client ended its session")
            elif method == "POST" and FAST_PATH and headers.get(_VERSION) in _MODERN:
                await self._post(scope, receive, send, headers)
                return
            if method != "POST":
                await self._http.handle_request(scope, receive, send)
                return
            # A POST's answer is written by the session manager: it must outlive the
            # POST (see close), or the call that ends the run loses its answer.
            with self._posts:
                await self._http.handle_request(scope, receive, send)
            return
        # SSE: GET opens the stream, POST carries the client's messages.
        if scope["method"] == "GET":
            if self.sse_streams >= _MAX_SESSIONS:
                await _plain(send, 503, f"agent {self.name} has too many open SSE streams")
                return
            assert self._server is not None
            self.sse_streams += 1
            try:
                async with self._sse.connect_sse(scope, receive, send) as (r, w):
                    self.seen()
                    await self._server.run(r, w, self._server.create_initialization_options())
            finally:
                self.sse_streams -= 1
                if not self.closed:
                    self.lost("its SSE stream closed")
            return
        await self._sse.handle_post_message(scope, receive, send)

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """A POST of the current protocol (one request, one response, no session).

        ``tools/call`` is the hot path of every agent: a well-formed one is answered
        here, with the same JSON the SDK's server gives (a test compares them byte
        for byte), without the SDK's per-request machinery (request models, task
        group, tracing spans, response models). Everything else, and any request
        this does not fully accept, goes to the SDK unchanged, which answers it or
        refuses it with the protocol's error.
        """
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= _MAX_BODY:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its request was complete
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        call = None if more else _tools_call(b"".join(chunks), scope, headers)
        if call is None:
            await self._http.handle_request(scope, _replay(chunks, more, receive), send)
            return
        request_id, name, arguments = call
        if name in WAIT_TOOLS and not self.ctx.pending_mentions():
            # A wait can last a minute: a client that goes away cancels it before it
            # takes anything (as the SDK's streaming response does).
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                data, is_error = await self.call(name, arguments)
                await self._respond(send, request_id, data, is_error)
                tg.cancel_scope.cancel()
            return
        data, is_error = await self.call(name, arguments)
        if name not in WAIT_TOOLS:
            # A send may have woken another agent's wait: its answer goes out first
            # (it is on that agent's critical path, this one is not).
            await anyio.lowlevel.checkpoint()
        await self._respond(send, request_id, data, is_error)

    async def _respond(
        self, send: Send, request_id: str | int, data: dict[str, Any], is_error: bool
    ) -> None:
        result = {
            "content": [{"text": json.dumps(data, ensure_ascii=False), "type": "text"}],
            "isError": is_error,
            "resultType": "complete",
            "structuredContent": data,
            "_meta": self._server_info,
        }
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "result": result}, separators=(",", ":")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


FAST_PATH = True
"""Answer well-formed ``tools/call`` POSTs without the SDK's per-request machinery
(tests turn it off to compare the two answers)."""
_VERSION = "mcp-protocol-version"
_MODERN: frozenset[str] = frozenset()
_ROUTING: frozenset[str] = frozenset({"mcp-protocol-version", "mcp-method", "mcp-name"})
_PARAMS = frozenset({"name", "arguments", "_meta"})


def _accepts(headers: dict[str, str]) -> bool:
    """Whether the Accept header takes JSON and SSE (the SDK's streaming mode
    requires both)."""
    types = {t.split(";")[0].strip().lower() for t in headers.get("accept", "").split(",")}
    if "*/*" in types:
        return True
    return bool(types & {"application/json", "application/*"}) and bool(
        types & {"text/event-stream", "text/*"}
    )


def _tools_call(
    body: bytes, scope: Scope, headers: dict[str, str]
) -> tuple[str | int, str, dict[str, Any] | None] | None:
    """``(id, tool name, arguments)`` of a ``tools/call`` request the SDK would
    accept as it is, or None to hand the request to the SDK."""
    if not headers.get("content-type", "").startswith("application/json") or not _accepts(headers):
        return None
    if any(k.startswith("mcp-param-") for k in headers):
        return None
    try:
        d = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if (
        type(d) is not dict
        or d.keys() != {"jsonrpc", "id", "method", "params"}
        or d["jsonrpc"] != "2.0"
        or d["method"] != "tools/call"
    ):
        return None
    request_id, params = d["id"], d["params"]
    if type(request_id) not in (str, int) or type(params) is not dict or params.keys() - _PARAMS:
        return None
    name, arguments = params.get("name"), params.get("arguments")
    if type(name) is not str or (arguments is not None and type(arguments) is not dict):
        return None
    seen: set[str] = set()
    for k, _v in scope["headers"]:
        key = k.decode("latin-1").lower()
        if key in _ROUTING:
            if key in seen:
                return None  # the SDK names the duplicated header
            seen.add(key)
    from mcp.shared.inbound import InboundModernRoute, classify_inbound_request

    if not isinstance(classify_inbound_request(d, headers=headers), InboundModernRoute):
        return None
    return request_id, name, arguments


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """``receive`` with the body already read given back first."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]

    async def replay() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MCPHub:
    """The MCP server of external and process agents.

    Agents enter :meth:`serving` (reference-counted: the first starts the server,
    the last stops it); a program that runs many graphs can hold it open itself::

        hub = MCPHub(port=8765)
        async with hub.serving():
            ...  # runs whose external/process agents use this hub

    Args:
        host: the address to bind; loopback unless ``allow_remote``.
        port: the port (0: any free port).
        allow_remote: allow a non-loopback ``host`` (a warning is printed: anyone who
            can reach the port and learns a secret joins the run as that agent).
        public_host: the host name put in the URLs handed to agents (default:
            ``host``, or 127.0.0.1 when bound to every interface).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        public_host: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.allow_remote = allow_remote
        self.public_host = public_host
        self.announce = False
        """Print each external agent's URL to stderr when its run starts (the CLI does)."""
        self._users = 0
        self._tg: TaskGroup | None = None
        self._uvicorn: Any = None
        self._bound_port: int | None = None
        self._hosts: frozenset[str] = frozenset()
        self._origins: frozenset[str] = frozenset()
        self._any_host = False
        self._endpoints: dict[str, Endpoint] = {}
        self._ended: dict[str, str] = {}
        self._in_flight = 0
        self._ready: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._served: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"MCPHub({self.host!r}, {self.port})"

    def check_host(self) -> None:
        """Raise :class:`~coral_graph.ConfigError` for a non-loopback host without
        ``allow_remote``."""
        from coral_graph._errors import ConfigError

        if not is_loopback(self.host) and not self.allow_remote:
            raise ConfigError(
                f"the MCP endpoint would listen on {self.host}, reachable from other machines; "
                "bind 127.0.0.1, or pass --mcp-allow-remote (allow_remote=True) if you mean it",
                field="mcp.host",
            )

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._bound_port is None:
            raise RuntimeError("the MCP hub is not serving; use `async with hub.serving()`")
        host = self.public_host or (
            "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        )
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._bound_port}"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[MCPHub]:
        """Keep the server running while inside (reference-counted)."""
        if self._users > 0:
            self._users += 1
            try:
                assert self._ready is not None
                await self._ready.wait()
                yield self
            finally:
                self._users -= 1
                if self._users == 0 and self._done is not None:
                    self._done.set()
            return
        self.check_host()
        self._users = 1
        # Importing the SDK and Uvicorn takes a second or more: not on the event loop,
        # where it would stall every agent of the run.
        await anyio.to_thread.run_sync(preload_sdk)
        self._ready = anyio.Event()
        self._done = anyio.Event()
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                sock = self._bind()
                if not is_loopback(self.host):
                    print(
                        f"warning: the MCP endpoint listens on {self.host}:{self._bound_port}, "
                        "reachable from other machines; anyone who learns an agent's URL can "
                        "act as that agent",
                        file=sys.stderr,
                    )
                tg.start_soon(self._serve, sock)
                self._ready.set()
                try:
                    yield self
                except Exception as exc:
                    # Re-raised below, outside the task group: the caller sees its own
                    # error, not an ExceptionGroup around it.
                    failure = exc
                finally:
                    self._users -= 1
                    if self._users > 0:
                        # Others still use the server: it stops when the last leaves.
                        with anyio.CancelScope(shield=True):
                            await self._done.wait()
                    await self._shutdown()
        finally:
            self._tg = None
            self._bound_port = None
            self._users = 0
            self._endpoints.clear()
        if failure is not None:
            raise failure

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it every response waited ~40 ms
        # for a delayed ACK (Nagle), 50 ms per tool call instead of ~3 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            from coral_graph._errors import ConfigError

            raise ConfigError(
                f"cannot listen on {self.host}:{self.port} for MCP agents: {exc.strerror}; "
                "pick another --mcp-port (0 picks a free one)",
                field="mcp.port",
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self._bound_port = sock.getsockname()[1]
        self._allow(self._bound_port)
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            # The runtime's owner handles signals (Ctrl-C cancels the run).
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                yield

        config = uvicorn.Config(
            self._app,
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            ws="none",
        )
        self._uvicorn = _Server(config)
        self._served = anyio.Event()
        try:
            await self._uvicorn.serve(sockets=[sock])
        finally:
            sock.close()
            self._served.set()

    async def _shutdown(self) -> None:
        for ep in list(self._endpoints.values()):
            ep.close()
        server = self._uvicorn
        if server is not None and self._served is not None:
            server.should_exit = True
            # serve() returns once its connections have closed (graceful: 1 s).
            with anyio.move_on_after(3, shield=True):
                await self._served.wait()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # -- endpoints -----------------------------------------------------------------------

    async def open_endpoint(self, ctx: AgentContext) -> Endpoint:
        """A new endpoint for the agent of ``ctx`` (call inside :meth:`serving`)."""
        if self._tg is None:
            raise RuntimeError("the MCP hub is not serving; use `async with hub.serving()`")
        ep = Endpoint(self, ctx, secrets.token_urlsafe(24))
        await self._tg.start(ep.serve)
        self._endpoints[ep.secret] = ep
        return ep

    def close_endpoint(self, ep: Endpoint) -> None:
        """Retire ``ep``: its secret answers 410 from now on."""
        ep.close()
        if self._endpoints.pop(ep.secret, None) is not None:
            self._ended[ep.secret] = ep.run_id
            if len(self._ended) > 10_000:
                self._ended.pop(next(iter(self._ended)))

    # -- the ASGI front --------------------------------------------------------------------

    def _host_ok(self, host: str) -> bool:
        return self._any_host or host in self._hosts

    def _origin_ok(self, origin: str) -> bool:
        return origin in self._origins

    def _allow(self, port: int) -> None:
        """The Host and Origin values this server answers, once it is bound (checked
        on every request: worked out once here)."""
        hosts = [f"{n}:{port}" for n in _LOOPBACK_NAMES]
        if self.public_host:
            hosts.append(f"{self.public_host}:{port}")
        remote = not is_loopback(self.host)
        if remote:
            hosts.append(f"{self.host}:{port}")
        self._hosts = frozenset(hosts)
        self._origins = frozenset(f"http://{h}" for h in hosts)
        # Bound to every interface: any name of this machine is its Host.
        self._any_host = remote and self.host in ("0.0.0.0", "::", "")

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self._host_ok(host):
            await _plain(send, 421, f"Host {host!r} is not this MCP server's; refused")
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin):
            await _plain(send, 403, f"Origin {origin!r} is not allowed; refused")
            return
        parts = scope["path"].strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["mcp", "v1"] or parts[3] not in ("mcp", "sse"):
            await _plain(
                send,
                404,
                "not an MCP endpoint; use the URL given to the agent: "
                "/mcp/v1/<secret>/mcp (streamable HTTP) or /mcp/v1/<secret>/sse/ (SSE)",
            )
            return
        secret = parts[2]
        ep = self._endpoints.get(secret)
        if ep is None:
            run = self._ended.get(secret)
            if run is not None:
                await _plain(send, 410, f"run {run} has ended; this agent URL is no longer valid")
            else:
                await _plain(send, 401, "unknown agent secret; use the URL given to the agent")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        claimed = query.get("agentId")
        if claimed and claimed[0] != ep.name:
            await _plain(
                send, 403, f"agentId {claimed[0]!r} does not match this URL's agent {ep.name!r}"
            )
            return
        if self._in_flight >= _MAX_REQUESTS:
            await _plain(send, 503, "too many requests in flight; retry shortly")
            return
        self._in_flight += 1
        try:
            # The SSE transport tells the client where to POST relative to root_path.
            inner = dict(scope)
            inner["root_path"] = scope.get("root_path", "") + f"/mcp/v1/{secret}"
            await ep.handle(inner, receive, send, parts[3], headers)
        finally:
            self._in_flight -= 1


def preload_sdk() -> None:
    """Import the MCP SDK and Uvicorn (call it in a worker thread)."""
    import mcp.server.lowlevel
    import mcp.server.sse
    import mcp.server.streamable_http_manager
    import mcp_types
    import uvicorn

    del mcp, mcp_types, uvicorn


_default: MCPHub | None = None


def default_hub() -> MCPHub:
    """The process's shared hub on 127.0.0.1 and a free port (agents that were given
    no hub use it)."""
    global _default
    if _default is None:
        _default = MCPHub()
    return _default
