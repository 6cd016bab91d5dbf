"""``coral-graph run | validate | schema | graph | agents``: graphs from YAML files.

Exit codes (see :mod:`coral_graph.cli._app`): 0 answered, 1 bad input, 2 stopped
by a budget / idle / an error without an answer, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coral_graph.cli._app import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK, app

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from coral_graph._events import Event
    from coral_graph._runtime import RunResult
    from coral_graph.config import LoadedGraph

__all__ = ["agents", "graph_cmd", "run", "schema", "validate"]


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


# -- live progress -------------------------------------------------------------------


class _Progress:
    """Counts what a run does, from its events. ``on_event`` is on the runtime's hot
    path: it only updates counters and queues lines; a timer task draws them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.threads = 0
        self.messages = 0
        self.tokens = 0
        self.cost = 0.0
        self.llm_calls = 0
        self.errors = 0
        self.queued: dict[str, int] = {}
        self.lines: deque[tuple[str, str, tuple[str, ...], str]] = deque()
        self.dropped = 0

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "message_sent":
            msg = event.message  # type: ignore[union-attr]
            self.messages += 1
            for m in msg.mentions:
                if m != "user":
                    self.queued[m] = self.queued.get(m, 0) + 1
            if len(self.lines) < 200:
                self.lines.append(("msg", msg.sender, msg.mentions, msg.content))
            else:
                self.dropped += 1
        elif kind == "delivery_handled":
            agent = event.agent  # type: ignore[union-attr]
            self.queued[agent] = max(0, self.queued.get(agent, 0) - 1)
        elif kind == "thread_created":
            self.threads += 1
        elif kind == "llm_called":
            self.llm_calls += 1
            self.tokens += event.prompt_tokens + event.completion_tokens  # type: ignore[union-attr]
            self.cost += event.cost_usd  # type: ignore[union-attr]
        elif kind == "agent_errored":
            self.errors += 1
            if len(self.lines) < 200:
                err = event  # an AgentErrored
                self.lines.append(("err", str(err.agent), (), str(err.error)))  # type: ignore[union-attr]

    def busy(self) -> list[str]:
        return [a for a, n in self.queued.items() if n > 0]

    def status(self) -> RenderableType:
        from rich.text import Text

        busy = ", ".join(self.busy()) or "-"
        t = Text()
        t.append(f"{time.monotonic() - self.started:6.1f}s", style="bold")
        t.append(f"  threads {self.threads}  messages {self.messages}  ")
        t.append(f"tokens {self.tokens:,}  ${self.cost:.4f}  ")
        if self.errors:
            t.append(f"errors {self.errors}  ", style="red")
        t.append("busy: ", style="dim")
        t.append(busy, style="cyan")
        return t

    def flush_lines(self, console: Console) -> None:
        from rich.markup import escape

        while self.lines:
            what, who, mentions, text = self.lines.popleft()
            short = " ".join(text.split())
            if len(short) > 160:
                short = short[:157] + "..."
            if what == "err":
                console.print(f"[red]✗ {escape(who)}: {escape(short)}[/]")
                continue
            to = " ".join("@" + m for m in mentions)
            console.print(f"[bold]{escape(who)}[/] [cyan]{escape(to)}[/] {escape(short)}")
        if self.dropped:
            console.print(f"[dim]… {self.dropped} more messages[/]")
            self.dropped = 0


async def _run_graph(
    lg: LoadedGraph, task: str, store: Any, live: Console | None, otel: Any = None
) -> tuple[RunResult, bool]:
    """Run ``task``; the first Ctrl-C cancels the run (recorded as ``cancelled``), a
    second one aborts at once. Returns the result and whether it was interrupted."""
    import asyncio

    import anyio

    from coral_graph._blocked import install_interrupt
    from coral_graph._runtime import open_runtime

    interrupted = False
    progress = _Progress()
    async with open_runtime(lg.graph, budgets=lg.budgets, store=store) as rt:
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
        # even when an agent holds the event loop (see coral_graph._blocked).
        restore = (
            install_interrupt(asyncio.get_running_loop(), on_first_sigint)
            if threading_main()
            else None
        )
        try:
            async with anyio.create_task_group() as tg:
                if live is not None:
                    tg.start_soon(draw)
                try:
                    result = await handle.wait()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if restore is not None:
                restore()
        if live is not None:
            progress.flush_lines(live)
    if "coral_graph.llm" in sys.modules:
        # litellm caches one HTTP client per event loop; close them before the loop ends.
        from coral_graph.llm import aclose_clients

        await aclose_clients()
    return result, interrupted


