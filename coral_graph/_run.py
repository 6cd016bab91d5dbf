"""One run: its agents' turns, error policies, turn timeouts, budgets and lifecycle.

:class:`_Run` owns

* the **workers**: a handler-style agent gets one worker task on its first
  delivery (an idle agent costs no task); the worker handles one delivery at a
  time, and stays busy across consecutive turns. Loop-style agents get one task
  running their ``run(ctx)`` for the whole run;
* **error policies** (``continue``, ``restart``, ``stop``) and **turn timeouts**:
  one timer per worker, re-armed lazily (no per-turn cost, no polling task), that
  cancels the worker's scope when a turn overruns;
* **budgets** other than messages (turns; LLM calls, tokens and cost through
  :meth:`check_llm_budget` / :meth:`record_llm_call`);
* the **lifecycle**: start (or restore from a stored run), the final event, the result.

Delivery, events and quiescence are the router's (``coral_graph._router``); the
threads and the wire are the transport's (``coral_graph.transport``). Nothing
outside the core reads a ``_Run``'s attributes: the store restores a run through
:class:`RunSnapshot` and ``Runtime.resume``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from coral_graph._budgets import Budgets
from coral_graph._context import AgentContext
from coral_graph._errors import BudgetExceededError, RuntimeClosedError, TurnTimeoutError
from coral_graph._events import AgentAdded, AgentErrored, RunFinished, RunStarted
from coral_graph._ledger import Ledger, Reservation
from coral_graph._model import AgentUsage, Message, Thread
from coral_graph._results import RunSnapshot
from coral_graph._router import Router, Slot
from coral_graph._types import USER, AgentName, BudgetName, RunId, ThreadId, budget_stop

if TYPE_CHECKING:
    from coral_graph._graph import AgentGraph
    from coral_graph._results import RunResult
    from coral_graph._runtime import Runtime
    from coral_graph.transport._base import Transport

__all__: list[str] = []

_NO_LIMIT = 1 << 62


def _is_cancel(exc: BaseException) -> bool:
    """Cancellation and Ctrl-C pass through an agent's turn; anything else it
    raises (``SystemExit`` included) is the agent's error."""
    return isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class())


