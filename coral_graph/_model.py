"""Messages, threads and per-agent usage: the values agents see.

:class:`Message` is an immutable named tuple (cheap to create on the hot path);
:class:`Thread` is the runtime's live thread, read-only from outside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from coral_graph._types import AgentName, MessageId, ThreadId

ThreadState = Literal["open", "closed"]


class Message(NamedTuple):
    """One message of a thread. Immutable.

    Attributes:
        id: ``<thread id>#<seq>``, unique inside a run.
        thread_id: the thread it was posted into.
        seq: 1, 2, 3 … inside its thread.
        sender: the agent (or ``user``) that posted it.
        content: the text.
        mentions: the agents it wakes, in the order written, without duplicates.
        timestamp: seconds since the epoch.
        reply_to: the id of the message it answers, if any.
        metadata: model, tokens, cost and latency when an LLM wrote it; free-form.

    >>> m = Message(MessageId("t-1#2"), ThreadId("t-1"), 2, AgentName("planner"), "hi",
    ...             (AgentName("solver"),), 0.0)
    >>> m
    Message(planner@t-1#2 -> @solver: 'hi')
    """

    id: MessageId
    thread_id: ThreadId
    seq: int
    sender: AgentName
    content: str
    mentions: tuple[AgentName, ...]
    timestamp: float
    reply_to: MessageId | None = None
    metadata: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 60 else self.content[:57] + "..."
        to = " ".join("@" + m for m in self.mentions)
        arrow = f" -> {to}" if to else ""
        return f"Message({self.sender}@{self.id}{arrow}: {text!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the message."""
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "seq": self.seq,
            "sender": self.sender,
            "content": self.content,
            "mentions": list(self.mentions),
            "timestamp": self.timestamp,
            "reply_to": self.reply_to,
            "metadata": dict(self.metadata) if self.metadata else {},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict`."""
        meta = data.get("metadata") or None
        return cls(
            MessageId(data["id"]),
            ThreadId(data["thread_id"]),
            int(data["seq"]),
            AgentName(data["sender"]),
            data["content"],
            tuple(AgentName(m) for m in data.get("mentions", ())),
            float(data["timestamp"]),
            data.get("reply_to"),
            dict(meta) if meta else None,
        )


class Thread:
    """A thread of a run: participants, append-only messages, state and summary.

    The runtime mutates it; agents read it through properties that return copies.
    """

    __slots__ = (
        "_messages",
        "_participants",
        "_pset",
        "closed",
        "created_at",
        "creator",
        "id",
        "name",
        "summary",
    )

    def __init__(
        self,
        thread_id: ThreadId,
        name: str,
        creator: AgentName,
        participants: list[AgentName],
        created_at: float,
    ) -> None:
        self.id = thread_id
        self.name = name
        self.creator = creator
        self._participants = participants
        self._pset = set(participants)
        self._messages: list[Message] = []
        self.closed = False
        self.summary: str | None = None
        self.created_at = created_at

    @property
    def participants(self) -> tuple[AgentName, ...]:
        """The participants, in the order they joined."""
        return tuple(self._participants)

    @property
    def messages(self) -> tuple[Message, ...]:
        """Every message, in ``seq`` order."""
        return tuple(self._messages)

    @property
    def state(self) -> ThreadState:
        """``"open"`` or ``"closed"``."""
        return "closed" if self.closed else "open"

    @property
    def last_seq(self) -> int:
        """The seq of the newest message (0 when empty)."""
        return len(self._messages)

    def has_participant(self, name: str) -> bool:
        """Whether ``name`` is a participant."""
        return name in self._pset

    def messages_since(self, seq: int) -> list[Message]:
        """The messages after ``seq``."""
        return self._messages[seq:]

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        who = ",".join(self._participants)
        return f"Thread({self.id} {self.name!r} [{who}] {self.state}, {len(self._messages)} msgs)"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What ``list_agents()`` returns for each reachable agent."""

    name: AgentName
    description: str


@dataclass(slots=True)
class AgentUsage:
    """Counters and spend of one agent in one run."""

    turns: int = 0
    messages_sent: int = 0
    deliveries: int = 0
    errors: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_latency_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the latency samples)."""
        return {
            "turns": self.turns,
            "messages_sent": self.messages_sent,
            "deliveries": self.deliveries,
            "errors": self.errors,
            "llm_calls": self.llm_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "llm_latency_s": self.llm_latency_s,
        }
