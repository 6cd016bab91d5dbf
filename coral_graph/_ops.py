"""The seven operations' arguments as pydantic models: the one source of their rules.

The LLM tools' JSON schemas are generated from these models (:func:`tool_schemas`)
and every tool call is validated by them (:func:`parse_call`); the MCP tools map
Coral's camelCase names onto the same fields (``threadId`` -> ``thread_id``,
``participantIds`` -> ``participants``, ``timeoutMs`` -> ``timeout_s`` / 1000 …).
A value that breaks a rule is an error naming the field, never silently cut or
clamped. The Python methods of :class:`~coral_graph.AgentContext` enforce the same
rules (with the same limits, from :mod:`coral_graph._types`) on their hot path.

Vocabulary: ``thread_id`` (a thread's id, ``t-3``), ``name`` (an agent's name, or
a new thread's name in ``create_thread``), ``participants``, ``content``,
``mentions``, ``summary``, ``timeout_s`` (seconds). The Python methods take the
thread positionally (a :class:`Thread` or its id) and ``wait_for_mentions(timeout)``
in seconds.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from coral_graph._types import MAX_THREAD_NAME, NAME_PATTERN

__all__ = [
    "MAX_WAIT_S",
    "OPERATIONS",
    "AddParticipant",
    "CloseThread",
    "CreateThread",
    "ListAgents",
    "Operation",
    "RemoveParticipant",
    "SendMessage",
    "ToolArgumentError",
    "WaitForMentions",
    "parse_call",
    "tool_schemas",
]

MAX_WAIT_S = 60.0
"""The longest ``wait_for_mentions`` a tool call may ask for, in seconds."""


class ToolArgumentError(ValueError):
    """The arguments of a tool call break the operation's rules; the message says
    which field and how to fix it (it goes back to the model as the tool result)."""


def _names(value: Any) -> Any:
    # Models often write a lone name where a list is asked, or "@name": both are
    # read as the name(s) they clearly mean, then checked like any other.
    if isinstance(value, str):
        value = [value] if value else []
    if isinstance(value, list):
        return [v.lstrip("@") if isinstance(v, str) else v for v in value]
    return value


def _unique(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        dup = next(v for i, v in enumerate(value) if v in value[:i])
        raise ValueError(f"{dup!r} is listed twice; list each agent once")
    return value


AgentNameArg = Annotated[
    str,
    Field(pattern=NAME_PATTERN.pattern, description="an agent name, as list_agents() returns it"),
]
NameList = Annotated[
    list[AgentNameArg],
    BeforeValidator(_names),
    AfterValidator(_unique),
    Field(json_schema_extra={"uniqueItems": True}),
]
ThreadIdArg = Annotated[
    str, Field(min_length=1, description="a thread id such as 't-1' (shown in your context)")
]


class Operation(BaseModel):
    """The arguments of one operation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str]


class ListAgents(Operation):
    """List the agents you can reach (address, add to threads, mention), with their
    descriptions. 'user' is listed when you may give the final answer."""

    tool: ClassVar[str] = "list_agents"


class CreateThread(Operation):
    """Open a new thread with some agents you can reach; you join it as its creator.
    Returns the thread id. Nobody is woken until you send_message mentioning them."""

    tool: ClassVar[str] = "create_thread"
    name: str = Field(
        min_length=1, max_length=MAX_THREAD_NAME, description="a short topic, e.g. 'research'"
    )
    participants: NameList = Field(
        description="agents to add (you are added automatically)",
        json_schema_extra={"uniqueItems": True},
    )


class AddParticipant(Operation):
    """Add an agent you can reach to a thread you are in. It can read the history."""

    tool: ClassVar[str] = "add_participant"
    thread_id: ThreadIdArg
    name: AgentNameArg


class RemoveParticipant(Operation):
    """Remove an agent (or yourself) from a thread you are in."""

    tool: ClassVar[str] = "remove_participant"
    thread_id: ThreadIdArg
    name: AgentNameArg


class CloseThread(Operation):
    """Close a thread you are in when its work is done. Its messages stay readable;
    the summary is what participants see of it later."""

    tool: ClassVar[str] = "close_thread"
    thread_id: ThreadIdArg
    summary: str = Field(description="the outcome in one or two sentences")


