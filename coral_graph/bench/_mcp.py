"""``coral-graph bench --mcp``: message round trips between two external agents over
MCP, beside references measured in the same run with the same client.

Every client is the official ``mcp`` client in its own process, over streamable HTTP
on 127.0.0.1. One round trip: ``a`` sends a message mentioning ``b``, ``b``'s
``wait_for_mentions`` returns it, ``b`` replies mentioning ``a``, ``a``'s wait
returns the reply. Full semantics: edges, threads, budgets, events.

* **coral-graph** (the main figure): each agent keeps one ``wait_for_mentions`` in
  flight while it sends (MCP allows concurrent requests; the server keeps an agent
  busy while one of its calls is being served, see ``coral_graph.mcp``). This is how
  a fast agent is written: a listener task that always waits, and replies sent as
  soon as a message arrives. Each round trip still needs two calls end to end
  (``a``'s send reaching the server, ``b``'s reply reaching it).
* **coral-graph-seq**: one call at a time, as Coral's own agents do: ``a`` sends,
  then waits; ``b`` waits, then replies.
* **floor**: a bare SDK low-level server (one ``echo`` tool, the same Uvicorn, the
  SDK's streamable HTTP session manager) called once per round trip.
* **floor-2calls**: the same server called twice in sequence per round trip: what
  two calls end to end cost at the least, so the reader sees what bounds the
  ratio.
* **floor-relay**: the round trip itself on the bare SDK server, no runtime: a
  mailbox of two tools, ``post(to, text)`` and ``take(me)`` (blocks until a text for
  ``me`` arrives), driven like coral-graph-seq. What the SDK and the client cost for
  a message round trip, calls that wait for the other side included.

Figures: round trips per second (over the wall time of the measured loop), p50 and
p99 round-trip latency (µs), the clients' own CPU time per round trip (µs, both
clients where there are two: steady however loaded the machine is) and, for each,
its throughput ÷ the floor's (the median
of the per-repeat ratios; all ran back to back in each repeat, in a rotating
order). The client processes print their latencies as JSON; run this module with
``client MODE URL N WARMUP`` to be one.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["mcp_bench"]

PAYLOAD = "x" * 100


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _figures(out: dict[str, Any]) -> dict[str, float]:
    rtts_us: list[float] = out["rtts"]
    wall = out["wall_s"]
    return {
        "round_trips_per_s": len(rtts_us) / wall if wall else 0.0,
        "p50_us": statistics.median(rtts_us),
        "p99_us": _percentile(rtts_us, 0.99),
        # The clients' own CPU time per round trip (both sides when there are two):
        # what the MCP client costs, whatever else the machine is doing.
        "client_cpu_us": out["cpu_s"] / len(rtts_us) * 1e6,
    }


def _spawn(client: str, mode: str, url: str, n: int, warmup: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coral_graph.bench._mcp", client, mode, url, str(n), str(warmup)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def _collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out = await anyio.to_thread.run_sync(proc.communicate)
    if proc.returncode != 0:
        raise RuntimeError(f"the bench client failed with code {proc.returncode}")
    result: dict[str, Any] = json.loads(out[0].strip().splitlines()[-1])
    return result


# -- the floor: a bare SDK server ---------------------------------------------------------


@contextlib.asynccontextmanager
async def _floor_server() -> Any:
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    obj: dict[str, Any] = {"type": "object"}
    tools = [types.Tool(name=n, description=n, input_schema=obj) for n in ("echo", "post", "take")]
    # The mailbox of the relay reference: post(to, text) and take(me) blocks until a
    # text for ``me`` arrives (what a message round trip needs, with no runtime).
    boxes = {me: anyio.create_memory_object_stream[dict[str, Any]](1000) for me in ("a", "b")}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        if params.name == "post":
            data = {"from": args["me"], "text": args["text"]}
            boxes[args["to"]][0].send_nowait(data)
        elif params.name == "take":
            data = await boxes[args["me"]][1].receive()
        else:
            data = {"text": args.get("text", "")}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(data))],
            structured_content=data,
        )

    server = Server("floor", on_list_tools=list_tools, on_call_tool=call_tool)
    manager = StreamableHTTPSessionManager(app=server)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await manager.handle_request(scope, receive, send)

    sock = socket.socket()
    # As Uvicorn does for the sockets it opens itself (and as the hub does).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, interface="asgi3",
        proxy_headers=False, ws="none",
    )  # fmt: skip
    uv = _Server(config)
    served = anyio.Event()

    async def serve() -> None:
        try:
            await uv.serve([sock])
        finally:
            served.set()

    async with contextlib.AsyncExitStack() as stack:
        for box in boxes.values():  # closed at the end, as every stream must be
            for end in box:
                await stack.enter_async_context(end)
        async with manager.run(), anyio.create_task_group() as tg:
            tg.start_soon(serve)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
            uv.should_exit = True
            with anyio.move_on_after(3):
                await served.wait()
            tg.cancel_scope.cancel()
    sock.close()


async def _floor_once(client: str, mode: str, n: int, warmup: int) -> dict[str, Any]:
    async with _floor_server() as url:
        if mode != "relay":
            return await _collect(_spawn(client, mode, url, n, warmup))
        pong = _spawn(client, "relay-pong", url, n, warmup)
        out = await _collect(_spawn(client, "relay-ping", url, n, warmup))
        out["cpu_s"] += (await _collect(pong))["cpu_s"]
        return out


# -- ours: two external agents ------------------------------------------------------------


async def _ours_once(client: str, pattern: str, n: int, warmup: int) -> dict[str, Any]:
    import coral_graph as cg
    from coral_graph.mcp import ExternalAgent, MCPHub

    hub = MCPHub()
    g = cg.AgentGraph("mcp-bench", entry=["a"])
    g.add_agent("a", ExternalAgent("pings b", hub=hub, connect_timeout_s=60), on_error="stop")
    g.add_agent("b", ExternalAgent("answers a", hub=hub, connect_timeout_s=60), on_error="stop")
    g.connect("a", "b", mutual=True)
    urls: dict[str, str] = {}
    ready = anyio.Event()

    def on_event(event: cg.Event) -> None:
        if (
            isinstance(event, cg.AgentLogged)
            and event.data
            and event.data.get("event") == "endpoint"
        ):
            urls[event.agent] = event.data["url"]
            if len(urls) == 2:
                ready.set()

    async with hub.serving(), cg.open_runtime(g) as rt:
        rt.subscribe(on_event)
        handle = rt.start("bench", entry=["a"])
        await ready.wait()
        pong = _spawn(client, "pong" + pattern, urls["b"], n, warmup)
        out = await _collect(_spawn(client, "ping" + pattern, urls["a"], n, warmup))
        result = await handle.wait()
        out["cpu_s"] += (await _collect(pong))["cpu_s"]
    if result.stop_reason != "answer":
        raise RuntimeError(f"the MCP bench run ended with {result.stop_reason}: {result.error}")
    return out


IMPLS: dict[str, tuple[str, str, str]] = {
    "floor": ("sdk", "floor", "echo"),
    "floor-2calls": ("sdk", "floor", "echo2"),
    "floor-relay": ("sdk", "floor", "relay"),
    "coral-graph": ("sdk", "ours", "-c"),
    "coral-graph-seq": ("sdk", "ours", ""),
    "lean:floor": ("lean", "floor", "echo"),
    "lean:floor-relay": ("lean", "floor", "relay"),
    "lean:coral-graph": ("lean", "ours", "-c"),
    "lean:coral-graph-seq": ("lean", "ours", ""),
    "lean2025:floor": ("lean2025", "floor", "echo"),
    "lean2025:coral-graph": ("lean2025", "ours", "-c"),
    "lean2025:coral-graph-seq": ("lean2025", "ours", ""),
}
"""Row name -> (client, server, client mode). The client: ``sdk`` the official
``mcp`` client, ``lean`` :class:`~coral_graph.bench._lean.LeanClient` on the
per-request-envelope protocol (2026-07-28, what the official client negotiates),
``lean2025`` the same client through the ``initialize`` handshake (2025-11-25,
``Mcp-Session-Id``). A row's ratio is to the ``floor`` of its own client."""


