"""An agent that fails after the run stopped is still recorded: a turn that answers
and then raises, a loop agent that raises after its answer. What an operation raises
*because* the run had stopped (``RuntimeClosedError``) is not the agent's failure and
is not recorded. (Found by the property test of random graphs: a loop agent's
scripted raise, after another agent's budget stop, left no ``agent_errored``.)"""

from __future__ import annotations

from typing import Any

import coral_graph as cg


def _errors(result: cg.RunResult) -> list[Any]:
    return [e for e in result.events if e.kind == "agent_errored"]


def test_a_turn_that_answers_then_raises_is_recorded() -> None:
    @cg.agent
    async def a(ctx: cg.AgentContext, message: cg.Message) -> None:
        ctx.send_message_nowait(message.thread_id, "42", ["user"])
        raise ValueError("broke after answering")

    g = cg.AgentGraph(entry=["a"])
    g.add_agent("a", a, on_error="stop")
    result = cg.run(g, "question", store=False)
    assert (result.stop_reason, result.answer) == ("answer", "42")  # the answer stands
    (err,) = _errors(result)
    assert (err.agent, err.error_type, err.action) == ("a", "ValueError", "continue")
    assert err.message_id == "t-1#1"
    assert result.usage["a"].errors == 1
    handled = [(e.agent, e.ok) for e in result.events if e.kind == "delivery_handled"]
    assert handled == [("a", False)]
    assert result.events[-1].kind == "run_finished"


def test_a_loop_agent_that_raises_after_the_answer_is_recorded() -> None:
    class Loop:
        async def run(self, ctx: cg.AgentContext) -> None:
            (m,) = await ctx.wait_for_mentions(5)
            ctx.send_message_nowait(m.thread_id, "done", ["user"])
            raise KeyError("after the answer")

    g = cg.AgentGraph(entry=["b"])
    g.add_agent("b", Loop(), on_error="restart", max_restarts=5)
    result = cg.run(g, "go", store=False)
    assert (result.stop_reason, result.answer) == ("answer", "done")
    (err,) = _errors(result)
    assert (err.agent, err.error_type, err.action) == ("b", "KeyError", "continue")
    assert result.usage["b"].errors == 1


def test_what_the_stop_itself_raises_is_not_an_agent_failure() -> None:
    @cg.agent
    async def a(ctx: cg.AgentContext, message: cg.Message) -> None:
        ctx.send_message_nowait(message.thread_id, "42", ["user"])
        ctx.send_message_nowait(message.thread_id, "more", [])  # the run has ended

    g = cg.AgentGraph(entry=["a"])
    g.add_agent("a", a)
    result = cg.run(g, "question", store=False)
    assert result.stop_reason == "answer"
    assert _errors(result) == []
    assert result.usage["a"].errors == 0
