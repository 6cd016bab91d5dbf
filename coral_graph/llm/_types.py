"""The transport seam: one request, one response, one protocol.

:class:`ModelClient` is the only thing :class:`~coral_graph.llm.LLMAgent` needs from a
model backend: ``async def complete(request) -> ModelResponse``. The default client
goes through litellm; :class:`coral_graph.testing.ScriptedModel` is another.

A client may also offer these optional methods, used when present:

* ``count_tokens(model, messages, tools) -> int``: prompt tokens (default: a
  characters/4 estimate); it runs on the event loop, so it must be fast;
* ``warm_up(model) -> None``: the slow first-use work that would otherwise happen
  in the first ``count_tokens`` or ``complete`` of ``model`` on the event loop
  (loading a tokenizer, importing an SDK); blocking, idempotent and thread-safe.
  The agent runs it in a worker thread before its first count of ``model``, and
  ``check_ready`` before the event loop starts;
* ``cost_usd(model, prompt_tokens, completion_tokens) -> float``: the price of a
  call (default: 0);
* ``supports_tools(model) -> bool``: whether ``mode="auto"`` may use function
  calling (default: False).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ChatMessage",
    "ModelClient",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "approx_tokens",
]

ChatMessage = dict[str, Any]
"""One OpenAI-format chat message: ``{"role": ..., "content": ...}``."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by the model.

    Attributes:
        id: the provider's call id (echoed back in the tool result).
        name: the tool's name.
        arguments: the arguments exactly as the model wrote them (JSON text,
            possibly malformed).
    """

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``tool_calls`` format."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One chat completion request.

    Attributes:
        model: the model string, e.g. ``openai/gpt-4o-mini`` or ``embedded/smollm2-135m``.
        messages: the prompt, OpenAI format.
        tools: function schemas (OpenAI format), or None in text mode.
        agent: the name of the agent that calls (for logs and scripted models).
        n_context: how many leading ``messages`` were built from the run's threads;
            the rest are this turn's own tool exchange.
        extra: provider-specific keyword arguments passed through unchanged.
    """

    model: str
    messages: Sequence[ChatMessage]
    tools: Sequence[dict[str, Any]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: Sequence[str] | None = None
    api_base: str | None = None
    api_key: str | None = None
    timeout_s: float | None = None
    agent: str = ""
    n_context: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What a model answered.

    Attributes:
        content: the text (None when the model only called tools).
        tool_calls: the function calls, in order.
        prompt_tokens: prompt tokens as the provider counted them (0: unknown).
        completion_tokens: completion tokens (0: unknown).
        cost_usd: the price of the call if the client knows it; None lets the agent
            price it with the client's ``cost_usd``.
        model: the model that answered.
        finish_reason: ``stop``, ``length``, ``tool_calls`` ...
        queue_s: seconds the request waited inside the client before it was served
            (e.g. for a context of the embedded engine); not generation time.
    """

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    model: str = ""
    finish_reason: str | None = None
    queue_s: float = 0.0


@runtime_checkable
class ModelClient(Protocol):
    """The one-method transport seam between an :class:`LLMAgent` and a model."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one chat completion. Raise :class:`coral_graph.LLMError` on failure
        (with ``retryable=True`` for rate limits and transient errors)."""


def approx_tokens(messages: Sequence[ChatMessage], tools: Sequence[Any] | None = None) -> int:
    """A cheap token estimate (4 characters a token, 4 tokens of overhead a message)."""
    total = 3
    for m in messages:
        total += 4 + len(str(m.get("content") or "")) // 4
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function", {}) if isinstance(tc, Mapping) else {}
            total += 4 + (len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))) // 4
    if tools:
        total += sum(len(str(t)) for t in tools) // 4
    return total
