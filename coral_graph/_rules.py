"""The protocol's rules, checked once: the base of :class:`~coral_graph.AgentContext`.

Each rule runs on a thread's current state inside the transport's
``ThreadStore.update`` (see ``coral_graph.transport``): raising leaves the thread
untouched; otherwise the rule applies its change to the thread it was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from coral_graph._errors import (
    BudgetExceededError,
    ContentTooLargeError,
    EdgeNotAllowedError,
    InboxFullError,
    InvalidArgumentError,
    InvalidMentionError,
    NotAParticipantError,
    ThreadClosedError,
    UnknownAgentError,
)
from coral_graph._model import Message, Thread
from coral_graph._types import MAX_THREAD_NAME, USER, AgentName, MessageId, RunId, ThreadId

if TYPE_CHECKING:
    from coral_graph._router import Slot
    from coral_graph._run import _Run

ThreadRef = Thread | ThreadId | str

_new_tuple = tuple.__new__
_now = time.time


def _tid(thread: ThreadRef) -> ThreadId:
    if isinstance(thread, str):
        return thread  # type: ignore[return-value]
    if isinstance(thread, Thread):
        return thread.id
    raise InvalidArgumentError("thread_id", f"a thread id is a string, not {type(thread).__name__}")


class _Rules:
    """The state of an agent's context in a run, and the rules its operations obey."""

    __slots__ = (
        "_counts",
        "_live",
        "_max_chars",
        "_max_inbox",
        "_max_messages",
        "_may_answer",
        "_r",
        "_reserve",
        "_run",
        "_send",
        "_slot",
        "_succ",
        "_threads",
        "name",
        "run_id",
    )

    def __init__(
        self,
        run: _Run,
        slot: Slot | None,
        name: AgentName,
        succ: Mapping[str, Any],
        may_answer: bool,
        *,
        counts: bool = True,
    ) -> None:
        self._run = run
        self._r = run.router
        self._threads = run.threads
        self._live = run.threads.get_nowait if run.link.immediate else None
        # The run's limits, read on the hot path.
        self._max_chars = run.max_content_chars
        self._max_inbox = run.max_inbox
        self._max_messages = run.max_messages
        self._send = run.link.send_nowait
        self._reserve = run.counters.reserve_nowait
        self._slot = slot
        self.name = name
        self.run_id: RunId = run.run_id
        # The graph's live successor map of this node: edges added later are seen.
        self._succ = succ
        self._may_answer = may_answer
        self._counts = counts

    def __repr__(self) -> str:
        return f"AgentContext({self.name!r}, run={self.run_id})"

    # -- the rules ------------------------------------------------------------

    def _member(self, th: Thread) -> None:
        """This agent may act in ``th``: a participant, and the thread open."""
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        if th.closed:
            raise ThreadClosedError(th.id)

    def _check_addressable(self, name: object, action: str) -> AgentName:
        if not isinstance(name, str):
            raise InvalidMentionError(repr(name), "an agent name is a string")
        if name == self.name:
            raise InvalidMentionError(name, f"an agent cannot {action} itself")
        if name == USER:
            if not self._may_answer:
                raise EdgeNotAllowedError(self.name, name, action)
        elif name not in self._succ:
            if not self._run.is_agent(name):
                raise UnknownAgentError(name, self._run.specs)
            raise EdgeNotAllowedError(self.name, name, action)
        return AgentName(name)

    def _add(self, th: Thread, name: str) -> AgentName | None:
        self._member(th)
        agent = self._check_addressable(name, "add")
        if agent in th._pset:
            return None
        th._participants.append(agent)
        th._pset.add(agent)
        return agent

    def _remove(self, th: Thread, name: str) -> None:
        self._member(th)
        if name not in th._pset:
            raise NotAParticipantError(name, th.id, acting=False)
        th._participants.remove(AgentName(name))
        th._pset.discard(name)

    def _close(self, th: Thread, summary: str) -> None:
        self._member(th)
        th.closed = True
        th.summary = summary

    def _post(
        self,
        th: Thread,
        content: str,
        ms: tuple[AgentName, ...],
        reply_to: MessageId | str | None,
        metadata: Mapping[str, Any] | None,
    ) -> tuple[Message, list[AgentName], bool]:
        """Check a send against the thread and append it: the message, the agents that
        get a delivery, and whether it answers the task."""
        me = self.name
        pset = th._pset
        if me not in pset:
            raise NotAParticipantError(me, th.id)
        if th.closed:
            raise ThreadClosedError(th.id)
        targets: list[AgentName] = []
        answered = False
        if ms:
            succ = self._succ
            slots = self._r.slots
            limit = self._max_inbox
            for m in ms:
                # Fast path: an edge to m (never to oneself: graphs have no self-loops,
                # and "user" is not a node) and m in the thread.
                if m in succ and m in pset:
                    s = slots.get(m)
                    if s is not None and len(s.inbox) >= limit:
                        raise InboxFullError(m, limit)
                    targets.append(m)
                elif m == USER and m in pset and self._may_answer:
                    answered = True
                else:
                    self._bad_mention(m, th)
        msgs = th._messages
        seq = len(msgs) + 1
        tid = th.id
        # The id is a MessageId; NewType calls cost on this path.
        # tuple.__new__ straight: Message's own __new__ is a Python frame on the hot path.
        msg: Message = _new_tuple(
            Message, (f"{tid}#{seq}", tid, seq, me, content, ms, _now(), reply_to, metadata)
        )
        msgs.append(msg)
        return msg, targets, answered

    def _bad_mention(self, m: object, th: Thread) -> None:
        if not isinstance(m, str):
            raise InvalidMentionError(repr(m), "a mention is an agent name (a string)")
        if m == self.name:
            raise InvalidMentionError(m, "an agent cannot mention itself")
        if m != USER and not self._run.is_agent(m):
            raise UnknownAgentError(m, self._run.specs)
        if m not in th._pset:
            raise NotAParticipantError(m, th.id, acting=False)
        raise EdgeNotAllowedError(self.name, m, "mention")

    def _mentions(self, mentions: Sequence[str] | str) -> tuple[AgentName, ...]:
        if type(mentions) is str:
            return (mentions,)  # type: ignore[return-value]
        ms: tuple[AgentName, ...] = tuple(mentions)  # type: ignore[arg-type]
        if ms:
            try:
                hash(ms)  # a list among the mentions (e.g. from a model's JSON) is a typed error
            except TypeError:
                raise InvalidMentionError(
                    repr(mentions), "each mention is an agent name (a string)"
                ) from None
            if len(ms) > 1:
                ms = tuple(dict.fromkeys(ms))
        return ms

    def _content(self, content: object) -> str:
        if type(content) is not str and not isinstance(content, str):
            raise TypeError(f"message content must be a string, not {type(content).__name__}")
        limit = self._max_chars
        if len(content) > limit:
            raise ContentTooLargeError(len(content), limit)
        return content

    def _over_messages(self) -> NoReturn:
        limit = self._max_messages
        self._run.stop_budget("messages")
        raise BudgetExceededError("messages", limit or 0)

    def _thread_args(
        self, name: object, participants: Iterable[str]
    ) -> tuple[str, list[AgentName]]:
        self._run.check_active()
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError("name", "a thread needs a non-empty name, e.g. 'research'")
        name = name.strip()
        if len(name) > MAX_THREAD_NAME:
            raise InvalidArgumentError(
                "name", f"a thread name has at most {MAX_THREAD_NAME} characters, not {len(name)}"
            )
        if isinstance(participants, str):
            participants = [participants]
        members: list[AgentName] = [self.name]
        for p in participants:
            if p == self.name or p in members:
                continue
            members.append(self._check_addressable(p, "add"))
        return name, members
