"""The web viewer in a real browser: headless Debian Chromium driven by Playwright,
against ``coral-graph view`` (a subprocess) serving runs that the real runtime wrote
through the real SQLite store. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser_fixtures import (
    CLI,
    UNICODE,
    LiveRun,
    Page,
    SmallRun,
    Viewer,
    make_big_run,
    make_small_run,
    off_loop,
    start_static_server,
    start_viewer,
    stop_viewer,
    wait_js,
)

from coral_graph.store._reader import open_reader

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("viewer") / "coral.db"


@pytest.fixture(scope="module")
def small(db: Path) -> SmallRun:
    return off_loop(make_small_run, db)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def big(db: Path, small: SmallRun) -> str:
    t0 = time.perf_counter()
    rid: str = off_loop(make_big_run, db)
    print(f"\n100k-message run written in {time.perf_counter() - t0:.1f} s")
    return rid


@pytest.fixture(scope="module")
def viewer(db: Path, small: SmallRun, big: str) -> Iterator[Viewer]:
    v = start_viewer(db, "--stream-max-s", "0.6")
    try:
        yield v
    finally:
        stop_viewer(v)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    try:
        yield p
    finally:
        p.close()


def run_url(base: str, rid: str, **state: str) -> str:
    extra = "".join(f"&{k}={quote(v, safe='')}" for k, v in state.items())
    return f"{base}#run={quote(rid, safe='')}{extra}"


def rows(p: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = p.page.eval_on_selector_all(
        "#list article.msg",
        """els => els.map(e => ({
            id: e.dataset.id, gseq: Number(e.dataset.gseq),
            sender: e.querySelector('.msg-head .sender .name').textContent,
            mentions: [...e.querySelectorAll('.msg-head .mention .name')].map(x => x.textContent),
            head: e.querySelector('.msg-head').innerText,
            text: e.querySelector('.md').textContent }))""",
    )
    return result


def wait_rows(p: Page) -> None:
    p.page.wait_for_selector("#list article.msg", timeout=15_000)
    wait_js(p, "window.__coralReady === true", timeout=15_000)


def first_checks(p: Page, url: str, small: SmallRun) -> None:
    """Order and headers, non-ASCII, injection payloads as text, no request off-host."""
    p.page.goto(url)
    wait_rows(p)
    got = rows(p)
    want = small.messages
    assert [r["id"] for r in got] == [m["message_id"] for m in want]
    for r, m in zip(got, want, strict=True):
        assert r["sender"] == m["sender"]
        assert r["mentions"] == m["mentions"]
        # "sender → @a @b" in the header
        head = r["head"].replace("\n", " ")
        if m["mentions"]:
            assert f"{m['sender']} → @" in head
    texts = " ".join(r["text"] for r in got)
    assert "日本語のテキスト 🚀" in texts
    # Payloads are visible as text, and nothing of theirs ran or loaded.
    assert '<img src=x onerror="window.__pwned=1">' in texts
    assert "<script>window.__pwned=1</script>" in texts
    body = p.page.inner_text("body")
    assert "Überprüfung 🔍 — 日本語 <img src=x" in body  # thread name, escaped
    assert p.page.evaluate("window.__pwned") is None
    assert p.page.locator('img[src="x"], #list script, svg[onload], [onerror]').count() == 0
    assert p.page.locator('a[href^="javascript"]').count() == 0
    assert p.page.locator(".img-blocked").count() == 1  # the remote image, not loaded
    assert p.page.locator("#list .msg.has-error .error").count() >= 1
    assert "critic stumbled on purpose" in p.page.inner_text("#list")
    assert p.page.locator("#list details.tool summary").first.inner_text().startswith("tool")
    assert p.off_host() == [], p.off_host()
    assert not [e for e in p.errors if "favicon" not in e], p.errors


def test_small_run_order_headers_and_safety(viewer: Viewer, small: SmallRun, page: Page) -> None:
    first_checks(page, run_url(viewer.base, small.run_id), small)
    page.shot("01-all-threads")
    # Unread since the last look: a badge until the thread is opened, then none.
    assert page.page.locator("#threads li.thread.closed .badge").inner_text() == "4"
    # Open the second thread from the sidebar: closed, with its summary.
    page.page.click("#threads li.thread.closed")
    wait_js(page, "location.hash.includes('thread=')")
    assert page.page.locator("#view-head .summary").inner_text().startswith("Summary: checked")
    tids = {r["id"].split("#")[0] for r in rows(page)}
    assert len(tids) == 1
    page.page.click("#list .msg.has-error .error summary")
    assert "Traceback" in page.page.inner_text("#list .msg.has-error .error pre")
    page.page.click("#list details.tool summary")
    page.shot("02-thread-error-tool")
    assert page.page.locator("#threads li.thread.closed .badge").count() == 0
    page.page.reload()
    wait_rows(page)
    assert page.page.locator("#threads li.thread.closed .badge").count() == 0
    page.page.keyboard.press("?")
    assert page.page.locator("#help").is_visible()
    page.page.keyboard.press("Escape")
    assert not page.page.locator("#help").is_visible()
    assert page.page.evaluate("window.__pwned") is None
    assert page.off_host() == []


def test_runs_list(viewer: Viewer, small: SmallRun, big: str, page: Page) -> None:
    page.page.goto(viewer.base)
    page.page.wait_for_selector("#runs-table tbody tr")
    ids = page.page.eval_on_selector_all(
        "#runs-table tbody tr", "els => els.map(e => e.dataset.run)"
    )
    assert {small.run_id, big} <= set(ids)
    assert "budget:messages" in page.page.inner_text("#runs-table")
    page.shot("00-runs")
    page.page.click(f'#runs-table tr[data-run="{small.run_id}"] a')
    wait_rows(page)
    assert len(rows(page)) == len(small.messages)


def _big_messages(db: Path, rid: str) -> list[dict[str, Any]]:
    with open_reader(db) as r:
        return r.messages(rid)


@pytest.fixture(scope="module")
def big_msgs(db: Path, big: str) -> list[dict[str, Any]]:
    return _big_messages(db, big)


def test_big_run_first_screen_and_bounded_dom(
    viewer: Viewer, big: str, big_msgs: list[dict[str, Any]], page: Page
) -> None:
    assert len(big_msgs) >= 100_000
    t0 = time.perf_counter()
    page.page.goto(run_url(viewer.base, big))
    page.page.wait_for_selector("#list article.msg", state="visible", timeout=15_000)
    first = time.perf_counter() - t0
    in_page = page.page.evaluate("window.__coralFirstScreen")
    print(
        f"\n100k run: first screen in {first:.3f} s (page clock: {in_page:.0f} ms after navigation)"
    )
    assert first < 10, "sanity bound only; the target is < 2 s"
    page.shot("03-big-run")
    n0 = page.page.locator("#list article.msg").count()
    assert 0 < n0 <= 240
    # Scroll a long way down: more pages load, the DOM stays bounded.
    for _ in range(25):
        page.page.mouse.move(600, 500)
        page.page.mouse.wheel(0, 4000)
        page.page.wait_for_timeout(40)
    page.page.wait_for_timeout(300)
    n1 = page.page.locator("#list article.msg").count()
    last = page.page.eval_on_selector("#list article.msg:last-child", "e => Number(e.dataset.gseq)")
    assert n1 <= 240
    assert last > big_msgs[n0 - 1]["gseq"]
    # G: the very end of the run.
    page.page.keyboard.press("G")
    wait_js(
        page,
        "document.querySelector('#list article.msg:last-child')?.dataset.id === "
        f"{big_msgs[-1]['message_id']!r}",
    )
    assert page.page.locator("#list article.msg").count() <= 240
    # e: the next error from the top.
    page.page.keyboard.press("g")
    wait_js(
        page,
        "document.querySelector('#list article.msg:first-child.selected')?.dataset.id === 't-1#1'",
    )
    page.page.keyboard.press("e")
    page.page.wait_for_selector("#list article.msg.selected.has-error")
    assert page.off_host() == []


def test_deep_link_lands_below_sticky_header(
    viewer: Viewer, big: str, big_msgs: list[dict[str, Any]], page: Page
) -> None:
    target = big_msgs[61_234]["message_id"]
    page.page.goto(run_url(viewer.base, big, m=target))
    sel = f'#list article.msg[data-id="{target}"]'
    page.page.wait_for_selector(sel + ".selected")
    page.page.wait_for_timeout(100)

    def geometry() -> dict[str, float]:
        g: dict[str, float] = page.page.evaluate(
            """id => {
                const sel = `#list article.msg[data-id="${id}"]`;
                const r = document.querySelector(sel).getBoundingClientRect();
                const h = document.querySelector('#view-head').getBoundingClientRect();
                return {top: r.top, headBottom: h.bottom, vh: innerHeight};
            }""",
            target,
        )
        return g

    g = geometry()
    assert g["headBottom"] - 1 <= g["top"] < g["headBottom"] + 40, g
    page.shot("04-deep-link")
    page.page.reload()
    page.page.wait_for_selector(sel + ".selected")
    page.page.wait_for_timeout(100)
    g = geometry()
    assert g["headBottom"] - 1 <= g["top"] < g["headBottom"] + 40, g
    # j moves to the next message and the URL follows.
    page.page.keyboard.press("j")
    nxt = big_msgs[61_235]["message_id"]
    wait_js(page, f"location.hash.includes({quote(nxt, safe='')!r})")


def test_copy_link_lands_on_message(viewer: Viewer, small: SmallRun, page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.page.goto(run_url(viewer.base, small.run_id))
    wait_rows(page)
    mid = small.messages[3]["message_id"]
    page.page.click(f'#list article.msg[data-id="{mid}"] .copy-btn')
    link = page.page.evaluate("navigator.clipboard.readText()")
    assert quote(mid, safe="") in link
    page.page.goto("about:blank")
    page.page.goto(link)
    page.page.wait_for_selector(f'#list article.msg[data-id="{mid}"].selected')


def test_member_filter_updates_url_and_survives_reload(
    viewer: Viewer, small: SmallRun, page: Page
) -> None:
    page.page.goto(run_url(viewer.base, small.run_id))
    wait_rows(page)
    page.page.click('#tab-members tr[data-agent="solver"]')
    wait_js(page, "location.hash.includes('agent=solver')")
    want = [
        m["message_id"]
        for m in small.messages
        if m["sender"] == "solver" or "solver" in m["mentions"]
    ]
    wait_js(page, f"document.querySelectorAll('#list article.msg').length === {len(want)}")
    assert [r["id"] for r in rows(page)] == want
    page.shot("05-member-filter")
    page.page.reload()
    wait_rows(page)
    page.page.wait_for_selector('#chips .chip[data-filter="agent"]')
    assert [r["id"] for r in rows(page)] == want
    assert page.page.locator('#tab-members tr.on[data-agent="solver"]').count() == 1
    # Stats of the members panel come from the run.
    solver = page.page.locator('#tab-members tr[data-agent="solver"]').inner_text()
    assert "150" in solver  # tokens of its one model call
    # Errors chip: only messages whose handling raised.
    page.page.click('#chips .chip[data-filter="agent"] .x')
    page.page.click("#errors-toggle")
    wait_js(page, "location.hash.includes('errors=1')")
    wait_js(page, "document.querySelectorAll('#list article.msg').length === 1")
    assert page.page.locator("#list article.msg.has-error").count() == 1


def test_search_reaches_off_screen_messages(
    viewer: Viewer, big: str, big_msgs: list[dict[str, Any]], page: Page
) -> None:
    q = "ping after 9876 "
    hits = [m for m in big_msgs if q.casefold() in m["content"].casefold()]
    assert len(hits) >= 2
    page.page.goto(run_url(viewer.base, big))
    wait_rows(page)
    assert page.page.locator(f'#list article.msg[data-id="{hits[0]["message_id"]}"]').count() == 0
    page.page.keyboard.press("/")
    page.page.keyboard.type(q)
    page.page.keyboard.press("Enter")
    wait_js(page, f"document.querySelector('#search-count').textContent === '1 of {len(hits)}'")
    row = page.page.locator(f'#list article.msg[data-id="{hits[0]["message_id"]}"]')
    row.wait_for()
    assert row.locator("mark").count() >= 1
    assert page.page.evaluate("location.hash").count("q=") == 1
    page.shot("06-search")
    page.page.locator("#scroller").focus()
    page.page.keyboard.press("n")
    wait_js(page, f"document.querySelector('#search-count').textContent === '2 of {len(hits)}'")
    page.page.locator(f'#list article.msg.selected[data-id="{hits[1]["message_id"]}"]').wait_for()
    page.page.keyboard.press("p")
    wait_js(page, f"document.querySelector('#search-count').textContent === '1 of {len(hits)}'")
    # The search is in the URL: a reload lands on the same hits.
    page.page.reload()
    wait_js(page, f"document.querySelector('#search-count').textContent.endsWith('of {len(hits)}')")


def test_graph_edges_are_the_runs_mention_pairs(
    viewer: Viewer, small: SmallRun, page: Page
) -> None:
    page.page.goto(run_url(viewer.base, small.run_id, tab="graph"))
    wait_rows(page)
    page.page.wait_for_selector("#graph-svg g.edge")
    used = page.page.eval_on_selector_all(
        "#graph-svg g.edge.used",
        "els => els.map(e => [e.dataset.src, e.dataset.dst, Number(e.dataset.count)])",
    )
    want = Counter((m["sender"], x) for m in small.messages for x in m["mentions"])
    assert {(a, b): n for a, b, n in used} == dict(want)
    unused = page.page.eval_on_selector_all(
        "#graph-svg g.edge.unused", "els => els.map(e => [e.dataset.src, e.dataset.dst])"
    )
    assert ["solver", "critic"] in unused
    assert ["planner", "archivist"] in unused
    page.shot("07-graph")
    page.page.click('#graph-svg g.edge.used[data-src="planner"][data-dst="solver"] .edge-count')
    wait_js(page, "location.hash.includes('from=planner') && location.hash.includes('to=solver')")
    want_ids = [
        m["message_id"]
        for m in small.messages
        if m["sender"] == "planner" and "solver" in m["mentions"]
    ]
    wait_js(page, f"document.querySelectorAll('#list article.msg').length === {len(want_ids)}")
    assert [r["id"] for r in rows(page)] == want_ids
    page.page.click('#graph-svg g.node[data-agent="critic"] circle')
    wait_js(page, "location.hash.includes('agent=critic')")


def test_live_messages_appear_once(viewer: Viewer, db: Path, page: Page) -> None:
    live = LiveRun(db, n=12, pause=0.15)
    live.start()
    try:
        _watch_live(viewer, db, page, live)
    finally:
        live.go()  # never leave the writer thread waiting


def _watch_live(viewer: Viewer, db: Path, page: Page, live: LiveRun) -> None:
    assert live.run_id is not None
    page.page.goto(run_url(viewer.base, live.run_id))
    wait_rows(page)
    assert page.page.locator("#live-badge").is_visible()
    live.go()
    wait_js(
        page,
        "[...document.querySelectorAll('#list .msg .md')].some(e => e.textContent === 'done')",
        timeout=20_000,
    )
    live.join()
    got = rows(page)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)), "a live message was shown twice"
    with open_reader(db) as r:
        stored = [m["message_id"] for m in r.messages(live.run_id)]
    assert ids == stored
    ticks = [r["text"] for r in got if re.match(r"tick \d", r["text"])]
    assert len(ticks) == 13
    # The stream was recycled (--stream-max-s 0.6) during the run and resumed.
    assert page.page.evaluate("window.__coralLive") >= 12
    page.page.wait_for_selector("#live-badge", state="hidden", timeout=10_000)
    page.shot("08-live")
    assert page.off_host() == []


AT_BOTTOM = (
    "(s => s.scrollHeight - s.scrollTop - s.clientHeight <= 1)(document.querySelector('#scroller'))"
)
# Every state the "new messages" pill is shown in, in order, recorded by the page.
WATCH_PILL = """() => {
    window.__pillShown = [];
    const p = document.querySelector('#new-pill');
    new MutationObserver(() => { if (!p.hidden) window.__pillShown.push(p.textContent); })
        .observe(p, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


def test_new_messages_pill_when_scrolled_up(viewer: Viewer, db: Path, browser: Any) -> None:
    live = LiveRun(db, n=12, pause=0.05)
    live.start()
    page = Page(browser, height=560)  # short, so that a few messages overflow the list
    try:
        _watch_pill(viewer, db, page, live)
    finally:
        live.go()  # never leave the writer thread waiting
        page.close()


def _watch_pill(viewer: Viewer, db: Path, page: Page, live: LiveRun) -> None:
    from playwright.sync_api import expect

    assert live.run_id is not None
    page.page.goto(run_url(viewer.base, live.run_id))
    wait_rows(page)
    page.page.evaluate(WATCH_PILL)
    pill = page.page.locator("#new-pill")
    last = page.page.locator("#list article.msg").last
    # At the bottom: new messages scroll into view, and no pill.
    live.allow(8)
    expect(last.locator(".md")).to_have_text("tick 8 — live ⏱", timeout=20_000)
    expect(last).to_be_in_viewport(timeout=10_000)
    wait_js(page, AT_BOTTOM)
    assert page.page.evaluate("document.querySelector('#scroller').scrollTop") > 0, "no overflow"
    expect(pill).to_be_hidden()
    assert page.page.evaluate("window.__pillShown") == []
    # Scrolled up: new messages are added below, the place is kept, the pill counts them.
    page.page.locator("#scroller").hover()
    page.page.mouse.wheel(0, -10_000)
    wait_js(page, "document.querySelector('#scroller').scrollTop === 0")
    live.allow(3)
    expect(pill).to_have_text("3 new messages ↓", timeout=20_000)
    expect(pill).to_be_visible()
    expect(last.locator(".md")).to_have_text("tick 11 — live ⏱")
    expect(last).not_to_be_in_viewport()
    assert page.page.evaluate("document.querySelector('#scroller').scrollTop") == 0
    assert page.page.evaluate("window.__pillShown") == [
        "1 new message ↓",
        "2 new messages ↓",
        "3 new messages ↓",
    ]
    page.shot("10-new-messages-pill")
    # Clicking the pill jumps to the newest message and hides the pill.
    pill.click()
    expect(pill).to_be_hidden(timeout=10_000)
    expect(last).to_have_class(re.compile(r"\bselected\b"), timeout=10_000)
    expect(last.locator(".md")).to_have_text("tick 11 — live ⏱")
    expect(last).to_be_in_viewport()
    wait_js(page, AT_BOTTOM)
    with open_reader(db) as r:
        stored = [m["message_id"] for m in r.messages(live.run_id)]
    assert [x["id"] for x in rows(page)] == stored
    wait_js(page, f"location.hash.includes({quote(stored[-1], safe='')!r})")
    # Back at the bottom, it follows again: the rest scrolls into view without a pill.
    shown = len(page.page.evaluate("window.__pillShown"))
    live.go()
    expect(last.locator(".md")).to_have_text("done", timeout=20_000)
    live.join()
    expect(last).to_be_in_viewport(timeout=10_000)
    wait_js(page, AT_BOTTOM)
    expect(pill).to_be_hidden()
    assert len(page.page.evaluate("window.__pillShown")) == shown
    ids = [x["id"] for x in rows(page)]
    assert len(ids) == len(set(ids)), "a live message was shown twice"
    with open_reader(db) as r:
        assert ids == [m["message_id"] for m in r.messages(live.run_id)]
    page.shot("11-new-messages-followed")
    assert page.off_host() == []


def test_static_export_passes_first_checks(
    small: SmallRun, db: Path, tmp_path: Path, page: Page
) -> None:
    out = tmp_path / "site"
    done = subprocess.run(
        [*CLI, "view", "--db", str(db), "--export", str(out), small.run_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").is_file()
    assert (out / "data" / "run.js").is_file()
    url, proc = start_static_server(out)
    try:
        first_checks(page, url + "#run=" + quote(small.run_id, safe=""), small)
        assert "data-mode" not in page.page.evaluate("location.href")
        page.shot("09-static-export")
        # A deep link and a filter work from the files alone.
        mid = next(m["message_id"] for m in small.messages if "critic" in m["mentions"])
        page.page.goto(
            url + f"#run={quote(small.run_id, safe='')}&agent=critic&m={quote(mid, safe='')}"
        )
        page.page.wait_for_selector(f'#list article.msg.selected[data-id="{mid}"]')
        assert all(r["sender"] == "critic" or "critic" in r["mentions"] for r in rows(page))
        assert page.off_host() == []
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_unicode_content_is_kept(small: SmallRun) -> None:
    assert any(UNICODE in m["content"] for m in small.messages)
