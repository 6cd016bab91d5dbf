"""The default :class:`ModelClient`: litellm, imported on the first model call.

This is the only module that imports litellm. ``LITELLM_LOCAL_MODEL_COST_MAP`` is
set before the import so litellm reads its bundled price table instead of fetching
one over the network. The embedded provider (``embedded/...``) is registered at the
same time.

First uses are slow and synchronous: the first prompt-token count of a model
loads its tokenizer (tiktoken's BPE rank file, parsed and compiled, or a
HuggingFace tokenizer for some models), and the first call through the OpenAI SDK
imports some 450 modules of it. Each takes from a tenth of a second on an idle
machine to seconds on a busy one; on the event loop that would hold every agent of
the process, so agents call :meth:`LiteLLMClient.warm_up` in a worker thread (or
before the loop starts) first. It does that work once per process and model
(tiktoken keeps one copy per encoding); the counts and calls after it are fast
enough for the loop.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from coral_graph._errors import LLMError
from coral_graph.llm._embedded import EMBEDDED_PROVIDER, make_provider
from coral_graph.llm._errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMContextWindowError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from coral_graph.llm._types import ChatMessage, ModelRequest, ModelResponse, ToolCall

__all__ = ["LiteLLMClient", "aclose_clients", "load_litellm", "wrap_error"]

_lock = threading.Lock()
_litellm: Any = None

_warm: set[str] = set()
"""Models this process has warmed up (their counts and calls start fast)."""
_warm_locks: dict[str, threading.Lock] = {}

_SDK_MODULES = ("openai.resources", "openai.lib.streaming.chat")
"""What litellm's OpenAI and OpenAI-compatible providers import on their first call."""


