"""LLMAgent: a handler-style agent driven by any litellm model string.

One wake (one delivery) is one *turn*: the context is built afresh (see
:mod:`coral_graph.llm._prompt`), then the model is called at most ``max_steps``
times. In tools mode each step may call the seven operations; in text mode the
reply is posted by the text convention (see :mod:`coral_graph.llm._text`).

Every call is checked against the run's budgets *before* it is made (its prompt
tokens plus ``max_tokens``, priced by litellm's table), recorded after it (an
``llm_called`` event with tokens, cost, latency and outcome), bounded by
``timeout_s``, retried with exponential backoff on rate limits and transient
errors, and handed to the ``fallbacks`` in order when a model keeps failing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio

from coral_graph._errors import LLMError
from coral_graph._types import USER
from coral_graph.llm._errors import LLMTimeoutError
from coral_graph.llm._limits import model_limiter
from coral_graph.llm._prompt import build_context
from coral_graph.llm._text import post_reply
from coral_graph.llm._tools import TOOL_NAMES, TOOL_SCHEMAS, run_tool
from coral_graph.llm._types import (
    ChatMessage,
    ModelClient,
    ModelRequest,
    ModelResponse,
    approx_tokens,
)

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message
    from coral_graph.mcp._client import MCPToolbox

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MODEL", "LLMAgent", "default_context"]

DEFAULT_MODEL = "embedded/smollm2-135m"
"""The model every agent uses unless told otherwise: runs offline, costs nothing."""

DEFAULT_MAX_TOKENS = 1024
"""Completion tokens per call when ``max_tokens`` is not set (it is always sent, so
the budget check before a call is a true upper bound)."""

_EMBEDDED_MAX_TOKENS = 256

Mode = Literal["auto", "tools", "text"]
ContextShape = Literal["auto", "compact", "full"]

# A parameter count in a model's name: "smollm2-135m", "qwen2.5-0.5b", "llama3.2:1b".
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*([mb])(?![a-z])", re.I)
_SMALL_PARAMS = 3e9
# Providers that take a ``seed``: a per-run one is sent to them unless one is fixed.
_SEEDED = ("embedded/", "scripted/", "openai/", "ollama/", "ollama_chat/", "hosted_vllm/")


def default_context(model: str) -> Literal["compact", "full"]:
    """The context shape ``context: auto`` picks for ``model``.

    ``compact`` for the embedded models and for any model whose name carries a
    parameter count of at most 3B (``openai/smollm2-135m`` behind llama.cpp,
    ``ollama/qwen2.5:0.5b``, ``ollama/llama3.2:1b``): small models echo the
    bookkeeping of the full context instead of answering. ``full`` otherwise.

    >>> default_context("embedded/smollm2-135m"), default_context("openai/smollm2-135m")
    ('compact', 'compact')
    >>> default_context("ollama/llama3.2:1b"), default_context("openai/gpt-4o-mini")
    ('compact', 'full')
    >>> default_context("ollama/llama3.1:70b")
    'full'
    """
    if model.startswith("embedded/"):
        return "compact"
    for num, unit in _SIZE.findall(model.rsplit("/", 1)[-1]):
        params = float(num) * (1e6 if unit.lower() == "m" else 1e9)
        return "compact" if params <= _SMALL_PARAMS else "full"
    return "full"


def _default_client(model: str) -> ModelClient:
    if model.startswith("scripted/"):
        from coral_graph.testing import scripted_model

        return scripted_model(model.removeprefix("scripted/"))
    from coral_graph.llm._litellm import LiteLLMClient

    return LiteLLMClient()


class LLMAgent:
    """An agent whose turns are model calls.

    Args:
        model: a litellm model string (``openai/gpt-4o-mini``, ``anthropic/...``,
            ``ollama/llama3``, ``openai/<name>`` with ``api_base`` for any
            OpenAI-compatible server), ``embedded/smollm2-135m`` (the default) or
            ``scripted/<name>`` (a :class:`coral_graph.testing.ScriptedModel`).
        system_prompt: the agent's instructions, first in every prompt.
        description: what other agents see of it in ``list_agents()``.
        mode: ``tools`` (function calling), ``text`` (plain replies and ``@name``
            mentions) or ``auto`` (tools when the model supports them).
        temperature, top_p, seed, max_tokens, stop: sampling settings.
            ``max_tokens`` defaults to 1024 (256 for embedded models). Without a
            ``seed``, each run gets its own (:func:`coral_graph.run_seed`), so
            samples differ from run to run; a fixed ``seed`` is the same in every run.
        context: the shape of the per-wake prompt in text mode: ``compact`` (the
            agent's prompt, ``sender: text`` history, the bare wake message: for
            small models), ``full`` (roster, thread ids, other threads), or ``auto``
            (:func:`default_context` of the model). Tools mode always gets ``full``.
        api_base: the server's URL for OpenAI-compatible endpoints.
        api_key_env: the environment variable that holds the API key.
        max_steps: model calls per turn, at most.
        timeout_s: seconds per model call.
        retries: extra attempts per model on rate limits and transient errors.
        retry_backoff_s: the first backoff; it doubles each retry (with jitter).
        fallbacks: other model strings to try, in order, when a model keeps failing.
        context_tokens: the prompt budget plus ``max_tokens``; older context is
            trimmed to fit.
        max_concurrency: calls in flight to this model at once, across the agents
            of the process (the smallest cap asked for a model wins).
        extra: more keyword arguments for the provider, passed unchanged.
        client: the transport (default: litellm).
        tools: MCP tool servers offered beside the seven operations (tools mode):
            ``{"command": [...]}`` (stdio) or ``{"url": ...}`` (streamable HTTP),
            or :class:`coral_graph.mcp.MCPServer` values; needs the ``mcp`` extra.
        max_tool_calls: MCP tool calls this agent may make in one run (None: no cap).

    >>> agent = LLMAgent("openai/gpt-4o-mini", description="solves maths", temperature=0)
    >>> agent.kind, agent.description, agent.model
    ('llm', 'solves maths', 'openai/gpt-4o-mini')
    """

    kind = "llm"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        system_prompt: str = "",
        description: str = "",
        mode: Mode = "auto",
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        api_base: str | None = None,
        api_key_env: str | None = None,
        max_steps: int = 4,
        timeout_s: float = 120.0,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        fallbacks: Sequence[str] = (),
        context_tokens: int = 4096,
        max_concurrency: int | None = None,
        extra: Mapping[str, Any] | None = None,
        client: ModelClient | None = None,
        context: ContextShape = "auto",
        tools: Sequence[Any] = (),
        max_tool_calls: int | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a model string such as 'openai/gpt-4o-mini'")
        # One declaration of the model settings: the YAML's ModelSettings checks
        # these arguments too, with the same bounds and the same messages' fields.
        _check_settings(
            model=model,
            mode=mode,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            max_tokens=max_tokens,
            stop=list(stop) if stop else None,
            api_base=api_base,
            api_key_env=api_key_env,
            max_steps=max_steps,
            timeout_s=timeout_s,
            retries=retries,
            fallbacks=list(fallbacks),
            context_tokens=context_tokens,
            max_concurrency=max_concurrency,
            extra=dict(extra) if extra else None,
            context=context,
        )
        self.model = model
        self.system_prompt = system_prompt
        # Never empty: the graph would fall back to this class's docstring.
        self.description = description.strip() or _describe(system_prompt, model)
        self.mode: Mode = mode
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.max_steps = max_steps
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.fallbacks = tuple(fallbacks)
        self.context_tokens = context_tokens
        self.max_concurrency = max_concurrency
        self.extra = dict(extra or {})
        self._client = client
        # MCP tool servers beside the seven operations (coral_graph.mcp; the SDK
        # loads when a turn first connects).
        self.toolbox: MCPToolbox | None = None
        if tools:
            from coral_graph.mcp._client import MCPToolbox

            self.toolbox = MCPToolbox(
                tools, max_tool_calls=max_tool_calls, reserved=TOOL_NAMES, timeout_s=timeout_s
            )
        self.context: ContextShape = context
        # Models the client has warmed up for this agent: their counts and calls
        # may run on the event loop (see warm_up).
        self._warm: set[str] = set()

    def __repr__(self) -> str:
        return f"LLMAgent({self.model!r}, mode={self.mode!r})"

    # -- settings -------------------------------------------------------------

    @property
    def client(self) -> ModelClient:
        """The transport (created on first use: importing litellm is deferred)."""
        if self._client is None:
            self._client = _default_client(self.model)
        return self._client

    def _max_out(self, model: str) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return _EMBEDDED_MAX_TOKENS if model.startswith("embedded/") else DEFAULT_MAX_TOKENS

    def resolved_context(self) -> Literal["compact", "full"]:
        """``compact`` or ``full``: what ``context`` means for this agent's model."""
        return default_context(self.model) if self.context == "auto" else self.context

    def _seed(self, ctx: AgentContext, model: str) -> int | None:
        if self.seed is not None:
            return self.seed
        if model.startswith(_SEEDED) or self.api_base is not None:
            from coral_graph._seeds import run_seed

            return run_seed(ctx)
        return None

    def resolved_mode(self) -> Literal["tools", "text"]:
        """``tools`` or ``text``: what ``auto`` means for this agent's model."""
        if self.mode != "auto":
            return self.mode
        supports = getattr(self.client, "supports_tools", None)
        return "tools" if callable(supports) and supports(self.model) else "text"

    def count_tokens(
        self, model: str, messages: Sequence[ChatMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens by the client's counter (litellm's for the default client).

        The first count of a model may load its tokenizer, which blocks; on the
        event loop, await :meth:`warm_up` first (a turn does).
        """
        counter = getattr(self.client, "count_tokens", None)
        if callable(counter):
            return int(counter(model, messages, tools))
        return approx_tokens(messages, tools)

    async def warm_up(self, model: str) -> None:
        """Have the client do, in a worker thread, what the first count and call of
        ``model`` would do synchronously (its optional blocking ``warm_up``: the
        default client loads the tokenizer and the SDK): once per agent and model,
        before its first count. That first-use work takes from a tenth of a second
        to seconds; on the event loop it would hold every agent of the process."""
        if model in self._warm:
            return
        warm = getattr(self.client, "warm_up", None)
        if callable(warm):
            # A cancelled turn does not wait for it: it finishes in its thread.
            await anyio.to_thread.run_sync(warm, model, abandon_on_cancel=True)
        self._warm.add(model)

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for a call of that size (0 when the price is unknown)."""
        pricer = getattr(self.client, "cost_usd", None)
        if callable(pricer):
            return float(pricer(model, prompt_tokens, completion_tokens))
        return 0.0

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            from coral_graph.llm._errors import LLMAuthenticationError

            raise LLMAuthenticationError(
                f"the environment variable {self.api_key_env} (api_key_env) is not set; "
                "export it with the API key",
                model=self.model,
            )
        return key

    def check_ready(self) -> None:
        """Check, before a run posts its first message, that every model of this agent
        can be called: its API key is set and litellm knows its provider. The runtime
        calls it for every agent that has it.

        Raises:
            LLMAuthenticationError: a key is missing (the message names the variable).
            LLMBadRequestError: litellm does not know the model's provider.
        """
        if self._client is None and self.model.startswith("scripted/"):
            return
        self._api_key()
        check = getattr(self.client, "check_ready", None)
        if callable(check):
            has_key = self.api_key_env is not None or "api_key" in self.extra
            for model in (self.model, *self.fallbacks):
                check(model, api_base=self.api_base, has_key=has_key)
        warm = getattr(self.client, "warm_up", None)
        if (
            callable(warm)
            and self.model not in self._warm
            and threading.current_thread() is threading.main_thread()
            and not _on_event_loop()
        ):
            # Before the loop starts (the CLI, cg.run): the first turn finds the
            # model warm. Elsewhere (a run checks its agents in a worker thread), the
            # turn warms it up in a worker thread that a stop does not wait for.
            warm(self.model)
            self._warm.add(self.model)

    # -- one turn ---------------------------------------------------------------

    async def handle(self, ctx: AgentContext, message: Message) -> None:
        """One wake: build the context, then call the model up to ``max_steps`` times."""
        await self.warm_up(self.model)  # build_context counts tokens
        mode = self.resolved_mode()
        budget = max(256, self.context_tokens - self._max_out(self.model))
        messages = build_context(
            ctx,
            message,
            system_prompt=self.system_prompt,
            description=self.description,
            mode=mode,
            budget_tokens=budget,
            count=lambda ms: self.count_tokens(self.model, ms),
            compact=mode == "text" and self.resolved_context() == "compact",
        )
        if mode == "tools":
            await self._tools_turn(ctx, message, messages)
        else:
            await self._text_turn(ctx, message, messages)

    async def _text_turn(
        self, ctx: AgentContext, wake: Message, messages: list[ChatMessage]
    ) -> None:
        n_context = len(messages)
        for _ in range(self.max_steps):
            resp, meta = await self.call(ctx, messages, tools=None, n_context=n_context)
            text = (resp.content or "").strip()
            if text:
                await post_reply(ctx, wake, text, metadata=meta)
                return
            messages = [
                *messages,
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "Your reply was empty. Reply in plain text."},
            ]

    async def _tools_turn(
        self, ctx: AgentContext, wake: Message, messages: list[ChatMessage]
    ) -> None:
        if self.toolbox is None:
            await self._tools_steps(ctx, wake, messages, None)
            return
        async with self.toolbox.turn(ctx) as mcp_turn:
            await self._tools_steps(ctx, wake, messages, mcp_turn)

    async def _tools_steps(
        self, ctx: AgentContext, wake: Message, messages: list[ChatMessage], mcp_turn: Any
    ) -> None:
        n_context = len(messages)
        schemas = TOOL_SCHEMAS if mcp_turn is None else (*TOOL_SCHEMAS, *mcp_turn.schemas())
        seen: dict[str, str] = {}
        repeats = 0
        posted = answered = False
        for _ in range(self.max_steps):
            resp, meta = await self.call(ctx, messages, tools=schemas, n_context=n_context)
            if not resp.tool_calls:
                text = (resp.content or "").strip()
                if text and not posted:
                    await post_reply(ctx, wake, text, metadata=meta)
                return
            messages.append(
                {
                    "role": "assistant",
                    "content": resp.content or None,
                    "tool_calls": [tc.to_openai() for tc in resp.tool_calls],
                }
            )
            for tc in resp.tool_calls:
                key = tc.name + "\x00" + _canonical(tc.arguments)
                if key in seen:
                    repeats += 1
                    result = json.dumps(
                        {
                            "ok": False,
                            "error": "RepeatedCallError",
                            "message": "you already made this exact call in this turn; it was "
                            "not run again. Its result was: "
                            + seen[key]
                            + ". Do something else, or stop calling tools.",
                        }
                    )
                    ctx.record_tool_call(
                        tool=tc.name,
                        arguments={"raw": tc.arguments},
                        result=result,
                        ok=False,
                        duration_s=0.0,
                    )
                elif mcp_turn is not None and mcp_turn.has(tc.name):
                    result, _ok = await mcp_turn.call(ctx, tc.name, tc.arguments)
                    seen[key] = result
                else:
                    outcome = await run_tool(
                        ctx,
                        tc.name,
                        tc.arguments,
                        wake=wake,
                        metadata=meta,
                        max_wait_s=self.timeout_s,
                    )
                    result = outcome.result
                    seen[key] = result
                    if outcome.message is not None:
                        posted = True
                        answered = answered or USER in outcome.message.mentions
                messages.append(
                    {"role": "tool", "tool_call_id": tc.id, "name": tc.name, "content": result}
                )
            if answered or repeats >= 2:
                return  # the task is answered, or a loop: the same calls again and again

    # -- one model call, with budgets, retries and fallbacks -----------------------

    async def call(
        self,
        ctx: AgentContext,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        n_context: int = 0,
    ) -> tuple[ModelResponse, dict[str, Any]]:
        """Call the model (then the fallbacks) once, with budget checks, accounting,
        timeout and retries. Returns the response and the metadata to attach to a
        message it produces.

        Raises:
            BudgetExceededError: the call could exceed a budget of the run (the run
                stops; nothing was spent).
            LLMError: every model failed; the last error.
        """
        last: LLMError | None = None
        api_key = self._api_key()
        for model in (self.model, *self.fallbacks):
            max_out = self._max_out(model)
            await self.warm_up(model)
            prompt_tokens = self.count_tokens(model, messages, tools)
            request = ModelRequest(
                model=model,
                messages=list(messages),
                tools=list(tools) if tools else None,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self._seed(ctx, model),
                max_tokens=max_out,
                stop=self.stop,
                api_base=self.api_base,
                api_key=api_key,
                timeout_s=self.timeout_s,
                agent=ctx.name,
                n_context=n_context,
                extra=self.extra,
            )
            sent = _request_record(request)
            for attempt in range(self.retries + 1):
                # Reserved before the call: agents calling at once can never spend
                # past a limit together (see coral_graph._ledger).
                res = await ctx.reserve_llm_call(
                    prompt_tokens=prompt_tokens,
                    max_tokens=max_out,
                    cost_usd=self.price(model, prompt_tokens, max_out),
                )
                t0 = time.perf_counter()
                t_start = t0  # when the call got past the concurrency cap
                try:
                    async with model_limiter(model, self.max_concurrency):
                        t_start = time.perf_counter()
                        with anyio.fail_after(self.timeout_s):
                            resp = await self.client.complete(request)
                except TimeoutError as exc:
                    err: LLMError = LLMTimeoutError(
                        f"{model}: no answer within {self.timeout_s:g} s (timeout_s)",
                        model=model,
                    )
                    err.__cause__ = exc
                except LLMError as exc:
                    err = exc
                except Exception as exc:  # a custom client's own failure
                    err = LLMError(f"{model}: {type(exc).__name__}: {exc}", model=model)
                    err.__cause__ = exc
                except BaseException:
                    # Cancelled mid-call (the run ended, a turn timed out): the call
                    # may have reached the provider, so it is recorded and counted.
                    ctx.record_llm_call(
                        model=model,
                        prompt_tokens=0,
                        completion_tokens=0,
                        cost_usd=0.0,
                        latency_s=time.perf_counter() - t0,
                        outcome="cancelled",
                        error="the call was cancelled before it returned",
                        attempt=attempt + 1,
                        request=sent,
                        reservation=res,
                    )
                    raise
                else:
                    # Waiting (for the concurrency cap, or inside the client for an
                    # engine context) is queue time, not the model's latency.
                    queue = (t_start - t0) + max(0.0, resp.queue_s)
                    latency = max(0.0, time.perf_counter() - t0 - queue)
                    p = resp.prompt_tokens or prompt_tokens
                    c = resp.completion_tokens or approx_tokens([{"content": resp.content or ""}])
                    cost = resp.cost_usd if resp.cost_usd is not None else self.price(model, p, c)
                    counted = ctx.record_llm_call(
                        model=model,
                        prompt_tokens=p,
                        completion_tokens=c,
                        cost_usd=cost,
                        latency_s=latency,
                        outcome="ok",
                        attempt=attempt + 1,
                        request=sent,
                        response=_response_record(resp),
                        reservation=res,
                    )
                    meta = {
                        "model": model,
                        "prompt_tokens": counted.prompt_tokens,
                        "completion_tokens": counted.completion_tokens,
                        "cost_usd": counted.cost_usd,
                        "latency_s": round(latency, 6),
                        "queue_s": round(queue, 6),
                    }
                    return resp, meta
                ctx.record_llm_call(
                    model=model,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost_usd=0.0,
                    latency_s=time.perf_counter() - t0,
                    outcome=type(err).__name__,
                    error=str(err),
                    attempt=attempt + 1,
                    request=sent,
                    reservation=res,
                )
                last = err
                if not err.retryable or attempt == self.retries:
                    break
                delay = self.retry_backoff_s * (2**attempt)
                await anyio.sleep(delay * (0.75 + random.random() / 2))
        assert last is not None
        raise last


