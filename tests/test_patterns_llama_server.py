"""A small model behind llama.cpp's OpenAI-compatible server gets the compact context
the embedded one gets: ``context: auto`` goes by the model's size, not by the
``embedded/`` prefix. A real ``llama_cpp.server`` on 127.0.0.1 serves the SmolLM2 GGUF."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import coral_graph as cg
from coral_graph import LLMCalled
from coral_graph.config import LoadedGraph, load_graph

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:  # found, never imported here
        pytest.skip("llama-cpp-python is not installed")
    pytest.importorskip("fastapi", reason="llama_cpp.server needs the dev extra (fastapi)")
    pytest.importorskip("starlette_context")
    from coral_graph.llm import find_gguf

    gguf = find_gguf("smollm2-135m")  # the package's folder; the package is never imported
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    cmd += ["--model_alias", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"]
    # llama.cpp logs a lot while loading: to a file, never a pipe that could fill up
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start in 120 s"
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def _run(lg: LoadedGraph) -> cg.RunResult:
    async with cg.open_runtime(lg.graph, budgets=lg.budgets) as rt:
        assert lg.task is not None
        return await rt.run(lg.task, entry=lg.entry, answer_by=lg.answer_by)


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_voting_over_http_gets_the_compact_context(llama_server: str) -> None:
    lg = load_graph(
        CONFIGS / "voting.yaml",
        model="openai/smollm2-135m",
        overrides=[f"defaults.api_base={llama_server}", "defaults.max_tokens=16"],
    )
    result = await _run(lg)
    assert result.stop_reason == "answer", (result.stop_reason, result.error)
    calls = [e for e in result.events if isinstance(e, LLMCalled)]
    assert len(calls) == 3
    assert all(c.outcome == "ok" for c in calls), [c.error for c in calls]
    for c in calls:
        assert c.request is not None
        messages = c.request["messages"]
        # compact: the voter's own prompt, then the bare question; no roster, no ids
        assert messages[-1]["content"] == "What is the capital of France?"
        system = messages[0]["content"]
        assert "You can reach" not in system
        assert "[t-" not in str(messages)
        assert c.prompt_tokens < 80, c.prompt_tokens  # the full context was 177 tokens
    # the answer is the winner only: no echo of the bookkeeping
    assert result.answer is not None
    assert "@voter" not in result.answer
    assert "->" not in result.answer


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_full_context_is_still_there_when_asked(llama_server: str) -> None:
    lg = load_graph(
        CONFIGS / "single.yaml",
        model="openai/smollm2-135m",
        overrides=[
            f"defaults.api_base={llama_server}",
            "defaults.max_tokens=8",
            "defaults.context=full",
        ],
    )
    result = await _run(lg)
    (call,) = [e for e in result.events if isinstance(e, LLMCalled)]
    assert call.outcome == "ok", call.error
    assert call.request is not None
    assert "This message woke you" in call.request["messages"][-1]["content"]
