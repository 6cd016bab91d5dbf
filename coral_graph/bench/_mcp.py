"""``coral-graph bench --mcp``: message round trips between two external agents over
MCP, beside a floor measured in the same run.

* **ours**: agents ``a`` and ``b`` of one graph are external agents, each driven by
  the official ``mcp`` client in its own process over streamable HTTP on 127.0.0.1.
  One round trip: ``a`` calls ``send_message`` (mentioning ``b``) then
  ``wait_for_mentions``; ``b``'s ``wait_for_mentions`` returns, it replies with
  ``send_message``; ``a``'s wait returns. Full semantics: edges, threads, events.
* **floor**: a bare SDK low-level server (one ``echo`` tool, the same Uvicorn and
  streamable HTTP session manager) and the same client calling ``echo`` once per
  round trip.

Figures: round trips per second, p50 and p99 round-trip latency (µs), and ours ÷
floor (throughput). The client processes print their latencies as JSON; run this
module with ``client MODE URL N WARMUP`` to be one.
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

__all__ = ["mcp_bench"]

PAYLOAD = "x" * 100


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _figures(rtts_us: list[float]) -> dict[str, float]:
    total_s = sum(rtts_us) / 1e6
    return {
        "round_trips_per_s": len(rtts_us) / total_s if total_s else 0.0,
        "p50_us": statistics.median(rtts_us),
        "p99_us": _percentile(rtts_us, 0.99),
    }


def _spawn(mode: str, url: str, n: int, warmup: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coral_graph.bench._mcp", "client", mode, url, str(n), str(warmup)],
        stdout=subprocess.PIPE if mode != "pong" else None,
        text=True,
    )


async def _collect(proc: subprocess.Popen[str]) -> list[float]:
    out = await anyio.to_thread.run_sync(proc.communicate)
    if proc.returncode != 0:
        raise RuntimeError(f"the bench client failed with code {proc.returncode}")
    return [float(x) for x in json.loads(out[0].strip().splitlines()[-1])]


# -- the floor: a bare SDK server ---------------------------------------------------------


@contextlib.asynccontextmanager
async def _floor_server() -> Any:
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name="echo",
                    description="echo",
                    input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
                )
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        data = {"text": (params.arguments or {}).get("text", "")}
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

    async with manager.run(), anyio.create_task_group() as tg:
        tg.start_soon(serve)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        uv.should_exit = True
        with anyio.move_on_after(3):
            await served.wait()
        tg.cancel_scope.cancel()
    sock.close()


async def _floor_once(n: int, warmup: int) -> list[float]:
    async with _floor_server() as url:
        return await _collect(_spawn("echo", url, n, warmup))


# -- ours: two external agents ------------------------------------------------------------


async def _ours_once(n: int, warmup: int) -> list[float]:
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
        pong = _spawn("pong", urls["b"], n, warmup)
        rtts = await _collect(_spawn("ping", urls["a"], n, warmup))
        result = await handle.wait()
        await anyio.to_thread.run_sync(pong.wait)
    if result.stop_reason != "answer":
        raise RuntimeError(f"the MCP bench run ended with {result.stop_reason}: {result.error}")
    return rtts


def mcp_bench(
    *, round_trips: int = 500, warmup: int = 50, repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Interleaved floor and ours, ``repeats`` times; medians of the per-repeat figures
    (the ratio is the median of the per-repeat ratios: floor and ours ran back to
    back)."""
    floor: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    for i in range(repeats):
        floor.append(_figures(anyio.run(_floor_once, round_trips, warmup)))
        ours.append(_figures(anyio.run(_ours_once, round_trips, warmup)))
        log(
            f"    repeat {i + 1}: floor {floor[-1]['round_trips_per_s']:,.1f}/s, "
            f"ours {ours[-1]['round_trips_per_s']:,.1f}/s"
        )

    def med(rows: list[dict[str, float]]) -> dict[str, Any]:
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"repeats": repeats}

    f, o = med(floor), med(ours)
    o["ratio_to_floor"] = statistics.median(
        a["round_trips_per_s"] / b["round_trips_per_s"] for a, b in zip(ours, floor, strict=True)
    )
    return {"floor": f, "coral-graph": o}


# -- the client processes -------------------------------------------------------------------


async def _client(mode: str, url: str, n: int, warmup: int) -> list[float]:
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    rtts: list[float] = []
    clock = time.perf_counter
    async with Client(url) as client:
        call = client.call_tool
        if mode == "echo":
            for i in range(warmup + n):
                t0 = clock()
                res = await call("echo", {"text": PAYLOAD})
                if i >= warmup:
                    rtts.append((clock() - t0) * 1e6)
                assert not res.is_error
            return rtts
        if mode == "pong":
            msgs: list[Any] = []
            while True:
                for m in msgs:
                    reply = {"threadId": m["threadId"], "content": m["content"], "mentions": ["a"]}
                    await call("send_message", reply)
                try:
                    res = await call("wait_for_mentions", {"timeoutMs": 60000})
                except MCPError:
                    return rtts  # the run is over: its endpoint answers 410
                if res.is_error:
                    return rtts  # the run ended during the wait
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
        for i in range(warmup + n):
            t0 = clock()
            await call("send_message", ping)
            got: list[Any] = []
            while not got:
                res = await call("wait_for_mentions", {"timeoutMs": 60000})
                got = (res.structured_content or {}).get("messages", [])
            if i >= warmup:
                rtts.append((clock() - t0) * 1e6)
        await call("send_message", {"threadId": "t-1", "content": "done", "mentions": ["user"]})
        return rtts


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "client":
    _mode, _url, _n, _w = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    _rtts = anyio.run(_client, _mode, _url, _n, _w)
    if _mode != "pong":
        print(json.dumps([round(x, 1) for x in _rtts]))
