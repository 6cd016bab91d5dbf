"""Runs: stop reasons, budgets, error policies, turn timeouts, cancellation, events."""

from __future__ import annotations

import gc
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import coral_graph as cg
from coral_graph import (
    AgentContext,
    AgentGraph,
    Budgets,
    ConfigError,
    Message,
    RuntimeClosedError,
    UnknownAgentError,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[AgentContext, Message], Awaitable[None]]


def make_graph(agents: dict[str, Any], edges: tuple[str, ...] = (), **opts: Any) -> AgentGraph:
    g = AgentGraph()
    for name, agent in agents.items():
        g.add_agent(name, agent, **opts.get(name, {}))
    for edge in edges:
        if "<>" in edge:
            a, b = edge.split("<>")
            g.connect(a, b, mutual=True)
        else:
            a, b = edge.split(">")
            g.connect(a, b)
    return g


async def run_graph(
    g: AgentGraph, entry: list[str], *, rt_budgets: Budgets | None = None, **kwargs: Any
) -> cg.RunResult:
    rt_opts = {k: kwargs.pop(k) for k in ("max_inbox", "max_content_chars") if k in kwargs}
    with anyio.fail_after(15):
        async with cg.open_runtime(g, budgets=rt_budgets, **rt_opts) as rt:
            return await rt.run("the task", entry=entry, **kwargs)


def of_kind(result: cg.RunResult, kind: str) -> list[Any]:
    return [e for e in result.events if e.kind == kind]


async def answer_task(ctx: AgentContext, message: Message) -> None:
    await ctx.send_message(message.thread_id, f"done: {message.content}", ["user"])


async def ping_pong(ctx: AgentContext, message: Message) -> None:
    """Replies to whoever wrote, forever (opens a thread on the task)."""
    if message.sender == "user":
        th = await ctx.create_thread("rally", ["b"])
        await ctx.send_message(th, "0", ["b"])
    else:
        await ctx.send_message(message.thread_id, str(int(message.content) + 1), [message.sender])


# -- answer ---------------------------------------------------------------------------


async def test_answer_ends_the_run_with_the_answer() -> None:
    result = await run_graph(make_graph({"a": answer_task}), ["a"])
    assert result.stop_reason == "answer"
    assert result.answer == "done: the task"
    assert result.answer_message is not None
    assert result.answer_message.sender == "a"
    assert result.answer_message.mentions == ("user",)
    assert result.error is None
    assert result.messages == 1
    assert result.run_id.startswith("run-")
    assert result.usage["a"].turns == 1
    assert result.usage["a"].messages_sent == 1
    last = result.events[-1]
    assert last.kind == "run_finished"
    assert (last.stop_reason, last.answer, last.answer_id) == (
        "answer",
        "done: the task",
        result.answer_message.id,
    )
    assert last.usage["a"]["turns"] == 1
    assert result.to_dict()["stop_reason"] == "answer"


async def test_answer_cancels_agents_still_busy() -> None:
    cancelled: list[str] = []

    async def slow(ctx: AgentContext, message: Message) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.name)
            raise

    async def a(ctx: AgentContext, message: Message) -> None:
        th = await ctx.create_thread("side", ["s"])
        await ctx.send_message(th, "work forever", ["s"])
        await anyio.wait_all_tasks_blocked()
        await ctx.send_message(message.thread_id, "42", ["user"])

    result = await run_graph(make_graph({"a": a, "s": slow}, ("a>s",)), ["a"])
    assert result.stop_reason == "answer"
    assert result.answer == "42"
    assert cancelled == ["s"]


async def test_answer_by_names_who_may_answer() -> None:
    async def a(ctx: AgentContext, message: Message) -> None:
        task = ctx.thread(message.thread_id)
        await ctx.add_participant(task, "b")
        await ctx.send_message(task, "b, answer", ["b"])

    result = await run_graph(
        make_graph({"a": a, "b": answer_task}, ("a>b",)), ["a"], answer_by=["b"]
    )
    assert result.stop_reason == "answer"
    assert result.answer == "done: b, answer"
    assert of_kind(result, "run_started")[0].answer_by == ["b"]


async def test_nothing_is_handled_after_the_answer() -> None:
    handled: list[str] = []

    async def a(ctx: AgentContext, message: Message) -> None:
        await ctx.add_participant(message.thread_id, "b")
        for i in range(5):
            await ctx.send_message(message.thread_id, str(i), ["b"])

    async def b(ctx: AgentContext, message: Message) -> None:
        handled.append(message.content)
        if message.content == "0":
            await ctx.send_message(message.thread_id, "final", ["user"])

    result = await run_graph(make_graph({"a": a, "b": b}, ("a>b",)), ["a"], answer_by=["b"])
    assert result.stop_reason == "answer"
    assert result.answer == "final"
    assert handled == ["0"]
    assert result.usage["b"].turns == 1
    finished = of_kind(result, "run_finished")[0]
    assert finished.seq == result.events[-1].seq


# -- idle -------------------------------------------------------------------------------


async def test_idle_when_nothing_is_queued_and_nobody_is_busy() -> None:
    async def a(ctx: AgentContext, message: Message) -> None:
        th = await ctx.create_thread("x", ["b", "c"])
        await ctx.send_message(th, "go", ["b", "c"])

    async def relay(ctx: AgentContext, message: Message) -> None:
        if ctx.name == "b":
            await ctx.send_message(message.thread_id, "to c", ["c"])

    async def sink(ctx: AgentContext, message: Message) -> None:
        return None

    result = await run_graph(
        make_graph({"a": a, "b": relay, "c": sink}, ("a>b", "a>c", "b>c")), ["a"]
    )
    assert result.stop_reason == "idle"
    assert result.answer is None
    assert result.answer_message is None
    assert result.usage["c"].turns == 2
    assert result.messages == 2


