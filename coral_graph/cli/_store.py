"""Commands over the transcript store: ``runs``, ``show``, ``export``, ``import``, ``resume``.

Every command reads the store read-only except ``import`` and ``resume``. Bad
input (no store, not a store, a newer schema, an unknown run, a corrupt export)
prints one ``error:`` line on stderr and exits with ``EXIT_BAD_INPUT``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coral_graph.cli._app import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_ANSWER, EXIT_OK, app

if TYPE_CHECKING:
    from rich.console import Console

    from coral_graph._graph import AgentGraph
    from coral_graph.store import StoreReader

__all__ = ["export", "import_", "resume", "runs", "show"]

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="The store (default: $CORAL_DB or .coral/coral.db)."),
]


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_BAD_INPUT)


def _reader(db: Path | None) -> StoreReader:
    from coral_graph.store import StoreError, open_reader

    try:
        return open_reader(db)
    except StoreError as exc:
        raise _fail(str(exc)) from None


def _warn_problems(reader: StoreReader) -> None:
    """Damaged rows the reader read around: one ``warning:`` line each, on stderr."""
    for p in reader.problems:
        print(f"warning: damaged row in {reader.path}: {p}", file=sys.stderr)


def _when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ts).strftime(fmt) if ts else "-"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.0f}ms" if s < 1 else f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m"


def _console(plain: bool) -> Console:
    from rich.console import Console

    return Console(highlight=False, no_color=plain, force_terminal=None if not plain else False)


# -- runs ---------------------------------------------------------------------------------


@app.command()
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Recent runs: graph, task, status, stop reason, messages, tokens, cost, duration."""
    from coral_graph.store import StoreError

    with _reader(db) as reader:
        try:
            rows = reader.list_runs(limit)
        except StoreError as exc:
            raise _fail(str(exc)) from None
        _warn_problems(reader)
    if as_json:
        keep = (
            "run_id",
            "graph_name",
            "task",
            "status",
            "stop_reason",
            "messages",
            "tokens",
            "cost_usd",
            "started_at",
            "ended_at",
            "duration_s",
            "graph_path",
        )
        print(json.dumps([{k: r.get(k) for k in keep} for r in rows], indent=2))
        return
    if not sys.stdout.isatty():
        for r in rows:
            print(
                "\t".join(
                    str(x)
                    for x in (
                        r["run_id"],
                        r["graph_name"],
                        r["status"],
                        r["stop_reason"] or "-",
                        r["messages"],
                        r["tokens"],
                        f"{r['cost_usd'] or 0:.4f}",
                        _dur(r["duration_s"]),
                        _when(r["started_at"]),
                        (r["task"] or "").replace("\n", " ")[:60],
                    )
                )
            )
        return
    from rich.table import Table

    table = Table(title=f"runs in {reader.path}", header_style="bold")
    for col in (
        "run",
        "graph",
        "task",
        "status",
        "stop",
        "msgs",
        "tokens",
        "cost",
        "time",
        "started",
    ):
        table.add_column(col, justify="right" if col in ("msgs", "tokens", "cost") else "left")
    for r in rows:
        status = r["status"]
        style = {"running": "yellow", "interrupted": "red"}.get(status, "")
        table.add_row(
            r["run_id"],
            r["graph_name"] or "-",
            (r["task"] or "").replace("\n", " ")[:40],
            f"[{style}]{status}[/]" if style else status,
            r["stop_reason"] or "-",
            str(r["messages"] or 0),
            f"{r['tokens'] or 0:,}",
            f"${r['cost_usd'] or 0:.4f}",
            _dur(r["duration_s"]),
            _when(r["started_at"]),
        )
    _console(False).print(table)


# -- show ---------------------------------------------------------------------------------


