"""Coral's seven tools over an :class:`~coral_graph.AgentContext`: names, argument
schemas, argument checks and results. No MCP import here: the server wraps these.

Names and arguments are exactly Coral v0's (``list_agents(includeDetails)``,
``create_thread(threadName, participantIds)`` …), the ``coral_``-prefixed aliases
of Coral v1.0, which take the same arguments (and Coral 1.1+'s ``participantNames``
/ ``participantName``), and Coral 1.2's single-message waits
(``coral_wait_for_mention``, ``coral_wait_for_message``, ``coral_wait_for_agent``;
see ``docs/mcp.md`` for how they map). The rules behind them are
coral-graph's (edges enforced, typed errors): a violation is a :class:`ToolError`
carrying the same message the Python API gives.

Results are JSON objects (the server sends them as JSON text and as
``structuredContent``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from coral_graph._errors import CoralError, RuntimeClosedError

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message, Thread

__all__ = [
    "MAX_WAIT_MS",
    "TOOL_NAMES",
    "ToolError",
    "call_tool",
    "instruction_text",
    "message_view",
    "state_view",
    "thread_view",
    "tool_specs",
]

MAX_WAIT_MS = 60_000
"""The longest ``wait_for_mentions(timeoutMs)`` (Coral's cap is the same)."""

_STR = {"type": "string"}
_NAMES = {"type": "array", "items": {"type": "string"}}

# name -> (description, properties, required)
_SPECS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "list_agents": (
        "List the agents you can reach (address, add to threads, mention), with their "
        "descriptions. 'user' is listed when you may give the final answer.",
        {
            "includeDetails": {
                "type": "boolean",
                "description": "Whether to include agent descriptions in the response",
            }
        },
        ["includeDetails"],
    ),
    "create_thread": (
        "Create a new thread with a list of participants (you are added as its creator). "
        "Every participant must be an agent you can reach.",
        {
            "threadName": {**_STR, "description": "Name of the thread"},
            "participantIds": {**_NAMES, "description": "Agent names to include as participants"},
        },
        ["threadName", "participantIds"],
    ),
    "add_participant": (
        "Add a participant you can reach to a thread you are in; it can read the history.",
        {
            "threadId": {**_STR, "description": "ID of the thread"},
            "participantId": {**_STR, "description": "Name of the agent to add"},
        },
        ["threadId", "participantId"],
    ),
    "remove_participant": (
        "Remove a participant (or yourself) from a thread you are in.",
        {
            "threadId": {**_STR, "description": "ID of the thread"},
            "participantId": {**_STR, "description": "Name of the agent to remove"},
        },
        ["threadId", "participantId"],
    ),
    "close_thread": (
        "Close a thread you are in, with a summary; its messages stay, later sends fail.",
        {
            "threadId": {**_STR, "description": "ID of the thread to close"},
            "summary": {**_STR, "description": "Summary of the thread"},
        },
        ["threadId", "summary"],
    ),
    "send_message": (
        "Send a message to a thread you are in. You *must* mention an agent for it to be "
        "made aware of the message; each mention must be a participant you can reach. "
        "Mention 'user' (when you may) to give the final answer: that ends the run.",
        {
            "threadId": {**_STR, "description": "ID of the thread"},
            "content": {**_STR, "description": "Content of the message"},
            "mentions": {**_NAMES, "description": "Agent names to mention (and wake)"},
        },
        ["threadId", "content", "mentions"],
    ),
    "wait_for_mentions": (
        "Wait until mentioned. Call this tool when you're done or want to wait for another "
        "agent to respond. Blocks until a message arrives or the timeout ends; you see all "
        "unread messages that mention you.",
        {
            "timeoutMs": {
                "type": "number",
                "description": f"Timeout in milliseconds, 0 to {MAX_WAIT_MS}",
            }
        },
        ["timeoutMs"],
    ),
    # Coral 1.1/1.2's single-message waits (only with the coral_ prefix).
    "wait_for_mention": (
        "Wait for one message that mentions you, from any agent in any thread, and return "
        "it (the others stay unread for later waits). Returns no message when maxWaitMs "
        "passes first.",
        {},
        [],
    ),
    "wait_for_message": (
        "Wait for one message to you and return it. In coral-graph a message reaches you "
        "when it mentions you, so this is coral_wait_for_mention; read coral://state for "
        "the rest of your threads.",
        {},
        [],
    ),
    "wait_for_agent": (
        "Wait for one message from a specific agent that mentions you, in any thread, and "
        "return it (the others stay unread for later waits).",
        {"agentName": {**_STR, "description": "Name of the agent to wait for"}},
        ["agentName"],
    ),
}
_SINGLE_WAIT_PROPS: dict[str, Any] = {
    "currentUnixTime": {
        "type": "number",
        "description": "Accepted for Coral compatibility and not needed: unread mentions "
        "stay unread until a wait takes them",
    },
    "maxWaitMs": {
        "type": "number",
        "description": f"Longest wait in milliseconds (default and cap {MAX_WAIT_MS})",
    },
}
for _base in ("wait_for_mention", "wait_for_message", "wait_for_agent"):
    _SPECS[_base][1].update(_SINGLE_WAIT_PROPS)