async def test_idle_waits_for_a_busy_agent_however_long_it_takes() -> None:
    gate = anyio.Event()
    order: list[str] = []

    async def slow(ctx: AgentContext, message: Message) -> None:
        await gate.wait()
        order.append("slow done")

    async def fast(ctx: AgentContext, message: Message) -> None:
        order.append("fast done")
        await anyio.wait_all_tasks_blocked()
        gate.set()

    result = await run_graph(make_graph({"s": slow, "f": fast}), ["s", "f"])
    assert result.stop_reason == "idle"
    assert order == ["fast done", "slow done"]


async def test_idle_run_with_a_loop_agent_that_returns_with_unread_mentions() -> None:
    # w never reads its mentions and returns: nothing can consume them any more,
    # so the run must end (idle) rather than hang.
    class Quitter:
        async def run(self, ctx: AgentContext) -> None:
            return None

    async def a(ctx: AgentContext, message: Message) -> None:
        await anyio.wait_all_tasks_blocked()  # let w return first
        th = await ctx.create_thread("x", ["w"])
        await ctx.send_message(th, "anyone?", ["w"])

    result = await run_graph(make_graph({"a": a, "w": Quitter()}, ("a>w",)), ["a"])
    assert result.stop_reason == "idle"


async def test_idle_run_with_a_loop_agent_that_returns_before_reading_the_task() -> None:
    class Quitter:
        async def run(self, ctx: AgentContext) -> None:
            return None

    result = await run_graph(make_graph({"w": Quitter()}), ["w"])
    assert result.stop_reason == "idle"


# -- budgets ------------------------------------------------------------------------------


async def test_budget_messages() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    result = await run_graph(g, ["a"], budgets=Budgets(max_messages=10))
    assert result.stop_reason == "budget:messages"
    assert result.messages == 10
    assert sum(u.messages_sent for u in result.usage.values()) == 10
    assert len(of_kind(result, "message_sent")) == 11  # the task is not counted
    assert of_kind(result, "agent_errored") == []  # a budget is not an agent error


async def test_budget_turns() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    result = await run_graph(g, ["a"], budgets=Budgets(max_turns=5))
    assert result.stop_reason == "budget:turns"
    assert max(u.turns for u in result.usage.values()) == 5
    assert of_kind(result, "agent_errored") == []


async def test_budget_turns_not_hit_when_work_ends_exactly_at_the_limit() -> None:
    async def a(ctx: AgentContext, message: Message) -> None:
        return None

    result = await run_graph(make_graph({"a": a}), ["a"], budgets=Budgets(max_turns=1))
    assert result.stop_reason == "idle"


async def test_budget_time() -> None:
    async def forever(ctx: AgentContext, message: Message) -> None:
        await anyio.sleep_forever()

    result = await run_graph(
        make_graph({"a": forever}), ["a"], budgets=Budgets(timeout_s=0.05, turn_timeout_s=None)
    )
    assert result.stop_reason == "budget:time"
    assert of_kind(result, "run_finished")[0].stop_reason == "budget:time"


async def test_runtime_budgets_apply_and_a_run_may_override_them() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    with anyio.fail_after(15):
        async with cg.open_runtime(g, budgets=Budgets(max_messages=4)) as rt:
            first = await rt.run("x", entry=["a"])
            second = await rt.run("x", entry=["a"], budgets=Budgets(max_messages=7))
            third = await rt.run("x", entry=["a"], budgets=Budgets(max_turns=2))
    assert (first.stop_reason, first.messages) == ("budget:messages", 4)
    assert (second.stop_reason, second.messages) == ("budget:messages", 7)
    assert third.stop_reason in {"budget:turns", "budget:messages"}
    assert third.messages <= 4


def test_a_run_override_wins_field_by_field_even_at_a_default_value() -> None:
    runtime = Budgets(max_messages=4, timeout_s=30)
    # 100,000 is max_messages' default: given explicitly, it still lifts the limit of 4.
    merged = runtime.merged(Budgets(max_messages=100_000, turn_timeout_s=None))
    assert merged.max_messages == 100_000
    assert merged.turn_timeout_s is None
    assert merged.timeout_s == 30  # not given by the override: the runtime's
    assert runtime.merged(Budgets()) == runtime  # nothing given, nothing changes
    assert Budgets(max_messages=5).given == {"max_messages"}
    assert Budgets(max_messages=5) == Budgets(max_messages=5, turn_timeout_s=600.0)
    assert Budgets().to_dict()["max_messages"] == 100_000


@pytest.mark.parametrize("value", ["10", True, [1]])
def test_budgets_reject_values_that_are_not_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="must be a number"):
        Budgets(max_turns=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["max_messages", "max_turns", "timeout_s", "max_cost_usd"])
