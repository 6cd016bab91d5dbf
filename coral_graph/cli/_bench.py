"""``coral-graph bench``: the routing benchmarks (see the README's Benchmarks section)."""

from __future__ import annotations

from typing import Annotated

import typer

from coral_graph.cli._app import app


@app.command()
def bench(
    repeat: Annotated[int, typer.Option("--repeat", help="Runs per figure (the median).")] = 3,
    only: Annotated[
        str,
        typer.Option(
            "--only",
            metavar="A,B",
            help="Only these workloads, comma-separated: pingpong, ring, fanout, idle.",
        ),
    ] = "",
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, one repeat.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines only.")] = False,
    store: Annotated[
        bool, typer.Option("--store", help="Also ring and fanout with the SQLite store on and off.")
    ] = False,
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Also the token-efficiency scenario.")
    ] = False,
    mcp: Annotated[
        bool,
        typer.Option("--mcp", help="Also round trips between external agents over MCP."),
    ] = False,
    clock: Annotated[
        str,
        typer.Option(
            "--clock",
            metavar="wall|cpu",
            help="Time with the wall clock, or with the process's CPU time (steadier on a "
            "shared, loaded machine).",
        ),
    ] = "wall",
    nats: Annotated[
        bool,
        typer.Option(
            "--nats",
            help="pingpong, ring and fanout with the agents in worker processes over NATS "
            "JetStream, beside bare JetStream (docs/distributed.md); a private nats-server "
            "unless --nats-url.",
        ),
    ] = False,
    nats_url: Annotated[
        str, typer.Option("--nats-url", metavar="URL", help="With --nats: this NATS server.")
    ] = "",
    scaling: Annotated[
        str, typer.Option("--scaling", metavar="1,2,4", help="With --nats: fanout worker counts.")
    ] = "1,2,4",
) -> None:
    """Run the routing benchmarks (pingpong, ring, fanout, idle) beside the asyncio.Queue
    floor measured in the same run."""
    from coral_graph.bench._main import main

    if nats:
        argv = ["--nats", nats_url, "--repeat", str(repeat), "--scaling", scaling]
        argv += [flag for flag, on in (("--quick", quick), ("--json", as_json)) if on]
        argv += ["--only", only] if only else []
        raise typer.Exit(main(argv))
    argv = ["--repeat", str(repeat), "--clock", clock]
    if only:
        argv += ["--only", only]
    flags = (("--quick", quick), ("--json", as_json), ("--store", store), ("--tokens", tokens),
             ("--mcp", mcp))  # fmt: skip
    argv += [flag for flag, on in flags if on]
    raise typer.Exit(main(argv))
