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
from coral_graph._ops import (
    MAX_WAIT_S,
    OPERATIONS,
    AddParticipant,
    CloseThread,
    CreateThread,
    Operation,
    RemoveParticipant,
    SendMessage,
    ToolArgumentError,
    WaitForMentions,
    parse_call,
    tool_schemas,
)

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message

__all__ = [
    "TOOL_NAMES",
    "TOOL_SCHEMAS",
    "ToolArgumentError",
    "ToolOutcome",
    "parse_arguments",
    "run_tool",
]

TOOL_SCHEMAS: tuple[dict[str, Any], ...] = tool_schemas()
"""The tools, in OpenAI's function-calling format (generated from ``coral_graph._ops``)."""

TOOL_NAMES: tuple[str, ...] = tuple(OPERATIONS)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool call did: the text the model sees, and what happened."""

    result: str
    ok: bool
    thread_id: str | None = None
    message: Message | None = None


def parse_arguments(tool: str, raw: str) -> dict[str, Any]:
    """Decode and validate the arguments of a call to ``tool`` (see
    :func:`coral_graph._ops.parse_call`); the fields as a dict.

    Raises:
        ToolArgumentError: unknown tool, malformed JSON, or arguments that break a
            rule of the tool's schema; the message tells the model how to fix it.
    """
    return parse_call(tool, raw).model_dump(exclude_unset=True)


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
        op = parse_call(name, raw_arguments)
        args = op.model_dump(exclude_unset=True)
        outcome = await _execute(ctx, op, wake, metadata, max_wait_s)
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
    op: Operation,
    wake: Message,
    metadata: Mapping[str, Any] | None,
    max_wait_s: float,
) -> ToolOutcome:
    if isinstance(op, CreateThread):
        th = await ctx.create_thread(op.name, op.participants)
        return ToolOutcome(_ok(thread_id=th.id, participants=list(th.participants)), True, th.id)
    if isinstance(op, AddParticipant):
        await ctx.add_participant(op.thread_id, op.name)
        return ToolOutcome(_ok(), True, op.thread_id)
    if isinstance(op, RemoveParticipant):
        await ctx.remove_participant(op.thread_id, op.name)
        return ToolOutcome(_ok(), True, op.thread_id)
    if isinstance(op, CloseThread):
        await ctx.close_thread(op.thread_id, op.summary)
        return ToolOutcome(_ok(), True, op.thread_id)
    if isinstance(op, SendMessage):
        tid = op.thread_id or wake.thread_id
        msg = await ctx.send_message(
            tid, op.content, op.mentions, reply_to=wake.id, metadata=metadata
        )
        return ToolOutcome(_ok(message_id=msg.id), True, tid, msg)
    if isinstance(op, WaitForMentions):
        cap = min(max_wait_s, MAX_WAIT_S)
        if op.timeout_s > cap:
            raise ToolArgumentError(
                f"wait_for_mentions: 'timeout_s' is at most {cap:g} seconds here, "
                f"not {op.timeout_s:g}"
            )
        msgs = await ctx.wait_for_mentions(op.timeout_s)
        return ToolOutcome(_ok(messages=[_message_view(m) for m in msgs]), True)
    agents = [{"name": a.name, "description": a.description} for a in await ctx.list_agents()]
    return ToolOutcome(_ok(agents=agents), True)
