"""The run's LLM spending: reserved before a call, settled after it.

Why reserve: agents call models concurrently. Checking "spent so far + this call's
worst case <= limit" against *finished* calls lets every agent that checks while
the others are still waiting pass, so four agents under ``max_llm_calls: 1`` made
four calls. Here a call first reserves its worst case (one call, its prompt plus
``max_tokens`` tokens, that many tokens priced) against ``spent + reserved``; the
reservation holds until the call is settled with what it really used, or released.
So the limits hold whatever the concurrency: the sum of what is spent and what is
in flight never passes a limit. A call that fits what is spent but not beside the
calls in flight waits for them to settle (they often use less than their worst
case); the run stops on a budget only when the call could pass it with nothing in
flight.

Settling clamps what a provider reports to the reservation's bounds: a completion
can not be longer than the ``max_tokens`` the request carried, so a provider that
reports 20 M tokens against ``max_tokens: 1000`` counts 1,000 (the call's record
says what was reported). Negative or non-numeric reports count as zero.

The ledger keeps its numbers on the run's shared counters (the transport's
:class:`~coral_graph.transport.Counters`): in one process they are plain
arithmetic, exact under cooperative scheduling; a distributed transport reserves
on them atomically across processes (compare-and-set), so the same two steps hold
a budget across workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coral_graph._errors import BudgetExceededError

if TYPE_CHECKING:
    from coral_graph._budgets import Budgets
    from coral_graph.transport._base import Counters

__all__ = ["Ledger", "Reservation", "Settled"]


@dataclass(slots=True)
class Reservation:
    """One model call's worst case, held from before the call until it is settled."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    open: bool = True

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Settled:
    """What a settled call counted, and a note when a report had to be clamped."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    note: str | None = None


def _count(value: object) -> int:
    """A reported token count as a non-negative int (garbage counts 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(0, int(value))


def _money(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    v = float(value)
    return v if math.isfinite(v) and v > 0 else 0.0


# A prompt may count a little more than our estimate of it (tokenizers differ); a
# report beyond this factor of the estimate is not believed.
_PROMPT_SLACK = 4
_PROMPT_SLACK_MIN = 256


_BUDGET = {"llm_calls": "llm_calls", "tokens": "tokens", "cost_usd": "cost"}


class Ledger:
    """LLM calls, tokens and cost of one run, reserved and settled on the run's
    shared counters (:class:`~coral_graph.transport.Counters`, which every process of
    a distributed run shares), against its budgets.

    The counters hold what is spent plus what is reserved; the ledger also keeps
    what this process has in flight, to tell "wait for a call to settle" from "the
    budget is spent". (A call that fits only once calls in flight in *another*
    process have settled stops the run: never an overspend, at worst an early stop.)
    """

    __slots__ = ("counters", "limits", "reserved_calls")

    def __init__(self, counters: Counters, budgets: Budgets) -> None:
        self.counters = counters
        self.limits: dict[str, float | None] = {
            "llm_calls": budgets.max_llm_calls,
            "tokens": budgets.max_tokens,
            "cost_usd": budgets.max_cost_usd,
        }
        # Calls of this process in flight: while there are some, a call that does
        # not fit waits for them instead of stopping the run.
        self.reserved_calls = 0

    @property
    def calls(self) -> int:
        """Calls made or in flight."""
        return int(self.counters.value("llm_calls"))

    @property
    def tokens(self) -> int:
        """Tokens used or reserved."""
        return int(self.counters.value("tokens"))

    async def reserve(
        self, *, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> Reservation | None:
        """Hold one call's worst case on the counters.

        Returns the reservation; or ``None`` when it does not fit while calls of
        this process are in flight: wait until one of them is settled (they may use
        less than their worst case) and ask again. Raises
        :class:`BudgetExceededError` (holding nothing) when it does not fit with
        none in flight: the budget is spent."""
        p, c, usd = _count(prompt_tokens), _count(completion_tokens), _money(cost_usd)
        counters = self.counters
        taken: list[tuple[str, float]] = []
        for name, amount in (("llm_calls", 1), ("tokens", p + c), ("cost_usd", usd)):
            limit = self.limits[name]
            if await counters.reserve(name, amount, limit):
                taken.append((name, amount))
                continue
            for back, held in taken:
                counters.release_nowait(back, held)
            if self.reserved_calls:
                return None
            assert limit is not None
            raise BudgetExceededError(_BUDGET[name], limit, self._detail(name, amount))
        self.reserved_calls += 1
        return Reservation(1, p, c, usd)

    def check(self, *, calls: int, tokens: int, cost_usd: float) -> None:
        """Raise :class:`BudgetExceededError` if spending this now could pass a limit
        (counting what is spent and reserved); hold nothing."""
        counters = self.counters
        for name, amount in (("llm_calls", calls), ("tokens", tokens), ("cost_usd", cost_usd)):
            limit = self.limits[name]
            if limit is not None and counters.value(name) + amount > limit:
                raise BudgetExceededError(_BUDGET[name], limit, self._detail(name, amount))

    def spend(self, *, tokens: int, cost_usd: float) -> None:
        """Count one call made without a reservation, as reported."""
        counters = self.counters
        counters.reserve_nowait("llm_calls", 1, None)
        counters.reserve_nowait("tokens", tokens, None)
        counters.reserve_nowait("cost_usd", cost_usd, None)

    def _detail(self, name: str, amount: float) -> str:
        used = self.counters.value(name)
        if name == "llm_calls":
            return f"{int(used)} calls made"
        if name == "tokens":
            return f"{int(used)} used, the next call may use {int(amount)}"
        return f"${used:.6f} spent, the next call may cost ${amount:.6f}"

    def _free(self, res: Reservation) -> None:
        res.open = False
        self.reserved_calls -= res.calls

    def _adjust(self, name: str, reserved: float, spent: float) -> None:
        if spent < reserved:
            self.counters.release_nowait(name, reserved - spent)
        elif spent > reserved:
            self.counters.reserve_nowait(name, spent - reserved, None)

    def settle(
        self,
        res: Reservation,
        *,
        prompt_tokens: object,
        completion_tokens: object,
        cost_usd: object,
        price: float | None = None,
    ) -> Settled:
        """Turn a reservation into spending: the call's real usage, clamped to what
        the request could have used. ``price`` re-prices a clamped report; without
        it a clamped cost is capped at the reserved cost."""
        if not res.open:
            raise ValueError("this reservation was already settled or released")
        self._free(res)
        p_rep, c_rep, usd_rep = _count(prompt_tokens), _count(completion_tokens), _money(cost_usd)
        p_cap = max(res.prompt_tokens * _PROMPT_SLACK, res.prompt_tokens + _PROMPT_SLACK_MIN)
        p = min(p_rep, p_cap)
        c = min(c_rep, res.completion_tokens) if res.completion_tokens else c_rep
        note = None
        usd = usd_rep
        if p != p_rep or c != c_rep:
            note = (
                f"the provider reported {p_rep} prompt and {c_rep} completion tokens for a "
                f"request of about {res.prompt_tokens} prompt tokens and max_tokens "
                f"{res.completion_tokens}; counted {p} and {c}"
            )
            usd = price if price is not None else min(usd_rep, res.cost_usd)
        self._adjust("tokens", res.tokens, p + c)
        self._adjust("cost_usd", res.cost_usd, usd)
        return Settled(p, c, usd, note)

    def release(self, res: Reservation) -> None:
        """The call failed or was cancelled: it counts as a call made, with no tokens
        or cost (none were reported)."""
        if not res.open:
            return
        self._free(res)
        self._adjust("tokens", res.tokens, 0)
        self._adjust("cost_usd", res.cost_usd, 0.0)
