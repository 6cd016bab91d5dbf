"""LLM agents over litellm, with an embedded default model that runs offline.

>>> from coral_graph.llm import LLMAgent, DEFAULT_MODEL
>>> DEFAULT_MODEL
'embedded/smollm2-135m'
>>> LLMAgent(temperature=0).resolved_mode()  # the embedded model has no function calling
'text'

Importing this package does not import litellm: that happens on the first model
call (it takes seconds and reads litellm's bundled price table, never the network).
"""

from __future__ import annotations

from coral_graph._errors import LLMError
from coral_graph.llm._agent import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, LLMAgent
from coral_graph.llm._efficiency import EfficiencyReport, measure_token_efficiency
from coral_graph.llm._embedded import EMBEDDED_MODELS, find_gguf
from coral_graph.llm._errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMContextWindowError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from coral_graph.llm._limits import set_model_concurrency
from coral_graph.llm._litellm import LiteLLMClient, aclose_clients
from coral_graph.llm._text import clean_reply, parse_mentions, split_final
from coral_graph.llm._tools import TOOL_NAMES, TOOL_SCHEMAS
from coral_graph.llm._types import (
    ChatMessage,
    ModelClient,
    ModelRequest,
    ModelResponse,
    ToolCall,
    approx_tokens,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "TOOL_NAMES",
    "TOOL_SCHEMAS",
    "ChatMessage",
    "EfficiencyReport",
    "LLMAgent",
    "LLMAuthenticationError",
    "LLMBadRequestError",
    "LLMContextWindowError",
    "LLMError",
    "LLMRateLimitError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "LiteLLMClient",
    "ModelClient",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "aclose_clients",
    "approx_tokens",
    "clean_reply",
    "find_gguf",
    "measure_token_efficiency",
    "parse_mentions",
    "set_model_concurrency",
    "split_final",
]
