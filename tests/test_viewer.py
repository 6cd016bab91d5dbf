"""The web viewer's server side: queries, the JSON API, security, live stream, export, CLI.

The browser tests are in ``test_viewer_browser.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_fixtures import CLI, LLMRuns, SmallRun, make_llm_runs, make_small_run
from starlette.testclient import TestClient
from typer.testing import CliRunner

from coral_graph.cli import app as cli_app
from coral_graph.viewer.query import Filters, RunReader
from coral_graph.viewer.web import CSP, create_app, export_run
from coral_graph.viewer.web._security import host_allowed

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SmallRun:
    return make_small_run(tmp_path_factory.mktemp("viewer-unit") / "coral.db")


@pytest.fixture(scope="module")
def reader(small: SmallRun) -> RunReader:
    return RunReader(small.db)


@pytest.fixture
def client(reader: RunReader) -> Iterator[TestClient]:
    with TestClient(create_app(reader), base_url=BASE) as c:
        yield c


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in items]


def test_import_does_not_load_starlette() -> None:
    code = (
        "import sys, coral_graph, coral_graph.viewer.web, coral_graph.viewer.query;"
        "import coral_graph.cli;"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_filters_from_and_to_params() -> None:
    f = Filters.from_params({"from": "a", "to": "b", "kind": "tool", "errors": "1", "q": "x"})
    assert (f.sender, f.mention, f.kind, f.errors, f.q) == ("a", "b", "tool", True, "x")
    assert Filters.from_params(f.to_params()) == f
    with pytest.raises(ValueError, match="unknown kind"):
        Filters.from_params({"kind": "nope"})


def test_run_summary_and_threads(client: TestClient, small: SmallRun) -> None:
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs] == [small.run_id]
    run = client.get(f"/api/runs/{small.run_id}").json()
    assert run["stop_reason"] == "answer"
    assert run["status"] == "finished"
    assert not run["live"]
    assert run["stored_messages"] == len(small.messages)
    assert run["error_count"] == 1
    task, review = run["threads"]
    assert task["name"] == "task"
    assert task["state"] == "open"
    assert review["name"].startswith("Überprüfung 🔍")
    assert review["state"] == "closed"
    assert review["summary"].startswith("checked")
    assert review["errors"] == 1
    assert review["messages"] == 4
    # "messages" is the whole transcript, the task included, in every count shown.
    assert run["messages"] == task["messages"] + review["messages"] == len(small.messages)
    page = client.get(f"/api/runs/{small.run_id}/messages", params={"count": "1"}).json()
    assert page["total"] == run["messages"]
    assert page["upto"] == max(m["gseq"] for m in small.messages)
    assert [p["agent"] for p in review["participants"]] == ["planner", "solver", "critic"]
    assert client.get("/api/runs/nope").status_code == 404


def test_pages_in_both_directions_cover_the_run(reader: RunReader, small: SmallRun) -> None:
    want = [m["message_id"] for m in small.messages]
    got: list[str] = []
    page = reader.messages(small.run_id, limit=2)
    assert not page["has_before"]
    while True:
        got += ids(page["items"])
        if not page["has_after"]:
            break
        page = reader.messages(small.run_id, after=page["items"][-1]["gseq"], limit=2)
        assert page["has_before"]
    assert got == want
    back: list[str] = []
    page = reader.messages(small.run_id, end=True, limit=2)
    while True:
        back = ids(page["items"]) + back
        if not page["has_before"]:
            break
        page = reader.messages(small.run_id, before=page["items"][0]["gseq"], limit=2)
    assert back == want
    mid = small.messages[3]
    around = reader.messages(small.run_id, around=mid["gseq"], limit=3)
    assert mid["message_id"] in ids(around["items"])
    assert around["has_before"]
    assert around["has_after"]


def test_filters_match_the_transcript(client: TestClient, small: SmallRun) -> None:
    msgs = small.messages

    def view(**params: str) -> list[str]:
        r = client.get(f"/api/runs/{small.run_id}/messages", params={**params, "limit": "500"})
        assert r.status_code == 200, r.text
        return ids(r.json()["items"])

    def want(pred: Any) -> list[str]:
        return [m["message_id"] for m in msgs if pred(m)]

    assert view(agent="solver") == want(
        lambda m: m["sender"] == "solver" or "solver" in m["mentions"]
    )
    assert view(**{"from": "planner", "to": "critic"}) == want(
        lambda m: m["sender"] == "planner" and "critic" in m["mentions"]
    )
    assert view(kind="answer") == want(lambda m: "user" in m["mentions"])
    assert view(kind="task") == want(lambda m: m["sender"] == "user")
    assert view(kind="llm") == want(lambda m: m["metadata"].get("model"))
    tool = client.get(f"/api/runs/{small.run_id}/messages", params={"kind": "tool"}).json()["items"]
    assert [t["tool"] for t in tool[0]["tools"]] == ["calculator"]
    assert tool[0]["tools"][0]["arguments"]["expression"] == "6 * 7"
    errs = client.get(f"/api/runs/{small.run_id}/messages", params={"errors": "1"}).json()["items"]
    assert len(errs) == 1
    assert errs[0]["errors"][0]["error_type"] == "ValueError"
    assert "Traceback" in errs[0]["errors"][0]["traceback"]
    thread = small.messages[1]["thread_id"]
    assert view(thread=thread) == want(lambda m: m["thread_id"] == thread)
    assert client.get(f"/api/runs/{small.run_id}/messages", params={"kind": "x"}).status_code == 400


def test_search_and_locate(client: TestClient, small: SmallRun) -> None:
    r = client.get(f"/api/runs/{small.run_id}/search", params={"q": "GRÜSSE"}).json()
    want = [m["gseq"] for m in small.messages if "grüsse" in m["content"].casefold()]
    assert r == {"total": len(want), "hits": want}
    assert len(want) >= 2
    first = client.get(
        f"/api/runs/{small.run_id}/locate", params={"errors": "1", "after": "0"}
    ).json()["gseq"]
    assert first == next(
        m["gseq"] for m in small.messages if m["sender"] == "planner" and "critic" in m["mentions"]
    )
    none = client.get(
        f"/api/runs/{small.run_id}/locate", params={"errors": "1", "after": str(first)}
    ).json()
    assert none == {"gseq": None}


def test_agents_and_graph(client: TestClient, small: SmallRun) -> None:
    agents = {a["name"]: a for a in client.get(f"/api/runs/{small.run_id}/agents").json()}
    assert agents["solver"]["tokens"] == 150
    assert agents["solver"]["cost_usd"] == pytest.approx(0.0015)
    assert agents["solver"]["latency_p50"] == pytest.approx(0.25)
    assert agents["critic"]["errors"] == 1
    assert agents["planner"]["sent"] == sum(m["sender"] == "planner" for m in small.messages)
    assert agents["planner"]["turn_p95"] is not None
    g = client.get(f"/api/runs/{small.run_id}/graph").json()
    used = {(e["src"], e["dst"]): e["count"] for e in g["used"]}
    assert used == dict(Counter((m["sender"], x) for m in small.messages for x in m["mentions"]))
    assert ["solver", "critic"] in g["edges"]
    assert ("solver", "critic") not in used
    assert {n["name"] for n in g["nodes"]} == {"user", "planner", "solver", "critic", "archivist"}


def test_security_headers_and_host_check(client: TestClient, small: SmallRun) -> None:
    for path in ("/", "/static/app.js", "/api/runs"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP
    assert "'unsafe-eval'" not in CSP
    assert client.get("/", headers={"host": "evil.example:8000"}).status_code == 421
    assert client.get("/", headers={"host": "127.0.0.1:9999"}).status_code == 421
    assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200
    assert host_allowed("[::1]:8000", 8000)
    assert not host_allowed("", 8000)
    page = client.get("/").text
    assert "http://" not in page
    assert "https://" not in page  # nothing loaded from outside
    for asset in ("app.js", "md.js", "app.css"):
        text = client.get(f"/static/{asset}").text
        assert "https://" not in text
        assert "cdn" not in text.lower()


def test_token_mode(reader: RunReader) -> None:
    app = create_app(reader, token="s3cret", check_host=False)
    with TestClient(app, base_url="http://192.0.2.7:8000") as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"authorization": "Bearer nope"}).status_code == 401
        r = c.get("/?token=s3cret")
        assert r.status_code == 200
        assert "coral_view_token=s3cret" in r.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 200  # the cookie now carries it
    with TestClient(app, base_url="http://192.0.2.7:8000") as c:
        assert c.get("/api/runs", headers={"authorization": "Bearer s3cret"}).status_code == 200


def _events(text: str) -> list[tuple[str | None, str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" in fields:
            out.append((fields.get("id"), fields["event"], fields.get("data", "")))
    return out


def test_event_stream_resumes_after_last_event_id(client: TestClient, small: SmallRun) -> None:
    url = f"/api/runs/{small.run_id}/events"
    events = _events(client.get(url).text)
    msgs = [json.loads(d) for _, kind, d in events if kind == "message"]
    assert [m["id"] for m in msgs] == [m["message_id"] for m in small.messages]
    assert [int(i) for i, kind, _ in events if kind == "message"] == [m["gseq"] for m in msgs]
    assert events[-1][1] == "end"
    cut = msgs[2]["gseq"]
    again = _events(client.get(url, headers={"last-event-id": str(cut)}).text)
    assert [json.loads(d)["id"] for _, k, d in again if k == "message"] == [
        m["id"] for m in msgs[3:]
    ]


def _data_js(path: Path) -> tuple[str, Any]:
    """The key and the data of one ``data/*.js`` file of an export."""
    text = path.read_text("utf-8")
    head = "(window.__coralData = window.__coralData || {})["
    assert text.startswith(head), text[:80]
    key, _, rest = text[len(head) :].partition("] = ")
    assert rest.endswith(";\n")
    return json.loads(key), json.loads(rest[:-2])


def test_export_writes_a_static_site(reader: RunReader, small: SmallRun, tmp_path: Path) -> None:
    index = export_run(reader, small.run_id, tmp_path / "site")
    page = index.read_text("utf-8")
    assert 'data-mode="static"' in page
    assert "Content-Security-Policy" in page
    data = index.parent / "data"
    assert not list(data.rglob("*.json")), "a page opened from file:// cannot fetch JSON"
    key, run = _data_js(data / "run.js")
    assert key == "run"
    assert run["run_id"] == small.run_id
    assert run["chunks"] == 1
    key, msgs = _data_js(data / "messages" / "00000.js")
    assert key == "messages/00000"
    assert [m["id"] for m in msgs] == [m["message_id"] for m in small.messages]
    assert (index.parent / "static" / "app.js").is_file()
    assert _data_js(data / "config.js")[1]["default_run"] == small.run_id
    for name in ("runs", "agents", "graph", "timeline", "calls"):
        assert _data_js(data / f"{name}.js")[0] == name
    # Markup in the data cannot end a <script> element if a page ever inlines the file.
    assert "</" not in (data / "messages" / "00000.js").read_text("utf-8")


def test_export_keeps_prompts_and_responses(llm: LLMRuns, tmp_path: Path) -> None:
    index = export_run(RunReader(llm.db), llm.ok, tmp_path / "site")
    _, calls = _data_js(index.parent / "data" / "calls.js")
    assert [c["outcome"] for c in calls] == ["LLMUnavailableError", "ok"]
    assert calls[1]["response"]["content"] == "FINAL: 42"
    assert calls[1]["request"]["messages"][0]["role"] == "system"


def test_cli_export_and_errors(small: SmallRun, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "site"
    r = runner.invoke(
        cli_app, ["view", "--db", str(small.db), "--export", str(out), small.run_id[:12]]
    )
    assert r.exit_code == 0, r.output
    assert (out / "index.html").is_file()
    r = runner.invoke(cli_app, ["view", "--db", str(small.db), "--export", str(out), "run-nope"])
    assert r.exit_code == 1
    assert "run-nope" in r.output
    r = runner.invoke(cli_app, ["view", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 1
    r = runner.invoke(cli_app, ["view", "--db", str(small.db), "--export", str(out)])
    assert r.exit_code == 1
    assert "needs a RUN" in r.output


def test_cli_serves_on_loopback_only(small: SmallRun) -> None:
    """The real command as a subprocess: it prints a 127.0.0.1 URL and checks Host."""
    import httpx
    from browser_fixtures import start_viewer, stop_viewer

    v = start_viewer(small.db, "last")
    try:
        assert v.url.startswith("http://127.0.0.1:")
        assert f"#run={small.run_id}" in v.url
        assert httpx.get(v.base + "api/runs", timeout=10).status_code == 200
        bad = httpx.get(v.base, headers={"host": "attacker.example"}, timeout=10)
        assert bad.status_code == 421
    finally:
        stop_viewer(v)
    assert CLI[0] == sys.executable


def test_empty_token_is_never_a_token(reader: RunReader) -> None:
    from coral_graph.cli._view import serve_token
    from coral_graph.viewer.web._security import token_ok

    # `--token ""` and an empty CORAL_VIEW_TOKEN mean the same: no token given, so off
    # loopback a random one is made (never the empty one).
    for given in ("", "   ", None):
        made = serve_token(False, given)
        assert made is not None
        assert len(made) >= 24
        assert made.strip() == made
        assert serve_token(True, given) is None
    assert serve_token(False, "s3cret") == "s3cret"
    assert serve_token(False, "") != serve_token(False, "")
    # The library refuses it too, and an empty expected token matches nothing.
    with pytest.raises(ValueError, match="empty token"):
        create_app(reader, token="", check_host=False)
    empty_cookie = {b"cookie": b"coral_view_token=", b"authorization": b"Bearer "}
    assert token_ok("", b"token=", empty_cookie) == (False, False)


def test_cli_empty_token_env_and_flag_agree(small: SmallRun) -> None:
    """The real command, twice on loopback: `--token ""` and CORAL_VIEW_TOKEN="" both
    serve without a token (as if none was given) and say nothing else differs."""
    import os

    import httpx
    from browser_fixtures import start_viewer, stop_viewer

    for extra, env in ((("--token", ""), {}), ((), {"CORAL_VIEW_TOKEN": ""})):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            v = start_viewer(small.db, *extra)
        finally:
            for k, val in old.items():
                if val is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = val
        try:
            assert "token=" not in v.url
            r = httpx.get(v.base + "api/runs", timeout=10)
            assert r.status_code == 200
        finally:
            stop_viewer(v)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLMRuns:
    return make_llm_runs(tmp_path_factory.mktemp("viewer-llm") / "coral.db")


@pytest.fixture
def llm_client(llm: LLMRuns) -> Iterator[TestClient]:
    with TestClient(create_app(RunReader(llm.db)), base_url=BASE) as c:
        yield c


def test_llm_calls_are_inspectable(llm_client: TestClient, llm: LLMRuns) -> None:
    client = llm_client
    calls = client.get(f"/api/runs/{llm.ok}/llm_calls").json()
    assert [(c["outcome"], c["attempt"]) for c in calls] == [
        ("LLMUnavailableError", 1),
        ("ok", 2),
    ]
    assert "request" not in calls[0]  # summaries only
    assert "overloaded" in calls[0]["error"]
    assert calls[1]["prompt_tokens"] == 57
    task_id = "t-1#1"
    assert {c["message_id"] for c in calls} == {task_id}
    full = client.get(f"/api/runs/{llm.ok}/llm_calls/{calls[1]['seq']}").json()
    sent = full["request"]["messages"]
    assert sent[0]["role"] == "system"
    assert "You answer arithmetic questions." in sent[0]["content"]
    assert "What is 6 x 7?" in sent[-1]["content"]
    assert full["response"]["content"] == "FINAL: 42"
    assert full["response"]["finish_reason"] == "stop"
    assert "api_key" not in json.dumps(full["request"])
    assert client.get(f"/api/runs/{llm.ok}/llm_calls/999999").status_code == 404
    # The task message carries both calls; the answer links to the call that wrote it.
    items = client.get(f"/api/runs/{llm.ok}/messages").json()["items"]
    task, answer = items[0], items[-1]
    assert [c["seq"] for c in task["llm_calls"]] == [c["seq"] for c in calls]
    assert answer["produced_by"] == calls[1]["seq"]
    assert task["produced_by"] is None


def test_every_llm_call_failing_shows_in_counts(llm_client: TestClient, llm: LLMRuns) -> None:
    client = llm_client
    run = client.get(f"/api/runs/{llm.failed}").json()
    assert run["llm_calls"] == 2
    assert run["llm_failed"] == 2
    assert run["error_count"] == run["turn_errors"] + 2
    assert run["threads"][0]["errors"] >= 2
    agents = {a["name"]: a for a in client.get(f"/api/runs/{llm.failed}/agents").json()}
    for name in ("alpha", "beta"):
        assert agents[name]["llm_failed"] == 1
        assert agents[name]["errors"] >= 1 + agents[name]["turn_errors"]
    calls = client.get(f"/api/runs/{llm.failed}/llm_calls").json()
    assert all("Incorrect API key" in (c["error"] or "") for c in calls)
    listed = {r["run_id"]: r for r in client.get("/api/runs").json()}
    assert listed[llm.failed]["llm_failed"] == 2
    assert listed[llm.failed]["error_count"] == run["error_count"]
    assert listed[llm.failed]["messages"] == run["stored_messages"]
    task = client.get(f"/api/runs/{llm.failed}/messages").json()["items"][0]
    assert sorted(c["agent"] for c in task["llm_calls"]) == ["alpha", "beta"]
    assert all(c["outcome"] != "ok" for c in task["llm_calls"])


def test_timeline_has_turns_and_calls(
    client: TestClient, llm_client: TestClient, llm: LLMRuns, small: SmallRun
) -> None:
    tl = llm_client.get(f"/api/runs/{llm.ok}/timeline").json()
    assert "writer" in tl["agents"]
    assert [t["agent"] for t in tl["turns"]] == ["writer"]
    turn = tl["turns"][0]
    assert turn["start"] <= turn["end"]
    assert len(tl["calls"]) == 2
    for c in tl["calls"]:
        assert turn["start"] - 0.01 <= c["ts"] <= turn["end"] + 0.01
    assert tl["start"] <= turn["start"]
    assert tl["end"] >= turn["end"]
    small_tl = client.get(f"/api/runs/{small.run_id}/timeline").json()
    assert small_tl["turns_total"] == len(small_tl["turns"])
    assert {t["agent"] for t in small_tl["turns"]} == {"planner", "solver", "critic"}


def test_event_stream_never_ends_before_the_last_messages(
    reader: RunReader, small: SmallRun
) -> None:
    """The run's last messages and its end are committed together between two reads
    of the stream's loop: the stream must still send every message before "end"."""

    class RacingReader:
        def __init__(self) -> None:
            self.committed = False
            self.reads = 0

        def status(self, rid: str) -> dict[str, Any]:
            self.reads += 1
            if self.reads == 1:  # the check before the stream starts: still running
                return {**reader.status(rid), "status": "running", "live": True}
            self.committed = True  # the writer commits the end of the run just now
            return {**reader.status(rid), "status": "finished", "live": False}

        def since(self, rid: str, gseq: int, limit: int = 500) -> list[dict[str, Any]]:
            return reader.since(rid, gseq, limit) if self.committed else []

    app = create_app(RacingReader(), poll_s=0.01)  # type: ignore[arg-type]
    with TestClient(app, base_url=BASE) as c:
        events = _events(c.get(f"/api/runs/{small.run_id}/events").text)
    got = [json.loads(d)["id"] for _, kind, d in events if kind == "message"]
    assert got == [m["message_id"] for m in small.messages]
    assert events[-1][1] == "end"


def test_cli_view_listens_before_it_prints_its_url(
    small: SmallRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever reads the printed URL may connect at once: the socket already listens
    (a connection waits in the backlog until the server accepts it), it is not only
    bound until Uvicorn's loop starts."""
    import socket

    import uvicorn

    seen: list[str] = []

    def run(self: Any, sockets: list[socket.socket]) -> None:
        host, port = sockets[0].getsockname()[:2]
        with socket.create_connection((host, port), timeout=5):
            seen.append("connected")

    monkeypatch.setattr(uvicorn.Server, "run", run)
    r = CliRunner().invoke(cli_app, ["view", "--db", str(small.db), "--port", "0"])
    assert r.exit_code == 0, r.output
    assert "coral-graph viewer on http://127.0.0.1:" in r.output
    assert seen == ["connected"]
