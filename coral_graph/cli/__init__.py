"""The ``coral-graph`` command line: thin — parse argv, call the public API, map errors
to exit codes. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from coral_graph.cli._app import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    app,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_NO_ANSWER", "EXIT_OK", "app", "main"]

# Command modules; each does `@app.command()` at import. Heavy imports stay inside
# the command functions so `coral-graph --help` is fast.
_COMMAND_MODULES = ("_run", "_store", "_view", "_bench", "_eval", "_nats")

for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(f"coral_graph.cli.{_mod}")
    except ModuleNotFoundError as _exc:  # an area not built yet
        if _exc.name != f"coral_graph.cli.{_mod}":
            raise


def _one_line_summaries() -> None:
    """In ``coral-graph --help`` each command is summed up by its docstring's first
    paragraph, which Typer's rich help prints with the docstring's own line breaks:
    give each command that paragraph as one line, for the terminal to wrap."""
    for info in app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            first = inspect.cleandoc(doc).split("\n\n")[0]
            info.short_help = " ".join(first.split())


_one_line_summaries()


def main() -> None:
    """Entry point of the ``coral-graph`` script. A reader that goes away
    (``coral-graph export last | head -c 50``) ends the command quietly."""
    try:
        app()
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(EXIT_OK)


def _quiet_stdout() -> None:
    # Python flushes stdout at exit; with the pipe gone that would print an error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
