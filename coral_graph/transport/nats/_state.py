"""A run's shared state in the graph's key-value bucket, changed only by
compare-and-set, and each worker's read replica of it.

Keys (inside bucket ``coral_<g>``), for run ``R``:

* ``r.R`` — the run record; its ``status`` goes ``running`` -> ``finished`` once, by
  CAS, so exactly one stop reason wins however many workers stop it at once;
* ``R.t.<thread>`` — a thread's header (name, creator, participants, closed, summary);
* ``R.m.<thread>.<seq>`` — message ``seq`` of the thread, made with ``create``
  (fails if the key exists): the seq is taken by whoever creates the key, so there
  are no gaps and no two messages with one seq;
* ``R.b.<budget>`` — a counter, reserved by CAS before anything is spent;
* ``R.c.<turn>.<n>`` — what the ``n``-th operation of turn ``<turn>`` made, so the
  replay of a turn that a crash interrupted reuses it instead of making it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from coral_graph._errors import UnknownThreadError
from coral_graph._model import Message, Thread
from coral_graph._types import AgentName, ThreadId
from coral_graph.transport.nats._errors import WireError
from coral_graph.transport.nats._wire import decode, encode

__all__ = ["Replica", "RunState"]

_KeyMissing = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)
_CasFailed = nats.js.errors.KeyWrongLastSequenceError


def header_record(th: Thread) -> bytes:
    return encode(
        "th",
        id=th.id,
        name=th.name,
        creator=th.creator,
        participants=list(th._participants),
        closed=th.closed,
        summary=th.summary,
        created_at=th.created_at,
    )


def thread_from_header(h: dict[str, Any]) -> Thread:
    th = Thread(
        ThreadId(h["id"]),
        str(h["name"]),
        AgentName(h["creator"]),
        [AgentName(p) for p in h["participants"]],
        float(h.get("created_at") or 0.0),
    )
    th.closed = bool(h["closed"])
    th.summary = h.get("summary")
    return th


class RunState:
    """The shared state of one run, over the graph's bucket."""

    def __init__(self, kv: KeyValue, run_id: str) -> None:
        self.kv = kv
        self.run_id = run_id
        # The last value and revision seen of each counter: tried first, so a
        # counter this process alone changes costs one round trip, not two.
        self._seen: dict[str, tuple[float, int]] = {}

    # -- the run record -----------------------------------------------------

    async def record(self) -> tuple[dict[str, Any], int] | None:
        try:
            e = await self.kv.get(f"r.{self.run_id}")
        except _KeyMissing:
            return None
        assert e.value is not None
        assert e.revision is not None
        return decode(e.value, "run"), e.revision

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
            except _CasFailed:
                continue

    # -- threads and messages -----------------------------------------------

    async def create_thread(self, th: Thread) -> None:
        await self.kv.create(f"{self.run_id}.t.{th.id}", header_record(th))

    async def header(self, tid: str) -> tuple[Thread, int]:
        try:
            e = await self.kv.get(f"{self.run_id}.t.{tid}")
        except _KeyMissing:
            raise UnknownThreadError(tid) from None
        except nats.js.errors.InvalidKeyError:
            raise UnknownThreadError(tid) from None
        assert e.value is not None
        assert e.revision is not None
        return thread_from_header(decode(e.value, "th")), e.revision

    async def change_thread(self, tid: str, change: Callable[[Thread], bool]) -> Thread:
        """Apply ``change`` to the newest header until the CAS holds. ``change`` checks
        the rules (it may raise) and returns False when there is nothing to write."""
        while True:
            th, rev = await self.header(tid)
            if not change(th):
                return th
            try:
                await self.kv.update(f"{self.run_id}.t.{tid}", header_record(th), last=rev)
                return th
            except _CasFailed:
                continue

    async def append(self, make: Callable[[int], Message], start: int) -> Message:
        """Create the next message key of a thread, trying seqs from ``start`` + 1 up:
        ``make(seq)`` builds the message for a seq."""
        seq = start + 1
        while True:
            msg = make(seq)
            try:
                await self.kv.create(
                    f"{self.run_id}.m.{msg.thread_id}.{seq}", encode("m", msg=msg.to_dict())
                )
                return msg
            except _CasFailed:
                seq += 1

    async def message(self, tid: str, seq: int) -> Message | None:
        try:
            e = await self.kv.get(f"{self.run_id}.m.{tid}.{seq}")
        except _KeyMissing:
            return None
        assert e.value is not None
        return Message.from_dict(decode(e.value, "m")["msg"])

    # -- budgets ------------------------------------------------------------

    async def counter(self, name: str) -> tuple[float, int]:
        try:
            e = await self.kv.get(f"{self.run_id}.b.{name}")
        except _KeyMissing:
            return 0, 0
        assert e.value is not None
        assert e.revision is not None
        return decode(e.value, "n")["n"], e.revision

    def saw_counter(self, name: str, value: float, revision: int) -> None:
        seen = self._seen.get(name)
        if seen is None or seen[1] < revision:
            self._seen[name] = (value, revision)

    async def reserve(self, name: str, amount: float, limit: float | None) -> float | None:
        """Add ``amount`` (>= 0) to counter ``name`` unless that passes ``limit``; the new
        total, or None (nothing added) when it would pass. Compare-and-set: two
        workers never both take the last unit."""
        key = f"{self.run_id}.b.{name}"
        seen = self._seen.get(name)
        while True:
            value, rev = seen if seen is not None else await self.counter(name)
            seen = None
            new = value + amount
            if limit is not None and new > limit:
                # Counters only grow: a value seen earlier over the limit is over it now.
                return None
            try:
                if rev == 0:
                    new_rev = await self.kv.create(key, encode("n", n=new))
                else:
                    new_rev = await self.kv.update(key, encode("n", n=new), last=rev)
                self.saw_counter(name, new, new_rev)
                return new
            except _CasFailed:
                continue

    # -- replays ------------------------------------------------------------

    async def made(self, turn: str, n: int) -> str | None:
        try:
            e = await self.kv.get(f"{self.run_id}.c.{turn}.{n}")
        except _KeyMissing:
            return None
        assert e.value is not None
        return str(decode(e.value, "c")["ref"])

    def key_subject(self, key: str) -> str:
        """The subject a key of the bucket is stored under (to publish a put
        without waiting)."""
        return f"$KV.{self.kv._name}.{key}"


