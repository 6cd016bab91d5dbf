"""LLMAgent with scripted models: tools, text, context, bounded turns, budgets, accounting.

These tests need no litellm and no network; the HTTP path is in test_llm_http.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest

import coral_graph as cg
from coral_graph.llm import (
    DEFAULT_MODEL,
    LLMAgent,
    LLMBadRequestError,
    LLMRateLimitError,
    LLMTimeoutError,
    ModelRequest,
    ModelResponse,
    measure_token_efficiency,
)
from coral_graph.llm._prompt import build_context
from coral_graph.testing import ScriptedModel, call, raw_call

pytestmark = pytest.mark.anyio


def tool_results(request: ModelRequest) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in request.messages if m.get("role") == "tool"]


def events(result: cg.RunResult, kind: type) -> list[Any]:
    return [e for e in result.events if isinstance(e, kind)]


async def run_graph(graph: cg.AgentGraph, task: str, **kw: Any) -> cg.RunResult:
    budgets = kw.pop("budgets", None)
    with anyio.fail_after(20):
        async with cg.open_runtime(graph, budgets=budgets) as rt:
            return await rt.run(task, **kw)


def test_import_does_not_import_litellm() -> None:
    code = (
        "import sys, coral_graph, coral_graph.llm, coral_graph.testing;"
        "coral_graph.LLMAgent(); assert 'litellm' not in sys.modules, 'litellm imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_contract_names() -> None:
    agent = LLMAgent()
    assert DEFAULT_MODEL == "embedded/smollm2-135m"
    assert agent.model == DEFAULT_MODEL
    assert agent.kind == "llm"
    assert cg.LLMAgent is LLMAgent
    assert agent.description  # never empty (the graph would show a docstring)
    assert LLMAgent(description="solves maths").description == "solves maths"
    with pytest.raises(ValueError, match="mode"):
        LLMAgent(mode="chat")  # type: ignore[arg-type]


async def test_tools_mode_answers() -> None:
    model = ScriptedModel([call("send_message", content="4", mentions=["user"])])
    graph = cg.AgentGraph()
    graph.add_agent("solver", LLMAgent(client=model))
    result = await run_graph(graph, "2 + 2?", entry=["solver"])
    assert (result.stop_reason, result.answer) == ("answer", "4")
    assert result.answer_message is not None
    meta = result.answer_message.metadata
    assert meta is not None
    assert meta["model"] == DEFAULT_MODEL
    assert meta["prompt_tokens"] > 0
    [llm] = events(result, cg.LLMCalled)
    assert llm.agent == "solver"
    assert llm.outcome == "ok"
    assert llm.prompt_tokens > 0
    [tool] = events(result, cg.ToolCalled)
    assert tool.tool == "send_message"
    assert tool.ok
    assert tool.message_id == result.answer_message.id
    assert result.usage["solver"].llm_calls == 1
    # the prompt: system first (who it is, whom it can reach), the task last
    req = model.requests[0]
    assert req.messages[0]["role"] == "system"
    assert '"solver"' in req.messages[0]["content"]
    assert "- user:" in req.messages[0]["content"]
    assert "2 + 2?" in req.messages[-1]["content"]
    assert req.tools is not None
    assert {t["function"]["name"] for t in req.tools} == set(cg.llm.TOOL_NAMES)


async def test_delegation_through_a_thread() -> None:
    model = ScriptedModel(
        {
            "planner": [
                call("create_thread", name="maths", participants=["solver"]),
                call(
                    "send_message",
                    thread_id="t-2",
                    content="@solver what is 6*7?",
                    mentions=["solver"],
                ),
                "waiting for solver",
                call("close_thread", thread_id="t-2", summary="solver says 42"),
                call("send_message", thread_id="t-1", content="42", mentions=["user"]),
            ],
            "solver": [call("send_message", content="42", mentions=["planner"]), "done"],
        }
    )
    graph = cg.AgentGraph(entry=["planner"])
    graph.add_agent("planner", LLMAgent(client=model, description="plans"))
    graph.add_agent("solver", LLMAgent(client=model, description="does maths"))
    graph.connect("planner", "solver", mutual=True)
    result = await run_graph(graph, "What is 6*7?")
    assert (result.stop_reason, result.answer) == ("answer", "42")
    t2 = result.threads[cg.ThreadId("t-2")]
    assert t2.closed
    assert t2.summary == "solver says 42"
    assert [(m.sender, m.mentions) for m in t2.messages] == [
        ("planner", ("solver",)),
        ("solver", ("planner",)),
    ]
    # the solver's context is its own thread: the task thread is not in it
    solver_req = next(r for r in model.requests if r.agent == "solver")
    text = json.dumps(solver_req.messages)
    assert "What is 6*7?" not in text
    assert "what is 6*7?" in text
    # the planner's second wake sees the maths thread as its waking thread
    last = [r for r in model.requests if r.agent == "planner"][-1]
    assert "[t-2#2] solver -> @planner: 42" in json.dumps(last.messages)


async def test_errors_come_back_as_tool_results() -> None:
    model = ScriptedModel(
        {
            "a": [
                [
                    raw_call("send_message", '{"content": "hi", "mentions": ['),  # bad JSON
                    call("send_message", content="hi", mentions=["c"]),  # no edge a -> c
                    call("create_thread", name="x", participants=["nobody"]),  # unknown agent
                    call("close_thread", thread_id="t-9", summary="s"),  # unknown thread
                    call("send_message", mentions=[]),  # missing content
                    call("fly", to="moon"),  # no such tool
                    call("send_message", content="hi", mentions=["b"], extra=1),  # unknown arg
                ],
                [call("create_thread", name="side", participants=["b"])],
                [call("close_thread", thread_id="t-2", summary="done")],
                [call("send_message", thread_id="t-2", content="late", mentions=["b"])],  # closed
                call("send_message", content="recovered", mentions=["user"]),
            ],
        }
    )
    graph = cg.AgentGraph(entry=["a"])
    for name in "abc":
        graph.add_agent(name, LLMAgent(client=model, max_steps=6))
    graph.connect("a", "b")
    result = await run_graph(graph, "go")
    assert (result.stop_reason, result.answer) == ("answer", "recovered")
    first = tool_results(model.requests[1])
    assert [r["ok"] for r in first] == [False] * 7
    assert [r["error"] for r in first] == [
        "ToolArgumentError",
        "NotAParticipantError",
        "UnknownAgentError",
        "UnknownThreadError",
        "ToolArgumentError",
        "ToolArgumentError",
        "ToolArgumentError",
    ]
    assert "not valid JSON" in first[0]["message"]
    assert "missing required argument(s) content" in first[4]["message"]
    assert "there is no tool 'fly'" in first[5]["message"]
    closed = tool_results(model.requests[4])[-1]
    assert closed["error"] == "ThreadClosedError"
    assert sum(not e.ok for e in events(result, cg.ToolCalled)) == 8
    assert not events(result, cg.AgentErrored)


async def test_edge_not_allowed_is_a_tool_result() -> None:
    model = ScriptedModel(
        {
            "a": [
                [call("create_thread", name="x", participants=["c"])],
                "gave up",
            ]
        }
    )
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent(client=model))
    graph.add_agent("c", LLMAgent(client=model))
    result = await run_graph(graph, "go")
    [res] = tool_results(model.requests[1])
    assert res["error"] == "EdgeNotAllowedError"
    assert "no edge" in res["message"]
    # the plain text that followed answers the task (a answers, and sent nothing)
    assert (result.stop_reason, result.answer) == ("answer", "gave up")


async def test_identical_repeated_calls_are_stopped() -> None:
    same = call("send_message", content="again", mentions=[])
    model = ScriptedModel([same] * 10)
    graph = cg.AgentGraph()
    graph.add_agent("looper", LLMAgent(client=model, max_steps=10))
    result = await run_graph(graph, "loop", entry=["looper"])
    assert result.stop_reason == "idle"
    assert len(model.requests) == 3  # ran once, refused twice, then the turn ended
    assert [m.content for m in result.threads[cg.ThreadId("t-1")].messages[1:]] == ["again"]
    refused = tool_results(model.requests[2])[-1]
    assert refused["error"] == "RepeatedCallError"


async def test_max_steps_bounds_a_turn() -> None:
    counter = iter(range(100))
    model = ScriptedModel(default="never used")
    model.add(
        *[lambda _req: call("send_message", content=f"note {next(counter)}", mentions=[])] * 10
    )
    graph = cg.AgentGraph()
    graph.add_agent("busy", LLMAgent(client=model, max_steps=3))
    result = await run_graph(graph, "go", entry=["busy"])
    assert result.stop_reason == "idle"
    assert result.usage["busy"].llm_calls == 3
    assert result.messages == 3


async def test_text_mode_conventions() -> None:
    model = ScriptedModel(
        {
            "lead": [
                "Let me ask. @helper what is the capital of France?",
                "FINAL: Paris is the capital.",
            ],
            "helper": ["helper: Paris."],  # echoes its own name: stripped
        },
        tools=False,
    )
    graph = cg.AgentGraph(entry=["lead"])
    graph.add_agent("lead", LLMAgent(client=model))
    graph.add_agent("helper", LLMAgent(client=model))
    graph.connect("lead", "helper", mutual=True)
    result = await run_graph(graph, "Capital of France?")
    assert (result.stop_reason, result.answer) == ("answer", "Paris is the capital.")
    msgs = result.threads[cg.ThreadId("t-1")].messages
    assert [(m.sender, m.mentions) for m in msgs] == [
        ("user", ("lead",)),
        ("lead", ("helper",)),
        ("helper", ("lead",)),
        ("lead", ("user",)),
    ]
    assert msgs[2].content == "Paris."
    assert model.requests[0].tools is None
    assert "FINAL:" in model.requests[0].messages[0]["content"]


async def test_text_mode_bad_replies_do_not_end_the_run() -> None:
    model = ScriptedModel({"lead": ["", "   ", "@nobody @lead hm", "fine: 3"]}, tools=False)
    graph = cg.AgentGraph(entry=["lead"])
    graph.add_agent("lead", LLMAgent(client=model, max_steps=2))
    result = await run_graph(graph, "1 + 2?")
    assert result.stop_reason == "idle"  # two empty replies: nothing posted, no error
    assert not events(result, cg.AgentErrored)
    result = await run_graph(graph, "1 + 2?")
    # unknown and self mentions are ignored: a reply that mentions nobody answers
    assert (result.stop_reason, result.answer) == ("answer", "@nobody @lead hm")


async def test_model_failure_is_an_agent_error_not_a_crash() -> None:
    model = ScriptedModel([LLMBadRequestError("no such model", model="x")])
    graph = cg.AgentGraph()
    graph.add_agent("a", LLMAgent(client=model))
    result = await run_graph(graph, "go", entry=["a"])
    # Not a crash: an agent error, and the run says its one model call failed.
    assert result.stop_reason == "error"
    assert result.error is not None
    assert result.error.startswith("the one LLM call failed: ")
    assert (result.usage["a"].llm_errors, result.usage["a"].errors) == (1, 1)
    [err] = events(result, cg.AgentErrored)
    assert err.error_type == "LLMBadRequestError"
    [llm] = events(result, cg.LLMCalled)
    assert llm.outcome == "LLMBadRequestError"
    assert llm.error


async def test_retries_with_backoff_then_success() -> None:
    model = ScriptedModel(
        [
            LLMRateLimitError("slow down"),
            LLMRateLimitError("slow down"),
            call("send_message", content="ok", mentions=["user"]),
        ]
    )
    graph = cg.AgentGraph()
    graph.add_agent("a", LLMAgent(client=model, retries=2, retry_backoff_s=0.001))
    result = await run_graph(graph, "go", entry=["a"])
    assert result.answer == "ok"
    assert [e.outcome for e in events(result, cg.LLMCalled)] == [
        "LLMRateLimitError",
        "LLMRateLimitError",
        "ok",
    ]
    assert result.usage["a"].llm_calls == 3


async def test_fallbacks_after_retries() -> None:
    def by_model(req: ModelRequest) -> Any:
        if req.model == "primary":
            return LLMRateLimitError("always busy", model="primary")
        return call("send_message", content=f"from {req.model}", mentions=["user"])

    model = ScriptedModel([by_model] * 10)
    graph = cg.AgentGraph()
    graph.add_agent(
        "a",
        LLMAgent("primary", client=model, retries=1, retry_backoff_s=0.001, fallbacks=["backup"]),
    )
    result = await run_graph(graph, "go", entry=["a"])
    assert result.answer == "from backup"
    assert [(e.model, e.outcome) for e in events(result, cg.LLMCalled)] == [
        ("primary", "LLMRateLimitError"),
        ("primary", "LLMRateLimitError"),
        ("backup", "ok"),
    ]


class SlowClient:
    """Answers after ``delay`` seconds; tracks how many calls are in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.peak = 0

    def supports_tools(self, model: str) -> bool:
        return False

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return ModelResponse(content="done", prompt_tokens=3, completion_tokens=1)


