"""OpenTelemetry export against a real OTLP/HTTP receiver on 127.0.0.1.

The receiver is a plain HTTP server that decodes the protobuf requests the
exporter POSTs to ``/v1/traces`` with the OpenTelemetry protocol's own messages.
The LLM calls go over real HTTP to the OpenAI-compatible stub.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from openai_stub import OpenAIStub, error, reply, tool_calls
from typer.testing import CliRunner

import coral_graph as cg
from coral_graph.cli import EXIT_BAD_INPUT, app
from coral_graph.llm import LLMAgent

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from coral_graph.otel import OTelExporter


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with receiver.lock:
                    receiver.paths.append(self.path)
                    for rs in req.resource_spans:
                        receiver.resources.append(
                            {a.key: a.value.string_value for a in rs.resource.attributes}
                        )
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append(_span(span))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _span(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent": span.parent_span_id.hex(),
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attrs": {a.key: _value(a.value) for a in span.attributes},
        "status": span.status.code,  # 0 unset, 1 ok, 2 error
        "status_message": span.status.message,
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def run_traced(graph: cg.AgentGraph, receiver: Receiver, task: str) -> cg.RunResult:
    exporter = OTelExporter(receiver.url, service_name="coral-test")
    try:
        with anyio.fail_after(30):
            async with cg.open_runtime(graph) as rt:
                rt.subscribe(exporter.on_event)
                result = await rt.run(task)
    finally:
        exporter.shutdown()
    return result


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_a_run_is_one_trace_of_turns_llm_calls_and_tool_calls(
    openai_stub: OpenAIStub, receiver: Receiver
) -> None:
    openai_stub.script(
        "otel-a",
        [
            tool_calls(("list_agents", {})),
            reply("FINAL: Paris", prompt_tokens=40, completion_tokens=3),
        ],
    )
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent("openai/otel-a", api_base=openai_stub.base_url, mode="tools"))
    result = await run_traced(graph, receiver, "Capital of France?")
    assert result.stop_reason == "answer"

    assert receiver.paths
    assert all(p == "/v1/traces" for p in receiver.paths)
    assert receiver.resources[0]["service.name"] == "coral-test"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in receiver.spans:
        by_name.setdefault(s["name"], []).append(s)
    [root] = by_name["coral-graph run"]
    assert root["parent"] == ""
    assert root["attrs"]["coral.run_id"] == result.run_id
    assert root["attrs"]["coral.stop_reason"] == "answer"
    assert {s["trace_id"] for s in receiver.spans} == {root["trace_id"]}

    [turn] = by_name["invoke_agent a"]
    assert turn["parent"] == root["span_id"]
    assert turn["attrs"]["gen_ai.agent.name"] == "a"
    assert root["start"] <= turn["start"] <= turn["end"] <= root["end"]

    chats = by_name["chat openai/otel-a"]
    assert len(chats) == 2
    for chat in chats:
        assert chat["parent"] == turn["span_id"]
        assert chat["attrs"]["gen_ai.operation.name"] == "chat"
        assert chat["attrs"]["gen_ai.system"] == "openai"
        assert chat["attrs"]["gen_ai.request.model"] == "openai/otel-a"
        assert turn["start"] <= chat["start"] <= chat["end"] <= turn["end"]
    assert {c["attrs"]["gen_ai.usage.input_tokens"] for c in chats} >= {40}
    assert {c["attrs"]["gen_ai.usage.output_tokens"] for c in chats} >= {3}

    [tool] = by_name["execute_tool list_agents"]
    assert tool["parent"] == turn["span_id"]
    assert tool["attrs"]["gen_ai.tool.name"] == "list_agents"


@pytest.mark.anyio
@pytest.mark.usefixtures("litellm_cleanup")
async def test_failed_llm_calls_are_error_spans(
    openai_stub: OpenAIStub, receiver: Receiver
) -> None:
    openai_stub.script("otel-bad", [error(401, "Incorrect API key provided")] * 3)
    graph = cg.AgentGraph(entry=["a"])
    graph.add_agent("a", LLMAgent("openai/otel-bad", api_base=openai_stub.base_url, retries=0))
    await run_traced(graph, receiver, "hello")
    chats = [s for s in receiver.spans if s["name"] == "chat openai/otel-bad"]
    assert chats
    for chat in chats:
        assert chat["status"] == 2
        assert chat["attrs"]["error.type"] != ""
        assert "API key" in chat["status_message"]
    turns = [s for s in receiver.spans if s["name"] == "invoke_agent a"]
    assert turns
    assert all(t["status"] == 2 for t in turns)


def test_no_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        OTelExporter()


def test_cli_run_with_otel_sends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    (tmp_path / "bots.py").write_text(
        "async def echo(ctx, message):\n"
        "    await ctx.send_message(message.thread_id, 'echo: ' + message.content, ['user'])\n"
    )
    (tmp_path / "g.yaml").write_text("agents:\n  echo: {python: 'bots.py:echo'}\ntask: hi\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "g.yaml", "--no-store", "--otel", receiver.url])
    assert result.exit_code == 0, result.output
    names = {s["name"] for s in receiver.spans}
    assert {"coral-graph run", "invoke_agent echo"} <= names


def test_cli_run_with_otel_and_no_endpoint_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    (tmp_path / "bots.py").write_text("async def a(ctx, message):\n    pass\n")
    (tmp_path / "g.yaml").write_text("agents:\n  a: {python: 'bots.py:a'}\ntask: hi\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "g.yaml", "--no-store", "--otel", "env"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in result.output
