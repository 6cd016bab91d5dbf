"""``coral-graph run | validate | schema | graph | agents``: graphs from YAML files.

Exit codes (see :mod:`coral_graph.cli._app`): 0 answered, 1 bad input, 2 stopped
by a budget / idle / an error without an answer, 3 the store failed (the result is
printed first), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from coral_graph.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_STORE,
    DbOption,
    ModelOption,
    SetOption,
    app,
)
from coral_graph.cli._output import print_result, result_json
from coral_graph.cli._text import one_line

if TYPE_CHECKING:
    from rich.console import Console

    from coral_graph import RunResult
    from coral_graph.config import LoadedGraph

__all__ = ["agents", "graph_cmd", "run", "schema", "validate"]


T = TypeVar("T")


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=not stderr)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_BAD_INPUT)


def _print_config_error(exc: Exception) -> None:
    # The message lists every problem, one per line, each with file:line:column.
    print(str(exc), file=sys.stderr)


def exit_code(stop_reason: str) -> int:
    """The exit code of a run that ended with ``stop_reason``."""
    if stop_reason == "answer":
        return EXIT_OK
    if stop_reason == "cancelled":
        return EXIT_INTERRUPTED
    return EXIT_NO_ANSWER


async def cancelled_by_interrupt(aw: Awaitable[T]) -> T:
    """Await ``aw`` under :func:`coral_graph.handle_interrupts`, as `run` does: the
    first Ctrl-C cancels it and then raises :class:`KeyboardInterrupt` (which a
    command turns into its exit code 130), a second ends the process even if an agent
    blocks the loop. Python's own handling is not enough for a command that runs
    agents: asyncio installs none when the process inherited SIGINT ignored (a shell
    without job control does that for a command it starts in the background), and
    then Ctrl-C did nothing at all."""
    import asyncio

    from coral_graph import handle_interrupts

    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def on_first() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    with handle_interrupts(on_first):
        try:
            return await aw
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise


async def _run_graph(
    lg: LoadedGraph,
    task: str,
    store: Any,
    live: Console | None,
    otel: Any = None,
    transport: Any = None,
) -> tuple[RunResult, bool, list[BaseException]]:
    """Run ``task``; the first Ctrl-C cancels the run (recorded as ``cancelled``; on
    NATS, on every worker), a second one aborts at once. Returns the result, whether
    it was interrupted, and what the store raised while recording (it is detached
    then; the run goes on). ``transport``: e.g. a ``NatsTransport`` (``--nats``)."""

    import anyio

    from coral_graph import handle_interrupts, open_runtime
    from coral_graph.cli._output import Progress

    interrupted = False
    failed: Exception | None = None
    progress = Progress()
    # store=False: --no-store means no transcript, whatever CORAL_DB says.
    sink: Any = store if store is not None else False
    async with open_runtime(lg.graph, budgets=lg.budgets, store=sink, transport=transport) as rt:
        if live is not None:
            rt.subscribe(progress.on_event)
        if otel is not None:
            rt.subscribe(otel.on_event)
        handle = rt.start(task, entry=lg.entry, answer_by=lg.answer_by)

        def on_first_sigint() -> None:
            nonlocal interrupted
            interrupted = True
            handle.cancel()

        async def draw() -> None:
            from rich.live import Live

            assert live is not None
            with Live(progress.status(), console=live, refresh_per_second=8, transient=True) as lv:
                while True:
                    progress.flush_lines(live)
                    lv.update(progress.status())
                    await anyio.sleep(0.1)

        # A Python-level handler (not the loop's): a second Ctrl-C ends the process
        # even when an agent holds the event loop.
        with handle_interrupts(on_first_sigint):
            async with anyio.create_task_group() as tg:
                if live is not None:
                    tg.start_soon(draw)
                try:
                    result = await handle.wait()
                except Exception as exc:  # refused before it started (a missing API key)
                    failed = exc
                finally:
                    tg.cancel_scope.cancel()
        if live is not None:
            progress.flush_lines(live)
        sink_errors = [exc for _, exc in rt.sink_errors]
    if "coral_graph.llm" in sys.modules:
        # litellm caches one HTTP client per event loop; close them before the loop ends.
        from coral_graph.llm import aclose_clients

        await aclose_clients()
    if failed is not None:
        raise failed
    return result, interrupted, sink_errors


def _open_otel(endpoint: str) -> Any:
    try:
        from coral_graph.otel import OTelExporter

        return OTelExporter(None if endpoint == "env" else endpoint)
    except (ImportError, ValueError) as exc:
        raise _fail(f"--otel: {exc}") from exc


def _open_store(db: Path | None, graph: Path) -> Any:
    try:
        from coral_graph.store import SQLiteStore
    except ImportError:  # the store is optional: run without a transcript
        return None
    try:
        # Stored absolute: `resume` finds the graph from any directory.
        return SQLiteStore(db, graph_path=graph.resolve())
    except Exception as exc:
        print(
            f"store: cannot record the run in {db or 'the default store'}: {one_line(exc)} "
            "(fix it, or pass --no-store to run without a transcript)",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_STORE) from None


def close_store(store: Any, problems: list[BaseException]) -> str | None:
    """Close ``store`` after a run; the store's problem in one line, if it had one
    (while recording, or while writing the end of the run)."""
    from coral_graph.store import StoreError

    if store is not None:
        err = store.close(raise_error=False)
        if err is not None and all(err is not p for p in problems):
            problems.insert(0, err)
    if not problems:
        return None
    first = problems[0]
    text = one_line(first)
    return text if isinstance(first, StoreError) else f"{type(first).__name__}: {text}"


@app.command(epilog=EXIT_CODES_HELP)
def run(
    graph: Annotated[Path, typer.Argument(help="The graph file (YAML).", show_default=False)],
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="The task text (default: the file's task:).")
    ] = None,
    task_file: Annotated[
        Path | None,
        typer.Option("--task-file", "-f", help="Read the task from a file ('-': stdin)."),
    ] = None,
    model: ModelOption = None,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result.")] = False,
    db: DbOption = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not record the run.")] = False,
    otel: Annotated[
        str | None,
        typer.Option(
            "--otel",
            metavar="URL",
            help="Send the run as OpenTelemetry traces over OTLP/HTTP to URL "
            "(e.g. http://127.0.0.1:4318; 'env': from OTEL_EXPORTER_OTLP_ENDPOINT).",
        ),
    ] = None,
    mcp_host: Annotated[
        str | None,
        typer.Option("--mcp-host", help="Address of the MCP endpoint of process/external agents."),
    ] = None,
    mcp_port: Annotated[
        int | None, typer.Option("--mcp-port", help="Its port (default: a free one).")
    ] = None,
    mcp_allow_remote: Annotated[
        bool,
        typer.Option(
            "--mcp-allow-remote", help="Allow a non-loopback --mcp-host (prints a warning)."
        ),
    ] = False,
    nats: Annotated[
        str | None,
        typer.Option(
            "--nats", help="Run on the workers of this NATS server (docs/distributed.md)."
        ),
    ] = None,
    wait_workers: Annotated[
        float, typer.Option(help="With --nats: seconds to wait for a worker of every agent.")
    ] = 10.0,
) -> None:
    """Run a graph on a task: live progress, then the whole answer, the stop reason,
    what failed, and where the run was saved."""
    from coral_graph import ConfigError, CoralError, run_async
    from coral_graph.config import load_graph

    if task is not None and task_file is not None:
        raise _fail("give --task or --task-file, not both")
    try:
        lg = load_graph(graph, overrides=set_ or (), model=model)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if task_file is not None:
        task = _read_task_file(task_file)
    if task is None:
        task = lg.task
    if task is None or not task.strip():
        raise _fail(f"no task: pass --task TEXT or --task-file F, or set task: in {graph}")
    _print_warnings(lg)
    try:
        if nats is None:  # with --nats the agents run (and are checked) on the workers
            lg.graph.check_ready()  # a missing key or an unknown model: before anything runs
    except CoralError as exc:
        raise _fail(one_line(exc)) from None
    exporter = _open_otel(otel) if otel is not None else None
    if any(r.kind in ("process", "external") for r in lg.agents.values()):
        _setup_mcp(lg, mcp_host, mcp_port, mcp_allow_remote)
    store = None if no_store else _open_store(db, graph)
    tty = sys.stderr.isatty() and not as_json
    has_human = any(r.kind == "human" for r in lg.agents.values())
    live = _console(stderr=True) if tty and not has_human else None
    if live is not None and any(r.kind == "external" for r in lg.agents.values()):
        from coral_graph.mcp import graph_hubs

        for hub in graph_hubs(lg.graph):
            hub.announce = False  # the live view prints the endpoint URLs from their events
    problems: list[BaseException] = []
    try:
        transport = None
        if nats is not None:
            from coral_graph.cli._nats import nats_transport

            transport = nats_transport(lg, nats, wait_workers)
        result, _interrupted, problems = run_async(
            lambda: _run_graph(lg, task, store, live, exporter, transport)
        )
    except KeyboardInterrupt:
        close_store(store, problems)
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CoralError as exc:
        # Refused before the first message (a missing API key, an unknown model).
        close_store(store, problems)
        raise _fail(one_line(exc)) from None
    except BaseException:
        close_store(store, problems)
        raise
    finally:
        if exporter is not None:
            exporter.shutdown()
    store_problem = close_store(store, problems)
    db_path = str(store.path) if store is not None else None
    code = EXIT_STORE if store_problem is not None else exit_code(result.stop_reason)
    if as_json:
        print(result_json(result, graph=lg.graph.name, db=db_path, store_error=store_problem))
        if store_problem is not None:
            print(f"store: {store_problem}", file=sys.stderr)
        raise typer.Exit(code)
    print_result(
        result,
        db_path=db_path,
        explicit_db=db is not None,
        tty=sys.stdout.isatty(),
        store_problem=store_problem,
    )
    raise typer.Exit(code)


def _setup_mcp(lg: LoadedGraph, host: str | None, port: int | None, allow_remote: bool) -> None:
    """Point the graph's MCP endpoint at --mcp-host/--mcp-port; external agents' URLs
    are printed to stderr when the run starts."""
    from coral_graph import ConfigError
    from coral_graph.mcp import graph_hubs

    for hub in graph_hubs(lg.graph):
        if host is not None:
            hub.host = host
        if port is not None:
            hub.port = port
        hub.allow_remote = allow_remote
        hub.announce = True
        try:
            hub.check_host()
        except ConfigError as exc:
            raise _fail(exc.message) from None


# -- validate, schema, graph, agents ---------------------------------------------------


def _read_task_file(task_file: Path) -> str:
    """The task from a file ('-': stdin), as UTF-8 text; a clear error otherwise."""
    name = "stdin" if str(task_file) == "-" else str(task_file)
    try:
        if str(task_file) == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return task_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(
            f"the task file {name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); convert it, e.g. iconv -t UTF-8 {name}"
        ) from None
    except OSError as exc:
        raise _fail(f"cannot read the task file {name}: {exc.strerror or exc}") from None


def _print_warnings(lg: LoadedGraph) -> None:
    for line in lg.warnings:
        print(line, file=sys.stderr)


@app.command()
def validate(
    graphs: Annotated[list[Path], typer.Argument(help="Graph files to check.", show_default=False)],
    set_: SetOption = None,
) -> None:
    """Check graph files and report every problem (exit 1 if any). Runs no code:
    python: references are read, not imported (that happens when a run starts)."""
    from coral_graph import ConfigError
    from coral_graph.config import check_graph

    failed = 0
    for path in graphs:
        try:
            lg = check_graph(path, overrides=set_ or ())
        except ConfigError as exc:
            failed += 1
            _print_config_error(exc)
            continue
        _print_warnings(lg)
        g = lg.graph
        print(f"ok: {path}: {len(g)} agents, {len(g.edges)} edges, entry {', '.join(lg.entry)}")
    if failed:
        n = "file has" if failed == 1 else "files have"
        print(f"{failed} {n} problems", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def schema(
    agent: Annotated[
        bool, typer.Option("--agent", help="The schema of a registry agent.yaml instead.")
    ] = False,
) -> None:
    """Print the JSON Schema of graph files (for editors; see docs/yaml.md)."""
    from coral_graph.config import graph_schema

    print(json.dumps(graph_schema(agent=agent), indent=2))


@app.command("graph")
def graph_cmd(
    graph: Annotated[Path, typer.Argument(help="The graph file.", show_default=False)],
    fmt: Annotated[
        str, typer.Option("--format", help="text, mermaid or dot.", show_default=True)
    ] = "text",
) -> None:
    """Draw a graph: a tree in the terminal, or Mermaid / Graphviz DOT text."""
    from coral_graph import ConfigError
    from coral_graph.config import check_graph
    from coral_graph.config._draw import to_dot, to_mermaid, to_tree

    if fmt not in ("text", "mermaid", "dot"):
        raise _fail(f'--format must be text, mermaid or dot, not "{fmt}"')
    try:
        lg = check_graph(graph)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _print_warnings(lg)
    if fmt == "mermaid":
        print(to_mermaid(lg))
    elif fmt == "dot":
        print(to_dot(lg))
    else:
        _console().print(to_tree(lg))


@app.command()
def agents(
    name: Annotated[
        str | None, typer.Argument(help="Show one definition.", show_default=False)
    ] = None,
    graph: Annotated[
        Path | None, typer.Option("--graph", "-g", help="Resolve as this graph file would.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The listing as a JSON list.")] = False,
) -> None:
    """List the agents/ registry, in resolution order (or show one definition)."""
    from rich.markup import escape
    from rich.table import Table

    from coral_graph.config import find_agent, list_registry

    gdir = graph.parent if graph is not None else None
    out = _console()
    if name is not None:
        entry = find_agent(name, graph_dir=gdir, base_dir=Path.cwd())
        if entry is None:
            from coral_graph.config._problems import did_you_mean

            names = [e.name for e, _ in list_registry(gdir)]
            raise _fail(f'no registry agent "{name}"{did_you_mean(name, names)}')
        from coral_graph.config._source import escape_text

        print(f"# {entry.file} ({entry.scope})")
        text = entry.file.read_text("utf-8", errors="replace")
        # Shown as written, except characters that would act on the terminal.
        print("".join(escape_text(line) + "\n" for line in text.splitlines()), end="")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "scope", "description"):
        table.add_column(col)
    from coral_graph.config._source import escape_text, read_source

    listed: list[dict[str, Any]] = []
    for entry, shadowed in list_registry(gdir):
        # The loader with its caps (a hostile agent.yaml must not hang the listing);
        # no environment: a listing shows no value read from it.
        data = read_source(entry.file, {})[0].data
        data = data if isinstance(data, dict) else {}
        kind = str(data.get("kind") or ("python" if data.get("python") else "llm"))
        desc = escape_text(" ".join(str(data.get("description") or "").split()))
        nm = (
            f"[dim]{escape(entry.name)} (shadowed)[/]"
            if shadowed
            else f"[bold]{escape(entry.name)}[/]"
        )
        table.add_row(nm, kind, f"{entry.scope}: {entry.folder.parent}", escape(desc))
        listed.append(
            {
                "name": entry.name,
                "kind": kind,
                "scope": entry.scope,
                "folder": str(entry.folder),
                "shadowed": bool(shadowed),
                "description": desc,
            }
        )
    if as_json:
        from coral_graph.cli._text import json_text

        print(json_text(listed, indent=2))
    elif not sys.stdout.isatty():  # a pipe: a header and whole lines, never wrapped
        from coral_graph.cli._text import columns

        rows = [
            [
                a["name"] + (" (shadowed)" if a["shadowed"] else ""),
                a["kind"],
                f"{a['scope']}: {Path(a['folder']).parent}",
                a["description"],
            ]
            for a in listed
        ]
        print("\n".join(columns(["name", "kind", "scope", "description"], rows)))
    else:
        out.print(table)