async def test_timeout_per_call() -> None:
    graph = cg.AgentGraph()
    graph.add_agent(
        "a", LLMAgent(client=SlowClient(5), timeout_s=0.05, retries=1, retry_backoff_s=0.001)
    )
    result = await run_graph(graph, "go", entry=["a"])
    assert [e.outcome for e in events(result, cg.LLMCalled)] == ["LLMTimeoutError"] * 2
    [err] = events(result, cg.AgentErrored)
    assert err.error_type == LLMTimeoutError.__name__


async def test_concurrency_cap_per_model() -> None:
    free, capped = SlowClient(0.05), SlowClient(0.05)
    graph = cg.AgentGraph(entry=["hub"])

    @cg.agent
    async def hub(ctx: cg.AgentContext, message: cg.Message) -> None:
        if message.sender == "user":
            th = await ctx.create_thread("fan", [f"w{i}" for i in range(4)] + ["c0", "c1", "c2"])
            await ctx.send_message(th, "go", [*(f"w{i}" for i in range(4)), "c0", "c1", "c2"])

    graph.add_agent("hub", hub)
    for i in range(4):
        graph.add_agent(f"w{i}", LLMAgent("model-free", client=free))
        graph.connect("hub", f"w{i}", mutual=True)
    for i in range(3):
        graph.add_agent(f"c{i}", LLMAgent("model-capped", client=capped, max_concurrency=1))
        graph.connect("hub", f"c{i}", mutual=True)
    result = await run_graph(graph, "go")
    assert result.stop_reason == "idle"
    assert free.peak == 4
    assert capped.peak == 1


