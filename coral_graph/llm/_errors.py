"""The LLM errors, under :class:`coral_graph.LLMError`::

    LLMError                    a model call failed (.model, .retryable, .status_code)
    ├── LLMRateLimitError       429: retried with backoff
    ├── LLMTimeoutError         the call ran past timeout_s: retried
    ├── LLMUnavailableError     connection failure or a 5xx: retried
    ├── LLMAuthenticationError  401/403: fix the key (api_key_env)
    └── LLMBadRequestError      400/404/422: the request itself is wrong
        └── LLMContextWindowError  the prompt does not fit the model

litellm's own exception types never leak: each is wrapped and kept as ``__cause__``.
"""

from __future__ import annotations

from coral_graph._errors import LLMError

__all__ = [
    "LLMAuthenticationError",
    "LLMBadRequestError",
    "LLMContextWindowError",
    "LLMError",
    "LLMRateLimitError",
    "LLMTimeoutError",
    "LLMUnavailableError",
]


class _Base(LLMError):
    retryable_default = False

    def __init__(self, message: str, *, model: str = "", status_code: int | None = None) -> None:
        super().__init__(message, model=model, retryable=self.retryable_default)
        self.status_code = status_code


class LLMRateLimitError(_Base):
    """The provider answered 429 (rate limited); the call is retried with backoff."""

    retryable_default = True


class LLMTimeoutError(_Base):
    """The call ran past the agent's ``timeout_s``; it is retried."""

    retryable_default = True


class LLMUnavailableError(_Base):
    """The provider could not be reached or answered 5xx; the call is retried."""

    retryable_default = True


class LLMAuthenticationError(_Base):
    """The provider refused the key: set the variable named by ``api_key_env``."""


class LLMBadRequestError(_Base):
    """The provider rejected the request (unknown model, bad parameter ...)."""


class LLMContextWindowError(LLMBadRequestError):
    """The prompt is longer than the model's context: lower ``context_tokens``."""
