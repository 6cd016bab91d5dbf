"""OpenTelemetry export: coral-graph runs as traces in the tracing tools people run.

An :class:`OTelExporter` is an event subscriber. It turns a run's events into
spans and sends them over OTLP/HTTP (protobuf) to a collector — Jaeger, Phoenix,
Langfuse, an OpenTelemetry Collector — with the OpenTelemetry SDK (the ``[otel]``
extra, imported only when an exporter is made)::

    from coral_graph.otel import OTelExporter

    async with cg.open_runtime(graph) as rt:
        exporter = OTelExporter("http://127.0.0.1:4318")
        rt.subscribe(exporter.on_event)
        result = await rt.run("...")
    exporter.shutdown()  # flushes what is left

or ``coral-graph run graph.yaml --otel http://127.0.0.1:4318``. Without an
endpoint the standard variables ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and
``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``OTEL_EXPORTER_OTLP_HEADERS``) are used.

The spans of one run form one trace:

* ``coral-graph run`` — the run, from its start to its stop reason;
* ``invoke_agent <name>`` — one turn of an agent (a handled delivery), a child of
  the run;
* ``chat <model>`` — one LLM call with the GenAI semantic-convention attributes
  (``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.request.model``,
  ``gen_ai.usage.input_tokens``/``output_tokens``), a child of the turn it was
  made in (of the run for loop agents, which have no turns);
* ``execute_tool <tool>`` — one tool call of a model, likewise.

A failed call, tool call or turn has the span status ERROR and ``error.type``.
Spans carry the times the events recorded, so the trace matches the transcript.
Spans are built from events as they arrive; the turn a call belongs to is known
when the turn ends (its ``delivery_handled`` event), so calls are held until then.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from coral_graph._events import (
    AgentErrored,
    DeliveryHandled,
    Event,
    LLMCalled,
    RunFinished,
    RunStarted,
    ToolCalled,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["OTelExporter"]

_NS = 1_000_000_000


def _ns(ts: float) -> int:
    return int(ts * _NS)


def _system(model: str) -> str:
    """``gen_ai.system`` from a litellm model string (``openai/gpt-4o`` -> ``openai``)."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def _traces_endpoint(endpoint: str | None) -> str:
    if endpoint is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint:
            return endpoint
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            raise ValueError(
                "no OTLP endpoint: pass one (e.g. http://127.0.0.1:4318) or set "
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class _RunSpans:
    """The open state of one run's trace."""

    __slots__ = ("held", "last_end", "root", "turn_errors")

    def __init__(self, root: Span, start: int) -> None:
        self.root = root
        # The run's span ends after everything in it (the turn that answered ends
        # a moment after the run was decided).
        self.last_end = start
        # LLM and tool calls of each agent since its last turn ended.
        self.held: dict[str, list[LLMCalled | ToolCalled]] = {}
        # The error of an agent's current turn (agent_errored comes before its
        # delivery_handled).
        self.turn_errors: dict[str, AgentErrored] = {}


class OTelExporter:
    """Send the runs of a runtime to an OTLP/HTTP endpoint as OpenTelemetry traces.

    Args:
        endpoint: the collector's base URL (``/v1/traces`` is appended) or its full
            traces URL; default from the ``OTEL_EXPORTER_OTLP_*`` variables.
        headers: extra HTTP headers (e.g. an ``Authorization`` for Langfuse).
        service_name: the ``service.name`` resource attribute.
        tracer_provider: use this provider instead of a private one (its exporters
            apply; ``endpoint`` and ``headers`` are then ignored).

    Raises:
        ImportError: the ``[otel]`` extra is not installed.
        ValueError: no endpoint was given or configured.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        service_name: str = "coral-graph",
        tracer_provider: Any = None,
    ) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OpenTelemetry export needs the [otel] extra: pip install 'coral-graph[otel]'"
            ) from exc
        self._trace = trace
        self._own_provider = tracer_provider is None
        if tracer_provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = _traces_endpoint(endpoint)
            tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": service_name})
            )
            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=url, headers=headers))
            )
        self.provider = tracer_provider
        self._tracer: Tracer = tracer_provider.get_tracer("coral_graph")
        self._runs: dict[str, _RunSpans] = {}

    # -- the event subscriber ------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Subscribe this to a runtime (``rt.subscribe(exporter.on_event)``)."""
        if isinstance(event, RunStarted):
            self._run_started(event)
            return
        spans = self._runs.get(event.run_id)
        if spans is None:
            return  # a run that started before the exporter was attached
        if isinstance(event, (LLMCalled, ToolCalled)):
            spans.held.setdefault(event.agent, []).append(event)
        elif isinstance(event, AgentErrored):
            spans.turn_errors[event.agent] = event
        elif isinstance(event, DeliveryHandled):
            self._turn(spans, event)
        elif isinstance(event, RunFinished):
            self._run_finished(spans, event)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Send every finished span now; True if all were sent in time."""
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Flush and stop the exporter (only a provider it made itself)."""
        for spans in self._runs.values():
            spans.root.end()
        self._runs.clear()
        if self._own_provider:
            self.provider.shutdown()
        else:
            self.force_flush()

    # -- spans ---------------------------------------------------------------------

    def _run_started(self, ev: RunStarted) -> None:
        root = self._tracer.start_span(
            "coral-graph run",
            start_time=_ns(ev.ts),
            attributes={
                "coral.run_id": ev.run_id,
                "gen_ai.conversation.id": ev.run_id,
                "gen_ai.operation.name": "invoke_agent",
                "coral.entry": list(ev.entry),
                "coral.task": ev.task[:2000],
            },
        )
        self._runs[ev.run_id] = _RunSpans(root, _ns(ev.ts))

    def _context(self, parent: Span) -> Any:
        return self._trace.set_span_in_context(parent)

    def _turn(self, spans: _RunSpans, ev: DeliveryHandled) -> None:
        held = spans.held.pop(ev.agent, [])
        failure = spans.turn_errors.pop(ev.agent, None)
        if ev.via != "handle":
            # A loop agent read its mentions: no turn with a duration; its calls
            # hang off the run.
            self._calls(spans, spans.root, held)
            return
        turn = self._tracer.start_span(
            f"invoke_agent {ev.agent}",
            context=self._context(spans.root),
            start_time=_ns(ev.ts - ev.duration_s),
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": ev.agent,
                "coral.message_id": ev.message_id,
            },
        )
        if not ev.ok:
            if failure is not None:
                self._fail(turn, failure.error_type, failure.error)
            else:
                self._fail(turn, "error", "")
        self._calls(spans, turn, held)
        end = _ns(ev.ts)
        spans.last_end = max(spans.last_end, end)
        turn.end(end_time=end)

    def _calls(self, spans: _RunSpans, parent: Span, held: list[LLMCalled | ToolCalled]) -> None:
        ctx = self._context(parent)
        for ev in held:
            if isinstance(ev, LLMCalled):
                span = self._tracer.start_span(
                    f"chat {ev.model}",
                    context=ctx,
                    start_time=_ns(ev.ts - ev.latency_s),
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.system": _system(ev.model),
                        "gen_ai.request.model": ev.model,
                        "gen_ai.response.model": ev.model,
                        "gen_ai.agent.name": ev.agent,
                        "gen_ai.usage.input_tokens": ev.prompt_tokens,
                        "gen_ai.usage.output_tokens": ev.completion_tokens,
                        "coral.cost_usd": ev.cost_usd,
                        "coral.outcome": ev.outcome,
                    },
                )
                if ev.outcome != "ok":
                    self._fail(span, ev.outcome, ev.error or "")
                elif ev.error:
                    span.set_attribute("coral.note", ev.error)
            else:
                span = self._tracer.start_span(
                    f"execute_tool {ev.tool}",
                    context=ctx,
                    start_time=_ns(ev.ts - ev.duration_s),
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": ev.tool,
                        "gen_ai.agent.name": ev.agent,
                        "coral.thread_id": ev.thread_id or "",
                    },
                )
                if not ev.ok:
                    self._fail(span, "tool_error", ev.result[:500])
            end = _ns(ev.ts)
            spans.last_end = max(spans.last_end, end)
            span.end(end_time=end)

    def _fail(self, span: Span, error_type: str, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, description[:1000]))

    def _run_finished(self, spans: _RunSpans, ev: RunFinished) -> None:
        # Calls of turns that never ended (the run stopped mid-turn) hang off the run.
        for held in spans.held.values():
            self._calls(spans, spans.root, held)
        root = spans.root
        root.set_attribute("coral.stop_reason", ev.stop_reason)
        if ev.error:
            self._fail(root, ev.stop_reason, ev.error)
        elif ev.stop_reason == "error":
            self._fail(root, "error", "")
        root.end(end_time=max(_ns(ev.ts), spans.last_end))
        del self._runs[ev.run_id]
        # Sent by the batch processor's thread (within seconds), never from here:
        # this runs on the event loop.
