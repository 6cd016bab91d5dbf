"""What the NATS transport stores and how it reads it back: event records (one per
flush, version 1 still read), message keys (every message but a thread's last in its
key, the last in the header), and who wrote a thread header (a process's own writes
never count as another's)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgpack
import pytest
from nats_fixtures import (
    NatsServer,
    Workers,
    announce_writes,
    cli_args,
    cli_env,
    nats_server_fixture,  # noqa: F401 - a fixture
    needs_nats,
    workers_fixture,  # noqa: F401 - a fixture
)

from coral_graph._events import (
    AgentAdded,
    DeliveryHandled,
    MessageSent,
    RunStarted,
    event_to_dict,
)
from coral_graph._model import Message, Thread
from coral_graph._types import AgentName, MessageId, ThreadId

DATA = Path(__file__).parent / "data" / "nats"


def _events(n: int, pad: int = 0) -> list[dict[str, object]]:
    return [
        event_to_dict(AgentAdded("r", 0, 1.0, AgentName(f"a{i}"), "x" * pad, "python"))
        for i in range(n)
    ]


def test_events_of_a_flush_are_one_record_split_only_past_the_limit() -> None:
    from coral_graph.transport.nats._wire import decode, encode_events, events_of

    evs = _events(5)
    (one,) = encode_events("host:1", evs, 1 << 20)
    rec = decode(one)
    assert rec["t"] == "es"
    assert rec["worker"] == "host:1"
    assert events_of(rec) == evs
    # Past the limit: several records, each under it, the events in their order.
    big = _events(9, pad=300)
    recs = encode_events("host:1", big, 1000)
    assert len(recs) > 1
    assert all(len(r) <= 1000 for r in recs)
    assert [e for r in recs for e in events_of(decode(r))] == big
    # One event over the limit goes alone (the server refuses it, loudly).
    (alone,) = encode_events("host:1", _events(1, pad=5000), 1000)
    assert len(alone) > 1000


def test_a_version_1_event_record_is_still_read_and_a_newer_one_refused() -> None:
    from coral_graph.transport.nats._errors import WireError
    from coral_graph.transport.nats._wire import decode, events_of

    ev = _events(1)[0]
    v1 = msgpack.packb({"v": 1, "t": "e", "worker": "h:1", "ev": ev}, use_bin_type=True)
    assert events_of(decode(v1)) == [ev]
    v9 = msgpack.packb({"v": 9, "t": "es", "worker": "h:1", "evs": []}, use_bin_type=True)
    with pytest.raises(WireError, match="newer than this coral-graph's"):
        decode(v9)
    with pytest.raises(WireError, match="expected an event record"):
        events_of(decode(msgpack.packb({"v": 2, "t": "n", "n": 1})))


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_the_recorder_reads_batches_in_order_and_skips_a_bad_event(
    nats_server: NatsServer,
) -> None:
    from coral_graph.transport.nats import Recorder, open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._wire import encode, encode_events

    names = Names.for_graph("wire-rec")
    rid = "r-wire1"
    msg = Message(MessageId("t-1#1"), ThreadId("t-1"), 1, AgentName("a"), "hi", (), 1.0)
    async with open_link(nats_server.url) as link:
        await ensure_graph(link, names, ["a"])
        rec = Recorder(link, names, rid)
        await rec.start()
        subject = names.events(rid)
        started = event_to_dict(RunStarted(rid, 0, 1.0, "task", ["a"], [], {}, {}))
        sent = event_to_dict(MessageSent(rid, 0, 1.5, msg))
        # A version-1 single event, then a batch with a bad event between good ones.
        await link.js.publish(subject, encode("e", worker="h:1", ev=started))
        batch = [*_events(2), {"kind": "no_such_kind"}, sent]
        for data in encode_events("h:2", batch, 1 << 20):
            await link.js.publish(subject, data)
        assert await rec.caught_up()
        await rec.aclose()
    kinds = [e.kind for e in rec.events]
    assert kinds == ["run_started", "agent_added", "agent_added", "agent_errored", "message_sent"]
    assert [e.seq for e in rec.events] == [1, 2, 3, 4, 5]
    bad = rec.events[3]
    assert bad.error_type == "WireError"  # type: ignore[attr-defined]
    assert "no_such_kind" in bad.error  # type: ignore[attr-defined]
    # The worker that made a message is on it.
    assert rec.events[4].message.metadata["worker"] == "h:2"  # type: ignore[attr-defined]


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_a_recorder_for_a_numbering_sink_hands_each_event_once_unnumbered(
    nats_server: NatsServer,
) -> None:
    """The starting process's recorder (``keep=False``): each event goes to the sink
    (which numbers it) once, tagged with its worker, in stream order; a message made
    again by a replayed turn is dropped; the starting process's own records are
    skipped; nothing is kept."""
    from coral_graph.transport.nats import Recorder, open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._wire import encode_events

    names = Names.for_graph("wire-rec2")
    rid = "r-wire2"
    msg = Message(MessageId("t-1#2"), ThreadId("t-1"), 2, AgentName("a"), "hi", (), 1.0)
    sent = event_to_dict(MessageSent(rid, 0, 1.5, msg))
    handled = event_to_dict(DeliveryHandled(rid, 0, 1.6, "a", "t-1#1", "handle", True, 0.1))
    got: list[Any] = []
    async with open_link(nats_server.url) as link:
        await ensure_graph(link, names, ["a"])
        rec = Recorder(link, names, rid, got.append, skip_from="run:me", keep=False)
        await rec.start()
        subject = names.events(rid)
        for worker, evs in [
            ("h:1", [sent, handled]),
            ("run:me", [event_to_dict(AgentAdded(rid, 0, 1.0, AgentName("b"), "", "python"))]),
            ("h:2", [sent, handled]),  # the same message again (a replayed turn)
        ]:
            for data in encode_events(worker, evs, 1 << 20):
                await link.js.publish(subject, data)
        assert await rec.caught_up()
        await rec.aclose()
    assert [e.kind for e in got] == ["message_sent", "delivery_handled", "delivery_handled"]
    assert [e.seq for e in got] == [0, 0, 0]  # the sink numbers them
    assert {e.run_id for e in got} == {rid}
    assert got[0].message.metadata == {"worker": "h:1"}
    assert [e.worker for e in got[1:]] == ["h:1", "h:2"]
    assert rec.events == []
    assert rec.count == 3


def test_the_stream_sequence_is_read_from_the_reply_subject_as_nats_py_reads_it() -> None:
    from nats.aio.msg import Msg

    from coral_graph.transport.nats._handover import stream_pending
    from coral_graph.transport.nats._record import stream_seq

    for reply in (
        "$JS.ACK.CORAL_G_EVENTS.ev1.1.4711.12.1700000000000000000.3",
        "$JS.ACK.hub.ACCHASH.CORAL_G_EVENTS.ev1.2.4712.13.1700000000000000000.0.tok",
    ):
        md = Msg.Metadata._from_reply(reply)
        assert stream_seq(reply) == md.sequence.stream
        assert stream_pending(reply) == md.num_pending
    assert stream_pending(None) is None
    assert stream_pending("$JS.ACK.S.C.1.2.3.4.x") is None
    assert stream_seq("$JS.ACK.CORAL_G_EVENTS.ev1.1.4711.12.1700000000000000000.3") == 4711
    assert stream_seq(None) is None  # a bare publish on a core subscription
    assert stream_seq("_INBOX.abc.def") is None
    assert stream_seq("$JS.ACK.S.C.1.x.2.3.4") is None


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_only_another_process_makes_a_thread_contended(nats_server: NatsServer) -> None:
    """A process's own header writes come back in its change notices when its
    connection echoes them; they never count as another process's (which would make
    it re-read the header before every append). Another process's notice does."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import Replica, RunState

    names = Names.for_graph("wire-cas")
    changes = names.changes("r-cas")
    async with open_link(nats_server.url) as link, open_link(nats_server.url) as other:
        kv, _ = await ensure_graph(link, names, ["a", "b"])
        mine = RunState(kv, "r-cas", "w-a")
        theirs = RunState(await other.js.key_value(names.bucket), "r-cas", "w-b")
        sent = [announce_writes(mine, link, changes), announce_writes(theirs, other, changes)]
        rep = Replica(mine)
        await rep.start(link.nc, changes)
        try:
            th = Thread(ThreadId("t-x"), "x", AgentName("a"), [AgentName("a")], 1.0)
            rev = await mine.create_thread(th)
            for i in range(1, 30):  # many own writes, each echoed
                th._messages.append(
                    Message(MessageId(f"t-x#{i}"), th.id, i, AgentName("a"), "m", (), 1.0)
                )
                rev = await mine.update_header(th, rev, th._messages[-1])
                await _until(lambda r=rev: rep.hrevs.get("t-x") == r)
            assert not mine.contended("t.t-x")
            assert rep.revs.get("t-x") == rev  # the copy is complete: no re-read needed
            th._messages.append(
                Message(MessageId("t-x#30"), th.id, 30, AgentName("b"), "m", (), 1.0)
            )
            rev = await theirs.update_header(th, rev, th._messages[-1])
            await _until(lambda: rep.hrevs.get("t-x") == rev)
            assert mine.contended("t.t-x")
            assert [m.content for m in rep.threads["t-x"].messages] == ["m"] * 30
            assert sum(sent[0]) == 30  # one notice per write
            assert sum(sent[1]) == 1
        finally:
            await rep.aclose()


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_changes_of_a_counter_queued_together_are_one_write(nats_server: NatsServer) -> None:
    """Changes without a limit (a turn's LLM usage, messages without a message
    budget) are applied in the background: those of one counter queued together go
    in one compare-and-set, not one each, and none is lost."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._shared import NatsCounters
    from coral_graph.transport.nats._state import RunState

    names = Names.for_graph("wire-counters")
    async with open_link(nats_server.url) as link:
        kv, _ = await ensure_graph(link, names, ["a"])
        st = RunState(kv, "r-n", "w-a")
        writes: list[str] = []
        st.on_write = lambda key, value, rev: writes.append(key)
        c = NatsCounters(SimpleNamespace(state=st))  # type: ignore[arg-type]
        for _ in range(50):
            c.reserve_nowait("tokens", 3, None)
            c.reserve_nowait("llm_calls", 1, None)
        c.release_nowait("tokens", 10)
        assert c.value("tokens") == 140  # counted before it is written
        await c.settle()
        assert sorted(writes) == ["b.llm_calls", "b.tokens"]
        c.reserve_nowait("tokens", 5, None)  # one more, later: a write of its own
        await c.settle()
        assert (await st.counter("tokens"))[0] == 145
        assert (await st.counter("llm_calls"))[0] == 50
        assert c.value("tokens") == 145
        assert len(writes) == 3


async def _until(cond: object, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_every_message_but_the_last_is_in_its_key_and_a_fresh_copy_reads_all(
    tmp_path: Path, nats_server: NatsServer, workers: Workers
) -> None:
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import Replica, RunState

    out = await _pingpong(tmp_path, nats_server, workers, rounds=6)
    assert out["answer"] == "done after 6 rounds"
    rid = out["run_id"]
    names = Names.for_graph("nats-pingpong")
    async with open_link(nats_server.url) as link:
        kv = await link.js.key_value(names.bucket)
        keys = set(await kv.keys())
        work = [k.split(".")[2] for k in keys if k.startswith(f"{rid}.t.")]
        st = RunState(kv, rid)
        fresh = Replica(st)  # no watch: what a process that joins late reads
        by_name = {}
        for tid in work:
            h = await st.header(tid)
            stored = {int(k.rsplit(".", 1)[1]) for k in keys if k.startswith(f"m.{rid}.{tid}.")}
            assert stored == set(range(1, h.last_seq))
            th = await fresh.load(tid)
            assert [m.seq for m in th.messages] == list(range(1, h.last_seq + 1))
            by_name[th.name] = [m.content for m in th.messages]
    # Two writers took turns on the work thread: 12 messages, keys 1…11, 12 in the header.
    assert by_name["work"] == [f"{w} {i}" for i in range(1, 7) for w in ("ping", "pong")]
    assert by_name["task"] == ["play", "done after 6 rounds"]


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_a_turn_publishes_its_events_in_one_record(
    tmp_path: Path, nats_server: NatsServer, workers: Workers
) -> None:
    """What a turn emits goes out as one event record with its deliveries (the
    events of a turn that ends right after its send included), not one per event."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._wire import decode, events_of

    rid = (await _pingpong(tmp_path, nats_server, workers, rounds=5))["run_id"]
    names = Names.for_graph("nats-pingpong")
    records: list[list[str]] = []
    async with open_link(nats_server.url) as link:
        sub = await link.js.subscribe(names.events(rid), ordered_consumer=True)
        info = await link.js.stream_info(names.events_stream)
        for _ in range(info.state.messages):
            try:
                m = await sub.next_msg(timeout=2)
            except Exception:
                break
            rec = decode(m.data)
            if not str(rec["worker"]).startswith("run:"):
                records.append([e["kind"] for e in events_of(rec)])
        await sub.unsubscribe()
    kinds = [k for r in records for k in r]
    turns = kinds.count("delivery_handled")
    assert turns == 11  # ping 6, pong 5
    assert kinds.count("message_sent") == 11
    # One record per turn at most (one per event would be two or more).
    assert len([r for r in records if r]) <= turns, records


