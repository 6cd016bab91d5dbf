"""A scripted OpenAI-compatible chat completions server for tests (stdlib only).

It listens on 127.0.0.1 on a free port, in a daemon thread. Each model name has a
script: a list of steps consumed one per request. A step is one of

* ``reply("text")``: an assistant message;
* ``tool_calls(("send_message", {...}), ...)``: assistant tool calls (arguments may
  be a dict, encoded as JSON, or a raw string, sent as-is: malformed on purpose);
* ``error(429)`` / ``error(500, "...")``: an HTTP error with an OpenAI error body;
* ``delay(seconds, step)``: wait, then answer with ``step``.

When a script runs out the server answers ``"(script exhausted)"``. Every request
body is recorded in :attr:`OpenAIStub.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIStub", "Step", "delay", "error", "reply", "serve", "tool_calls"]


@dataclass
class Step:
    """One scripted answer."""

    content: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    message: str = ""
    sleep_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def reply(
    content: str, *, prompt_tokens: int | None = None, completion_tokens: int | None = None
) -> Step:
    return Step(content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def tool_calls(*calls: tuple[str, Mapping[str, Any] | str], content: str | None = None) -> Step:
    encoded = [(n, a if isinstance(a, str) else json.dumps(dict(a))) for n, a in calls]
    return Step(content=content, calls=encoded)


def error(status: int, message: str = "") -> Step:
    return Step(status=status, message=message or f"stub error {status}")


def delay(seconds: float, step: Step) -> Step:
    step.sleep_s = seconds
    return step


class OpenAIStub:
    """The server's state: scripts per model and the requests received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self.requests: list[dict[str, Any]] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, steps: list[Step]) -> None:
        """Append ``steps`` to the script of ``model`` (the name after ``openai/``)."""
        with self._lock:
            self._scripts[model].extend(steps)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r.get("model") == model]

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            script = self._scripts.get(str(body.get("model")))
            if script:
                return script.popleft()
        return Step(content="(script exhausted)")


def _completion(body: dict[str, Any], step: Step) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": step.content}
    finish = "stop"
    if step.calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}_{int(time.time() * 1e6)}",
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for i, (name, args) in enumerate(step.calls)
        ]
        finish = "tool_calls"
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    prompt = step.prompt_tokens if step.prompt_tokens is not None else max(1, prompt_chars // 4)
    completion = (
        step.completion_tokens
        if step.completion_tokens is not None
        else max(1, len(step.content or "") // 4 + 10 * len(step.calls))
    )
    return {
        "id": f"chatcmpl-{int(time.time() * 1e6)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": []})
            else:
                self._send(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "bad json", "type": "invalid_request"}})
                return
            body["_authorization"] = self.headers.get("Authorization")
            step = stub._next(body)
            if step.sleep_s:
                time.sleep(step.sleep_s)
            if step.status != 200:
                kind = "rate_limit_exceeded" if step.status == 429 else "server_error"
                self._send(
                    step.status, {"error": {"message": step.message, "type": kind, "code": kind}}
                )
                return
            self._send(200, _completion(body, step))

    return Handler


@contextmanager
def serve() -> Iterator[OpenAIStub]:
    """Run a stub server on 127.0.0.1 (a free port) for the duration of the block."""
    stub = OpenAIStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="openai-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
