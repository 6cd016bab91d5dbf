"""open_runtime(): owns every task of its runs, their budgets and results.

:class:`Runtime` starts, resumes and joins runs (each a ``coral_graph._run._Run``)
inside one task group, and watches the event loop for agents that block it. Who
receives its events — subscribers, the store, event streams — is its base
class's (``coral_graph._sinks``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from coral_graph._budgets import Budgets
from coral_graph._errors import RuntimeClosedError
from coral_graph._events import AgentLogged
from coral_graph._results import RunHandle, RunResult, RunSnapshot
from coral_graph._run import _Run
from coral_graph._sinks import (
    BatchRecorder,
    EventSink,
    _gc_run_ended,
    _gc_run_started,
    _Subscriptions,
)
from coral_graph._streams import EventStream
from coral_graph._types import AgentName, RunId
from coral_graph.transport._local import LocalTransport

if TYPE_CHECKING:
    from coral_graph._blocked import BlockedLoop, LoopWatchdog
    from coral_graph._graph import AgentGraph
    from coral_graph.transport._base import Transport

__all__ = [
    "BatchRecorder",
    "EventSink",
    "EventStream",
    "RunHandle",
    "RunResult",
    "Runtime",
    "open_runtime",
    "run",
    "run_async",
]


def new_run_id() -> RunId:
    """A new, time-sortable run id such as ``run-18c9f2a3b41-5e2f1a``."""
    return RunId(f"run-{int(time.time() * 1000):x}-{secrets.token_hex(3)}")


class Runtime(_Subscriptions):
    """The runtime of one graph; get it from :func:`open_runtime`."""

    def __init__(
        self,
        graph: AgentGraph,
        *,
        budgets: Budgets,
        max_inbox: int,
        max_content_chars: int,
        transport: Transport | None = None,
    ) -> None:
        self.graph = graph
        self.transport: Transport = LocalTransport() if transport is None else transport
        self.budgets = budgets
        self.max_inbox = max_inbox
        self.max_content_chars = max_content_chars
        _Subscriptions.__init__(self)
        self._tg: TaskGroup | None = None
        self._runs: dict[RunId, _Run] = {}
        self._open = False
        self.watchdog: LoopWatchdog | None = None

    # -- runs -----------------------------------------------------------------------

    @property
    def active_runs(self) -> list[RunId]:
        """The ids of the runs still going."""
        return list(self._runs)

    async def _new_run(
        self,
        task: str,
        entry: Sequence[str] | None,
        answer_by: Iterable[str] | None,
        budgets: Budgets | None,
        run_id: str | None,
        *,
        joining: bool = False,
    ) -> _Run:
        """A new run, after asking the agents that run in this process (all of them on
        the in-process transport) whether they can work: a missing key is reported
        before anything happens. Agents with a check (LLM agents) are asked in a
        worker thread: the first check imports litellm, seconds the event loop would
        otherwise stand still for every other run and agent of the runtime."""
        if not self._open:
            raise RuntimeClosedError(
                "the runtime is closed; use it inside `async with open_runtime(...)`"
            )
        if not isinstance(task, str):
            raise TypeError("task must be a string")
        ent, ans = self.graph.validate(entry, answer_by)
        run = _Run(
            run_id=RunId(run_id) if run_id is not None else new_run_id(),
            graph=self.graph,
            task=task,
            entry=ent,
            answer_by=ans,
            budgets=self.budgets.merged(budgets),
            max_inbox=self.max_inbox,
            max_content_chars=self.max_content_chars,
            runtime=self,
            transport=self.transport,
            joining=joining,
        )
        specs = self.graph._specs
        hosted = [a for a in specs if run.link.hosts(AgentName(a))]
        if any(callable(getattr(specs[a].agent, "check_ready", None)) for a in hosted):
            await anyio.to_thread.run_sync(self.graph.check_ready, hosted)
        return run

    async def run(
        self,
        task: str,
        *,
        entry: Sequence[str] | None = None,
        answer_by: Iterable[str] | None = None,
        budgets: Budgets | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Post ``task`` from ``user`` to the entry agents and run until it stops.

        Args:
            task: the text of the task.
            entry: the agents that receive the task (default: the graph's entry).
            answer_by: the agents that may mention ``user`` (default: the entry).
            budgets: overrides of the runtime's budgets for this run.
            run_id: an explicit id (default: a new one).

        Returns:
            The :class:`RunResult`. If the caller is cancelled, the run is recorded
            as ``cancelled`` and the cancellation propagates.
        """
        run = await self._new_run(task, entry, answer_by, budgets, run_id)
        return await self._execute(run)

    async def resume(
        self,
        snapshot: RunSnapshot,
        task: str,
        *,
        run_id: str,
        entry: Sequence[str] | None = None,
        answer_by: Iterable[str] | None = None,
        budgets: Budgets | None = None,
    ) -> RunResult:
        """Continue the interrupted run ``run_id`` from ``snapshot`` (its events,
        threads, usage, counters and pending deliveries), as ``coral-graph resume``
        does: loop agents start again and every pending delivery is delivered again."""
        run = await self._new_run(task, entry, answer_by, budgets, run_id)
        return await self._execute(run, snapshot=snapshot)

    async def join(
        self,
        run_id: str,
        task: str = "",
        *,
        entry: Sequence[str] | None = None,
        answer_by: Iterable[str] | None = None,
        budgets: Budgets | None = None,
    ) -> RunResult:
        """Host this process's agents in run ``run_id``, started by another process
        of a distributed transport (``open_runtime(graph, transport=...)``).

        Nothing is posted and no ``run_started`` / ``run_finished`` is recorded here
        (the process that started the run records them): the transport feeds the
        agents it hosts here, loop agents it hosts start, and the call returns when
        the run stops (the transport's stop reaches every worker). The result is
        this process's share: its agents' usage and events."""
        run = await self._new_run(task, entry, answer_by, budgets, run_id, joining=True)
        return await self._execute(run, joining=True)

    async def _execute(
        self,
        run: _Run,
        *,
        snapshot: RunSnapshot | None = None,
        handle: RunHandle | None = None,
        joining: bool = False,
    ) -> RunResult:
        rid = run.run_id
        r = run.router
        self._runs[rid] = run
        _gc_run_started()
        if handle is not None:
            handle._attach(run)
        started = False
        try:
            await run.link.start()
            started = True
            async with anyio.create_task_group() as tg:
                if run.budgets.timeout_s is not None:
                    tg.cancel_scope.deadline = anyio.current_time() + run.budgets.timeout_s
                if snapshot is not None:
                    run.restore(tg, snapshot)
                elif joining:
                    run.join(tg)
                else:
                    run.start(tg)
                if handle is not None:
                    handle._started.set()
                await r.done
                tg.cancel_scope.cancel()
            if not r.finished:
                # The deadline cancels the group before `done` is set, and so does an
                # agent that raises CancelledError of its own (not a real cancellation).
                if run.budgets.timeout_s is not None and tg.cancel_scope.cancel_called:
                    r.stop("budget:time")
                else:
                    r.stop("error", "an agent raised CancelledError without being cancelled")
            await _finish(run)
        except BaseException:
            if not started:
                raise  # the transport could not start it: nothing happened in it
            if not r.finished:
                r.stop("cancelled")
            await _finish(run)
            if not joining:
                run.record_finish()
            raise
        else:
            if not joining:
                run.record_finish()
        finally:
            self._runs.pop(rid, None)
            _gc_run_ended()
            with anyio.CancelScope(shield=True):
                await run.link.aclose()
        # No local for the result: this frame outlives the call (the tracebacks of the
        # cancelled tasks reach it), and would keep the result alive with it.
        return run.take_result()

    def start(
        self,
        task: str,
        *,
        entry: Sequence[str] | None = None,
        answer_by: Iterable[str] | None = None,
        budgets: Budgets | None = None,
        run_id: str | None = None,
    ) -> RunHandle:
        """Start a run in the background of the runtime and return its handle."""
        if self._tg is None or not self._open:
            raise RuntimeClosedError(
                "the runtime is closed; use it inside `async with open_runtime(...)`"
            )
        handle = RunHandle(RunId(run_id) if run_id is not None else new_run_id())

        async def _go() -> None:
            try:
                run = await self._new_run(task, entry, answer_by, budgets, handle.run_id)
                handle._result = await self._execute(run, handle=handle)
            except Exception as exc:
                handle._exc = exc
            finally:
                handle._started.set()
                handle._done.set()

        self._tg.start_soon(_go, name=f"coral-run-{handle.run_id}")
        return handle

    def _watch_loop(self, after_s: float) -> LoopWatchdog:
        from coral_graph._blocked import LoopWatchdog

        def recovered(block: BlockedLoop) -> None:
            # Back on the loop: the block goes into the transcript of every run going.
            for run in self._runs.values():
                r = run.router
                r.emit(
                    AgentLogged(
                        run.run_id,
                        r.next_seq(),
                        time.time(),
                        block.agent or "",
                        "watchdog",
                        block.message(),
                        {"seconds": block.seconds, "where": block.where},
                    )
                )

        watchdog = LoopWatchdog(asyncio.get_running_loop(), after_s, recovered=recovered)
        watchdog.start()
        self.watchdog = watchdog
        return watchdog

    def cancel_all(self) -> None:
        """End every active run with ``cancelled``."""
        for run in list(self._runs.values()):
            run.router.stop("cancelled")


