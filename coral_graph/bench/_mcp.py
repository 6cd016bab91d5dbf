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
from collections.abc import Callable
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


def _spawn(mode: str, url: str, n: int, warmup: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coral_graph.bench._mcp", "client", mode, url, str(n), str(warmup)],
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


async def _floor_once(mode: str, n: int, warmup: int) -> dict[str, Any]:
    async with _floor_server() as url:
        if mode != "relay":
            return await _collect(_spawn(mode, url, n, warmup))
        pong = _spawn("relay-pong", url, n, warmup)
        out = await _collect(_spawn("relay-ping", url, n, warmup))
        out["cpu_s"] += (await _collect(pong))["cpu_s"]
        return out


# -- ours: two external agents ------------------------------------------------------------


async def _ours_once(pattern: str, n: int, warmup: int) -> dict[str, Any]:
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
        pong = _spawn("pong" + pattern, urls["b"], n, warmup)
        out = await _collect(_spawn("ping" + pattern, urls["a"], n, warmup))
        result = await handle.wait()
        out["cpu_s"] += (await _collect(pong))["cpu_s"]
    if result.stop_reason != "answer":
        raise RuntimeError(f"the MCP bench run ended with {result.stop_reason}: {result.error}")
    return out


IMPLS: dict[str, tuple[str, str]] = {
    "floor": ("floor", "echo"),
    "floor-2calls": ("floor", "echo2"),
    "floor-relay": ("floor", "relay"),
    "coral-graph": ("ours", "-c"),
    "coral-graph-seq": ("ours", ""),
}
"""Row name -> (server, client mode)."""


def _measure(impl: str, round_trips: int, warmup: int) -> dict[str, float]:
    server, mode = IMPLS[impl]
    if server == "floor":
        return _figures(anyio.run(_floor_once, mode, round_trips, warmup))
    return _figures(anyio.run(_ours_once, mode, round_trips, warmup))


def mcp_bench(
    *, round_trips: int = 500, warmup: int = 50, repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The rows of :data:`IMPLS`, ``repeats`` times each, interleaved (each
    repeat runs all four back to back, starting one further along the list); medians
    of the per-repeat figures, and each row's ratio to the floor as the median of the
    per-repeat ratios."""
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
    floor = samples["floor"]
    for impl in names:
        rows = samples[impl]
        fig: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        fig["repeats"] = repeats
        if impl != "floor":
            fig["ratio_to_floor"] = statistics.median(
                a["round_trips_per_s"] / b["round_trips_per_s"]
                for a, b in zip(rows, floor, strict=True)
            )
        out[impl] = fig
    return out


# -- the client processes -------------------------------------------------------------------


async def _listen(call: Any, peer: str, out: Any) -> None:
    """Keep one ``wait_for_mentions`` in flight; hand each message from ``peer`` over."""
    from mcp.shared.exceptions import MCPError

    async with out:
        while True:
            try:
                res = await call("wait_for_mentions", {"timeoutMs": 60000})
            except MCPError:
                return  # the run is over: its endpoint answers 410
            if res.is_error:
                return  # the run ended during the wait
            msgs = (res.structured_content or {}).get("messages", [])
            got = [m for m in msgs if m["senderId"] == peer]
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


async def _client(mode: str, url: str, n: int, warmup: int) -> dict[str, Any]:
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    meter = _Meter(warmup)
    clock = time.perf_counter
    async with Client(url) as client:
        call = client.call_tool
        if mode in ("echo", "echo2"):
            calls = 2 if mode == "echo2" else 1
            for _ in range(warmup + n):
                meter.tick()
                t0 = clock()
                for _ in range(calls):
                    res = await call("echo", {"text": PAYLOAD})
                    assert not res.is_error
                meter.took(t0)
            return meter.result()
        if mode == "relay-pong":
            for _ in range(warmup + n):
                taken = (await call("take", {"me": "b"})).structured_content or {}
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
                tg.start_soon(_listen, call, "a", send)
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
                    res = await call("wait_for_mentions", {"timeoutMs": 60000})
                except MCPError:
                    return meter.result()  # the run is over: its endpoint answers 410
                if res.is_error:
                    return meter.result()  # the run ended during the wait
                msgs = [
                    m
                    for m in (res.structured_content or {}).get("messages", [])
                    if m["senderId"] == "a"
                ]
        # ping: take the task, open a thread with b, then round trips.
        await call("wait_for_mentions", {"timeoutMs": 10000})
        th = await call("create_thread", {"threadName": "bench", "participantIds": ["b"]})
        tid = (th.structured_content or {})["thread"]["id"]
        ping = {"threadId": tid, "content": PAYLOAD, "mentions": ["b"]}
        done = {"threadId": "t-1", "content": "done", "mentions": ["user"]}
        if mode == "ping-c":
            send, inbox = anyio.create_memory_object_stream[Any](1000)
            async with anyio.create_task_group() as tg, inbox:
                tg.start_soon(_listen, call, "b", send)
                for _ in range(warmup + n):
                    meter.tick()
                    t0 = clock()
                    await call("send_message", ping)
                    await inbox.receive()
                    meter.took(t0)
                out = meter.result()
                await call("send_message", done)
                tg.cancel_scope.cancel()
            return out
        for _ in range(warmup + n):
            meter.tick()
            t0 = clock()
            await call("send_message", ping)
            got: list[Any] = []
            while not got:
                res = await call("wait_for_mentions", {"timeoutMs": 60000})
                got = (res.structured_content or {}).get("messages", [])
            meter.took(t0)
        out = meter.result()
        await call("send_message", done)
        return out


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "client":
    _mode, _url, _n, _w = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    _out = anyio.run(_client, _mode, _url, _n, _w)
    _out["rtts"] = [round(x, 1) for x in _out["rtts"]]
    print(json.dumps(_out))
