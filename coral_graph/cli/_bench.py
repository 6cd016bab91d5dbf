"""``coral-graph bench``: the routing benchmarks of BENCH.md."""

from __future__ import annotations

import typer

from coral_graph.cli._app import app


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run the routing benchmarks (pingpong, ring, fanout, idle) beside the asyncio.Queue "
    "floor. Options: --repeat N, --only a,b, --quick, --json, --store, --tokens.",
)
def bench(ctx: typer.Context) -> None:
    from coral_graph.bench._main import main

    raise typer.Exit(main(list(ctx.args)))