async def test_budget_llm_calls_stops_before_the_call() -> None:
    model = ScriptedModel([call("send_message", content="x", mentions=[])] * 5 + ["bye"])
    graph = cg.AgentGraph()
    graph.add_agent("a", LLMAgent(client=model, max_steps=5))
    result = await run_graph(graph, "go", entry=["a"], budgets=cg.Budgets(max_llm_calls=2))
    assert result.stop_reason == "budget:llm_calls"
    assert len(model.requests) == 2
    assert result.usage["a"].llm_calls == 2


async def test_budget_tokens_and_cost_checked_before_the_call() -> None:
    model = ScriptedModel(["hello"], cost_per_token=0.001)
    graph = cg.AgentGraph()
    graph.add_agent("a", LLMAgent(client=model, max_tokens=100))
    result = await run_graph(graph, "go", entry=["a"], budgets=cg.Budgets(max_tokens=50))
    assert result.stop_reason == "budget:tokens"
    assert not model.requests
    # 100 completion tokens alone may cost $0.10: a $0.05 budget stops before the call
    result = await run_graph(graph, "go", entry=["a"], budgets=cg.Budgets(max_cost_usd=0.05))
    assert result.stop_reason == "budget:cost"
    assert not model.requests
    result = await run_graph(graph, "go", entry=["a"], budgets=cg.Budgets(max_cost_usd=10.0))
    assert result.stop_reason == "answer"
    assert 0 < result.cost_usd < 10.0
    assert result.cost_usd == pytest.approx(sum(e.cost_usd for e in events(result, cg.LLMCalled)))


