"""Per-model concurrency caps: rate limits are real.

One :class:`anyio.CapacityLimiter` per model string and event loop, shared by every
agent of the process that calls that model. When agents ask different caps for
the same model, the smallest wins. Embedded models are capped at the size of the
engine's pool of contexts (``CORAL_GRAPH_EMBEDDED_CONTEXTS``): more would only
wait for a context in a worker thread; queueing here keeps worker threads free.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import anyio

__all__ = ["model_limiter", "set_model_concurrency"]

_defaults: dict[str, int] = {}
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, anyio.CapacityLimiter]]
_limiters = weakref.WeakKeyDictionary()


def set_model_concurrency(model: str, limit: int | None) -> None:
    """Cap the calls in flight to ``model`` for every agent (None removes the cap).

    >>> set_model_concurrency("openai/gpt-4o-mini", 8)
    >>> set_model_concurrency("openai/gpt-4o-mini", None)
    """
    if limit is None:
        _defaults.pop(model, None)
    elif limit < 1:
        raise ValueError("a concurrency cap is at least 1")
    else:
        _defaults[model] = limit


def _cap(model: str, requested: int | None) -> int | None:
    caps = [c for c in (requested, _defaults.get(model)) if c is not None]
    if model.startswith("embedded/"):
        from coral_graph.llm._embedded import embedded_contexts

        caps.append(embedded_contexts())
    return min(caps) if caps else None


@contextlib.asynccontextmanager
async def model_limiter(model: str, requested: int | None) -> AsyncIterator[None]:
    """Hold one of the slots of ``model`` for the duration of the block."""
    cap = _cap(model, requested)
    if cap is None:
        yield
        return
    loop = asyncio.get_running_loop()
    per_loop = _limiters.setdefault(loop, {})
    limiter = per_loop.get(model)
    if limiter is None:
        limiter = per_loop[model] = anyio.CapacityLimiter(cap)
    elif cap < limiter.total_tokens:
        limiter.total_tokens = cap
    async with limiter:
        yield
