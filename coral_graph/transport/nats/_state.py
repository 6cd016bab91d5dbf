"""A run's shared state in the graph's key-value bucket, changed only by
compare-and-set, and each process's read replica of it.

Keys (inside bucket ``coral_<g>``), for run ``R``:

* ``r.R`` — the run record; its ``status`` goes ``running`` -> ``finished`` once, by
  CAS, so exactly one stop reason wins however many workers stop it at once;
* ``R.t.<thread>`` — a thread's header: name, creator, participants, closed,
  summary, ``last_seq``, the last message itself and its origin ``lo`` (the turn's
  operation that appended it, ``<turn>.<n>``, for replays). Appending a message is
  one compare-and-set of the header (the seq is taken by whoever's CAS holds: no
  gaps, no two messages with one seq);
* ``m.R.<thread>.<seq>`` — message ``seq`` of the thread and its origin ``o``,
  written by whoever appends the next one, just before its CAS (the header it
  replaces holds message ``seq``):
  so whenever the header says ``last_seq = n``, messages ``1 … n-1`` are in their keys
  and ``n`` is in the header. Outside the ``R.`` prefix, so a read of the run's
  state as it is now (:meth:`Replica.snapshot`) does not carry them: a copy is filled
  from the headers, and reads these keys only for what it missed;
* ``R.b.<counter>`` — a counter (messages, turns, LLM calls, tokens, cost),
  reserved by CAS before anything is spent;
* ``R.busy.<worker>`` — whether a worker hosting loop agents has work in hand (the
  idle scan reads it: a loop agent between two ``wait_for_mentions`` holds no
  delivery);
* ``R.origin`` — the heartbeat of the process that started the run, written every
  second: the workers end a run whose starter stopped writing it (see
  ``NatsRun.check_origin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.kv import KeyValue

from coral_graph._errors import CoralError, UnknownThreadError
from coral_graph._model import Message, Thread
from coral_graph._types import AgentName, ThreadId
from coral_graph.transport.nats._conn import nats_errors
from coral_graph.transport.nats._errors import WireError
from coral_graph.transport.nats._handover import (
    Asker,
    as_callback,
    hand_over,
    stream_pending,
    stream_seq,
)
from coral_graph.transport.nats._wire import decode, encode

__all__ = [
    "ORIGIN_LOST_S",
    "CasFailed",
    "Header",
    "OriginWatch",
    "Replica",
    "RunState",
    "answer_of",
    "origin_lost_error",
]

_KeyMissing = (
    nats.js.errors.KeyNotFoundError,
    nats.js.errors.KeyDeletedError,
    nats.js.errors.InvalidKeyError,
)
CasFailed = nats.js.errors.KeyWrongLastSequenceError
_CONTENDED_S = 1.0


ORIGIN_LOST_S = 10.0
"""A run whose starting process's heartbeat has not changed for this long has lost
that process (see :class:`OriginWatch`)."""


class OriginWatch:
    """Whether the process that started a run is gone: its heartbeat
    (:meth:`RunState.beats`) unchanged for :data:`ORIGIN_LOST_S` of this process's
    time. Time when this process could not read it (the server away, a reconnect:
    ``drops`` moved) does not count, and a run without a heartbeat (started by a
    process that writes none) never loses it."""

    __slots__ = ("_seen", "state")

    def __init__(self, state: RunState) -> None:
        self.state = state
        # (revision, since when it has not changed, the connection's drop count then)
        self._seen: tuple[int, float, int] | None = None

    async def gone(self, drops: int) -> str | None:
        """The starting process (``run:<host>:<pid>``) if it is gone, else None;
        ``drops``: the connection's drop count now. Call it every second or so."""
        now = time.monotonic()
        seen = self._seen
        try:
            beat = await self.state.beats()
        except read_errors():
            beat = None  # not read: this time does not count
        if beat is None or seen is None or beat[0] != seen[0] or drops != seen[2]:
            self._seen = (beat[0], now, drops) if beat is not None else None
            return None
        return beat[1] if now - seen[1] >= ORIGIN_LOST_S else None


