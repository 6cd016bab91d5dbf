"""The NATS JetStream transport with a real nats-server and workers as real
processes: a run split over two workers, one transcript, idle across processes,
and the bad inputs (unreachable server, JetStream off, a missing worker, another
graph version, a malformed message)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from nats_fixtures import (
    NatsServer,
    Workers,
    cli_args,
    cli_env,
    free_port,
    nats_server_fixture,  # noqa: F401 - a fixture
    needs_nats,
    workers_fixture,  # noqa: F401 - a fixture
)

pytestmark = [needs_nats, pytest.mark.nats]

DATA = Path(__file__).parent / "data" / "nats"


@pytest.fixture
def graph_dir(tmp_path: Path) -> Path:
    d = tmp_path / "graph"
    shutil.copytree(DATA, d)
    return d


def _run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_args(*args), capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=timeout
    )


def test_two_workers_one_run_one_transcript(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    g = graph_dir / "pingpong.yaml"
    w1 = workers.start(g, "--agents", "ping")
    w2 = workers.start(g, "--agents", "pong")
    db = graph_dir / "runs.db"
    res = _run_cli(
        "run", str(g), "--nats", nats_server.url, "--json", "--db", str(db), cwd=graph_dir
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["stop_reason"] == "answer"
    assert out["answer"] == "done after 3 rounds"
    assert out["usage"]["ping"]["turns"] == 4
    assert out["usage"]["pong"]["turns"] == 3
    # One transcript: the SQLite store has every message of both workers, in order.
    from coral_graph.store import StoreReader

    reader = StoreReader(db)
    try:
        events = reader.events(out["run_id"])
    finally:
        reader.close()
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    sent = [e.message for e in events if e.kind == "message_sent"]  # type: ignore[union-attr]
    assert [m.content for m in sent] == [
        "play", "ping 1", "pong 1", "ping 2", "pong 2", "ping 3", "pong 3",
        "done after 3 rounds",
    ]  # fmt: skip
    handled = [e for e in events if e.kind == "delivery_handled"]
    assert {e.agent for e in handled} == {"ping", "pong"}  # type: ignore[union-attr]
    # Each message says which worker process made it.
    by = {m.sender: (m.metadata or {}).get("worker") for m in sent if m.sender != "user"}
    assert by["ping"].endswith(f":{w1.proc.pid}")
    assert by["pong"].endswith(f":{w2.proc.pid}")
    # ... and each delivery, which worker process handled it: in the store, in
    # `show` (a line per delivery) and in `show --json`.
    tags = {"ping": by["ping"], "pong": by["pong"]}
    assert len(handled) == 7
    for e in handled:
        assert e.worker == tags[e.agent], e  # type: ignore[union-attr]
    res = _run_cli("show", out["run_id"], "--db", str(db), "--plain", cwd=graph_dir)
    assert res.returncode == 0, res.stderr
    shown = [line.strip() for line in res.stdout.splitlines() if "handled by" in line]
    assert len(shown) == 7
    assert sum(f"handled by pong on {tags['pong']} (turn," in line for line in shown) == 3
    assert sum(f"handled by ping on {tags['ping']} (turn," in line for line in shown) == 4
    res = _run_cli("show", out["run_id"], "--db", str(db), "--json", cwd=graph_dir)
    assert {(d["agent"], d["worker"]) for d in json.loads(res.stdout)["deliveries"]} == set(
        tags.items()
    )


@pytest.mark.anyio
async def test_idle_is_exact_across_workers(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    g = graph_dir / "idle.yaml"
    workers.start(g, "--agents", "first")
    workers.start(g, "--agents", "second")
    lg = load_graph(g)
    for _ in range(3):
        result = await run_on_nats(lg, "say something", nats_server.url)
        assert result.stop_reason == "idle"
        # idle came only after both turns ended on their own workers: both are recorded.
        handled = sorted(e.agent for e in result.events if e.kind == "delivery_handled")  # type: ignore[union-attr]
        assert handled == ["first", "second"]
        assert result.messages == 2


def test_unreachable_nats_is_a_clear_error(graph_dir: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    res = _run_cli(
        "worker", str(graph_dir / "pingpong.yaml"), "--nats", url, "--connect-timeout", "2",
        cwd=graph_dir,
    )  # fmt: skip
    assert res.returncode == 1
    assert "no NATS server answered" in res.stderr
    assert url in res.stderr
    assert time.monotonic() - t0 < 30
    res = _run_cli(
        "run", str(graph_dir / "pingpong.yaml"), "--nats", url, "--no-store", cwd=graph_dir
    )
    assert res.returncode == 1
    assert "no NATS server answered" in res.stderr


def test_jetstream_off_is_a_clear_error(graph_dir: Path, tmp_path: Path) -> None:
    srv = NatsServer(tmp_path / "nojs", free_port(), jetstream=False)
    srv.start()
    try:
        res = _run_cli("worker", str(graph_dir / "pingpong.yaml"), "--nats", srv.url, cwd=graph_dir)
    finally:
        srv.stop()
    assert res.returncode == 1
    assert "JetStream is not enabled" in res.stderr


def test_an_agent_without_a_worker_is_named(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    g = graph_dir / "pingpong.yaml"
    workers.start(g, "--agents", "ping")
    res = _run_cli(
        "run", str(g), "--nats", nats_server.url, "--wait-workers", "1", "--json", "--no-store",
        cwd=graph_dir,
    )  # fmt: skip
    assert res.returncode == 2
    out = json.loads(res.stdout)
    assert out["stop_reason"] == "error"
    assert "no worker hosts pong" in out["error"]
    # The command that starts the missing worker, the graph's file in it.
    assert f"`coral-graph worker {g} --nats {nats_server.url} --agents pong`" in out["error"]


def test_a_worker_with_another_graph_version_is_refused(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    g = graph_dir / "pingpong.yaml"
    workers.start(g, "--agents", "ping")
    other = graph_dir / "pingpong2.yaml"
    other.write_text(g.read_text().replace("description: pongs", "description: pongs loudly"))
    res = _run_cli(
        "worker", str(other), "--nats", nats_server.url, "--agents", "pong", cwd=graph_dir
    )
    assert res.returncode == 1
    assert "agent 'pong' is defined differently (description)" in res.stderr
    res = _run_cli("run", str(other), "--nats", nats_server.url, "--no-store", cwd=graph_dir)
    assert res.returncode == 1
    assert "defined differently" in res.stderr


@pytest.mark.anyio
async def test_a_malformed_message_is_skipped_and_recorded(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import Names, open_link, run_on_nats

    g = graph_dir / "pingpong.yaml"
    w = workers.start(g, "--agents", "ping")
    workers.start(g, "--agents", "pong")
    lg = load_graph(g)
    names = Names.for_graph(lg.graph.name)
    async with open_link(nats_server.url) as link:
        await link.js.publish(names.inbox("run-bogus", "ping"), b"\xc1 not msgpack")
        await link.js.publish(names.inbox("run-bogus", "ping"), b"\x81\xa1x\x01")
    result = await run_on_nats(lg, "play", nats_server.url)
    assert result.stop_reason == "answer"
    assert w.proc.poll() is None
    assert w.output.count("skipped a malformed message") == 2


@pytest.mark.anyio
async def test_three_workers_racing_on_one_budget_never_overspend(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    g = graph_dir / "race.yaml"
    marks = graph_dir / "marks"
    marks.mkdir()
    env = {"PP_MARK_DIR": str(marks), "PP_RACERS": "3"}  # all three start racing at once
    for a in ("a", "b", "c"):
        workers.start(g, "--agents", a, env=env)
    lg = load_graph(g)
    result = await run_on_nats(lg, "go", nats_server.url)
    assert result.stop_reason == "budget:messages"
    sent = [e.message for e in result.events if e.kind == "message_sent"]  # type: ignore[union-attr]
    assert len([m for m in sent if m.sender != "user"]) == 40
    assert result.messages == 40
    # All three took part (each posted before the budget ran out).
    assert {m.sender for m in sent} == {"user", "a", "b", "c"}
    # seqs in the task thread: no gap, no duplicate across the three processes.
    assert sorted(m.seq for m in sent) == list(range(1, 42))


@pytest.mark.anyio
async def test_a_message_over_max_payload_is_a_clear_error_to_the_sender(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    g = graph_dir / "oversize.yaml"
    workers.start(g)
    result = await run_on_nats(load_graph(g), "send something big", nats_server.url)
    assert result.stop_reason == "answer"
    assert result.answer is not None
    assert result.answer.startswith("MessageTooLargeError: the message is ")
    assert "max_payload" in result.answer
    # Nothing of the refused message was appended: the answer is message 2.
    assert result.answer_message is not None
    assert result.answer_message.seq == 2


def test_record_writes_runs_started_elsewhere(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    import subprocess as sp
    import threading

    g = graph_dir / "pingpong.yaml"
    workers.start(g, "--agents", "ping")
    workers.start(g, "--agents", "pong")
    db = graph_dir / "recorded.db"
    rec = sp.Popen(
        cli_args("record", str(g), "--nats", nats_server.url, "--db", str(db)),
        stderr=sp.PIPE, text=True, env=cli_env(), cwd=graph_dir,
    )  # fmt: skip
    try:
        assert rec.stderr is not None
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert rec.stderr is not None
            for line in rec.stderr:
                lines.append(line)
                if "recording the runs" in line:
                    ready.set()
            ready.set()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        assert ready.wait(60), "".join(lines)
        res = _run_cli(
            "run", str(g), "--nats", nats_server.url, "--json", "--no-store", cwd=graph_dir
        )
        assert res.returncode == 0, res.stderr
        run_id = json.loads(res.stdout)["run_id"]
    finally:
        rec.terminate()
        rec.wait(20)
        t.join(5)
        rec.stderr.close()  # type: ignore[union-attr]
    assert rec.returncode == 0, "".join(lines)
    from coral_graph.store import StoreReader

    reader = StoreReader(db)
    try:
        events = reader.events(run_id)
    finally:
        reader.close()
    assert events[0].kind == "run_started"
    assert events[-1].kind == "run_finished"
    sent = [e.message.content for e in events if e.kind == "message_sent"]  # type: ignore[union-attr]
    assert sent[-1] == "done after 3 rounds"


@pytest.mark.parametrize(
    ("graph", "task"),
    [
        ("probe.yaml", "probe"),  # every rule broken once: the same errors, in order
        ("pingpong.yaml", "play"),
        ("idle.yaml", "hi"),
        ("crash_stop.yaml", "break"),  # on_error: stop ends the run with error
        ("crash_continue.yaml", "break"),  # on_error: continue, then idle
        ("timeout.yaml", "nap"),  # a turn over turn_timeout_s is an error; then idle
        ("maxturns.yaml", "play"),  # budget:turns
        ("reads.yaml", "read"),  # reads see another worker's posts, never mentioned
    ],
)
@pytest.mark.anyio
async def test_same_outcome_in_one_process_and_over_nats(
    graph_dir: Path, nats_server: NatsServer, workers: Workers, graph: str, task: str
) -> None:
    """The protocol's rules and a run's outcome are the same on both transports: the
    graph runs in this process, then with its agents split over two workers. So is
    what the store says of the two runs."""
    from coral_graph import open_runtime
    from coral_graph.config import load_graph
    from coral_graph.store import SQLiteStore
    from coral_graph.store._reader import open_reader
    from coral_graph.transport.nats import run_on_nats

    g = graph_dir / graph
    lg = load_graph(g)
    db = graph_dir / "runs.db"
    with SQLiteStore(db) as store:
        async with open_runtime(lg.graph, budgets=lg.budgets, store=store) as rt:
            local = await rt.run(task, entry=lg.entry, answer_by=lg.answer_by)
        agents = list(lg.graph.agents)
        workers.start(g, "--agents", ",".join(agents[::2]))
        workers.start(g, "--agents", ",".join(agents[1::2]))
        remote = await run_on_nats(lg, task, nats_server.url, store=store)
    with open_reader(db) as r:
        stored = [r.run(local.run_id), r.run(remote.run_id)]
    keys = ("status", "stop_reason", "answer", "messages", "tokens")
    here, there = ({k: x[k] for k in keys} for x in stored)
    assert here == there
    assert stored[1]["messages"] == remote.messages
    errors = [e for e in remote.events if e.kind == "agent_errored"]
    assert remote.stop_reason == local.stop_reason, (remote.error, errors)
    assert remote.answer == local.answer
    assert remote.messages == local.messages
    for name, u in local.usage.items():
        if u.turns:
            assert remote.usage[name].turns == u.turns, name
            assert remote.usage[name].messages_sent == u.messages_sent, name
            assert remote.usage[name].errors == u.errors, (name, errors)
    kinds = sorted(e.error_type for e in errors)  # type: ignore[attr-defined]
    assert kinds == sorted(
        e.error_type  # type: ignore[attr-defined]
        for e in local.events
        if e.kind == "agent_errored"
    )
    expected = {
        "crash_stop.yaml": ("error", "crasher"),
        "crash_continue.yaml": ("idle", "crasher"),
        "timeout.yaml": ("idle", "sleeper"),
        "maxturns.yaml": ("budget:turns", None),
    }
    if graph in expected:  # the scenario happened, not only the same on both sides
        stop, failing = expected[graph]
        assert local.stop_reason == stop
        if failing is not None:
            assert local.usage[failing].errors == 1
            assert [e.agent for e in errors] == [failing]  # type: ignore[attr-defined]
    if graph == "reads.yaml":
        assert local.answer == "note 1; note 2 | noter,helper,reader,late | notes,task"
    if graph == "crash_stop.yaml":
        assert remote.error is not None
        assert "crasher" in remote.error
    if graph == "probe.yaml":
        assert local.answer is not None
        assert local.answer.split(" | ")[0].split() == [
            "NotAParticipantError", "UnknownAgentError", "InvalidMentionError",
            "UnknownThreadError", "EdgeNotAllowedError", "ok", "ok", "NotAParticipantError",
            "ok", "ThreadClosedError", "ContentTooLargeError",
        ]  # fmt: skip


@pytest.mark.anyio
async def test_a_loop_agent_on_a_worker_runs_through_the_core(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    """A loop-style agent (``async def run(ctx)`` pulling with ``wait_for_mentions``)
    on its own worker: it answers, and a run where it stays silent ends ``idle``
    (it waits for mentions with nothing queued), never by a timeout."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    g = graph_dir / "loop.yaml"
    workers.start(g, "--agents", "asker")
    workers.start(g, "--agents", "echoer")
    lg = load_graph(g)
    result = await run_on_nats(lg, "hello", nats_server.url)
    assert result.stop_reason == "answer", result.error
    assert result.answer == "got: echo: hello"
    handled = [(e.agent, e.via) for e in result.events if e.kind == "delivery_handled"]  # type: ignore[union-attr]
    assert ("echoer", "wait") in handled
    t0 = time.monotonic()
    quiet = await run_on_nats(lg, "hush", nats_server.url)
    assert quiet.stop_reason == "idle", quiet.error
    assert quiet.messages == 1  # asker's question; the loop agent took it and said nothing
    assert time.monotonic() - t0 < 25  # well before the loop agent's 30 s wait ends


