"""Agents that live outside coral-graph and speak MCP: external and process agents.

Both are loop-style agents (``async def run(self, ctx)``) whose turns are driven
by MCP calls: while the run goes on, each tool call of the remote side runs the
matching :class:`~coral_graph.AgentContext` operation. An agent blocked in
``wait_for_mentions`` counts as idle for quiescence; one that has not connected
yet, or is between calls, counts as busy.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from coral_graph._errors import CoralError
from coral_graph.mcp._client import resolve_command
from coral_graph.mcp._server import Endpoint, MCPHub, default_hub

if TYPE_CHECKING:
    from anyio.abc import Process

    from coral_graph._context import AgentContext
    from coral_graph._graph import AgentGraph

__all__ = [
    "AgentConnectionError",
    "ExternalAgent",
    "ProcessAgent",
    "ProcessAgentError",
    "graph_hubs",
]


class AgentConnectionError(CoralError):
    """An external or process agent did not connect (or reconnect) in time."""


class ProcessAgentError(CoralError):
    """A process agent's command could not start, or exited before the run ended."""


class ExternalAgent:
    """An agent that someone else connects over MCP (Coral's tools, coral-graph's rules).

    When a run starts, the agent gets an endpoint with a fresh secret; its URLs are
    emitted as an ``agent_logged`` event (``source="mcp"``, ``data`` with ``url`` and
    ``sse_url``) and printed by ``coral-graph run``. The run waits
    ``connect_timeout_s`` for the first request; an agent that never connects, or
    disconnects and does not come back within ``connect_timeout_s``, fails with
    :class:`AgentConnectionError` (the agent's ``on_error`` policy applies; graphs
    from YAML default to ``stop``, so the run ends with a reason naming it).

    Args:
        description: what other agents see in ``list_agents()``.
        hub: the :class:`MCPHub` to serve on (default: the process's shared one,
            127.0.0.1 on a free port).
        connect_timeout_s: seconds to wait for the agent to connect or reconnect.
    """

    kind = "external"

    def __init__(
        self,
        description: str = "",
        *,
        hub: MCPHub | None = None,
        connect_timeout_s: float = 30.0,
    ) -> None:
        if connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be above 0")
        self.description = description or "an agent connected over MCP"
        self.hub = hub
        self.connect_timeout_s = connect_timeout_s
        self.endpoint: Endpoint | None = None
        """The endpoint of the current run (None outside a run)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"

    def _hub(self) -> MCPHub:
        if self.hub is None:
            self.hub = default_hub()
        return self.hub

    async def run(self, ctx: AgentContext) -> None:
        """Serve this agent's endpoint for the whole run."""
        hub = self._hub()
        async with hub.serving():
            ep = await hub.open_endpoint(ctx)
            self.endpoint = ep
            try:
                ctx.log(
                    f"MCP endpoint: {ep.url} (streamable HTTP), {ep.sse_url} (SSE)",
                    source="mcp",
                    data={"event": "endpoint", "url": ep.url, "sse_url": ep.sse_url},
                )
                if hub.announce and self.kind == "external":
                    print(
                        f"agent {ep.name} (external) connects at {ep.url}  (SSE: {ep.sse_url}); "
                        f"waiting up to {self.connect_timeout_s:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                await self._attend(ctx, ep)
            finally:
                hub.close_endpoint(ep)
                self.endpoint = None

    async def _attend(self, ctx: AgentContext, ep: Endpoint) -> None:
        await self._await_connect(ep, "connect")
        while True:
            await ep.gone.wait()
            await self._await_connect(ep, "reconnect")

    async def _await_connect(self, ep: Endpoint, what: str) -> None:
        with anyio.move_on_after(self.connect_timeout_s):
            if what == "connect":
                await ep.connected.wait()
            else:
                await ep.back.wait()
            return
        raise AgentConnectionError(
            f"agent {ep.name} did not {what} to its MCP endpoint within "
            f"{self.connect_timeout_s:g} s (connect_timeout_s); its URL was {ep.url}"
        )


def _grace_kill(proc: Process) -> None:
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass


class ProcessAgent(ExternalAgent):
    """An agent the run launches as a process, which connects back over MCP.

    The command gets the environment Coral gives its agents: ``CORAL_CONNECTION_URL``
    (its streamable HTTP endpoint), ``CORAL_SSE_URL``, ``CORAL_AGENT_ID`` (its name),
    ``CORAL_SESSION_ID`` (the run id), ``CORAL_PROMPT_SYSTEM`` (when a system prompt
    is set), plus ``env``. Each line it prints is an ``agent_logged`` event
    (``source`` ``stdout`` or ``stderr``). When the run ends it gets SIGTERM, then
    SIGKILL after ``stop_grace_s``. A command that cannot start, or exits before the
    run ends with a failure code (or before ever connecting), raises
    :class:`ProcessAgentError` naming the agent and the command: the agent's
    ``on_error`` applies (``restart`` launches it again).

    Args:
        command: the program and its arguments, e.g. ``["python", "agent.py"]``
            (``python`` is the interpreter running coral-graph).
        env: extra environment variables.
        cwd: the working directory (default: the current one).
        system_prompt: passed as ``CORAL_PROMPT_SYSTEM``.
        stop_grace_s: seconds between SIGTERM and SIGKILL.
    """

    kind = "process"

    def __init__(
        self,
        command: Sequence[str],
        description: str = "",
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        system_prompt: str | None = None,
        hub: MCPHub | None = None,
        connect_timeout_s: float = 30.0,
        stop_grace_s: float = 3.0,
    ) -> None:
        super().__init__(description, hub=hub, connect_timeout_s=connect_timeout_s)
        if isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
            raise ValueError('command must be a non-empty list of strings, e.g. ["python", "a.py"]')
        self.command = list(command)
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else None
        self.system_prompt = system_prompt
        self.stop_grace_s = stop_grace_s
        self.pid: int | None = None
        """The process id while it runs."""

    def __repr__(self) -> str:
        return f"ProcessAgent({self.command!r})"

    def environment(self, ep: Endpoint) -> dict[str, str]:
        """The environment of the command for endpoint ``ep``."""
        env = {**os.environ, **self.env}
        env["CORAL_CONNECTION_URL"] = ep.url
        env["CORAL_SSE_URL"] = ep.sse_url
        env["CORAL_AGENT_ID"] = ep.name
        env["CORAL_SESSION_ID"] = ep.run_id
        env["CORAL_ORCHESTRATION_RUNTIME"] = "executable"
        if self.system_prompt:
            env["CORAL_PROMPT_SYSTEM"] = self.system_prompt
        # The child's output is read line by line: ask Python children not to buffer.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def _attend(self, ctx: AgentContext, ep: Endpoint) -> None:
        cmd = " ".join(self.command)
        try:
            proc = await anyio.open_process(
                resolve_command(self.command),
                env=self.environment(ep),
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessAgentError(
                f"agent {ep.name}: cannot start its command `{cmd}`: "
                f"{exc.strerror or exc}; check command: (and cwd:) in the graph file"
            ) from exc
        self.pid = proc.pid
        started = time.monotonic()
        ctx.log(
            f"started `{cmd}` (pid {proc.pid})",
            source="mcp",
            data={"event": "started", "pid": proc.pid},
        )
        failed: list[AgentConnectionError] = []
        code: int | None = None
        try:
            async with anyio.create_task_group() as tg:
                assert proc.stdout is not None
                assert proc.stderr is not None
                drained = (anyio.Event(), anyio.Event())
                tg.start_soon(_pump, ctx, proc.stdout, "stdout", drained[0])
                tg.start_soon(_pump, ctx, proc.stderr, "stderr", drained[1])

                async def watch_connection() -> None:
                    try:
                        await ExternalAgent._attend(self, ctx, ep)
                    except AgentConnectionError as exc:
                        failed.append(exc)
                        tg.cancel_scope.cancel()

                tg.start_soon(watch_connection)
                code = await proc.wait()
                # The last lines it printed, then stop watching.
                with anyio.move_on_after(1):
                    for ev in drained:
                        await ev.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop(proc)
            self.pid = None
        if failed:
            raise failed[0]
        elapsed = time.monotonic() - started
        ctx.log(
            f"`{cmd}` exited with code {code} after {elapsed:.1f} s",
            source="mcp",
            data={"event": "exited", "code": code, "elapsed_s": round(elapsed, 3)},
        )
        if code != 0 or not ep.connected.is_set():
            why = (
                "before it connected to its MCP endpoint"
                if not ep.connected.is_set()
                else "before the run ended"
            )
            raise ProcessAgentError(
                f"agent {ep.name}: its command `{cmd}` exited with code {code} {why} "
                f"(after {elapsed:.1f} s); see its stderr in the transcript"
            )

    async def _stop(self, proc: Process) -> None:
        if proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        with anyio.move_on_after(self.stop_grace_s):
            await proc.wait()
            return
        _grace_kill(proc)
        with anyio.move_on_after(5):
            await proc.wait()


async def _pump(ctx: AgentContext, stream: Any, source: str, drained: anyio.Event) -> None:
    buf = b""
    try:
        async for chunk in stream:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                ctx.log(line.decode("utf-8", "replace").rstrip("\r"), source=source)
            if len(buf) > 64_000:  # a very long line without a newline: keep it in parts
                ctx.log(buf.decode("utf-8", "replace"), source=source)
                buf = b""
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        pass
    finally:
        if buf:
            ctx.log(buf.decode("utf-8", "replace"), source=source)
        drained.set()


def graph_hubs(graph: AgentGraph) -> list[MCPHub]:
    """The hubs the external and process agents of ``graph`` serve on (the shared
    default hub for those given none)."""
    out: list[MCPHub] = []
    for name in graph:
        agent = graph.spec(name).agent
        if isinstance(agent, ExternalAgent):
            hub = agent._hub()
            if hub not in out:
                out.append(hub)
    return out
