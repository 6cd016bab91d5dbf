"""``--set path=value`` overrides: applied to the parsed data before validation, each
remembered as the origin of the value it sets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from coral_graph.config._source import Origin, Problem, Source, format_path

__all__ = ["apply_overrides"]

_INDEX = re.compile(r"\[(\d+)\]")


def _parse_set_path(text: str) -> list[str | int]:
    out: list[str | int] = []
    for part in text.split("."):
        name = _INDEX.split(part)
        if name[0]:
            out.append(name[0])
        for i, piece in enumerate(name[1:]):
            if i % 2 == 0:
                out.append(int(piece))
            elif piece:
                raise ValueError(part)
    if not out or any(p == "" for p in out):
        raise ValueError(text)
    return out


def apply_overrides(src: Source, overrides: Iterable[str]) -> list[Problem]:
    """Apply ``path=value`` overrides (the value is YAML) to ``src.data`` in place."""
    problems: list[Problem] = []
    for item in overrides:
        origin = Origin(f"--set {item}")
        path_text, sep, value_text = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            path = _parse_set_path(path_text.strip())
        except ValueError:
            problems.append(
                Problem(origin, "", 'expected path=value, e.g. "agents.solver.temperature=0.2"')
            )
            continue
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        if not isinstance(src.data, dict):
            src.data = {}
        cur: Any = src.data
        ok = True
        for i, part in enumerate(path[:-1]):
            nxt_is_index = isinstance(path[i + 1], int)
            if isinstance(part, int):
                if not isinstance(cur, list) or not 0 <= part < len(cur):
                    ok = False
                    break
                cur = cur[part]
            else:
                if not isinstance(cur, dict):
                    ok = False
                    break
                if cur.get(part) is None:
                    cur[part] = [] if nxt_is_index else {}
                cur = cur[part]
        last = path[-1]
        if ok and isinstance(last, int):
            ok = isinstance(cur, list) and 0 <= last < len(cur)
            if ok:
                cur[last] = value
        elif ok:
            ok = isinstance(cur, dict)
            if ok:
                cur[last] = value
        if not ok:
            problems.append(
                Problem(origin, format_path(tuple(path)), "no such place in the graph to set")
            )
            continue
        loc = tuple(path)
        for k in [k for k in src.values if k[: len(loc)] == loc]:
            del src.values[k]
        src.env_refs.pop(loc, None)
        src.values[loc] = origin
        src.keys[loc] = origin
    return problems
