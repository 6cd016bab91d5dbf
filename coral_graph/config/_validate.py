"""Plain data -> :class:`GraphSpec`, and the checks of the agent names that edges,
``entry`` and ``answer_by`` refer to (with "did you mean" hints)."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError

from coral_graph._types import USER
from coral_graph.config._problems import (
    describe,
    did_you_mean,
    looks_secret,
    problems_from_validation,
)
from coral_graph.config._source import Loc, Origin, Problem, Source, format_path
from coral_graph.config._spec import GraphSpec

__all__ = ["check_refs", "validate_spec"]


def validate_spec(src: Source) -> tuple[GraphSpec | None, list[Problem]]:
    if src.data is None:
        return None, [
            Problem(Origin(src.file), "", "the file is empty; a graph needs at least agents:")
        ]
    if not isinstance(src.data, dict):
        return None, [
            Problem(
                src.origin(()),
                "",
                f"expected a mapping with agents:, edges:, entry: …, got {describe(src.data)}",
            )
        ]
    free = free_form_problems(src)
    try:
        spec = GraphSpec.model_validate(src.data)
    except ValidationError as exc:
        return None, problems_from_validation(exc, src) + free
    if free:
        return None, free
    spec._env_refs = dict(src.env_refs)
    return spec, []


_FREE_FORM = ("extra", "args", "metadata", "env", "tools")
"""Fields whose mappings hold any keys (``tools`` holds ``env`` mappings): the
schema cannot check them."""


def free_form_problems(src: Source, *, agent_file: bool = False) -> list[Problem]:
    """What the schema cannot see inside ``extra``, ``args``, ``metadata`` and
    ``env`` (a process agent's, or a tool server's): a
    secret written into the file under a key that names one (``api_key``, ``token``,
    ``Authorization`` … — a value from ``${NAME}`` is fine), and numbers that are
    not finite (the transcript is JSON)."""
    data = src.data if isinstance(src.data, dict) else {}
    roots: list[tuple[Loc, Any]] = []
    agents = data.get("agents")
    places: list[tuple[Loc, Any]] = [(("defaults",), data.get("defaults"))]
    if agent_file:
        places = [((), data)]
    elif isinstance(agents, dict):
        places += [(("agents", str(k)), v) for k, v in agents.items()]
    for loc, fields in places:
        if isinstance(fields, dict):
            roots += [((*loc, f), fields[f]) for f in _FREE_FORM if f in fields]
    problems: list[Problem] = []
    todo = roots
    while todo:
        loc, value = todo.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                key_loc = (*loc, str(k))
                if isinstance(v, dict | list):
                    todo.append((key_loc, v))
                elif (
                    looks_secret(str(k))
                    and v not in (None, "")
                    and not isinstance(v, bool)
                    and key_loc not in src.env_refs
                ):
                    problems.append(
                        Problem(
                            src.origin(key_loc),
                            format_path(key_loc),
                            "this looks like a secret written into the graph file; put it in "
                            'an environment variable and write "${NAME}" here (a value read '
                            "from the environment is never echoed or dumped)",
                        )
                    )
                elif isinstance(v, float) and not math.isfinite(v):
                    problems.append(_not_finite(src, key_loc, v))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, dict | list):
                    todo.append(((*loc, i), v))
                elif isinstance(v, float) and not math.isfinite(v):
                    problems.append(_not_finite(src, (*loc, i), v))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(_not_finite(src, loc, value))
    return problems


def _not_finite(src: Source, loc: Loc, value: float) -> Problem:
    return Problem(
        src.origin(loc),
        format_path(loc),
        f"expected a finite number, got {value}; transcripts are JSON, which has no {value}",
    )


def _parse_edge(item: Any) -> list[tuple[str, str, bool]] | str:
    """Edges of one item, or a message saying what is wrong with it."""
    if isinstance(item, str):
        text = item.strip()
        parts = re.split(r"\s*(<->|->|<-)\s*", text)
        if len(parts) < 3:
            return (
                f'expected an edge such as "planner -> solver" or "planner <-> critic", '
                f'got "{text}"'
            )
        out: list[tuple[str, str, bool]] = []
        for i in range(1, len(parts), 2):
            left = [n.strip() for n in parts[i - 1].split(",")]
            right = [n.strip() for n in parts[i + 1].split(",")]
            arrow = parts[i]
            if "" in left or "" in right:
                return f'an agent name is missing in "{text}"'
            for a in left:
                for b in right:
                    if arrow == "<-":
                        out.append((b, a, False))
                    else:
                        out.append((a, b, arrow == "<->"))
        return out
    if isinstance(item, list):
        if len(item) != 2:
            return f"a pair is [from, to] with exactly two names, got {len(item)}"
        return [(item[0], item[1], False)]
    if isinstance(item, dict):

        def names(v: Any) -> list[str]:
            if isinstance(v, str):
                return [v]
            return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

        srcs, dsts = names(item.get("from")), names(item.get("to"))
        return [(a, b, bool(item.get("mutual", False))) for a in srcs for b in dsts]
    return "expected an edge"


def _check_name(name: str, known: list[str], src: Source, loc: Loc, what: str) -> Problem | None:
    if name == USER:
        if what == "edge":
            return Problem(
                src.origin(loc),
                format_path(loc),
                '"user" is not an agent: user -> entry agents is implicit, and answer_by '
                "grants agent -> user; remove it from edges",
            )
        return Problem(src.origin(loc), format_path(loc), f'"user" cannot be in {what}')
    if name not in known:
        return Problem(
            src.origin(loc),
            format_path(loc),
            f'unknown agent "{name}"{did_you_mean(name, known)}',
        )
    return None


def check_refs(src: Source) -> tuple[list[tuple[str, str, bool]], list[Problem]]:
    """Check the names in edges, entry and answer_by against the agents. Works on the
    raw data, so it also runs when other parts of the file are invalid; items of the
    wrong shape are left to the schema's own messages."""
    data = src.data if isinstance(src.data, dict) else {}
    agents = data.get("agents")
    if not isinstance(agents, dict):
        return [], []
    known = [str(k) for k in agents]
    problems: list[Problem] = []
    edges: list[tuple[str, str, bool]] = []
    raw_edges = data.get("edges")
    for i, raw in enumerate(raw_edges if isinstance(raw_edges, list) else []):
        loc: Loc = ("edges", i)
        if isinstance(raw, list) and not all(isinstance(x, str) for x in raw):
            continue
        if not isinstance(raw, str | list | dict):
            continue
        parsed = _parse_edge(raw)
        if isinstance(parsed, str):
            problems.append(Problem(src.origin(loc), format_path(loc), parsed))
            continue
        ok = True
        for a, b, mutual in parsed:
            if not isinstance(a, str) or not isinstance(b, str):
                ok = False
                continue
            for n in (a, b):
                p = _check_name(n, known, src, loc, "edge")
                if p is not None:
                    problems.append(p)
                    ok = False
            if ok and a == b:
                problems.append(
                    Problem(
                        src.origin(loc),
                        format_path(loc),
                        f'"{a} -> {a}": an agent cannot address itself; remove the edge',
                    )
                )
                ok = False
            if ok:
                edges.append((a, b, mutual))
    for key in ("entry", "answer_by"):
        raw_names = data.get(key)
        items = (
            [(raw_names, (key,))]
            if isinstance(raw_names, str)
            else [
                (n, (key, i))
                for i, n in enumerate(raw_names if isinstance(raw_names, list) else [])
            ]
        )
        for n, nloc in items:
            if isinstance(n, str):
                p = _check_name(n, known, src, nloc, key)
                if p is not None:
                    problems.append(p)
    return edges, problems
