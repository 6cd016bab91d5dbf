"""The viewer lists the evals of a store (``coral-graph eval``'s two tables): id,
dataset, accuracy per config, and each item linked to its run's transcript; a store
without the tables lists none, without an error.

The eval is real: ``run_eval`` over two configs (LLM voters against the scripted
model, and a python agent that never answers) on three items, into a SQLite store,
served by the app (server test) and by ``coral-graph view`` to headless Chromium.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from browser_fixtures import Page, make_small_run, off_loop, start_viewer, stop_viewer, wait_js
from starlette.testclient import TestClient
from test_eval import QUESTIONS, WRONG, _voting_config

from coral_graph.eval._datasets import load_dataset
from coral_graph.eval._runner import run_eval
from coral_graph.testing import NoisyModel
from coral_graph.viewer.query import RunReader
from coral_graph.viewer.web import create_app

BASE = "http://127.0.0.1:8000"


@dataclass
class Eval:
    db: Path
    eval_id: str
    run_ids: dict[tuple[str, str], str]  # (config, item) -> run


def make_eval(tmp: Path) -> Eval:
    f = tmp / "s.jsonl"
    f.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": q, "answers": [a], "scorer": "numeric"}) + "\n"
            for i, (q, a) in enumerate(list(QUESTIONS.items())[:3])
        )
    )
    (tmp / "mute.py").write_text("async def mute(ctx, message):\n    return None\n")
    (tmp / "mute.yaml").write_text(
        "name: mute\nagents:\n  m: {kind: python, python: mute.py:mute}\n"
    )
    model = NoisyModel(QUESTIONS, accuracy=1.0, wrong=WRONG, name="noisy-view")
    try:
        report = anyio.run(
            lambda: run_eval(
                [_voting_config(tmp, 1, "scripted/noisy-view"), tmp / "mute.yaml"],
                load_dataset(f),
                db=tmp / "e.db",
            )
        )
    finally:
        model.close()
    return Eval(
        tmp / "e.db", report.eval_id, {(i.config, i.item_id): str(i.run_id) for i in report.items}
    )


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> Eval:
    return off_loop(make_eval, tmp_path_factory.mktemp("viewer-evals"))


def test_evals_api_lists_accuracy_and_items_link_runs(ev: Eval) -> None:
    with TestClient(create_app(RunReader(ev.db)), base_url=BASE) as c:
        evals: list[dict[str, Any]] = c.get("/api/evals").json()
        one = c.get(f"/api/evals/{ev.eval_id}")
        missing = c.get("/api/evals/nope")
        runs = {r["run_id"] for r in c.get("/api/runs").json()}
    assert [e["eval_id"] for e in evals] == [ev.eval_id]
    assert evals[0]["n"] == 3
    acc = {c["config"]: (c["accuracy"], c["done"]) for c in evals[0]["configs"]}
    assert acc == {"voting-1": (1.0, 3), "mute": (0.0, 3)}
    assert one.status_code == 200, one.text
    items = one.json()["items"]
    assert {(i["config"], i["item_id"]): i["run_id"] for i in items} == ev.run_ids
    assert all(i["run_stored"] for i in items)
    assert {i["run_id"] for i in items} <= runs
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


def test_a_store_without_eval_tables_lists_none(tmp_path: Path) -> None:
    small = off_loop(make_small_run, tmp_path / "plain.db")
    with TestClient(create_app(RunReader(small.db)), base_url=BASE) as c:
        r = c.get("/api/evals")
        assert c.get("/api/evals/x").status_code == 404
    assert r.status_code == 200
    assert r.json() == []


@pytest.mark.browser
def test_browser_lists_evals_and_links_items_to_runs(ev: Eval, browser: Any) -> None:
    v = start_viewer(ev.db)
    page = Page(browser)
    try:
        p = page.page
        p.goto(v.base)
        wait_js(page, "!document.querySelector('#evals').hidden")
        row = p.locator(f"#evals-table tr.eval-row[data-eval='{ev.eval_id}']")
        text = row.inner_text()
        assert "voting-1" in text
        assert "100.0%" in text
        assert "mute" in text
        assert "0.0%" in text
        row.locator("button.eval-open").click()
        wait_js(page, "document.querySelectorAll('.eval-items-table tbody tr').length === 6")
        rid = ev.run_ids[("voting-1", "q0")]
        p.locator(f".eval-items-table a:text-is('{rid}')").click()
        wait_js(page, f"location.hash.includes('run={rid}')")
        wait_js(page, f"document.querySelector('#run-title').textContent.includes('{rid}')")
        assert not page.errors, page.errors
        assert not page.off_host(), page.off_host()
    finally:
        page.close()
        stop_viewer(v)
