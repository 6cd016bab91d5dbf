"""AgentContext: the seven operations of the protocol, with every rule enforced here once.

The operations are ``list_agents``, ``create_thread``, ``add_participant``,
``remove_participant``, ``close_thread``, ``send_message`` and ``wait_for_mentions``.
Each synchronous operation also has a ``*_nowait`` twin; the async forms exist so
agent code reads the same whether the runtime is local or distributed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from coral_graph._errors import (
    BudgetExceededError,
    ConcurrentWaitError,
    ContentTooLargeError,
    EdgeNotAllowedError,
    InboxFullError,
    InvalidMentionError,
    NotAParticipantError,
    RuntimeClosedError,
    ThreadClosedError,
    UnknownAgentError,
    UnknownThreadError,
)
from coral_graph._events import (
    DeliveryHandled,
    LLMCalled,
    MessageSent,
    ParticipantAdded,
    ParticipantRemoved,
    ThreadClosed,
    ThreadCreated,
    ToolCalled,
)
from coral_graph._model import AgentInfo, AgentUsage, Message, Thread
from coral_graph._types import USER, AgentName, MessageId, RunId, ThreadId

if TYPE_CHECKING:
    from coral_graph._run import _Run, _Slot

__all__ = ["AgentContext"]

ThreadRef = Thread | ThreadId | str

_USER_INFO = AgentInfo(USER, "the caller of the run; mention it to give the final answer")


def _timeout_cb(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AgentContext:
    """What an agent can do and see in one run.

    Attributes:
        name: this agent's name (``user`` for the caller's own context).
        run_id: the run's id.
    """

    __slots__ = ("_may_answer", "_run", "_slot", "_succ", "name", "run_id")

    def __init__(
        self,
        run: _Run,
        slot: _Slot | None,
        name: AgentName,
        succ: Mapping[str, Any],
        may_answer: bool,
    ) -> None:
        self._run = run
        self._slot = slot
        self.name = name
        self.run_id: RunId = run.run_id
        # networkx's live adjacency dict of this node: edges added later are seen.
        self._succ = succ
        self._may_answer = may_answer

    def __repr__(self) -> str:
        return f"AgentContext({self.name!r}, run={self.run_id})"

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
        th = self._thread(thread)
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        return th

    def threads(self, *, include_closed: bool = True) -> list[Thread]:
        """Every thread this agent participates in, oldest first."""
        me = self.name
        return [
            t
            for t in self._run.threads.values()
            if me in t._pset and (include_closed or not t.closed)
        ]

    def _thread(self, thread: ThreadRef) -> Thread:
        tid = thread if isinstance(thread, str) else thread.id
        th = self._run.threads.get(ThreadId(tid))
        if th is None:
            raise UnknownThreadError(tid)
        return th

    def _member(self, thread: ThreadRef) -> Thread:
        """The thread, checked to exist, to be open, and to have this agent in it."""
        th = self._thread(thread)
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        if th.closed:
            raise ThreadClosedError(th.id)
        return th

    def _check_addressable(self, name: str, action: str) -> AgentName:
        if not isinstance(name, str):
            raise InvalidMentionError(repr(name), "an agent name is a string")
        if name == self.name:
            raise InvalidMentionError(name, f"an agent cannot {action} itself")
        if name == USER:
            if not self._may_answer:
                raise EdgeNotAllowedError(self.name, name, action)
        elif name not in self._succ:
            if not self._run.is_agent(name):
                raise UnknownAgentError(name, self._run.agent_names())
            raise EdgeNotAllowedError(self.name, name, action)
        return AgentName(name)

    # -- the seven operations -----------------------------------------------

    def list_agents_nowait(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        out = [AgentInfo(AgentName(n), self._run.description(n)) for n in self._succ]
        if self._may_answer:
            out.append(_USER_INFO)
        return out

    async def list_agents(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        return self.list_agents_nowait()

    def create_thread_nowait(self, name: str, participants: Iterable[str] = ()) -> Thread:
        """Open a thread with ``participants``; this agent is added as its creator.

        Raises:
            UnknownAgentError: a participant is not an agent of the graph.
            EdgeNotAllowedError: this agent has no edge to a participant.
        """
        run = self._run
        run.check_active()
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a thread needs a non-empty name, e.g. 'research'")
        if isinstance(participants, str):
            participants = [participants]
        members: list[AgentName] = [self.name]
        for p in participants:
            if p == self.name or p in members:
                continue
            members.append(self._check_addressable(p, "add"))
        th = run.new_thread(name.strip()[:200], self.name, members)
        run.emit(
            ThreadCreated(
                run.run_id, run.next_seq(), th.created_at, th.id, th.name, self.name, list(members)
            )
        )
        return th

    async def create_thread(self, name: str, participants: Iterable[str] = ()) -> Thread:
        """Open a thread; see :meth:`create_thread_nowait`."""
        return self.create_thread_nowait(name, participants)

    def add_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        """Add ``name`` to the thread. It can read the history; earlier mentions are
        not unread for it. Adding a participant twice does nothing."""
        run = self._run
        run.check_active()
        th = self._member(thread)
        agent = self._check_addressable(name, "add")
        if agent in th._pset:
            return
        th._participants.append(agent)
        th._pset.add(agent)
        run.emit(
            ParticipantAdded(
                run.run_id, run.next_seq(), time.time(), th.id, agent, self.name, th.last_seq
            )
        )

    async def add_participant(self, thread: ThreadRef, name: str) -> None:
        """Add a participant; see :meth:`add_participant_nowait`."""
        self.add_participant_nowait(thread, name)

    def remove_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        """Remove ``name`` (possibly this agent itself) from the thread. Deliveries
        already queued for it are still delivered: nothing is dropped."""
        run = self._run
        run.check_active()
        th = self._member(thread)
        if name not in th._pset:
            raise NotAParticipantError(name, th.id, acting=False)
        th._participants.remove(AgentName(name))
        th._pset.discard(name)
        run.emit(
            ParticipantRemoved(run.run_id, run.next_seq(), time.time(), th.id, name, self.name)
        )

    async def remove_participant(self, thread: ThreadRef, name: str) -> None:
        """Remove a participant; see :meth:`remove_participant_nowait`."""
        self.remove_participant_nowait(thread, name)

    def close_thread_nowait(self, thread: ThreadRef, summary: str = "") -> None:
        """Close the thread: its messages stay, ``summary`` is stored, sends fail."""
        run = self._run
        run.check_active()
        th = self._member(thread)
        th.closed = True
        th.summary = str(summary)
        run.emit(
            ThreadClosed(run.run_id, run.next_seq(), time.time(), th.id, self.name, th.summary)
        )

    async def close_thread(self, thread: ThreadRef, summary: str = "") -> None:
        """Close a thread; see :meth:`close_thread_nowait`."""
        self.close_thread_nowait(thread, summary)

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

        Raises:
            UnknownThreadError, NotAParticipantError, ThreadClosedError,
            ContentTooLargeError, InvalidMentionError, UnknownAgentError,
            EdgeNotAllowedError, InboxFullError, BudgetExceededError.
        """
        run = self._run
        if run.finished:
            run.check_active()
        tid = thread if type(thread) is str else (thread if isinstance(thread, str) else thread.id)
        th = run.threads.get(tid)  # type: ignore[call-overload]
        if th is None:
            raise UnknownThreadError(tid)
        me = self.name
        pset = th._pset
        if me not in pset:
            raise NotAParticipantError(me, tid)
        if th.closed:
            raise ThreadClosedError(tid)
        if type(content) is not str:
            if not isinstance(content, str):
                raise TypeError(f"message content must be a string, not {type(content).__name__}")
        if len(content) > run.max_content_chars:
            raise ContentTooLargeError(len(content), run.max_content_chars)
        if type(mentions) is str:
            mentions = (mentions,)
        ms: tuple[AgentName, ...] = tuple(mentions)  # type: ignore[arg-type]
        targets: list[_Slot] = []
        answered = False
        if ms:
            try:
                hash(ms)  # a list among the mentions (e.g. from a model's JSON) is a typed error
            except TypeError:
                raise InvalidMentionError(
                    repr(mentions), "each mention is an agent name (a string)"
                ) from None
            if len(ms) > 1:
                ms = tuple(dict.fromkeys(ms))
            succ = self._succ
            slots = run.slots
            limit = run.max_inbox
            for m in ms:
                # Fast path: an edge to m (never to oneself: graphs have no self-loops,
                # and "user" is not a node) and m in the thread.
                if m in succ and m in pset:
                    s = slots.get(m)
                    if s is None:
                        s = run.slot(m)
                    inbox = s.inbox
                    if inbox is None:
                        inbox = s.inbox = deque()
                    elif len(inbox) >= limit:
                        raise InboxFullError(m, limit)
                    targets.append(s)
                elif m == USER and m in pset and self._may_answer:
                    answered = True
                else:
                    self._bad_mention(m, th)
        if run.messages_sent >= run.max_messages:
            run.stop_budget("messages", run.max_messages)
            raise BudgetExceededError("messages", run.max_messages)
        seq = len(th._messages) + 1
        ts = time.time()
        msg = Message(
            f"{tid}#{seq}",  # type: ignore[arg-type]  # a MessageId; NewType calls cost on this path
            th.id,
            seq,
            me,
            content,
            ms,
            ts,
            reply_to,  # type: ignore[arg-type]
            metadata,
        )
        th._messages.append(msg)
        run.messages_sent += 1
        slot = self._slot
        if slot is not None:
            slot.usage.messages_sent += 1
        ev = MessageSent(run.run_id, run.next_seq(), ts, msg)
        if run._sinks or run.rec_q is not None:
            run.emit(ev)
        else:
            run.events.append(ev)
        if targets:
            # One delivery per mention, appended in program order: FIFO per
            # (sender, recipient). Sends never block.
            run.pending += len(targets)
            for s in targets:
                s.inbox.append(msg)  # type: ignore[union-attr]
                fut = s.waiter
                if fut is not None:
                    s.waiter = None
                    if not fut.done():
                        fut.set_result(None)
                elif not s.worker:
                    run.wake(s)
        if answered:
            run.answer(msg)
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
        return self.send_message_nowait(
            thread, content, mentions, reply_to=reply_to, metadata=metadata
        )

    def _bad_mention(self, m: object, th: Thread) -> None:
        if not isinstance(m, str):
            raise InvalidMentionError(repr(m), "a mention is an agent name (a string)")
        if m == self.name:
            raise InvalidMentionError(m, "an agent cannot mention itself")
        if m != USER and not self._run.is_agent(m):
            raise UnknownAgentError(m, self._run.agent_names())
        if m not in th._pset:
            raise NotAParticipantError(m, th.id, acting=False)
        raise EdgeNotAllowedError(self.name, m, "mention")

    def pending_mentions(self) -> int:
        """How many deliveries wait in this agent's inbox."""
        slot = self._slot
        return len(slot.inbox) if slot is not None and slot.inbox is not None else 0

    async def wait_for_mentions(self, timeout: float | None = None) -> list[Message]:  # noqa: ASYNC109
        """All unread mentions of this agent across its threads, oldest first.

        Blocks until at least one arrives or ``timeout`` seconds pass (then returns
        ``[]``). While it waits the agent does not count as busy, so a run whose
        agents all wait with nothing queued ends as ``idle``.
        """
        slot = self._slot
        if slot is None:
            raise RuntimeClosedError("the user's context has no inbox")
        run = self._run
        run.check_active()
        inbox = run.ensure_inbox(slot)
        if not inbox:
            if timeout is not None and timeout <= 0:
                return []
            if slot.waiter is not None:
                raise ConcurrentWaitError(self.name)
            loop = run.loop
            fut: asyncio.Future[None] = loop.create_future()
            slot.waiter = fut
            timer = loop.call_later(timeout, _timeout_cb, fut) if timeout is not None else None
            run.set_active(slot, False)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                if slot.waiter is fut:
                    slot.waiter = None
                run.set_active(slot, True)
        return self._drain(slot)

    def _drain(self, slot: _Slot) -> list[Message]:
        run = self._run
        inbox = slot.inbox
        if not inbox:
            return []
        usage = slot.usage
        if slot.spec is not None and slot.spec.is_loop:
            # As for a handler's worker: the turn past the budget is not taken and its
            # deliveries stay queued (checking after the drain lost them and counted
            # max_turns + 1 turns).
            run.check_turns(slot)
            usage.turns += 1
        msgs = list(inbox)
        inbox.clear()
        run.pending -= len(msgs)
        usage.deliveries += len(msgs)
        now = time.time()
        for m in msgs:
            run.emit(
                DeliveryHandled(run.run_id, run.next_seq(), now, self.name, m.id, "wait", True, 0.0)
            )
        return msgs

    # -- accounting for model calls (used by LLMAgent; open to custom agents) --

    def check_llm_budget(self, *, tokens: int = 0, cost_usd: float = 0.0, calls: int = 1) -> None:
        """Raise :class:`BudgetExceededError` (and stop the run) if a model call that
        may use up to ``tokens`` tokens and ``cost_usd`` dollars would exceed a budget.
        Call it *before* the model call."""
        self._run.check_llm_budget(tokens=tokens, cost_usd=cost_usd, calls=calls)

    def record_llm_call(
        self,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        latency_s: float,
        outcome: str = "ok",
        error: str | None = None,
        attempt: int = 1,
        request: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
    ) -> None:
        """Record one model call: an ``llm_called`` event and the usage totals.

        ``attempt``, ``request`` (the prompt as sent) and ``response`` are kept on
        the event for inspection (see :class:`~coral_graph.LLMCalled`)."""
        run = self._run
        slot = self._slot
        current = slot.current if slot is not None else None
        if slot is not None:
            u = slot.usage
            u.llm_calls += 1
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            u.cost_usd += cost_usd
            u.llm_latency_s += latency_s
            u.latencies_s.append(latency_s)
        run.llm_calls += 1
        run.tokens += prompt_tokens + completion_tokens
        run.cost_usd += cost_usd
        run.emit(
            LLMCalled(
                run.run_id,
                run.next_seq(),
                time.time(),
                self.name,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                latency_s,
                outcome,
                error,
                current.id if current is not None else None,
                attempt,
                request,
                response,
            )
        )

    def record_tool_call(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        result: str,
        ok: bool,
        duration_s: float,
        thread_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Record one tool call of a model as a ``tool_called`` event."""
        run = self._run
        run.emit(
            ToolCalled(
                run.run_id,
                run.next_seq(),
                time.time(),
                self.name,
                thread_id,
                tool,
                arguments,
                result,
                ok,
                duration_s,
                message_id,
            )
        )