class _Run:
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
        self.answer_msg: Message | None = None
        self.started_at = time.time()
        self.tg: TaskGroup | None = None
        r = self.router = Router(
            run_id,
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

    def slot(self, name: str) -> Slot:
        slot = self.router.slots.get(name)
        if slot is None:
            slot = Slot(AgentName(name), self.specs[name])
            slot.ctx = AgentContext(
                self, slot, AgentName(name), self.graph.succ_map(name), name in self._answerers
            )
            self.router.slots[name] = slot
        return slot

    def usage_by_agent(self) -> dict[str, AgentUsage]:
        return {name: slot.usage for name, slot in self.router.slots.items()}

    # -- workers ------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        assert self.tg is not None
        slot.worker = True
        self.tg.start_soon(self._work, slot, name=f"coral-agent-{slot.name}")

    def _turn_limit(self, slot: Slot) -> float | None:
        spec = slot.spec
        if spec is not None and spec.turn_timeout_s is not None:
            return spec.turn_timeout_s
        return self.budgets.turn_timeout_s

    def _arm(self, slot: Slot, delay: float) -> None:
        slot.timer = self.router.loop.call_later(delay, self._turn_check, slot)

    def _turn_check(self, slot: Slot) -> None:
        """The worker's timer: cancel a turn past its limit, else look again when the
        current turn (or one starting now) would reach it."""
        slot.timer = None
        limit = self._turn_limit(slot)
        if self.router.finished or slot.scope is None or limit is None:
            return
        if slot.current is None:
            self._arm(slot, limit)
            return
        left = slot.turn_started + limit - time.time()
        if left <= 0:
            slot.scope.cancel()
        else:
            self._arm(slot, left)

    async def _work(self, slot: Slot) -> None:
        spec = slot.spec
        assert spec is not None
        r = self.router
        inbox = slot.inbox
        handle = spec.agent.handle  # type: ignore[union-attr]
        ctx = slot.ctx
        usage = slot.usage
        name = slot.name
        popleft = inbox.popleft
        new_future = r.loop.create_future
        handled = r.handled
        # The columns of a handled delivery while nothing listens (Router.handled
        # says what they hold): written here, without a call, on the hot path.
        sinks = r.sinks
        hl = r.handled_log
        h_seq, h_time, h_ref = hl.seq.append, hl.times.append, hl.refs.append
        next_seq = r.next_seq
        key_ok, key_failed = (name, "handle", True), (name, "handle", False)
        link = self.link
        ack = link.ack if link.needs_ack else None
        now = time.time
        max_turns = self.max_turns
        sleep0 = asyncio.sleep
        rt = self.rt
        n = 0
        t_last = now()
        limit = self._turn_limit(slot)
        msg: Message | None = None
        try:
            with anyio.CancelScope() as scope:
                slot.scope = scope
                if limit is not None:
                    self._arm(slot, limit)
                while True:
                    if rt._pressure:
                        # An event stream is full: pause between turns until it drains.
                        slot.current = None
                        await rt._wait_relief()
                    if not inbox:
                        # Busy across consecutive turns, idle only here with an empty
                        # inbox: the only point where quiescence can begin because of it.
                        slot.current = None
                        if slot.active:
                            slot.active = False
                            r.busy -= 1
                            if not r.busy and not r.pending and not r.finished:
                                link.quiet()
                        fut = slot.waiter = new_future()
                        await fut
                        t_last = now()
                        continue
                    if not slot.active:
                        slot.active = True
                        r.busy += 1
                    if r.finished:
                        # The run ended during an earlier turn of the burst.
                        return
                    if usage.turns >= max_turns:
                        self.stop_budget("turns")
                        return
                    msg = popleft()
                    r.pending -= 1
                    usage.turns += 1
                    usage.deliveries += 1
                    slot.current = msg
                    # One clock read per turn: a turn starts when the previous one ended
                    # (or when the worker woke up or resumed after yielding).
                    t0 = slot.turn_started = t_last
                    try:
                        await handle(ctx, msg)
                        ok = True
                    except BaseException as exc:
                        if _is_cancel(exc):
                            raise
                        ok = False
                        if r.finished:
                            return
                        await self._agent_failed(slot, msg, exc)
                    t_last = t1 = now()
                    if sinks or r.rec_q is not None:
                        handled(name, msg.id, "handle", ok, t0, t1)
                    else:
                        h_seq(next_seq())
                        h_time(t0)
                        h_time(t1)
                        h_ref(key_ok if ok else key_failed)
                        h_ref(msg.id)
                    if ack is not None:
                        ack(name, msg)
                    n += 1
                    if n & 63 == 0:
                        # Fairness: a handler that never suspends must not starve others.
                        # (Between turns no turn is current: the turn timer leaves it be.)
                        slot.current = None
                        await sleep0(0)
                        t_last = now()
            if scope.cancelled_caught and not r.finished:
                # Only the turn timer cancels this scope: the turn overran.
                await self._turn_timed_out(slot, limit or 0.0)
        finally:
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            # A worker cancelled at the end of a run outlives it in the traceback of its
            # CancelledError (a cycle only the cyclic GC frees): let go of what holds the
            # run's events and inbox.
            del inbox, msg, handled, ctx, popleft, hl, h_seq, h_time, h_ref

    async def _turn_timed_out(self, slot: Slot, limit: float) -> None:
        slot.worker = False
        msg = slot.current
        slot.current = None
        t1 = time.time()
        mid = msg.id if msg is not None else ""
        self.router.handled(slot.name, mid, "handle", False, slot.turn_started, t1)
        if msg is not None and self.link.needs_ack:
            self.link.ack(slot.name, msg)
        await self._agent_failed(slot, msg, TurnTimeoutError(slot.name, limit))
        self.router.set_active(slot, False)
        if not self.router.finished and slot.inbox:
            self._spawn(slot)

    async def _agent_failed(self, slot: Slot, msg: Message | None, exc: BaseException) -> None:
        spec = slot.spec
        assert spec is not None
        slot.usage.errors += 1
        action = spec.on_error
        if action == "restart":
            slot.restarts += 1
            if slot.restarts > spec.max_restarts:
                action = "stop"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        r = self.router
        r.emit(
            AgentErrored(
                self.run_id,
                r.next_seq(),
                time.time(),
                slot.name,
                msg.id if msg is not None else None,
                type(exc).__name__,
                str(exc),
                tb,
                action,
            )
        )
        if action == "stop":
            r.stop("error", f"{slot.name}: {type(exc).__name__}: {exc}")
        elif action == "restart":
            hook = getattr(spec.agent, "on_restart", None)
            if hook is not None:
                try:
                    res = hook()
                    if inspect.isawaitable(res):
                        await res
                except Exception as hook_exc:
                    r.stop("error", f"{slot.name}: on_restart failed: {hook_exc!r}")

    async def _loop_main(self, slot: Slot) -> None:
        spec = slot.spec
        assert spec is not None
        runner = spec.agent.run  # type: ignore[union-attr]
        r = self.router
        r.set_active(slot, True)
        while True:
            try:
                await runner(slot.ctx)
                break
            except BaseException as exc:
                if _is_cancel(exc):
                    raise
                if r.finished:
                    return
                await self._agent_failed(slot, None, exc)
                if spec.on_error != "restart" or r.finished:
                    break
        slot.exited = True
        r.drop_unread(slot)
        r.set_active(slot, False)

    def _start_loops(self) -> bool:
        assert self.tg is not None
        started = False
        for name, spec in self.specs.items():
            if spec.is_loop and self.link.hosts(AgentName(name)):
                self.tg.start_soon(self._loop_main, self.slot(name), name=f"coral-loop-{name}")
                started = True
        return started

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

    def stop_budget(self, name: BudgetName) -> None:
        self.router.stop(budget_stop(name))

    def answer(self, msg: Message) -> None:
        if not self.router.finished:
            self.answer_msg = msg
            self.router.stop("answer")

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
        # The task is posted by the user's context like any message, except that it
        # is not counted against max_messages (a context of its own that does not count).
        poster = AgentContext(self, None, USER, dict.fromkeys(self.entry), False, counts=False)
        th = poster.create_thread_nowait("task", self.entry)
        self._start_loops()
        poster.send_message_nowait(th, self.task, self.entry)

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
