"""Commands over the transcript store: ``runs``, ``show``, ``export``, ``import``, ``resume``.

Every command reads the store read-only except ``import`` and ``resume``. Bad
input (no store, not a store, a newer schema, an unknown or ambiguous run, a
corrupt export) prints one ``error:`` line on stderr and exits with
``EXIT_BAD_INPUT``. Listings have ``--json``; without it, a pipe gets a header and
the same columns a terminal gets, never cut and never wrapped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coral_graph.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_STORE,
    DbOption,
    app,
)
from coral_graph.cli._text import columns, json_text, one_line, safe
from coral_graph.cli._transcript import (
    Style,
    dur,
    fold_tools,
    render_messages,
    render_totals,
    when,
)

if TYPE_CHECKING:
    from coral_graph import AgentGraph
    from coral_graph.store import StoreReader

__all__ = ["export", "import_", "resume", "runs", "show"]


def _fail(message: str) -> typer.Exit:
    print(f"error: {one_line(message)}", file=sys.stderr)
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
        print(f"warning: damaged row in {reader.path}: {one_line(p)}", file=sys.stderr)


def _isatty() -> bool:
    return sys.stdout.isatty()


# -- runs ---------------------------------------------------------------------------------

_RUN_KEYS = (
    "run_id",
    "graph_name",
    "task",
    "status",
    "stop_reason",
    "answer",
    "error",
    "messages",
    "messages_sent",
    "tokens",
    "cost_usd",
    "failures",
    "started_at",
    "ended_at",
    "duration_s",
    "graph_path",
)


def _count_the_task(row: dict[str, Any]) -> None:
    """The store's ``messages`` leaves the task out (it is what the message budget
    counts); shown to people, "messages" is the whole transcript, the task included,
    as in the viewer. Both are kept: ``messages`` and ``messages_sent``."""
    sent = int(row.get("messages") or 0)
    row["messages_sent"] = sent
    row["messages"] = sent + 1


def _run_row(reader: StoreReader, rid: str) -> dict[str, Any]:
    row = reader.run(rid)
    _count_the_task(row)
    return row


def _failures(usage: Any) -> dict[str, int]:
    """What failed in a run, from its stored per-agent usage."""
    out = {"llm_calls": 0, "tool_calls": 0, "turns": 0}
    if isinstance(usage, dict):
        for u in usage.values():
            if isinstance(u, dict):
                out["llm_calls"] += int(u.get("llm_errors") or 0)
                out["tool_calls"] += int(u.get("tool_errors") or 0)
                out["turns"] += int(u.get("errors") or 0)
    return out


@app.command()
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list.")] = False,
) -> None:
    """Recent runs: id, start, graph, status, stop reason, messages, failures, tokens,
    cost, duration, task."""
    from coral_graph.store import StoreError

    with _reader(db) as reader:
        try:
            rows = reader.list_runs(limit)
        except StoreError as exc:
            raise _fail(str(exc)) from None
        _warn_problems(reader)
        path = reader.path
    for r in rows:
        r["failures"] = _failures(r.get("usage"))
        _count_the_task(r)
    if as_json:
        print(json_text([{k: r.get(k) for k in _RUN_KEYS} for r in rows], indent=2))
        return
    tty = _isatty()
    st = Style(tty)
    header = ["run", "started", "graph", "status", "stop", "msgs", "failed", "tokens"]
    header += ["cost", "time", "task"]
    table = []
    for r in rows:
        f = r["failures"]
        table.append(
            [
                r["run_id"],
                when(r["started_at"]),
                safe(r["graph_name"] or "-"),
                safe(r["status"]),
                safe(r["stop_reason"] or "-"),
                str(r["messages"] or 0),
                str(f["llm_calls"] + f["tool_calls"] + f["turns"]),
                f"{r['tokens'] or 0:,}",
                f"${r['cost_usd'] or 0:.4f}",
                dur(r["duration_s"]),
                one_line(r["task"] or ""),
            ]
        )
    lines = columns(header, table, right=("msgs", "failed", "tokens", "cost", "time"), fit=tty)
    if tty:
        print(st.dim(f"runs in {path}"))
        lines[0] = st.bold(lines[0])
    print("\n".join(lines))


# -- show ---------------------------------------------------------------------------------


def _page(lines: list[str]) -> bool:
    """Show ``lines`` in a pager when they do not fit the terminal; False when no
    pager could be started (the caller prints them)."""
    rows = shutil.get_terminal_size((80, 24)).lines
    if len(lines) < rows:
        return False
    cmd = os.environ.get("CORAL_PAGER") or os.environ.get("PAGER") or "less"
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")  # quit if one screen, keep colours, leave the text
    try:
        proc = subprocess.Popen(shlex.split(cmd), stdin=subprocess.PIPE, env=env)
    except (OSError, ValueError):
        return False
    assert proc.stdin is not None
    try:
        for i in range(0, len(lines), 2000):
            proc.stdin.write(("\n".join(lines[i : i + 2000]) + "\n").encode("utf-8", "replace"))
        proc.stdin.close()
    except BrokenPipeError:  # the pager was quit before the end: fine
        pass
    proc.wait()
    return True


def _emit(lines: Iterable[str]) -> None:
    write = sys.stdout.write
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= 2000:
            write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        write("\n".join(batch) + "\n")
    sys.stdout.flush()


@app.command(
    short_help="A run's transcript: each message as `sender → @mentions` with time, content, "
    "folded tool calls and usage, failures where they happened; per-agent totals at the end."
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
    tail: Annotated[
        int | None, typer.Option("--tail", min=1, help="Only the last N messages.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N messages.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new messages until the run ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The transcript as JSON.")] = False,
    no_logs: Annotated[
        bool,
        typer.Option(
            "--no-logs",
            help="Leave out the agents' log lines (process output, MCP endpoints, notices).",
        ),
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No colours, styles or pager.")] = False,
    no_pager: Annotated[
        bool, typer.Option("--no-pager", help="Print everything, even on a terminal.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between polls with --follow.", hidden=True)
    ] = 0.25,
) -> None:
    """A run's transcript: each message as `sender → @mentions` with time, content,
    folded tool calls and usage, failures where they happened; per-agent totals at
    the end. On a terminal a long transcript opens in a pager ($PAGER, else less)."""
    from coral_graph.store import StoreError

    if tail is not None and limit is not None:
        raise _fail("give --tail or --limit, not both")
    reader = _reader(db)
    try:
        try:
            info = reader.run(run)
            _count_the_task(info)
        except StoreError as exc:
            raise _fail(str(exc)) from None
        rid = info["run_id"]
        names = [a["name"] for a in reader.agents(rid)]
        if agent is not None and agent not in names and agent != "user":
            raise _fail(
                f'run {rid} has no agent "{agent}"; its agents: {", ".join(names) or "none"}'
            )
        thread_rows = reader.threads(rid)
        threads = {t["thread_id"]: t["name"] for t in thread_rows}
        if thread is not None and thread not in threads:
            raise _fail(
                f'run {rid} has no thread "{thread}"; its threads: {", ".join(threads) or "none"}'
            )
        msgs = reader.messages(rid, thread, agent=agent, grep=grep)
        if tail is not None:
            msgs = msgs[-tail:]
        elif limit is not None:
            msgs = msgs[:limit]
        llm_failed = reader.llm_calls(rid, failed=True)
        errors = reader.errors(rid)
        all_logs = [] if no_logs else reader.logs(rid)
        logs = _logs_shown(all_logs, msgs, thread, agent, grep, tail, limit)
        if as_json:
            out = {
                "run": info,
                "threads": thread_rows,
                "messages": msgs,
                "logs": [{"kind": "log", **log} for log in logs],
                "tool_calls": reader.tool_calls(rid),
                # each with its worker: host:pid of the process that handled it in a
                # distributed run, null in one process
                "deliveries": reader.deliveries(rid),
                "errors": errors,
                "llm_errors": llm_failed,
                "usage": reader.usage(rid),
                "failures": _failures(reader.usage(rid)),
            }
            sys.stdout.write(json_text(out))
            sys.stdout.write("\n")
            return
        tty = _isatty()
        st = Style(tty and not plain)
        failures: list[dict[str, Any]] = []
        handled, seen_del = _worker_deliveries(reader, rid, 0, thread, agent)
        if grep is not None:
            handled = []  # as failures: a delivery line holds no text to match
        else:
            failures = [
                f
                for f in [*llm_failed, *errors]
                if (agent is None or f["agent"] == agent)
                and (thread is None or str(f.get("message_id") or "").startswith(thread + "#"))
            ]
            if msgs and (tail is not None or limit is not None):
                lo, hi = msgs[0]["gseq"], msgs[-1]["gseq"]
                failures = [f for f in failures if lo <= f["seq"] <= hi]
                shown = {m["message_id"] for m in msgs}
                handled = [d for d in handled if d["message_id"] in shown]
        task = one_line(info["task"] or "", 100)
        lines = [
            st.bold(rid)
            + f" · {safe(info['graph_name'] or '-')} · {safe(info['status'])} · task: {task}"
        ]
        tools = fold_tools(msgs, reader.tool_calls(rid)) if msgs else {}
        lines.extend(render_messages(st, msgs, tools, threads, failures, logs, handled))
        last = msgs[-1]["gseq"] if msgs else 0
        if not follow:
            lines.extend(render_totals(st, _run_row(reader, rid), reader.usage(rid)))
            if not (tty and not plain and not no_pager and _page(lines)):
                _emit(lines)
            return
        _emit(lines)
        # What the first screen read, not a second read: a line stored in between is
        # printed by the follow loop, not lost.
        seen_log = max([log["seq"] for log in all_logs] + [0])
        _follow(
            reader, rid, st, thread, agent, grep, last, interval,
            None if no_logs else seen_log, seen_del,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except StoreError as exc:
        raise _fail(str(exc)) from None
    finally:
        _warn_problems(reader)
        reader.close()


def _worker_deliveries(
    reader: StoreReader, rid: str, after_seq: int, thread: str | None, agent: str | None
) -> tuple[list[dict[str, Any]], int]:
    """The deliveries after ``after_seq`` that a worker process handled (a
    distributed run; in one process none has a worker and no line is added), of
    ``thread`` and ``agent`` if given; and the newest delivery seq read."""
    out: list[dict[str, Any]] = []
    last = after_seq
    for cols in reader.delivery_columns(rid, after_seq):
        seqs, workers = cols[0], cols[7]
        if seqs:
            last = max(last, max(seqs))
        if workers.count(None) == len(workers):
            continue  # a chunk of one process's deliveries: skipped without a dict
        for seq, ts, name, mid, via, ok, d, w in zip(*cols, strict=True):
            if (
                w is not None
                and seq > after_seq
                and (agent is None or name == agent)
                and (thread is None or str(mid).startswith(thread + "#"))
            ):
                out.append({"seq": seq, "ts": ts, "agent": name, "message_id": mid,
                            "via": via, "ok": ok, "duration_s": d, "worker": w})  # fmt: skip
    return out, last


def _logs_shown(
    logs: list[dict[str, Any]],
    msgs: list[dict[str, Any]],
    thread: str | None,
    agent: str | None,
    grep: str | None,
    tail: int | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """The log lines that go with the messages shown: none for one thread (a log line
    belongs to no thread), the agent's own with ``--agent``, those containing the
    text with ``--grep``, and within the messages' span with ``--tail``/``--limit``."""
    if thread is not None:
        return []
    out = [
        log
        for log in logs
        if (agent is None or log["agent"] == agent)
        and (grep is None or grep.casefold() in log["text"].casefold())
    ]
    if msgs and (tail is not None or limit is not None):
        lo, hi = msgs[0]["gseq"], msgs[-1]["gseq"]
        out = [log for log in out if lo <= log["seq"] <= hi]
    return out


