"""One run: threads, inboxes, workers, budgets, quiescence and the stop reason.

Routing model (the hot path):

* Every agent has a FIFO inbox (a deque, created on its first delivery) and at most
  one worker task, spawned on that first delivery: an idle agent costs no task
  and no inbox. The worker handles one delivery at a time; agents run
  concurrently. Per (sender, recipient) order holds because a send appends to the
  recipient's inbox synchronously, in program order.
* Sends never block (so two agents flooding each other cannot deadlock); memory
  is bounded by ``max_inbox`` per agent (the sender gets :class:`InboxFullError`,
  nothing is dropped) and by the run's message budget.
* Quiescence is exact: ``pending`` counts queued deliveries, ``busy`` counts agents
  inside a turn (or a loop agent not waiting). Both reach zero only when nothing
  can happen any more; it is checked where they change, never by sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from coral_graph._budgets import Budgets
from coral_graph._context import AgentContext
from coral_graph._errors import BudgetExceededError, RuntimeClosedError, TurnTimeoutError
from coral_graph._events import (
    AgentAdded,
    AgentErrored,
    DeliveryHandled,
    Event,
    MessageSent,
    RunFinished,
    RunStarted,
    ThreadCreated,
)
from coral_graph._model import AgentUsage, Message, Thread
from coral_graph._types import USER, AgentName, RunId, ThreadId

if TYPE_CHECKING:
    from coral_graph._graph import AgentGraph, AgentSpec
    from coral_graph._results import RunResult
    from coral_graph._runtime import Runtime


class _Slot:
    """Per-agent state inside a run."""

    __slots__ = (
        "active",
        "ctx",
        "current",
        "exited",
        "inbox",
        "name",
        "restarts",
        "scope",
        "spec",
        "timed_out",
        "turn_started",
        "usage",
        "waiter",
        "worker",
    )

    def __init__(self, name: AgentName, spec: AgentSpec | None) -> None:
        self.name = name
        self.spec = spec
        self.inbox: deque[Message] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.worker = False
        self.active = False
        self.usage = AgentUsage()
        self.current: Message | None = None
        self.turn_started = 0.0
        self.scope: anyio.CancelScope | None = None
        self.timed_out = False
        self.restarts = 0
        # A loop agent whose run() has returned: nothing reads its inbox any more.
        self.exited = False
        self.ctx: AgentContext = None  # type: ignore[assignment]

    def release(self) -> None:
        """Drop what a finished run no longer needs (see :meth:`_Run.take_result`)."""
        self.inbox = None
        self.current = None
        self.waiter = None
        self.scope = None


def _emit_nothing(event: Event) -> None:
    """A released run's ``emit``: nothing listens any more."""


