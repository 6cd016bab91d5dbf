"""Safe text for the terminal: the one place where text from a run is made printable.

A run's messages, answers, errors, agent and thread names come from models, tools
and other people's code. Printed raw, a message could clear the screen (``ESC[2J``),
retitle the window (``ESC]0;…``), write the clipboard (``ESC]52;c;…``), hide text
(``ESC[8m``), overwrite the line before it (``\\r``) or reorder what is shown (the
bidi overrides U+202A to U+202E, U+2066 to U+2069). :func:`safe` neutralises every such
character by showing it as a visible escape (``\\x1b``, ``\\u202e``), keeping
newlines and tabs. Every command prints text from a run through it (and through
:func:`safe_markup` where the text goes into Rich markup).

>>> safe("ok\\x1b]0;pwned\\x07 done")
'ok\\\\x1b]0;pwned\\\\x07 done'
>>> safe("line 1\\r\\nline 2\\tend")
'line 1\\nline 2\\tend'
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from typing import Any

__all__ = ["UNSAFE", "columns", "json_text", "one_line", "safe", "safe_markup"]

UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""The characters :func:`safe` rewrites: C0 controls except tab and newline, DEL,
C1 controls, the bidi marks, embeddings, overrides and isolates, and the Unicode
line and paragraph separators."""


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text: object) -> str:
    """``text`` as a string with every control character except ``\\n`` and ``\\t``
    (and every bidi control) shown as a visible escape; ``\\r\\n`` becomes ``\\n``."""
    s = text if isinstance(text, str) else str(text)
    if UNSAFE.search(s) is None:
        return s
    return UNSAFE.sub(_escape, s.replace("\r\n", "\n"))


def safe_markup(text: object) -> str:
    """:func:`safe`, then escaped for Rich markup (``[red]`` in a message stays text)."""
    from rich.markup import escape

    return escape(safe(text))


def _json_escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def json_text(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as JSON that is valid (the store's one encoding: a non-finite float is
    the string ``"NaN"``/``"Infinity"``) and safe to print: every character
    :func:`safe` would rewrite is a ``\\uXXXX`` escape, so a terminal never sees it
    raw, and a JSON parser reads the same text back."""
    from coral_graph.store._json import dumps

    return UNSAFE.sub(_json_escape, dumps(obj, ensure_ascii=False, indent=indent))


def one_line(text: object, width: int | None = None) -> str:
    """:func:`safe` on one line (runs of whitespace become one space), cut to ``width``
    characters with ``…`` when given."""
    s = " ".join(safe(text).split())
    if width is not None and len(s) > width:
        s = s[: max(0, width - 1)] + "…"
    return s


def columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[str] = (),
    fit: bool = False,
) -> list[str]:
    """Rows as aligned text columns separated by two spaces: stable for scripts (the
    same columns whatever the terminal), never cutting a cell except the last one,
    which is cut to the terminal's width when ``fit`` (a terminal) is set. Columns
    named in ``right`` are right-aligned. Cells must already be :func:`safe`."""
    table = [list(header), *(list(r) for r in rows)]
    n = len(header)
    widths = [max(len(r[i]) for r in table) for i in range(n - 1)]
    out = []
    for r in table:
        cells = []
        for i in range(n - 1):
            cell = r[i]
            pad = widths[i] - len(cell)
            cells.append(" " * pad + cell if header[i] in right else cell + " " * pad)
        line = "  ".join([*cells, r[n - 1]]) if n > 1 else r[0]
        out.append(line.rstrip())
    if fit and n > 1:
        # Only the last column gives way: the others (ids first) are never cut.
        fixed = sum(widths) + 2 * (n - 1)
        width = max(shutil.get_terminal_size((120, 24)).columns, fixed + 12)
        out = [line if len(line) <= width else line[: width - 1] + "…" for line in out]
    return out
