"""Runs for the viewer's tests, made by the real runtime through the real SQLite store,
and the fixtures that serve them with ``coral-graph view`` and drive Chromium.

Import the fixtures you use into the test module (``from browser_fixtures import …``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import coral_graph as cg
from coral_graph.store import SQLiteStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CLI = [sys.executable, "-c", "from coral_graph.cli import main; main()"]

# Script-injection payloads: each would set window.__pwned if it ever ran.
XSS_IMG = '<img src=x onerror="window.__pwned=1">'
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_SVG = '"><svg onload="window.__pwned=1"></svg>'
XSS_LINK = "[click me](javascript:window.__pwned=1)"
REMOTE_IMG = "![tracker](http://203.0.113.9/pixel.png)"
UNICODE = "Grüße, naïve café — 日本語のテキスト 🚀 ∑ x² ≤ ∞"


def off_loop(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a thread of its own. Playwright's sync API keeps an event loop
    running in the main thread while a browser is open, and a run (``cg.run``, which
    starts its own loop) cannot start inside it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=f"off-loop {getattr(fn, '__name__', fn)}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class SmallRun:
    """What the small run is made of, for the assertions."""

    db: Path
    run_id: str
    result: cg.RunResult
    messages: list[dict[str, Any]] = field(default_factory=list)


def _small_graph() -> cg.AgentGraph:
    g = cg.AgentGraph(f"demo {XSS_IMG}", description="planner, solver and critic")

    @cg.agent(description=f"plans the work — Planer 計画 {XSS_SCRIPT}")
    async def planner(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread(f"Überprüfung 🔍 — 日本語 {XSS_IMG}", ["solver", "critic"])
            await ctx.send_message(
                th,
                f"## Plan\n\n- **solve** the task\n- check it with `critic`\n\n{UNICODE}",
                ["solver"],
            )
        elif message.sender == "solver":
            await ctx.send_message(message.thread_id, f"critic, check this: {XSS_SVG}", ["critic"])
        elif message.sender == "critic":
            await ctx.close_thread(message.thread_id, f"checked {XSS_IMG} ✓")
            task_thread = ctx.threads()[0]
            await ctx.send_message(task_thread, f"The answer is 42. {UNICODE}", ["user"])

    @cg.agent(description="solves — Löser")
    async def solver(ctx: cg.AgentContext, message: cg.Message) -> None:
        ctx.record_llm_call(
            model="fake/model-1",
            prompt_tokens=120,
            completion_tokens=30,
            cost_usd=0.0015,
            latency_s=0.25,
        )
        reply = await ctx.send_message(
            message.thread_id,
            f"Solved: 6 x 7 = 42.\n\n```python\nprint(6 * 7)\n```\n{XSS_SCRIPT} {XSS_LINK} "
            f"{REMOTE_IMG}",
            ["planner"],
            metadata={
                "model": "fake/model-1",
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "cost_usd": 0.0015,
                "latency_s": 0.25,
            },
        )
        ctx.record_tool_call(
            tool="calculator",
            arguments={"expression": "6 * 7", "note": XSS_IMG},
            result="42",
            ok=True,
            duration_s=0.012,
            thread_id=message.thread_id,
            message_id=reply.id,
        )

    @cg.agent(description=f"criticises {XSS_IMG}")
    async def critic(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "Looks right to me. ✅", ["planner"])
        raise ValueError(f"critic stumbled on purpose: {UNICODE} {XSS_IMG}")

    @cg.agent(description="never asked")
    async def archivist(ctx: cg.AgentContext, message: cg.Message) -> None:
        raise AssertionError("never called")

    g.add_agent("planner", planner)
    g.add_agent("solver", solver)
    g.add_agent("critic", critic, on_error="continue")
    g.add_agent("archivist", archivist)
    g.connect("planner", "solver", mutual=True)
    g.connect("planner", "critic", mutual=True)
    g.connect("solver", "critic")  # never used: drawn faintly
    g.connect("planner", "archivist")  # never used
    return g


def make_small_run(db: Path) -> SmallRun:
    """A short run with two threads, markdown, a tool call, model usage, an error, a
    closed thread with a summary, non-ASCII text and script-injection payloads."""
    g = _small_graph()
    with SQLiteStore(db) as store:
        result = cg.run(g, f"What is 6 x 7? {XSS_IMG} {UNICODE}", entry=["planner"], store=store)
    assert result.stop_reason == "answer", result
    from coral_graph.store._reader import open_reader

    with open_reader(db) as r:
        msgs = r.messages(result.run_id)
    return SmallRun(db, result.run_id, result, msgs)


@dataclass
class LLMRuns:
    """Two runs of LLM agents against the OpenAI-compatible stub (over real HTTP):
    ``ok``, whose one call is retried once (a 500) and then answers, and ``failed``,
    where every call of both agents is refused (401)."""

    db: Path
    ok: str
    failed: str
    ok_result: cg.RunResult
    failed_result: cg.RunResult


FAIL_TEXT = "Incorrect API key provided: sk-wrong (viewer test)"


def make_llm_runs(db: Path) -> LLMRuns:
    """Run both graphs through litellm against tests/openai_stub.py on 127.0.0.1."""
    from openai_stub import error, reply, serve

    from coral_graph.llm import LLMAgent, aclose_clients

    async def both(base: str) -> tuple[cg.RunResult, cg.RunResult]:
        ok = cg.AgentGraph("llm ok", entry=["writer"])
        ok.add_agent(
            "writer",
            LLMAgent(
                "openai/viewer-ok",
                api_base=base,
                retries=2,
                retry_backoff_s=0.01,
                system_prompt="You answer arithmetic questions.",
            ),
        )
        bad = cg.AgentGraph("llm down", entry=["alpha", "beta"])
        for name in ("alpha", "beta"):
            bad.add_agent(name, LLMAgent("openai/viewer-down", api_base=base, retries=0))
        try:
            with SQLiteStore(db) as store:
                async with cg.open_runtime(ok, store=store) as rt:
                    r1 = await rt.run("What is 6 x 7?")
                async with cg.open_runtime(bad, store=store) as rt:
                    r2 = await rt.run("Say hello.")
        finally:
            await aclose_clients()
        return r1, r2

    with serve() as stub:
        stub.script("viewer-ok", [error(500, "overloaded"), reply("FINAL: 42", prompt_tokens=57)])
        stub.script("viewer-down", [error(401, FAIL_TEXT), error(401, FAIL_TEXT)])
        r1, r2 = anyio.run(both, stub.base_url)
    assert r1.answer == "42", r1
    return LLMRuns(db, r1.run_id, r2.run_id, r1, r2)


_HANGS = """
import sys, anyio
import coral_graph as cg
from coral_graph.store import SQLiteStore