class Replica:
    """A worker's read copy of one run's threads, fed by a watch of the bucket.

    The bucket is one stream, so the watch applies writes in the order they were
    made: once the replica holds message ``seq`` of a thread it holds everything
    written before that message was (the thread's header, earlier messages)."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.threads: dict[str, Thread] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self.problems: list[str] = []

    async def start(self) -> None:
        self._watcher = await self.state.kv.watch(f"{self.state.run_id}.>")
        self._task = asyncio.get_running_loop().create_task(self._feed())

    async def aclose(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _feed(self) -> None:
        prefix = self.state.run_id + "."
        async for entry in self._watcher:
            if entry is None or entry.value is None or not entry.key.startswith(prefix):
                continue
            parts = entry.key[len(prefix) :].split(".")
            try:
                if parts[0] == "t" and len(parts) == 2:
                    self._header(decode(entry.value, "th"))
                elif parts[0] == "m" and len(parts) == 3:
                    self._message(Message.from_dict(decode(entry.value, "m")["msg"]))
                elif parts[0] == "b" and entry.revision is not None:
                    # A counter changed (here or in another worker): keep the newest
                    # view, so the next reservation's compare-and-set usually holds.
                    self.state.saw_counter(
                        ".".join(parts[1:]), decode(entry.value, "n")["n"], entry.revision
                    )
            except (WireError, KeyError, TypeError, ValueError) as exc:
                self.problems.append(f"{entry.key}: {exc}")
            self._changed.set()

    def _header(self, h: dict[str, Any]) -> None:
        new = thread_from_header(h)
        old = self.threads.get(new.id)
        if old is not None:
            new._messages = old._messages
        self.threads[new.id] = new

    def _message(self, msg: Message) -> None:
        th = self.threads.get(msg.thread_id)
        if th is None:
            return  # the header comes first in the stream; a stray key is ignored
        if msg.seq == len(th._messages) + 1:
            th._messages.append(msg)

    def has(self, tid: str, seq: int) -> bool:
        th = self.threads.get(tid)
        return th is not None and len(th._messages) >= seq

    async def catch_up(self, tid: str, seq: int, wait_s: float = 2.0) -> None:
        """Make sure the replica holds thread ``tid`` up to ``seq``: wait for the
        watch, then read what is still missing straight from the bucket (a watch
        that lags after a reconnect must not stall a turn)."""
        deadline = time.monotonic() + wait_s
        while not self.has(tid, seq):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        if self.has(tid, seq):
            return
        th, _ = await self.state.header(tid)
        old = self.threads.get(tid)
        if old is not None:
            th._messages = old._messages
        self.threads[tid] = th
        while len(th._messages) < seq:
            msg = await self.state.message(tid, len(th._messages) + 1)
            if msg is None:
                break
            th._messages.append(msg)

    async def refresh_header(self, tid: str) -> Thread:
        """The thread with its newest header (participants, state) from the bucket."""
        th, _ = await self.state.header(tid)
        old = self.threads.get(tid)
        if old is not None:
            th._messages = old._messages
        self.threads[tid] = th
        return th
