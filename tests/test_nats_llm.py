"""LLM agents on NATS workers: the core's ledger reserves each call's worst case on
the run's shared counters (compare-and-set in the bucket) before the call, so
workers racing for the last of an LLM budget never overspend it. Real parts: a
nats-server, three worker processes, litellm calling the OpenAI-compatible stub on
127.0.0.1 (the requests it really received are counted)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from nats_fixtures import (
    NatsServer,
    Workers,
    nats_server_fixture,  # noqa: F401 - a fixture
    needs_nats,
    workers_fixture,  # noqa: F401 - a fixture
)
from openai_stub import OpenAIStub, Step, delay, tool_calls

pytestmark = [needs_nats, pytest.mark.nats, pytest.mark.anyio]

AGENTS = ("a", "b", "c")


def _graph(folder: Path, model: str, api_base: str, budgets: str) -> Path:
    g = folder / "llmrace.yaml"
    agents = "\n".join(f"  {a}: {{kind: llm, description: caller {a}}}" for a in AGENTS)
    g.write_text(
        f"""name: nats-llmrace
defaults: {{model: "openai/{model}", mode: tools, max_steps: 50, max_tokens: 1000,
           api_base: "{api_base}"}}
agents:
{agents}
entry: [{", ".join(AGENTS)}]
budgets: {budgets}
task: go
"""
    )
    return g


def _step() -> Step:
    """A tool call that reports using its whole completion allowance, slow enough
    that the three workers' calls overlap."""
    step = delay(0.2, tool_calls(("list_agents", {})))
    step.prompt_tokens, step.completion_tokens = 100, 1000
    return step


@pytest.mark.parametrize(
    ("budget", "limit", "stop"),
    [("max_llm_calls", 7, "budget:llm_calls"), ("max_tokens", 8000, "budget:tokens")],
)
async def test_three_workers_racing_on_an_llm_budget_never_overspend(
    tmp_path: Path,
    nats_server: NatsServer,
    workers: Workers,
    openai_stub: OpenAIStub,
    budget: str,
    limit: int,
    stop: str,
) -> None:
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    model = f"llmrace-{budget}"
    # Far more calls than the budget allows: every agent keeps calling until it stops.
    openai_stub.script(model, [_step() for _ in range(200)])
    g = _graph(tmp_path, model, openai_stub.base_url, f"{{{budget}: {limit}}}")
    for a in AGENTS:
        workers.start(g, "--agents", a, env={"OPENAI_API_KEY": "sk-test"})
    with anyio.fail_after(120):
        result = await run_on_nats(load_graph(g), "go", nats_server.url)
    assert result.stop_reason == stop, result.error
    sent = openai_stub.requests_for(model)
    calls = [e for e in result.events if e.kind == "llm_called"]
    # The three processes raced: each made calls before the budget ran out.
    assert {e.agent for e in calls} == set(AGENTS)  # type: ignore[attr-defined]
    # Every call the server received is in the transcript, once.
    assert len(sent) <= len(calls)
    if budget == "max_llm_calls":
        assert len(sent) <= limit  # never passed
        assert len(calls) <= limit
        assert len(sent) >= limit - len(AGENTS)  # used, not stopped far too early
    else:
        spent = sum(e.prompt_tokens + e.completion_tokens for e in calls)  # type: ignore[attr-defined]
        assert spent <= limit
        assert result.tokens <= limit
        assert len(sent) >= 2


async def test_a_failed_tool_call_on_a_worker_counts_in_the_result(
    tmp_path: Path, nats_server: NatsServer, workers: Workers, openai_stub: OpenAIStub
) -> None:
    """A model's malformed tool call on a worker gets its error back and corrects
    itself; the starting process's result, built from every worker's events, counts
    the failed call in ``tool_errors`` (as in one process)."""
    from coral_graph.config import load_graph
    from coral_graph.transport.nats import run_on_nats

    model = "natstoolerr"
    openai_stub.script(
        model,
        [
            tool_calls(("send_message", '{"content": "4", "mentions": ["user"')),  # malformed
            tool_calls(("send_message", {"content": "4", "mentions": ["user"]})),
        ],
    )
    g = tmp_path / "toolerr.yaml"
    g.write_text(
        f"""name: nats-toolerr
agents:
  a: {{kind: llm, model: "openai/{model}", mode: tools, api_base: "{openai_stub.base_url}",
      description: answers}}
entry: [a]
task: 2 + 2?
"""
    )
    workers.start(g, "--agents", "a", env={"OPENAI_API_KEY": "sk-test"})
    with anyio.fail_after(120):
        result = await run_on_nats(load_graph(g), "2 + 2?", nats_server.url)
    assert (result.stop_reason, result.answer) == ("answer", "4"), result.error
    assert [e.ok for e in result.events if e.kind == "tool_called"] == [False, True]  # type: ignore[attr-defined]
    assert result.usage["a"].tool_errors == 1
    assert result.usage["a"].llm_calls == 2
