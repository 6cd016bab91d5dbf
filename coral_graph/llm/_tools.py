"""The seven operations as function-calling tools, and their execution.

Every mistake of the model (bad JSON, a missing argument, an agent it cannot reach,
a closed thread ...) comes back as the tool's result, so the model can correct
itself on its next step. Only budget stops and the end of the run propagate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coral_graph._errors import ProtocolError, RuntimeClosedError
from coral_graph._types import NAME_PATTERN

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message

__all__ = ["TOOL_NAMES", "TOOL_SCHEMAS", "ToolOutcome", "parse_arguments", "run_tool"]

_NAME = {
    "type": "string",
    "pattern": NAME_PATTERN.pattern,
    "description": "an agent name, as list_agents() returns it",
}
_THREAD = {
    "type": "string",
    "description": "a thread id such as 't-1' (shown in your context)",
}


def _fn(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    _fn(
        "list_agents",
        "List the agents you can reach (address, add to threads, mention), with their "
        "descriptions. 'user' is listed when you may give the final answer.",
        {},
        [],
    ),
    _fn(
        "create_thread",
        "Open a new thread with some agents you can reach; you join it as its creator. "
        "Returns the thread id. Nobody is woken until you send_message mentioning them.",
        {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "a short topic, e.g. 'research'",
            },
            "participants": {
                "type": "array",
                "items": _NAME,
                "uniqueItems": True,
                "description": "agents to add (you are added automatically)",
            },
        },
        ["name", "participants"],
    ),
    _fn(
        "add_participant",
        "Add an agent you can reach to a thread you are in. It can read the history.",
        {"thread_id": _THREAD, "name": _NAME},
        ["thread_id", "name"],
    ),
    _fn(
        "remove_participant",
        "Remove an agent (or yourself) from a thread you are in.",
        {"thread_id": _THREAD, "name": _NAME},
        ["thread_id", "name"],
    ),
    _fn(
        "close_thread",
        "Close a thread you are in when its work is done. Its messages stay readable; "
        "the summary is what participants see of it later.",
        {
            "thread_id": _THREAD,
            "summary": {"type": "string", "description": "the outcome in one or two sentences"},
        },
        ["thread_id", "summary"],
    ),
    _fn(
        "send_message",
        "Post a message into a thread you are in. Each agent in 'mentions' is woken and "
        "must be a participant you can reach. Mention 'user' (when you may) to give the "
        "final answer to the task: that ends the run.",
        {
            "thread_id": {
                **_THREAD,
                "description": "the thread to post in; default: the thread that woke you",
            },
            "content": {"type": "string", "minLength": 1, "description": "the message text"},
            "mentions": {
                "type": "array",
                "items": _NAME,
                "uniqueItems": True,
                "description": "agents to wake; [] wakes nobody",
            },
        },
        ["content", "mentions"],
    ),
    _fn(
        "wait_for_mentions",
        "Wait for new messages that mention you (all your threads), up to timeout_s "
        "seconds. Usually you do not need this: you are woken for each mention.",
        {
            "timeout_s": {
                "type": "number",
                "minimum": 0,
                "maximum": 60,
                "description": "seconds to wait; 0 returns at once",
            }
        },
        [],
    ),
)
"""The tools, in OpenAI's function-calling format."""

TOOL_NAMES: tuple[str, ...] = tuple(t["function"]["name"] for t in TOOL_SCHEMAS)
_SPECS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOL_SCHEMAS}


class ToolArgumentError(ValueError):
    """The model's arguments do not match the tool's schema."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call did: the text the model sees, and what happened."""

    result: str
    ok: bool
    thread_id: str | None = None
    message: Message | None = None


