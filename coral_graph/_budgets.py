"""Budgets: the limits of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Budgets:
    """Limits of a run. ``None`` means no limit.

    When a limit is reached the run stops with ``stop_reason == "budget:<name>"``,
    where name is ``messages``, ``turns``, ``time``, ``llm_calls``, ``tokens`` or
    ``cost``. LLM limits are checked *before* a model call is made, so a run never
    spends past them.

    Attributes:
        max_messages: messages posted in the run (the task message excluded).
        max_turns: turns (handled deliveries) of any one agent.
        timeout_s: wall-clock seconds for the whole run.
        turn_timeout_s: seconds one turn of one agent may take before it is
            cancelled and recorded as a :class:`TurnTimeoutError`.
        max_llm_calls: model calls across the run.
        max_tokens: prompt plus completion tokens across the run.
        max_cost_usd: spend across the run, in US dollars.

    >>> Budgets(max_messages=50).merged(Budgets(timeout_s=10)).timeout_s
    10
    """

    max_messages: int | None = 100_000
    max_turns: int | None = None
    timeout_s: float | None = None
    turn_timeout_s: float | None = 600.0
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_messages",
            "max_turns",
            "timeout_s",
            "turn_timeout_s",
            "max_llm_calls",
            "max_tokens",
            "max_cost_usd",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"Budgets.{name} must be a number >= 0 or None, not {value!r}")

    def merged(self, override: Budgets | None) -> Budgets:
        """These budgets with every field that ``override`` sets away from its default."""
        if override is None:
            return self
        default = Budgets()
        changes = {k: v for k, v in asdict(override).items() if v != getattr(default, k)}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)
