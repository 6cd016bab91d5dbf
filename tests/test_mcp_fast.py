"""The MCP endpoint's hot path: ``tools/call`` answered without the SDK's
per-request machinery (byte for byte what the SDK answers), and agents that keep a
``wait_for_mentions`` in flight while they send (the official client, separate
processes, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import coral_graph as cg
from coral_graph.mcp import ExternalAgent, MCPHub, _server

pytestmark = pytest.mark.anyio

CLIENTS = Path(__file__).resolve().parent / "mcp_clients"
VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "mcp", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def pair(hub: MCPHub) -> tuple[cg.AgentGraph, ExternalAgent, ExternalAgent]:
    a = ExternalAgent("pings b", hub=hub, connect_timeout_s=60)
    b = ExternalAgent("answers a", hub=hub, connect_timeout_s=60)
    g = cg.AgentGraph("pair", entry=["a"])
    g.add_agent("a", a, on_error="stop")
    g.add_agent("b", b, on_error="stop")
    g.connect("a", "b", mutual=True)
    return g, a, b


def urls_of(rt: cg.Runtime) -> tuple[dict[str, str], anyio.Event]:
    urls: dict[str, str] = {}
    ready = anyio.Event()

    def on_event(event: cg.Event) -> None:
        if isinstance(event, cg.AgentLogged) and event.data and "url" in event.data:
            urls[event.agent] = event.data["url"]
            if len(urls) == 2:
                ready.set()

    rt.subscribe(on_event)
    return urls, ready


async def test_agents_that_keep_a_wait_in_flight_while_they_send_finish_their_run() -> None:
    # Each client's listener has its next wait pending while the agent thinks and
    # sends: the run must not end idle in between (the sends arrive just after).
    hub = MCPHub()
    g, _a, _b = pair(hub)
    with anyio.fail_after(60):
        async with hub.serving(), cg.open_runtime(g) as rt:
            urls, ready = urls_of(rt)
            handle = rt.start("ping b 20 times", entry=["a"])
            await ready.wait()
            listener = str(CLIENTS / "listener.py")
            pong = await anyio.open_process([sys.executable, listener, urls["b"], "pong", "20"])
            ping = await anyio.open_process([sys.executable, listener, urls["a"], "ping", "20"])
            result = await handle.wait()
            assert await ping.wait() == 0
            assert await pong.wait() == 0
    assert result.stop_reason == "answer", result.error
    assert result.answer == "20 round trips"
    assert result.usage["b"].messages_sent == 20


async def post(client: httpx.AsyncClient, url: str, body: Any, **headers: str) -> httpx.Response:
    base = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": VERSION,
        "mcp-method": "tools/call",
    }
    return await client.post(url, content=json.dumps(body), headers=base | headers)


def call(request_id: int, name: str, arguments: Any, **extra: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments, "_meta": META} | extra
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_the_fast_path_answers_tools_call_as_the_sdk_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answered: list[str] = []
    respond = _server.Endpoint._respond

    async def spy(self: _server.Endpoint, *args: Any) -> None:
        answered.append(self.name)
        await respond(self, *args)

    monkeypatch.setattr(_server.Endpoint, "_respond", spy)

    hub = MCPHub()
    g, _a, _b = pair(hub)
    with anyio.fail_after(60):
        async with hub.serving(), cg.open_runtime(g) as rt, httpx.AsyncClient() as http:
            urls, ready = urls_of(rt)
            handle = rt.start("the task", entry=["a"])
            await ready.wait()
            url = urls["a"]

            async def both(body: Any, **headers: str) -> tuple[int, str, bytes]:
                """The same request answered by the fast path, then by the SDK."""
                got = []
                for fast in (True, False):
                    monkeypatch.setattr(_server, "FAST_PATH", fast)
                    r = await post(http, url, body, **headers)
                    got.append((r.status_code, r.headers["content-type"], r.content))
                assert got[0] == got[1]
                return got[0]

            # The task is taken first, so that both waits below see an empty inbox.
            r = await post(http, url, call(1, "wait_for_mentions", {"timeoutMs": 1000}),
                           **{"mcp-name": "wait_for_mentions"})  # fmt: skip
            assert json.loads(r.content)["result"]["structuredContent"]["messages"]
            answered.clear()
            cases = [
                ("list_agents", {"includeDetails": True}),
                ("coral_list_agents", {"includeDetails": False}),
                ("send_message", {"threadId": "t-1"}),  # missing fields: an isError result
                ("create_thread", {"threadName": "x", "participantIds": ["nobody"]}),
                ("no_such_tool", {}),
                ("wait_for_mentions", {"timeoutMs": 0}),
                ("wait_for_mentions", {"timeoutMs": 10}),
                ("wait_for_mentions", {"timeoutMs": 10**9}),
            ]
            for i, (name, args) in enumerate(cases):
                status, ctype, body = await both(call(10 + i, name, args), **{"mcp-name": name})
                assert (status, ctype) == (200, "application/json")
                reply = json.loads(body)
                assert reply["id"] == 10 + i
                data = reply["result"]["structuredContent"]
                assert json.loads(reply["result"]["content"][0]["text"]) == data
                assert reply["result"]["isError"] == (not data["ok"])
            assert answered == ["a"] * len(cases)  # the fast path answered each once

            # What the fast path does not fully accept goes to the SDK, as it is.
            answered.clear()
            lookup = call(30, "list_agents", {})
            refused = [
                (lookup, {"mcp-name": "send_message"}),  # header and body disagree
                (lookup, {"mcp-method": "tools/list", "mcp-name": "list_agents"}),
                (call(32, "list_agents", "not an object"), {"mcp-name": "list_agents"}),
                ({**lookup, "params": {"name": "list_agents"}}, {"mcp-name": "list_agents"}),
                ([lookup], {"mcp-name": "list_agents"}),
            ]
            for body, headers in refused:
                status, _ctype, text = await both(body, **headers)
                assert status >= 400, text
            # A params field the fast path does not know: the SDK decides (it accepts).
            status, _ctype, text = await both(
                call(31, "list_agents", {}, extra=1), **{"mcp-name": "list_agents"}
            )
            assert status == 200, text
            assert answered == []

            r = await post(http, url, call(40, "send_message", {"threadId": "t-1",
                           "content": "done", "mentions": ["user"]}),
                           **{"mcp-name": "send_message"})  # fmt: skip
            assert json.loads(r.content)["result"]["isError"] is False
            result = await handle.wait()
    assert result.stop_reason == "answer"
    assert result.answer == "done"


@pytest.mark.parametrize("public_host", [None, "coral.test"])
async def test_host_and_origin_rules(public_host: str | None) -> None:
    # Answers: 421 a foreign Host, 403 a foreign Origin, else 401 (no such secret).
    hub = MCPHub(public_host=public_host)
    async with hub.serving(), httpx.AsyncClient() as http:
        port = int(hub.base_url.rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{port}/mcp/v1/no-such-secret/mcp"

        async def status(host: str, origin: str | None = None) -> int:
            headers = {"Host": host} | ({"Origin": origin} if origin else {})
            return (await http.post(url, json={}, headers=headers)).status_code

        for name in ("127.0.0.1", "localhost", "[::1]"):
            assert await status(f"{name}:{port}") == 401
            assert await status(f"127.0.0.1:{port}", f"http://{name}:{port}") == 401
        assert await status(f"evil.example:{port}") == 421
        assert await status(f"127.0.0.1:{port + 1}") == 421
        assert await status(f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}") == 403
        assert await status(f"127.0.0.1:{port}", "http://evil.example") == 403
        named = await status(f"coral.test:{port}", f"http://coral.test:{port}")
        assert named == (401 if public_host else 421)