def answer_of(record: dict[str, Any]) -> Message | None:
    """The message that answered the run, from its record (:meth:`RunState.record`)."""
    a = record.get("answer")
    return Message.from_dict(a) if a else None


def origin_lost_error(by: str, run_id: str) -> str:
    """The error of a run its workers ended because the process that started it is
    gone (:class:`OriginWatch`)."""
    return (
        f"the process that started the run ({by}) stopped answering for "
        f"{ORIGIN_LOST_S:g} s: the run was ended so that its agents do not go on "
        "working for nobody. Its events so far stay on the NATS server: `coral-graph "
        f"record GRAPH --nats URL --run {run_id}` writes them into a store"
    )


class Header:
    """A thread's header as stored: the thread (without its messages), its revision,
    how many messages it has and the last of them."""

    __slots__ = ("by", "last", "last_seq", "lo", "rev", "thread")

    def __init__(
        self,
        thread: Thread,
        rev: int,
        last_seq: int,
        last: Message | None,
        by: str = "",
        lo: str = "",
    ) -> None:
        self.thread = thread
        self.rev = rev
        self.last_seq = last_seq
        self.last = last
        self.by = by  # the process that wrote it (RunState.writer)
        self.lo = lo  # the origin of the last message ("" when not made in a turn)


def header_record(th: Thread, last: Message | None, by: str = "", lo: str = "") -> bytes:
    return encode(
        "th",
        id=th.id,
        name=th.name,
        creator=th.creator,
        participants=list(th._participants),
        closed=th.closed,
        summary=th.summary,
        created_at=th.created_at,
        last_seq=len(th._messages),
        last=last.to_dict() if last is not None else None,
        by=by,
        lo=lo,
    )


def message_value(msg: Message, origin: str = "") -> bytes:
    """The value of a message's key: the message and, when a turn's operation
    appended it, that operation (its origin ``<turn>.<n>``)."""
    if origin:
        return encode("m", msg=msg.to_dict(), o=origin)
    return encode("m", msg=msg.to_dict())


def parse_header(raw: bytes | dict[str, Any], rev: int) -> Header:
    h = decode(raw, "th") if isinstance(raw, bytes) else raw
    th = Thread(
        ThreadId(h["id"]),
        str(h["name"]),
        AgentName(h["creator"]),
        [AgentName(p) for p in h["participants"]],
        float(h.get("created_at") or 0.0),
    )
    th.closed = bool(h["closed"])
    th.summary = h.get("summary")
    last = Message.from_dict(h["last"]) if h.get("last") else None
    return Header(
        th, rev, int(h.get("last_seq") or 0), last, str(h.get("by") or ""), str(h.get("lo") or "")
    )


