"""The first prompt-token count of a model loads its tokenizer off the event loop.

litellm's token counter loads a tokenizer the first time a model is counted
(tiktoken's BPE rank file, parsed and compiled: 0.1 s on an idle machine, seconds
on a loaded one). Done on the event loop it holds every agent, the store writer,
MCP endpoints and NATS heartbeats of the process meanwhile.

Each scenario runs in a fresh interpreter (a tokenizer loads once per process), the
model behind ``api_base`` is tests/openai_stub.py over real HTTP, and a spy wraps
tiktoken's rank-file loader. The spy records whether the thread that loads runs an
event loop, and — while a heartbeat task runs on the loop — holds the load until
the heartbeat has ticked three more times: a load on the loop thread could never
see a tick, so the loop's progress is shown without timing anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from openai_stub import OpenAIStub, error, reply

import coral_graph as cg
from coral_graph.llm import LLMAgent
from coral_graph.testing import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, sys, threading

import anyio

import coral_graph as cg
from coral_graph.llm import LLMAgent

mode, base_url = sys.argv[1], sys.argv[2]
if mode != "sync":
    # Importing litellm is not what these scenarios are about: done before the loop
    # (the CLI and cg.run do the same through check_ready).
    from coral_graph.llm._litellm import load_litellm

    load_litellm()

import tiktoken_ext.openai_public as public

loads = []
beat = threading.Event()
heartbeat_on = False
real_load = public.load_tiktoken_bpe


def spy(path, *args, **kwargs):
    try:
        asyncio.get_running_loop()
        on_loop = True
    except RuntimeError:
        on_loop = False
    record = {
        "file": os.path.basename(str(path)),
        "on_loop": on_loop,
        "thread": threading.current_thread().name,
        "ticks": None,
    }
    loads.append(record)
    if heartbeat_on and not on_loop:
        seen = 0
        for _ in range(3):  # the loop must keep ticking while this load runs
            beat.clear()
            if not beat.wait(30):
                break
            seen += 1
        record["ticks"] = seen
    return real_load(path, *args, **kwargs)


public.load_tiktoken_bpe = spy

loop_imports = []


class ImportSpy:
    # Records the SDK modules first imported on the event loop thread during a run
    # (litellm itself still imports a dozen small modules on its first call).

    def find_spec(self, name, path=None, target=None):
        if heartbeat_on and name.split(".")[0] in ("openai", "tiktoken"):
            try:
                asyncio.get_running_loop()
                loop_imports.append(name)
            except RuntimeError:
                pass
        return None


sys.meta_path.insert(0, ImportSpy())


async def heartbeat():
    while True:
        beat.set()
        await anyio.sleep(0.002)


def graph(model, fallbacks=()):
    g = cg.AgentGraph(entry=["a"])
    agent = LLMAgent(model, api_base=base_url, mode="text", temperature=0, fallbacks=fallbacks)
    g.add_agent("a", agent)
    return g


def counted(result):
    import litellm

    [call] = [e for e in result.events if isinstance(e, cg.LLMCalled) and e.outcome == "ok"]
    expected = litellm.token_counter(model=call.model, messages=call.request["messages"])
    return {"answer": result.answer, "prompt_tokens": call.prompt_tokens, "expected": expected}


async def with_heartbeat(work):
    global heartbeat_on
    async with anyio.create_task_group() as tg:
        heartbeat_on = True
        tg.start_soon(heartbeat)
        try:
            with anyio.fail_after(60):
                return await work()
        finally:
            heartbeat_on = False
            tg.cancel_scope.cancel()


async def turn():
    out = []
    # gpt-4 fails the first run: its fallback's first count is in the model call.
    for _ in range(2):  # the second run of the process loads nothing
        async with cg.open_runtime(graph("gpt-4", ["gpt-4o-mini"])) as rt:
            out.append(counted(await rt.run("Capital of France?")))
    from coral_graph.llm import aclose_clients

    await aclose_clients()
    return out


async def concurrent():
    from coral_graph.llm._litellm import LiteLLMClient

    client = LiteLLMClient()
    async with anyio.create_task_group() as tg:
        for model in ("gpt-4", "openai/gpt-3.5-turbo", "gpt-4"):
            tg.start_soon(anyio.to_thread.run_sync, client.warm_up, model)
    return client.count_tokens("gpt-4", [{"role": "user", "content": "hello there"}])


async def efficiency():
    from coral_graph.llm._efficiency import measure_token_efficiency_async

    report = await measure_token_efficiency_async(model="openai/gpt-4o-mini", rounds=1)
    return report.stop_reason


if mode == "sync":
    result = cg.run(graph("openai/gpt-4o-mini"), "Capital of France?")
    out = [counted(result)]
else:
    work = {"turn": turn, "concurrent": concurrent, "efficiency": efficiency}[mode]
    out = anyio.run(with_heartbeat, work)
print(json.dumps({"loads": loads, "out": out, "loop_imports": loop_imports}))
"""


def run_child(mode: str, stub: OpenAIStub) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, stub.base_url],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def loaded_files(data: dict[str, Any]) -> list[str]:
    return sorted(load["file"] for load in data["loads"])