def _follow(
    reader: StoreReader,
    rid: str,
    st: Style,
    thread: str | None,
    agent: str | None,
    grep: str | None,
    last: int,
    interval: float,
    seen_log: int | None,
    seen_del: int = 0,
) -> None:
    """Print new messages (failures, deliveries a worker process handled, and log
    lines unless ``seen_log`` is None) until the run ends, then the totals."""
    seen_fail = max([f["seq"] for f in reader.llm_calls(rid, failed=True)] + [0])
    seen_err = max([e["seq"] for e in reader.errors(rid)] + [0])

    running = True
    while True:
        threads = {t["thread_id"]: t["name"] for t in reader.threads(rid)}
        msgs = reader.messages(rid, thread, after_gseq=last, agent=agent, grep=grep)
        fails = [f for f in reader.llm_calls(rid, failed=True) if f["seq"] > seen_fail]
        errs = [e for e in reader.errors(rid) if e["seq"] > seen_err]
        seen_fail = max([f["seq"] for f in fails] + [seen_fail])
        seen_err = max([e["seq"] for e in errs] + [seen_err])
        failures = [f for f in [*fails, *errs] if agent is None or f["agent"] == agent]
        logs: list[dict[str, Any]] = []
        if seen_log is not None:
            new_logs = reader.logs(rid, seen_log)
            seen_log = max([log["seq"] for log in new_logs] + [seen_log])
            logs = _logs_shown(new_logs, msgs, thread, agent, grep, None, None)
        handled, seen_del = _worker_deliveries(reader, rid, seen_del, thread, agent)
        if msgs or failures or logs or handled:
            tools = fold_tools(msgs, reader.tool_calls(rid)) if msgs else {}
            _emit(render_messages(st, msgs, tools, threads, failures, logs, handled))
            if msgs:
                last = msgs[-1]["gseq"]
        if not running:
            break
        if reader.run(rid)["status"] != "running":
            running = False  # one more read: what was committed with the end of the run
            continue
        time.sleep(interval)
    _emit(render_totals(st, _run_row(reader, rid), reader.usage(rid)))


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
        except BrokenPipeError:
            raise  # `export … | head`: the reader had enough (main() ends quietly)
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
    "continue from what was spent.",
    epilog=EXIT_CODES_HELP,
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
    continue from what was spent. Prints the same result block as `run`."""
    from coral_graph import ConfigError, CoralError, run_async
    from coral_graph.cli._output import print_result, result_json
    from coral_graph.cli._run import cancelled_by_interrupt, close_store, exit_code
    from coral_graph.store import SQLiteStore, StoreError
    from coral_graph.store._resume import load_for_resume, resume_run

    try:
        row, _state = load_for_resume(run, db)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    stored = row.get("graph_path")
    path = graph if graph is not None else (Path(stored) if stored else None)
    if path is None:
        raise _fail(f"run {row['run_id']} has no stored graph file; pass --graph PATH")
    try:
        from coral_graph.config import load_graph

        lg = load_graph(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise _fail(f"cannot read the graph {path}: {exc.strerror or exc}") from None
    g: AgentGraph = lg.graph
    try:
        g.check_ready()  # a missing key or an unknown model: before anything runs
    except CoralError as exc:
        raise _fail(str(exc)) from None
    try:
        store = SQLiteStore(db, graph_path=path.resolve())
    except StoreError as exc:
        print(f"store: cannot record the resumed run: {one_line(exc)}", file=sys.stderr)
        raise typer.Exit(EXIT_STORE) from None
    problems: list[BaseException] = []
    try:
        result = run_async(
            lambda: cancelled_by_interrupt(resume_run(g, row["run_id"], db=db, store=store))
        )
    except KeyboardInterrupt:
        close_store(store, problems)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CoralError as exc:
        close_store(store, problems)
        raise _fail(f"cannot resume: {exc}") from None
    except Exception as exc:
        # The graph's agents did not fit the stored run (a bug in user code, or a
        # graph file that changed): typed, one line, nothing half-done is hidden.
        close_store(store, problems)
        raise _fail(
            f"cannot resume {row['run_id']} with {path}: {type(exc).__name__}: {exc}"
        ) from None
    store_problem = close_store(store, problems)
    code = EXIT_STORE if store_problem is not None else exit_code(result.stop_reason)
    db_path = str(store.path)
    if as_json:
        print(result_json(result, graph=g.name, db=db_path, store_error=store_problem))
        if store_problem is not None:
            print(f"store: {store_problem}", file=sys.stderr)
        raise typer.Exit(code)
    print(f"resumed {row['run_id']}", file=sys.stderr)
    print_result(
        result,
        db_path=db_path,
        explicit_db=db is not None,
        tty=_isatty(),
        store_problem=store_problem,
    )
    raise typer.Exit(code)
