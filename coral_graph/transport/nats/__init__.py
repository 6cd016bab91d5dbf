"""One graph's agents across processes and machines over NATS JetStream.

Needs the ``[nats]`` extra (nats-py) and a NATS server with JetStream
(``nats-server -js``). ``import coral_graph`` never imports this package.

A worker hosts agents (``coral-graph worker``, or :class:`Worker`) through the
core: a runtime on the graph with a :class:`NatsTransport` joins each run
(``Runtime.join``). A run is started the same way as in one process, with the
transport given to the runtime::

    lg = coral_graph.config.load_graph("configs/specialists.yaml")
    transport = NatsTransport("nats://127.0.0.1:4222", graph=lg)
    async with coral_graph.open_runtime(lg.graph, transport=transport) as rt:
        result = await rt.run("the task", entry=lg.entry, answer_by=lg.answer_by)

:func:`run_on_nats` does that in one call. See ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from coral_graph._budgets import Budgets
from coral_graph._events import Event
from coral_graph._graph import AgentGraph
from coral_graph._results import RunResult
from coral_graph.transport.nats._conn import DEFAULT_ACK_WAIT_S, Link, connect
from coral_graph.transport.nats._errors import (
    GraphMismatchError,
    MessageTooLargeError,
    NatsUnavailableError,
    WireError,
)
from coral_graph.transport.nats._names import GraphIdentity, Names, graph_identity
from coral_graph.transport.nats._origin import is_quiet
from coral_graph.transport.nats._record import Recorder, record_all
from coral_graph.transport.nats._run import NatsRun, NatsTransport
from coral_graph.transport.nats._worker import Worker, live_workers

__all__ = [
    "DEFAULT_ACK_WAIT_S",
    "GraphIdentity",
    "GraphMismatchError",
    "Link",
    "MessageTooLargeError",
    "NatsRun",
    "NatsTransport",
    "NatsUnavailableError",
    "Names",
    "Recorder",
    "WireError",
    "Worker",
    "connect",
    "identity_of",
    "is_quiet",
    "live_workers",
    "open_link",
    "record_all",
    "run_on_nats",
]


def identity_of(loaded: Any) -> GraphIdentity:
    """The identity of a graph: a :class:`~coral_graph.config.LoadedGraph` (hashed
    over every agent's resolved definition) or a bare :class:`AgentGraph`."""
    if isinstance(loaded, AgentGraph):
        return graph_identity(loaded)
    defs = {n: r.definition.model_dump(mode="json") for n, r in loaded.agents.items()}
    return graph_identity(loaded.graph, defs, loaded.entry, loaded.answer_by)


@contextlib.asynccontextmanager
async def open_link(url: str, *, timeout: float = 5.0) -> AsyncIterator[Link]:  # noqa: ASYNC109
    """A connection to the NATS server at ``url`` (JetStream checked), closed at the end."""
    link = await connect(url, timeout=timeout)
    try:
        yield link
    finally:
        await link.close()


async def run_on_nats(
    loaded: Any,
    task: str,
    url: str,
    *,
    budgets: Budgets | None = None,
    entry: Sequence[str] | None = None,
    answer_by: Sequence[str] | None = None,
    wait_workers_s: float = 10.0,
    ack_wait_s: float = DEFAULT_ACK_WAIT_S,
    sink: Callable[[Event], None] | None = None,
    store: Any = None,
    connect_timeout: float = 5.0,
) -> RunResult:
    """Run ``task`` on a graph whose agents are hosted by workers
    (``coral-graph worker``): ``open_runtime`` with a :class:`NatsTransport` and
    ``rt.run``. ``store`` (e.g. a ``SQLiteStore``) records the run, every worker's
    events in one order; ``sink`` gets each event too."""
    from coral_graph._runtime import open_runtime

    graph: AgentGraph = loaded if isinstance(loaded, AgentGraph) else loaded.graph
    if not isinstance(loaded, AgentGraph):
        budgets = budgets if budgets is not None else loaded.budgets
        entry = entry if entry is not None else loaded.entry
        answer_by = answer_by if answer_by is not None else loaded.answer_by
    transport = NatsTransport(
        url,
        graph=loaded,
        wait_workers_s=wait_workers_s,
        ack_wait_s=ack_wait_s,
        connect_timeout=connect_timeout,
    )
    async with open_runtime(
        graph, transport=transport, budgets=budgets, store=store if store is not None else False
    ) as rt:
        if sink is not None:
            rt.subscribe(sink)
        return await rt.run(task, entry=entry, answer_by=answer_by)
