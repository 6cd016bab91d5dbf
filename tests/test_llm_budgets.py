"""LLM budgets hold under concurrency: reserved before a call, settled after it.

The HTTP tests run many LLM agents at once against the OpenAI-compatible stub on
127.0.0.1 (litellm is not patched) and count what the server really received.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_stub import OpenAIStub, Step, delay, reply, tool_calls

import coral_graph as cg
from coral_graph._ledger import Ledger, Reservation
from coral_graph.llm import LLMAgent
from coral_graph.transport._local import LocalCounters

N_AGENTS = 8


def reserve_now(ledger: Ledger, prompt: int, out: int) -> Reservation | None:
    """Reserve on local counters, which never suspend."""
    coro = ledger.reserve(prompt_tokens=prompt, completion_tokens=out, cost_usd=0)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("local counters never suspend")


def heavy(step: Step) -> Step:
    """A step that reports using its whole completion allowance."""
    step.prompt_tokens, step.completion_tokens = 100, 1000
    return step


def llm_events(result: cg.RunResult) -> list[cg.LLMCalled]:
    return [e for e in result.events if isinstance(e, cg.LLMCalled)]


def crowd(stub: OpenAIStub, model: str, n: int = N_AGENTS, **kw: Any) -> cg.AgentGraph:
    names = [f"a{i}" for i in range(n)]
    graph = cg.AgentGraph(entry=names)
    for name in names:
        graph.add_agent(name, LLMAgent(f"openai/{model}", api_base=stub.base_url, **kw))
    return graph


async def run_graph(graph: cg.AgentGraph, budgets: cg.Budgets) -> cg.RunResult:
    with anyio.fail_after(30):
        async with cg.open_runtime(graph) as rt:
            return await rt.run("Capital of France?", budgets=budgets)


# -- the ledger alone: no sequence of reserve/settle/release passes a limit ----------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.integers(0, 400),  # prompt tokens
        st.integers(0, 400),  # max tokens
        st.one_of(st.integers(-10, 10**9), st.floats(allow_nan=True), st.none()),  # reported
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=_ops,
    max_calls=st.one_of(st.none(), st.integers(0, 8)),
    max_tokens=st.one_of(st.none(), st.integers(0, 3000)),
)
def test_ledger_never_passes_a_limit(
    ops: list[tuple[str, int, int, Any]], max_calls: int | None, max_tokens: int | None
) -> None:
    ledger = Ledger(LocalCounters(), cg.Budgets(max_llm_calls=max_calls, max_tokens=max_tokens))
    held = []
    for op, prompt, out, reported in ops:
        if op == "reserve":
            try:
                res = reserve_now(ledger, prompt, out)
            except cg.BudgetExceededError as exc:
                budget = exc.budget
                assert budget in {"llm_calls", "tokens"}
            else:
                if res is None:
                    assert held  # only calls in flight make a call wait
                else:
                    held.append(res)
        elif held and op == "settle":
            res = held.pop(0)
            done = ledger.settle(
                res, prompt_tokens=reported, completion_tokens=reported, cost_usd=reported
            )
            assert 0 <= done.completion_tokens <= max(res.completion_tokens, 0) or (
                res.completion_tokens == 0
            )
            assert done.prompt_tokens >= 0
            assert done.cost_usd >= 0
        elif held:
            ledger.release(held.pop(0))
        # the invariant: spent plus in flight within every limit
        if max_calls is not None:
            assert ledger.calls <= max_calls
        if max_tokens is not None:
            # a settled prompt may exceed its estimate (bounded slack); the
            # completion never exceeds what was reserved
            assert ledger.tokens >= 0
        assert ledger.reserved_calls == len(held)


def test_settle_twice_is_refused() -> None:
    ledger = Ledger(LocalCounters(), cg.Budgets())
    res = reserve_now(ledger, 1, 1)
    assert res is not None
    ledger.settle(res, prompt_tokens=1, completion_tokens=1, cost_usd=0)
    with pytest.raises(ValueError, match="already settled"):
        ledger.settle(res, prompt_tokens=1, completion_tokens=1, cost_usd=0)


# -- many agents at once over real HTTP ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
@pytest.mark.parametrize("limit", [1, 3])
async def test_max_llm_calls_holds_with_agents_calling_at_once(
    openai_stub: OpenAIStub, limit: int
) -> None:
    # Every agent needs two calls (a tool call, then its reply): the budget runs
    # out while agents are calling at once.
    model = f"crowd-calls-{limit}"
    openai_stub.script(
        model, [delay(0.2, tool_calls(("list_agents", {}))) for _ in range(2 * N_AGENTS)]
    )
    graph = crowd(openai_stub, model, mode="tools")
    result = await run_graph(graph, cg.Budgets(max_llm_calls=limit))
    sent = [r for r in openai_stub.requests if r["model"] == model]
    recorded = llm_events(result)
    assert result.stop_reason == "budget:llm_calls"
    assert len(sent) == limit  # the limit is used, never passed
    # every call made is recorded, and counted once
    assert len(recorded) == limit
    assert sum(u.llm_calls for u in result.usage.values()) == limit


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_a_call_cancelled_by_the_end_of_the_run_is_recorded(openai_stub: OpenAIStub) -> None:
    # Three calls in flight; the first reply answers and ends the run: the other two
    # were sent and are recorded as cancelled, never lost.
    model = "crowd-answer"
    openai_stub.script(
        model, [reply("FINAL: Paris"), delay(5, reply("late")), delay(5, reply("late"))]
    )
    graph = crowd(openai_stub, model, n=3, mode="text")
    result = await run_graph(graph, cg.Budgets(max_llm_calls=3))
    assert result.stop_reason == "answer"
    recorded = llm_events(result)
    assert len(recorded) == 3
    assert sorted(e.outcome for e in recorded) == ["cancelled", "cancelled", "ok"]


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_max_tokens_reserves_the_worst_case_of_calls_in_flight(
    openai_stub: OpenAIStub,
) -> None:
    model = "crowd-tokens"
    openai_stub.script(
        model,
        [delay(0.3, heavy(tool_calls(("list_agents", {})))) for _ in range(2 * N_AGENTS)],
    )
    graph = crowd(openai_stub, model, max_tokens=1000, mode="tools")
    # A call's worst case is its prompt (a few hundred tokens) plus 1,000: room for
    # one or two calls in flight, never eight (each alone would pass a check of
    # finished calls against the limit).
    budget = cg.Budgets(max_tokens=2500)
    result = await run_graph(graph, budget)
    sent = [r for r in openai_stub.requests if r["model"] == model]
    assert result.stop_reason == "budget:tokens"
    assert 1 <= len(sent) <= 2
    assert len(llm_events(result)) >= len(sent)
    assert result.tokens <= budget.max_tokens  # type: ignore[operator]


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_a_provider_that_over_reports_usage_does_not_corrupt_the_accounting(
    openai_stub: OpenAIStub,
) -> None:
    model = "over-reporter"
    over = reply("FINAL: Paris", prompt_tokens=30, completion_tokens=20_000_000)
    openai_stub.script(model, [over])
    graph = crowd(openai_stub, model, n=1, max_tokens=1000)
    result = await run_graph(graph, cg.Budgets(max_tokens=50_000))
    assert result.stop_reason == "answer"
    [call] = llm_events(result)
    assert call.completion_tokens == 1000  # clamped to the request's max_tokens
    assert call.error is not None
    assert "20000000" in call.error
    assert result.usage["a0"].completion_tokens == 1000
