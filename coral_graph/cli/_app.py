"""The Typer application that every command module registers on.

Exit codes (documented in the README):

* 0 — the run answered (or the command succeeded);
* 1 — bad input (a broken graph file, an unknown run id, a bad option);
* 2 — the run stopped by a budget, or went idle without an answer;
* 130 — interrupted (Ctrl-C); the transcript records ``cancelled``.
"""

from __future__ import annotations

import typer

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_NO_ANSWER = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="coral-graph",
    help="Run graphs of agents that talk in threads and mention each other.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
