"""One run: its state, budgets and lifecycle.

:class:`_Run` owns

* the run's **state**: its graph, task, entry, budgets and limits, the router
  (``coral_graph._router``: delivery, events, quiescence) and the transport's
  view of the run (``coral_graph.transport``: threads, counters, the wire);
* **budgets** other than messages (turns; LLM calls, tokens and cost through
  :meth:`check_llm_budget` / :meth:`reserve_llm` and the ledger);
* the **lifecycle**: start, join (a run another process started), restore from a
  stored run, the final event and the result.

The workers — turns, error policies, turn timeouts — are its base class's
(``coral_graph._turns``). Nothing outside the core reads a ``_Run``'s attributes:
the store restores a run through :class:`RunSnapshot` and ``Runtime.resume``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from coral_graph._budgets import Budgets
from coral_graph._context import AgentContext
from coral_graph._errors import BudgetExceededError, RuntimeClosedError
from coral_graph._events import AgentAdded, RunFinished, RunStarted
from coral_graph._ledger import Ledger, Reservation
from coral_graph._model import AgentUsage, Message, Thread
from coral_graph._results import RunSnapshot
from coral_graph._router import Router, Slot
from coral_graph._turns import _Turns
from coral_graph._types import USER, AgentName, RunId, ThreadId
from coral_graph.transport._base import RunSpec

if TYPE_CHECKING:
    from coral_graph._graph import AgentGraph
    from coral_graph._results import RunResult
    from coral_graph._runtime import Runtime
    from coral_graph.transport._base import Transport

__all__: list[str] = []

_NO_LIMIT = 1 << 62


class _Run(_Turns):
    """One run of a runtime (see the module docstring for what it owns)."""

    def __init__(
        self,
        *,
        run_id: RunId,
        graph: AgentGraph,
        task: str,
        entry: list[AgentName],
        answer_by: list[AgentName],
        budgets: Budgets,
        max_inbox: int,
        max_content_chars: int,
        runtime: Runtime,
        transport: Transport,
        joining: bool = False,
    ) -> None:
        self.rt = runtime
        self.run_id = run_id
        self.graph = graph
        self.task = task
        self.entry = entry
        self.answer_by = answer_by
        self._answerers = frozenset(answer_by)
        self.budgets = budgets
        self.max_inbox = max_inbox
        self.max_content_chars = max_content_chars
        self.max_messages = budgets.max_messages
        self.max_turns = budgets.max_turns if budgets.max_turns is not None else _NO_LIMIT
        self.specs = graph._specs
        self.started_at = time.time()
        self.tg: TaskGroup | None = None
        self.link_finished = False  # the transport's finish() was awaited
        spec = RunSpec(
            graph, task, tuple(entry), tuple(answer_by), budgets, max_content_chars, joining
        )
        r = self.router = Router(
            run_id,
            spec,
            sinks=runtime._sinks,
            on_sink_error=runtime._on_sink_error,
            recorder=runtime._recorder,
            on_recorder_error=runtime._recorder_failed,
        )
        r.spawn = self._spawn
        r.make_slot = self.slot
        self.link = r.link = transport.open_run(r)
        self.threads = self.link.threads
        self.counters = self.link.counters
        self.ledger = Ledger(self.counters, budgets)
        self._ledger_settled: anyio.Event | None = None
        self.user_ctx = AgentContext(self, None, USER, dict.fromkeys(entry), False)

    # -- small views ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.router.finished

    @property
    def answer_msg(self) -> Message | None:
        """The message that answered the task (here, or in another process)."""
        return self.router.answer

    def is_agent(self, name: str) -> bool:
        return name in self.specs

    def description(self, name: str) -> str:
        spec = self.specs.get(name)
        return spec.description if spec is not None else ""

    def check_active(self) -> None:
        r = self.router
        if r.finished:
            raise RuntimeClosedError(
                f"run {self.run_id} has ended ({r.stop_reason}); nothing more can happen in it"
            )

    def usage_by_agent(self) -> dict[str, AgentUsage]:
        return {name: slot.usage for name, slot in self.router.slots.items()}

    # -- budgets --------------------------------------------------------------------

    def check_turns(self, slot: Slot) -> None:
        """Before a loop agent's next turn: stop the run if it has had ``max_turns``."""
        if slot.usage.turns >= self.max_turns:
            self.stop_budget("turns")
            raise BudgetExceededError("turns", self.max_turns, f"agent {slot.name}")

    def check_llm_budget(self, *, tokens: int, cost_usd: float, calls: int) -> None:
        self.check_active()
        try:
            self.ledger.check(calls=calls, tokens=tokens, cost_usd=cost_usd)
        except BudgetExceededError as exc:
            self.stop_budget(exc.budget)  # type: ignore[arg-type]
            raise

    async def reserve_llm(
        self, *, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> Reservation:
        """Hold one model call's worst case before it is made (see
        :mod:`coral_graph._ledger`), waiting for this process's calls in flight to
        settle while it fits only without them; when it cannot fit, stop the run and
        raise."""
        while True:
            self.check_active()
            try:
                res = await self.ledger.reserve(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost_usd,
                )
            except BudgetExceededError as exc:
                self.stop_budget(exc.budget)  # type: ignore[arg-type]
                raise
            if res is not None:
                return res
            if self._ledger_settled is None:
                self._ledger_settled = anyio.Event()
            await self._ledger_settled.wait()

    def ledger_changed(self) -> None:
        """A reservation was settled or released: wake the calls waiting for room."""
        ev = self._ledger_settled
        if ev is not None:
            self._ledger_settled = None
            ev.set()

    def record_llm_spend(self, tokens: int, cost_usd: float) -> None:
        self.ledger.spend(tokens=tokens, cost_usd=cost_usd)

    def answer(self, msg: Message) -> None:
        if not self.router.finished:
            self.router.stop("answer", answer=msg)

    # -- start and stop ---------------------------------------------------------------

    def start(self, tg: TaskGroup) -> None:
        """Record the start, open the task thread, post the task, start loop agents."""
        self.tg = tg
        r = self.router
        emit = r.emit
        next_seq = r.next_seq
        run_id = self.run_id
        ts = self.started_at
        emit(
            RunStarted(
                run_id,
                next_seq(),
                ts,
                self.task,
                list(self.entry),
                list(self.answer_by),
                self.graph.snapshot(),
                self.budgets.to_dict(),
            )
        )
        for name, spec in self.specs.items():
            emit(AgentAdded(run_id, next_seq(), ts, name, spec.description, spec.kind))
        if r.finished:
            return  # the transport could not start it (e.g. no process hosts an agent)
        # The task is posted by the user's context like any message, except that it
        # is not counted against max_messages (a context of its own that does not count).
        poster = AgentContext(self, None, USER, dict.fromkeys(self.entry), False, counts=False)
        try:
            th = poster.create_thread_nowait("task", self.entry)
        except NotImplementedError:
            # A transport whose state is shared over the network (see the seam).
            self._start_loops()
            tg.start_soon(self._post_task, poster, name=f"coral-post-{run_id}")
            return
        self._start_loops()
        poster.send_message_nowait(th, self.task, self.entry)

    async def _post_task(self, poster: AgentContext) -> None:
        """Post the task through a transport whose state is shared over the network."""
        try:
            th = await poster.create_thread("task", self.entry)
            await poster.send_message(th, self.task, self.entry)
        except Exception as exc:
            self.router.stop("error", f"the task could not be posted: {type(exc).__name__}: {exc}")

    def join(self, tg: TaskGroup) -> None:
        """Host this process's agents in a run another process started: loop agents
        hosted here start; handler agents wake on what the transport feeds them."""
        self.tg = tg
        self._start_loops()

    def restore(self, tg: TaskGroup, snap: RunSnapshot) -> None:
        """Continue a stored run: its events, threads, usage and counters come back,
        loop agents restart and every pending delivery is delivered again."""
        self.tg = tg
        r = self.router
        r.events.extend(snap.events)
        r.next_seq = itertools.count(snap.last_seq + 1).__next__
        restore_threads: Callable[[dict[ThreadId, Thread]], None] | None = getattr(
            self.threads, "restore", None
        )
        if restore_threads is None:
            raise RuntimeClosedError("this transport cannot restore a stored run")
        restore_threads(snap.threads)
        for key, value in snap.counters.items():
            self.counters.reserve_nowait(key, value, None)
        if snap.started_at is not None:
            self.started_at = snap.started_at
        for name, usage in snap.usage.items():
            if self.is_agent(name):
                self.slot(name).usage = usage
        if snap.answer is not None:
            # It answered before it was interrupted: only the end was not recorded.
            self.answer(snap.answer)
            return
        loops = self._start_loops()
        for agent, msg in snap.pending:
            if self.is_agent(agent):
                r.feed(AgentName(agent), msg)
        if not loops and r.pending == 0:
            r.stop("idle")

    def record_finish(self) -> None:
        from coral_graph._results import explain_failures

        r = self.router
        r.stop_reason, r.error = explain_failures(
            r.stop_reason or "error",
            r.error,
            self.answer_msg is not None,
            self.usage_by_agent(),
            r.events,
        )
        usage = {name: u.to_dict() for name, u in self.usage_by_agent().items()}
        ans = self.answer_msg
        r.emit(
            RunFinished(
                self.run_id,
                r.next_seq(),
                r.ended_at or time.time(),
                r.stop_reason or "error",
                ans.id if ans is not None else None,
                ans.content if ans is not None else None,
                r.error,
                usage,
            )
        )

    def take_result(self) -> RunResult:
        """The run's result; then let go of its bulk (events, threads, inboxes), which
        the result now holds. The run's objects sit in reference cycles (contexts,
        slots, the frames of cancelled tasks) that only the cyclic GC frees: without
        this, a finished run's events would wait for a full collection."""
        result = self.result()
        self.router.release()
        return result

    def result(self) -> RunResult:
        from coral_graph._results import RunResult

        r = self.router
        ans = self.answer_msg
        return RunResult(
            run_id=self.run_id,
            stop_reason=r.stop_reason or "error",
            answer=ans.content if ans is not None else None,
            answer_message=ans,
            error=r.error,
            usage=self.usage_by_agent(),
            messages=int(self.counters.value("messages")),
            duration_s=(r.ended_at or time.time()) - self.started_at,
            threads=dict(self.threads.all_nowait()),
            log=r.events,
            handled_log=r.handled_log,
        )
