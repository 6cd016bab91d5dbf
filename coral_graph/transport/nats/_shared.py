"""The state of a run over NATS as the core's seam sees it: :class:`NatsThreads`
(a :class:`~coral_graph.transport.ThreadStore` in the key-value bucket) and
:class:`NatsCounters` (:class:`~coral_graph.transport.Counters` reserved by
compare-and-set), with :class:`Inflight`, the delivery an agent is handling here
(what a replayed turn's operations are looked up by). See :mod:`._run`."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from coral_graph._model import Message, Thread
from coral_graph._types import AgentName, ThreadId
from coral_graph.transport.nats._errors import NeedsAwaitError
from coral_graph.transport.nats._state import CasFailed, Header, message_value, scratch

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from coral_graph.transport.nats._run import NatsRun

__all__ = ["Inflight", "NatsCounters", "NatsThreads", "needs_await"]

R = TypeVar("R")


def needs_await(op: str) -> NoReturn:
    raise NeedsAwaitError(op)


class Inflight:
    """The delivery an agent is handling here, not yet acknowledged. ``maybe``: it may
    have been handled before (see ``Worker.first_handling``), so each operation of
    its turn looks for what it made then."""

    __slots__ = ("done", "m", "maybe", "msg", "ops", "told", "turn")

    def __init__(self, m: Msg, msg: Message, turn: str, maybe: bool) -> None:
        self.m = m
        self.msg = msg
        self.turn = turn
        self.maybe = maybe
        self.told = False  # its redelivery is recorded
        self.ops = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def next_op(self) -> str:
        """The origin of the turn's next operation: ``<turn>.<n>``."""
        self.ops += 1
        return f"{self.turn}.{self.ops}"


def thread_id_of(run_id: str, origin: str) -> ThreadId:
    """The id of the thread that operation ``origin`` of run ``run_id`` creates: the
    same in a replay of the turn (shaped as a random one, ``t-`` and 8 hex digits)."""
    digest = hashlib.blake2b(f"{run_id}\x00{origin}".encode(), digest_size=4).hexdigest()
    return ThreadId(f"t-{digest}")