def assert_off_loop(data: dict[str, Any], *, heartbeat: bool) -> None:
    assert data["loads"], "no tokenizer was loaded: the scenario tests nothing"
    for load in data["loads"]:
        assert not load["on_loop"], f"a tokenizer loaded on the event loop's thread: {load}"
        if heartbeat:
            assert load["ticks"] == 3, f"the event loop stalled during a tokenizer load: {load}"
    files = loaded_files(data)
    assert len(files) == len(set(files)), f"a tokenizer loaded twice in one process: {files}"


def test_first_count_of_a_turn_loads_the_tokenizer_off_the_loop(
    openai_stub: OpenAIStub,
) -> None:
    openai_stub.script("gpt-4", [error(400, "no such model"), reply("FINAL: Paris again")])
    openai_stub.script("gpt-4o-mini", [reply("FINAL: Paris", prompt_tokens=0)])
    data = run_child("turn", openai_stub)
    assert_off_loop(data, heartbeat=True)
    # gpt-4 counts with cl100k, its fallback gpt-4o-mini with o200k.
    assert loaded_files(data) == ["cl100k_base.tiktoken", "o200k_base.tiktoken"]
    # Nor did the first model call import the OpenAI SDK's modules on the loop.
    assert data["loop_imports"] == []
    first, second = data["out"]
    assert (first["answer"], second["answer"]) == ("Paris", "Paris again")
    # The stub reported no prompt tokens: the agent's own count is what was
    # recorded, and it is the model's tokenizer's count, not an estimate.
    assert first["prompt_tokens"] == first["expected"] > 0


def test_sync_run_loads_the_tokenizer_before_the_loop_starts(openai_stub: OpenAIStub) -> None:
    openai_stub.script("gpt-4o-mini", [reply("FINAL: Paris", prompt_tokens=0)])
    data = run_child("sync", openai_stub)
    assert_off_loop(data, heartbeat=False)
    # check_ready loaded it before the loop started, so the first turn did not wait.
    assert [load["thread"] for load in data["loads"]] == ["MainThread"]
    [out] = data["out"]
    assert out["answer"] == "Paris"
    assert out["prompt_tokens"] == out["expected"] > 0


def test_concurrent_first_counts_load_one_encoding_once(openai_stub: OpenAIStub) -> None:
    data = run_child("concurrent", openai_stub)
    assert_off_loop(data, heartbeat=True)
    # gpt-4 and gpt-3.5-turbo share cl100k: one load for three first counts.
    assert loaded_files(data) == ["cl100k_base.tiktoken"]
    assert data["out"] > 0


def test_token_efficiency_counts_with_the_tokenizer_loaded_off_the_loop(
    openai_stub: OpenAIStub,
) -> None:
    data = run_child("efficiency", openai_stub)
    assert_off_loop(data, heartbeat=True)
    assert data["out"] == "answer"


class WarmingModel(ScriptedModel):
    """A scripted model whose counts need a warm-up first, as litellm's do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warmed: list[tuple[str, bool]] = []  # (model, on the event loop's thread)
        self.release = threading.Event()
        self.release.set()

    def warm_up(self, model: str) -> None:
        self.warmed.append((model, _on_loop()))
        self.release.wait(30)

    def count_tokens(
        self, model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None
    ) -> int:
        assert model in [m for m, _ in self.warmed], f"{model} counted before its warm-up"
        return super().count_tokens(model, messages, tools)


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.anyio
async def test_a_turn_warms_its_model_up_once_in_a_worker_thread() -> None:
    model = WarmingModel(["FINAL: 4", "FINAL: 5"])
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent("scripted/x", client=model, mode="text"))
    with anyio.fail_after(30):
        async with cg.open_runtime(graph) as rt:
            first = await rt.run("2+2?")
            second = await rt.run("2+3?")
    assert (first.answer, second.answer) == ("4", "5")
    assert model.warmed == [("scripted/x", False)]


@pytest.mark.anyio
async def test_a_run_that_ends_does_not_wait_for_a_warm_up() -> None:
    model = WarmingModel(["FINAL: 4"])
    model.release.clear()  # the warm-up hangs (a tokenizer download that stalls)
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent("scripted/x", client=model, mode="text"))
    try:
        with anyio.fail_after(10):
            async with cg.open_runtime(graph) as rt:
                result = await rt.run("2+2?", budgets=cg.Budgets(timeout_s=0.2))
        assert result.stop_reason == "budget:time"
        assert model.warmed == [("scripted/x", False)]
        assert not model.release.is_set()  # still warming up in its thread
    finally:
        model.release.set()


@pytest.mark.anyio
async def test_a_client_without_warm_up_still_counts() -> None:
    """A custom client that offers only ``count_tokens`` is counted as before."""
    model = ScriptedModel(["FINAL: 4"])
    assert not hasattr(model, "warm_up")
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent("scripted/x", client=model, mode="text"))
    async with cg.open_runtime(graph) as rt:
        result = await rt.run("2+2?")
    assert result.answer == "4"
