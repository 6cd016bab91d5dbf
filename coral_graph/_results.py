"""What a run gives back: its result, and the handle of a run started in the background."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from coral_graph._errors import RuntimeClosedError
from coral_graph._events import Event, LLMCalled
from coral_graph._model import AgentUsage, Message, Thread
from coral_graph._router import HandledLog, merge_events
from coral_graph._types import RunId, StopReason, ThreadId

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._run import _Run

__all__ = ["RunHandle", "RunResult", "RunSnapshot", "explain_failures"]


def _all(n: int, word: str) -> str:
    return f"all {n} {word}s" if n != 1 else f"the one {word}"


def _cut(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain_failures(
    stop_reason: StopReason,
    error: str | None,
    answered: bool,
    usage: dict[str, AgentUsage],
    events: Iterable[object],
) -> tuple[StopReason, str | None]:
    """The stop reason and error a run reports, given its failures. A run without an
    answer that stopped ``idle`` or on a budget while *every* model call failed
    stopped because of those failures: it reports ``error``, with the first failure
    in the error text ("all 6 LLM calls failed: …"). Other failures (some calls, a
    turn that raised) keep the stop reason; they are counted per agent in the usage
    (``llm_errors``, ``tool_errors``, ``errors``) and shown wherever the run is."""
    if answered or not (stop_reason == "idle" or stop_reason.startswith("budget:")):
        return stop_reason, error
    calls = bad = 0
    for u in usage.values():
        calls += u.llm_calls
        bad += u.llm_errors
    if not bad or bad != calls:
        return stop_reason, error
    # The run's events may hold plain tuples for the commonest kinds: test the type.
    first = next(
        (e.error or e.outcome for e in events if isinstance(e, LLMCalled) and e.outcome != "ok"),
        "",
    )
    then = f" (then the run stopped: {stop_reason})" if stop_reason != "idle" else ""
    return "error", _cut(f"{_all(calls, 'LLM call')} failed{then}: {first}")


@dataclass(slots=True)
class RunResult:
    """What a run produced.

    Attributes:
        run_id: the id under which its events (and transcript) are stored.
        stop_reason: ``answer``, ``idle``, ``budget:<name>``, ``error`` or ``cancelled``.
        answer: the content of the message that mentioned ``user``, if any.
        answer_message: that message.
        error: what went wrong, for ``error``.
        usage: per-agent turns, messages, deliveries, errors, LLM calls, tokens, cost.
        messages: messages posted in the run (the task excluded).
        duration_s: wall-clock seconds.
        threads: every thread of the run by id.
        events: every event of the run, in order.
    """

    # The run records its commonest events (message_sent, delivery_handled) as columns
    # (a HandledLog) when nobody subscribes; they are built on first access.

    run_id: RunId
    stop_reason: StopReason
    answer: str | None
    answer_message: Message | None
    error: str | None
    usage: dict[str, AgentUsage]
    messages: int
    duration_s: float
    threads: dict[ThreadId, Thread] = field(repr=False)
    log: list[Any] = field(repr=False)
    handled_log: HandledLog | None = field(default=None, repr=False)

    @property
    def events(self) -> list[Event]:
        """Every event of the run, in order."""
        if self.handled_log is not None:
            self.log = merge_events(self.run_id, self.log, self.handled_log)
            self.handled_log = None
        return self.log

    @property
    def total(self) -> AgentUsage:
        """The sum of every agent's usage."""
        out = AgentUsage()
        for u in self.usage.values():
            out.add(u)
        return out

    @property
    def cost_usd(self) -> float:
        """Total spend of the run in US dollars."""
        return sum(u.cost_usd for u in self.usage.values())

    @property
    def tokens(self) -> int:
        """Total tokens of the run."""
        return sum(u.tokens for u in self.usage.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without threads and events). ``failures`` counts what
        failed in the whole run: model calls, tool calls and agent turns."""
        total = self.total
        return {
            "run_id": self.run_id,
            "stop_reason": self.stop_reason,
            "answer": self.answer,
            "error": self.error,
            "messages": self.messages,
            "duration_s": self.duration_s,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "failures": {
                "llm_calls": total.llm_errors,
                "tool_calls": total.tool_errors,
                "turns": total.errors,
            },
            "usage": {k: v.to_dict() for k, v in self.usage.items()},
        }


class RunHandle:
    """A run started in the background with :meth:`Runtime.start`."""

    def __init__(self, run_id: RunId) -> None:
        self.run_id = run_id
        self._run: _Run | None = None
        self._result: RunResult | None = None
        self._exc: BaseException | None = None
        self._done = anyio.Event()
        self._started = anyio.Event()
        self._cancel_requested = False

    def _attach(self, run: _Run) -> None:
        self._run = run
        if self._cancel_requested:
            run.router.stop("cancelled")  # cancel() came before the run's task started

    @property
    def user(self) -> AgentContext:
        """The caller's own context in the run (posts as ``user``)."""
        if self._run is None:
            raise RuntimeClosedError("the run has not started yet; await handle.started()")
        return self._run.user_ctx

    async def started(self) -> None:
        """Wait until the task has been posted."""
        await self._started.wait()

    def cancel(self) -> None:
        """Stop the run; it ends with ``cancelled`` (also when it has not started yet)."""
        self._cancel_requested = True
        if self._run is not None:
            self._run.router.stop("cancelled")

    @property
    def result(self) -> RunResult | None:
        """The result once the run is over, else None."""
        return self._result

    async def wait(self) -> RunResult:
        """Wait for the end of the run and return its result."""
        await self._done.wait()
        if self._exc is not None:
            raise self._exc
        assert self._result is not None
        return self._result


@dataclass
class RunSnapshot:
    """The state of an interrupted run, to continue it (``Runtime.resume``).

    Attributes:
        events: the run's events so far (the new ones follow them).
        threads: every thread with its messages, by id.
        last_seq: the seq of the last event.
        started_at: when the run started (seconds since the epoch).
        usage: per-agent counters and spend.
        counters: run-wide counters: ``messages``, ``llm_calls``, ``tokens``, ``cost_usd``.
        pending: the deliveries not handled yet, ``(agent, message)`` in order.
        answer: the answer, when the run answered before it was interrupted.
    """

    events: list[Event]
    threads: dict[ThreadId, Thread]
    last_seq: int
    started_at: float | None = None
    usage: dict[str, AgentUsage] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    pending: list[tuple[str, Message]] = field(default_factory=list)
    answer: Message | None = None
