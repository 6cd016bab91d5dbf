"""The Starlette application of the web viewer: a JSON API, server-sent events for
live runs, and the static page. Starlette is imported here only."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coral_graph.store._errors import StoreError
from coral_graph.store._guard import db_error
from coral_graph.store._json import dumps
from coral_graph.viewer.query import Filters, RunNotFoundError, RunReader
from coral_graph.viewer.web._security import (
    SECURITY_HEADERS,
    STATIC_DIR,
    TOKEN_COOKIE,
    host_allowed,
    token_ok,
)

__all__ = ["create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Guard:
    """ASGI middleware: Host-header check, optional token, security headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: tuple[str, ...],
        check_host: bool,
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        # The port we are bound to, as the server reports it (never from the client).
        server = scope.get("server")
        port = server[1] if server else None
        if self.check_host and not host_allowed(host, port, self.allowed_hosts):
            await _plain(send, 421, "misdirected request: this viewer answers on 127.0.0.1 only")
            return
        set_cookie = False
        if self.token is not None:
            ok, set_cookie = token_ok(self.token, scope.get("query_string", b""), headers)
            if not ok:
                await _plain(send, 401, "this viewer needs its token: open the URL it printed")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                raw += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]
                if set_cookie and self.token is not None:
                    cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    raw.append((b"set-cookie", cookie.encode()))
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _json(data: Any, status: int = 200) -> Response:
    # The store's encoder: valid JSON even for NaN/Infinity in a message's metadata
    # (as "NaN"/"Infinity" strings), where JSONResponse would fail the request.
    return Response(
        dumps(data, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def create_app(
    reader: RunReader,
    *,
    default_run: str | None = None,
    token: str | None = None,
    check_host: bool = True,
    allowed_hosts: tuple[str, ...] = (),
    poll_s: float = 0.2,
    stream_max_s: float = 300.0,
) -> Starlette:
    """The viewer's ASGI app.

    Args:
        reader: where runs are read from.
        default_run: the run the page opens when its URL names none.
        token: require this token on every request (serving beyond loopback).
        check_host: answer only ``Host: 127.0.0.1|localhost|[::1]:<port>``.
        allowed_hosts: more host names to accept (with a token).
        poll_s: how often a live stream looks for new messages.
        stream_max_s: an event stream ends after this long; the browser reconnects
            and resumes from ``Last-Event-ID`` (so no stream lives forever).
    """

    if token is not None and not token.strip():
        raise ValueError("an empty token lets anyone in: pass a real token, or None for none")

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-store"})

    async def config(request: Request) -> Response:
        return _json({"mode": "server", "default_run": default_run})

    async def runs(request: Request) -> Response:
        return _json(await call(reader.runs))

    async def run(request: Request) -> Response:
        return _json(await call(reader.run, request.path_params["run_id"]))

    async def messages(request: Request) -> Response:
        q = request.query_params
        rid = request.path_params["run_id"]
        around = _int(q.get("around"))
        if around is None and q.get("around_id"):
            around = await call(reader.gseq_of, rid, q["around_id"])
            if around is None:
                return _json({"error": f"no message {q['around_id']!r} in run {rid}"}, 404)
        page = await call(
            reader.messages,
            rid,
            Filters.from_params(q),
            after=_int(q.get("after")),
            before=_int(q.get("before")),
            around=around,
            end=q.get("end") == "1",
            limit=_int(q.get("limit")) or 100,
            count=q.get("count") == "1",
        )
        return _json(page)

    async def search(request: Request) -> Response:
        rid = request.path_params["run_id"]
        return _json(await call(reader.search, rid, Filters.from_params(request.query_params)))

    async def locate(request: Request) -> Response:
        q = request.query_params
        rid = request.path_params["run_id"]
        gseq = await call(
            reader.locate,
            rid,
            Filters.from_params(q),
            after=_int(q.get("after")) or 0,
            forward=q.get("dir", "next") != "prev",
        )
        return _json({"gseq": gseq})

    async def agents(request: Request) -> Response:
        return _json(await call(reader.agents, request.path_params["run_id"]))

    async def graph(request: Request) -> Response:
        return _json(await call(reader.graph, request.path_params["run_id"]))

    async def llm_calls(request: Request) -> Response:
        return _json(await call(reader.llm_calls, request.path_params["run_id"]))

    async def llm_call(request: Request) -> Response:
        rid = request.path_params["run_id"]
        return _json(await call(reader.llm_call, rid, int(request.path_params["seq"])))

    async def timeline(request: Request) -> Response:
        return _json(await call(reader.timeline, request.path_params["run_id"]))

    async def evals(request: Request) -> Response:
        return _json(await call(reader.evals))

    async def eval_items(request: Request) -> Response:
        return _json(await call(reader.eval_items, request.path_params["eval_id"]))

    async def logs(request: Request) -> Response:
        return _json(await call(reader.logs, request.path_params["run_id"]))

    async def events(request: Request) -> Response:
        rid = request.path_params["run_id"]
        await call(reader.status, rid)  # 404 before the stream starts
        last_id = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            start = int(last_id) if last_id else 0
        except ValueError:
            start = 0

        async def stream() -> AsyncIterator[str]:
            last = start
            deadline = time.monotonic() + stream_max_s
            quiet_since = time.monotonic()
            prev_status: dict[str, Any] | None = None
            yield "retry: 500\n\n"
            while True:
                # The status first, then the messages: a run seen finished has every
                # message committed, so the read after it gets them all before "end"
                # (the other order lost the last messages when the run ended between).
                status: dict[str, Any] = await call(reader.status, rid)
                batch: list[dict[str, Any]] = await call(reader.since, rid, last)
                for m in batch:
                    last = m["gseq"]
                    yield f"id: {last}\nevent: message\ndata: {dumps(m)}\n\n"
                key = {k: status[k] for k in ("status", "messages", "last_seq", "stop_reason")}
                if key != prev_status:
                    prev_status = key
                    yield f"event: run\ndata: {dumps(status)}\n\n"
                if batch:
                    quiet_since = time.monotonic()
                    if len(batch) >= 500:
                        continue
                elif not status["live"]:
                    yield "event: end\ndata: {}\n\n"
                    return
                now = time.monotonic()
                if now > deadline:
                    return
                if now - quiet_since > 15:
                    quiet_since = now
                    yield ": keep-alive\n\n"
                await anyio.sleep(poll_s)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 404)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 400)

    async def store_failed(request: Request, exc: Exception) -> Response:
        # A damaged store file: say so (and how to recover) instead of a bare 500.
        err = db_error(exc, str(reader.path)) if isinstance(exc, sqlite3.Error) else exc
        return _json({"error": str(err)}, 500)

    base = "/api/runs/{run_id}"
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/index.html", index),
            Route("/api/config", config),
            Route("/api/runs", runs),
            Route("/api/evals", evals),
            Route("/api/evals/{eval_id}", eval_items),
            Route(base, run),
            Route(base + "/messages", messages),
            Route(base + "/search", search),
            Route(base + "/locate", locate),
            Route(base + "/agents", agents),
            Route(base + "/graph", graph),
            Route(base + "/events", events),
            Route(base + "/llm_calls", llm_calls),
            Route(base + "/llm_calls/{seq:int}", llm_call),
            Route(base + "/timeline", timeline),
            Route(base + "/logs", logs),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={
            RunNotFoundError: not_found,
            LookupError: not_found,
            ValueError: bad_request,
            sqlite3.Error: store_failed,
            StoreError: store_failed,
        },
    )

    app.add_middleware(
        _Guard,
        token=token,
        allowed_hosts=allowed_hosts,
        check_host=check_host,
    )
    return app
