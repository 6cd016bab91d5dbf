"""The bench's lean MCP client (``coral_graph.bench._lean``) speaks the protocol as
the official client does: the same JSON from the seven tools of a run (each client
in its own process, real HTTP on 127.0.0.1), and a bare SDK server answers it on
both protocol eras."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest

import coral_graph as cg
from coral_graph.bench._lean import HANDSHAKE, MODERN, LeanClient, LeanClientError
from coral_graph.bench._mcp import SEVEN, _floor_server
from coral_graph.mcp import ExternalAgent, MCPHub

pytestmark = pytest.mark.anyio


@cg.agent
async def quiet(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Reads what it is sent and says nothing."""


def _normal(value: Any, run_id: str) -> Any:
    """``value`` with what differs between two runs made the same: timestamps, the
    run id, and JSON text (compared as the data it holds)."""
    if isinstance(value, dict):
        return {k: 0 if k == "timestamp" else _normal(v, run_id) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normal(v, run_id) for v in value]
    if isinstance(value, str):
        if value.startswith(("{", "[")):
            return _normal(json.loads(value), run_id)
        return value.replace(run_id, "RUN")
    return value


async def seven_tools(client: str) -> tuple[list[Any], cg.RunResult]:
    """Agent ``a`` of a fresh run does :data:`SEVEN` through ``client`` (a process)."""
    hub = MCPHub()
    g = cg.AgentGraph("seven", entry=["a"])
    g.add_agent("a", ExternalAgent("drives", hub=hub, connect_timeout_s=60), on_error="stop")
    g.add_agent("b", quiet, description="listens")
    g.add_agent("c", quiet, description="listens too")
    g.connect("a", "b", mutual=True)
    g.connect("a", "c", mutual=True)
    url: list[str] = []
    ready = anyio.Event()

    def on_event(event: cg.Event) -> None:
        if isinstance(event, cg.AgentLogged) and event.data and "url" in event.data:
            url.append(event.data["url"])
            ready.set()

    with anyio.fail_after(60):
        async with hub.serving(), cg.open_runtime(g) as rt:
            rt.subscribe(on_event)
            handle = rt.start("go", entry=["a"])
            await ready.wait()
            argv = [sys.executable, "-m", "coral_graph.bench._mcp", client, "seven", url[0]]
            proc = await anyio.run_process([*argv, "0", "0"], check=False)
            result = await handle.wait()
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    assert len(out["results"]) == len(SEVEN)
    return [_normal(r, result.run_id) for r in [*out["results"], out["answered"]]], result


@pytest.mark.parametrize("lean", ["lean", "lean2025"])
async def test_the_lean_client_gets_the_official_clients_json_from_the_seven_tools(
    lean: str,
) -> None:
    official, ran = await seven_tools("sdk")
    mine, ran_lean = await seven_tools(lean)
    assert ran.stop_reason == ran_lean.stop_reason == "answer"
    assert ran.answer == ran_lean.answer == "answered"
    # The 2025 protocol's results have no ``resultType`` and no ``_meta`` envelope
    # (the official client speaks 2026-07-28): the rest must be the same.
    modern_only = {"_meta", "resultType"} if lean == "lean2025" else set()
    for (name, _args), want, got in zip(SEVEN, official, mine, strict=False):
        assert {k: v for k, v in got.items() if k not in modern_only} == {
            k: v for k, v in want.items() if k not in modern_only
        }, name
        assert set(got) | modern_only == set(want) | modern_only, name
    # The call that answers the run gets its result too, on both protocols (the
    # session outlives the run until its answers are written).
    assert official[-1] is not None
    assert official[-1]["structuredContent"]["message"]["content"] == "answered"
    assert mine[-1] is not None
    assert {k: v for k, v in mine[-1].items() if k not in modern_only} == {
        k: v for k, v in official[-1].items() if k not in modern_only
    }
    # The script did what it says: results, refusals and the answer.
    by_tool = [
        (name, r.get("isError", False)) for (name, _), r in zip(SEVEN, official[:-1], strict=True)
    ]
    assert by_tool.count(("send_message", True)) == 1
    assert [e for _, e in by_tool].count(True) == 3
    assert official[0]["structuredContent"]["messages"][0]["content"] == "go"
    assert official[3]["structuredContent"]["thread"]["participants"] == ["a", "b"]


@pytest.mark.parametrize("protocol", [HANDSHAKE, MODERN])
async def test_a_bare_sdk_server_answers_the_lean_client(protocol: str) -> None:
    with anyio.fail_after(30):
        async with _floor_server() as url:
            async with LeanClient(url, protocol=protocol) as client:
                # The handshake gives a session; the envelope era has none.
                session = client.session_id
                assert (session is not None) is (protocol == HANDSHAKE)
                assert {t["name"] for t in await client.list_tools()} == {"echo", "post", "take"}
                res = await client.call_tool("echo", {"text": "héllo"})
                assert res["structuredContent"] == {"text": "héllo"}
                assert json.loads(res["content"][0]["text"]) == {"text": "héllo"}
                with pytest.raises(LeanClientError) as err:
                    await client.request("no/such/method", {})
                assert err.value.code == -32601
            if protocol == HANDSHAKE:
                # The session was ended by the client's DELETE: its id is refused.
                stale = LeanClient(url, protocol=protocol)
                stale.session_id = session
                with pytest.raises(LeanClientError) as gone:
                    await stale.call_tool("echo", {"text": "x"})
                assert gone.value.status == 404
                await stale.aclose()


def test_the_bench_client_refuses_an_unknown_client_kind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coral_graph.bench._mcp", "curl", "echo", "http://x", "1", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "sdk|lean|lean2025" in proc.stderr
    assert "curl" in proc.stderr
    assert proc.stdout == ""
