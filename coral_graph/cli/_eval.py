"""``coral-graph eval``: run graphs on a dataset and compare them side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coral_graph.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    DbOption,
    ModelOption,
    SetOption,
    app,
)

if TYPE_CHECKING:
    from coral_graph.eval._runner import EvalReport

__all__ = ["eval_cmd"]


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_BAD_INPUT)


def _print_report(report: EvalReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from coral_graph.eval._report import table_rows

    seed = "per-run seeds" if report.seed is None else f"seed {report.seed}"
    table = Table(
        title=f"{report.eval_id}: {report.source}, {report.n} items, {seed}",
        title_justify="left",
    )
    table.add_column("")
    for c in report.configs:
        table.add_column(escape(c.config), justify="right")
    for metric, cells in table_rows(report.configs):
        table.add_row(metric, *(escape(c) for c in cells))
    out = Console(highlight=False, soft_wrap=False, width=max(100, 28 + 22 * len(report.configs)))
    out.print(table)
    if report.db:
        print(
            f"eval: {report.eval_id} saved in {report.db}; each item's run: "
            f"coral-graph show RUN_ID (runs listed with --show {report.eval_id} --json)"
        )


def _list(db: Path | None) -> None:
    from coral_graph.eval._runner import EvalTables
    from coral_graph.store import resolve_db

    path = resolve_db(db)
    if not path.exists():
        raise _fail(f"no store at {path}: run an eval first")
    tables = EvalTables(path)
    try:
        for e in tables.list_evals():
            cfgs = ", ".join(c["label"] for c in e["configs"])
            total = e["n"] * len(e["configs"])
            print(f"{e['eval_id']}  {e['dataset']}  {e['done']}/{total} runs  {cfgs}")
    finally:
        tables.close()


def _show(eval_id: str, db: Path | None, as_json: bool) -> None:
    from coral_graph.eval._report import summarise
    from coral_graph.eval._runner import EvalReport, EvalTables
    from coral_graph.store import resolve_db

    path = resolve_db(db)
    tables = EvalTables(path)
    try:
        if eval_id == "last":
            eval_id = tables.latest() or eval_id
        meta = tables.get(eval_id)
        if meta is None:
            raise _fail(f"no eval {eval_id!r} in {path}; list them with --list")
        items = tables.items(eval_id)
    finally:
        tables.close()
    labels = [c["label"] for c in meta["configs"]]
    report = EvalReport(
        eval_id=eval_id,
        dataset=meta["dataset"],
        source=meta["source"],
        n=meta["n"],
        seed=meta["seed"],
        configs=[summarise(lb, [i for i in items if i.config == lb]) for lb in labels],
        items=items,
        db=str(path),
        complete=len(items) == meta["n"] * len(labels),
    )
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        _print_report(report)


@app.command("eval")
def eval_cmd(
    configs: Annotated[
        list[Path] | None, typer.Argument(help="Graph files to compare.", show_default=False)
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", "-d", help="A bundled set (facts, choice, arithmetic) or a JSONL file."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help="Run the first N items.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Base seed: reproducible samples (default: each run draws its own)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Runs in flight at once.")
    ] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report.")] = False,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Finish an interrupted eval (its id, or 'last')."),
    ] = None,
    model: ModelOption = None,
    set_: SetOption = None,
    db: DbOption = None,
    list_: Annotated[bool, typer.Option("--list", help="List the evals in the store.")] = False,
    show: Annotated[
        str | None, typer.Option("--show", help="Print a stored eval's table (id or 'last').")
    ] = None,
) -> None:
    """Run each graph on each item of a dataset and print one table side by side:
    accuracy with a 95% Wilson interval, LLM calls, tokens, cost per item and per
    solved item, p50/p95 latency, stop reasons. Every run is stored under an eval id;
    Ctrl-C keeps the finished items and --resume runs the rest.

    Example: coral-graph eval configs/single.yaml configs/voting-5.yaml -d facts --n 60
    """
    from coral_graph import ConfigError, run_async
    from coral_graph.eval._datasets import DatasetError, load_dataset
    from coral_graph.eval._runner import EvalError, EvalTables, run_eval

    if list_:
        _list(db)
        raise typer.Exit(EXIT_OK)
    if show is not None:
        _show(show, db, as_json)
        raise typer.Exit(EXIT_OK)
    if not configs:
        raise _fail(
            "give one or more graph files, e.g. coral-graph eval configs/voting.yaml -d facts"
        )
    if resume == "last":
        from coral_graph.store import resolve_db

        tables = EvalTables(resolve_db(db))
        try:
            resume = tables.latest()
        finally:
            tables.close()
        if resume is None:
            raise _fail("no eval to resume in the store")
    if resume is not None and dataset is None:
        from coral_graph.store import resolve_db

        tables = EvalTables(resolve_db(db))
        try:
            prior = tables.get(resume)
        finally:
            tables.close()
        if prior is None:
            raise _fail(f"no eval {resume!r} to resume; list them with --list")
        source = str(prior["source"])
        # a bundled set by its name; a file by the path it was read from
        dataset = str(prior["dataset"]) if source.startswith("bundled:") else source
        seed = prior["seed"]
    if dataset is None:
        raise _fail("give --dataset NAME (facts, choice, arithmetic) or --dataset FILE.jsonl")
    if n is not None and n < 1:
        raise _fail("--n must be at least 1")
    try:
        data = load_dataset(dataset, seed=seed or 0)
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    for p in configs:
        if not p.exists():
            raise _fail(f"no such graph file: {p}")

    progress: Any = None
    task_id: Any = None
    if sys.stderr.isatty() and not as_json:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    state = {"solved": 0}

    def on_progress(done: int, total: int, r: Any) -> None:
        nonlocal task_id
        if r is not None and r.solved:
            state["solved"] += 1
        if progress is None:
            return
        if task_id is None:
            task_id = progress.add_task("eval", total=total)
        progress.update(task_id, completed=done, description=f"eval · {state['solved']} solved")

    async def main() -> EvalReport:
        from coral_graph.cli._run import cancelled_by_interrupt

        # The first Ctrl-C cancels the eval (finished items are kept), a second ends
        # the process even if an agent blocks the loop; as `coral-graph run`.
        return await cancelled_by_interrupt(
            run_eval(
                configs,
                data,
                n=n,
                seed=seed,
                concurrency=concurrency,
                db=db,
                resume=resume,
                model=model,
                overrides=set_ or (),
                on_progress=on_progress,
            )
        )

    try:
        if progress is not None:
            progress.start()
        try:
            report = run_async(main)
        finally:
            if progress is not None:
                progress.stop()
    except KeyboardInterrupt:
        print(
            "interrupted: finished items are kept; finish with "
            f"coral-graph eval {' '.join(map(str, configs))} --resume last",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except EvalError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        _print_report(report)
    raise typer.Exit(EXIT_OK)
