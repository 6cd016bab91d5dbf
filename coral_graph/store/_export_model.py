"""The export format as pydantic models: every record of an export file is checked
against them before anything is written (see ``docs/msgpack-format.md``).

Strict types: a string field takes a string (valid Unicode), an integer field an
integer in the signed 64-bit range, a float field a number; a free-form field
(``metadata``, ``arguments``, ``graph``, ``budgets``, ``usage``) takes plain data
only — ``None``, booleans, 64-bit integers, floats, strings, bytes, lists and
maps with string keys, nested at most :data:`MAX_DEPTH` deep; never a msgpack
extension type. Unknown keys are ignored (newer writers may add optional ones).
Imported only by :func:`~coral_graph.store.read_export` (pydantic loads lazily).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from coral_graph.store._plain import INT_MAX, INT_MIN, MAX_DEPTH

__all__ = ["EVENT_ADAPTER", "RECORDS", "Header", "ValidationError", "describe", "plain_value"]

MAX_TEXT = 64 << 20
"""Characters in one string at most (a message's content included)."""


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    return value


def _finite_names(value: Any) -> Any:
    # The JSON Lines export writes non-finite floats as these strings.
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p!r}]" for p in path) or "the value"


def plain_value(value: Any, path: tuple[Any, ...] = ()) -> Any:
    """``value`` itself if it is plain data the store holds; else ``ValueError``
    naming where inside it the problem is."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, path)]
    while stack:
        v, p = stack.pop()
        t = type(v)
        if v is None or t is bool or t is float or t is bytes:
            continue
        if t is str:
            try:
                _utf8(v)
            except ValueError as exc:
                raise ValueError(f"{_where(p)}: {exc}") from None
            continue
        if t is int:
            if not INT_MIN <= v <= INT_MAX:
                raise ValueError(f"{_where(p)}: {v} is outside the signed 64-bit range")
            continue
        if len(p) - len(path) >= MAX_DEPTH:
            raise ValueError(f"{_where(p)}: nested deeper than {MAX_DEPTH} levels")
        if t is list:
            stack.extend((x, (*p, i)) for i, x in enumerate(v))
            continue
        if t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise ValueError(f"{_where(p)}: the key {k!r} is not a string")
                stack.append((x, (*p, k)))
            continue
        name = "a msgpack extension type" if "msgpack" in t.__module__ else f"a {t.__name__}"
        raise ValueError(f"{_where(p)}: {name} is not plain data")
    return value


def _map(value: Any) -> Any:
    if type(value) is not dict:
        raise ValueError("must be a map")
    return plain_value(value)


def _graph(value: Any) -> Any:
    """A run's graph: plain data whose keys the store and the viewer read have
    their type (an export that got them wrong would be written and then break its
    readers)."""
    _map(value)
    for key in ("name", "description", "path"):
        if value.get(key) is not None and type(value[key]) is not str:
            raise ValueError(f"[{key!r}] must be a string")
    edges = value.get("edges", [])
    if type(edges) is not list or not all(
        type(e) is list and len(e) == 2 and type(e[0]) is str and type(e[1]) is str for e in edges
    ):
        raise ValueError("['edges'] must be a list of [from, to] pairs of agent names")
    agents = value.get("agents", [])
    if type(agents) is not list or not all(
        type(a) is dict
        and type(a.get("name")) is str
        and all(a.get(k) is None or type(a[k]) is str for k in ("description", "kind"))
        for a in agents
    ):
        raise ValueError(
            "['agents'] must be a list of maps with a string 'name' "
            "(and string 'description' and 'kind')"
        )
    return value


Str = Annotated[str, Field(strict=True, max_length=MAX_TEXT), AfterValidator(_utf8)]
Int = Annotated[int, Field(strict=True, ge=INT_MIN, le=INT_MAX)]
Seq = Annotated[int, Field(strict=True, ge=1, le=INT_MAX)]
Float = Annotated[float, BeforeValidator(_finite_names), Field(strict=True)]
Plain = Annotated[Any, AfterValidator(plain_value)]
Map = Annotated[Any, AfterValidator(_map)]
GraphMap = Annotated[Any, AfterValidator(_graph)]
Names = Annotated[list[Str], Field(strict=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Header(_Model):
    """The first record of an export."""

    format: Literal["coral-graph-export"]
    version: Annotated[int, Field(strict=True, ge=1)]
    encoding: Str | None = None
    run_id: Annotated[str, Field(strict=True, min_length=1, max_length=200)]
    events: Annotated[int, Field(strict=True, ge=0, le=INT_MAX)]
    graph_path: Str | None = None


class _Event(_Model):
    run_id: Str
    seq: Seq
    ts: Float


class RunStartedRec(_Event):
    kind: Literal["run_started"]
    task: Str
    entry: Names
    answer_by: Names
    graph: GraphMap
    budgets: Map


class RunFinishedRec(_Event):
    kind: Literal["run_finished"]
    stop_reason: Str
    answer_id: Str | None
    answer: Str | None
    error: Str | None
    usage: Map


class AgentAddedRec(_Event):
    kind: Literal["agent_added"]
    agent: Str
    description: Str
    agent_kind: Str


class ThreadCreatedRec(_Event):
    kind: Literal["thread_created"]
    thread_id: Str
    name: Str
    creator: Str
    participants: Names


class ThreadClosedRec(_Event):
    kind: Literal["thread_closed"]
    thread_id: Str
    by: Str
    summary: Str


class ParticipantAddedRec(_Event):
    kind: Literal["participant_added"]
    thread_id: Str
    agent: Str
    by: Str
    cursor: Int


class ParticipantRemovedRec(_Event):
    kind: Literal["participant_removed"]
    thread_id: Str
    agent: Str
    by: Str


class MessageRec(_Model):
    id: Str
    thread_id: Str
    seq: Seq
    sender: Str
    content: Str
    mentions: Names
    timestamp: Float
    reply_to: Str | None
    metadata: Map


class MessageSentRec(_Event):
    kind: Literal["message_sent"]
    message: MessageRec


class DeliveryHandledRec(_Event):
    kind: Literal["delivery_handled"]
    agent: Str
    message_id: Str
    via: Str
    ok: bool
    duration_s: Float
    worker: Str | None = None  # host:pid of a worker process; absent in one process


class AgentErroredRec(_Event):
    kind: Literal["agent_errored"]
    agent: Str
    message_id: Str | None
    error_type: Str
    error: Str
    traceback: Str
    action: Str


class LLMCalledRec(_Event):
    kind: Literal["llm_called"]
    agent: Str
    model: Str
    prompt_tokens: Int
    completion_tokens: Int
    cost_usd: Float
    latency_s: Float
    outcome: Str
    error: Str | None = None
    message_id: Str | None = None
    attempt: Int = 1
    request: Plain = None
    response: Plain = None


class ToolCalledRec(_Event):
    kind: Literal["tool_called"]
    agent: Str
    thread_id: Str | None
    tool: Str
    arguments: Map
    result: Str
    ok: bool
    duration_s: Float
    message_id: Str | None = None


class AgentLoggedRec(_Event):
    kind: Literal["agent_logged"]
    agent: Str
    source: Str
    text: Str
    data: Plain = None


EventRec = Annotated[
    RunStartedRec
    | RunFinishedRec
    | AgentAddedRec
    | ThreadCreatedRec
    | ThreadClosedRec
    | ParticipantAddedRec
    | ParticipantRemovedRec
    | MessageSentRec
    | DeliveryHandledRec
    | AgentErroredRec
    | LLMCalledRec
    | ToolCalledRec
    | AgentLoggedRec,
    Field(discriminator="kind"),
]
RECORDS: dict[str, type[_Event]] = {
    m.model_fields["kind"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (RunStartedRec, RunFinishedRec, AgentAddedRec, ThreadCreatedRec, ThreadClosedRec,
              ParticipantAddedRec, ParticipantRemovedRec, MessageSentRec, DeliveryHandledRec,
              AgentErroredRec, LLMCalledRec, ToolCalledRec, AgentLoggedRec)
}  # fmt: skip
"""kind -> the model of its record."""
_KINDS = frozenset(RECORDS)
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(EventRec)
"""Validates one event record (a dict) into its model."""


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: each field's path and what is wrong with it."""
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ())]
        # The union's tag (the kind) is part of the location: drop it.
        if loc and loc[0] in _KINDS:
            loc = loc[1:]
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{'.'.join(loc) or 'the record'}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