_SINGLE_WAITS = frozenset({"wait_for_mention", "wait_for_message", "wait_for_agent"})

# Coral 1.1 renamed two arguments of the thread tools; each tool takes either
# spelling (the coral_ tools show the new one, the v0 tools the old one).
_RENAMED = {"participantIds": "participantNames", "participantId": "participantName"}

# Required in Coral's schemas, but Coral's own input models default them: accepted
# when left out, as Coral does.
_DEFAULTED = frozenset({"includeDetails", "mentions"})

_V0 = tuple(n for n in _SPECS if n not in _SINGLE_WAITS)
TOOL_NAMES: tuple[str, ...] = (
    *_V0,
    *(f"coral_{n}" for n in _V0),
    *(f"coral_{n}" for n in _SPECS if n in _SINGLE_WAITS),
)
"""Coral v0's seven names, their ``coral_`` aliases of v1.0, then Coral 1.2's
single-message waits."""
WAIT_TOOLS = frozenset(n for n in TOOL_NAMES if n.removeprefix("coral_").startswith("wait_for_"))
"""The tools that block until a mention arrives (the agent counts as idle meanwhile)."""


class ToolError(Exception):
    """A tool call that did not happen: bad arguments or a rule of the protocol.

    Attributes:
        error: the error's type name (e.g. ``EdgeNotAllowedError``).
        message: what went wrong and what to do (the Python API's message).
    """

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, "message": self.message}