async def _pingpong(
    tmp_path: Path,
    nats_server: NatsServer,
    workers: Workers,
    *,
    rounds: int,
    worker_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``coral-graph run --nats --json`` of the pingpong graph, ping and pong on two
    workers (started with ``worker_args``); its JSON result."""
    d = tmp_path / "graph"
    shutil.copytree(DATA, d)
    g = d / "pingpong.yaml"
    env = {"PP_ROUNDS": str(rounds)}
    for agent in ("ping", "pong"):
        workers.start(g, "--agents", agent, *worker_args, env=env)
    with anyio.fail_after(60):
        res = await anyio.run_process(
            cli_args("run", str(g), "--nats", nats_server.url, "--json", "--no-store"),
            env=cli_env(), cwd=d, check=False,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    out: dict[str, Any] = json.loads(res.stdout)
    return out


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_only_a_delivery_stored_since_the_inbox_was_read_is_known_new(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A turn's replay markers are not watched: a worker asks the bucket for them
    unless the delivery is certainly new, i.e. a first attempt stored after the
    worker last read the inbox's sequence, with no lost connection since (a
    nats-server that forgot acknowledgements restarted, and gives old deliveries as
    first attempts). Treating an old one as new would run its turn twice."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import identity_of, open_link
    from coral_graph.transport.nats._worker import Worker

    d = tmp_path / "graph"
    shutil.copytree(DATA, d)
    lg = load_graph(d / "pingpong.yaml")
    async with open_link(nats_server.url) as link:
        w = Worker(link, lg.graph, identity_of(lg), ["ping"], log=lambda s: None)
        await w.open()
        subject = w.names.inbox("r-mark", "ping")

        async def publish_and_take() -> Any:
            await link.js.publish(subject, b"x")
            (m,) = await sub.fetch(1, timeout=5)
            await m.ack_sync()
            return m

        sub = await link.js.pull_subscribe_bind(
            durable=w.names.consumer("ping"), stream=w.names.inbox_stream
        )
        await link.js.publish(subject, b"before")  # stored before the worker started
        await w.start()
        (old,) = await sub.fetch(1, timeout=5)
        await old.ack_sync()
        assert not await w.first_handling(old)
        assert await w.first_handling(await publish_and_take())

        await link.js.publish(subject, b"before the restart")
        nats_server.stop()
        nats_server.start()
        await _until(lambda: link.reconnects > 0, timeout=20)
        assert link.drops >= 1
        with anyio.fail_after(20):
            while True:
                try:
                    (m,) = await sub.fetch(1, timeout=1)
                    break
                except Exception:  # the pull subscription comes back after the reconnect
                    await anyio.sleep(0.1)
        await m.ack_sync()
        assert m.metadata.num_delivered == 1
        assert not await w.first_handling(m)  # stored before the connection dropped
        assert await w.first_handling(await publish_and_take())


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_a_late_process_reads_what_it_missed_at_once(nats_server: NatsServer) -> None:
    """A process that joins a run late gets each thread's last header from its first
    read of the run (the snapshot), never the messages before it: waiting for
    notices to bring them would stall the first delivery of every thread (it did, by
    the full wait, in every run's second worker). They are read from the bucket at
    once."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import Replica, RunState
    from coral_graph.transport.nats._wire import encode

    names = Names.for_graph("wire-late")
    async with open_link(nats_server.url) as link:
        kv, _ = await ensure_graph(link, names, ["a"])
        st = RunState(kv, "r-late", "w-a")
        th = Thread(ThreadId("t-l"), "l", AgentName("a"), [AgentName("a")], 1.0)
        rev = await st.create_thread(th)
        for i in range(1, 8):
            m = Message(MessageId(f"t-l#{i}"), th.id, i, AgentName("a"), f"m{i}", (), 1.0)
            if i > 1:
                prev = th._messages[-1]
                await kv.put(st.message_key(th.id, prev.seq), encode("m", msg=prev.to_dict()))
            th._messages.append(m)
            rev = await st.update_header(th, rev, m)
        late = Replica(RunState(kv, "r-late", "w-b"))
        await late.start(link.nc, names.changes("r-late"))
        try:
            assert late.last_seqs.get("t-l") == 7  # the snapshot: every thread's header
            assert len(late.threads["t-l"].messages) < 7
            with anyio.fail_after(20):
                await late.catch_up("t-l", 7)
            got = late.threads["t-l"].messages
            assert [m.content for m in got] == [f"m{i}" for i in range(1, 8)]
        finally:
            await late.aclose()


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_workers_on_uvloop_run_the_graph(
    tmp_path: Path, nats_server: NatsServer, workers: Workers
) -> None:
    pytest.importorskip("uvloop")
    out = await _pingpong(tmp_path, nats_server, workers, rounds=4, worker_args=("--uvloop",))
    assert out["answer"] == "done after 4 rounds"
    assert all("(uvloop)" in w.output for w in workers.procs)


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_changes_missed_while_away_are_read_again(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Change notices are not stored: a copy that missed some (its connection was
    down) is read again whole, newer values kept; a worker's heartbeat does it for
    each run once its connection has dropped since the run's copy was last read."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import identity_of, open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import Replica, RunState
    from coral_graph.transport.nats._worker import HEARTBEAT_S, Worker

    names = Names.for_graph("wire-away")
    changes = names.changes("r-away")
    async with open_link(nats_server.url) as link:
        kv, _ = await ensure_graph(link, names, ["a"])
        writer = RunState(kv, "r-away", "w-b")  # its notices are lost: nobody sends them
        th = Thread(ThreadId("t-w"), "w", AgentName("a"), [AgentName("a")], 1.0)
        rev = await writer.create_thread(th)
        rep = Replica(RunState(kv, "r-away", "w-a"))
        assert await rep.start(link.nc, changes)
        try:
            assert rep.hrevs["t-w"] == rev  # read when it started
            th.closed = True
            rev = await writer.update_header(th, rev, None)
            await asyncio.sleep(0.2)
            assert not rep.threads["t-w"].closed  # not told
            assert await rep.snapshot()
            assert rep.threads["t-w"].closed
            assert rep.hrevs["t-w"] == rev
        finally:
            await rep.aclose()

        d = tmp_path / "graph"
        shutil.copytree(DATA, d)
        lg = load_graph(d / "pingpong.yaml")
        w = Worker(link, lg.graph, identity_of(lg), ["ping"], log=lambda s: None)
        await w.open()

        class Run:  # what the heartbeat asks of a run
            synced = link.drops
            resyncs = 0
            state = RunState(w.kv, "r-gone")  # no record: the run is not over

            async def resync(self) -> None:
                Run.resyncs += 1
                Run.synced = link.drops

            def remote_stop(self, reason: str) -> None:
                raise AssertionError(reason)

        w.runs["r-gone"] = Run()  # type: ignore[assignment]
        async with anyio.create_task_group() as tg:
            tg.start_soon(w._heartbeat)
            await asyncio.sleep(HEARTBEAT_S * 1.5)
            assert Run.resyncs == 0  # the connection did not drop
            link.drops += 1
            await _until(lambda: Run.resyncs == 1, HEARTBEAT_S * 3)
            await asyncio.sleep(HEARTBEAT_S * 1.5)
            assert Run.resyncs == 1  # once per drop
            tg.cancel_scope.cancel()