def threading_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()


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
        return SQLiteStore(db, graph_path=graph)
    except Exception as exc:
        raise _fail(f"cannot open the transcript store {db or ''}: {exc}") from exc


@app.command()
def run(
    graph: Annotated[Path, typer.Argument(help="The graph file (YAML).", show_default=False)],
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="The task text (default: the file's task:).")
    ] = None,
    task_file: Annotated[
        Path | None,
        typer.Option("--task-file", "-f", help="Read the task from a file ('-': stdin)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Run every LLM agent on this model.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="PATH=VALUE",
            help="Override a field, e.g. --set budgets.max_messages=20 (repeatable).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result.")] = False,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="The transcript store (default: $CORAL_DB or .coral/coral.db)."),
    ] = None,
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
) -> None:
    """Run a graph on a task: live progress, then the answer and the stop reason.

    Exit codes: 0 answered, 1 bad input, 2 budget/idle/error without an answer,
    130 interrupted (the run is recorded as cancelled).
    """
    from coral_graph._errors import ConfigError
    from coral_graph._runtime import run_async
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
    exporter = _open_otel(otel) if otel is not None else None
    store = None if no_store else _open_store(db, graph)
    tty = sys.stderr.isatty() and not as_json
    has_human = any(r.kind == "human" for r in lg.agents.values())
    live = _console(stderr=True) if tty and not has_human else None
    try:
        result, _interrupted = run_async(lambda: _run_graph(lg, task, store, live, exporter))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if store is not None:
            store.close()
        if exporter is not None:
            exporter.shutdown()
    db_path = str(store.path) if store is not None else None
    code = exit_code(result.stop_reason)
    if as_json:
        out = {"graph": lg.graph.name, **result.to_dict(), "db": db_path}
        print(json.dumps(out, ensure_ascii=False))
        raise typer.Exit(code)
    _print_result(result, db_path, db is not None, tty)
    raise typer.Exit(code)


def _print_result(result: RunResult, db_path: str | None, explicit_db: bool, tty: bool) -> None:
    total = result.total
    summary = (
        f"stop: {result.stop_reason} · {result.messages} messages · "
        f"{total.tokens:,} tokens · ${result.cost_usd:.4f} · {result.duration_s:.1f}s"
    )
    if tty:
        from rich.markup import escape
        from rich.panel import Panel

        out = _console()
        if result.answer is not None:
            out.print(Panel(escape(result.answer), title="answer", title_align="left"))
        else:
            out.print(f"[yellow]no answer[/] ({escape(result.stop_reason)})")
        if result.error:
            out.print(f"[red]error:[/] {escape(result.error)}")
        out.print(f"[dim]{escape(summary)}[/]")
    else:
        if result.answer is not None:
            print(result.answer)
        else:
            print(f"no answer ({result.stop_reason})")
        if result.error:
            print(f"error: {result.error}")
        print(summary)
    if db_path is not None:
        flag = f" --db {db_path}" if explicit_db else ""
        print(
            f"run: {result.run_id} saved in {db_path}; open it with: "
            f"coral-graph show {result.run_id}{flag}"
        )
    else:
        print(f"run: {result.run_id} (not recorded)")
    if result.stop_reason == "cancelled":
        print("interrupted: the run was cancelled", file=sys.stderr)


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
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="PATH=VALUE", help="Override a field."),
    ] = None,
) -> None:
    """Check graph files and report every problem (exit 1 if any). Runs no code:
    python: references are read, not imported (that happens when a run starts)."""
    from coral_graph._errors import ConfigError
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
    from coral_graph._errors import ConfigError
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
        print(f"# {entry.file} ({entry.scope})")
        print(entry.file.read_text("utf-8"), end="")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "scope", "description"):
        table.add_column(col)
    from coral_graph.config._source import read_source

    for entry, shadowed in list_registry(gdir):
        # The loader with its caps (a hostile agent.yaml must not hang the listing);
        # no environment: a listing shows no value read from it.
        data = read_source(entry.file, {})[0].data
        data = data if isinstance(data, dict) else {}
        kind = str(data.get("kind") or ("python" if data.get("python") else "llm"))
        desc = " ".join(str(data.get("description") or "").split())
        nm = (
            f"[dim]{escape(entry.name)} (shadowed)[/]"
            if shadowed
            else f"[bold]{escape(entry.name)}[/]"
        )
        table.add_row(nm, kind, f"{entry.scope}: {entry.folder.parent}", escape(desc))
    out.print(table)
