"""coral-graph: a runtime for graphs of agents that talk in threads and mention each other.

>>> import coral_graph as cg
>>> @cg.agent
... async def greeter(ctx, message):
...     '''Says hello.'''
...     await ctx.send_message(message.thread_id, f"hello, {message.content}", ["user"])
>>> graph = cg.AgentGraph()
>>> graph.add_agent("greeter", greeter)
>>> result = cg.run(graph, "world", entry=["greeter"])
>>> (result.stop_reason, result.answer)
('answer', 'hello, world')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coral_graph._agent import Agent, FunctionAgent, LoopAgent, agent
from coral_graph._blocked import handle_interrupts
from coral_graph._budgets import Budgets
from coral_graph._context import AgentContext
from coral_graph._errors import (
    AgentNameError,
    BudgetExceededError,
    ConcurrentWaitError,
    ConfigError,
    ContentTooLargeError,
    CoralError,
    DuplicateAgentError,
    EdgeNotAllowedError,
    InboxFullError,
    InvalidArgumentError,
    InvalidMentionError,
    InvalidMetadataError,
    LLMError,
    NotAParticipantError,
    ProtocolError,
    RuntimeClosedError,
    ThreadClosedError,
    TurnTimeoutError,
    UnknownAgentError,
    UnknownThreadError,
)
from coral_graph._events import (
    AgentAdded,
    AgentErrored,
    AgentLogged,
    DeliveryHandled,
    Event,
    LLMCalled,
    MessageSent,
    ParticipantAdded,
    ParticipantRemoved,
    RunFinished,
    RunStarted,
    ThreadClosed,
    ThreadCreated,
    ToolCalled,
    event_from_dict,
    event_to_dict,
)
from coral_graph._graph import AgentGraph, AgentSpec
from coral_graph._model import AgentInfo, AgentUsage, Message, Thread
from coral_graph._results import RunSnapshot
from coral_graph._runtime import (
    BatchRecorder,
    EventSink,
    EventStream,
    RunHandle,
    RunResult,
    Runtime,
    open_runtime,
    run,
    run_async,
)
from coral_graph._seeds import run_seed, seed_base
from coral_graph._types import (
    USER,
    AgentName,
    BudgetName,
    ErrorPolicy,
    MessageId,
    RunId,
    StopReason,
    ThreadId,
)

if TYPE_CHECKING:
    from coral_graph.config import GraphSpec, LoadedGraph, load_graph
    from coral_graph.llm import LLMAgent

__version__ = "0.1.0"

# Heavy parts load on first use: `import coral_graph` never imports litellm,
# Starlette or nats.
_LAZY = {
    "LLMAgent": ("coral_graph.llm", "LLMAgent"),
    "load_graph": ("coral_graph.config", "load_graph"),
    "GraphSpec": ("coral_graph.config", "GraphSpec"),
    "LoadedGraph": ("coral_graph.config", "LoadedGraph"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'coral_graph' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


__all__ = [
    "USER",
    "Agent",
    "AgentAdded",
    "AgentContext",
    "AgentErrored",
    "AgentGraph",
    "AgentInfo",
    "AgentLogged",
    "AgentName",
    "AgentNameError",
    "AgentSpec",
    "AgentUsage",
    "BatchRecorder",
    "BudgetExceededError",
    "BudgetName",
    "Budgets",
    "ConcurrentWaitError",
    "ConfigError",
    "ContentTooLargeError",
    "CoralError",
    "DeliveryHandled",
    "DuplicateAgentError",
    "EdgeNotAllowedError",
    "ErrorPolicy",
    "Event",
    "EventSink",
    "EventStream",
    "FunctionAgent",
    "GraphSpec",
    "InboxFullError",
    "InvalidArgumentError",
    "InvalidMentionError",
    "InvalidMetadataError",
    "LLMAgent",
    "LLMCalled",
    "LLMError",
    "LoadedGraph",
    "LoopAgent",
    "Message",
    "MessageId",
    "MessageSent",
    "NotAParticipantError",
    "ParticipantAdded",
    "ParticipantRemoved",
    "ProtocolError",
    "RunFinished",
    "RunHandle",
    "RunId",
    "RunResult",
    "RunSnapshot",
    "RunStarted",
    "Runtime",
    "RuntimeClosedError",
    "StopReason",
    "Thread",
    "ThreadClosed",
    "ThreadClosedError",
    "ThreadCreated",
    "ThreadId",
    "ToolCalled",
    "TurnTimeoutError",
    "UnknownAgentError",
    "UnknownThreadError",
    "__version__",
    "agent",
    "event_from_dict",
    "event_to_dict",
    "handle_interrupts",
    "load_graph",
    "open_runtime",
    "run",
    "run_async",
    "run_seed",
    "seed_base",
]