class RunState:
    """The shared state of one run, over the graph's bucket."""

    def __init__(
        self, kv: KeyValue, run_id: str, writer: str = "", asker: Asker | None = None
    ) -> None:
        self.kv = kv
        self.asker = asker  # the connection's, for compare-and-sets of thread headers
        self.run_id = run_id
        # Who writes here: thread headers and counters carry it, so a copy tells this
        # process's own writes from other processes' (by the record, not by a
        # revision).
        self.writer = writer
        # Called with (key after ``<run>.``, value, revision) once a thread header or
        # a counter written here is stored: the run's change notice (NatsRun.notice).
        self.on_write: Callable[[str, bytes, int], None] | None = None
        # The last value and revision seen of each counter: tried first, so a
        # counter this process alone changes costs one round trip, not two.
        self._seen: dict[str, tuple[float, int]] = {}
        self._values: dict[str, tuple[float, int]] = {}  # the newest value known
        # When another process last wrote each thread header (its notice tells): a
        # process that just won a compare-and-set on a thread others write too gets no
        # head start on its next one (else under contention one worker takes nearly
        # every turn); alone on a thread, it keeps it.
        self.foreign: dict[str, float] = {}
        # Per thread, the origins of its messages read so far (find_origin).
        self._origins: dict[str, tuple[int, dict[str, str]]] = {}

    def contended(self, key: str) -> bool:
        """Whether another process wrote ``key`` (``t.<thread>``, ``b.<counter>``) lately."""
        t = self.foreign.get(key)
        return t is not None and time.monotonic() - t < _CONTENDED_S

    def key_subject(self, key: str) -> str:
        """The subject a key of the bucket is stored under (to publish a put
        without waiting for it)."""
        return f"$KV.{self.kv._name}.{key}"

    # -- the run record -----------------------------------------------------

    async def _read(self, key: str, kind: str) -> tuple[dict[str, Any], int] | None:
        """The record of type ``kind`` at ``key`` and its revision; None when missing."""
        try:
            e = await self.kv.get(key)
        except _KeyMissing:
            return None
        assert e.value is not None
        assert e.revision is not None
        return decode(e.value, kind), e.revision

    async def record(self) -> tuple[dict[str, Any], int] | None:
        return await self._read(f"r.{self.run_id}", "run")

    # -- the starting process's heartbeat ----------------------------------------

    async def beat(self, by: str) -> None:
        """The process that started the run is alive (written every second or so;
        see :meth:`beats`)."""
        await self.kv.put(f"{self.run_id}.origin", encode("o", by=by))

    async def beats(self) -> tuple[int, str] | None:
        """The revision of the starting process's last heartbeat and who wrote it;
        None before the first (or from a process that writes none)."""
        got = await self._read(f"{self.run_id}.origin", "o")
        return (got[1], str(got[0].get("by") or "")) if got is not None else None

    async def finish(
        self,
        reason: str,
        *,
        error: str | None = None,
        answer: Message | None = None,
    ) -> bool:
        """Set the run's stop reason if nobody did yet; True if this call set it."""
        while True:
            cur = await self.record()
            if cur is None:
                return False
            rec, rev = cur
            if rec["status"] != "running":
                return False
            rec = dict(rec)
            rec.update(
                status="finished",
                stop_reason=reason,
                error=error,
                answer=answer.to_dict() if answer is not None else None,
                ended_at=time.time(),
            )
            del rec["v"], rec["t"]
            try:
                await self.kv.update(f"r.{self.run_id}", encode("run", **rec), last=rev)
                return True
            except CasFailed:
                continue

    # -- threads and messages -----------------------------------------------

    def _tkey(self, tid: str) -> str:
        return f"{self.run_id}.t.{tid}"

    def message_key(self, tid: str, seq: int) -> str:
        return f"m.{self.run_id}.{tid}.{seq}"

    async def create_thread(self, th: Thread) -> int:
        """Store a new thread (with the messages it holds: none, or the task); its revision."""
        last = th._messages[-1] if th._messages else None
        for m in th._messages[:-1]:  # the last one is in the header
            await self.kv.put(self.message_key(th.id, m.seq), message_value(m))
        rec = header_record(th, last, self.writer)
        rev: int = await self.kv.create(self._tkey(th.id), rec)
        self._wrote(f"t.{th.id}", rec, rev)
        return rev

    def _wrote(self, key: str, value: bytes, rev: int) -> None:
        if self.on_write is not None:
            self.on_write(key, value, rev)

    async def announce(self, key: str) -> None:
        """Announce key ``key`` (after ``<run>.``) as it is stored now, as if written
        here: for a replayed turn, whose first handling may have died between a
        write and its notice."""
        if self.on_write is None:
            return
        with contextlib.suppress(*_KeyMissing):
            e = await self.kv.get(f"{self.run_id}.{key}")
            if e.value is not None and e.revision is not None:
                self._wrote(key, e.value, e.revision)

    async def header(self, tid: str) -> Header:
        try:
            e = await self.kv.get(self._tkey(tid))
        except _KeyMissing:
            raise UnknownThreadError(tid) from None
        assert e.value is not None
        assert e.revision is not None
        return parse_header(e.value, e.revision)

    async def update_header(
        self, th: Thread, rev: int, last: Message | None, origin: str = ""
    ) -> int:
        """Write ``th``'s header (its last message ``last``, made by operation
        ``origin``) if it is still at revision ``rev``; its new revision. Raises
        :data:`CasFailed` when another process changed it meanwhile."""
        rec = header_record(th, last, self.writer, origin)
        if self.asker is None:
            new: int = await self.kv.update(self._tkey(th.id), rec, last=rev)
        else:
            # What KeyValue.update does, through the connection's asker.
            try:
                new = await self.asker.stored(
                    self.key_subject(self._tkey(th.id)),
                    rec,
                    {"Nats-Expected-Last-Subject-Sequence": str(rev)},
                    self.kv._js._timeout,
                )
            except nats.js.errors.APIError as err:
                if err.err_code in (10071, 10164):  # the revision moved on
                    raise CasFailed(description=err.description) from None
                raise
        self._wrote(f"t.{th.id}", rec, new)
        return new

    async def message(self, tid: str, seq: int) -> Message | None:
        rec = await self.message_record(tid, seq)
        return rec[0] if rec is not None else None

    async def message_record(self, tid: str, seq: int) -> tuple[Message, str] | None:
        """Message ``seq`` of the thread and its origin, from its key."""
        try:
            e = await self.kv.get(self.message_key(tid, seq))
        except _KeyMissing:
            return None
        assert e.value is not None
        rec = decode(e.value, "m")
        return Message.from_dict(rec["msg"]), str(rec.get("o") or "")

    async def find_origin(self, tid: str, origin: str) -> str | None:
        """The id of the message of thread ``tid`` that operation ``origin``
        (``<turn>.<n>``) appended, if it did: read from the thread's header and
        message keys (only for a delivery that may have been handled before; what
        was read is kept, so a thread is read once)."""
        h = await self.header(tid)
        if h.last is not None and h.lo == origin:
            return h.last.id
        read, found = self._origins.get(tid, (0, {}))
        todo = range(read + 1, h.last_seq)  # the header holds message last_seq
        if todo:
            recs = await asyncio.gather(*(self.message_record(tid, s) for s in todo))
            for rec in recs:
                if rec is not None and rec[1]:
                    found[rec[1]] = rec[0].id
            self._origins[tid] = (h.last_seq - 1, found)
        return found.get(origin)

    # -- counters -------------------------------------------------------------

    async def counter(self, name: str) -> tuple[float, int]:
        got = await self._read(f"{self.run_id}.b.{name}", "n")
        return (got[0]["n"], got[1]) if got is not None else (0, 0)

    def seen(self, name: str) -> float:
        """The counter's value as last seen here (0 when never seen)."""
        s = self._values.get(name)
        return s[0] if s is not None else 0

    def saw_counter(self, name: str, value: float, revision: int, by: str = "") -> None:
        if by != self.writer or not by:
            self.foreign[f"b.{name}"] = time.monotonic()
        seen = self._values.get(name)
        if seen is None or seen[1] < revision:
            self._seen[name] = self._values[name] = (value, revision)

    async def reserve(self, name: str, amount: float, limit: float | None) -> float | None:
        """Add ``amount`` to counter ``name`` unless that passes ``limit``; the new
        total, or None (nothing added) when it would pass. Compare-and-set: two
        workers never both take the last unit."""
        key = f"{self.run_id}.b.{name}"
        seen = self._seen.get(name)
        while True:
            cached = seen is not None
            value, rev = seen if seen is not None else await self.counter(name)
            seen = None
            new = value + amount
            if limit is not None and new > limit:
                if cached:
                    continue  # the value seen here may be old (a release since): read it
                return None
            value_rec = encode("n", n=new, by=self.writer)
            try:
                if rev == 0:
                    new_rev = await self.kv.create(key, value_rec)
                else:
                    new_rev = await self.kv.update(key, value_rec, last=rev)
                if self._values.get(name, (0, -1))[1] < new_rev:
                    self._values[name] = (new, new_rev)
                # Kept for the next reservation only while no other process changes
                # the counter: the process that just won gets no head start over the
                # others (whose failed attempts it cannot see); under contention it
                # would otherwise take nearly every unit. (A worker alone on the
                # message counter reserves 16 at a time while the budget is far: see
                # NatsCounters.)
                if self.contended(f"b.{name}"):
                    self._seen.pop(name, None)
                else:
                    self._seen[name] = (new, new_rev)
                self._wrote(f"b.{name}", value_rec, new_rev)
                return new
            except CasFailed:
                self.foreign[f"b.{name}"] = time.monotonic()  # another process wrote it
                continue

    # -- busy flags of workers with loop agents --------------------------------

    def busy_key(self, worker_id: str) -> str:
        return f"{self.run_id}.busy.{worker_id}"

    async def busy(self, worker_id: str) -> bool | None:
        """The worker's flag: True busy, False quiet, None not joined yet."""
        try:
            e = await self.kv.get(self.busy_key(worker_id))
        except _KeyMissing:
            return None
        return e.value == b"1"


