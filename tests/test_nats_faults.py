"""Faults with real processes: a worker SIGKILLed mid-turn and started again, and
the nats-server killed and restarted on the same store directory mid-run. The run
finishes, nothing is lost or doubled, per-pair order is kept, the transcript is whole."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats_fixtures import (
    NatsServer,
    WorkerProc,
    Workers,
    cli_args,
    cli_env,
    nats_server_fixture,  # noqa: F401 - a fixture
    needs_nats,
    workers_fixture,  # noqa: F401 - a fixture
)

pytestmark = [needs_nats, pytest.mark.nats, pytest.mark.anyio]

DATA = Path(__file__).parent / "data" / "nats"
ROUNDS = 5


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    d = tmp_path / "graph"
    shutil.copytree(DATA, d)
    return d / "pingpong.yaml"


def _work_messages(result: object) -> list[str]:
    threads = result.threads  # type: ignore[attr-defined]
    work = [t for t in threads.values() if t.name == "work"]
    assert len(work) == 1
    return [m.content for m in work[0].messages]


def _expected() -> list[str]:
    out = []
    for n in range(1, ROUNDS + 1):
        out += [f"ping {n}", f"pong {n}"]
    return out


def _marked(folder: Path, pattern: str) -> bool:
    return bool(list(folder.glob(pattern)))


async def _wait_for(folder: Path, pattern: str) -> None:
    """Until a worker process marks the start of a turn (a file; another process
    cannot set an anyio.Event)."""
    with anyio.fail_after(60):
        while not _marked(folder, pattern):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def _kill_pong_when(
    graph: Path,
    url: str,
    workers: Workers,
    marks: Path,
    mark: str,
    env: dict[str, str],
    *,
    term: bool = False,
) -> tuple[Any, WorkerProc]:
    """Run pingpong with pong on its own worker; when pong's worker writes the mark
    ``<mark>-<pid>`` (in its second turn, delivery unacknowledged) kill it with
    SIGKILL (``term``: stop it with SIGTERM, which must exit 0) and start another pong
    worker. Returns the run's result and the first pong worker."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    env = {"PP_ROUNDS": str(ROUNDS), "PP_MARK_DIR": str(marks), **env}
    # A delivery not acknowledged comes again after 1 s; with SIGTERM none may.
    wait = ("--ack-wait", "30" if term else "1")
    workers.start(graph, "--agents", "ping", *wait, env=env)
    pong = workers.start(graph, "--agents", "pong", *wait, env=env)
    lg = load_graph(graph)
    result = None

    async def drive() -> None:
        nonlocal result
        result = await run_on_nats(lg, "play", url, wait_workers_s=30)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        await _wait_for(marks, f"{mark}-{pong.proc.pid}")
        if term:
            pong.proc.terminate()
            assert await anyio.to_thread.run_sync(pong.proc.wait, 20) == 0
        else:
            pong.proc.kill()
            pong.proc.wait(10)
        workers.start(graph, "--agents", "pong", *wait, env=env)
    assert result is not None
    return result, pong


def _redelivered(result: Any) -> list[str]:
    return [
        e.agent
        for e in result.events
        if e.kind == "agent_errored" and e.error_type == "Redelivered"
    ]