class SendMessage(Operation):
    """Post a message into a thread you are in. Each agent in 'mentions' is woken and
    must be a participant you can reach. Mention 'user' (when you may) to give the
    final answer to the task: that ends the run."""

    tool: ClassVar[str] = "send_message"
    thread_id: str | None = Field(
        default=None,
        min_length=1,
        description="the thread to post in; default: the thread that woke you",
    )
    content: str = Field(min_length=1, description="the message text")
    mentions: NameList = Field(
        description="agents to wake; [] wakes nobody", json_schema_extra={"uniqueItems": True}
    )


class WaitForMentions(Operation):
    """Wait for new messages that mention you (all your threads), up to timeout_s
    seconds. Usually you do not need this: you are woken for each mention."""

    tool: ClassVar[str] = "wait_for_mentions"
    timeout_s: float = Field(
        default=0.0, ge=0, le=MAX_WAIT_S, description="seconds to wait; 0 returns at once"
    )


OPERATIONS: dict[str, type[Operation]] = {
    m.tool: m
    for m in (
        ListAgents,
        CreateThread,
        AddParticipant,
        RemoveParticipant,
        CloseThread,
        SendMessage,
        WaitForMentions,
    )
}
"""The seven operations by tool name, in the protocol's order."""


def _clean(schema: Any) -> Any:
    """A pydantic JSON schema without titles, and ``str | None`` as a plain string."""
    if isinstance(schema, dict):
        if "anyOf" in schema:
            kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(kinds) == 1:
                merged = {**kinds[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
                merged.pop("default", None)
                return _clean(merged)
        return {k: _clean(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def _parameters(model: type[Operation]) -> dict[str, Any]:
    schema = _clean(model.model_json_schema())
    props = schema.get("properties", {})
    for prop in props.values():
        prop.pop("default", None)
    return {
        "type": "object",
        "properties": props,
        "required": [k for k in schema.get("required", []) if k in props],
        "additionalProperties": False,
    }


def tool_schemas() -> tuple[dict[str, Any], ...]:
    """The seven tools in OpenAI's function-calling format, generated from the models."""
    return tuple(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": " ".join((model.__doc__ or "").split()),
                "parameters": _parameters(model),
            },
        }
        for name, model in OPERATIONS.items()
    )


def _explain(tool: str, exc: ValidationError) -> str:
    missing: list[str] = []
    unknown: list[str] = []
    problems: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            missing.append(where)
        elif err["type"] == "extra_forbidden":
            unknown.append(where)
        elif err["type"] == "string_pattern_mismatch":
            problems.append(
                f"'{where}': {err.get('input')!r} is not an agent name (see list_agents)"
            )
        else:
            problems.append(f"'{where}': {err['msg'].removeprefix('Value error, ')}")
    if missing:
        problems.insert(0, f"missing required argument(s) {', '.join(missing)}")
    if unknown:
        allowed = ", ".join(OPERATIONS[tool].model_fields) or "none"
        problems.insert(0, f"unknown argument(s) {', '.join(unknown)}; allowed: {allowed}")
    return f"{tool}: " + "; ".join(problems)


def parse_call(tool: str, raw: str | dict[str, Any] | None) -> Operation:
    """Decode and validate the arguments of a call to ``tool``.

    Raises:
        ToolArgumentError: unknown tool, malformed JSON, or arguments that break a
            rule; the message names the field and tells the model how to fix it.
    """
    model = OPERATIONS.get(tool)
    if model is None:
        raise ToolArgumentError(
            f"there is no tool {tool!r}; the tools are: {', '.join(OPERATIONS)}"
        )
    if isinstance(raw, dict):
        args: Any = raw
    else:
        text = (raw or "").strip() or "{}"
        try:
            args = json.loads(text)
        except json.JSONDecodeError as exc:
            required = [k for k, f in model.model_fields.items() if f.is_required()]
            raise ToolArgumentError(
                f"{tool}: the arguments are not valid JSON ({exc.msg} at character {exc.pos}); "
                "send a JSON object such as " + json.dumps(dict.fromkeys(required, "..."))
            ) from None
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{tool}: the arguments must be a JSON object")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise ToolArgumentError(_explain(tool, exc)) from None
