"""YAML text -> plain data, remembering where every value came from.

PyYAML's ``SafeLoader`` composes the node tree (which carries line and column
marks); we construct the plain values ourselves so that each value keeps its
position, duplicate keys are errors, and ``${ENV_VAR}`` references are resolved
while the original reference is remembered (dumps and error messages show the
reference, never the value). ``read_source`` does the same for a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Loc", "Origin", "Problem", "Source", "format_path", "parse_yaml", "read_source"]

Loc = tuple[str | int, ...]
"""A path into the data: ``("agents", "planner", "model")`` or ``("edges", 3)``."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value was written: a file (or ``--set …``) and a 1-based line/column."""

    file: str
    line: int | None = None
    column: int | None = None

    def prefix(self) -> str:
        if self.line is None:
            return f"{self.file}: "
        return f"{self.file}:{self.line}:{self.column}: "


@dataclass(slots=True)
class Problem:
    """One thing wrong with a graph definition."""

    origin: Origin | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.origin.prefix() if self.origin is not None else ""
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{fld}{self.message}"


def format_path(loc: Loc) -> str:
    """``("edges", 3, "to")`` -> ``edges[3].to``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(slots=True)
class Source:
    """Plain data from one YAML file plus the position of every value and key."""

    file: str
    data: Any
    values: dict[Loc, Origin] = field(default_factory=dict)
    keys: dict[Loc, Origin] = field(default_factory=dict)
    env_refs: dict[Loc, str] = field(default_factory=dict)
    """Paths whose value came from ``${…}`` interpolation -> the text as written."""

    def origin(self, loc: Loc, *, key: bool = False) -> Origin:
        """The origin of ``loc``; for a missing value, of its nearest ancestor."""
        if key and loc in self.keys:
            return self.keys[loc]
        probe = loc
        while True:
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return Origin(self.file)
            probe = probe[:-1]


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}?")


def _mark(file: str, mark: Any) -> Origin:
    return Origin(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader, env: Mapping[str, str]) -> None:
        self.src = Source(file, None)
        self.loader = loader
        self.env = env
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        origin = _mark(self.src.file, node.start_mark)
        self.src.values[loc] = origin
        if isinstance(node, yaml.MappingNode):
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)  # `<<: *anchor` merge keys come first
            merged = len(node.value) - own
            out: dict[str, Any] = {}
            own_keys: set[str] = set()
            for index, (knode, vnode) in enumerate(node.value):
                key = self.loader.construct_object(knode, deep=True)
                korigin = _mark(self.src.file, knode.start_mark)
                if not isinstance(key, str | int | float | bool) or isinstance(key, bool):
                    self.problems.append(
                        Problem(korigin, format_path(loc), f"keys must be plain names, not {key!r}")
                    )
                    continue
                key = str(key)
                if index >= merged and key in own_keys:
                    first = self.src.keys[(*loc, key)]
                    self.problems.append(
                        Problem(
                            korigin,
                            format_path((*loc, key)),
                            f'duplicate key "{key}" (first set on line {first.line}); '
                            "keep one of them",
                        )
                    )
                    continue
                if index >= merged:
                    own_keys.add(key)
                self.src.keys[(*loc, key)] = korigin
                out[key] = self.build(vnode, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            value = self.interpolate(value, loc, origin)
        return value

    def interpolate(self, text: str, loc: Loc, origin: Origin) -> str:
        used = False

        def sub(m: re.Match[str]) -> str:
            nonlocal used
            if m.group(0) == "$$":
                return "$"
            name, default, bad = m.group(1), m.group(2), m.group(3)
            if name is None:
                self.problems.append(
                    Problem(
                        origin,
                        format_path(loc),
                        f'bad reference "{m.group(0)}": write ${{NAME}} or ${{NAME:-default}} '
                        "with NAME made of letters, digits and _ (write $$ for a literal $)"
                        if bad is not None
                        else "bad reference",
                    )
                )
                return ""
            used = True
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problems.append(
                        Problem(
                            origin,
                            format_path(loc),
                            f"environment variable {name} is not set; export it or write "
                            f"${{{name}:-default}}",
                        )
                    )
                    return ""
                return default
            return value

        out = _ENV.sub(sub, text)
        if used:
            self.src.env_refs[loc] = text
        return out


def parse_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Source, list[Problem]]:
    """Parse ``text`` safely; return the source (data and positions) and any problems.

    >>> src, problems = parse_yaml("a:\\n  b: [1, 2]\\n", "g.yaml", {})
    >>> src.data, src.values[("a", "b", 1)].prefix(), problems
    ({'a': {'b': [1, 2]}}, 'g.yaml:2:10: ', [])
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            origin = _mark(file, mark) if mark is not None else Origin(file)
            what = exc.problem or exc.context or "invalid YAML"
            ctx = f" ({exc.context})" if exc.context and exc.problem else ""
            return Source(file, None), [
                Problem(origin, "", f"invalid YAML: {what}{ctx}; fix the syntax at this position")
            ]
        except yaml.YAMLError as exc:  # reader errors (bad characters) carry no mark type
            return Source(file, None), [Problem(Origin(file), "", f"invalid YAML: {exc}")]
        if node is None:
            return Source(file, None), []
        builder = _Builder(file, loader, env)
        try:
            builder.src.data = builder.build(node, ())
        except yaml.MarkedYAMLError as exc:  # e.g. a bad !!tag
            mark = exc.problem_mark or exc.context_mark
            origin = _mark(file, mark) if mark is not None else Origin(file)
            return Source(file, None), [
                Problem(origin, "", f"invalid YAML: {exc.problem or exc.context}")
            ]
        return builder.src, builder.problems
    finally:
        loader.dispose()


def read_source(path: Path, env: Mapping[str, str]) -> tuple[Source, list[Problem]]:
    """Read and parse the YAML file at ``path``; a missing or unreadable file is a problem."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Source(file, None), [Problem(None, "", f"{file}: no such file")]
    except (OSError, UnicodeDecodeError) as exc:
        return Source(file, None), [Problem(None, "", f"{file}: cannot read it: {exc}")]
    return parse_yaml(text, file, env)