class ThreadGapError(CoralError):
    """A thread's message is missing from the bucket (it never is, unless the
    bucket was changed by hand or lost data)."""


class Replica:
    """A process's read copy of one run's threads, kept current by the run's change
    notices.

    The copy holds live :class:`Thread` objects (changed in place, as the local
    transport's are). ``revs`` says which header revision a thread reflects, with
    all its messages; a thread that lags has no entry there and is read fresh from
    the bucket before it is changed."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.threads: dict[str, Thread] = {}
        # Per thread: the revision of the newest header applied (participants, state),
        # its message count, and the revision at which the copy is complete (that
        # header and all its messages).
        self.hrevs: dict[str, int] = {}
        self.last_seqs: dict[str, int] = {}
        self.revs: dict[str, int] = {}
        # Per thread: the seq and origin of its last message, as its newest header says.
        self._los: dict[str, tuple[int, str]] = {}
        self._sub: Any = None
        self._prefix = ""
        self.handed_over = False  # whether notices skip nats-py's subscription task
        self.problems: list[str] = []

    async def start(self, nc: Any = None, changes: str | None = None) -> bool:
        """Follow the run: subscribe to its change notices (``changes``, the prefix of
        ``<prefix>.<revision>.<key>``, on connection ``nc``), then read its state as it
        is now (:meth:`snapshot`). Without ``changes`` (a process that hosts no agent:
        it only posts the task and waits) the copy is read from the bucket when needed.
        False when the snapshot failed (see :meth:`snapshot`).

        Each process that writes a thread header or a counter announces the change
        once it is stored (``RunState.on_write``): a plain publish, which the server
        passes on at once, in the same write as the deliveries that follow it. A
        key-value watch would do the same from the bucket's stream, at the cost of a
        push to every process (the writer too) before the writer's own reply."""
        if changes is None:
            return True
        self._prefix = changes + "."
        self._sub = await nc.subscribe(changes + ".>", cb=as_callback(self._noticed))
        self.handed_over = hand_over(self._sub, self._noticed)
        return await self.snapshot()

    async def snapshot(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Read the newest value of each of the run's keys (a process that joins late,
        or one whose connection dropped: notices made meanwhile are lost). Newer
        values noticed meanwhile are kept. False when the bucket did not answer in
        ``timeout`` seconds (the copy is then read from the bucket when needed)."""
        kv = self.state.kv
        done = asyncio.get_running_loop().create_future()

        def got(msg: Msg) -> None:
            self._pushed(msg)
            if stream_pending(msg.reply) == 0 and not done.done():
                done.set_result(None)

        sub = await kv._js.subscribe(
            f"{kv._pre}{self.state.run_id}.>",
            stream=kv._stream,
            cb=as_callback(got),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=60.0,
        )
        hand_over(sub, got)
        try:
            info = await sub.consumer_info()
            sent = info.delivered.consumer_seq if info.delivered is not None else 0
            if not info.num_pending and not sent and not done.done():
                # Nothing stored for the run yet. (Otherwise the last key sent says
                # "none pending", even if its push comes after this reply.)
                done.set_result(None)
            await asyncio.wait_for(done, timeout)
            return True
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
            return False
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def aclose(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _pushed(self, msg: Msg) -> None:
        """A key of the run as stored, from :meth:`snapshot`."""
        st = self.state
        key = msg.subject[len(st.kv._pre) :]
        prefix = st.run_id + "."
        if msg.data and key.startswith(prefix):  # (a deleted key has no value)
            self._apply_value(key[len(prefix) :], msg.data, stream_seq(msg.reply) or 0)

    def _noticed(self, msg: Msg) -> None:
        """A change notice: ``<prefix>.<revision>.<key>``, the key's new value."""
        rev, _, key = msg.subject[len(self._prefix) :].partition(".")
        try:
            revision = int(rev)
        except ValueError:
            self.problems.append(f"{msg.subject}: not a change notice")
            return
        if msg.data:
            self._apply_value(key, msg.data, revision)

    def _apply_value(self, key: str, data: bytes, revision: int) -> None:
        """Key ``key`` of the run (after ``<run>.``) has value ``data`` at ``revision``."""
        st = self.state
        parts = key.split(".")
        try:
            if parts[0] == "t" and len(parts) == 2:
                rec = decode(data, "th")
                if rec.get("by") != st.writer or not st.writer:
                    st.foreign[f"t.{parts[1]}"] = time.monotonic()
                elif self.hrevs.get(parts[1], -1) >= revision:
                    return  # this process's own write, applied already
                self.apply(parse_header(rec, revision))
            elif parts[0] == "b":
                # A counter changed: keep the newest view, so the next reservation's
                # compare-and-set usually holds.
                rec = decode(data, "n")
                st.saw_counter(".".join(parts[1:]), rec["n"], revision, str(rec.get("by") or ""))
        except (WireError, KeyError, TypeError, ValueError) as exc:
            self.problems.append(f"{key}: {exc}")

    def apply(self, h: Header) -> Thread:
        """Bring the thread up to header ``h`` (in place), if ``h`` is newer."""
        new = h.thread
        tid = new.id
        th = self.threads.get(tid)
        if th is None:
            th = self.threads[tid] = new
        if self.hrevs.get(tid, -1) < h.rev:
            if th is not new:
                _copy_header(th, new)
            self.hrevs[tid] = h.rev
            self.last_seqs[tid] = h.last_seq
            self._los[tid] = (h.last_seq, h.lo)
        msgs = th._messages
        if h.last is not None and len(msgs) == h.last.seq - 1:
            msgs.append(h.last)  # messages only grow: an older header's last one is right
        self._check_complete(th)
        return th

    def _check_complete(self, th: Thread) -> None:
        tid = th.id
        if len(th._messages) == self.last_seqs.get(tid, -1):
            self.revs[tid] = self.hrevs[tid]
        else:
            self.revs.pop(tid, None)

    def has(self, tid: str, seq: int) -> bool:
        th = self.threads.get(tid)
        return th is not None and len(th._messages) >= seq

    async def load(self, tid: str) -> Thread:
        """The thread as stored now: its header read fresh, its messages completed
        (the missing ones read from the bucket all at once, not one round trip each)."""
        h = await self.state.header(tid)
        th = self.apply(h)
        if tid in self.revs:
            return th
        msgs = th._messages
        have = len(msgs)
        missing = range(have + 1, h.last_seq)  # the header holds message last_seq
        if missing:
            got = await asyncio.gather(*(self.state.message(tid, s) for s in missing))
            if len(msgs) == have:  # (the watch may have filled the copy meanwhile)
                for s, m in zip(missing, got, strict=True):
                    if m is None:
                        raise ThreadGapError(
                            f"message {s} of thread {tid} is missing from the bucket "
                            f"{self.state.kv._name}"
                        )
                    msgs.append(m)
        if h.last is not None and len(msgs) == h.last_seq - 1:
            msgs.append(h.last)
        self._check_complete(th)
        return th

    async def catch_up(self, tid: str, seq: int) -> None:
        """Make sure the copy holds thread ``tid`` up to ``seq`` (the message of a
        delivery), reading the bucket if it does not. The change notice of a message
        leaves its writer before the message's deliveries and the server passes it
        on before it stores them, so a copy that lacks the message when its delivery
        comes will not be told: it missed the notice (it joined the run late, its
        connection dropped, or the writer's turn is being replayed after a crash)."""
        if not self.has(tid, seq):
            with contextlib.suppress(UnknownThreadError):
                await self.load(tid)

    def last_origin(self, tid: str, seq: int) -> str | None:
        """The origin of message ``seq`` of the thread if the copy knows it (from the
        header that held it last)."""
        lo = self._los.get(tid)
        return lo[1] if lo is not None and lo[0] == seq else None

    def committed(self, th: Thread, work: Thread, rev: int, n0: int, origin: str = "") -> None:
        """This process changed ``th`` (the live copy), whose messages were ``n0``
        before, as ``work`` shows, at revision ``rev`` (its last message made by
        operation ``origin``)."""
        tid = th.id
        if self.hrevs.get(tid, -1) < rev:
            _copy_header(th, work)
            self.hrevs[tid] = rev
            self.last_seqs[tid] = len(work._messages)
            self._los[tid] = (len(work._messages), origin)
        msgs = th._messages
        if len(msgs) == n0:
            msgs.extend(work._messages[n0:])
        if self.state.contended(f"t.{tid}"):
            # Another process writes the thread too: the next change here starts
            # from a fresh read of the header, as theirs do (no head start).
            self.revs.pop(tid, None)
        else:
            self._check_complete(th)


