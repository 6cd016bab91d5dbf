"""AgentContext: the seven operations of the protocol, with every rule enforced here once.

The operations are ``list_agents``, ``create_thread``, ``add_participant``,
``remove_participant``, ``close_thread``, ``send_message`` and ``wait_for_mentions``.
Each synchronous operation also has a ``*_nowait`` twin. The rules run on the
thread's current state inside the transport's :meth:`ThreadStore.update
<coral_graph.transport.ThreadStore.update>`; the ``*_nowait`` forms complete
synchronously on the in-process transport (the hot path), the async forms work on
every transport. The accounting of model calls, tool calls and log lines is its
base class's (``coral_graph._accounting``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from coral_graph._accounting import _Accounting
from coral_graph._errors import (
    ConcurrentWaitError,
    NotAParticipantError,
    RuntimeClosedError,
    UnknownAgentError,
    UnknownThreadError,
)
from coral_graph._events import (
    ParticipantAdded,
    ParticipantRemoved,
    ThreadClosed,
    ThreadCreated,
)
from coral_graph._model import AgentInfo, AgentUsage, Message, Thread, plain_metadata
from coral_graph._rules import ThreadRef, _tid
from coral_graph._types import USER, AgentName, MessageId, ThreadId

if TYPE_CHECKING:
    import asyncio

    from coral_graph._router import Slot

__all__ = ["AgentContext"]

_USER_INFO = AgentInfo(USER, "the caller of the run; mention it to give the final answer")


def _timeout_cb(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AgentContext(_Accounting):
    """What an agent can do and see in one run.

    Attributes:
        name: this agent's name (``user`` for the caller's own context).
        run_id: the run's id.
    """

    __slots__ = ()

    # -- reading ------------------------------------------------------------

    @property
    def task(self) -> str:
        """The task of the run."""
        return self._run.task

    @property
    def usage(self) -> AgentUsage:
        """This agent's counters and spend in this run."""
        slot = self._slot
        return slot.usage if slot is not None else AgentUsage()

    @property
    def run_usage(self) -> dict[str, AgentUsage]:
        """Usage of every agent that has done something in this run."""
        return self._run.usage_by_agent()

    def can_address(self, name: str) -> bool:
        """Whether an edge lets this agent address ``name``."""
        if name == USER:
            return self._may_answer
        return name in self._succ

    def thread(self, thread: ThreadRef) -> Thread:
        """The thread ``thread`` (read-only). Only participants may read it."""
        tid = _tid(thread)
        th = self._threads.get_nowait(tid)
        if th is None:
            raise UnknownThreadError(tid)
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        return th

    def threads(self, *, include_closed: bool = True) -> list[Thread]:
        """Every thread this agent participates in, oldest first."""
        me = self.name
        return [
            t
            for t in self._threads.all_nowait().values()
            if me in t._pset and (include_closed or not t.closed)
        ]

    # -- the seven operations -----------------------------------------------

    def list_agents_nowait(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        describe = self._run.description
        out = [AgentInfo(AgentName(n), describe(n)) for n in self._succ]
        if self._may_answer:
            out.append(_USER_INFO)
        return out

    async def list_agents(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        return self.list_agents_nowait()

    def _created(self, th: Thread) -> Thread:
        r = self._r
        r.emit(
            ThreadCreated(
                self.run_id, r.next_seq(), th.created_at, th.id, th.name, th.creator,
                list(th._participants),
            )
        )  # fmt: skip
        return th

    def create_thread_nowait(self, name: str, participants: Iterable[str] = ()) -> Thread:
        """Open a thread with ``participants``; this agent is added as its creator.

        Raises:
            InvalidArgumentError: the name is empty or over 200 characters.
            UnknownAgentError: a participant is not an agent of the graph.
            EdgeNotAllowedError: this agent has no edge to a participant.
        """
        name, members = self._thread_args(name, participants)
        return self._created(self._threads.create_nowait(name, self.name, members))

    async def create_thread(self, name: str, participants: Iterable[str] = ()) -> Thread:
        """Open a thread; see :meth:`create_thread_nowait`."""
        name, members = self._thread_args(name, participants)
        return self._created(await self._threads.create(name, self.name, members))

    def _added(self, tid: ThreadId, agent: AgentName | None) -> None:
        if agent is not None:
            r = self._r
            th = self._threads.get_nowait(tid)
            cursor = th.last_seq if th is not None else 0
            r.emit(
                ParticipantAdded(
                    self.run_id, r.next_seq(), time.time(), tid, agent, self.name, cursor
                )
            )

    def add_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        """Add ``name`` to the thread. It can read the history; earlier mentions are
        not unread for it. Adding a participant twice does nothing."""
        self._run.check_active()
        tid = _tid(thread)
        self._added(tid, self._threads.update_nowait(tid, self._add, name))

    async def add_participant(self, thread: ThreadRef, name: str) -> None:
        """Add a participant; see :meth:`add_participant_nowait`."""
        self._run.check_active()
        tid = _tid(thread)
        self._added(tid, await self._threads.update(tid, self._add, name))

    def _removed(self, tid: ThreadId, name: str) -> None:
        r = self._r
        r.emit(ParticipantRemoved(self.run_id, r.next_seq(), time.time(), tid, name, self.name))

    def remove_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        """Remove ``name`` (possibly this agent itself) from the thread. Deliveries
        already queued for it are still delivered: nothing is dropped."""
        self._run.check_active()
        tid = _tid(thread)
        self._threads.update_nowait(tid, self._remove, name)
        self._removed(tid, name)

    async def remove_participant(self, thread: ThreadRef, name: str) -> None:
        """Remove a participant; see :meth:`remove_participant_nowait`."""
        self._run.check_active()
        tid = _tid(thread)
        await self._threads.update(tid, self._remove, name)
        self._removed(tid, name)

    def _closed(self, tid: ThreadId, summary: str) -> None:
        r = self._r
        r.emit(ThreadClosed(self.run_id, r.next_seq(), time.time(), tid, self.name, summary))

    def close_thread_nowait(self, thread: ThreadRef, summary: str = "") -> None:
        """Close the thread: its messages stay, ``summary`` is stored, sends fail."""
        self._run.check_active()
        tid = _tid(thread)
        summary = str(summary)
        self._threads.update_nowait(tid, self._close, summary)
        self._closed(tid, summary)

    async def close_thread(self, thread: ThreadRef, summary: str = "") -> None:
        """Close a thread; see :meth:`close_thread_nowait`."""
        self._run.check_active()
        tid = _tid(thread)
        summary = str(summary)
        await self._threads.update(tid, self._close, summary)
        self._closed(tid, summary)

    def send_message_nowait(
        self,
        thread: ThreadRef,
        content: str,
        mentions: Sequence[str] | str = (),
        *,
        reply_to: MessageId | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Message:
        """Post ``content`` into ``thread``; each mentioned agent gets one delivery.

        The sender must be a participant, the thread open, and every mention a
        participant this agent has an edge to, other than itself. Mentioning
        ``user`` (allowed for answerers) answers the task and ends the run.
        ``metadata`` is plain data (see :func:`~coral_graph._model.plain_metadata`).

        Raises:
            UnknownThreadError, NotAParticipantError, ThreadClosedError,
            ContentTooLargeError, InvalidMentionError, InvalidMetadataError,
            UnknownAgentError, EdgeNotAllowedError, InboxFullError, BudgetExceededError.
        """
        r = self._r
        if r.finished:
            self._run.check_active()
        # The common cases inline (this is the hot path); the helpers do the rest.
        t = type(thread)
        tid: ThreadId = thread.id if t is Thread else thread if t is str else _tid(thread)  # type: ignore[assignment, union-attr]
        if type(content) is not str or len(content) > self._max_chars:
            content = self._content(content)
        ms = mentions if type(mentions) is tuple and len(mentions) < 2 else self._mentions(mentions)
        if metadata is not None:
            metadata = plain_metadata(metadata)
        counts = self._counts
        if counts and not self._reserve("messages", 1, self._max_messages):
            self._over_messages()
        live = self._live
        try:
            if live is not None:
                # An immediate transport's thread is live: the rule applies to it directly.
                th = live(tid)
                if th is None:
                    raise UnknownThreadError(tid)
                msg, targets, answered = self._post(th, content, ms, reply_to, metadata)
            else:
                msg, targets, answered = self._threads.update_nowait(
                    tid, self._post, content, ms, reply_to, metadata
                )
        except BaseException:
            if counts:
                self._run.counters.release_nowait("messages", 1)
            raise
        slot = self._slot
        if slot is not None:
            slot.usage.messages_sent += 1
        if r.sinks or r.rec_q is not None:
            r.sent(msg)
        else:
            # Router.sent without the call: message_sent kept as the message and its seq.
            r.events.append(msg)
            r.sent_seq(r.next_seq())
        if targets:
            self._send(targets, msg)
        if answered:
            self._run.answer(msg)
        return msg

    async def send_message(
        self,
        thread: ThreadRef,
        content: str,
        mentions: Sequence[str] | str = (),
        *,
        reply_to: MessageId | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Message:
        """Post a message; see :meth:`send_message_nowait`."""
        run = self._run
        if run.link.immediate:
            # The in-process transport completes every step at once.
            return self.send_message_nowait(
                thread, content, mentions, reply_to=reply_to, metadata=metadata
            )
        run.check_active()
        tid = _tid(thread)
        content = self._content(content)
        ms = self._mentions(mentions)
        if metadata is not None:
            metadata = plain_metadata(metadata)
        # Shared state changes over the network here: a stop or a turn timeout that
        # cancels the turn does so once the message is reserved, appended, recorded
        # and sent, or before it is reserved, never half-way (the budget it took
        # would be neither spent nor given back in time).
        with anyio.CancelScope(shield=True):
            if self._counts and not await run.counters.reserve("messages", 1, run.max_messages):
                self._over_messages()
            try:
                msg, targets, answered = await self._threads.update(
                    tid,
                    self._post,
                    content,
                    ms,
                    reply_to,
                    metadata,
                )
            except BaseException:
                if self._counts:
                    run.counters.release_nowait("messages", 1)
                raise
            self._sent(msg)
            if targets:
                await run.link.send(targets, msg)
        if answered:
            run.answer(msg)
        return msg

    def _sent(self, msg: Message) -> None:
        slot = self._slot
        if slot is not None:
            slot.usage.messages_sent += 1
        self._r.sent(msg)

    def pending_mentions(self) -> int:
        """How many deliveries wait in this agent's inbox."""
        slot = self._slot
        return len(slot.inbox) if slot is not None else 0

    async def wait_for_mentions(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        idle_after: float = 0.0,
    ) -> list[Message]:
        """All unread mentions of this agent across its threads, oldest first.

        Blocks until at least one arrives or ``timeout`` seconds pass (then returns
        ``[]``). While it waits the agent does not count as busy, so a run whose
        agents all wait with nothing queued ends as ``idle``; with ``idle_after``
        it counts as busy for the first ``idle_after`` seconds of the wait (an agent
        driven over a network may have a call on its way: see ``coral_graph.mcp``).
        """
        slot = self._inbox_slot()
        if not slot.inbox:
            if timeout is not None and timeout <= 0:
                return []
            await self._park(slot, timeout, idle_after)
        if not slot.inbox:
            return []
        self._turn(slot)
        return self._handled(slot, self._r.take_all(slot))

    async def wait_for_mention(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        sender: str | None = None,
        idle_after: float = 0.0,
    ) -> Message | None:
        """The oldest unread mention of this agent (from ``sender``, if given), taken
        alone: the other unread mentions stay queued for later waits.

        Blocks like :meth:`wait_for_mentions`; returns None when ``timeout`` seconds
        pass first. While it waits for ``sender``, the unread mentions of others are
        still work queued for this agent: the run does not end ``idle`` meanwhile.
        """
        slot = self._inbox_slot()
        if sender is not None and sender != USER and not self._run.is_agent(sender):
            raise UnknownAgentError(sender, self._run.specs)
        r = self._r
        deadline = None if timeout is None else r.loop.time() + timeout
        while True:
            for i, m in enumerate(slot.inbox):
                if sender is None or m.sender == sender:
                    self._turn(slot)
                    return self._handled(slot, [r.take_at(slot, i)])[0]
            left = None if deadline is None else deadline - r.loop.time()
            if left is not None and left <= 0:
                return None
            await self._park(slot, left, idle_after)

    def _inbox_slot(self) -> Slot:
        slot = self._slot
        if slot is None:
            raise RuntimeClosedError("the user's context has no inbox")
        self._run.check_active()
        return slot

    async def _park(self, slot: Slot, limit_s: float | None, idle_after: float) -> None:
        """Wait for the next delivery (or ``limit_s`` seconds), not counting as busy
        meanwhile (after ``idle_after`` seconds)."""
        if slot.waiter is not None:
            raise ConcurrentWaitError(self.name)
        r = self._r
        fut = r.park(slot)
        timer = r.loop.call_later(limit_s, _timeout_cb, fut) if limit_s is not None else None
        settle = None
        if idle_after > 0:
            settle = r.loop.call_later(idle_after, r.set_active, slot, False)
        else:
            r.set_active(slot, False)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if settle is not None:
                settle.cancel()
            if slot.waiter is fut:
                slot.waiter = None
            r.set_active(slot, True)

    def _turn(self, slot: Slot) -> None:
        if slot.spec is not None and slot.spec.is_loop:
            # As for a handler's worker: the turn past the budget is not taken and its
            # deliveries stay queued.
            self._run.check_turns(slot)
            slot.usage.turns += 1

    def _handled(self, slot: Slot, msgs: list[Message]) -> list[Message]:
        slot.usage.deliveries += len(msgs)
        now = time.time()
        r = self._r
        link = self._run.link
        for m in msgs:
            r.handled(self.name, m.id, "wait", True, now, now)
            if link.needs_ack:
                link.ack(self.name, m)
        return msgs
