"""The agent protocols and the ``agent`` decorator.

An agent is any object with ``async def handle(self, ctx, message)``: the runtime
calls it once per delivery, one delivery at a time per agent. A *loop-style* agent
instead has ``async def run(self, ctx)``: it is started with the run and pulls its
mentions with ``await ctx.wait_for_mentions(timeout)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, overload, runtime_checkable

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message

__all__ = ["Agent", "FunctionAgent", "LoopAgent", "agent"]


@runtime_checkable
class Agent(Protocol):
    """A handler-style agent: called once per delivery."""

    async def handle(self, ctx: AgentContext, message: Message) -> None:
        """Handle one delivery (a message that mentions this agent)."""


@runtime_checkable
class LoopAgent(Protocol):
    """A loop-style agent: runs for the whole run and pulls its mentions."""

    async def run(self, ctx: AgentContext) -> None:
        """Run until done; use ``await ctx.wait_for_mentions(timeout)`` to receive."""


HandlerFn = Callable[["AgentContext", "Message"], Awaitable[None]]


class FunctionAgent:
    """An agent made from a plain ``async def fn(ctx, message)``."""

    __slots__ = ("__wrapped__", "description", "handle", "name")

    def __init__(self, fn: HandlerFn, *, description: str | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@agent needs an async function `async def {getattr(fn, '__name__', 'fn')}"
                "(ctx, message)`"
            )
        self.__wrapped__ = fn
        # The function itself is the handler: no extra call layer on the hot path.
        self.handle = fn
        self.name = getattr(fn, "__name__", "agent")
        self.description = description if description is not None else (inspect.getdoc(fn) or "")

    def __repr__(self) -> str:
        return f"<agent {self.name}>"


@overload
def agent(fn: HandlerFn, /) -> FunctionAgent: ...
@overload
def agent(*, description: str | None = None) -> Callable[[HandlerFn], FunctionAgent]: ...


def agent(
    fn: HandlerFn | None = None, /, *, description: str | None = None
) -> FunctionAgent | Callable[[HandlerFn], FunctionAgent]:
    """Turn ``async def fn(ctx, message)`` into an agent.

    The docstring is the description unless ``description`` is given.

    >>> @agent
    ... async def echo(ctx, message):
    ...     '''Repeats what it hears.'''
    ...     await ctx.send_message(message.thread_id, message.content, [message.sender])
    >>> echo.description
    'Repeats what it hears.'
    """
    if fn is not None:
        return FunctionAgent(fn, description=description)
    return functools.partial(FunctionAgent, description=description)