async def test_worker_killed_mid_turn_then_restarted(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # pong marks the start of its turn, then sleeps 0.3 s: it is killed there.
    result, _ = await _kill_pong_when(
        graph, nats_server.url, workers, marks, "pong-2", {"PP_PONG_DELAY": "0.3"}
    )
    assert result.stop_reason == "answer", result.error
    assert result.answer == f"done after {ROUNDS} rounds"
    # Nothing lost, nothing doubled, in order.
    assert _work_messages(result) == _expected()
    assert _redelivered(result) == ["pong"]
    # The second turn of pong began twice (killed, then redone), in two processes.
    assert len(list(marks.glob("pong-2-*"))) == 2


async def test_a_turn_killed_after_its_send_is_replayed_without_a_second_message(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """pong's second turn has appended and sent "pong 2" when its worker is killed
    (the delivery is not acknowledged). The restarted worker handles the delivery
    again: its send makes the same message (same id and seq) instead of a second one,
    and the transcript holds it once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    result, _ = await _kill_pong_when(
        graph, nats_server.url, workers, marks, "sent-2", {"PP_PONG_DELAY_AFTER": "0.5"}
    )
    assert result.stop_reason == "answer", result.error
    assert _work_messages(result) == _expected()  # "pong 2" once, seqs without a gap
    sent = [e.message for e in result.events if e.kind == "message_sent"]
    assert [m.content for m in sent].count("pong 2") == 1
    assert len({m.id for m in sent}) == len(sent)
    # The second turn of pong ran twice (killed after its send, then replayed).
    assert len(list(marks.glob("sent-2-*"))) == 2
    assert _redelivered(result) == ["pong"]


async def test_a_replayed_turn_makes_its_thread_and_messages_once(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """pong's second turn creates a thread, posts in it and sends "pong 2" before its
    worker is killed. The replay finds the thread by the id its operation gives it and
    each message by the operation that appended it: one thread "side 2" with one
    message, and "pong 2" once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    result, _ = await _kill_pong_when(
        graph, nats_server.url, workers, marks, "sent-2",
        {"PP_PONG_DELAY_AFTER": "0.5", "PP_PONG_SIDE": "1"},
    )  # fmt: skip
    assert result.stop_reason == "answer", result.error
    assert _work_messages(result) == _expected()
    sides = [t for t in result.threads.values() if t.name == "side 2"]
    assert len(sides) == 1
    assert [m.content for m in sides[0].messages] == ["aside 2"]
    made = [e.name for e in result.events if e.kind == "thread_created"]
    assert made.count("side 2") == 1
    assert len(list(marks.glob("sent-2-*"))) == 2  # the turn ran twice
    assert _redelivered(result) == ["pong"]


async def test_nats_server_restarted_mid_run(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PP_ROUNDS": str(ROUNDS), "PP_MARK_DIR": str(marks), "PP_PONG_DELAY": "0.3"}
    workers.start(graph, "--agents", "ping", "--ack-wait", "2", env=env)
    workers.start(graph, "--agents", "pong", "--ack-wait", "2", env=env)
    lg = load_graph(graph)
    result = None

    async def drive() -> None:
        nonlocal result
        result = await run_on_nats(lg, "play", nats_server.url, wait_workers_s=30)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        await _wait_for(marks, "pong-2-*")
        nats_server.kill()
        t0 = time.monotonic()
        nats_server.start()
        assert time.monotonic() - t0 < 30
    assert result is not None
    assert result.stop_reason == "answer", result.error
    assert result.answer == f"done after {ROUNDS} rounds"
    assert _work_messages(result) == _expected()


async def test_a_run_whose_worker_is_gone_for_good_stops_naming_the_agent(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PP_ROUNDS": str(ROUNDS), "PP_MARK_DIR": str(marks), "PP_PONG_DELAY": "0.3"}
    workers.start(graph, "--agents", "ping", env=env)
    pong = workers.start(graph, "--agents", "pong", env=env)
    lg = load_graph(graph)
    result = None

    async def drive() -> None:
        nonlocal result
        result = await run_on_nats(lg, "play", nats_server.url, wait_workers_s=1)

    with anyio.fail_after(60):  # never hangs
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await _wait_for(marks, f"pong-2-{pong.proc.pid}")
            pong.proc.kill()
            pong.proc.wait(10)
    assert result is not None
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "no worker hosts pong" in result.error


async def test_sigterm_finishes_the_turn_and_leaves_the_run_going(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """SIGTERM in the middle of pong's turn: the worker finishes the turn, acknowledges
    its delivery (no redelivery: ack_wait is 30 s here), leaves the run without
    ending it, and exits 0; another pong worker carries the run to its answer."""
    marks = tmp_path / "marks"
    marks.mkdir()
    t0 = time.monotonic()
    result, pong = await _kill_pong_when(
        graph, nats_server.url, workers, marks, "pong-2", {"PP_PONG_DELAY": "0.5"}, term=True
    )
    assert result.stop_reason == "answer", result.error
    assert _work_messages(result) == _expected()
    assert _redelivered(result) == []
    assert time.monotonic() - t0 < 25  # never waited for a redelivery
    pong.close()
    assert "stopped after 2 deliveries" in pong.output
    # pong's second turn ran once, in the worker that was told to stop.
    assert [p.name for p in marks.glob("pong-2-*")] == [f"pong-2-{pong.proc.pid}"]


async def test_a_second_sigterm_stops_at_once_and_hands_the_turn_back(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """pong's first turn would take two minutes. SIGTERM: the worker says it waits for
    that turn, and how to stop at once. A second SIGTERM stops it within seconds (exit
    128 + 15) and hands the delivery back: a new pong worker takes it at once, not
    after ack_wait (30 s here), and the run finishes with the cut turn recorded as
    handled again."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PP_ROUNDS": str(ROUNDS), "PP_MARK_DIR": str(marks)}
    wait = ("--ack-wait", "30")
    workers.start(graph, "--agents", "ping", *wait, env=env)
    slow = workers.start(graph, "--agents", "pong", *wait, env={**env, "PP_PONG_DELAY": "120"})
    lg = load_graph(graph)
    result = None

    async def drive() -> None:
        nonlocal result
        result = await run_on_nats(lg, "play", nats_server.url, wait_workers_s=30)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await _wait_for(marks, f"pong-1-{slow.proc.pid}")
            t0 = time.monotonic()
            slow.proc.terminate()
            while "SIGTERM: stopping" not in slow.output:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            assert "once the 1 turn in progress ends; SIGTERM again" in slow.output
            assert slow.proc.poll() is None  # still in its turn
            slow.proc.terminate()
            assert await anyio.to_thread.run_sync(slow.proc.wait, 10) == 128 + 15
            assert time.monotonic() - t0 < 5
            workers.start(graph, "--agents", "pong", *wait, env=env)
    assert result is not None
    assert result.stop_reason == "answer", result.error
    assert _work_messages(result) == _expected()
    assert _redelivered(result) == ["pong"]
    assert time.monotonic() - t0 < 25  # never waited out ack_wait
    slow.close()
    assert "1 delivery handed back" in slow.output, slow.output


async def test_a_run_whose_starting_process_is_gone_is_ended_by_its_workers(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """The process that started a run is killed (SIGKILL) while ping and pong play
    on. Nobody could detect the run's end or read its result any more, and the
    agents would play on for nobody: once the starter's heartbeat has been still for
    ORIGIN_LOST_S the workers end the run with an error that says so and how to
    record what it did, and stop handling it; that command records the run to its
    end."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import ORIGIN_LOST_S, RunState

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PP_ROUNDS": "100000", "PP_MARK_DIR": str(marks), "PP_PONG_DELAY": "0.05"}
    workers.start(graph, "--agents", "ping", env=env)
    workers.start(graph, "--agents", "pong", env=env)
    starter = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited for here
        cli_args("run", str(graph), "--nats", nats_server.url, "--no-store", "--task", "play"),
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_for(marks, "pong-3-*")
    finally:
        starter.kill()
        starter.wait(10)
    t0 = time.monotonic()
    async with open_link(nats_server.url) as link:
        kv = await link.js.key_value(Names.for_graph("nats-pingpong").bucket)
        [rid] = [k[2:] for k in await kv.keys() if k.startswith("r.")]
        st = RunState(kv, rid)
        with anyio.fail_after(ORIGIN_LOST_S + 20):
            while True:
                cur = await st.record()
                assert cur is not None
                rec = cur[0]
                if rec["status"] != "running":
                    break
                await anyio.sleep(0.2)
    assert time.monotonic() - t0 > ORIGIN_LOST_S - 2  # not before the starter was gone
    assert rec["stop_reason"] == "error"
    assert "the process that started the run" in rec["error"]
    assert f"coral-graph record GRAPH --nats URL --run {rid}" in rec["error"]
    handled = len(list(marks.iterdir()))
    await anyio.sleep(1.0)
    assert len(list(marks.iterdir())) <= handled + 1  # (a turn under way may end)
    # What the error says to do: the run's events so far, into a store, ending as the
    # run ended (nobody else will publish its run_finished).
    db = tmp_path / "recorded.db"
    args = ("record", str(graph), "--nats", nats_server.url, "--run", rid, "--db", str(db))
    with anyio.fail_after(ORIGIN_LOST_S + 30):
        done = await anyio.run_process(cli_args(*args), env=cli_env(), check=False)
    assert done.returncode == 0, done.stderr
    from coral_graph.store._reader import open_reader

    with open_reader(db) as r:
        row = r.run(rid)
    assert (row["status"], row["stop_reason"]) == ("finished", "error")
    assert "the process that started the run" in row["error"]
    assert row["messages"] >= 4  # ping 1, pong 1, ping 2, pong 2 at least


async def test_ctrl_c_on_the_starting_process_cancels_the_run_on_every_worker(
    graph: Path, nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    """Ctrl-C on `coral-graph run --nats` while ping and pong play on other workers:
    the run stops as `cancelled` for everyone (its record says so within seconds, the
    workers stop handling it) and the command exits 130."""
    import signal

    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import RunState

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PP_ROUNDS": "100000", "PP_MARK_DIR": str(marks), "PP_PONG_DELAY": "0.05"}
    workers.start(graph, "--agents", "ping", env=env)
    workers.start(graph, "--agents", "pong", env=env)
    starter = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for off the loop
        cli_args("run", str(graph), "--nats", nats_server.url, "--no-store", "--task", "play"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        await _wait_for(marks, "pong-3-*")
        starter.send_signal(signal.SIGINT)
        out, err = await anyio.to_thread.run_sync(lambda: starter.communicate(timeout=30))
    finally:
        if starter.poll() is None:
            starter.kill()
    assert starter.returncode == 130, err
    assert "cancelled" in out + err
    async with open_link(nats_server.url) as link:
        kv = await link.js.key_value(Names.for_graph("nats-pingpong").bucket)
        [rid] = [k[2:] for k in await kv.keys() if k.startswith("r.")]
        cur = await RunState(kv, rid).record()
    assert cur is not None
    assert (cur[0]["status"], cur[0]["stop_reason"]) == ("finished", "cancelled")
    handled = len(list(marks.iterdir()))
    await anyio.sleep(1.0)
    assert len(list(marks.iterdir())) <= handled + 1  # (a turn under way may end)


def test_a_worker_whose_server_is_gone_stops_cleanly_on_sigterm(
    nats_server: NatsServer, workers: Workers, graph: Path
) -> None:
    """With its nats-server gone for good, a worker asked to stop does not wait for
    it: it leaves its record to expire (the bucket forgets it within seconds), skips
    the flush, and exits 0 saying it stopped."""
    w = workers.start(graph, "--agents", "pong")
    nats_server.kill()
    time.sleep(0.5)  # (the worker notices the lost connection)
    w.proc.terminate()
    assert w.proc.wait(30) == 0, w.output
    w.close()
    assert "stopped after 0 deliveries" in w.output
