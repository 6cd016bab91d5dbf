"""The Typer application that every command module registers on.

Exit codes (documented in the README and in ``coral-graph --help``):

* 0 — the run answered (or the command succeeded);
* 1 — bad input (a broken graph file, an unknown run id, a bad option, a missing
  API key);
* 2 — the run stopped by a budget, an error, or went idle without an answer;
* 3 — the run ended (its result is printed first) but its transcript could not be
  written completely: the store failed (disk full, writer killed, read-only file);
* 130 — interrupted (Ctrl-C); the transcript records ``cancelled``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_NO_ANSWER = 2
EXIT_STORE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 answered (or done), 1 bad input, 2 no answer (budget, error, idle), "
    "3 the store failed (the result is printed first), 130 interrupted."
)

app = typer.Typer(
    name="coral-graph",
    help="Run graphs of agents that talk in threads and mention each other.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


# -- options that several commands take: declared once ------------------------------

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Run every LLM agent on this model.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="PATH=VALUE",
        help="Override a field, e.g. --set budgets.max_messages=20 (repeatable).",
    ),
]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="The transcript store (default: $CORAL_DB or .coral/coral.db)."),
]


def _show_version(value: bool) -> None:
    if value:
        from coral_graph import __version__

        print(f"coral-graph {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Run graphs of agents that talk in threads and mention each other."""


# -- readable types in --help ----------------------------------------------------------
# Typer labels each option by its Python annotation (`<bool>`, `<str>`,
# `<list[Path]>`). Help is for people: flags get no label, values a plain word.

_WORDS = {"str": "TEXT", "int": "N", "float": "NUMBER", "Path": "PATH", "bool": ""}


def _readable(param: Any, ctx: Any) -> str | None:
    if getattr(param, "metavar", None) is not None:
        return str(param.metavar)
    if getattr(param, "is_flag", False):
        return None
    label = _ORIGINAL_OPTION(param, ctx) if isinstance(param, typer.core.TyperOption) else None
    if label is None:
        label = _ORIGINAL_ARGUMENT(param, ctx)
    raw = str(label or "").strip("<>").removesuffix("...")
    while raw.startswith("list[") and raw.endswith("]"):
        raw = raw[5:-1]
    if "|" in raw:  # choices
        return raw
    word = _WORDS.get(raw, raw.upper() if raw else "")
    return word or None


def _usage_name(self: Any) -> str:
    name = str(self.display_name_raw).upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_ORIGINAL_OPTION = typer.core.TyperOption.display_type_rich
_ORIGINAL_ARGUMENT = typer.core.TyperArgument.display_type_rich
setattr(typer.core.TyperOption, "display_type_rich", _readable)  # noqa: B010
setattr(typer.core.TyperArgument, "display_type_rich", _readable)  # noqa: B010
if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    setattr(typer.core.TyperArgument, "_usage_display_name", _usage_name)  # noqa: B010