async def test_scripted_model_by_model_string() -> None:
    model = ScriptedModel(["hi from a script"], name="greeter-test")
    try:
        graph = cg.AgentGraph()
        graph.add_agent("g", LLMAgent("scripted/greeter-test"))
        result = await run_graph(graph, "hello", entry=["g"])
        assert result.answer == "hi from a script"
        assert model.requests[0].model == "scripted/greeter-test"
    finally:
        model.close()


async def test_context_threads_and_trimming() -> None:
    seen: list[list[dict[str, Any]]] = []

    @cg.agent
    async def probe(ctx: cg.AgentContext, message: cg.Message) -> None:
        other = await ctx.create_thread("side", ["peer"])
        await ctx.send_message(other, "side note " * 5, [])
        done = await ctx.create_thread("old", ["peer"])
        await ctx.close_thread(done, "the old thread concluded: 42")
        for i in range(30):
            await ctx.send_message(message.thread_id, f"filler message {i} " + "x " * 40, [])
        for budget in (100_000, 600):
            seen.append(
                build_context(
                    ctx,
                    message,
                    system_prompt="SYSTEM RULES",
                    description="probe",
                    mode="text",
                    budget_tokens=budget,
                    count=lambda ms: sum(len(str(m["content"])) // 4 + 4 for m in ms),
                )
            )

    graph = cg.AgentGraph()
    graph.add_agent("probe", probe)
    graph.add_agent("peer", LLMAgent(client=ScriptedModel()))
    graph.connect("probe", "peer")
    await run_graph(graph, "THE TASK", entry=["probe"])
    full, trimmed = seen
    assert full[0]["role"] == "system"
    assert full[0]["content"].startswith("SYSTEM RULES")
    assert "- peer:" in full[0]["content"]
    note = full[1]["content"]
    assert 't-2 "side" (open, with probe, peer)' in note
    assert "side note" in note
    assert 't-3 "old" (closed): the old thread concluded: 42' in note
    assert "THE TASK" in full[-1]["content"]
    assert len(full) == 2 + 30 + 1
    assert all(m["role"] == "assistant" for m in full[2:-1])  # its own messages
    # trimmed: system and the wake kept, the oldest messages gone first
    assert trimmed[0] == full[0]
    assert trimmed[-1] == full[-1]
    assert trimmed[1] == full[1]  # the note on other threads goes only after history
    kept = [m["content"] for m in trimmed[2:-1]]
    assert 0 < len(kept) < 30
    assert kept == [m["content"] for m in full[-1 - len(kept) : -1]]
    assert sum(len(str(m["content"])) // 4 + 4 for m in trimmed) <= 600


def test_token_efficiency_scenario() -> None:
    report = measure_token_efficiency(
        count=lambda ms, tools: sum(len(str(m.get("content") or "")) // 4 + 4 for m in ms)
    )
    assert report.stop_reason == "answer"
    assert report.calls > 10
    assert report.messages > 10
    assert report.baseline_prompt_tokens > report.prompt_tokens
    assert report.ratio == pytest.approx(
        report.baseline_prompt_tokens / report.prompt_tokens, rel=1e-3
    )
    again = measure_token_efficiency(
        count=lambda ms, tools: sum(len(str(m.get("content") or "")) // 4 + 4 for m in ms)
    )
    assert again == report  # scripted: the same every time


def test_llm_agent_and_yaml_share_one_declaration_of_the_model_settings() -> None:
    import inspect

    from coral_graph.config import ModelSettings

    params = set(inspect.signature(LLMAgent.__init__).parameters) - {"self"}
    assert set(ModelSettings.model_fields) <= params
    # the YAML's bounds hold in Python too, naming the argument
    with pytest.raises(ValueError, match=r"temperature"):
        LLMAgent("openai/x", temperature=3.0)
    with pytest.raises(ValueError, match=r"top_p"):
        LLMAgent("openai/x", top_p=0)
    with pytest.raises(ValueError, match=r"max_steps"):
        LLMAgent("openai/x", max_steps=0)
    with pytest.raises(ValueError, match=r"mode"):
        LLMAgent("openai/x", mode="chat")  # type: ignore[arg-type]
