"""Budgets: the limits of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Unset:
    """The default of a :class:`Budgets` argument that was not given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<default>"


_UNSET: Any = _Unset()
_DEFAULTS: dict[str, int | float | None] = {
    "max_messages": 100_000,
    "max_turns": None,
    "timeout_s": None,
    "turn_timeout_s": 600.0,
    "max_llm_calls": None,
    "max_tokens": None,
    "max_cost_usd": None,
}
_FIELDS = tuple(_DEFAULTS)


@dataclass(frozen=True, slots=True, init=False)
class Budgets:
    """Limits of a run. ``None`` means no limit.

    When a limit is reached the run stops with ``stop_reason == "budget:<name>"``,
    where name is ``messages``, ``turns``, ``time``, ``llm_calls``, ``tokens`` or
    ``cost``. LLM limits are *reserved* before a model call is made (its worst
    case: one call, its prompt plus ``max_tokens``, that usage priced) and settled
    with the real usage after it, so agents calling at once never spend past them
    together; a call that fits only once the calls in flight have settled waits
    for them.

    Attributes:
        max_messages: messages posted in the run (the task message excluded);
            100,000 unless given.
        max_turns: turns (handled deliveries) of any one agent.
        timeout_s: wall-clock seconds for the whole run.
        turn_timeout_s: seconds one turn of one agent may take before it is
            cancelled and recorded as a :class:`TurnTimeoutError`; 600 unless given.
        max_llm_calls: model calls across the run.
        max_tokens: prompt plus completion tokens across the run.
        max_cost_usd: spend across the run, in US dollars.

    The budgets of one run (``rt.run(..., budgets=...)``) override the runtime's
    field by field: every field given when they were made wins, even one given
    its default value; the others come from the runtime's budgets.

    >>> Budgets(max_messages=50).merged(Budgets(timeout_s=10)).timeout_s
    10
    >>> Budgets(max_messages=50).merged(Budgets(max_messages=100_000)).max_messages
    100000
    """

    max_messages: int | None
    max_turns: int | None
    timeout_s: float | None
    turn_timeout_s: float | None
    max_llm_calls: int | None
    max_tokens: int | None
    max_cost_usd: float | None
    given: frozenset[str] = field(init=False, repr=False, compare=False)
    """The fields given when these budgets were made (the others hold defaults)."""

    def __init__(
        self,
        max_messages: int | None = _UNSET,
        max_turns: int | None = _UNSET,
        timeout_s: float | None = _UNSET,
        turn_timeout_s: float | None = _UNSET,
        max_llm_calls: int | None = _UNSET,
        max_tokens: int | None = _UNSET,
        max_cost_usd: float | None = _UNSET,
    ) -> None:
        values = (
            max_messages,
            max_turns,
            timeout_s,
            turn_timeout_s,
            max_llm_calls,
            max_tokens,
            max_cost_usd,
        )
        given = []
        for name, value in zip(_FIELDS, values, strict=True):
            if value is _UNSET:
                value = _DEFAULTS[name]
            else:
                given.append(name)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                ):
                    raise ValueError(f"Budgets.{name} must be a number >= 0 or None, not {value!r}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "given", frozenset(given))

    def merged(self, override: Budgets | None) -> Budgets:
        """These budgets with every field that ``override`` was given."""
        if override is None:
            return self
        values = {k: getattr(self, k) for k in self.given}
        values.update({k: getattr(override, k) for k in override.given})
        return Budgets(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the seven limits."""
        return {name: getattr(self, name) for name in _FIELDS}