def _copy_header(th: Thread, src: Thread) -> None:
    th._participants[:] = src._participants
    th._pset = set(src._participants)
    th.closed = src.closed
    th.summary = src.summary


class _Tail:
    """The messages of a thread as a change sees them: the ``n`` the thread holds,
    counted but not copied, and those the change appends. The protocol's rules only
    count a thread's messages and append to them, so a change costs the same
    however long the thread is."""

    __slots__ = ("added", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.added: list[Message] = []

    def __len__(self) -> int:
        return self.n + len(self.added)

    def append(self, msg: Message) -> None:
        self.added.append(msg)

    def __getitem__(self, i: slice) -> list[Message]:
        if isinstance(i, slice) and i.start == self.n and i.stop is None and i.step is None:
            return list(self.added)
        raise IndexError("a change sees only the messages it appends")


def scratch(th: Thread, n: int) -> Thread:
    """A copy of ``th``'s header, holding ``n`` messages, for a change to be tried on
    (``work._messages[n:]`` are the messages it appended)."""
    c = Thread(th.id, th.name, th.creator, list(th._participants), th.created_at)
    c.closed = th.closed
    c.summary = th.summary
    c._messages = _Tail(n)  # type: ignore[assignment]
    return c


def read_errors() -> tuple[type[BaseException], ...]:
    """What a read of the bucket raises when the server cannot answer now."""
    return (*nats_errors(), OSError, TimeoutError)