def test_budgets_reject_negative_values(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Budgets(**{field: -1})


# -- agent failures and policies ------------------------------------------------------------


def boom_agent(fail_on: set[str]) -> tuple[Handler, list[str]]:
    handled: list[str] = []

    async def boom(ctx: AgentContext, message: Message) -> None:
        handled.append(message.content)
        if message.content in fail_on:
            raise ValueError(f"cannot handle {message.content}")

    return boom, handled


def feeder(n: int) -> Handler:
    async def feed(ctx: AgentContext, message: Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("feed", ["x"])
            for i in range(n):
                await ctx.send_message(th, str(i), ["x"])

    return feed


async def test_policy_continue_records_the_error_and_goes_on() -> None:
    boom, handled = boom_agent({"1"})
    g = make_graph({"f": feeder(3), "x": boom}, ("f>x",))
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "idle"
    assert handled == ["0", "1", "2"]
    errors = of_kind(result, "agent_errored")
    assert len(errors) == 1
    err = errors[0]
    assert (err.agent, err.error_type, err.action) == ("x", "ValueError", "continue")
    assert err.error == "cannot handle 1"
    assert err.message_id == "t-2#2"
    assert "Traceback" in err.traceback
    assert "in boom" in err.traceback
    assert "raise ValueError" in err.traceback
    assert result.usage["x"].errors == 1
    assert result.error is None
    failed = [e for e in of_kind(result, "delivery_handled") if not e.ok]
    assert [(e.agent, e.message_id) for e in failed] == [("x", "t-2#2")]


async def test_policy_stop_ends_the_run_with_error_and_handles_nothing_more() -> None:
    boom, handled = boom_agent({"1"})
    g = make_graph({"f": feeder(5), "x": boom}, ("f>x",), x={"on_error": "stop"})
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "x" in result.error
    assert "ValueError" in result.error
    assert "cannot handle 1" in result.error
    assert handled == ["0", "1"]
    assert [e.action for e in of_kind(result, "agent_errored")] == ["stop"]
    assert of_kind(result, "run_finished")[0].error == result.error


async def test_policy_restart_calls_on_restart_and_goes_on() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.restarts = 0
            self.handled: list[str] = []

        async def handle(self, ctx: AgentContext, message: Message) -> None:
            self.handled.append(message.content)
            if message.content in {"1", "3"}:
                raise RuntimeError("flaky")

        async def on_restart(self) -> None:
            self.restarts += 1

    flaky = Flaky()
    g = make_graph({"f": feeder(5), "x": flaky}, ("f>x",), x={"on_error": "restart"})
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "idle"
    assert flaky.restarts == 2
    assert flaky.handled == ["0", "1", "2", "3", "4"]
    assert [e.action for e in of_kind(result, "agent_errored")] == ["restart", "restart"]


async def test_policy_restart_gives_up_after_max_restarts() -> None:
    boom, handled = boom_agent({"0", "1", "2", "3"})
    g = make_graph(
        {"f": feeder(4), "x": boom}, ("f>x",), x={"on_error": "restart", "max_restarts": 2}
    )
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "error"
    assert [e.action for e in of_kind(result, "agent_errored")] == ["restart", "restart", "stop"]
    assert handled == ["0", "1", "2"]


async def test_failing_on_restart_hook_ends_the_run_with_error() -> None:
    class Bad:
        async def handle(self, ctx: AgentContext, message: Message) -> None:
            raise RuntimeError("first")

        def on_restart(self) -> None:
            raise RuntimeError("cannot restart")

    g = make_graph({"x": Bad()}, x={"on_error": "restart"})
    result = await run_graph(g, ["x"])
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "cannot restart" in result.error


async def test_a_protocol_error_inside_a_handler_is_recorded_not_raised() -> None:
    async def bad(ctx: AgentContext, message: Message) -> None:
        await ctx.send_message(message.thread_id, "hi", ["nobody"])

    result = await run_graph(make_graph({"a": bad}), ["a"])
    assert result.stop_reason == "idle"
    (err,) = of_kind(result, "agent_errored")
    assert err.error_type == "UnknownAgentError"


async def test_loop_agent_exception_under_each_policy() -> None:
    class Crash:
        def __init__(self) -> None:
            self.runs = 0

        async def run(self, ctx: AgentContext) -> None:
            self.runs += 1
            await ctx.wait_for_mentions()
            raise KeyError("crash")

    for policy, reason, runs in [("continue", "idle", 1), ("stop", "error", 1)]:
        crash = Crash()
        result = await run_graph(make_graph({"w": crash}, w={"on_error": policy}), ["w"])
        assert result.stop_reason == reason, policy
        assert crash.runs == runs
        (err,) = of_kind(result, "agent_errored")
        assert (err.agent, err.error_type, err.action, err.message_id) == (
            "w",
            "KeyError",
            policy,
            None,
        )
        assert "in run" in err.traceback


async def test_loop_agent_restart_runs_it_again() -> None:
    class Crash:
        def __init__(self) -> None:
            self.runs = 0

        async def run(self, ctx: AgentContext) -> None:
            self.runs += 1
            if self.runs == 1:
                raise KeyError("crash")
            msgs = await ctx.wait_for_mentions()
            await ctx.send_message(msgs[0].thread_id, "recovered", ["user"])

    crash = Crash()
    result = await run_graph(make_graph({"w": crash}, w={"on_error": "restart"}), ["w"])
    assert crash.runs == 2
    assert result.stop_reason == "answer"
    assert result.answer == "recovered"


# -- turn timeout -------------------------------------------------------------------------------


async def test_turn_timeout_is_recorded_and_the_agent_goes_on() -> None:
    handled: list[str] = []

    async def stuck(ctx: AgentContext, message: Message) -> None:
        handled.append(message.content)
        if message.content == "0":
            await anyio.sleep_forever()

    g = make_graph({"f": feeder(3), "x": stuck}, ("f>x",), x={"turn_timeout_s": 0.05})
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "idle"
    assert handled == ["0", "1", "2"]
    (err,) = of_kind(result, "agent_errored")
    assert (err.agent, err.error_type, err.action, err.message_id) == (
        "x",
        "TurnTimeoutError",
        "continue",
        "t-2#1",
    )
    assert "0.05" in err.error
    failed = [e for e in of_kind(result, "delivery_handled") if not e.ok]
    assert [e.message_id for e in failed] == ["t-2#1"]
    assert result.usage["x"].errors == 1


async def test_turn_timeout_from_budgets_with_policy_stop() -> None:
    async def stuck(ctx: AgentContext, message: Message) -> None:
        await anyio.sleep_forever()

    g = make_graph({"x": stuck}, x={"on_error": "stop"})
    result = await run_graph(g, ["x"], budgets=Budgets(turn_timeout_s=0.05))
    assert result.stop_reason == "error"
    assert result.error is not None
    assert "TurnTimeoutError" in result.error


async def test_turn_timeout_twice_then_recovery() -> None:
    handled: list[str] = []

    async def stuck(ctx: AgentContext, message: Message) -> None:
        handled.append(message.content)
        if message.content in {"0", "1"}:
            await anyio.sleep_forever()

    g = make_graph({"f": feeder(3), "x": stuck}, ("f>x",), x={"turn_timeout_s": 0.05})
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "idle"
    assert handled == ["0", "1", "2"]
    assert [e.error_type for e in of_kind(result, "agent_errored")] == ["TurnTimeoutError"] * 2


# -- cancellation --------------------------------------------------------------------------------


async def test_cancelling_the_caller_records_cancelled_and_propagates() -> None:
    seen: list[Any] = []
    started = anyio.Event()

    async def forever(ctx: AgentContext, message: Message) -> None:
        started.set()
        await anyio.sleep_forever()

    g = make_graph({"a": forever})
    after_run = False
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            rt.subscribe(seen.append)
            async with anyio.create_task_group() as tg:

                async def caller() -> None:
                    nonlocal after_run
                    await rt.run("t", entry=["a"])
                    after_run = True

                tg.start_soon(caller)
                await started.wait()
                tg.cancel_scope.cancel()
            assert rt.active_runs == []
    assert not after_run
    finished = [e for e in seen if e.kind == "run_finished"]
    assert [e.stop_reason for e in finished] == ["cancelled"]


async def test_cancellation_inside_a_handler_is_not_swallowed() -> None:
    # A handler that cancels its own scope is fine; the runtime's cancel passes through.
    async def forever(ctx: AgentContext, message: Message) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anyio.sleep_forever()
        await ctx.send_message(message.thread_id, "still here", ["user"])

    result = await run_graph(make_graph({"a": forever}), ["a"])
    assert result.answer == "still here"


async def test_move_on_after_around_run_cancels_it() -> None:
    seen: list[Any] = []

    async def forever(ctx: AgentContext, message: Message) -> None:
        await anyio.sleep_forever()

    g = make_graph({"a": forever})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            rt.subscribe(seen.append)
            with anyio.move_on_after(0.05) as scope:
                await rt.run("t", entry=["a"])
    assert scope.cancelled_caught
    assert [e.stop_reason for e in seen if e.kind == "run_finished"] == ["cancelled"]


async def test_run_handle_cancel() -> None:
    started = anyio.Event()

    async def forever(ctx: AgentContext, message: Message) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": forever})) as rt:
            handle = rt.start("t", entry=["a"])
            await started.wait()
            assert handle.result is None
            handle.cancel()
            result = await handle.wait()
    assert result.stop_reason == "cancelled"
    assert handle.result is result


async def test_run_handle_cancel_before_the_run_started() -> None:
    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": answer_task})) as rt:
            handle = rt.start("t", entry=["a"])
            handle.cancel()
            result = await handle.wait()
    assert result.stop_reason == "cancelled"
    assert result.answer is None


async def test_closing_the_runtime_cancels_background_runs() -> None:
    async def forever(ctx: AgentContext, message: Message) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": forever})) as rt:
            handle = rt.start("t", entry=["a"])
            await handle.started()
            assert rt.active_runs == [handle.run_id]
    result = await handle.wait()
    assert result.stop_reason == "cancelled"


# -- flooding ---------------------------------------------------------------------------------


def flooder(fanout: int) -> Handler:
    async def flood(ctx: AgentContext, message: Message) -> None:
        other = "b" if ctx.name == "a" else "a"
        if message.sender == "user":
            th = await ctx.create_thread("flood", [other])
        else:
            th = ctx.thread(message.thread_id)
        for i in range(fanout):
            await ctx.send_message(th, str(i), [other])

    return flood


@pytest.mark.parametrize(
    ("budgets", "reason"),
    [
        (Budgets(max_messages=2_000), "budget:messages"),
        (Budgets(max_turns=300), "budget:turns"),
        # No message limit: the default (100,000) can come first on a fast machine.
        (Budgets(timeout_s=0.3, max_messages=None), "budget:time"),
    ],
)
async def test_two_agents_flooding_each_other_terminate_by_budget(
    budgets: Budgets, reason: str
) -> None:
    g = make_graph({"a": flooder(3), "b": flooder(3)}, ("a<>b",))
    result = await run_graph(g, ["a"], budgets=budgets, max_inbox=1_000_000)
    assert result.stop_reason == reason


async def test_flooding_against_a_small_inbox_bound_does_not_deadlock() -> None:
    g = make_graph({"a": flooder(3), "b": flooder(3)}, ("a<>b",))
    result = await run_graph(g, ["a"], budgets=Budgets(max_messages=1_000), max_inbox=8)
    assert result.stop_reason == "budget:messages"
    errors = of_kind(result, "agent_errored")
    assert errors
    assert {e.error_type for e in errors} == {"InboxFullError"}
    # Every message posted was delivered or is still queued: nothing dropped.
    handled = len(of_kind(result, "delivery_handled"))
    assert handled <= result.messages + 1


# -- order ---------------------------------------------------------------------------------------


async def test_order_per_sender_and_recipient_is_kept() -> None:
    got: list[tuple[str, int]] = []

    def sender(n: int) -> Handler:
        async def send(ctx: AgentContext, message: Message) -> None:
            threads = [await ctx.create_thread(f"{ctx.name}-{k}", ["r"]) for k in range(3)]
            for i in range(n):
                await ctx.send_message(threads[i % 3], str(i), ["r"])
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()  # interleave with the other sender

        return send

    async def recv(ctx: AgentContext, message: Message) -> None:
        got.append((message.sender, int(message.content)))
        if len(got) % 5 == 0:
            await anyio.lowlevel.checkpoint()

    g = make_graph({"p": sender(200), "q": sender(200), "r": recv}, ("p>r", "q>r"))
    result = await run_graph(g, ["p", "q"])
    assert result.stop_reason == "idle"
    for who in ("p", "q"):
        assert [i for s, i in got if s == who] == list(range(200))
    assert len(got) == 400


# -- events ---------------------------------------------------------------------------


async def test_events_have_the_run_id_and_a_contiguous_global_seq() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    result = await run_graph(g, ["a"], budgets=Budgets(max_messages=6))
    assert [e.seq for e in result.events] == list(range(1, len(result.events) + 1))
    assert {e.run_id for e in result.events} == {result.run_id}
    kinds = [e.kind for e in result.events]
    assert kinds[0] == "run_started"
    assert kinds[1:3] == ["agent_added", "agent_added"]
    assert kinds[3] == "thread_created"
    assert kinds[4] == "message_sent"
    assert kinds[-1] == "run_finished"
    assert kinds.count("run_finished") == 1
    started = result.events[0]
    assert started.task == "the task"
    assert started.entry == ["a"]
    assert started.graph["edges"] == [["a", "b"], ["b", "a"]]
    assert started.budgets["max_messages"] == 6
    for e in result.events:
        assert cg.event_from_dict(cg.event_to_dict(e)) == e


async def test_event_stream_sees_every_event_of_the_run() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    streamed: list[Any] = []
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            async with rt.events() as stream, anyio.create_task_group() as tg:

                async def consume() -> None:
                    async for event in stream:
                        streamed.append(event)
                        if event.kind == "run_finished":
                            return

                tg.start_soon(consume)
                result = await rt.run("x", entry=["a"], budgets=Budgets(max_messages=50))
    assert streamed == result.events


async def test_event_stream_with_a_tiny_buffer_loses_nothing() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    streamed: list[Any] = []
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            async with rt.events(max_buffer=4) as stream, anyio.create_task_group() as tg:

                async def consume() -> None:
                    async for event in stream:
                        streamed.append(event)
                        await anyio.lowlevel.checkpoint()
                        if event.kind == "run_finished":
                            return

                tg.start_soon(consume)
                result = await rt.run("x", entry=["a"], budgets=Budgets(max_messages=300))
    assert result.stop_reason == "budget:messages"
    assert streamed == result.events


async def test_event_stream_filtered_by_run_and_ending_with_the_runtime() -> None:
    g = make_graph({"a": answer_task})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            first = rt.start("one", entry=["a"], run_id="run-one")
            stream = rt.events("run-two")
            everything = rt.events()
            await first.wait()
            second = await rt.run("two", entry=["a"], run_id="run-two")
    # After the runtime closed, both streams end once drained.
    only_two = [e async for e in stream]
    all_events = [e async for e in everything]
    assert only_two == second.events
    assert {e.run_id for e in all_events} <= {"run-one", "run-two"}
    assert all_events[-len(second.events) :] == second.events


async def test_a_failing_subscriber_is_detached_and_others_see_every_event() -> None:
    seen: list[Any] = []
    calls = 0

    def broken(event: Any) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("subscriber bug")

    g = make_graph({"a": answer_task})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            rt.subscribe(broken)
            rt.subscribe(seen.append)
            result = await rt.run("x", entry=["a"])
    assert result.stop_reason == "answer"
    assert calls == 1
    assert len(rt.sink_errors) == 1
    assert isinstance(rt.sink_errors[0][1], RuntimeError)
    assert seen == result.events


async def test_unsubscribe() -> None:
    seen: list[Any] = []
    g = make_graph({"a": answer_task})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            stop = rt.subscribe(seen.append)
            first = await rt.run("x", entry=["a"])
            stop()
            await rt.run("y", entry=["a"])
    assert seen == first.events


async def test_store_sink_given_to_open_runtime() -> None:
    class Store:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def on_event(self, event: Any) -> None:
            self.events.append(event)

    store = Store()
    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": answer_task}), store=store) as rt:
            result = await rt.run("x", entry=["a"])
    assert store.events == result.events


# -- the API around runs ---------------------------------------------------------------------


def test_sync_run() -> None:
    result = cg.run(make_graph({"a": answer_task}), "hello", entry=["a"])
    assert isinstance(result, cg.RunResult)
    assert (result.stop_reason, result.answer) == ("answer", "done: hello")


def test_sync_run_with_budgets_and_graph_entry() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    g.entry = ["a"]  # type: ignore[list-item]
    result = cg.run(g, "go", budgets=Budgets(max_messages=3))
    assert (result.stop_reason, result.messages) == ("budget:messages", 3)


async def test_run_handle() -> None:
    gate = anyio.Event()

    async def a(ctx: AgentContext, message: Message) -> None:
        await gate.wait()
        await ctx.send_message(message.thread_id, "ok", ["user"])

    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": a})) as rt:
            handle = rt.start("t", entry=["a"], run_id="run-mine")
            assert handle.run_id == "run-mine"
            await handle.started()
            assert handle.user.run_id == "run-mine"
            assert rt.active_runs == ["run-mine"]
            gate.set()
            result = await handle.wait()
            assert rt.active_runs == []
    assert result.run_id == "run-mine"
    assert result.answer == "ok"


async def test_run_handle_user_before_start() -> None:
    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": answer_task})) as rt:
            handle = rt.start("t", entry=["a"])
            with pytest.raises(RuntimeClosedError):
                _ = handle.user
            await handle.wait()


async def test_run_handle_carries_a_startup_error() -> None:
    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": answer_task})) as rt:
            handle = rt.start("t", entry=["nope"])
            with pytest.raises(UnknownAgentError):
                await handle.wait()


async def test_run_argument_errors() -> None:
    g = make_graph({"planner": answer_task})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            with pytest.raises(UnknownAgentError) as info:
                await rt.run("t", entry=["planer"])
            assert info.value.suggestion == "planner"
            with pytest.raises(ConfigError, match="entry"):
                await rt.run("t")
            with pytest.raises(TypeError):
                await rt.run(42, entry=["planner"])  # type: ignore[arg-type]
            with pytest.raises(UnknownAgentError):
                await rt.run("t", entry=["planner"], answer_by=["ghost"])
    with pytest.raises(RuntimeClosedError):
        await rt.run("t", entry=["planner"])
    with pytest.raises(RuntimeClosedError):
        rt.start("t", entry=["planner"])


async def test_concurrent_runs_are_independent() -> None:
    gate = anyio.Event()

    async def a(ctx: AgentContext, message: Message) -> None:
        if message.content == "first":
            await gate.wait()
        else:
            gate.set()
        await ctx.send_message(message.thread_id, message.content.upper(), ["user"])

    with anyio.fail_after(10):
        async with cg.open_runtime(make_graph({"a": a})) as rt:
            h1 = rt.start("first", entry=["a"])
            h2 = rt.start("second", entry=["a"])
            r1, r2 = await h1.wait(), await h2.wait()
    assert (r1.answer, r2.answer) == ("FIRST", "SECOND")
    assert r1.run_id != r2.run_id
    assert {e.run_id for e in r1.events} == {r1.run_id}


async def test_loop_style_agent_answers() -> None:
    class Echo:
        async def run(self, ctx: AgentContext) -> None:
            while True:
                for m in await ctx.wait_for_mentions():
                    await ctx.send_message(m.thread_id, m.content[::-1], ["user"])

    result = await run_graph(make_graph({"e": Echo()}), ["e"])
    assert (result.stop_reason, result.answer) == ("answer", "ksat eht")
    assert result.usage["e"].turns == 1


async def test_loop_and_handler_agents_together() -> None:
    class Collector:
        def __init__(self) -> None:
            self.got: list[str] = []

        async def run(self, ctx: AgentContext) -> None:
            while len(self.got) < 3:
                self.got.extend(m.content for m in await ctx.wait_for_mentions())
            await ctx.send_message("t-2", "collected", ["h"])

    async def h(ctx: AgentContext, message: Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("x", ["c"])
            for i in range(3):
                await ctx.send_message(th, str(i), ["c"])
        else:
            await ctx.send_message("t-1", message.content, ["user"])

    c = Collector()
    result = await run_graph(make_graph({"h": h, "c": c}, ("h<>c",)), ["h"])
    assert c.got == ["0", "1", "2"]
    assert (result.stop_reason, result.answer) == ("answer", "collected")


async def test_graph_edges_added_between_runs_are_seen() -> None:
    async def a(ctx: AgentContext, message: Message) -> None:
        await ctx.create_thread("x", ["b"])
        await ctx.send_message(message.thread_id, "ok", ["user"])

    async def b(ctx: AgentContext, message: Message) -> None:
        return None

    g = make_graph({"a": a, "b": b})
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            first = await rt.run("t", entry=["a"])
            g.connect("a", "b")
            second = await rt.run("t", entry=["a"])
    assert first.stop_reason == "idle"
    assert [e.error_type for e in of_kind(first, "agent_errored")] == ["EdgeNotAllowedError"]
    assert second.stop_reason == "answer"


async def test_an_agent_raising_cancelled_error_itself_ends_the_run_as_error() -> None:
    async def bad(ctx: AgentContext, message: Message) -> None:
        raise anyio.get_cancelled_exc_class()()

    result = await run_graph(make_graph({"a": bad}), ["a"])
    assert result.stop_reason == "error"  # not budget:time: there is no time budget
    assert result.error is not None
    assert "CancelledError" in result.error


async def test_budget_messages_zero_allows_no_message() -> None:
    result = await run_graph(make_graph({"a": answer_task}), ["a"], budgets=Budgets(max_messages=0))
    assert result.stop_reason == "budget:messages"
    assert result.messages == 0
    assert result.answer is None


async def test_turn_timeout_under_restart_calls_on_restart() -> None:
    class Stuck:
        def __init__(self) -> None:
            self.restarts = 0
            self.handled: list[str] = []

        async def handle(self, ctx: AgentContext, message: Message) -> None:
            self.handled.append(message.content)
            if message.content == "0":
                await anyio.sleep_forever()

        def on_restart(self) -> None:
            self.restarts += 1

    stuck = Stuck()
    g = make_graph(
        {"f": feeder(2), "x": stuck},
        ("f>x",),
        x={"on_error": "restart", "turn_timeout_s": 0.05},
    )
    result = await run_graph(g, ["f"])
    assert result.stop_reason == "idle"
    assert stuck.restarts == 1
    assert stuck.handled == ["0", "1"]
    assert [e.action for e in of_kind(result, "agent_errored")] == ["restart"]


async def test_closing_a_full_event_stream_lifts_the_backpressure() -> None:
    g = make_graph({"a": ping_pong, "b": ping_pong}, ("a<>b",))
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            stream = rt.events(max_buffer=3)
            handle = rt.start("x", entry=["a"], budgets=Budgets(max_messages=50))
            await anyio.wait_all_tasks_blocked()
            # Nobody reads: the agents are paused, the run cannot go on.
            assert handle.result is None
            assert rt.active_runs == [handle.run_id]
            stream.close()
            result = await handle.wait()
    assert result.stop_reason == "budget:messages"
    assert result.messages == 50


async def test_a_stream_of_one_run_ends_after_its_run_finished_event() -> None:
    @cg.agent
    async def answerer(ctx: cg.AgentContext, message: cg.Message) -> None:
        await ctx.send_message(message.thread_id, "done", ["user"])

    graph = cg.AgentGraph()
    graph.add_agent("answerer", answerer)
    async with cg.open_runtime(graph) as rt:
        handle = rt.start("go", entry=["answerer"], run_id="r-stream")
        kinds: list[str] = []
        with anyio.fail_after(10):
            async with rt.events("r-stream") as stream:
                async for event in stream:
                    kinds.append(event.kind)
        result = await handle.wait()
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert kinds.count("run_finished") == 1
    assert result.stop_reason == "answer"


def test_finished_runs_are_freed_without_the_cyclic_gc() -> None:
    """Once the caller drops a run's result, its events go by reference counting, not
    at the next full collection: a long-lived runtime does not grow run after run."""
    from coral_graph._events import DeliveryHandled
    from coral_graph.bench import fanout_graph

    graph = fanout_graph(5, 200)[0]

    def alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is DeliveryHandled)

    async def main() -> tuple[int, int]:
        async with cg.open_runtime(graph, budgets=cg.Budgets(max_messages=None)) as rt:
            before = alive()
            for _ in range(5):
                result = await rt.run("go", entry=["sender"])
                assert result.stop_reason == "idle"
                del result
            return before, alive()

    gc.collect()
    gc.disable()
    try:
        before, after = cg.run_async(main)
    finally:
        gc.enable()
    # One run handles 5 x 200 messages and the task; five runs kept alive would be
    # over 5,000 events. At most the latest run's may linger.
    assert after - before < 1_100


class _Recorder:
    """A BatchRecorder that keeps what it is handed; ``fail_at`` makes a drain raise."""

    def __init__(self, size: int, fail_at: int | None = None) -> None:
        self.batch_queue: deque[Any] = deque()
        self.batch_size = size
        self.got: list[Any] = []
        self.drains = 0
        self.fail_at = fail_at

    def drain(self) -> None:
        self.drains += 1
        if self.drains == self.fail_at:
            raise RuntimeError("disk on fire")
        self.got.extend(self.batch_queue)
        self.batch_queue.clear()

    def on_event(self, event: cg.Event) -> None:
        raise AssertionError("a batch recorder is not called per event")


def test_a_batch_recorder_gets_every_event_in_order_through_its_queue() -> None:
    from coral_graph.bench import fanout_graph

    rec = _Recorder(7)
    result = cg.run(
        fanout_graph(3, 20)[0],
        "go",
        entry=["sender"],
        store=rec,
        budgets=Budgets(max_messages=None),
    )
    rec.drain()  # what was left below a full batch
    assert rec.drains >= len(result.events) // 7
    assert len(rec.got) == len(result.events)
    for item, event in zip(rec.got, result.events, strict=True):
        if type(item) is tuple:
            # delivery_handled and message_sent as plain tuples: (kind, *fields in
            # dataclass order), a message as the plain tuple of its fields, an
            # optional last field (a delivery's worker) left out while None
            values = [getattr(event, f.name) for f in fields(event)]
            if fields(event)[-1].metadata.get("omit_none") and values[-1] is None:
                values.pop()
            assert item == (event.kind, *values)
            assert type(event)(*item[1:]) == event
            assert all(type(x) is not cg.Message for x in item)
        else:
            assert item is event
    kinds = Counter(type(i).__name__ for i in rec.got)
    # 3 x 20 + 1 deliveries handled and 20 + 1 messages sent (the task counted in each)
    assert kinds["tuple"] == (3 * 20 + 1) + (20 + 1)


def test_a_failing_batch_recorder_is_detached_and_the_run_goes_on() -> None:
    from coral_graph.bench import fanout_graph

    rec = _Recorder(5, fail_at=2)

    async def main() -> tuple[cg.RunResult, list[Any]]:
        async with cg.open_runtime(
            fanout_graph(3, 20)[0], store=rec, budgets=Budgets(max_messages=None)
        ) as rt:
            result = await rt.run("go", entry=["sender"])
            return result, list(rt.sink_errors)

    result, errors = cg.run_async(main)
    assert result.stop_reason == "idle"
    assert len(result.events) > 60
    assert len(errors) == 1
    assert errors[0][0] == rec.on_event
    assert isinstance(errors[0][1], RuntimeError)
    assert rec.drains == 2
    assert len(rec.batch_queue) == 5  # nothing more was queued after the failure


def test_attaching_a_recorder_feeds_its_queue_and_detaching_stops_it() -> None:
    from coral_graph.bench import fanout_graph

    rec = _Recorder(4)
    other: list[cg.Event] = []

    async def main() -> tuple[cg.RunResult, int]:
        async with cg.open_runtime(
            fanout_graph(2, 10)[0], budgets=Budgets(max_messages=None)
        ) as rt:
            stop = rt.attach(rec)  # its on_event is not called per event (it would raise)
            rt.subscribe(other.append)
            first = await rt.run("go", entry=["sender"])
            stop()
            second = await rt.run("go", entry=["sender"])
            return first, len(second.events)

    first, n_second = cg.run_async(main)
    rec.drain()
    assert len(rec.got) == len(first.events)  # the second run came after unsubscribing
    assert len(other) == len(first.events) + n_second


# -- a blocked event loop ------------------------------------------------------------

_BLOCKERS = """
import time


async def spin(ctx, message):
    while True:
        pass


async def sleeper(ctx, message):
    for _ in range(60):
        time.sleep(1)
"""


@pytest.mark.parametrize("agent", ["spin", "sleeper"])
def test_a_blocked_loop_names_the_agent_and_two_ctrl_c_end_the_process(
    tmp_path: Path, agent: str
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    (tmp_path / "bots.py").write_text(_BLOCKERS)
    (tmp_path / "g.yaml").write_text(f"agents:\n  {agent}: {{python: 'bots.py:{agent}'}}\n")
    cli = Path(sys.executable).parent / "coral-graph"
    env = {**os.environ, "CORAL_BLOCKED_AFTER_S": "0.5", "CORAL_DB": str(tmp_path / "r.db")}
    proc = subprocess.Popen(
        [str(cli), "run", "g.yaml", "--task", "go", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "blocked" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(60), "".join(lines)
        report = next(line for line in lines if "blocked" in line)
        assert f'agent "{agent}"' in report
        assert "bots.py" in report
        assert "anyio.to_thread.run_sync" in report
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        ended_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 130, "".join(lines)
    assert ended_in < 10


def test_a_blocking_turn_is_recorded_in_the_transcript_naming_the_agent() -> None:
    import time

    @cg.agent
    async def hog(ctx: AgentContext, message: Message) -> None:
        time.sleep(0.8)  # noqa: ASYNC251 - blocks the loop: what the watchdog is for
        await ctx.send_message(message.thread_id, "done", ["user"])

    g = AgentGraph()
    g.add_agent("hog", hog)

    async def main() -> cg.RunResult:
        async with cg.open_runtime(g, blocked_after_s=0.2) as rt:
            result = await rt.run("go", entry=["hog"])
            assert rt.watchdog is not None
            assert [b.agent for b in rt.watchdog.blocks] == ["hog"]
            return result

    result = cg.run_async(main)
    assert result.answer == "done"
    logged = [e for e in result.events if e.kind == "agent_logged"]
    assert [(e.agent, e.source) for e in logged] == [("hog", "watchdog")]  # type: ignore[union-attr]
    assert "to_thread" in logged[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(("policy", "stop"), [("continue", "answer"), ("stop", "error")])
def test_system_exit_in_an_agent_is_an_agent_error_under_its_policy(policy: str, stop: str) -> None:
    @cg.agent
    async def quitter(ctx: AgentContext, message: Message) -> None:
        if message.sender == "user":
            await ctx.add_participant(message.thread_id, "other")
            await ctx.send_message(message.thread_id, "again", ["other"])
            raise SystemExit(0)
        await ctx.send_message(message.thread_id, "answer", ["user"])

    @cg.agent
    async def other(ctx: AgentContext, message: Message) -> None:
        await ctx.send_message(message.thread_id, "back", ["quitter"])

    g = AgentGraph()
    g.add_agent("quitter", quitter, on_error=policy)
    g.add_agent("other", other)
    g.connect("quitter", "other", mutual=True)

    async def main() -> cg.RunResult:
        async with cg.open_runtime(g) as rt:
            return await rt.run("go", entry=["quitter"])

    result = cg.run_async(main)
    assert result.stop_reason == stop
    errors = [e for e in result.events if e.kind == "agent_errored"]
    assert [e.error_type for e in errors] == ["SystemExit"]  # type: ignore[union-attr]
    assert errors[0].action == policy  # type: ignore[union-attr]


def test_events_are_complete_and_in_order_whether_or_not_someone_subscribes() -> None:
    """The run keeps its commonest events compactly while nobody listens and builds
    them on access: the result must equal what a subscriber saw, seq by seq, also
    when the subscriber joins halfway."""
    from coral_graph.bench import ring_graph

    def play(subscribe_after: int | None) -> tuple[cg.RunResult, list[cg.Event]]:
        g, entry, _ = ring_graph(6, 2, 200)
        seen: list[cg.Event] = []

        async def main() -> cg.RunResult:
            async with cg.open_runtime(g, budgets=Budgets(max_messages=None)) as rt:
                if subscribe_after is None:
                    return await rt.run("go", entry=entry)
                handle = rt.start("go", entry=entry)
                await handle.started()
                for _ in range(subscribe_after):
                    await anyio.lowlevel.checkpoint()
                rt.subscribe(seen.append)
                return await handle.wait()

        return cg.run_async(main), seen

    quiet, _ = play(None)
    assert [e.seq for e in quiet.events] == list(range(1, len(quiet.events) + 1))
    kinds = Counter(e.kind for e in quiet.events)
    assert kinds["delivery_handled"] == 200
    assert kinds["message_sent"] == 199  # the task and 198 forwards
    assert all(
        isinstance(e, cg.DeliveryHandled) for e in quiet.events if e.kind == "delivery_handled"
    )
    late, seen = play(5)
    events = late.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert seen == events[len(events) - len(seen) :]
    assert 0 < len(seen) < len(events)