def load_litellm() -> Any:
    """Import litellm (once), quietly and offline, with the embedded provider."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            if not any(p.get("provider") == EMBEDDED_PROVIDER for p in litellm.custom_provider_map):
                litellm.custom_provider_map.append(
                    {"provider": EMBEDDED_PROVIDER, "custom_handler": make_provider(litellm)}
                )
            _litellm = litellm
    return _litellm


async def aclose_clients() -> None:
    """Close the HTTP clients litellm cached for the running event loop.

    litellm keeps one client per provider and event loop; call this before the loop
    ends (e.g. at the end of a program that made model calls) so no socket is left
    for the garbage collector. It does nothing if litellm was never imported.
    """
    if _litellm is None:
        return
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()  # type: ignore[no-untyped-call]
    cache = getattr(_litellm, "in_memory_llm_clients_cache", None)
    if cache is not None:
        cache.flush_cache()


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def wrap_error(exc: Exception, model: str) -> LLMError:
    """Map a litellm (or openai) exception to our error tree."""
    if isinstance(exc, LLMError):
        return exc
    litellm = load_litellm()
    x = litellm.exceptions
    status = _status(exc)
    text = f"{model}: {type(exc).__name__}: {exc}"
    err: LLMError
    if isinstance(exc, x.RateLimitError) or status == 429:
        err = LLMRateLimitError(
            f"{text} (rate limited; retried with backoff)", model=model, status_code=status
        )
    elif isinstance(exc, x.Timeout | TimeoutError):
        err = LLMTimeoutError(text, model=model, status_code=status)
    elif isinstance(exc, x.ContextWindowExceededError):
        err = LLMContextWindowError(
            f"{text} (lower context_tokens)", model=model, status_code=status
        )
    elif isinstance(exc, x.AuthenticationError | x.PermissionDeniedError):
        err = LLMAuthenticationError(
            f"{text} (set the API key in the variable named by api_key_env)",
            model=model,
            status_code=status,
        )
    elif isinstance(
        exc,
        x.APIConnectionError
        | x.ServiceUnavailableError
        | x.InternalServerError
        | x.BadGatewayError,
    ) or (status is not None and status >= 500):
        err = LLMUnavailableError(text, model=model, status_code=status)
    elif isinstance(exc, x.BadRequestError | x.NotFoundError | x.UnprocessableEntityError) or (
        status is not None and 400 <= status < 500
    ):
        err = LLMBadRequestError(text, model=model, status_code=status)
    else:
        err = LLMError(text, model=model, retryable=False)
    err.__cause__ = exc
    return err


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    calls = getattr(message, "tool_calls", None) or ()
    out = []
    for i, tc in enumerate(calls):
        fn = getattr(tc, "function", None)
        name = getattr(fn, "name", None) or ""
        args = getattr(fn, "arguments", None)
        out.append(
            ToolCall(
                id=str(getattr(tc, "id", None) or f"call_{i}"),
                name=str(name),
                arguments=args if isinstance(args, str) else ("" if args is None else str(args)),
            )
        )
    return tuple(out)


class LiteLLMClient:
    """Calls any litellm model string (``openai/...``, ``anthropic/...``, ``ollama/...``,
    ``embedded/...``). Retries are the agent's job: litellm's own are switched off."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        litellm = load_litellm()
        kwargs: dict[str, Any] = dict(request.extra)
        for key in ("temperature", "top_p", "seed", "max_tokens", "api_base", "api_key"):
            value = getattr(request, key)
            if value is not None:
                kwargs[key] = value
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.tools:
            kwargs["tools"] = list(request.tools)
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        if request.api_base is not None and request.api_key is None:
            # Local OpenAI-compatible servers need no key, but the SDK wants one.
            kwargs["api_key"] = "no-key"
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("num_retries", 0)
        try:
            resp = await litellm.acompletion(
                model=request.model, messages=list(request.messages), **kwargs
            )
        except Exception as exc:
            raise wrap_error(exc, request.model) from exc
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        return ModelResponse(
            content=getattr(choice.message, "content", None),
            tool_calls=_tool_calls(choice.message),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=None,
            model=request.model,
            finish_reason=getattr(choice, "finish_reason", None),
            queue_s=float((getattr(resp, "_hidden_params", None) or {}).get("coral_queue_s", 0.0)),
        )

    def warm_up(self, model: str) -> None:
        """Import litellm, load ``model``'s tokenizer and the SDK modules its first
        call needs, blocking: once per process and model (a second caller waits for
        the first). Call it off the event loop, before the first :meth:`count_tokens`
        or :meth:`complete` of ``model`` there."""
        if model in _warm:
            return
        with _lock:
            lock = _warm_locks.setdefault(model, threading.Lock())
        with lock:
            if model in _warm:
                return
            litellm = load_litellm()
            try:
                litellm.token_counter(model=model, messages=[{"role": "user", "content": "ready"}])
            except Exception:  # its counts fall back to an estimate (see count_tokens)
                pass
            if not model.startswith(EMBEDDED_PROVIDER + "/"):
                for name in _SDK_MODULES:
                    try:
                        importlib.import_module(name)
                    except ImportError:  # another SDK version: its first call imports
                        pass
            _warm.add(model)

    def count_tokens(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens by litellm's counter (the model's tokenizer when litellm
        knows it, else tiktoken's cl100k). The first count of a model loads its
        tokenizer, which blocks: on the event loop, run :meth:`warm_up` in a
        worker thread first."""
        litellm = load_litellm()
        try:
            return int(
                litellm.token_counter(
                    model=model, messages=list(messages), tools=list(tools) if tools else None
                )
            )
        except Exception:
            from coral_graph.llm._types import approx_tokens

            return approx_tokens(messages, tools)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The price from litellm's table; 0 for local and unknown models."""
        if model.startswith(EMBEDDED_PROVIDER + "/"):
            return 0.0
        litellm = load_litellm()
        try:
            p, c = litellm.cost_per_token(
                model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except Exception:
            return 0.0
        return float(p) + float(c)

    def check_ready(self, model: str, *, api_base: str | None, has_key: bool) -> None:
        """Before a run: raise if ``model`` cannot work — a name whose provider litellm
        does not know, or a provider API key that is not set (unless the agent
        brings its own key or talks to its own server with ``api_base``)."""
        if model.startswith(EMBEDDED_PROVIDER + "/"):
            return
        litellm = load_litellm()
        try:
            provider = litellm.get_llm_provider(model)[1]
        except Exception:
            raise LLMBadRequestError(
                f'model "{model}": litellm does not know its provider; write it as '
                f"<provider>/<model>, e.g. openai/{model}, anthropic/{model} or "
                f"ollama/{model} (an OpenAI-compatible server: openai/{model} with api_base)",
                model=model,
            ) from None
        if has_key or api_base is not None:
            return
        try:
            missing = litellm.validate_environment(model).get("missing_keys") or []
        except Exception:  # litellm could not tell: let the call say
            return
        # Only API keys are certain to be needed: base URLs have defaults, and cloud
        # credentials (AWS, Google) may come from files litellm reads itself.
        keys = [k for k in missing if str(k).endswith("_API_KEY")]
        if keys:
            raise LLMAuthenticationError(
                f"Missing credentials for {provider} (set {' and '.join(keys)}); model {model}",
                model=model,
            )

    def supports_tools(self, model: str) -> bool:
        """Whether litellm knows ``model`` to support function calling."""
        if model.startswith(EMBEDDED_PROVIDER + "/"):
            return False
        litellm = load_litellm()
        try:
            return bool(litellm.supports_function_calling(model=model))
        except Exception:
            return False