_KEEP_CHARS = 20_000
"""Per prompt message, the characters kept on the ``llm_called`` event (the rest is
counted, not stored), so a long run's transcript stays bounded."""


def _clip(text: Any) -> Any:
    if isinstance(text, str) and len(text) > _KEEP_CHARS:
        return text[:_KEEP_CHARS] + f"… [{len(text) - _KEEP_CHARS} more characters not kept]"
    return text


def _request_record(request: ModelRequest) -> dict[str, Any]:
    """The prompt as sent, for the ``llm_called`` event: messages, tool names and
    sampling settings (never the API key or the base URL's credentials)."""
    return {
        "messages": [{k: _clip(v) for k, v in m.items()} for m in request.messages],
        "tools": [t.get("function", {}).get("name", "") for t in request.tools or ()],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop) if request.stop else None,
    }


def _response_record(resp: ModelResponse) -> dict[str, Any]:
    """What the model answered, for the ``llm_called`` event."""
    return {
        "content": _clip(resp.content),
        "tool_calls": [
            {"name": tc.name, "arguments": _clip(tc.arguments)} for tc in resp.tool_calls
        ],
        "finish_reason": resp.finish_reason,
    }


def _check_settings(**settings: Any) -> None:
    """Validate LLMAgent's model settings with the YAML's :class:`ModelSettings`
    (one declaration of the fields and their bounds); a bad one is a ValueError
    naming the argument."""
    from pydantic import ValidationError

    from coral_graph.config._spec import ModelSettings

    try:
        ModelSettings.model_validate(settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"LLMAgent({where}=...): {err['msg']}") from None


def _on_event_loop() -> bool:
    """Whether this thread is running an (asyncio) event loop right now."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _describe(system_prompt: str, model: str) -> str:
    first = system_prompt.strip().split("\n", 1)[0].strip()
    if first:
        return first if len(first) <= 160 else first[:157] + "..."
    return f"an LLM agent ({model})"


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments.strip()
