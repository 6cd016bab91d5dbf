"""Events: every state change of a run, append-only, with a run id and a sequence number.

``seq`` is global inside a run (1, 2, 3 … across all threads and agents), so a run's
events replay in exactly the order they happened. Everything else — the SQLite
store, the viewers, exports, the distributed transport — consumes these values.

Events are slotted dataclasses: cheap to create on the hot path. Treat them as
immutable. :func:`event_to_dict` / :func:`event_from_dict` give the plain-data form
used by stores, exports and the wire (msgpack or JSON).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from coral_graph._model import Message
from coral_graph._types import DeliveryVia, ErrorPolicy, StopReason

__all__ = [
    "EVENT_TYPES",
    "AgentAdded",
    "AgentErrored",
    "AgentLogged",
    "DeliveryHandled",
    "Event",
    "LLMCalled",
    "MessageSent",
    "ParticipantAdded",
    "ParticipantRemoved",
    "RunFinished",
    "RunStarted",
    "ThreadClosed",
    "ThreadCreated",
    "ToolCalled",
    "event_from_dict",
    "event_to_dict",
]


_OMIT_NONE = {"omit_none": True}
"""Field metadata: :func:`event_to_dict` leaves the field out while it is None (an
optional field added later, so older events keep their exact bytes)."""


@dataclass(slots=True)
class _Base:
    run_id: str
    seq: int
    ts: float
    kind: ClassVar[str] = ""


@dataclass(slots=True)
class RunStarted(_Base):
    """A run began. ``graph`` is ``{"name", "description", "agents": [{name, description,
    kind}], "edges": [[a, b], …]}``; ``budgets`` the limits in force."""

    task: str
    entry: list[str]
    answer_by: list[str]
    graph: dict[str, Any]
    budgets: dict[str, Any]
    kind: ClassVar[str] = "run_started"


@dataclass(slots=True)
class RunFinished(_Base):
    """A run ended. ``stop_reason`` is ``answer``, ``idle``, ``budget:<name>``, ``error``
    or ``cancelled``; ``usage`` maps agent names to :meth:`AgentUsage.to_dict`."""

    stop_reason: StopReason
    answer_id: str | None
    answer: str | None
    error: str | None
    usage: dict[str, dict[str, Any]]
    kind: ClassVar[str] = "run_finished"


@dataclass(slots=True)
class AgentAdded(_Base):
    """An agent is part of the run."""

    agent: str
    description: str
    agent_kind: str
    kind: ClassVar[str] = "agent_added"


@dataclass(slots=True)
class ThreadCreated(_Base):
    """A thread was created by ``creator`` with ``participants`` (creator first)."""

    thread_id: str
    name: str
    creator: str
    participants: list[str]
    kind: ClassVar[str] = "thread_created"


@dataclass(slots=True)
class ThreadClosed(_Base):
    """A thread was closed by ``by``; ``summary`` is stored."""

    thread_id: str
    by: str
    summary: str
    kind: ClassVar[str] = "thread_closed"


@dataclass(slots=True)
class ParticipantAdded(_Base):
    """``agent`` joined ``thread_id``, added by ``by``; its read cursor starts at ``cursor``."""

    thread_id: str
    agent: str
    by: str
    cursor: int
    kind: ClassVar[str] = "participant_added"


@dataclass(slots=True)
class ParticipantRemoved(_Base):
    """``agent`` left ``thread_id``, removed by ``by``."""

    thread_id: str
    agent: str
    by: str
    kind: ClassVar[str] = "participant_removed"


@dataclass(slots=True)
class MessageSent(_Base):
    """A message was appended to its thread; one delivery per mention follows."""

    message: Message
    kind: ClassVar[str] = "message_sent"


@dataclass(slots=True)
class DeliveryHandled(_Base):
    """``agent`` consumed the delivery of ``message_id``: by a turn of its handler
    (``via="handle"``, with ``ok`` and ``duration_s``) or through
    ``wait_for_mentions`` (``via="wait"``). ``worker`` is ``host:pid`` of the
    ``coral-graph worker`` process that handled it in a distributed run (None in
    one process); its plain data leaves the key out when it is None, so an
    untagged delivery encodes exactly as before the field existed."""

    agent: str
    message_id: str
    via: DeliveryVia
    ok: bool
    duration_s: float
    worker: str | None = dataclasses.field(default=None, metadata=_OMIT_NONE)
    kind: ClassVar[str] = "delivery_handled"


@dataclass(slots=True)
class AgentErrored(_Base):
    """An agent raised (or its turn timed out). ``action`` is what the policy did:
    ``continue``, ``restart`` or ``stop``."""

    agent: str
    message_id: str | None
    error_type: str
    error: str
    traceback: str
    action: ErrorPolicy
    kind: ClassVar[str] = "agent_errored"


@dataclass(slots=True)
class LLMCalled(_Base):
    """One model call of an agent: tokens, cost in USD, latency and outcome
    (``ok`` or the error's type).

    For inspection (the viewer shows them): ``message_id`` is the message whose
    delivery the agent was handling, ``attempt`` counts retries of one request
    (1 is the first try), ``request`` is the prompt as sent (``{"messages": [...],
    "tools": [names], "temperature": …, "max_tokens": …}``, never the API key) and
    ``response`` what came back (``{"content", "tool_calls", "finish_reason"}``);
    None where the caller did not give them."""

    agent: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    outcome: str
    error: str | None = None
    message_id: str | None = None
    attempt: int = 1
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    kind: ClassVar[str] = "llm_called"


@dataclass(slots=True)
class ToolCalled(_Base):
    """One tool call of an LLM agent: arguments, result (or error) and duration.
    ``message_id`` is the message the call produced, when it posted one."""

    agent: str
    thread_id: str | None
    tool: str
    arguments: dict[str, Any]
    result: str
    ok: bool
    duration_s: float
    message_id: str | None = None
    kind: ClassVar[str] = "tool_called"


@dataclass(slots=True)
class AgentLogged(_Base):
    """A line about an agent that is not a message: what its process printed
    (``source`` ``stdout`` / ``stderr``), or what happened to its MCP connection
    (``source`` ``mcp``: endpoint URLs, connected, disconnected, process exited).
    ``data`` holds the details as plain values."""

    agent: str
    source: str
    text: str
    data: dict[str, Any] | None = None
    kind: ClassVar[str] = "agent_logged"


Event: TypeAlias = (
    RunStarted
    | RunFinished
    | AgentAdded
    | ThreadCreated
    | ThreadClosed
    | ParticipantAdded
    | ParticipantRemoved
    | MessageSent
    | DeliveryHandled
    | AgentErrored
    | LLMCalled
    | ToolCalled
    | AgentLogged
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        RunFinished,
        AgentAdded,
        ThreadCreated,
        ThreadClosed,
        ParticipantAdded,
        ParticipantRemoved,
        MessageSent,
        DeliveryHandled,
        AgentErrored,
        LLMCalled,
        ToolCalled,
        AgentLogged,
    )
}


_FIELDS: dict[type[Any], tuple[tuple[str, bool], ...]] = {}
"""Per event type, its fields in order and whether each is left out while None:
``dataclasses.fields`` once per type, not on every event (the recorder of a
distributed run and every worker convert each event)."""


def _fields_of(cls: type[Any]) -> tuple[tuple[str, bool], ...]:
    out = _FIELDS[cls] = tuple(
        (f.name, bool(f.metadata.get("omit_none"))) for f in dataclasses.fields(cls)
    )
    return out


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain data for ``event``: ``{"kind": …, "run_id": …, "seq": …, "ts": …, …}``."""
    out: dict[str, Any] = {"kind": event.kind}
    for name, omit_none in _FIELDS.get(type(event)) or _fields_of(type(event)):
        value = getattr(event, name)
        if value is None and omit_none:
            continue
        out[name] = value.to_dict() if isinstance(value, Message) else value
    return out


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of :func:`event_to_dict`. Raises ``ValueError`` for an unknown kind."""
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = _FIELDS.get(cls) or _fields_of(cls)
    kwargs = {name: data[name] for name, _ in names if name in data}
    if cls is MessageSent:
        kwargs["message"] = Message.from_dict(kwargs["message"])
    return cls(**kwargs)