class _Run:
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
        sinks: list[Callable[[Event], None]],
        on_sink_error: Callable[[Callable[[Event], None], BaseException], None],
        runtime: Runtime,
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
        self.max_messages = budgets.max_messages if budgets.max_messages is not None else 1 << 62
        self.max_turns = budgets.max_turns if budgets.max_turns is not None else 1 << 62
        self._adj = graph.nx._adj
        self._nodes = graph.nx._node
        self.threads: dict[ThreadId, Thread] = {}
        self._thread_ids = itertools.count(1)
        self.slots: dict[str, _Slot] = {}
        self.events: list[Event] = []
        self.next_seq = itertools.count(1).__next__
        self.pending = 0
        self.busy = 0
        self.messages_sent = 0
        self.llm_calls = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.finished = False
        self.stop_reason: str | None = None
        self.answer_msg: Message | None = None
        self.error: str | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tg: TaskGroup | None = None
        self._watched: list[_Slot] = []
        self._sinks = sinks
        self._on_sink_error = on_sink_error
        events_append = self.events.append
        # The store, when it takes batches (see Runtime._recorder): events are
        # appended to its queue here, sparing a call per event.
        rec = runtime._recorder
        self.rec_q: deque[Any] | None = rec.batch_queue if rec is not None else None
        self.rec_lim = rec.batch_size if rec is not None else 0
        run = self

        def emit(event: Event) -> None:
            publish(event)
            rq = run.rec_q
            if rq is not None:
                rq.append(event)
                if len(rq) >= run.rec_lim:
                    run.rec_drain()

        def publish(event: Event) -> None:
            """Into the run's events and to the subscribers (not the recorder)."""
            events_append(event)
            if sinks:
                broken: list[tuple[Callable[[Event], None], Exception]] | None = None
                for sink in sinks:
                    try:
                        sink(event)
                    except Exception as exc:
                        # Detached after the loop: removing it now would shift the
                        # list and the next sink would miss this event.
                        if broken is None:
                            broken = []
                        broken.append((sink, exc))
                if broken is not None:
                    for bad, err in broken:
                        on_sink_error(bad, err)

        self.emit = emit
        self.publish = publish
        entry_adj: dict[str, Any] = {e: {} for e in entry}
        self.user_ctx = AgentContext(self, None, USER, entry_adj, False)

    # -- graph lookups --------------------------------------------------------

    def is_agent(self, name: str) -> bool:
        return name in self._nodes

    def agent_names(self) -> list[str]:
        return list(self._nodes)

    def description(self, name: str) -> str:
        node = self._nodes.get(name)
        return node["spec"].description if node is not None else ""

    def check_active(self) -> None:
        if self.finished:
            raise RuntimeClosedError(
                f"run {self.run_id} has ended ({self.stop_reason}); nothing more can happen in it"
            )

    # -- slots, threads, deliveries ---------------------------------------------

    def slot(self, name: str) -> _Slot:
        slot = self.slots.get(name)
        if slot is None:
            node = self._nodes[name]
            spec: AgentSpec = node["spec"]
            slot = _Slot(AgentName(name), spec)
            slot.ctx = AgentContext(
                self, slot, AgentName(name), self._adj[name], name in self._answerers
            )
            self.slots[name] = slot
        return slot

    def ensure_inbox(self, slot: _Slot) -> deque[Message]:
        inbox = slot.inbox
        if inbox is None:
            inbox = slot.inbox = deque()
        return inbox

    def new_thread(self, name: str, creator: AgentName, members: list[AgentName]) -> Thread:
        tid = ThreadId(f"t-{next(self._thread_ids)}")
        th = Thread(tid, name, creator, members, time.time())
        self.threads[tid] = th
        return th

    def deliver(self, name: str, msg: Message) -> None:
        """Queue one delivery of ``msg`` for ``name`` (used by the task post and resume;
        ``send_message`` inlines the same steps)."""
        slot = self.slots.get(name)
        if slot is None:
            slot = self.slot(name)
        inbox = slot.inbox
        if inbox is None:
            inbox = slot.inbox = deque()
        inbox.append(msg)
        self.pending += 1
        fut = slot.waiter
        if fut is not None:
            slot.waiter = None
            if not fut.done():
                fut.set_result(None)
        elif not slot.worker:
            self.wake(slot)

    def wake(self, slot: _Slot) -> None:
        """Start the worker of a handler-style agent that has none yet."""
        if self.finished:
            return
        spec = slot.spec
        if spec is not None and not spec.is_loop:
            self._spawn(slot)
        elif slot.exited:
            # Nobody will take this delivery (the loop agent has returned): it stays
            # in the inbox, bounded by max_inbox, but is no work that keeps the run
            # from going idle.
            self.pending -= 1

    def _spawn(self, slot: _Slot) -> None:
        assert self.tg is not None
        slot.worker = True
        self.tg.start_soon(self._work, slot, name=f"coral-agent-{slot.name}")
        if self._watch_limit(slot) is not None and slot not in self._watched:
            # Respawned after a turn timeout: already watched.
            self._watched.append(slot)

    def set_active(self, slot: _Slot, active: bool) -> None:
        if slot.active == active:
            return
        slot.active = active
        if active:
            self.busy += 1
        else:
            self.busy -= 1
            if self.busy == 0 and self.pending == 0:
                self.finish("idle")

    # -- the worker -------------------------------------------------------------

    async def _work(self, slot: _Slot) -> None:
        spec = slot.spec
        assert spec is not None
        assert slot.inbox is not None
        inbox = slot.inbox
        handle = spec.agent.handle  # type: ignore[union-attr]
        ctx = slot.ctx
        usage = slot.usage
        emit = self.emit
        publish = self.publish
        append = self.events.append
        sinks = self._sinks
        rec_lim = self.rec_lim
        next_seq = self.next_seq
        run_id = self.run_id
        name = slot.name
        create_future = self.loop.create_future
        now = time.time
        max_turns = self.max_turns
        sleep0 = asyncio.sleep
        rt = self.rt
        n = 0
        t_last = now()
        try:
            with anyio.CancelScope() as scope:
                slot.scope = scope
                while True:
                    if rt._pressure:
                        # An event stream is full: pause between turns until it drains.
                        await rt._wait_relief()
                    if not inbox:
                        # The agent stays busy across consecutive turns and goes idle only
                        # here, with its inbox empty: the only point where quiescence can
                        # begin because of it.
                        if slot.active:
                            slot.active = False
                            self.busy -= 1
                            if self.busy == 0 and self.pending == 0:
                                self.finish("idle")
                        fut: asyncio.Future[None] = create_future()
                        slot.waiter = fut
                        await fut
                        t_last = now()
                        continue
                    if not slot.active:
                        slot.active = True
                        self.busy += 1
                    if self.finished:
                        # The run ended (answer, error, budget) during an earlier turn of
                        # the burst: handle nothing more.
                        return
                    if usage.turns >= max_turns:
                        self.stop_budget("turns", max_turns)
                        return
                    msg = inbox.popleft()
                    self.pending -= 1
                    usage.turns += 1
                    usage.deliveries += 1
                    slot.current = msg
                    # One clock read per turn: a turn starts when the previous one ended
                    # (or when the worker woke up or resumed after yielding).
                    t0 = slot.turn_started = t_last
                    try:
                        await handle(ctx, msg)
                        ok = True
                    except Exception as exc:
                        ok = False
                        if self.finished:
                            return
                        await self._agent_failed(slot, msg, exc)
                    slot.current = None
                    t_last = t1 = now()
                    seq = next_seq()
                    mid = msg.id
                    dur = t1 - t0
                    ev = DeliveryHandled(run_id, seq, t1, name, mid, "handle", ok, dur)
                    if sinks:
                        publish(ev)
                    else:
                        append(ev)
                    rq = self.rec_q
                    if rq is not None:
                        # The commonest event goes to the store as its plain tuple
                        # (kind, *fields), made here from locals: far cheaper than
                        # reading the fields back out of the event later.
                        rq.append(("delivery_handled", run_id, seq, t1, name, mid, "handle",
                                   ok, dur))  # fmt: skip
                        if len(rq) >= rec_lim:
                            self.rec_drain()
                    n += 1
                    if n & 63 == 0:
                        # Fairness: a handler that never suspends must not starve others.
                        await sleep0(0)
                        t_last = now()
            # Only the watchdog cancels this scope: the turn ran past its timeout.
            if slot.timed_out and not self.finished:
                slot.timed_out = False
                slot.worker = False
                msg = slot.current  # type: ignore[assignment]
                slot.current = None
                limit = self._watch_limit(slot) or 0.0
                err = TurnTimeoutError(slot.name, limit)
                t1 = now()
                emit(
                    DeliveryHandled(
                        run_id,
                        next_seq(),
                        t1,
                        name,
                        msg.id if msg else "",
                        "handle",
                        False,
                        t1 - slot.turn_started,
                    )
                )
                await self._agent_failed(slot, msg, err)
                self.set_active(slot, False)
                if not self.finished and inbox:
                    self._spawn(slot)
        finally:
            # A worker cancelled at the end of a run outlives it: its frame stays in
            # the traceback of its CancelledError, a reference cycle only the cyclic
            # GC frees. Let go of the run's event list and inbox now.
            del append, emit, publish, inbox

    async def _agent_failed(self, slot: _Slot, msg: Message | None, exc: BaseException) -> None:
        spec = slot.spec
        assert spec is not None
        slot.usage.errors += 1
        action = spec.on_error
        if action == "restart":
            slot.restarts += 1
            if slot.restarts > spec.max_restarts:
                action = "stop"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.emit(
            AgentErrored(
                self.run_id,
                self.next_seq(),
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
            self.error = f"{slot.name}: {type(exc).__name__}: {exc}"
            self.finish("error")
        elif action == "restart":
            hook = getattr(spec.agent, "on_restart", None)
            if hook is not None:
                try:
                    res = hook()
                    if inspect.isawaitable(res):
                        await res
                except Exception as hook_exc:
                    self.error = f"{slot.name}: on_restart failed: {hook_exc!r}"
                    self.finish("error")

    async def _loop_main(self, slot: _Slot) -> None:
        spec = slot.spec
        assert spec is not None
        runner = spec.agent.run  # type: ignore[union-attr]
        self.set_active(slot, True)
        while True:
            try:
                await runner(slot.ctx)
                break
            except Exception as exc:
                if self.finished:
                    return
                await self._agent_failed(slot, None, exc)
                if spec.on_error != "restart" or self.finished:
                    break
        slot.exited = True
        if slot.inbox:
            self.pending -= len(slot.inbox)  # see wake(): unread, and no more work
        self.set_active(slot, False)

    def _watch_limit(self, slot: _Slot) -> float | None:
        spec = slot.spec
        if spec is not None and spec.turn_timeout_s is not None:
            return spec.turn_timeout_s
        return self.budgets.turn_timeout_s

    async def _watchdog(self) -> None:
        default = self.budgets.turn_timeout_s
        limits = {d["spec"].turn_timeout_s for d in self._nodes.values()}
        limits.add(default)
        smallest = min((x for x in limits if x is not None), default=None)
        if smallest is None:
            return
        interval = max(0.005, min(smallest / 4, 1.0))
        clock = time.time
        while True:
            await anyio.sleep(interval)
            now = clock()
            for slot in self._watched:
                limit = self._watch_limit(slot)
                if (
                    slot.current is not None
                    and limit is not None
                    and now - slot.turn_started > limit
                    and slot.scope is not None
                    and not slot.timed_out
                ):
                    slot.timed_out = True
                    slot.scope.cancel()

    # -- budgets and the end of the run ----------------------------------------------

    def check_turns(self, slot: _Slot) -> None:
        """Before a loop agent's next turn: stop the run if it has had ``max_turns``."""
        if slot.usage.turns >= self.max_turns:
            self.stop_budget("turns", self.max_turns)
            raise BudgetExceededError("turns", self.max_turns, f"agent {slot.name}")

    def check_llm_budget(self, *, tokens: int, cost_usd: float, calls: int) -> None:
        self.check_active()
        b = self.budgets
        if b.max_llm_calls is not None and self.llm_calls + calls > b.max_llm_calls:
            self.stop_budget("llm_calls", b.max_llm_calls)
            raise BudgetExceededError("llm_calls", b.max_llm_calls)
        if b.max_tokens is not None and self.tokens + tokens > b.max_tokens:
            self.stop_budget("tokens", b.max_tokens)
            raise BudgetExceededError(
                "tokens", b.max_tokens, f"{self.tokens} used, the next call may use {tokens}"
            )
        if b.max_cost_usd is not None and self.cost_usd + cost_usd > b.max_cost_usd:
            self.stop_budget("cost", b.max_cost_usd)
            raise BudgetExceededError(
                "cost",
                b.max_cost_usd,
                f"${self.cost_usd:.6f} spent, the next call may cost ${cost_usd:.6f}",
            )

    def stop_budget(self, name: str, limit: float) -> None:
        self.finish(f"budget:{name}")

    def answer(self, msg: Message) -> None:
        if not self.finished:
            self.answer_msg = msg
            self.finish("answer")

    def finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop_reason = reason
        self.ended_at = time.time()
        if not self.done.done():
            self.done.set_result(None)

    def usage_by_agent(self) -> dict[str, AgentUsage]:
        return {name: slot.usage for name, slot in self.slots.items()}

    # -- start and stop ---------------------------------------------------------

    def start(self, tg: TaskGroup, restore: Callable[[_Run], None] | None = None) -> None:
        """Record the start, open the task thread, post the task, start loop agents.

        ``restore`` (used by ``coral_graph.store`` to resume a stored run) replaces
        all of that: it rebuilds threads, usage and counters on this run and
        re-queues the pending deliveries; only the watchdog is started here."""
        self.tg = tg
        if restore is not None:
            restore(self)
            tg.start_soon(self._watchdog, name="coral-watchdog")
            return
        graph = self.graph
        ts = self.started_at
        emit = self.emit
        emit(
            RunStarted(
                self.run_id,
                self.next_seq(),
                ts,
                self.task,
                list(self.entry),
                list(self.answer_by),
                graph.snapshot(),
                self.budgets.to_dict(),
            )
        )
        next_seq = self.next_seq
        run_id = self.run_id
        loops: list[str] = []
        for name, data in self._nodes.items():
            spec = data["spec"]
            emit(AgentAdded(run_id, next_seq(), ts, name, spec.description, spec.kind))
            if spec.is_loop:
                loops.append(name)
        members = [USER, *self.entry]
        th = self.new_thread("task", USER, members)
        emit(ThreadCreated(run_id, next_seq(), ts, th.id, th.name, USER, list(members)))
        seq = 1
        msg = Message(f"{th.id}#{seq}", th.id, seq, USER, self.task, tuple(self.entry), time.time())  # type: ignore[arg-type]
        th._messages.append(msg)
        emit(MessageSent(run_id, next_seq(), msg.timestamp, msg))
        for name in loops:
            slot = self.slot(name)
            self.ensure_inbox(slot)
            tg.start_soon(self._loop_main, slot, name=f"coral-loop-{name}")
        for e in self.entry:
            self.deliver(e, msg)
        tg.start_soon(self._watchdog, name="coral-watchdog")

    def record_finish(self) -> None:
        usage = {name: u.to_dict() for name, u in self.usage_by_agent().items()}
        ans = self.answer_msg
        self.emit(
            RunFinished(
                self.run_id,
                self.next_seq(),
                self.ended_at or time.time(),
                self.stop_reason or "error",
                ans.id if ans is not None else None,
                ans.content if ans is not None else None,
                self.error,
                usage,
            )
        )

    def rec_drain(self) -> None:
        """Hand the recorder's full batch over; a recorder that fails is detached
        (``Runtime.sink_errors``), as a failing subscriber is."""
        rec = self.rt._recorder
        if rec is None:
            self.rec_q = None
            return
        try:
            rec.drain()
        except Exception as exc:
            self.rt._recorder_failed(rec, exc)

    def take_result(self) -> RunResult:
        """The run's result; then let go of its bulk (events, threads, inboxes), which
        the result now holds. The run's own objects sit in reference cycles
        (contexts, slots, the frames of cancelled tasks) that only the cyclic GC
        frees: without this, every event and message of a finished run would wait for
        a full collection even after the caller dropped the result."""
        result = self.result()
        self.events = []
        self.threads = {}
        self.emit = self.publish = _emit_nothing
        self.rec_q = None
        for slot in self.slots.values():
            slot.release()
        self.slots = {}
        self._watched = []
        return result

    def result(self) -> RunResult:
        from coral_graph._results import RunResult

        ans = self.answer_msg
        return RunResult(
            run_id=self.run_id,
            stop_reason=self.stop_reason or "error",
            answer=ans.content if ans is not None else None,
            answer_message=ans,
            error=self.error,
            usage=self.usage_by_agent(),
            messages=self.messages_sent,
            duration_s=(self.ended_at or time.time()) - self.started_at,
            threads=dict(self.threads),
            events=self.events,
        )
