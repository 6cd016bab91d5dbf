"""``coral-graph worker`` and ``coral-graph record``, and the transport of
``coral-graph run --nats`` (see ``docs/distributed.md``).

Exit codes: 0 done (a worker stopped by SIGTERM/SIGINT after finishing its turns),
1 bad input: a broken graph file, an unreachable NATS URL or JetStream turned off,
a graph that differs from the running workers' (the message names the difference);
128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM): a worker stopped at once
by a second signal, the deliveries of the turns it cut short handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coral_graph.cli._app import EXIT_BAD_INPUT, EXIT_OK, DbOption, ModelOption, SetOption, app

if TYPE_CHECKING:
    from coral_graph.config import LoadedGraph

__all__ = ["nats_transport", "record", "worker"]

_NATS_ERRORS_HELP = "install the [nats] extra: pip install 'coral-graph[nats]'"


def _err(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _load(graph: Path, set_: list[str] | None, model: str | None) -> LoadedGraph:
    from coral_graph import ConfigError
    from coral_graph.config import load_graph

    try:
        return load_graph(graph, overrides=set_ or (), model=model)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _nats_module() -> Any:
    try:
        import coral_graph.transport.nats as mod
    except ImportError as exc:
        raise _err(f"the NATS transport needs nats-py ({exc}); {_NATS_ERRORS_HELP}") from None
    return mod


async def _close_llm_clients() -> None:
    if "coral_graph.llm" in sys.modules:
        from coral_graph.llm import aclose_clients

        await aclose_clients()


def _on_signals(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, fn)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass


_FORCED_EXIT_S = 3.0
"""After a second signal, a worker exits within this many seconds, even while an
agent's code blocks its event loop."""


def _stop_on_signals(loop: asyncio.AbstractEventLoop, w: Any) -> None:
    """The first SIGTERM or Ctrl-C drains the worker (``Worker.drain``: the turns in
    progress finish and are acknowledged), saying so; the second stops it at once:
    the deliveries of the turns in progress go back to the server (``hand_back``) and
    the process exits with 128 + the signal's number. A Python signal handler runs
    between two bytecodes, so an agent that blocks the loop does not delay it."""
    count = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            n = w.in_progress
            what = (
                "no turn in progress"
                if not n
                else f"once the {n} turn{'s' if n > 1 else ''} in progress "
                f"end{'' if n > 1 else 's'}; {name} again to stop at once (their "
                "deliveries then come again)"
            )
            print(f"worker {w.tag}: {name}: stopping, {what}", file=sys.stderr, flush=True)
            loop.call_soon_threadsafe(w.drain)
            return
        if count > 2:
            return
        code = 128 + signum
        print(f"worker {w.tag}: {name} again: stopping now", file=sys.stderr, flush=True)
        backstop = threading.Timer(_FORCED_EXIT_S, os._exit, (code,))
        backstop.daemon = True
        backstop.start()
        asyncio.run_coroutine_threadsafe(_stop_now(w, code), loop)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, handler)


async def _stop_now(w: Any, code: int) -> None:
    n = 0
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_FORCED_EXIT_S - 1):
            n = await w.hand_back()
    print(
        f"worker {w.tag}: stopped at once; {n} deliver{'y' if n == 1 else 'ies'} handed "
        "back, to be handled again",
        file=sys.stderr,
        flush=True,
    )
    os._exit(code)


