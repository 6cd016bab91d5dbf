"""Typed ids and small aliases shared across the package."""

from __future__ import annotations

import re
from typing import Final, Literal, NewType, cast, get_args

AgentName = NewType("AgentName", str)
"""An agent's name: ``^[a-z][a-z0-9_-]{0,63}$``."""

ThreadId = NewType("ThreadId", str)
"""A thread's id inside a run, e.g. ``t-3``."""

MessageId = NewType("MessageId", str)
"""A message's id inside a run: ``<thread id>#<seq>``, e.g. ``t-3#12``."""

RunId = NewType("RunId", str)
"""A run's id, e.g. ``run-5f2c0a9e1b7d``."""

USER: Final = AgentName("user")
"""The reserved name of the caller (a human or the program that started the run)."""

NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
"""Every agent name must match this pattern."""

ErrorPolicy = Literal["continue", "restart", "stop"]
"""What happens after an agent raises: record and go on, restart it, or stop the run."""

ERROR_POLICIES: Final[tuple[str, ...]] = get_args(ErrorPolicy)

DeliveryVia = Literal["handle", "wait"]
"""How an agent took a delivery: a turn of its handler, or ``wait_for_mentions``."""

BudgetName = Literal["messages", "turns", "time", "llm_calls", "tokens", "cost"]
"""The budgets a run can stop on (its stop reason is then ``budget:<name>``)."""

StopReason = Literal[
    "answer",
    "idle",
    "error",
    "cancelled",
    "budget:messages",
    "budget:turns",
    "budget:time",
    "budget:llm_calls",
    "budget:tokens",
    "budget:cost",
]
"""Why a run ended."""

STOP_REASONS: Final[tuple[StopReason, ...]] = get_args(StopReason)


def budget_stop(name: BudgetName) -> StopReason:
    """The stop reason of budget ``name``: ``budget:<name>``."""
    return cast("StopReason", f"budget:{name}")


MAX_THREAD_NAME: Final = 200
"""The longest thread name, in characters."""