def floor_of(impl: str) -> str:
    """The floor row that ``impl`` is measured against (the same client's)."""
    group, _, _row = impl.rpartition(":")
    return f"{group}:floor" if group else "floor"


def _measure(impl: str, round_trips: int, warmup: int) -> dict[str, float]:
    client, server, mode = IMPLS[impl]
    once = _floor_once if server == "floor" else _ours_once
    return _figures(anyio.run(once, client, mode, round_trips, warmup))


def mcp_bench(
    *, round_trips: int = 500, warmup: int = 50, repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The rows of :data:`IMPLS`, ``repeats`` times each, interleaved (each
    repeat runs all of them back to back, starting one further along the list);
    medians of the per-repeat figures, and each row's ratio to the floor of its
    client as the median of the per-repeat ratios."""
    names = list(IMPLS)
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for i in range(repeats):
        for impl in names[i % len(names) :] + names[: i % len(names)]:
            samples[impl].append(_measure(impl, round_trips, warmup))
        log(
            f"    repeat {i + 1}: "
            + ", ".join(f"{k} {samples[k][-1]['round_trips_per_s']:,.1f}/s" for k in names)
        )
    out: dict[str, dict[str, Any]] = {}
    for impl in names:
        rows = samples[impl]
        fig: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        fig["client"] = IMPLS[impl][0]
        fig["repeats"] = repeats
        floor = floor_of(impl)
        if impl != floor:
            fig["ratio_to_floor"] = statistics.median(
                a["round_trips_per_s"] / b["round_trips_per_s"]
                for a, b in zip(rows, samples[floor], strict=True)
            )
        out[impl] = fig
    return out


# -- the client processes -------------------------------------------------------------------


Call = Callable[[str, dict[str, Any]], Awaitable[tuple[dict[str, Any], bool]]]
"""One tool call: the result's ``structuredContent`` and whether it is an error."""


async def _listen(call: Call, peer: str, out: Any, gone: tuple[type[Exception], ...]) -> None:
    """Keep one ``wait_for_mentions`` in flight; hand each message from ``peer`` over."""
    async with out:
        while True:
            try:
                data, is_error = await call("wait_for_mentions", {"timeoutMs": 60000})
            except gone:
                return  # the run is over: its endpoint answers 410
            if is_error:
                return  # the run ended during the wait
            got = [m for m in data.get("messages", []) if m["senderId"] == peer]
            for m in got:
                out.send_nowait(m)
            if got:
                # Let the reply go out before the next wait is written.
                await anyio.lowlevel.checkpoint()


class _Meter:
    """Wall and CPU time of a client's measured round trips (after the warm-up)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.count = 0
        self.wall0 = self.cpu0 = 0.0
        self.rtts: list[float] = []

    def tick(self) -> None:
        """A round trip begins (or, on the answering side, a reply)."""
        if self.count == self.warmup:
            self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.count += 1

    def took(self, t0: float) -> None:
        if self.count > self.warmup:
            self.rtts.append((time.perf_counter() - t0) * 1e6)

    def result(self) -> dict[str, Any]:
        started = self.count > self.warmup
        return {
            "rtts": self.rtts,
            "wall_s": time.perf_counter() - self.wall0 if started else 0.0,
            "cpu_s": time.process_time() - self.cpu0 if started else 0.0,
        }


Raw = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""One tool call: the whole result as JSON (what :data:`SEVEN` compares)."""


@contextlib.asynccontextmanager
async def _connect(
    client: str, url: str
) -> AsyncIterator[tuple[Call, Raw, tuple[type[Exception], ...]]]:
    """Tool-call functions of ``client`` on ``url`` (the hot one and the whole-result
    one), and the errors they raise when the endpoint is gone."""
    if client == "sdk":
        from mcp import Client
        from mcp.shared.exceptions import MCPError

        async with Client(url) as sdk:

            async def sdk_call(name: str, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
                res = await sdk.call_tool(name, args)
                return res.structured_content or {}, res.is_error

            async def sdk_raw(name: str, args: dict[str, Any]) -> dict[str, Any]:
                res = await sdk.call_tool(name, args)
                return res.model_dump(mode="json", by_alias=True, exclude_none=True)

            yield sdk_call, sdk_raw, (MCPError,)
        return
    from coral_graph.bench._lean import HANDSHAKE, MODERN, LeanClient, LeanClientError

    async with LeanClient(url, protocol=HANDSHAKE if client == "lean2025" else MODERN) as lean:

        async def lean_call(name: str, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
            res = await lean.call_tool(name, args)
            return res.get("structuredContent") or {}, bool(res.get("isError"))

        yield lean_call, lean.call_tool, (LeanClientError,)


SEVEN: list[tuple[str, dict[str, Any]]] = [
    ("wait_for_mentions", {"timeoutMs": 10000}),
    ("list_agents", {"includeDetails": True}),
    ("coral_list_agents", {"includeDetails": False}),
    ("create_thread", {"threadName": "plan", "participantIds": ["b"]}),
    ("add_participant", {"threadId": "t-2", "participantId": "c"}),
    ("send_message", {"threadId": "t-2", "content": "hello", "mentions": ["b", "c"]}),
    ("remove_participant", {"threadId": "t-2", "participantId": "c"}),
    ("coral_close_thread", {"threadId": "t-2", "summary": "planned"}),
    ("send_message", {"threadId": "t-2", "content": "late", "mentions": ["b"]}),
    ("create_thread", {"threadName": "x", "participantIds": ["nobody"]}),
    ("wait_for_mentions", {"timeoutMs": -1}),
    ("wait_for_mentions", {"timeoutMs": 0}),
]
"""What agent ``a`` of a run (entry, edges to ``b`` and ``c``) does in a ``seven``
client: every one of the seven tools, two v1.0 aliases, and refusals (a closed
thread, an unknown agent, a negative wait). Then it answers the run (``ANSWER``)."""
ANSWER = {"threadId": "t-1", "content": "answered", "mentions": ["user"]}


async def _client(client: str, mode: str, url: str, n: int, warmup: int) -> dict[str, Any]:
    async with _connect(client, url) as (call, raw, gone):
        if mode == "seven":
            results = [await raw(name, args) for name, args in SEVEN]
            # The answer ends the run and its endpoint: on the handshake protocol
            # the session's stream can close before this call's answer is written.
            try:
                answered: dict[str, Any] | None = await raw("send_message", ANSWER)
            except gone:
                answered = None
            return {"results": results, "answered": answered}
        return await _drive(call, gone, mode, n, warmup)


async def _drive(
    call: Call, gone: tuple[type[Exception], ...], mode: str, n: int, warmup: int
) -> dict[str, Any]:
    meter = _Meter(warmup)
    clock = time.perf_counter
    if mode in ("echo", "echo2"):
        calls = 2 if mode == "echo2" else 1
        for _ in range(warmup + n):
            meter.tick()
            t0 = clock()
            for _ in range(calls):
                data, is_error = await call("echo", {"text": PAYLOAD})
                if is_error or data.get("text") != PAYLOAD:
                    raise RuntimeError(f"the echo answered {data!r}")
            meter.took(t0)
        return meter.result()
    if mode == "relay-pong":
        for _ in range(warmup + n):
            taken, _ = await call("take", {"me": "b"})
            meter.tick()
            await call("post", {"me": "b", "to": "a", "text": taken["text"]})
        return meter.result()
    if mode == "relay-ping":
        for _ in range(warmup + n):
            meter.tick()
            t0 = clock()
            await call("post", {"me": "a", "to": "b", "text": PAYLOAD})
            await call("take", {"me": "a"})
            meter.took(t0)
        return meter.result()
    if mode == "pong-c":
        send, inbox = anyio.create_memory_object_stream[Any](1000)
        async with anyio.create_task_group() as tg, inbox:
            tg.start_soon(_listen, call, "a", send, gone)
            async for m in inbox:
                meter.tick()
                reply = {"threadId": m["threadId"], "content": m["content"], "mentions": ["a"]}
                await call("send_message", reply)
        return meter.result()
    if mode == "pong":
        msgs: list[Any] = []
        while True:
            for m in msgs:
                meter.tick()
                reply = {"threadId": m["threadId"], "content": m["content"], "mentions": ["a"]}
                await call("send_message", reply)
            try:
                data, is_error = await call("wait_for_mentions", {"timeoutMs": 60000})
            except gone:
                return meter.result()  # the run is over: its endpoint answers 410
            if is_error:
                return meter.result()  # the run ended during the wait
            msgs = [m for m in data.get("messages", []) if m["senderId"] == "a"]
    # ping: take the task, open a thread with b, then round trips.
    await call("wait_for_mentions", {"timeoutMs": 10000})
    th, _ = await call("create_thread", {"threadName": "bench", "participantIds": ["b"]})
    ping = {"threadId": th["thread"]["id"], "content": PAYLOAD, "mentions": ["b"]}
    done = {"threadId": "t-1", "content": "done", "mentions": ["user"]}
    if mode == "ping-c":
        send, inbox = anyio.create_memory_object_stream[Any](1000)
        async with anyio.create_task_group() as tg, inbox:
            tg.start_soon(_listen, call, "b", send, gone)
            for _ in range(warmup + n):
                meter.tick()
                t0 = clock()
                await call("send_message", ping)
                await inbox.receive()
                meter.took(t0)
            out = meter.result()
            await _finish(call, gone, done)
            tg.cancel_scope.cancel()
        return out
    for _ in range(warmup + n):
        meter.tick()
        t0 = clock()
        await call("send_message", ping)
        got: list[Any] = []
        while not got:
            data, _ = await call("wait_for_mentions", {"timeoutMs": 60000})
            got = data.get("messages", [])
        meter.took(t0)
    out = meter.result()
    await _finish(call, gone, done)
    return out


async def _finish(call: Call, gone: tuple[type[Exception], ...], done: dict[str, Any]) -> None:
    """Answer the run. The message ends it, and with it the endpoint: on the
    handshake protocol the session's stream can close before the answer to this
    call is written. Whether the run got it is checked by the runtime's side
    (its stop reason must be ``answer``)."""
    with contextlib.suppress(*gone):
        await call("send_message", done)


CLIENTS = ("sdk", "lean", "lean2025")


def _main(argv: list[str]) -> int:
    """``CLIENT MODE URL N WARMUP``: be one bench client; print its figures as JSON."""
    if len(argv) != 5 or argv[0] not in CLIENTS or not (argv[3].isdigit() and argv[4].isdigit()):
        print(
            f"usage: python -m coral_graph.bench._mcp {{{'|'.join(CLIENTS)}}} MODE URL N WARMUP"
            f" (got {' '.join(argv)!r})",
            file=sys.stderr,
        )
        return 2
    client, mode, url, n, warmup = argv
    out = anyio.run(_client, client, mode, url, int(n), int(warmup))
    if "rtts" in out:
        out["rtts"] = [round(x, 1) for x in out["rtts"]]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
