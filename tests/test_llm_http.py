"""LLMAgent through litellm, over real HTTP, against the OpenAI-compatible stub.

litellm is not patched: it talks to tests/openai_stub.py on 127.0.0.1 with
``openai/<name>`` and ``api_base``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from openai_stub import OpenAIStub, delay, error, reply, tool_calls

import coral_graph as cg
from coral_graph.llm import LLMAgent

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("litellm_cleanup")]


def events(result: cg.RunResult, kind: type) -> list[Any]:
    return [e for e in result.events if isinstance(e, kind)]


async def run_graph(graph: cg.AgentGraph, task: str, **kw: Any) -> cg.RunResult:
    budgets = kw.pop("budgets", None)
    with anyio.fail_after(30):
        async with cg.open_runtime(graph, budgets=budgets) as rt:
            return await rt.run(task, **kw)


def one_agent(stub: OpenAIStub, model: str = "openai/stub-a", **kw: Any) -> cg.AgentGraph:
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent(model, api_base=stub.base_url, **kw))
    return graph


async def test_text_reply_and_settings_over_http(
    openai_stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_KEY", "sk-test-123")
    openai_stub.script("stub-a", [reply("FINAL: Paris", prompt_tokens=50, completion_tokens=3)])
    graph = one_agent(
        openai_stub,
        temperature=0.0,
        top_p=0.9,
        seed=7,
        max_tokens=64,
        stop=["\n\n"],
        api_key_env="STUB_KEY",
        extra={"presence_penalty": 0.5},
    )
    result = await run_graph(graph, "Capital of France?")
    assert (result.stop_reason, result.answer) == ("answer", "Paris")
    [body] = openai_stub.requests
    assert body["model"] == "stub-a"
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (
        0.0,
        0.9,
        7,
        64,
    )
    assert body["stop"] == ["\n\n"]
    assert body["presence_penalty"] == 0.5
    assert body["_authorization"] == "Bearer sk-test-123"
    assert "tools" not in body  # an unknown model: auto mode is text
    assert body["messages"][0]["role"] == "system"
    assert "Capital of France?" in body["messages"][-1]["content"]
    [llm] = events(result, cg.LLMCalled)
    assert (llm.model, llm.prompt_tokens, llm.completion_tokens, llm.cost_usd, llm.outcome) == (
        "openai/stub-a",
        50,
        3,
        0.0,
        "ok",
    )
    assert result.usage["a"].prompt_tokens == 50


async def test_tool_calls_over_http_with_a_malformed_one(openai_stub: OpenAIStub) -> None:
    openai_stub.script(
        "stub-t",
        [
            tool_calls(
                ("send_message", '{"content": "4", "mentions": ["user"'),
            ),  # malformed
            tool_calls(("send_message", {"content": "4", "mentions": ["user"]})),
        ],
    )
    graph = one_agent(openai_stub, "openai/stub-t", mode="tools")
    result = await run_graph(graph, "2 + 2?")
    assert (result.stop_reason, result.answer) == ("answer", "4")
    first, second = openai_stub.requests
    assert {t["function"]["name"] for t in first["tools"]} >= {"send_message", "create_thread"}
    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool"
    assert json.loads(tool_msg["content"])["error"] == "ToolArgumentError"
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "send_message"
    assert [e.ok for e in events(result, cg.ToolCalled)] == [False, True]


async def test_rate_limit_retried_then_ok(openai_stub: OpenAIStub) -> None:
    openai_stub.script("stub-a", [error(429), error(503), reply("FINAL: done")])
    graph = one_agent(openai_stub, retries=2, retry_backoff_s=0.01)
    result = await run_graph(graph, "go")
    assert result.answer == "done"
    assert [e.outcome for e in events(result, cg.LLMCalled)] == [
        "LLMRateLimitError",
        "LLMUnavailableError",
        "ok",
    ]
    assert len(openai_stub.requests) == 3  # litellm's own retries are off


async def test_fallback_when_a_model_keeps_failing(openai_stub: OpenAIStub) -> None:
    openai_stub.script("stub-down", [error(500)] * 2)
    openai_stub.script("stub-up", [reply("FINAL: from the fallback")])
    graph = one_agent(
        openai_stub,
        "openai/stub-down",
        retries=1,
        retry_backoff_s=0.01,
        fallbacks=["openai/stub-up"],
    )
    result = await run_graph(graph, "go")
    assert result.answer == "from the fallback"
    assert [(e.model, e.outcome) for e in events(result, cg.LLMCalled)] == [
        ("openai/stub-down", "LLMUnavailableError"),
        ("openai/stub-down", "LLMUnavailableError"),
        ("openai/stub-up", "ok"),
    ]
    assert result.answer_message is not None
    assert result.answer_message.metadata is not None
    assert result.answer_message.metadata["model"] == "openai/stub-up"


async def test_bad_request_is_not_retried(openai_stub: OpenAIStub) -> None:
    openai_stub.script("stub-a", [error(400, "bad parameter")])
    graph = one_agent(openai_stub, retries=3, retry_backoff_s=0.01)
    result = await run_graph(graph, "go")
    # Its only model call failed: that is why the run stopped, and it says so.
    assert result.stop_reason == "error"
    assert result.error is not None
    assert result.error.startswith("the one LLM call failed: openai/stub-a: ")
    assert "bad parameter" in result.error
    [err] = events(result, cg.AgentErrored)
    assert err.error_type == "LLMBadRequestError"
    assert "bad parameter" in err.error
    assert len(openai_stub.requests) == 1


async def test_timeout_over_http(openai_stub: OpenAIStub) -> None:
    openai_stub.script("stub-a", [delay(1.0, reply("too late")), reply("FINAL: in time")])
    graph = one_agent(openai_stub, timeout_s=0.3, retries=1, retry_backoff_s=0.01)
    result = await run_graph(graph, "go")
    assert result.answer == "in time"
    assert [e.outcome for e in events(result, cg.LLMCalled)] == ["LLMTimeoutError", "ok"]


async def test_cost_accounting_and_budget_stop_before_the_call(openai_stub: OpenAIStub) -> None:
    from coral_graph.llm import LiteLLMClient

    price = LiteLLMClient().cost_usd("openai/gpt-4o-mini", 1000, 100)
    assert price > 0  # litellm's table knows this model
    openai_stub.script(
        "gpt-4o-mini",
        [
            tool_calls(
                ("send_message", {"content": "answer", "mentions": ["user"]}),
            ),
            reply("unused"),
        ],
    )
    graph = one_agent(openai_stub, "openai/gpt-4o-mini", max_tokens=100)
    result = await run_graph(graph, "go")
    assert result.answer == "answer"
    [llm] = events(result, cg.LLMCalled)
    expected = LiteLLMClient().cost_usd(
        "openai/gpt-4o-mini", llm.prompt_tokens, llm.completion_tokens
    )
    assert llm.cost_usd == pytest.approx(expected)
    assert llm.cost_usd > 0
    assert result.cost_usd == pytest.approx(expected)
    # a budget below one call's upper bound: stopped before anything is sent
    openai_stub.reset()
    openai_stub.script("gpt-4o-mini", [reply("FINAL: never")])
    result = await run_graph(graph, "go", budgets=cg.Budgets(max_cost_usd=1e-6))
    assert result.stop_reason == "budget:cost"
    assert openai_stub.requests == []
    assert result.cost_usd == 0


async def test_two_agents_mixing_models_over_http(openai_stub: OpenAIStub) -> None:
    openai_stub.script("lead-model", [reply("@helper please compute 6*7"), reply("FINAL: 42")])
    openai_stub.script("helper-model", [reply("42")])
    graph = cg.AgentGraph(entry=["lead"])
    graph.add_agent(
        "lead", LLMAgent("openai/lead-model", api_base=openai_stub.base_url, temperature=0.7)
    )
    graph.add_agent(
        "helper", LLMAgent("openai/helper-model", api_base=openai_stub.base_url, temperature=0.0)
    )
    graph.connect("lead", "helper", mutual=True)
    result = await run_graph(graph, "6*7?")
    assert (result.stop_reason, result.answer) == ("answer", "42")
    temps = {r["model"]: r["temperature"] for r in openai_stub.requests}
    assert temps == {"lead-model": 0.7, "helper-model": 0.0}
    assert set(result.usage) == {"lead", "helper"}
    assert result.usage["helper"].llm_calls == 1
    assert result.usage["lead"].llm_calls == 2