@app.command()
def worker(
    graph: Annotated[Path, typer.Argument(help="The graph file (YAML).", show_default=False)],
    nats: Annotated[
        str, typer.Option("--nats", help="The NATS server, e.g. nats://127.0.0.1:4222.")
    ],
    agents: Annotated[
        str | None,
        typer.Option(
            "--agents",
            help="Comma-separated agents to host (default: every agent no live worker hosts).",
        ),
    ] = None,
    model: ModelOption = None,
    set_: SetOption = None,
    ack_wait: Annotated[
        float,
        typer.Option(
            help="Seconds without a sign of life before a dead worker's delivery goes to "
            "another worker (used when the graph's consumers are first made)."
        ),
    ] = 30.0,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the NATS server.")
    ] = 5.0,
    use_uvloop: Annotated[
        bool,
        typer.Option(
            "--uvloop",
            help="Run on uvloop (pip install 'coral-graph[uvloop]'): less CPU per delivery.",
        ),
    ] = False,
) -> None:
    """Host agents of a graph for every run on it, until SIGTERM or Ctrl-C (then the
    turns in progress finish and are acknowledged; a second one stops at once and
    hands their deliveries back)."""
    uvloop = _uvloop() if use_uvloop else None
    lg = _load(graph, set_, model)
    mod = _nats_module()
    wanted = [a.strip() for a in agents.split(",") if a.strip()] if agents else None

    async def main() -> int:
        from coral_graph import CoralError

        try:
            link = await mod.connect(
                nats, timeout=connect_timeout, name="coral-graph-worker", no_echo=True
            )
        except mod.NatsUnavailableError as exc:
            raise _err(str(exc)) from None
        try:
            w = mod.Worker(link, lg.graph, mod.identity_of(lg), wanted, ack_wait_s=ack_wait)
            try:
                hosted = await w.start()
            except CoralError as exc:
                raise _err(str(exc)) from None
            if not hosted:
                raise _err(
                    "nothing to host: every agent of the graph has a live worker; "
                    "pass --agents to host some anyway (workers of one agent share its inbox)"
                )
            _stop_on_signals(asyncio.get_running_loop(), w)
            print(
                f"worker {w.tag}: hosting {', '.join(hosted)} of graph {lg.graph.name!r} on "
                f"{nats}{' (uvloop)' if uvloop is not None else ''}",
                file=sys.stderr,
                flush=True,
            )
            await w.serve()
            n = w.handled
            print(
                f"worker {w.tag}: stopped after {n} deliver{'y' if n == 1 else 'ies'}",
                file=sys.stderr,
            )
            return EXIT_OK
        finally:
            await _close_llm_clients()
            await link.close()

    raise typer.Exit(uvloop.run(main()) if uvloop is not None else asyncio.run(main()))


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        raise _err("--uvloop needs uvloop: pip install 'coral-graph[uvloop]'") from None
    return uvloop


@app.command()
def record(
    graph: Annotated[Path, typer.Argument(help="The graph file (YAML).", show_default=False)],
    nats: Annotated[str, typer.Option("--nats", help="The NATS server.")],
    db: DbOption = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run", help="Record this run (from its start) and exit at its end."),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the NATS server.")
    ] = 5.0,
) -> None:
    """Write the events of a graph's distributed runs into the SQLite store: one run
    (--run), or every run that starts from now on until Ctrl-C. Use it with
    `coral-graph run --nats --no-store` (else the run is recorded twice)."""
    lg = check_only(graph)
    mod = _nats_module()
    from coral_graph.store import SQLiteStore

    store = SQLiteStore(db, graph_path=graph)

    async def main() -> int:
        try:
            link = await mod.connect(nats, timeout=connect_timeout, name="coral-graph-record")
        except mod.NatsUnavailableError as exc:
            raise _err(str(exc)) from None
        names = mod.Names.for_graph(lg.graph.name)
        stop = asyncio.Event()
        _on_signals(asyncio.get_running_loop(), stop.set)
        try:
            if run_id is not None:
                rec = mod.Recorder(link, names, run_id, store.on_event)
                await rec.start()
                kv = await link.js.key_value(names.bucket)
                done = asyncio.create_task(rec.finished.wait())
                halt = asyncio.create_task(stop.wait())
                # (A run whose starting process is gone gets its end from its record.)
                orphan = asyncio.create_task(rec.end_orphaned(kv))
                await asyncio.wait({done, halt}, return_when=asyncio.FIRST_COMPLETED)
                for t in (done, halt, orphan):
                    t.cancel()
                await rec.aclose()
                print(f"recorded {len(rec.events)} events of {run_id}", file=sys.stderr)
            else:

                def ready() -> None:
                    print(
                        f"recording the runs of graph {lg.graph.name!r} from {nats} into "
                        f"{store.path} (Ctrl-C to stop)",
                        file=sys.stderr,
                        flush=True,
                    )

                n = await mod.record_all(link, names, store.on_event, stop, ready)
                print(f"recorded {n} events", file=sys.stderr)
            return EXIT_OK
        finally:
            await link.close()

    try:
        code = asyncio.run(main())
    finally:
        store.close()
    raise typer.Exit(code)


def check_only(graph: Path) -> LoadedGraph:
    from coral_graph import ConfigError
    from coral_graph.config import check_graph

    try:
        return check_graph(graph)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def nats_transport(lg: LoadedGraph, url: str, wait_workers: float) -> Any:
    """``coral-graph run --nats``: the transport that posts the task for the workers
    and records the run (the run itself is ``coral-graph run``'s)."""
    mod = _nats_module()
    return mod.NatsTransport(url, graph=lg, wait_workers_s=wait_workers)
