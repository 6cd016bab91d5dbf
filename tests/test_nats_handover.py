"""Messages handed to their handler as the connection reads them (``_handover``):
every subscription a worker reads per delivery is handed over (a nats-py that
changes its internals fails here instead of slowing down unnoticed), nothing is lost
or reordered by the hand-over, a failing handler never takes the connection down,
and the faster header parser gives exactly nats-py's result."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from nats_fixtures import (
    NatsServer,
    announce_writes,
    nats_server_fixture,  # noqa: F401 - a fixture
    needs_nats,
)

from coral_graph._model import Thread
from coral_graph._types import AgentName, ThreadId


def test_the_header_parser_gives_nats_pys_result() -> None:
    """Same dict as nats-py's own parser, for well-formed headers and for garbage:
    names with white space (including the separators str.isspace knows) or bytes
    outside ASCII are skipped, values are stripped and decoded with replacement."""
    pytest.importorskip("nats")
    from nats.aio.client import Client

    from coral_graph.transport.nats._handover import _header_lines

    cases = [
        b"Nats-Msg-Id: abc\r\nFoo:bar\r\n\r\n",
        b"A B: x\r\nC\x1c: y\r\nD\xc3: z\r\n:empty\r\nnocolon\r\n E :  v  \r\n",
        b"K: \xff\xfe\r\nDel\x7f: ok\r\nNul\x00: ok\r\n",
    ]
    rng = random.Random(7)
    alphabet = b"ab: \t\r\n\x0b\x0c\x1c\x1f\x7f\x00\x80\x85\xa0\xc3-"
    for _ in range(20000):
        pool = alphabet if rng.random() < 0.7 else bytes(range(256))
        cases.append(bytes(rng.choice(pool) for _ in range(rng.randint(0, 30))))
    for raw in cases:
        assert _header_lines(raw) == Client._parse_header_lines(raw), raw


def test_a_callback_that_waits_cannot_run_in_the_reader() -> None:
    from coral_graph.transport.nats._handover import run_now

    seen: list[object] = []

    async def quick(msg: Any) -> None:
        seen.append(msg)

    async def waits(msg: Any) -> None:
        await asyncio.sleep(0)

    run_now(quick)("m")  # type: ignore[arg-type]
    assert seen == ["m"]
    with pytest.raises(RuntimeError, match="waited"):
        run_now(waits)("m")  # type: ignore[arg-type]


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_every_subscription_read_per_delivery_is_handed_over(
    nats_server: NatsServer,
) -> None:
    """Request replies, publish acknowledgements, an agent's pull inbox, the run's
    change notices and the event recorder: each skips nats-py's subscription task,
    and each still works (a compare-and-set, an acknowledged publish, a delivery, a
    header change, an event record)."""
    import nats.js.errors

    from coral_graph.transport.nats import Recorder, open_link
    from coral_graph.transport.nats._conn import ensure_graph
    from coral_graph.transport.nats._handover import _Handover
    from coral_graph.transport.nats._names import Names
    from coral_graph.transport.nats._state import CasFailed, Replica, RunState
    from coral_graph.transport.nats._wire import encode_events
    from coral_graph.transport.nats._worker import _Inbox

    names = Names.for_graph("handover")
    async with open_link(nats_server.url) as link:
        assert link.handed_over
        assert link.asker is not None
        queues = [s._pending_queue for s in link.nc._subs.values()]
        assert sum(isinstance(q, _Handover) for q in queues) == 3  # requests, acks, asker
        kv, _ = await ensure_graph(link, names, ["a"])
        st = RunState(kv, "r-h", "w-1", link.asker)
        changes = names.changes("r-h")
        announce_writes(st, link, changes)
        rep = Replica(st)
        await rep.start(link.nc, changes)
        rec = Recorder(link, names, "r-h")
        await rec.start()
        inbox = _Inbox(link, names, "a")
        try:
            assert rep.handed_over
            assert rec.handed_over
            th = Thread(ThreadId("t-1"), "x", AgentName("a"), [AgentName("a")], 1.0)
            rev = await st.create_thread(th)  # a request, answered
            th.closed = True
            assert st.asker is link.asker
            new = await st.update_header(th, rev, None)  # a compare-and-set, through the asker
            assert new > rev
            with pytest.raises(CasFailed):  # the same error as KeyValue.update's
                await st.update_header(th, rev, None)
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await link.asker.stored("no.stream.here", b"x")
            with pytest.raises(nats.js.errors.APIError, match="expected stream"):
                await link.asker.stored(
                    names.inbox("r-h", "a"), b"x", {"Nats-Expected-Stream": "NOPE"}
                )
            assert not link.asker.waiting  # every reply came and was taken
            ack = await link.js.publish_async(names.inbox("r-h", "a"), b"hello")
            assert (await ack).seq >= 1  # an acknowledged publish
            m = await inbox.next()
            assert m is not None
            assert m.data == b"hello"
            assert inbox._direct
            await inbox.ack_next(m)
            for data in encode_events("h:1", [{"kind": "no_such_kind"}], 1 << 20):
                await link.js.publish(names.events("r-h"), data)
            assert await rec.caught_up()
            assert [e.kind for e in rec.events] == ["agent_errored"]
            for _ in range(200):  # the change notice brings the header change
                if rep.threads.get("t-1") is not None and rep.threads["t-1"].closed:
                    break
                await asyncio.sleep(0.01)
            assert rep.threads["t-1"].closed
        finally:
            await inbox.close()
            await rec.aclose()
            await rep.aclose()


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_a_hand_over_keeps_what_came_before_and_survives_a_failing_handler(
    nats_server: NatsServer,
) -> None:
    """Messages queued before the hand-over reach the handler first, in order; a
    handler that raises loses that message only: the connection and the next
    messages are fine."""
    from coral_graph.transport.nats import open_link
    from coral_graph.transport.nats._handover import hand_over

    async with open_link(nats_server.url) as link:
        nc = link.nc
        sub = await nc.subscribe("ho.x")
        for i in range(3):
            await nc.publish("ho.x", str(i).encode())
        await nc.flush()
        for _ in range(200):  # (the reader queues them for the subscription)
            if sub._pending_queue.qsize() == 3:
                break
            await asyncio.sleep(0.01)
        got: list[bytes] = []

        def handle(msg: Any) -> None:
            if msg.data == b"bad":
                raise ValueError("a handler's bug")
            got.append(msg.data)

        assert hand_over(sub, handle)
        assert got == [b"0", b"1", b"2"]
        for data in (b"bad", b"3", b"4"):
            await nc.publish("ho.x", data)
        await nc.flush()
        for _ in range(200):
            if len(got) == 5:
                break
            await asyncio.sleep(0.01)
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        assert nc.is_connected
        assert sub.pending_bytes == 0  # nothing counted as waiting (no slow consumer)


@pytest.mark.anyio
@needs_nats
@pytest.mark.nats
async def test_the_benchmark_floor_is_bare_nats_py(nats_server: NatsServer) -> None:
    """``bench --nats`` compares coral-graph with nats-py as nats-py comes: the floor's
    connection gets none of coral-graph's hand-overs or header parsing."""
    from nats.aio.client import Client

    from coral_graph.bench._nats import _bare_nats
    from coral_graph.transport.nats._handover import _Handover

    async with _bare_nats(nats_server.url) as js:
        await js.account_info()  # (a request: makes its reply subscription)
        subs = list(js._nc._subs.values())
        assert subs
        assert not any(isinstance(s._pending_queue, _Handover) for s in subs)
        assert "_parse_header_lines" not in vars(js._nc)
        assert js._nc._parse_header_lines is Client._parse_header_lines