@pytest.mark.anyio
async def test_a_run_started_from_python_through_open_runtime(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    """The same API as in one process: ``open_runtime(graph, transport=NatsTransport(url))``
    and ``rt.run(task)``. Every worker's events reach this process's subscribers and
    its SQLite store, numbered in one order; the result counts every worker's usage;
    two runs in a row reuse the runtime's one connection."""
    from coral_graph import open_runtime
    from coral_graph.config import load_graph
    from coral_graph.store import SQLiteStore, StoreReader
    from coral_graph.transport.nats import NatsTransport

    g = graph_dir / "pingpong.yaml"
    workers.start(g, "--agents", "ping")
    workers.start(g, "--agents", "pong")
    lg = load_graph(g)
    db = graph_dir / "py.db"
    store = SQLiteStore(db)
    seen: list[str] = []
    transport = NatsTransport(nats_server.url, graph=lg)
    try:
        async with open_runtime(lg.graph, transport=transport, store=store) as rt:
            rt.subscribe(lambda ev: seen.append(ev.kind))
            results = [
                await rt.run("play", entry=lg.entry, answer_by=lg.answer_by) for _ in range(2)
            ]
    finally:
        store.close()
    for result in results:
        assert result.stop_reason == "answer", result.error
        assert result.answer == "done after 3 rounds"
        assert result.usage["ping"].turns == 4
        assert result.usage["pong"].turns == 3
        assert result.messages == 7  # the task is not counted, as in one process
        (work,) = [t for t in result.threads.values() if t.name == "work"]
        assert len(work.messages) == 6
    assert seen.count("run_started") == seen.count("run_finished") == 2
    assert seen.count("delivery_handled") == 2 * 7
    reader = StoreReader(db)
    try:
        events = reader.events(results[0].run_id)
    finally:
        reader.close()
    assert events[0].kind == "run_started"
    assert events[-1].kind == "run_finished"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.seq for e in results[0].events] == [e.seq for e in events]
    handled = {e.agent for e in events if e.kind == "delivery_handled"}  # type: ignore[union-attr]
    assert handled == {"ping", "pong"}
    assert transport.worker is None  # the connection closed with the runtime


@pytest.mark.anyio
async def test_a_graph_known_only_as_an_agent_graph_is_refused_with_what_to_pass(
    graph_dir: Path, nats_server: NatsServer, workers: Workers
) -> None:
    """Workers started from a graph file identify it by its resolved definitions; a
    Python caller that gives only the AgentGraph is refused, told what to pass, and
    no run is left behind."""
    from coral_graph import open_runtime
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import GraphMismatchError, NatsTransport

    g = graph_dir / "pingpong.yaml"
    workers.start(g, "--agents", "ping,pong")
    lg = load_graph(g)
    seen: list[str] = []
    async with open_runtime(lg.graph, transport=NatsTransport(nats_server.url)) as rt:
        rt.subscribe(lambda ev: seen.append(ev.kind))
        with pytest.raises(GraphMismatchError, match=r"graph=load_graph"):
            await rt.run("play", entry=lg.entry)
        assert rt.active_runs == []
    assert seen == []  # refused before anything happened: no run_finished of nothing
