"""External agents over MCP: the official `mcp` client, in separate processes, over
real HTTP on 127.0.0.1 (streamable HTTP and SSE)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import coral_graph as cg
from coral_graph.mcp import ExternalAgent, MCPHub

pytestmark = pytest.mark.anyio

CLIENTS = Path(__file__).resolve().parent / "mcp_clients"


@cg.agent
async def planner(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Hands the task to the outsider and answers with what comes back."""
    if message.sender == "user":
        th = await ctx.create_thread("ask", ["outsider"])
        await ctx.send_message(th, message.content, ["outsider"])
    else:
        await ctx.send_message("t-1", f"answer: {message.content}", ["user"])


@cg.agent
async def calc(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Multiplies two numbers: 'a * b'."""
    a, b = (int(x) for x in re.findall(r"\d+", message.content)[:2])
    await ctx.send_message(message.thread_id, str(a * b), [message.sender])


def relay_graph(outsider: ExternalAgent) -> cg.AgentGraph:
    g = cg.AgentGraph("relay", entry=["planner"])
    g.add_agent("planner", planner)
    g.add_agent("outsider", outsider, on_error="stop")
    g.add_agent("calc", calc)
    g.connect("planner", "outsider", mutual=True)
    g.connect("outsider", "calc", mutual=True)
    return g


class Endpoints:
    """Collects the endpoint URLs the run emits."""

    def __init__(self) -> None:
        self.urls: dict[str, dict[str, Any]] = {}
        self.ready = anyio.Event()
        self.logs: list[cg.AgentLogged] = []

    def on_event(self, event: cg.Event) -> None:
        if isinstance(event, cg.AgentLogged):
            self.logs.append(event)
            if event.data and event.data.get("event") == "endpoint":
                self.urls[event.agent] = event.data
                self.ready.set()


async def spawn(*args: str) -> anyio.abc.Process:
    return await anyio.open_process([sys.executable, *args])


async def output(proc: anyio.abc.Process) -> tuple[int, str, str]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = b""
    err = b""
    async with anyio.create_task_group() as tg:

        async def read_out() -> None:
            nonlocal out
            async for chunk in proc.stdout:  # type: ignore[union-attr]
                out += chunk

        async def read_err() -> None:
            nonlocal err
            async for chunk in proc.stderr:  # type: ignore[union-attr]
                err += chunk

        tg.start_soon(read_out)
        tg.start_soon(read_err)
    code = await proc.wait()
    return code, out.decode(), err.decode()


@pytest.fixture
async def hub() -> AsyncIterator[MCPHub]:
    h = MCPHub()
    async with h.serving():
        yield h


async def run_with_client(
    graph: cg.AgentGraph,
    task: str,
    client: Callable[[dict[str, Any]], list[str]],
    *,
    budgets: cg.Budgets | None = None,
) -> tuple[cg.RunResult, tuple[int, str, str], Endpoints]:
    eps = Endpoints()
    with anyio.fail_after(60):
        async with cg.open_runtime(graph, budgets=budgets) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start(task, entry=["planner"])
            await eps.ready.wait()
            proc = await spawn(*client(eps.urls["outsider"]))
            result = await handle.wait()
            out = await output(proc)
    return result, out, eps


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_external_agent_joins_a_run_to_its_answer(hub: MCPHub, transport: str) -> None:
    outsider = ExternalAgent("asks calc", hub=hub)
    result, (code, out, err), eps = await run_with_client(
        relay_graph(outsider),
        "6 * 7",
        lambda u: [
            str(CLIENTS / "relay.py"),
            u["url"]
            if transport == "http"
            else u["sse_url"] + "?agentId=outsider&agentDescription=x",
            transport,
        ],
    )
    assert result.stop_reason == "answer", (result.error, err)
    assert result.answer == "answer: calc says 42"
    assert code == 0, err
    assert "reachable: ['calc', 'planner']" in out
    # The outsider's turns are counted like anyone's; its messages are in the transcript.
    assert result.usage["outsider"].messages_sent == 2
    senders = [e.message.sender for e in result.events if isinstance(e, cg.MessageSent)]
    assert senders.count("outsider") == 2
    events = [e.data["event"] for e in eps.logs if e.data and e.agent == "outsider"]
    assert events[:2] == ["endpoint", "connected"]


# -- every tool's errors, the state resource, the secret and the headers ---------------


@cg.agent
async def quiet(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Takes the task and does nothing."""


def probe_graph(probe: ExternalAgent) -> cg.AgentGraph:
    g = cg.AgentGraph("probe", entry=["peer"])
    g.add_agent("probe", probe, on_error="stop")
    g.add_agent("peer", quiet)
    g.add_agent("stranger", quiet)
    g.connect("probe", "peer", mutual=True)
    return g


class Probe:
    """An official `mcp` client (in this process, over real HTTP) on the probe's URL."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def __call__(self, tool: str, **args: Any) -> tuple[bool, dict[str, Any]]:
        res = await self.client.call_tool(tool, args)
        data = json.loads(res.content[0].text)
        assert res.structured_content == data
        return bool(res.is_error), data


async def test_every_tool_error_is_an_error_result_with_the_api_message(hub: MCPHub) -> None:
    from mcp import Client

    probe_agent = ExternalAgent("pokes at the tools", hub=hub)
    eps = Endpoints()
    with anyio.fail_after(60):
        async with cg.open_runtime(probe_graph(probe_agent), max_content_chars=50) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start("hello", entry=["peer"])
            await eps.ready.wait()
            async with Client(eps.urls["probe"]["url"]) as client:
                call = Probe(client)
                listed = {t.name for t in (await client.list_tools()).tools}
                assert {"list_agents", "wait_for_mentions", "coral_send_message"} <= listed
                assert len(listed) == 17  # v0 seven, their coral_ aliases, three 1.2 waits

                err, data = await call("list_agents", includeDetails=False)
                assert not err
                assert data["agents"] == [{"agentId": "peer"}]

                edge = str(cg.EdgeNotAllowedError("probe", "stranger", "add"))
                bad = "InvalidArgumentsError"
                checks: list[tuple[str, dict[str, Any], str, str]] = [
                    ("fly", {}, "UnknownToolError", "there is no tool 'fly'"),
                    ("create_thread", {"threadName": "x"}, bad, "participantIds"),
                    ("create_thread", {"threadName": "x", "participantIds": "peer"},
                     "InvalidArgumentsError", "must be a list"),
                    ("create_thread", {"threadName": "x", "participantIds": ["stranger"]},
                     "EdgeNotAllowedError", edge),
                    ("create_thread", {"threadName": "x", "participantIds": ["nobody"]},
                     "UnknownAgentError", "nobody"),
                    ("send_message", {"threadId": "t-99", "content": "hi", "mentions": []},
                     "UnknownThreadError", "t-99"),
                    ("send_message", {"threadId": "t-1", "content": "hi", "mentions": []},
                     "NotAParticipantError", "probe"),
                    ("wait_for_mentions", {"timeoutMs": 600_000}, "InvalidArgumentsError",
                     "between 0 and 60000"),
                    ("wait_for_mentions", {"timeoutMs": "5"}, "InvalidArgumentsError",
                     "must be a number"),
                    ("close_thread", {"threadId": "t-1"}, "InvalidArgumentsError", "summary"),
                    ("list_agents", {"includeDetails": True, "extra": 1}, "InvalidArgumentsError",
                     "unknown argument(s) extra"),
                ]  # fmt: skip
                for tool, args, error, text in checks:
                    err, data = await call(tool, **args)
                    assert err, (tool, args, data)
                    assert data["error"] == error, (tool, data)
                    assert text in data["message"], (tool, data)

                err, data = await call("coral_create_thread", threadName="work",
                                       participantIds=["peer"])  # fmt: skip
                assert not err
                tid = data["thread"]["id"]
                assert data["thread"]["participants"] == ["probe", "peer"]
                err, data = await call("send_message", threadId=tid, content="x" * 51,
                                       mentions=["peer"])  # fmt: skip
                assert (err, data["error"]) == (True, "ContentTooLargeError")
                err, data = await call("send_message", threadId=tid, content="hi",
                                       mentions=["stranger"])  # fmt: skip
                assert (err, data["error"]) == (True, "UnknownAgentError") or "stranger" in str(
                    data
                )
                err, data = await call("remove_participant", threadId=tid, participantId="stranger")
                assert (err, data["error"]) == (True, "NotAParticipantError")
                err, data = await call("add_participant", threadId=tid, participantId="stranger")
                assert (err, data["error"]) == (True, "EdgeNotAllowedError")
                err, data = await call("send_message", threadId=tid, content="hi peer",
                                       mentions=["peer"])  # fmt: skip
                assert not err
                assert data["message"]["senderId"] == "probe"
                err, data = await call("close_thread", threadId=tid, summary="done")
                assert not err
                err, data = await call("send_message", threadId=tid, content="late", mentions=[])
                assert (err, data["error"]) == (True, "ThreadClosedError")
                err, data = await call("wait_for_mentions", timeoutMs=0)
                assert (err, data["messages"]) == (False, [])

                state = await client.read_resource("coral://state")
                view = json.loads(state.contents[0].text)
                assert view["agentId"] == "probe"
                assert view["agents"] == [{"agentId": "peer", "description": quiet.description}]
                work = next(t for t in view["threads"] if t["id"] == tid)
                assert work["state"] == "closed"
                assert work["summary"] == "done"
                assert [m["content"] for m in work["messages"]] == ["hi peer"]

                handle.cancel()
                result = await handle.wait()
                # The endpoint is gone with its run (HTTP 410).
                from mcp.shared.exceptions import MCPError

                with pytest.raises(MCPError):
                    await call("list_agents", includeDetails=True)
    assert result.stop_reason == "cancelled"
    failed = [e for e in result.events if isinstance(e, cg.ToolCalled) and not e.ok]
    assert len(failed) == len(checks) + 5  # every failure is an event of the transcript
    assert all(e.agent == "probe" for e in failed)


async def test_secret_host_and_origin_are_checked(hub: MCPHub) -> None:
    probe_agent = ExternalAgent("pokes", hub=hub)
    eps = Endpoints()
    init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with anyio.fail_after(60):
        async with cg.open_runtime(probe_graph(probe_agent)) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start("hello", entry=["peer"])
            await eps.ready.wait()
            url = eps.urls["probe"]["url"]
            base, secret = url.rsplit("/mcp/v1/", 1)[0], url.split("/mcp/v1/")[1].split("/")[0]
            async with httpx.AsyncClient() as http:
                wrong = await http.post(f"{base}/mcp/v1/{'x' * len(secret)}/mcp", json=init)
                assert wrong.status_code == 401
                missing = await http.post(f"{base}/mcp/v1/mcp", json=init)
                assert missing.status_code == 404
                host = await http.post(url, json=init, headers={"Host": "evil.example:80"})
                assert host.status_code == 421
                origin = await http.post(url, json=init, headers={"Origin": "http://evil.example"})
                assert origin.status_code == 403
                other = await http.get(eps.urls["probe"]["sse_url"] + "?agentId=peer")
                assert other.status_code == 403
                assert "does not match" in other.text
                # A flood of guesses is refused, and the agent still gets in.
                statuses: list[int] = []

                async def guess(i: int) -> None:
                    r = await http.post(f"{base}/mcp/v1/guess{i:04d}/mcp", json=init)
                    statuses.append(r.status_code)

                async with anyio.create_task_group() as tg:
                    for i in range(100):
                        tg.start_soon(guess, i)
                assert statuses == [401] * 100
            from mcp import Client

            async with Client(url) as client:
                assert len((await client.list_tools()).tools) == 17
            handle.cancel()
            await handle.wait()
            async with httpx.AsyncClient() as http:
                gone = await http.post(url, json=init)
            assert gone.status_code == 410
            assert "has ended" in gone.text


async def test_binding_beyond_loopback_needs_the_flag() -> None:
    with pytest.raises(cg.ConfigError, match="--mcp-allow-remote"):
        async with MCPHub("0.0.0.0").serving():
            pass


# -- connection: never, idle while waiting, disconnect and reconnect ------------------------


async def test_an_agent_that_never_connects_stops_the_run_naming_it() -> None:
    outsider = ExternalAgent("never comes", hub=MCPHub(), connect_timeout_s=0.3)
    with anyio.fail_after(30):
        async with cg.open_runtime(relay_graph(outsider)) as rt:
            result = await rt.run("6 * 7", entry=["planner"])
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "outsider" in result.error
    assert "did not connect" in result.error
    errors = [e for e in result.events if isinstance(e, cg.AgentErrored)]
    assert [e.agent for e in errors] == ["outsider"]


async def test_an_agent_blocked_in_wait_counts_as_idle(hub: MCPHub) -> None:
    g = cg.AgentGraph("idle", entry=["planner"])
    g.add_agent("planner", quiet)
    g.add_agent("outsider", ExternalAgent("waits", hub=hub), on_error="stop")
    g.connect("planner", "outsider", mutual=True)
    result, (_code, out, _err), _ = await run_with_client(
        g, "nothing to do", lambda u: [str(CLIENTS / "waiter.py"), u["url"]]
    )
    assert result.stop_reason == "idle"
    assert "waiting" not in out  # the first wait was still blocked when the run went idle


class Pacer:
    """A loop agent: one message for the outsider, then (when the test says so) two
    more, then it answers with the outsider's reply."""

    def __init__(self) -> None:
        self.go = anyio.Event()

    async def run(self, ctx: cg.AgentContext) -> None:
        th = await ctx.create_thread("work", ["outsider"])
        await ctx.send_message(th, "first", ["outsider"])
        await self.go.wait()
        await ctx.send_message(th, "second", ["outsider"])
        await ctx.send_message(th, "third", ["outsider"])
        while True:
            for m in await ctx.wait_for_mentions(30):
                if m.sender == "outsider":
                    await ctx.send_message("t-1", f"outsider saw: {m.content}", ["user"])
                    return


async def test_disconnect_and_reconnect_lose_nothing(hub: MCPHub) -> None:
    pacer = Pacer()
    outsider = ExternalAgent("comes and goes", hub=hub, connect_timeout_s=30)
    g = cg.AgentGraph("reconnect", entry=["pacer"])
    g.add_agent("pacer", pacer)
    g.add_agent("outsider", outsider, on_error="stop")
    g.connect("pacer", "outsider", mutual=True)
    eps = Endpoints()
    with anyio.fail_after(60):
        async with cg.open_runtime(g) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start("go", entry=["pacer"])
            await eps.ready.wait()
            url = eps.urls["outsider"]["url"]
            first = await spawn(str(CLIENTS / "waiter.py"), url)
            assert first.stdout is not None
            seen = b""
            async for chunk in first.stdout:
                seen += chunk
                if b"waiting" in seen:
                    break
            assert b"got first" in seen
            ep = outsider.endpoint
            assert ep is not None
            await ep.wait_calling()  # its second wait has reached the server
            first.kill()
            await first.wait()
            await ep.gone.wait()  # the server saw it go, with its wait in flight
            pacer.go.set()  # mentions arrive while nobody is connected
            second = await spawn(str(CLIENTS / "collector.py"), url, "2")
            result = await handle.wait()
            code, _out, err = await output(second)
    assert result.stop_reason == "answer", (result.stop_reason, result.error, err[-300:])
    assert code == 0, err
    # The relay got "second" (and "third") after reconnecting: nothing was lost to the
    # wait that was in flight when the first client died.
    assert result.answer == "outsider saw: got: second, third"
    handled = [
        e.message_id for e in result.events
        if isinstance(e, cg.DeliveryHandled) and e.agent == "outsider"
    ]  # fmt: skip
    assert handled == ["t-2#1", "t-2#2", "t-2#3"]
    events = [e.data["event"] for e in eps.logs if e.data and e.agent == "outsider"]
    assert events[:4] == ["endpoint", "connected", "disconnected", "connected"]


async def test_budgets_count_an_external_agents_messages(hub: MCPHub) -> None:
    from mcp import Client

    eps = Endpoints()
    with anyio.fail_after(60):
        async with cg.open_runtime(
            probe_graph(ExternalAgent("sends", hub=hub)), budgets=cg.Budgets(max_messages=1)
        ) as rt:
            rt.subscribe(eps.on_event)
            handle = rt.start("hello", entry=["peer"])
            await eps.ready.wait()
            async with Client(eps.urls["probe"]["url"]) as client:
                call = Probe(client)
                _, data = await call("create_thread", threadName="t", participantIds=["peer"])
                tid = data["thread"]["id"]
                err, _ = await call("send_message", threadId=tid, content="one", mentions=[])
                assert not err
                err, data = await call("send_message", threadId=tid, content="two", mentions=[])
                assert (err, data["error"]) == (True, "BudgetExceededError")
                result = await handle.wait()
    assert result.stop_reason == "budget:messages"
    assert result.usage["probe"].messages_sent == 1