g = cg.AgentGraph("hangs")

@cg.agent(description="posts, then waits for ever")
async def worker(ctx, message):
    await ctx.send_message(message.thread_id, "working on it ...", [])
    print("posted", flush=True)
    await anyio.sleep(3600)

g.add_agent("worker", worker)
with SQLiteStore(sys.argv[1], flush_interval=0.01) as store:
    cg.run(g, "a task that never ends", entry=["worker"], store=store)
"""


def make_interrupted_run(db: Path) -> str:
    """A run whose process is killed (SIGKILL) mid-run: the store keeps it as running
    with a dead writer, which readers show as interrupted."""
    from coral_graph.store._reader import open_reader

    with open_reader(db) as r:
        before = {x["run_id"] for x in r.list_runs(None)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANGS, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "posted"
        deadline = time.monotonic() + 20
        while True:  # until the writer has stored the worker's message
            with open_reader(db) as r:
                new = [x for x in r.list_runs(None) if x["run_id"] not in before]
                if new and len(r.messages(new[0]["run_id"])) >= 2:
                    break
            assert time.monotonic() < deadline, "the run never reached the store"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return str(new[0]["run_id"])


LONG_LINES = 120


def make_long_run(db: Path) -> str:
    """A run with one long message (``LONG_LINES`` lines) that names Rayleigh five
    times: plain, in capitals, split by markup (``**Ray**leigh``), in a list and
    near the end; and a short reply that names it once."""
    g = cg.AgentGraph("long")

    @cg.agent(description="writes at length")
    async def essayist(ctx: cg.AgentContext, message: cg.Message) -> None:
        lines = [f"line {i}: nothing to see" for i in range(LONG_LINES)]
        lines[0] = "Rayleigh scattering explains the blue sky."
        lines[3] = "RAYLEIGH again, in capitals."
        lines[10] = "Split by markup: **Ray**leigh."
        lines[20] = "- a list item about rayleigh"
        lines[-1] = "The end, Rayleigh."
        await ctx.send_message(message.thread_id, "\n".join(lines), [])
        await ctx.send_message(message.thread_id, "Short: Rayleigh.", ["user"])

    g.add_agent("essayist", essayist)
    with SQLiteStore(db) as store:
        result = cg.run(g, "Why is the sky blue?", entry=["essayist"], store=store)
    assert result.stop_reason == "answer", result
    return result.run_id


def make_big_run(db: Path, n: int = 100_000) -> str:
    """``n`` messages between python agents in 8 threads; every 7th turn of ``pong``
    raises after posting (an error-heavy run). Ends with ``budget:messages``."""
    g = cg.AgentGraph("big")

    @cg.agent(description="opens threads and pings")
    async def ping(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            for i in range(8):
                th = await ctx.create_thread(f"lane {i} — Spur {i} 🚦", ["pong"])
                await ctx.send_message(th, f"ping 0 in lane {i}", ["pong"])
            return
        await ctx.send_message(message.thread_id, f"ping after {message.seq} · Grüße", ["pong"])

    turns = 0

    @cg.agent(description="answers pings; stumbles now and then")
    async def pong(ctx: cg.AgentContext, message: cg.Message) -> None:
        nonlocal turns
        turns += 1
        await ctx.send_message(message.thread_id, f"pong {message.seq} — 日本語 ✓", ["ping"])
        if turns % 7 == 0:
            raise RuntimeError(f"pong stumbled at turn {turns}")

    g.add_agent("ping", ping)
    g.add_agent("pong", pong, on_error="continue")
    g.connect("ping", "pong", mutual=True)
    with SQLiteStore(db) as store:
        result = cg.run(
            g,
            "ping-pong at scale",
            entry=["ping"],
            store=store,
            budgets=cg.Budgets(max_messages=n, turn_timeout_s=None),
        )
    assert result.stop_reason == "budget:messages", result
    return result.run_id


async def until_stored(db: Path, run_id: str, messages: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    """Wait until the store at ``db`` shows run ``run_id`` with at least ``messages``
    messages: its writer flushes in the background, and a page opened before that
    would not have the rows a test then watches change."""
    from coral_graph.store._reader import open_reader

    deadline = time.monotonic() + timeout
    while True:
        try:
            with open_reader(db) as r:
                if len(r.messages(run_id)) >= messages:
                    return
        except cg.CoralError:
            pass  # (no store file, or no such run, yet)
        assert time.monotonic() < deadline, f"run {run_id} was not stored within {timeout} s"
        await anyio.sleep(0.02)


class LiveRun:
    """A run written by another thread while a page watches it.

    ``ticker`` posts one message, then posts ``n`` more, ``pause`` seconds apart, as
    the test lets them through (:meth:`allow` a few, :meth:`go` for all the rest), and
    answers.
    """

    def __init__(self, db: Path, n: int = 12, pause: float = 0.15) -> None:
        self.db = db
        self.n = n
        self.pause = pause
        self.started = threading.Event()
        self._ticks = threading.Semaphore(0)  # one permit per tick let through
        self.run_id: str | None = None
        self.result: cg.RunResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def allow(self, k: int) -> None:
        """Let ``k`` more ticks through."""
        self._ticks.release(k)

    def go(self) -> None:
        """Let every remaining tick through (extra permits are harmless)."""
        self._ticks.release(self.n)

    def start(self) -> None:
        self._thread.start()
        assert self.started.wait(20), "the live run did not start"

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        live = self
        g = cg.AgentGraph("live")

        @cg.agent(description="ticks slowly")
        async def ticker(ctx: cg.AgentContext, message: cg.Message) -> None:
            await ctx.send_message(message.thread_id, "tick 0 (before the page opened)", [])
            live.run_id = ctx.run_id
            await until_stored(live.db, ctx.run_id, 2)  # the task and tick 0
            live.started.set()
            for i in range(1, live.n + 1):
                await anyio.to_thread.run_sync(live._ticks.acquire)
                await ctx.send_message(message.thread_id, f"tick {i} — live ⏱", [])
                await anyio.sleep(live.pause)
            await ctx.send_message(message.thread_id, "done", ["user"])

        g.add_agent("ticker", ticker)
        try:
            with SQLiteStore(self.db, flush_interval=0.02) as store:
                self.result = cg.run(g, "tick for a while", entry=["ticker"], store=store)
        except BaseException as exc:
            self.error = exc
            self.started.set()


class LiveFailingRun(LiveRun):
    """A run written by another thread whose agent, once the test lets it
    (:meth:`go`), records two failed model calls on the task it is handling and
    then raises: failures that arrive after the message they belong to."""

    def _main(self) -> None:
        live = self
        g = cg.AgentGraph("live failures")

        @cg.agent(description="calls a model that refuses it")
        async def caller(ctx: cg.AgentContext, message: cg.Message) -> None:
            live.run_id = ctx.run_id
            await until_stored(live.db, ctx.run_id, 1)  # the task
            live.started.set()
            await anyio.to_thread.run_sync(live._ticks.acquire)
            for attempt in (1, 2):
                ctx.record_llm_call(
                    model="openai/refuses",
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost_usd=0.0,
                    latency_s=0.01,
                    outcome="LLMAuthenticationError",
                    error=f"{FAIL_TEXT} (attempt {attempt})",
                    attempt=attempt,
                    request={"messages": [{"role": "user", "content": message.content}]},
                )
            raise RuntimeError("no model would answer")

        g.add_agent("caller", caller)
        try:
            with SQLiteStore(self.db, flush_interval=0.02) as store:
                self.result = cg.run(g, "try the model", entry=["caller"], store=store)
        except BaseException as exc:
            self.error = exc
            self.started.set()


# -- serving and browsing -----------------------------------------------------------------


@dataclass
class Viewer:
    """A running ``coral-graph view`` subprocess."""

    url: str
    proc: subprocess.Popen[str]

    @property
    def base(self) -> str:
        return self.url.split("#", 1)[0]


def start_viewer(db: Path, *extra: str, timeout: float = 20) -> Viewer:
    """Start ``coral-graph view --db DB --port 0 …`` and wait for the URL it prints."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CLI, "view", "--db", str(db), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"(http://\S+)", line)
        if m:
            return Viewer(m.group(1), proc)
    proc.kill()
    _, err = proc.communicate(timeout=5)
    raise AssertionError(f"coral-graph view did not print its URL: {err}")


def stop_viewer(v: Viewer) -> None:
    v.proc.terminate()
    try:
        v.proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        v.proc.kill()
        v.proc.communicate(timeout=5)


def start_static_server(root: Path) -> tuple[str, subprocess.Popen[str]]:
    """``python -m http.server`` on a free loopback port, serving ``root``."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"port (\d+)", line)
    assert m, line
    return f"http://127.0.0.1:{m.group(1)}/", proc


def need_chromium() -> None:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright's sync API (no download), one
    per test module (tests/conftest.py makes it visible to every module). Not one
    per session: Playwright's sync API keeps an event loop running in the main
    thread while it is open, and later tests (doctests of ``cg.run``) need it free."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_js(p: Page, expression: str, timeout: int = 15_000) -> Any:
    """Poll a JS expression until it is truthy. (Playwright's ``wait_for_function``
    compiles its predicate with ``eval``, which the viewer's CSP rightly forbids;
    ``evaluate`` goes through the DevTools protocol instead.)"""
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = p.page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        time.sleep(0.03)


class Page:
    """A page that records every request it makes and every console error."""

    def __init__(self, browser: Any, width: int = 1400, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def close(self) -> None:
        self.context.close()

    def off_host(self) -> list[str]:
        """Requests to anything but 127.0.0.1 (``data:`` URLs are not requests)."""
        return [
            u
            for u in self.requests
            if not u.startswith("http://127.0.0.1:") and not u.startswith("data:")
        ]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
