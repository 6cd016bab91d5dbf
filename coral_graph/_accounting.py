"""What an agent records besides messages: model calls, tool calls and log lines.

:class:`_Accounting` is a base of :class:`~coral_graph.AgentContext`: the LLM
budget checks and reservations (through the run's ledger, ``coral_graph._ledger``),
the ``llm_called``, ``tool_called`` and ``agent_logged`` events and the usage
totals they add to. ``LLMAgent`` uses it; custom agents that call models may too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from coral_graph._events import AgentLogged, LLMCalled, ToolCalled
from coral_graph._ledger import Settled
from coral_graph._rules import _Rules

if TYPE_CHECKING:
    from coral_graph._ledger import Reservation

__all__: list[str] = []


class _Accounting(_Rules):
    """Model-call accounting and event recording of an agent's context."""

    __slots__ = ()

    # -- accounting for model calls (used by LLMAgent; open to custom agents) --

    def check_llm_budget(self, *, tokens: int = 0, cost_usd: float = 0.0, calls: int = 1) -> None:
        """Raise :class:`BudgetExceededError` (and stop the run) if a model call that
        may use up to ``tokens`` tokens and ``cost_usd`` dollars could exceed a budget,
        counting the calls in flight. Reserves nothing: agents that call models
        concurrently should use :meth:`reserve_llm_call` instead."""
        self._run.check_llm_budget(tokens=tokens, cost_usd=cost_usd, calls=calls)

    async def reserve_llm_call(
        self, *, prompt_tokens: int, max_tokens: int, cost_usd: float = 0.0
    ) -> Reservation:
        """Hold the worst case of one model call (its prompt, ``max_tokens`` of
        completion, that usage priced) against the run's budgets *before* making it.

        Pass the reservation to :meth:`record_llm_call` when the call ends, whether
        it succeeded, failed or was cancelled: the call is then counted and the
        reservation settled. While the call fits only once other calls in flight have
        settled, this waits for them. Raises :class:`BudgetExceededError` (and stops
        the run) when the call cannot fit; nothing is held then.
        """
        return await self._run.reserve_llm(
            prompt_tokens=prompt_tokens, completion_tokens=max_tokens, cost_usd=cost_usd
        )

    def record_llm_call(
        self,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        latency_s: float,
        outcome: str = "ok",
        error: str | None = None,
        attempt: int = 1,
        request: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
        reservation: Reservation | None = None,
        price: float | None = None,
    ) -> Settled:
        """Record one model call: an ``llm_called`` event and the usage totals; return
        what was counted.

        ``attempt``, ``request`` (the prompt as sent) and ``response`` are kept on
        the event for inspection (see :class:`~coral_graph.LLMCalled`). With the
        ``reservation`` it was made under, the usage is settled against it (clamped
        to what the request could have used: see :mod:`coral_graph._ledger`); a
        failed or cancelled call (``outcome != "ok"``) counts as a call with no
        tokens. ``price`` re-prices a clamped report. Without a reservation the usage
        is counted as reported."""
        run = self._run
        if reservation is None:
            run.record_llm_spend(prompt_tokens + completion_tokens, cost_usd)
        else:
            if outcome != "ok":
                run.ledger.release(reservation)
                prompt_tokens = completion_tokens = 0
                cost_usd = 0.0
            else:
                settled = run.ledger.settle(
                    reservation,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost_usd,
                    price=price,
                )
                prompt_tokens = settled.prompt_tokens
                completion_tokens = settled.completion_tokens
                cost_usd = settled.cost_usd
                if settled.note is not None:
                    error = settled.note if error is None else f"{error}; {settled.note}"
            run.ledger_changed()
        slot = self._slot
        current = slot.current if slot is not None else None
        if slot is not None:
            slot.usage.add_llm_call(prompt_tokens, completion_tokens, cost_usd, latency_s)
            if outcome != "ok":
                slot.usage.llm_errors += 1
        r = self._r
        r.emit(
            LLMCalled(
                self.run_id,
                r.next_seq(),
                time.time(),
                self.name,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                latency_s,
                outcome,
                error,
                current.id if current is not None else None,
                attempt,
                request,
                response,
            )
        )
        return Settled(prompt_tokens, completion_tokens, cost_usd, error)

    def record_tool_call(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        result: str,
        ok: bool,
        duration_s: float,
        thread_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Record one tool call of a model as a ``tool_called`` event."""
        if not ok and self._slot is not None:
            self._slot.usage.tool_errors += 1
        r = self._r
        r.emit(
            ToolCalled(
                self.run_id,
                r.next_seq(),
                time.time(),
                self.name,
                thread_id,
                tool,
                arguments,
                result,
                ok,
                duration_s,
                message_id,
            )
        )

    def log(self, text: str, *, source: str = "agent", data: dict[str, Any] | None = None) -> None:
        """Record a line about this agent that is not a message, as an ``agent_logged``
        event: a process's output (``source="stdout"``/``"stderr"``), what happened
        to its connection (``"mcp"``), or anything else worth keeping."""
        r = self._r
        r.emit(AgentLogged(self.run_id, r.next_seq(), time.time(), self.name, source, text, data))