def _check_type(tool: str, key: str, value: Any, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "string":
        if not isinstance(value, str):
            raise ToolArgumentError(f"{tool}: '{key}' must be a string, not {json.dumps(value)}")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolArgumentError(f"{tool}: '{key}' must be a number")
        return float(value)
    if kind == "array":
        if isinstance(value, str):  # a lone name where a list was asked: accept it
            value = [value] if value else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ToolArgumentError(f"{tool}: '{key}' must be a list of agent names")
        return [v.lstrip("@") for v in value]
    return value


def parse_arguments(tool: str, raw: str) -> dict[str, Any]:
    """Decode and check the arguments of a call to ``tool``.

    Raises:
        ToolArgumentError: unknown tool, malformed JSON, or arguments that do not
            match the schema; the message tells the model how to fix it.
    """
    spec = _SPECS.get(tool)
    if spec is None:
        raise ToolArgumentError(
            f"there is no tool {tool!r}; the tools are: {', '.join(TOOL_NAMES)}"
        )
    text = (raw or "").strip() or "{}"
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(
            f"{tool}: the arguments are not valid JSON ({exc.msg} at character {exc.pos}); "
            "send a JSON object such as " + json.dumps({k: "..." for k in spec["required"]})
        ) from None
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{tool}: the arguments must be a JSON object")
    props: dict[str, Any] = spec["properties"]
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise ToolArgumentError(
            f"{tool}: unknown argument(s) {', '.join(unknown)}; allowed: "
            + (", ".join(props) or "none")
        )
    missing = [k for k in spec["required"] if k not in args]
    if missing:
        raise ToolArgumentError(f"{tool}: missing required argument(s) {', '.join(missing)}")
    return {k: _check_type(tool, k, v, props[k]) for k, v in args.items()}


def _ok(**data: Any) -> str:
    return json.dumps({"ok": True, **data}, ensure_ascii=False)


def _error(kind: str, message: str) -> str:
    return json.dumps({"ok": False, "error": kind, "message": message}, ensure_ascii=False)


def _message_view(m: Message) -> dict[str, Any]:
    return {
        "thread_id": m.thread_id,
        "seq": m.seq,
        "sender": m.sender,
        "mentions": list(m.mentions),
        "content": m.content,
    }


async def run_tool(
    ctx: AgentContext,
    name: str,
    raw_arguments: str,
    *,
    wake: Message,
    metadata: Mapping[str, Any] | None = None,
    max_wait_s: float = 60.0,
) -> ToolOutcome:
    """Execute one tool call of the model and record it as a ``tool_called`` event.

    Protocol errors and bad arguments become an error result; budget stops and the
    end of the run propagate (the turn is over).
    """
    t0 = time.perf_counter()
    args: dict[str, Any] = {}
    outcome: ToolOutcome
    try:
        args = parse_arguments(name, raw_arguments)
        outcome = await _execute(ctx, name, args, wake, metadata, max_wait_s)
    except RuntimeClosedError:
        raise
    except (ProtocolError, ToolArgumentError, ValueError, TypeError) as exc:
        outcome = ToolOutcome(
            _error(type(exc).__name__, str(exc)),
            False,
            args.get("thread_id") if isinstance(args, dict) else None,
        )
    msg = outcome.message
    recorded = args if args else {"raw": raw_arguments}
    ctx.record_tool_call(
        tool=name,
        arguments=recorded,
        result=outcome.result,
        ok=outcome.ok,
        duration_s=time.perf_counter() - t0,
        thread_id=outcome.thread_id,
        message_id=msg.id if msg is not None else None,
    )
    return outcome


async def _execute(
    ctx: AgentContext,
    name: str,
    args: dict[str, Any],
    wake: Message,
    metadata: Mapping[str, Any] | None,
    max_wait_s: float,
) -> ToolOutcome:
    if name == "list_agents":
        agents = [{"name": a.name, "description": a.description} for a in await ctx.list_agents()]
        return ToolOutcome(_ok(agents=agents), True)
    if name == "create_thread":
        th = await ctx.create_thread(args["name"], args["participants"])
        return ToolOutcome(_ok(thread_id=th.id, participants=list(th.participants)), True, th.id)
    if name == "add_participant":
        await ctx.add_participant(args["thread_id"], args["name"])
        return ToolOutcome(_ok(), True, args["thread_id"])
    if name == "remove_participant":
        await ctx.remove_participant(args["thread_id"], args["name"])
        return ToolOutcome(_ok(), True, args["thread_id"])
    if name == "close_thread":
        await ctx.close_thread(args["thread_id"], args["summary"])
        return ToolOutcome(_ok(), True, args["thread_id"])
    if name == "send_message":
        tid = args.get("thread_id") or wake.thread_id
        msg = await ctx.send_message(
            tid, args["content"], args["mentions"], reply_to=wake.id, metadata=metadata
        )
        return ToolOutcome(_ok(message_id=msg.id), True, tid, msg)
    if name == "wait_for_mentions":
        timeout = min(max(0.0, float(args.get("timeout_s", 0.0))), max_wait_s)
        msgs = await ctx.wait_for_mentions(timeout)
        return ToolOutcome(_ok(messages=[_message_view(m) for m in msgs]), True)
    raise ToolArgumentError(f"there is no tool {name!r}")  # pragma: no cover - parse checks
