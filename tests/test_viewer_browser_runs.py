"""The viewer's run list, failures, model-call inspector, timeline, comparison, long
messages, search highlighting, live members, dark mode and the ``file://`` export, in
headless Debian Chromium at desktop (1280 px) and phone (390 px) width.

The runs are real: LLM agents through litellm against the OpenAI-compatible stub on
127.0.0.1 (one run retried then answered, one where every call is refused), a run
whose process was killed (interrupted), a run with a long message, all written by
the real SQLite store and served by ``coral-graph view`` in a subprocess.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser_fixtures import (
    CLI,
    FAIL_TEXT,
    LiveFailingRun,
    LiveRun,
    LLMRuns,
    Page,
    SmallRun,
    Viewer,
    make_interrupted_run,
    make_llm_runs,
    make_long_run,
    make_small_run,
    off_loop,
    start_viewer,
    stop_viewer,
    wait_js,
)

from coral_graph.store._reader import open_reader

pytestmark = pytest.mark.browser

DESKTOP = (1280, 800)
PHONE = (390, 844)


@dataclass
class Runs:
    db: Path
    small: SmallRun
    llm: LLMRuns
    interrupted: str
    long: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    db = tmp_path_factory.mktemp("viewer-runs") / "coral.db"
    small = off_loop(make_small_run, db)
    llm = off_loop(make_llm_runs, db)
    long = off_loop(make_long_run, db)
    interrupted = make_interrupted_run(db)
    return Runs(db, small, llm, interrupted, long)


@pytest.fixture(scope="module")
def viewer(runs: Runs) -> Iterator[Viewer]:
    v = start_viewer(runs.db, "--stream-max-s", "0.6")
    try:
        yield v
    finally:
        stop_viewer(v)


def open_page(browser: Any, size: tuple[int, int], scheme: str = "light") -> Page:
    p = Page(browser, width=size[0], height=size[1])
    p.page.emulate_media(color_scheme=scheme)
    return p


@pytest.fixture(params=[DESKTOP, PHONE], ids=["1280px", "390px"])
def page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Page]:
    p = open_page(browser, request.param)
    try:
        yield p
    finally:
        p.close()


def url(v: Viewer, rid: str, **state: str) -> str:
    extra = "".join(f"&{k}={quote(x, safe='')}" for k, x in state.items())
    return f"{v.base}#run={quote(rid, safe='')}{extra}"


def ready(p: Page) -> None:
    wait_js(p, "window.__coralReady === true")


def width_of(p: Page) -> int:
    return p.page.viewport_size["width"]  # type: ignore[no-any-return]


def no_sideways_scroll(p: Page) -> None:
    """Nothing sticks out to the right: the page is usable at this width."""
    over = p.page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
    assert over <= 1, f"the page is {over} px wider than the screen"


def shot(p: Page, name: str) -> None:
    p.shot(f"{name}-{width_of(p)}")


def test_every_llm_call_failing_shows_inline_in_counts_and_header(
    viewer: Viewer, runs: Runs, page: Page
) -> None:
    p = page.page
    p.goto(url(viewer, runs.llm.failed))
    ready(page)
    banner = p.locator("#banner")
    banner.wait_for()
    assert "2 of 2 model calls failed" in banner.inner_text()
    assert "Incorrect API key" in banner.inner_text()
    meta = p.locator("#run-meta").inner_text()
    stop = runs.llm.failed_result.stop_reason
    assert stop in meta
    errors = int(re.search(r"⚠ (\d+) errors?", meta).group(1))  # type: ignore[union-attr]
    with open_reader(runs.db) as r:
        raised = [e["agent"] for e in r.errors(runs.llm.failed)]
    turn_errors = len(raised)
    assert errors >= 2 + turn_errors
    # Inline, on the task message that the agents were handling.
    calls = p.locator("#list .msg .calls a.call.failed")
    assert calls.count() == 2
    assert sorted(calls.evaluate_all("els => els.map(e => e.dataset.agent)")) == ["alpha", "beta"]
    assert FAIL_TEXT.split(":")[0] in calls.first.inner_text()
    assert p.locator("#list .msg.has-error").count() >= 1
    assert p.locator("#threads .err-count").first.is_visible() or width_of(page) < 800
    no_sideways_scroll(page)
    shot(page, "20-llm-all-failed")
    # The err count of each agent includes its failed model call.
    if width_of(page) < 800:
        p.click("#mnav button[data-pane=panel]")
    row = p.locator('#tab-members tr[data-agent="alpha"]')
    row.wait_for()
    assert int(row.locator("td").nth(6).inner_text()) == 1 + raised.count("alpha")
    assert page.errors == [] or all("favicon" in e for e in page.errors), page.errors
    assert page.off_host() == []


def test_call_inspector_prompt_response_retries(viewer: Viewer, runs: Runs, page: Page) -> None:
    p = page.page
    p.goto(url(viewer, runs.llm.ok))
    ready(page)
    chips = p.locator("#list .msg .calls a.call")
    assert chips.count() == 2
    assert "attempt 2" in chips.nth(1).inner_text()
    assert "overloaded" in chips.nth(0).inner_text()
    chips.nth(1).click()
    box = p.locator("#call-view")
    box.wait_for()
    wait_js(page, "location.hash.includes('call=')")
    body = p.locator("#call-body")
    wait_js(page, "document.querySelector('#call-body').textContent.includes('Prompt as sent')")
    text = body.inner_text()
    assert "You answer arithmetic questions." in text
    assert "What is 6 x 7?" in text
    assert "FINAL: 42" in text
    assert re.search(r"attempt\s+2 \(a retry\)", text)
    assert re.search(r"57 prompt \+ \d+ completion", text)
    no_sideways_scroll(page)
    shot(page, "21-call-inspector")
    p.keyboard.press("Escape")
    box.wait_for(state="hidden")
    assert "call=" not in p.evaluate("location.hash")
    # The answer links to the call that wrote it.
    p.click("#list .msg .call-link")
    wait_js(page, "document.querySelector('#call-body').textContent.includes('FINAL: 42')")
    p.click("#call-close")
    box.wait_for(state="hidden")


def test_timeline_of_turns_and_calls(viewer: Viewer, runs: Runs, page: Page) -> None:
    p = page.page
    p.goto(url(viewer, runs.llm.ok, tab="timeline"))
    ready(page)
    if width_of(page) < 800:
        p.click("#mnav button[data-pane=panel]")
    p.locator("#timeline-svg").wait_for()
    assert p.locator("#timeline-svg rect.tl-turn").count() == 1
    assert p.locator("#timeline-svg g.tl-call").count() == 2
    assert p.locator("#timeline-svg g.tl-call.failed").count() == 1
    assert p.locator("#tab-timeline table.calls-table tbody tr.failed").count() == 1
    no_sideways_scroll(page)
    shot(page, "22-timeline")
    p.locator("#timeline-svg g.tl-call.failed rect").click()
    wait_js(page, "document.querySelector('#call-body').textContent.includes('Failed model call')")
    assert "overloaded" in p.locator("#call-body").inner_text()


def test_run_list_colours_filter_search_answer_banner(
    viewer: Viewer, runs: Runs, page: Page
) -> None:
    p = page.page
    p.goto(viewer.base)
    p.locator("#runs-table tbody tr").first.wait_for()

    def shown() -> list[str]:
        got: list[str] = p.eval_on_selector_all(
            "#runs-table tbody tr", "els => els.map(e => e.dataset.run)"
        )
        return got

    every = shown()
    assert {runs.small.run_id, runs.llm.ok, runs.llm.failed, runs.interrupted} <= set(every)
    stops = dict(
        p.eval_on_selector_all(
            "#runs-table tbody tr", "els => els.map(e => [e.dataset.run, e.dataset.stop])"
        )
    )
    assert stops[runs.llm.ok] == "ok"
    assert stops[runs.interrupted] == "bad"
    assert stops[runs.llm.failed] == "bad"  # every model call failed
    colour = p.eval_on_selector(
        f'#runs-table tr[data-run="{runs.llm.ok}"] .stop', "e => getComputedStyle(e).color"
    )
    bad = p.eval_on_selector(
        f'#runs-table tr[data-run="{runs.interrupted}"] .stop', "e => getComputedStyle(e).color"
    )
    assert colour != bad
    answer = p.locator(f'#runs-table tr[data-run="{runs.llm.ok}"] td.answer').inner_text()
    assert answer == "42"
    no_sideways_scroll(page)
    shot(page, "23-runs")
    p.select_option("#runs-status", "failed")
    # Failed, or with failures: the small run's critic raised, the ok run's first call
    # failed (and was retried).
    assert set(shown()) == {runs.llm.failed, runs.interrupted, runs.small.run_id, runs.llm.ok}
    p.select_option("#runs-status", "interrupted")
    assert shown() == [runs.interrupted]
    p.select_option("#runs-status", "")
    p.fill("#runs-search", "sky is blue")
    assert shown() == []
    p.fill("#runs-search", "sky is BLUE?")
    assert shown() == []
    p.fill("#runs-search", "Why is the sky")
    assert shown() == [runs.long]
    p.fill("#runs-search", "42")  # the answer column is searched too
    assert runs.llm.ok in shown()
    assert "of" in p.locator("#runs-count").inner_text()
    # The interrupted run: a banner with the command that resumes it.
    p.goto(url(viewer, runs.interrupted))
    ready(page)
    cmd = p.locator("#banner .resume-cmd")
    cmd.wait_for()
    assert cmd.inner_text().startswith(f"coral-graph resume {runs.interrupted} --db ")
    assert str(runs.db.resolve()) in cmd.inner_text()
    assert "interrupted" in p.locator("#run-meta").inner_text()
    no_sideways_scroll(page)
    shot(page, "24-interrupted")


def test_compare_two_runs(viewer: Viewer, runs: Runs, page: Page) -> None:
    p = page.page
    p.goto(viewer.base)
    p.locator("#runs-table tbody tr").first.wait_for()
    assert p.locator("#compare-btn").is_disabled()
    for rid in (runs.llm.ok, runs.llm.failed):
        p.locator(f'#runs-table tr[data-run="{rid}"] input.pick').check()
    p.click("#compare-btn")
    wait_js(page, "location.hash.includes('compare=')")
    view = p.locator("#compare-view")
    view.locator("table.cmp-agents").wait_for()
    text = view.inner_text()
    assert runs.llm.ok in text
    assert runs.llm.failed in text
    assert "42" in view.locator("tr.cmp-answer").inner_text()
    assert "2 (2 failed)" in text
    agents = view.locator("table.cmp-agents tbody tr").evaluate_all(
        "els => els.map(e => e.dataset.agent)"
    )
    assert {"writer", "alpha", "beta", "user"} <= set(agents)
    no_sideways_scroll(page)
    shot(page, "25-compare")


def test_long_message_collapsed_and_every_hit_highlighted(
    viewer: Viewer, runs: Runs, page: Page
) -> None:
    p = page.page
    p.goto(url(viewer, runs.long))
    ready(page)
    long_row = p.locator("#list article.msg").nth(1)
    body = long_row.locator(".md")
    assert "clamped" in (body.get_attribute("class") or "")
    height = body.evaluate("e => e.getBoundingClientRect().height")
    assert height < 400
    more = long_row.locator(".more-btn")
    assert more.inner_text() == "show more"
    more.click()
    assert "clamped" not in (body.get_attribute("class") or "")
    assert body.evaluate("e => e.getBoundingClientRect().height") > 2 * height
    more.click()
    assert "clamped" in (body.get_attribute("class") or "")
    shot(page, "26-long-collapsed")
    # Search a word on screen already: every hit in every row is marked, also across
    # markup ("**Ray**leigh") and in capitals; a collapsed row with a hit opens.
    p.fill("#search", "rayleigh")
    p.press("#search", "Enter")
    wait_js(page, "document.querySelector('#search-count').textContent.endsWith('of 2')")
    wait_js(page, "document.querySelectorAll('#list mark.hit').length > 0")
    marks = long_row.locator("mark.hit").evaluate_all("els => els.map(e => e.textContent)")
    assert "".join(marks).lower() == "rayleigh" * 5
    assert "RAYLEIGH" in marks
    assert ["Ray", "leigh"] == [m for m in marks if m in ("Ray", "leigh")]
    assert "clamped" not in (body.get_attribute("class") or "")
    short = p.locator("#list article.msg").nth(2).locator("mark.hit")
    assert short.count() == 1
    shot(page, "27-search-highlight")
    # A new query clears the old marks.
    p.fill("#search", "blue sky")
    p.press("#search", "Enter")
    wait_js(page, "document.querySelector('#search-count').textContent.endsWith('of 1')")
    wait_js(
        page,
        "[...document.querySelectorAll('#list mark.hit')]"
        ".every(m => m.textContent.toLowerCase() === 'blue sky')",
    )


def test_times_are_absolute_and_relative(viewer: Viewer, runs: Runs, page: Page) -> None:
    p = page.page
    p.goto(url(viewer, runs.small.run_id))
    ready(page)
    t = p.locator("#list article.msg time").first
    assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", t.locator(".abs").inner_text())
    assert re.search(r"ago|just now", t.locator(".rel").inner_text())
    iso = t.get_attribute("datetime") or ""
    assert re.match(r"\d{4}-\d\d-\d\dT", iso)


def test_dark_mode_follows_the_system(viewer: Viewer, runs: Runs, browser: Any) -> None:
    lum = (
        "(() => { const [r, g, b] = getComputedStyle(document.documentElement)"
        ".backgroundColor.match(/\\d+/g).map(Number); return (r + g + b) / 765; })()"
    )
    for scheme, dark in (("dark", True), ("light", False)):
        pg = open_page(browser, DESKTOP, scheme)
        try:
            pg.page.goto(url(viewer, runs.llm.failed))
            ready(pg)
            level = pg.page.evaluate(lum)
            assert (level < 0.25) if dark else (level > 0.8), (scheme, level)
            text = pg.page.eval_on_selector("body", "e => getComputedStyle(e).color")
            assert text != "rgb(0, 0, 0)" or not dark
            if dark:
                pg.shot("28-dark-1280")
        finally:
            pg.close()


def test_members_and_counts_update_live(viewer: Viewer, runs: Runs, browser: Any) -> None:
    live = LiveRun(runs.db, n=6, pause=0.05)
    live.start()
    pg = open_page(browser, DESKTOP)
    try:
        assert live.run_id is not None
        pg.page.goto(url(viewer, live.run_id))
        ready(pg)
        cell = pg.page.locator('#tab-members tr[data-agent="ticker"] td').nth(1)
        cell.wait_for()
        before = int(cell.inner_text())
        assert before >= 1
        live.go()
        live.join()
        with open_reader(runs.db) as r:
            sent = sum(m["sender"] == "ticker" for m in r.messages(live.run_id))
            total = len(r.messages(live.run_id))
        assert sent == 8  # tick 0, six ticks, done
        wait_js(
            pg,
            "document.querySelector('#tab-members tr[data-agent=\"ticker\"] td:nth-child(2)')"
            f".textContent === '{sent}'",
            timeout=20_000,
        )
        wait_js(pg, f"document.querySelector('#run-meta').textContent.includes('{total} messages')")
        pg.page.locator("#live-badge").wait_for(state="hidden", timeout=10_000)
        counts = pg.page.locator("#threads li.thread").first.inner_text()
        assert f"{total} messages" in counts
        # The view's own count and rows: the stream may still be reconnecting (it is
        # recycled every 0.6 s here) when the run's summary already says finished.
        wait_js(
            pg,
            "document.querySelector('#view-head .count').textContent"
            f".startsWith('{total} messages')",
        )
        with open_reader(runs.db) as r:
            stored = [m["message_id"] for m in r.messages(live.run_id)]
        wait_js(pg, f"window.__coralWindow().ids.length === {len(stored)}")
        state = pg.page.evaluate("window.__coralWindow()")
        assert state["ids"] == stored, json.dumps(state)
        assert state["total"] == total
    finally:
        live.go()
        pg.close()


def test_failures_of_a_live_run_show_on_the_rows_already_shown(
    viewer: Viewer, runs: Runs, page: Page
) -> None:
    live = LiveFailingRun(runs.db, n=1)
    live.start()
    try:
        assert live.run_id is not None
        p = page.page
        p.goto(url(viewer, live.run_id))
        ready(page)
        task = p.locator("#list article.msg").first
        task.wait_for()
        assert task.locator(".calls").count() == 0
        live.go()
        live.join()
        chips = task.locator(".calls a.call.failed")
        chips.first.wait_for(timeout=20_000)
        assert chips.count() == 2
        assert "attempt 2" in chips.nth(1).inner_text()
        task.locator(".error").first.wait_for()
        assert "no model would answer" in task.inner_text()
        banner = p.locator("#banner")
        wait_js(
            page, "document.querySelector('#banner').textContent.includes('2 of 2 model calls')"
        )
        assert "Incorrect API key" in banner.inner_text()
        wait_js(page, "/⚠ 3 errors/.test(document.querySelector('#run-meta').textContent)")
        no_sideways_scroll(page)
        shot(page, "30-live-failures")
    finally:
        live.go()


def test_static_export_works_from_file_url(runs: Runs, tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "site"
    done = subprocess.run(
        [*CLI, "view", "--db", str(runs.db), "--export", str(out), runs.llm.ok],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for size in (DESKTOP, PHONE):
        pg = open_page(browser, size)
        try:
            pg.page.goto((out / "index.html").as_uri())
            ready(pg)
            pg.page.locator("#list article.msg").first.wait_for()
            assert pg.page.locator("#list article.msg").count() == 2
            assert pg.page.locator("#list .calls a.call").count() == 2
            assert pg.page.evaluate("location.protocol") == "file:"
            pg.page.locator("#list .calls a.call").nth(1).click()
            wait_js(pg, "document.querySelector('#call-body').textContent.includes('FINAL: 42')")
            assert not [e for e in pg.errors if "favicon" not in e], pg.errors
            assert [u for u in pg.requests if not u.startswith("file://")] == []
            no_sideways_scroll(pg)
            pg.shot(f"29-export-file-url-{size[0]}")
        finally:
            pg.close()


def _small_run_named(db: Path, run_id: str) -> None:
    import coral_graph as cg
    from coral_graph.store import SQLiteStore

    @cg.agent
    async def echo(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])

    g = cg.AgentGraph()
    g.add_agent("echo", echo)

    async def main() -> None:
        with SQLiteStore(db) as store:
            async with cg.open_runtime(g, store=store) as rt:
                await rt.run("hello", entry=["echo"], run_id=run_id)

    cg.run_async(main)


def test_a_run_opened_before_the_store_has_it_shows_once_stored(
    browser: Any, tmp_path: Path
) -> None:
    """A run's address opened as the run starts, before the store's first write: the
    page says it waits for the run, then shows it (not "no such run")."""
    db = tmp_path / "later.db"
    off_loop(_small_run_named, db, "r-before")  # a store with another run in it
    v = start_viewer(db)
    pg = open_page(browser, DESKTOP)
    try:
        p = pg.page
        p.goto(url(v, "r-later"))
        waiting = "document.querySelector('#toast').textContent.includes('waiting for run r-later')"
        wait_js(pg, waiting)
        off_loop(_small_run_named, db, "r-later")
        wait_js(pg, "(document.querySelector('#run-title') || {}).textContent.includes('r-later')")
        p.locator("#list article.msg").nth(1).wait_for()
        assert "echo: hello" in p.locator("#list").inner_text()
    finally:
        pg.close()
        stop_viewer(v)
