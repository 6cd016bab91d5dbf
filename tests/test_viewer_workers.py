"""The viewer says which worker process (``host:pid``) handled each delivery of a
distributed run: a label under the message and on each turn of the timeline, in
headless Debian Chromium; a run in one process shows neither."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from browser_fixtures import Page, Viewer, off_loop, start_viewer, stop_viewer, wait_js
from test_store_workers import W_PONG, _relay_graph, _tagged_run

import coral_graph as cg
from coral_graph.store import SQLiteStore
from coral_graph.viewer.query import RunReader


@dataclass
class Runs:
    db: Path
    tagged: str
    plain: str


def _store(db: Path) -> Runs:
    events = _tagged_run()
    with SQLiteStore(db) as store:
        for e in events:
            store.on_event(e)
        plain = cg.run(_relay_graph(4), "go", store=store)  # 6 messages, not 8
    return Runs(db, events[0].run_id, plain.run_id)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return off_loop(_store, tmp_path_factory.mktemp("viewer-workers") / "coral.db")  # type: ignore[no-any-return]


def test_the_api_gives_the_worker_of_each_delivery(runs: Runs) -> None:
    rd = RunReader(runs.db)
    try:
        items = rd.messages(runs.tagged, limit=50)["items"]
        handled = {m["id"]: [(h["agent"], h["worker"]) for h in m["handled"]] for m in items}
        to_b = [m["id"] for m in items if m["mentions"] == ["b"]]
        assert len(to_b) == 3
        assert all(handled[mid] == [("b", W_PONG)] for mid in to_b)
        assert all(not v for mid, v in handled.items() if mid not in to_b)  # a: no worker
        turns = rd.timeline(runs.tagged)["turns"]
        assert {(t["agent"], t["worker"]) for t in turns} == {("a", None), ("b", W_PONG)}
        plain = rd.messages(runs.plain, limit=50)["items"]
        assert plain
        assert all(m["handled"] == [] for m in plain)
    finally:
        rd.close()


@pytest.fixture(scope="module")
def viewer(runs: Runs) -> Iterator[Viewer]:
    v = start_viewer(runs.db)
    try:
        yield v
    finally:
        stop_viewer(v)


@pytest.mark.browser
def test_labels_in_the_transcript_and_the_timeline(
    viewer: Viewer, runs: Runs, browser: object
) -> None:
    page = Page(browser, width=1280, height=800)
    try:
        p = page.page
        p.goto(f"{viewer.base}#run={quote(runs.tagged, safe='')}")
        wait_js(page, "window.__coralReady === true")
        wait_js(page, "document.querySelectorAll('#list .msg').length === 8")
        labels = p.locator("#list .msg .handled")
        assert labels.count() == 3
        texts = labels.evaluate_all("els => els.map(e => e.textContent)")
        assert all(f"handled by b on {W_PONG}" in t for t in texts), texts
        assert labels.evaluate_all("els => els.map(e => e.dataset.worker)") == [W_PONG] * 3
        p.goto(f"{viewer.base}#run={quote(runs.tagged, safe='')}&tab=timeline")
        p.locator("#timeline-svg").wait_for()
        assert p.locator("#timeline-svg rect.tl-turn[data-worker]").count() == 3
        assert p.locator("#timeline-svg rect.tl-turn").count() == 7
        assert W_PONG in p.locator("#tab-timeline .tl-workers").inner_text()
        # A run in one process: no label anywhere.
        p.goto(f"{viewer.base}#run={quote(runs.plain, safe='')}")
        wait_js(page, "document.querySelectorAll('#list .msg').length === 6")
        assert p.locator("#list .msg .handled").count() == 0
        assert not page.errors
        assert not page.off_host()
    finally:
        page.close()


@pytest.mark.browser
def test_a_live_run_labels_a_message_whose_delivery_was_handled_after_it_was_shown(
    tmp_path: Path, browser: object
) -> None:
    events: list[cg.Event] = off_loop(_tagged_run)
    rid = events[0].run_id
    # Cut right after the first message to b: it is on screen before its delivery ends.
    cut = next(
        i + 1
        for i, e in enumerate(events)
        if isinstance(e, cg.MessageSent) and e.message.mentions == ("b",)
    )
    db = tmp_path / "live.db"
    store = SQLiteStore(db)
    try:
        for e in events[:cut]:
            store.on_event(e)
        store.flush()
        v = start_viewer(db, "--stream-max-s", "0.6")
        page = Page(browser, width=1280, height=800)
        try:
            p = page.page
            p.goto(f"{v.base}#run={quote(rid, safe='')}")
            wait_js(page, "window.__coralReady === true")
            wait_js(page, "document.querySelectorAll('#list .msg').length === 2")
            assert p.locator("#list .msg .handled").count() == 0
            for e in events[cut:]:
                store.on_event(e)
            store.close()
            wait_js(page, "document.querySelectorAll('#list .msg').length === 8")
            wait_js(page, "document.querySelectorAll('#list .msg .handled').length === 3")
            first = p.locator("#list .msg").nth(1)
            assert "handled by b on " + W_PONG in (first.text_content() or "")
            assert not page.errors
        finally:
            page.close()
            stop_viewer(v)
    finally:
        store.close(raise_error=False)
