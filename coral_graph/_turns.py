"""The workers of a run: the turns of its agents, error policies and turn timeouts.

:class:`_Turns` (a base of ``coral_graph._run._Run``) owns

* the **workers**: a handler-style agent gets one worker task on its first
  delivery (an idle agent costs no task); the worker handles one delivery at a
  time and stays busy across consecutive turns. Loop-style agents get one task
  running their ``run(ctx)`` for the whole run;
* **error policies** (``continue``, ``restart``, ``stop``): what happens after an
  agent raised;
* **turn timeouts**: one timer per worker, re-armed lazily (no per-turn cost, no
  polling task), that cancels the worker's scope when a turn overruns.

The worker is the hot path of every run: it inlines the router's busy accounting
and writes the ``delivery_handled`` columns itself (see ``Router.handled``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from typing import TYPE_CHECKING, cast

import anyio

from coral_graph._context import AgentContext
from coral_graph._errors import BudgetExceededError, RuntimeClosedError, TurnTimeoutError
from coral_graph._events import AgentErrored
from coral_graph._router import Slot
from coral_graph._types import AgentName, BudgetName, ErrorPolicy, RunId, budget_stop

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from coral_graph._budgets import Budgets
    from coral_graph._graph import AgentGraph, AgentSpec
    from coral_graph._model import Message
    from coral_graph._router import Router
    from coral_graph._run import _Run
    from coral_graph._runtime import Runtime
    from coral_graph.transport._base import RunTransport

__all__: list[str] = []


def _ended_by_stop(exc: BaseException) -> bool:
    """Whether ``exc`` is what an operation raises because the run had stopped (or a
    budget ran out): a consequence of the stop, not the agent's own failure."""
    return isinstance(exc, RuntimeClosedError | BudgetExceededError)


def _is_cancel(exc: BaseException) -> bool:
    """Cancellation and Ctrl-C pass through an agent's turn; anything else it
    raises (``SystemExit`` included) is the agent's error."""
    return isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class())


class _Turns:
    """The workers of one run (see the module docstring); ``_Run`` sets the state."""

    rt: Runtime
    run_id: RunId
    graph: AgentGraph
    _answerers: frozenset[str]
    router: Router
    link: RunTransport
    budgets: Budgets
    specs: dict[str, AgentSpec]
    max_turns: int
    tg: TaskGroup | None

    def slot(self, name: str) -> Slot:
        slot = self.router.slots.get(name)
        if slot is None:
            slot = Slot(AgentName(name), self.specs[name])
            slot.ctx = AgentContext(
                cast("_Run", self),
                slot,
                AgentName(name),
                self.graph.succ_map(name),
                name in self._answerers,
            )
            self.router.slots[name] = slot
        return slot

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
        # delivery_handled while nothing subscribes: its columns and the store's plain
        # tuple (Router.handled says what they hold), written here without a call.
        sinks = r.sinks
        hl = r.handled_log
        h_seq, h_time, h_ref = hl.seq.append, hl.times.append, hl.refs.append
        next_seq = r.next_seq
        run_id = self.run_id
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
                        if not r.finished:
                            await self._agent_failed(slot, msg, exc)
                        elif _ended_by_stop(exc):
                            return  # the run ended under it: not the agent's failure
                        else:
                            # It failed on its own after the run stopped: recorded (with
                            # its delivery), no policy applied.
                            self._failed_after_stop(slot, msg, exc)
                    t_last = t1 = now()
                    if sinks:
                        handled(name, msg.id, "handle", ok, t0, t1)
                    else:
                        seq = next_seq()
                        mid = msg.id
                        h_seq(seq)
                        h_time(t0)
                        h_time(t1)
                        h_ref(key_ok if ok else key_failed)
                        h_ref(mid)
                        rq = r.rec_q
                        if rq is not None:
                            rq.append(
                                (
                                    "delivery_handled",
                                    run_id,
                                    seq,
                                    t1,
                                    name,
                                    mid,
                                    "handle",
                                    ok,
                                    t1 - t0,
                                )
                            )
                            if len(rq) >= r.rec_lim:
                                r.rec_drain()
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

    def _record_failure(
        self, slot: Slot, msg: Message | None, exc: BaseException, action: ErrorPolicy
    ) -> None:
        slot.usage.errors += 1
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

    def _failed_after_stop(self, slot: Slot, msg: Message | None, exc: BaseException) -> None:
        """An agent raised after the run had stopped (e.g. in a turn that went on after
        another agent's answer): a failure all the same, recorded; no policy applies
        (``continue``: nothing restarts or stops any more)."""
        self._record_failure(slot, msg, exc, "continue")

    async def _agent_failed(self, slot: Slot, msg: Message | None, exc: BaseException) -> None:
        spec = slot.spec
        assert spec is not None
        action = spec.on_error
        if action == "restart":
            slot.restarts += 1
            if slot.restarts > spec.max_restarts:
                action = "stop"
        self._record_failure(slot, msg, exc, action)
        r = self.router
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
                    if not _ended_by_stop(exc):
                        self._failed_after_stop(slot, None, exc)
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

    def stop_budget(self, name: BudgetName) -> None:
        self.router.stop(budget_stop(name))