class NatsThreads:
    """The threads of one run, in the bucket (see :mod:`._state`)."""

    __slots__ = ("_run",)

    def __init__(self, run: NatsRun) -> None:
        self._run = run

    def get_nowait(self, thread_id: ThreadId) -> Thread | None:
        return self._run.replica.threads.get(thread_id)

    async def get(self, thread_id: ThreadId) -> Thread | None:
        from coral_graph._errors import UnknownThreadError

        try:
            return await self._run.replica.load(thread_id)
        except UnknownThreadError:
            return None

    def create_nowait(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        needs_await("create_thread")

    async def create(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        run = self._run
        inf = run.inflight.get(creator)
        tid = thread_id_of(run.run_id, inf.next_op()) if inf is not None else None
        while True:
            th = Thread(
                tid or ThreadId(f"t-{secrets.token_hex(4)}"), name, creator, participants,
                time.time(),
            )  # fmt: skip
            try:
                rev = await run.state.create_thread(th)
            except CasFailed:
                if inf is not None and inf.maybe and tid is not None:
                    # The replay of a turn that made this thread already (its change
                    # notice may not have left before the crash: announced again).
                    run.redelivered(creator, inf)
                    await run.state.announce(f"t.{tid}")
                    return await run.replica.load(tid)
                tid = None  # another thread has the id (they are 32 bits): a random one
                continue
            run.replica.apply(Header(th, rev, 0, None))
            return th

    def update_nowait(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        needs_await("send_message")

    async def update(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        run = self._run
        rep = run.replica
        st = run.state
        fresh: Header | None = None  # the header read after a conflict
        op: tuple[Inflight, str] | None = None
        while True:
            live = rep.threads.get(thread_id)
            rev = rep.revs.get(thread_id)
            if live is None or (rev is None and fresh is None):
                live = await rep.load(thread_id)
                rev = rep.revs.get(thread_id)
                if rev is None and fresh is None:
                    fresh = await st.header(thread_id)  # the copy lags: as stored now
            if fresh is None:
                assert rev is not None
                n0 = len(live._messages)
                base, last = live, (live._messages[-1] if n0 else None)
                last_origin = rep.last_origin(thread_id, n0)
                work = scratch(live, n0)
            else:
                # After a conflict: the rules run on the header as stored now. Only the
                # number of messages matters to them; those this copy has not seen yet
                # come through the change notices.
                rev, n0, base, last = fresh.rev, fresh.last_seq, fresh.thread, fresh.last
                last_origin = fresh.lo
                work = scratch(base, n0)
            result = change(work, *args)
            added = work._messages[n0:]
            if not added and (
                work._participants == base._participants
                and work.closed == base.closed
                and work.summary == base.summary
            ):
                return result  # nothing to write (e.g. adding a participant twice)
            if last is not None and last_origin is None:
                # The copy does not know who appended the header's last message (kept
                # with it in its header and key): read it with the header.
                h = await st.header(thread_id)
                if h.rev != rev:
                    fresh = h
                    continue
                last_origin = h.lo
            prev = last
            origin = last_origin or ""
            if added:
                msg = last = added[-1]
                run.check_size(msg)
                inf = run.inflight.get(msg.sender)
                if op is None and inf is not None:
                    op = (inf, inf.next_op())
                if op is not None:
                    origin = op[1]
                    ref = await st.find_origin(thread_id, origin) if op[0].maybe else None
                    if ref is not None:
                        # The replay of a turn a crash interrupted: this message was
                        # appended already. Make it again with its own seq (same id)
                        # and write nothing: the core then publishes its deliveries
                        # again, which the broker drops by their message ids. (The
                        # thread's change notice may not have left before the crash:
                        # the header is announced again.)
                        run.redelivered(msg.sender, op[0])
                        await st.announce(f"t.{thread_id}")
                        seq = int(ref.rpartition("#")[2])
                        return change(scratch(live, seq - 1), *args)
                # The header this CAS replaces holds the previous message: its own key
                # (with the origin the header gave it) is written first, so the
                # messages before the header's last are always in their keys. The
                # CAS's reply says it is stored (the same stream, in order): no
                # acknowledgement of its own.
                await run.flush_out()  # what is queued goes first (see NatsRun._queue)
                keys = [(prev, last_origin or "")] if prev is not None else []
                keys += [(m, "") for m in added[:-1]]  # (committed with the last)
                for m, o in keys:
                    await run.publish_later(
                        st.key_subject(st.message_key(thread_id, m.seq)),
                        message_value(m, o),
                        ack=False,
                    )
            try:
                new_rev = await st.update_header(work, rev, last, origin)
            except CasFailed:
                st.foreign[f"t.{thread_id}"] = time.monotonic()  # another process wrote it
                fresh = await st.header(thread_id)
                continue
            rep.committed(live, work, new_rev, n0, origin)
            return result

    def all_nowait(self) -> dict[ThreadId, Thread]:
        run = self._run
        if run.final_threads is not None:
            return run.final_threads  # the starting process's, rebuilt from the transcript
        return run.replica.threads  # type: ignore[return-value]


_LEASE = 16
"""Messages reserved at once by a worker while the message budget is far (see
:class:`NatsCounters`)."""
_LEASE_FAR = 64 * _LEASE


class NatsCounters:
    """The run's counters in the bucket. Reservations against a limit are atomic
    across processes (compare-and-set); unlimited changes (a release, a settled
    LLM call's difference) are applied in the background, in order.

    While the message budget is far from spent (at least ``_LEASE_FAR`` left), a
    worker reserves ``_LEASE`` messages in one compare-and-set and hands them out
    one by one; what it has not used goes back when the run ends here. Nearer the
    limit it reserves one at a time. A message budget is never passed; a run can
    stop on it with up to ``_LEASE - 1`` messages per other worker still unused."""

    __slots__ = ("_deltas", "_final", "_flusher", "_leased", "_run")

    def __init__(self, run: NatsRun) -> None:
        self._run = run
        self._deltas: list[tuple[str, float]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._leased = 0
        self._final: dict[str, float] = {}

    def settled(self, name: str, value: float) -> None:
        """The counter's final value, counted from the run's transcript once the run
        ended (the starting process, which spends nothing itself)."""
        self._final[name] = value

    def reserve_nowait(self, name: str, amount: float, limit: float | None) -> bool:
        if limit is not None:
            needs_await("send_message")
        self._add(name, amount)
        return True

    async def reserve(self, name: str, amount: float, limit: float | None) -> bool:
        if limit is None:
            self._add(name, amount)
            return True
        st = self._run.state
        if name != "messages" or amount != 1:
            return await st.reserve(name, amount, limit) is not None
        if self._leased:
            self._leased -= 1
            return True
        if limit - st.seen(name) >= _LEASE_FAR and await st.reserve(name, _LEASE, limit):
            self._leased = _LEASE - 1
            return True
        return await st.reserve(name, 1, limit) is not None

    def give_back(self) -> None:
        """The run ended here: the messages reserved and not used go back."""
        if self._leased:
            self._add("messages", -self._leased)
            self._leased = 0

    def release_nowait(self, name: str, amount: float) -> None:
        self._add(name, -amount)

    def value(self, name: str) -> float:
        if name in self._final:
            return self._final[name]
        v = self._run.state.seen(name) + sum(d for n, d in self._deltas if n == name)
        return v - self._leased if name == "messages" else v

    def _add(self, name: str, amount: float) -> None:
        if not amount:
            return
        self._deltas.append((name, amount))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Apply the queued changes, oldest counter first: all the changes of one
        counter queued so far in one compare-and-set (a turn's LLM calls, tokens and
        cost, a burst of messages without a message budget), not one each."""
        st = self._run.state
        while self._deltas:
            name = self._deltas[0][0]
            mine = [i for i, (n, _) in enumerate(self._deltas) if n == name]
            amount = sum(self._deltas[i][1] for i in mine)
            if amount:
                await st.reserve(name, amount, None)
            # (Only appends happen meanwhile: the indexes still hold.)
            done = set(mine)
            self._deltas = [d for i, d in enumerate(self._deltas) if i not in done]

    async def settle(self) -> None:
        """Wait until every change queued so far is in the bucket."""
        f = self._flusher
        if f is not None:
            await f