async def _finish(run: _Run) -> None:
    """The transport's last word before ``run_finished`` (its optional ``finish``:
    a distributed transport gathers what other processes did)."""
    finish = getattr(run.link, "finish", None)
    if finish is None or run.link_finished:
        return
    run.link_finished = True
    with anyio.CancelScope(shield=True):
        await finish()


@asynccontextmanager
async def open_runtime(
    graph: AgentGraph,
    *,
    budgets: Budgets | None = None,
    store: EventSink | Literal[False] | None = None,
    max_inbox: int = 10_000,
    max_content_chars: int = 100_000,
    transport: Transport | None = None,
    blocked_after_s: float | None = None,
) -> AsyncIterator[Runtime]:
    """Open a runtime for ``graph``; it owns every task of its runs.

    Args:
        graph: the agents and edges.
        budgets: default limits for every run (each ``run`` may override them).
        store: an event sink (such as the SQLite store) that sees every event. When
            it is not given and the environment variable ``CORAL_DB`` names a file,
            every run is written to that SQLite store (opened here, closed when the
            runtime closes; a store that failed raises its ``StoreWriteError``
            then). ``False``: record nothing, whatever ``CORAL_DB`` says.
        max_inbox: undelivered messages one agent may hold before senders get
            :class:`InboxFullError`.
        max_content_chars: the size limit of one message.
        transport: how deliveries reach the agents (default: in this process,
            :class:`~coral_graph.transport.LocalTransport`).
        blocked_after_s: say (on stderr, and as an ``agent_logged`` event) which
            agent holds the event loop when it has not ticked for this many seconds;
            agents must not block (see ``coral_graph._blocked``). Default: 5, or
            ``CORAL_BLOCKED_AFTER_S`` from the environment; 0 turns it off.

    >>> import coral_graph as cg
    >>> @cg.agent
    ... async def echo(ctx, message):
    ...     await ctx.send_message(message.thread_id, "hi " + message.content, ["user"])
    >>> g = cg.AgentGraph(); g.add_agent("echo", echo)
    >>> async def main():
    ...     async with cg.open_runtime(g) as rt:
    ...         return await rt.run("there", entry=["echo"])
    >>> cg.run_async(main).answer
    'hi there'
    """
    _require_asyncio()
    rt = Runtime(
        graph,
        budgets=budgets if budgets is not None else Budgets(),
        max_inbox=max_inbox,
        max_content_chars=max_content_chars,
        transport=transport,
    )
    own = _env_store() if store is None else None
    sink = own if own is not None else store
    if sink is not None and sink is not False:
        rt.attach(sink)
    if blocked_after_s is None:
        blocked_after_s = float(os.environ.get("CORAL_BLOCKED_AFTER_S") or 5.0)
    watchdog = rt._watch_loop(blocked_after_s) if blocked_after_s > 0 else None
    try:
        async with anyio.create_task_group() as tg:
            rt._tg = tg
            rt._open = True
            try:
                yield rt
            finally:
                if watchdog is not None:
                    watchdog.stop()
                rt._open = False
                rt.cancel_all()
                for stream in rt._streams:
                    stream._end()
                if rt._relief is not None:
                    rt._relief.set()
    finally:
        close = getattr(rt.transport, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
        if own is not None:
            await anyio.to_thread.run_sync(own.close)


def _env_store() -> Any:
    """The SQLite store named by ``CORAL_DB``, opened, or None when it is not set."""
    path = os.environ.get("CORAL_DB")
    if not path:
        return None
    from coral_graph.store import SQLiteStore

    return SQLiteStore(path)


def run(
    graph: AgentGraph,
    task: str,
    *,
    entry: Sequence[str] | None = None,
    answer_by: Iterable[str] | None = None,
    budgets: Budgets | None = None,
    store: EventSink | Literal[False] | None = None,
    **runtime_options: Any,
) -> RunResult:
    """Run one task on ``graph`` synchronously (opens and closes a runtime). The run
    is written to ``store`` when one is given, else to the SQLite store named by
    ``CORAL_DB`` when it is set (see :func:`open_runtime`).

    >>> import coral_graph as cg
    >>> @cg.agent
    ... async def shout(ctx, message):
    ...     await ctx.send_message(message.thread_id, message.content.upper(), ["user"])
    >>> g = cg.AgentGraph(); g.add_agent("shout", shout)
    >>> cg.run(g, "hello", entry=["shout"]).answer
    'HELLO'
    """

    graph.check_ready()  # off the event loop: the first check may import litellm

    async def main() -> RunResult:
        refused: Exception | None = None
        async with open_runtime(graph, budgets=budgets, store=store, **runtime_options) as rt:
            try:
                return await rt.run(task, entry=entry, answer_by=answer_by)
            except Exception as exc:  # refused (a bad entry, a missing API key)
                refused = exc
        # Raised here, outside the runtime's task group, it reaches the caller as
        # itself rather than inside an ExceptionGroup.
        assert refused is not None
        raise refused

    # No local for the result: this frame can outlive the call (the tracebacks of the
    # run's cancelled tasks chain back to it) and would keep the result alive.
    return run_async(main)  # type: ignore[no-any-return]


def run_async(fn: Callable[[], Any], *, use_uvloop: bool = False) -> Any:
    """Run an async function on asyncio (the event loop coral-graph runs on), through
    anyio; ``use_uvloop`` runs it on uvloop (``pip install uvloop``)."""
    return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": use_uvloop})


def _require_asyncio() -> None:
    """coral-graph runs on asyncio: say so clearly on any other event loop."""
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no event loop"
    if library != "asyncio":
        raise RuntimeClosedError(
            f"coral-graph runs on asyncio, not on {library}: run your code with "
            "coral_graph.run_async(main) or anyio.run(main, backend='asyncio')"
        )
