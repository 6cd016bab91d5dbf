"""pydantic validation errors -> problems a person can act on.

Each problem names the file, line, column and field path, says what is wrong, and
how to fix it; a misspelt key or name gets a "did you mean" hint. All the problems
found are raised together as one ConfigError.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from coral_graph._errors import ConfigError, suggest
from coral_graph.config._source import Loc, Problem, Source, escape_text, format_path
from coral_graph.config._spec import AgentDef, BudgetsSpec, EdgeMap, GraphSpec, ModelSettings

__all__ = [
    "describe",
    "did_you_mean",
    "looks_secret",
    "problems_from_validation",
    "raise_problems",
    "redact",
]

_EDGE_FORMS = (
    'expected an edge: "a -> b", "a <-> b", a pair [a, b], or a mapping with from: and to:'
)

_API_KEY_HINT = (
    "put the key in an environment variable and write api_key_env: OPENAI_API_KEY "
    "(the variable's name, never the key)"
)
_SECRET_HINT = (
    "put it in an environment variable and write ${NAME} instead (values read from "
    "the environment are never echoed)"
)
_SECRET_WORDS = frozenset(
    {"token", "password", "passwd", "pwd", "secret", "authorization", "apikey", "credential"}
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "token")}
)


def looks_secret(key: str) -> bool:
    """Whether a key names a secret: its last word is one (api_key, X-Api-Key,
    access_token, password, client_secret, Authorization …); ``max_tokens``,
    ``token_count`` and ``password_file`` do not.

    >>> [looks_secret(k) for k in ("api_key", "X-Api-Key", "Authorization", "accessToken")]
    [True, True, True, True]
    >>> [looks_secret(k) for k in ("max_tokens", "token_count", "password_file")]
    [False, False, False]
    """
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", key).lower())
    if not words:
        return False
    return words[-1] in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS


def _secret_key_hint(key: str) -> str | None:
    if not looks_secret(key):
        return None
    words = re.findall(r"[a-z]+", key.lower())
    return _API_KEY_HINT if "api" in words or "apikey" in words else _SECRET_HINT


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` — did you mean "x"?`` or ``""``. Swapped letters ("modle") win over other
    near misses ("mode"), since they are the commonest typo.

    >>> did_you_mean("modle", ["mode", "model"])
    ' — did you mean "model"?'
    """
    swapped = [c for c in choices if c != name and sorted(c) == sorted(name)]
    found = swapped[0] if swapped else suggest(name, choices)
    return f' — did you mean "{found}"?' if found else ""


def describe(value: Any) -> str:
    """A short description of a YAML value for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that holds the mapping at ``loc`` of a graph file."""
    if not loc:
        return GraphSpec
    head = loc[0]
    if head == "defaults" and len(loc) == 1:
        return ModelSettings
    if head == "budgets" and len(loc) == 1:
        return BudgetsSpec
    if head == "agents" and len(loc) == 2:
        return AgentDef
    if head == "edges" and len(loc) == 2:
        return EdgeMap
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(err: Any, loc: Loc, src: Source, agent_file: bool) -> str:
    typ: str = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else ""
    if loc in src.env_refs:
        got = f'the value of "{src.env_refs[loc]}"'
    elif field == "api_key_env":
        got = "a value that is not a variable name"  # it may be the key itself: never echo it
    else:
        got = describe(value)
    if typ == "missing":
        return f'missing required key "{field}"'
    if typ == "extra_forbidden":
        model = AgentDef if agent_file and len(loc) == 1 else _model_at(loc[:-1])
        allowed = _keys_of(model) if model is not None else []
        secret_hint = _secret_key_hint(field)
        if secret_hint is not None:
            return f'unknown key "{field}": {secret_hint}'
        hint = did_you_mean(field, allowed)
        if hint:
            return f'unknown key "{field}"{hint}'
        return f'unknown key "{field}"; allowed here: {", ".join(allowed)}'
    if typ == "string_type":
        if field in ("model", "fallbacks") or (len(loc) >= 2 and loc[-2] == "fallbacks"):
            return f'expected a string like "openai/gpt-4o-mini", got {got}'
        return f"expected a string, got {got}; quote it if it is meant as text"
    if typ == "int_type":
        return f"expected a whole number, got {got}"
    if typ in ("float_type", "int_from_float"):
        return f"expected a number, got {got}"
    if typ == "finite_number":
        return f"expected a finite number, got {got}; leave the key out for no limit"
    if typ == "bool_type":
        return f"expected true or false, got {got}"
    if typ in ("dict_type", "model_type"):
        return f"expected a mapping (key: value lines), got {got}"
    if typ == "list_type":
        return f"expected a list, got {got}"
    if typ == "literal_error":
        choices = [c.strip().strip("'\"") for c in str(ctx.get("expected", "")).split(" or ")]
        choices = [c for part in choices for c in part.split(", ")]
        choices = [c.strip().strip("'\"") for c in choices if c.strip()]
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        listed = ", ".join(f'"{c}"' for c in choices)
        return f"expected one of {listed}, got {got}{hint}"
    if typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[typ]
        bound = next(iter(ctx.values())) if ctx else "?"
        if isinstance(bound, int) and not isinstance(bound, bool):
            bound = f"{bound:,}" if abs(bound) >= 10_000 else str(bound)
        elif isinstance(bound, float):
            bound = f"{bound:g}"
        return f"must be {op} {bound}, got {got}"
    if typ == "string_pattern_mismatch" and field == "api_key_env":
        return (
            "expected the NAME of the environment variable that holds the key, "
            "like OPENAI_API_KEY (letters, digits and _)"
        )
    if typ == "too_short" and loc == ("agents",):
        return "a graph needs at least one agent under agents:"
    msg: str = err.get("msg", "invalid value")
    return f"{msg[0].lower()}{msg[1:]}, got {got}" if msg else f"invalid value, got {got}"