def tool_specs() -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, description, JSON input schema)`` for every tool, aliases included."""
    out = []
    for name in TOOL_NAMES:
        desc, props, required = _SPECS[name.removeprefix("coral_")]
        if name.startswith("coral_"):
            props = {_RENAMED.get(k, k): v for k, v in props.items()}
            required = [_RENAMED.get(k, k) for k in required]
        schema = {"type": "object", "properties": props, "required": required}
        out.append((name, desc, schema))
    return out


def _bad(tool: str, text: str) -> ToolError:
    return ToolError("InvalidArgumentsError", f"{tool}: {text}")


def _check(tool: str, base: str, args: Mapping[str, Any]) -> dict[str, Any]:
    _desc, props, required = _SPECS[base]
    for old, new in _RENAMED.items():
        if old in props and new in args:
            if old in args:
                raise _bad(tool, f"give {new!r} or {old!r} (its Coral v0 name), not both")
            args = {old if k == new else k: v for k, v in args.items()}
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise _bad(
            tool,
            f"unknown argument(s) {', '.join(unknown)}; the arguments are "
            + (", ".join(props) or "none"),
        )
    out: dict[str, Any] = {}
    for key, spec in props.items():
        if key not in args:
            if key in required and key not in _DEFAULTED:
                raise _bad(tool, f"missing required argument {key!r}")
            continue
        value = args[key]
        kind = spec["type"]
        if kind == "string" and not isinstance(value, str):
            raise _bad(tool, f"{key!r} must be a string, not {type(value).__name__}")
        if kind == "boolean" and not isinstance(value, bool):
            raise _bad(tool, f"{key!r} must be true or false, not {type(value).__name__}")
        if kind == "number" and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _bad(tool, f"{key!r} must be a number of milliseconds")
        if kind == "array" and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise _bad(tool, f"{key!r} must be a list of agent names (strings)")
        out[key] = value
    return out


def message_view(m: Message) -> dict[str, Any]:
    """A message as the tools return it."""
    return {
        "id": m.id,
        "threadId": m.thread_id,
        "seq": m.seq,
        "senderId": m.sender,
        "content": m.content,
        "mentions": list(m.mentions),
        "timestamp": m.timestamp,
    }


def thread_view(th: Thread, *, messages: bool = False) -> dict[str, Any]:
    """A thread as the tools and the state resource return it."""
    out: dict[str, Any] = {
        "id": th.id,
        "name": th.name,
        "creatorId": th.creator,
        "participants": list(th.participants),
        "state": th.state,
        "summary": th.summary or None,
    }
    if messages:
        out["messages"] = [message_view(m) for m in th.messages]
    return out


def state_view(ctx: AgentContext) -> dict[str, Any]:
    """What ``coral://state`` shows: this agent, whom it can reach, its threads and
    their messages."""
    return {
        "agentId": ctx.name,
        "sessionId": ctx.run_id,
        "task": ctx.task,
        "agents": [
            {"agentId": a.name, "description": a.description} for a in ctx.list_agents_nowait()
        ],
        "threads": [thread_view(t, messages=True) for t in ctx.threads()],
    }


def instruction_text(ctx: AgentContext) -> str:
    """What ``coral://instruction`` shows (markdown, as Coral 1.2's): who the agent
    is, how threads, mentions and waits work, and the agents it can reach."""
    agents = ctx.list_agents_nowait()
    lines = [
        "# coral-graph",
        "",
        f"You are agent `{ctx.name}` of a coral-graph run (`{ctx.run_id}`). The other agents "
        "do not see your output: talk to them only with the tools.",
        "",
        "# Threads and mentions",
        "",
        "Every message goes into a thread. `coral_create_thread` opens one with agents you "
        "can reach (you are added); `coral_send_message` posts into a thread you are in. A "
        "message wakes only the agents it mentions: mention each agent you want to act on "
        "it. `coral_close_thread` closes a thread with a summary.",
        "",
        "# Waiting",
        "",
        "`wait_for_mentions` returns all your unread mentions; `coral_wait_for_mention` (or "
        "`coral_wait_for_message`) one at a time, oldest first; `coral_wait_for_agent` the "
        f"oldest from one agent. A wait lasts at most {MAX_WAIT_MS // 1000} s: call it again "
        "to keep waiting. Unread mentions stay unread until a wait takes them.",
        "",
        "# The agents you can reach",
        "",
        "Edges are enforced: you can add to threads and mention only these agents.",
        "",
    ]
    lines += [f"- `{a.name}`: {a.description}" for a in agents]
    if any(a.name == "user" for a in agents):
        lines += ["", "Mention `user` to give the final answer: that ends the run."]
    return "\n".join(lines) + "\n"


async def call_tool(
    ctx: AgentContext,
    name: str,
    arguments: Mapping[str, Any] | None,
    *,
    before_wait: Callable[[], Awaitable[None]] | None = None,
    idle_after: float = 0.0,
) -> dict[str, Any]:
    """Run tool ``name`` for the agent of ``ctx``; returns the result object.

    ``before_wait`` is awaited before a ``wait_for_mentions`` starts waiting, and
    ``idle_after`` is passed on to :meth:`~coral_graph.AgentContext.wait_for_mentions`
    (the server uses both so that a call still in flight keeps the agent busy).

    Raises:
        ToolError: unknown tool, bad arguments, or a rule of the protocol broken
            (the message is the Python API's).
    """
    base = name.removeprefix("coral_")
    if name not in TOOL_NAMES:
        raise ToolError(
            "UnknownToolError", f"there is no tool {name!r}; the tools are: {', '.join(TOOL_NAMES)}"
        )
    if arguments is not None and not isinstance(arguments, Mapping):
        raise _bad(name, "the arguments must be a JSON object")
    args = _check(name, base, arguments or {})
    try:
        if base == "wait_for_mentions":
            return await _wait(ctx, args["timeoutMs"], before_wait, idle_after)
        if base in _SINGLE_WAITS:
            return await _wait_one(ctx, name, args, before_wait, idle_after)
        return await _run(ctx, base, args)
    except (CoralError, ValueError, TypeError) as exc:
        if isinstance(exc, RuntimeClosedError):
            raise ToolError("RunEndedError", str(exc)) from exc
        raise ToolError(type(exc).__name__, str(exc)) from exc


async def _run(ctx: AgentContext, base: str, args: dict[str, Any]) -> dict[str, Any]:
    if base == "list_agents":
        agents = await ctx.list_agents()
        details = args.get("includeDetails", True)
        return {
            "ok": True,
            "agents": [
                {"agentId": a.name, "description": a.description}
                if details
                else {"agentId": a.name}
                for a in agents
            ],
        }
    if base == "create_thread":
        th = await ctx.create_thread(args["threadName"], args["participantIds"])
        return {"ok": True, "thread": thread_view(th)}
    if base == "add_participant":
        await ctx.add_participant(args["threadId"], args["participantId"])
        return {
            "ok": True,
            "message": f"added {args['participantId']} to thread {args['threadId']}",
        }
    if base == "remove_participant":
        await ctx.remove_participant(args["threadId"], args["participantId"])
        return {
            "ok": True,
            "message": f"removed {args['participantId']} from thread {args['threadId']}",
        }
    if base == "close_thread":
        await ctx.close_thread(args["threadId"], args["summary"])
        return {"ok": True, "message": f"closed thread {args['threadId']}"}
    if base == "send_message":
        msg = await ctx.send_message(args["threadId"], args["content"], args.get("mentions", []))
        return {"ok": True, "status": "Message sent successfully", "message": message_view(msg)}
    raise AssertionError(base)  # pragma: no cover - every tool is handled above


async def _wait(
    ctx: AgentContext,
    ms: float,
    before_wait: Callable[[], Awaitable[None]] | None,
    idle_after: float,
) -> dict[str, Any]:
    if ms < 0 or ms > MAX_WAIT_MS:
        raise ToolError(
            "InvalidArgumentsError",
            f"wait_for_mentions: timeoutMs must be between 0 and {MAX_WAIT_MS}, not {ms:g}; "
            "call it again to wait longer",
        )
    if before_wait is not None:
        await before_wait()
    msgs = await ctx.wait_for_mentions(ms / 1000.0, idle_after=idle_after)
    return {
        "ok": True,
        "status": "Messages received" if msgs else "No new messages within the timeout",
        "messages": [message_view(m) for m in msgs],
    }


async def _wait_one(
    ctx: AgentContext,
    tool: str,
    args: dict[str, Any],
    before_wait: Callable[[], Awaitable[None]] | None,
    idle_after: float,
) -> dict[str, Any]:
    # As Coral 1.2: maxWaitMs defaults to the cap and is clamped to it.
    ms = min(args.get("maxWaitMs", MAX_WAIT_MS), MAX_WAIT_MS)
    if ms < 0:
        raise _bad(tool, f"maxWaitMs must be 0 or more (up to {MAX_WAIT_MS}), not {ms:g}")
    if before_wait is not None:
        await before_wait()
    msg = await ctx.wait_for_mention(
        ms / 1000.0, sender=args.get("agentName"), idle_after=idle_after
    )
    return {
        "ok": True,
        "status": "Message received" if msg is not None else "Timeout reached",
        "message": message_view(msg) if msg is not None else None,
    }
