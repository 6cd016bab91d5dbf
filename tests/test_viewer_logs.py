"""The viewer shows a run's ``agent_logged`` events: the MCP endpoint an outsider
connects at (in the run's header) and the lines agents logged (the Logs tab), as text.

The run is real: an ``ExternalAgent`` serving its MCP endpoint on 127.0.0.1 (its URL
logged by the agent itself), a worker that logs stdout/stderr lines the way a process
agent's output is logged, and blocks the event loop long enough for the runtime's
watchdog to log a blocked-loop notice; written by the real SQLite store and served by
the app (server test) and by ``coral-graph view`` to headless Chromium (browser test).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from browser_fixtures import Page, off_loop, start_viewer, stop_viewer, wait_js
from starlette.testclient import TestClient

import coral_graph as cg
from coral_graph.mcp import ExternalAgent, MCPHub
from coral_graph.store import SQLiteStore
from coral_graph.viewer.query import RunReader
from coral_graph.viewer.web import create_app

OUT_LINE = "<img src=x onerror=window.__pwned=1> computing 6*7"
ERR_LINE = "warning: <b>not bold</b>"


@dataclass
class LoggedRun:
    db: Path
    run_id: str
    url: str
    sse_url: str


def make_logged_run(db: Path) -> LoggedRun:
    outsider = ExternalAgent("an outsider over MCP", hub=MCPHub(), connect_timeout_s=60)

    async def worker(ctx: cg.AgentContext, message: cg.Message) -> None:
        with anyio.fail_after(20):
            while outsider.endpoint is None:  # noqa: ASYNC110 (set inside the agent: no event to await)
                await anyio.sleep(0.02)
        ctx.log(OUT_LINE, source="stdout")
        ctx.log(ERR_LINE, source="stderr")
        time.sleep(0.5)  # noqa: ASYNC251 (blocks the loop on purpose: the watchdog logs it)
        await ctx.send_message(message.thread_id, "42", ["user"])

    g = cg.AgentGraph("logged", entry=["worker"])
    g.add_agent("worker", worker)
    g.add_agent("outsider", outsider, on_error="continue")

    async def go() -> cg.RunResult:
        with SQLiteStore(db) as store:
            async with cg.open_runtime(g, store=store, blocked_after_s=0.2) as rt:
                return await rt.run("what is 6*7?", entry=["worker"])

    result = anyio.run(go)
    assert result.stop_reason == "answer", result
    ep = [
        e
        for e in result.events
        if isinstance(e, cg.AgentLogged) and e.source == "mcp" and e.data and "url" in e.data
    ]
    assert ep, result.events
    assert ep[0].data is not None
    return LoggedRun(db, result.run_id, str(ep[0].data["url"]), str(ep[0].data["sse_url"]))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    return off_loop(make_logged_run, tmp_path_factory.mktemp("viewer-logs") / "coral.db")


def test_logs_api_lists_lines_and_the_endpoint(logged: LoggedRun) -> None:
    with TestClient(create_app(RunReader(logged.db)), base_url="http://127.0.0.1:8000") as c:
        r = c.get(f"/api/runs/{logged.run_id}/logs")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert c.get("/api/runs/nope/logs").status_code == 404
    assert logged.url.startswith("http://127.0.0.1:")
    assert body["endpoints"] == [
        {
            "agent": "outsider",
            "url": logged.url,
            "sse_url": logged.sse_url,
            "seq": body["endpoints"][0]["seq"],
        }
    ]
    by_source = {(ln["agent"], ln["source"]): ln["text"] for ln in body["lines"]}
    assert by_source[("worker", "stdout")] == OUT_LINE
    assert by_source[("worker", "stderr")] == ERR_LINE
    watchdog = [ln for ln in body["lines"] if ln["source"] == "watchdog"]
    assert watchdog, body["lines"]
    assert "worker" in watchdog[0]["agent"] + watchdog[0]["text"]
    assert body["total"] == len(body["lines"])
    assert not body["truncated"]
    seqs = [ln["seq"] for ln in body["lines"]]
    assert seqs == sorted(seqs)
    # A limit keeps the last lines and says so; the endpoint is still found.
    short = RunReader(logged.db).logs(logged.run_id, limit=1)
    assert short["truncated"]
    assert short["lines"] == body["lines"][-1:]
    assert short["endpoints"] == body["endpoints"]


@pytest.mark.browser
def test_browser_shows_endpoint_and_log_lines(logged: LoggedRun, browser: Any) -> None:
    v = start_viewer(logged.db)
    page = Page(browser)
    try:
        p = page.page
        p.goto(f"{v.base}#run={logged.run_id}&tab=logs")
        wait_js(page, "!document.querySelector('#endpoints').hidden")
        head = p.locator("#endpoints").inner_text()
        assert "outsider" in head
        assert "connects at" in head
        assert logged.url in head
        wait_js(page, "document.querySelectorAll('#tab-logs .log-line').length >= 3")
        text = p.locator("#tab-logs").inner_text()
        assert OUT_LINE in text
        assert ERR_LINE in text
        assert p.locator("#tab-logs img, #tab-logs b").count() == 0
        assert p.locator("#tab-logs .log-watchdog").count() >= 1
        assert p.evaluate("window.__pwned") is None
        assert not page.errors, page.errors
        assert not page.off_host(), page.off_host()
    finally:
        page.close()
        stop_viewer(v)