def problems_from_validation(
    exc: ValidationError, src: Source, base: Loc = (), *, agent_file: bool = False
) -> list[Problem]:
    """Translate ``exc`` (raised validating the data at ``base`` of ``src``)."""
    out: list[Problem] = []
    seen_edges: set[int] = set()
    for err in exc.errors():
        raw_loc: Loc = tuple(err["loc"])
        loc: Loc = (*base, *raw_loc)
        # Edges are a union: collapse its branches into one message per item.
        if len(loc) >= 2 and loc[0] == "edges" and isinstance(loc[1], int) and not base:
            index = loc[1]
            item = src.data["edges"][index] if isinstance(src.data, dict) else None
            if isinstance(item, dict):
                if len(loc) < 3 or loc[2] != "EdgeMap":
                    continue
                loc = (loc[0], loc[1], *loc[3:])
                loc = tuple("from" if p == "from_" else p for p in loc)
            else:
                if index in seen_edges:
                    continue
                seen_edges.add(index)
                where = src.origin(loc[:2])
                out.append(
                    Problem(where, format_path(loc[:2]), f"{_EDGE_FORMS}; got {describe(item)}")
                )
                continue
        key = err["type"] == "extra_forbidden"
        where = src.origin(loc, key=key)
        out.append(Problem(where, format_path(loc), _message(err, loc, src, agent_file)))
    return out


def redact(text: str, secrets: dict[str, str]) -> str:
    """``text`` with every value read from the environment replaced by its
    ``${NAME}``, longest first, then escaped (see ``escape_text``)."""
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, secrets[value])
    return escape_text(text)


def raise_problems(
    problems: list[Problem], main_file: str | None, *, secrets: dict[str, str] | None = None
) -> None:
    """Raise one ConfigError listing ``problems`` (those of ``main_file`` first), if any.

    Every line is redacted (values read from the environment never appear) and
    escaped (no control or invisible character reaches a terminal) here, the one
    place every problem passes."""
    if not problems:
        return
    secrets = secrets or {}

    def key(p: Problem) -> tuple[int, str, int, int]:
        o = p.origin
        if o is None:
            return (0, "", 0, 0)
        return (0 if o.file == main_file else 1, o.file, o.line or 0, o.column or 0)

    problems = sorted(problems, key=key)
    # The same message at the same place is reported once.
    kept: dict[str, Problem] = {}
    for p in problems:
        kept.setdefault(redact(p.raw(), secrets), p)
    unique = list(kept)
    first = problems[0]
    errs = [
        ConfigError(
            line,
            path=p.origin.file if p.origin else main_file,
            line=p.origin.line if p.origin else None,
            column=p.origin.column if p.origin else None,
            field=redact(p.field, secrets) or None,
        )
        for line, p in kept.items()
    ]
    o = first.origin
    raise ConfigError(
        "\n".join(unique),
        path=o.file if o else main_file,
        line=o.line if o else None,
        column=o.column if o else None,
        field=redact(first.field, secrets) or None,
        problems=errs,
    )
