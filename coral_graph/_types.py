"""Typed ids and small aliases shared across the package."""

from __future__ import annotations

import re
from typing import Final, NewType

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

ErrorPolicy = str
"""What happens after an agent raises: ``"continue"``, ``"restart"`` or ``"stop"``."""

ERROR_POLICIES: Final = ("continue", "restart", "stop")