def _fold_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Tool calls by the message they belong to: the one they produced, else the
    next message of the same agent."""
    by_msg: dict[str, list[dict[str, Any]]] = {}
    ids = {m["message_id"] for m in messages}
    later: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        later.setdefault(m["sender"], []).append(m)
    for tc in tools:
        mid = tc.get("message_id")
        if mid is None or mid not in ids:
            mid = next(
                (m["message_id"] for m in later.get(tc["agent"], ()) if m["gseq"] > tc["seq"]), None
            )
        if mid is not None:
            by_msg.setdefault(mid, []).append(tc)
    return by_msg


def _usage_line(meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("model"):
        parts.append(str(meta["model"]))
    tokens = meta.get("tokens")
    if tokens is None and ("prompt_tokens" in meta or "completion_tokens" in meta):
        tokens = (meta.get("prompt_tokens") or 0) + (meta.get("completion_tokens") or 0)
    if tokens:
        parts.append(f"{tokens:,} tokens")
    cost = meta.get("cost_usd", meta.get("cost"))
    if cost:
        parts.append(f"${cost:.4f}")
    lat = meta.get("latency_s", meta.get("latency"))
    if lat:
        parts.append(_dur(lat))
    return " · ".join(parts)


def _print_message(
    console: Console, m: dict[str, Any], tools: list[dict[str, Any]], threads: dict[str, str]
) -> None:
    from rich.markup import escape
    from rich.text import Text

    to = " ".join("@" + x for x in m["mentions"])
    head = Text()
    head.append(_when(m["ts"], "%H:%M:%S.%f")[:-3] + "  ", style="dim")
    head.append(m["sender"], style="bold cyan")
    if to:
        head.append(" → " + to, style="magenta")
    head.append(f"  [{m['thread_id']} {threads.get(m['thread_id'], '')} #{m['seq']}]", style="dim")
    console.print(head)
    for line in (m["content"] or "").splitlines() or [""]:
        console.print(Text("    " + line))
    if tools:
        folded = ", ".join(
            f"{escape(tc['tool'])} {'ok' if tc['ok'] else 'failed'} {_dur(tc['duration_s'])}"
            for tc in tools
        )
        console.print(f"    [dim]▸ {len(tools)} tool call{'s' * (len(tools) != 1)}: {folded}[/]")
    usage = _usage_line(m.get("metadata") or {})
    if usage:
        console.print(f"    [dim]▸ {escape(usage)}[/]")


def _print_totals(console: Console, run: dict[str, Any], usage: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="per agent", header_style="bold", title_justify="left")
    for col in ("agent", "turns", "sent", "deliveries", "errors", "llm calls", "tokens", "cost"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for name, u in sorted(usage.items()):
        table.add_row(
            name,
            str(u.get("turns", 0)),
            str(u.get("messages_sent", 0)),
            str(u.get("deliveries", 0)),
            str(u.get("errors", 0)),
            str(u.get("llm_calls", 0)),
            f"{u.get('tokens', 0):,}",
            f"${u.get('cost_usd', 0.0):.4f}",
        )
    console.print(table)
    console.print(
        f"{run['run_id']}: {run['status']}"
        + (f" ({run['stop_reason']})" if run.get("stop_reason") else "")
        + f" · {run.get('messages') or 0} messages · {run.get('tokens') or 0:,} tokens"
        + f" · ${run.get('cost_usd') or 0:.4f} · {_dur(run.get('duration_s'))}",
        markup=False,
    )


@app.command(
    short_help="A run's transcript: each message as `sender → @mentions` with time, content, "
    "folded tool calls and usage; per-agent totals at the end."
)
def show(
    run: Annotated[str, typer.Argument(help="The run id (a unique prefix, or 'last').")],
    db: DbOption = None,
    thread: Annotated[str | None, typer.Option("--thread", help="Only this thread (id).")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only messages it sent or was mentioned in.")
    ] = None,
    grep: Annotated[
        str | None, typer.Option("--grep", help="Only messages containing TEXT.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new messages until the run ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The transcript as JSON.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No colours or styles.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between polls with --follow.", hidden=True)
    ] = 0.25,
) -> None:
    """A run's transcript: each message as `sender → @mentions` with time, content,
    folded tool calls and usage; per-agent totals at the end."""
    from coral_graph.store import StoreError

    reader = _reader(db)
    try:
        try:
            info = reader.run(run)
        except StoreError as exc:
            raise _fail(str(exc)) from None
        rid = info["run_id"]
        filters: dict[str, Any] = {"agent": agent, "grep": grep}
        if as_json:
            msgs = reader.messages(rid, thread, **filters)
            out = {
                "run": info,
                "threads": reader.threads(rid),
                "messages": msgs,
                "tool_calls": reader.tool_calls(rid),
                "errors": reader.errors(rid),
                "usage": reader.usage(rid),
            }
            from coral_graph.store._json import dumps

            sys.stdout.write(dumps(out))
            sys.stdout.write("\n")
            return
        console = _console(plain or not sys.stdout.isatty())
        threads = {t["thread_id"]: t["name"] for t in reader.threads(rid)}
        console.print(
            f"[bold]{rid}[/] · {info['graph_name'] or '-'} · {info['status']}"
            f" · task: {(info['task'] or '').splitlines()[0][:80] if info['task'] else ''}",
            highlight=False,
        )
        last = 0
        while True:
            msgs = reader.messages(rid, thread, after_gseq=last, **filters)
            if msgs:
                tools = _fold_tools(msgs, reader.tool_calls(rid))
                for m in msgs:
                    _print_message(console, m, tools.get(m["message_id"], []), threads)
                last = msgs[-1]["gseq"]
            if not follow:
                break
            info = reader.run(rid)
            if info["status"] != "running":
                # One more read: messages committed with the end of the run.
                follow = False
                continue
            time.sleep(interval)
            threads = {t["thread_id"]: t["name"] for t in reader.threads(rid)}
        errors = reader.errors(rid)
        for e in errors:
            console.print(
                f"[red]error[/] {e['agent']}: {e['error_type']}: {e['error']} ({e['action']})",
                markup=True,
                highlight=False,
            )
        _print_totals(console, reader.run(rid), reader.usage(rid))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except StoreError as exc:
        raise _fail(str(exc)) from None
    finally:
        _warn_problems(reader)
        reader.close()


# -- export / import ----------------------------------------------------------------------


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="The run id (a unique prefix, or 'last').")],
    fmt: Annotated[str, typer.Option("--format", help="msgpack or jsonl.")] = "msgpack",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: stdout).")
    ] = None,
    db: DbOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --output file if it exists.")
    ] = False,
) -> None:
    """Write every event of a run to a file (see docs/msgpack-format.md)."""
    import os
    import tempfile

    from coral_graph.store import StoreError, export_run

    if fmt not in ("msgpack", "jsonl"):
        raise _fail(f"unknown format {fmt!r}; use msgpack or jsonl")
    if output is not None and os.path.lexists(output):
        if output.is_dir():
            raise _fail(f"{output} is a folder; give a file name")
        if not force:
            raise _fail(f"{output} exists; pass --force to replace it, or choose another name")
    with _reader(db) as reader:
        tmp: str | None = None
        try:
            reader.resolve_run(run)
            if output is None:
                n = export_run(reader, run, sys.stdout.buffer, fmt)
                sys.stdout.buffer.flush()
            else:
                # A new file beside the output (never one that exists), renamed
                # over it once complete.
                fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent or ".")
                with os.fdopen(fd, "wb") as f:
                    n = export_run(reader, run, f, fmt)
                os.replace(tmp, output)
                tmp = None
        except StoreError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                os.unlink(tmp)
            _warn_problems(reader)
    if output is not None:
        print(f"exported {n} events to {output}", file=sys.stderr)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An export written by `coral-graph export`.")],
    db: DbOption = None,
) -> None:
    """Add a run from an export file to the store."""
    from coral_graph.store import StoreError, import_run

    try:
        rid = import_run(file, db)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    print(rid)


# -- resume ------------------------------------------------------------------------------


@app.command(
    short_help="Continue an interrupted run: pending deliveries are delivered again, budgets "
    "continue from what was spent."
)
def resume(
    run: Annotated[str, typer.Argument(help="The interrupted run (a unique prefix, or 'last').")],
    graph: Annotated[
        Path | None,
        typer.Option("--graph", help="The graph file (default: the one the run was started from)."),
    ] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Continue an interrupted run: pending deliveries are delivered again, budgets
    continue from what was spent."""
    from coral_graph._errors import CoralError
    from coral_graph._runtime import run_async
    from coral_graph.store import SQLiteStore, StoreError
    from coral_graph.store._resume import load_for_resume, resume_run

    try:
        row, _state = load_for_resume(run, db)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    path = graph if graph is not None else row.get("graph_path")
    if not path:
        raise _fail(f"run {row['run_id']} has no stored graph file; pass --graph PATH")
    try:
        from coral_graph.config import load_graph

        lg = load_graph(Path(path))
    except CoralError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise _fail(f"cannot read the graph {path}: {exc.strerror or exc}") from None
    g: AgentGraph = lg.graph
    try:
        store = SQLiteStore(db, graph_path=path)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    try:
        result = run_async(lambda: resume_run(g, row["run_id"], db=db, store=store))
    except StoreError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{result.run_id}: {result.stop_reason}")
        if result.answer is not None:
            print(result.answer)
    ok = result.stop_reason == "answer"
    raise typer.Exit(EXIT_OK if ok else EXIT_NO_ANSWER)
