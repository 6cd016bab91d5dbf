"""``--set path=value`` overrides: applied to the parsed data before validation, each
remembered as the origin of the value it sets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from coral_graph.config._problems import did_you_mean
from coral_graph.config._source import MAX_DEPTH, Origin, Problem, Source, format_path, load_value

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


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _unknown_agent(src: Source, path: list[str | int]) -> str | None:
    """A message when ``path`` reaches into an agent the graph does not have: a
    typo there must not create a new, unconnected agent. (``agents.NAME=…`` with
    the whole definition still adds one.)"""
    if len(path) < 3 or path[0] != "agents" or not isinstance(src.data, dict):
        return None
    agents = src.data.get("agents")
    known = [str(k) for k in agents] if isinstance(agents, dict) else []
    name = path[1]
    if name in known:
        return None
    listed = ", ".join(known) if known else "none"
    return (
        f'unknown agent "{name}"{did_you_mean(str(name), known)} (the agents: {listed}); '
        f'to add an agent, set it whole: --set "agents.{name}={{use: solver}}"'
    )


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
        value: Any = ""
        if value_text.strip():
            value, problem = load_value(value_text, origin)
            if problem is not None:
                problems.append(problem)
                continue
        if len(path) + _depth(value) > MAX_DEPTH:
            problems.append(
                Problem(origin, "", f"nested more than {MAX_DEPTH} levels deep; set less at once")
            )
            continue
        unknown = _unknown_agent(src, path)
        if unknown is not None:
            problems.append(Problem(origin, format_path(tuple(path)), unknown))
            continue
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
