"""Messages, threads and per-agent usage: the values agents see.

:class:`Message` is an immutable named tuple (cheap to create on the hot path);
:class:`Thread` is the runtime's live thread, read-only from outside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
    """Counters and spend of one agent in one run. ``errors`` counts failed turns
    (the agent raised or timed out), ``llm_errors`` model calls that failed (each
    attempt; ``llm_calls`` includes them) and ``tool_errors`` tool calls that
    failed."""

    turns: int = 0
    messages_sent: int = 0
    deliveries: int = 0
    errors: int = 0
    llm_calls: int = 0
    llm_errors: int = 0
    tool_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_latency_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add_llm_call(
        self, prompt_tokens: int, completion_tokens: int, cost_usd: float, latency_s: float
    ) -> None:
        """Count one model call."""
        self.llm_calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += cost_usd
        self.llm_latency_s += latency_s
        self.latencies_s.append(latency_s)

    def add(self, other: AgentUsage) -> None:
        """Add ``other``'s counters to these (the latency samples excepted)."""
        for name in USAGE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the latency samples), ``tokens`` included."""
        out: dict[str, Any] = {name: getattr(self, name) for name in USAGE_FIELDS}
        out["tokens"] = self.tokens
        return out


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AgentUsage) if f.name != "latencies_s")
"""The counters of :class:`AgentUsage`, in order (declared once, there)."""

MAX_METADATA_DEPTH = 32
"""How deep lists and dicts may nest inside message metadata."""

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


def plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` as plain data every store and wire format keeps exactly: str keys;
    values None, bool, int (64-bit), finite float, str, lists (tuples become lists)
    and dicts of the same, nested at most :data:`MAX_METADATA_DEPTH` deep.

    Raises:
        InvalidMetadataError: naming the key of the first value that is not such data.
    """
    if not isinstance(metadata, Mapping):
        from coral_graph._errors import InvalidMetadataError

        raise InvalidMetadataError("", f"metadata is a mapping, not {type(metadata).__name__}")
    return _plain_dict(metadata, "", 0)


def _bad(key: str, reason: str) -> Exception:
    from coral_graph._errors import InvalidMetadataError

    return InvalidMetadataError(key, reason)


def _check_str(s: str, key: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(key, "a string with a lone surrogate is not valid UTF-8") from None
    return s


def _plain_dict(d: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
    if depth >= MAX_METADATA_DEPTH:
        raise _bad(path, f"nested more than {MAX_METADATA_DEPTH} levels deep")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if type(k) is not str:
            raise _bad(f"{path}{k!r}", f"a key must be a string, not {type(k).__name__}")
        key = f"{path}.{k}" if path else k
        out[_check_str(k, key)] = _plain(v, key, depth + 1)
    return out


def _plain(v: Any, key: str, depth: int) -> Any:
    t = type(v)
    if v is None or t is bool:
        return v
    if t is str:
        return _check_str(v, key)
    if t is int:
        if not _INT_MIN <= v <= _INT_MAX:
            raise _bad(key, "an integer beyond 64 bits")
        return v
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise _bad(key, f"{v} is not a finite number")
        return v
    if t is list or t is tuple:
        if depth >= MAX_METADATA_DEPTH:
            raise _bad(key, f"nested more than {MAX_METADATA_DEPTH} levels deep")
        return [_plain(x, f"{key}[{i}]", depth + 1) for i, x in enumerate(v)]
    if isinstance(v, Mapping):
        return _plain_dict(v, key, depth)
    raise _bad(key, f"a {t.__name__} value is not plain data")
