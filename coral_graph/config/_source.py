"""YAML text -> plain data, remembering where every value came from.

PyYAML's ``SafeLoader`` composes the node tree (which carries line and column
marks); we construct the plain values ourselves so that each value keeps its
position, duplicate keys are errors, and ``${ENV_VAR}`` references are resolved
while the original reference is remembered (dumps and error messages show the
reference, never the value). ``read_source`` does the same for a file.

Hostile input is capped before it costs time or memory, each cap with a clear
problem instead of a traceback: the file size (:func:`max_yaml_bytes`, 1 MiB unless
``$CORAL_MAX_YAML_BYTES`` says otherwise), the nesting depth (:data:`MAX_DEPTH`
levels, aliases included), the number of values after aliases are expanded
(:data:`MAX_VALUES`: an "alias bomb" stops there), recursive aliases, and
characters YAML does not allow. Numbers follow YAML 1.2 as well as 1.1:
``1e3``, ``1e308`` and ``.5`` are numbers, not strings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "Loc",
    "Origin",
    "Problem",
    "Source",
    "escape_text",
    "format_path",
    "load_value",
    "max_yaml_bytes",
    "parse_yaml",
    "read_source",
]

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a graph file may have (aliases expanded)."""
MAX_VALUES = 200_000
"""Most values a graph file may hold once its aliases are expanded."""
DEFAULT_MAX_BYTES = 1 << 20
MAX_BYTES_ENV = "CORAL_MAX_YAML_BYTES"


def max_yaml_bytes() -> int:
    """The largest graph file read: ``$CORAL_MAX_YAML_BYTES`` or 1 MiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_BYTES


def _escape_char(c: str) -> str:
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == "\r":
        return "\\r"
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def escape_text(text: str) -> str:
    """``text`` with every character Python does not call printable (control,
    format — invisible, bidi —, separator other than the space, private, unassigned)
    written as an escape, so that a name from a file can never split or rewrite the
    line that shows it.

    >>> print(escape_text("ev\\u202eil\\nname"))
    ev\\u202eil\\nname
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


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
        if self.column is None:
            return f"{self.file}:{self.line}: "
        return f"{self.file}:{self.line}:{self.column}: "


@dataclass(slots=True)
class Problem:
    """One thing wrong with a graph definition."""

    origin: Origin | None
    field: str
    message: str

    def raw(self) -> str:
        """The line as built, before escaping (see :func:`escape_text`)."""
        where = self.origin.prefix() if self.origin is not None else ""
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{fld}{self.message}"

    def __str__(self) -> str:
        return escape_text(self.raw())


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
    secrets: dict[str, str] = field(default_factory=dict)
    """Values read from the environment -> ``${NAME}``: redacted in every message."""

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


class _Limit(yaml.MarkedYAMLError):
    """A cap of this module was hit; the problem says which and what to do."""


def _libyaml_base() -> type[Any]:
    """The safe loader's pieces on libyaml's scanner and parser (5x faster on large
    files) with PyYAML's own composer (which this module needs to hook into), or the
    pure-Python safe loader where PyYAML was built without libyaml."""
    try:
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover - PyYAML wheels ship libyaml
        return yaml.SafeLoader
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class _CSafe(CParser, SafeConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.anchors: dict[str, yaml.Node] = {}

        # CParser composes in C; take PyYAML's composer so that compose_node can be
        # hooked (the nesting limit below) and aliases stay shared nodes.
        get_single_node = Composer.get_single_node
        compose_document = Composer.compose_document
        compose_node = Composer.compose_node
        compose_scalar_node = Composer.compose_scalar_node
        compose_sequence_node = Composer.compose_sequence_node
        compose_mapping_node = Composer.compose_mapping_node

    return _CSafe


class _Loader(_libyaml_base()):  # type: ignore[misc]
    """The safe loader, with a nesting limit checked while composing (the composer
    recurses: 900 levels would end in a RecursionError)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Limit(problem=_too_deep(), problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.2 floats (1e3, 1.5E-3, .5e2); the 1.1 rule wants a dot and a signed exponent.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _too_deep() -> str:
    return (
        f"nested more than {MAX_DEPTH} levels deep (aliases included); "
        "a graph file needs far fewer: flatten it"
    )


def _check_shape(root: yaml.Node) -> tuple[yaml.Node, str] | None:
    """Measure the document as it will be built, aliases expanded, without building
    it: (node, problem) for the first cap it breaks, or None."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values, height)
    active: set[int] = set()

    class Stop(Exception):
        pass

    found: list[tuple[yaml.Node, str]] = []

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            found.append((node, "an alias refers to a node that contains it; remove the alias"))
            raise Stop
        got = sizes.get(key)
        if got is None:
            if depth > MAX_DEPTH:
                found.append((node, _too_deep()))
                raise Stop
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            active.add(key)
            total, height = 1, 0
            for child in children:
                n, h = measure(child, depth + 1)
                total += n
                height = max(height, h)
                if total > MAX_VALUES:
                    found.append(
                        (
                            node,
                            f"more than {MAX_VALUES:,} values once aliases are expanded "
                            "(anchors and aliases repeat parts of the file); write out what "
                            "is meant, with fewer aliases",
                        )
                    )
                    raise Stop
            active.discard(key)
            got = sizes[key] = (total, height + 1)
        if depth + got[1] - 1 > MAX_DEPTH:
            found.append((node, _too_deep()))
            raise Stop
        return got

    try:
        measure(root, 1)
    except Stop:
        return found[0]
    return None


class _Builder:
    def __init__(
        self, file: str, loader: yaml.SafeLoader, env: Mapping[str, str], *, interpolate: bool
    ) -> None:
        self.src = Source(file, None)
        self.loader = loader
        self.env = env
        self.interpolating = interpolate
        self.problems: list[Problem] = []
        self._merged: dict[int, int] = {}  # a mapping node (shared by aliases) -> merged pairs

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        origin = _mark(self.src.file, node.start_mark)
        self.src.values[loc] = origin
        if isinstance(node, yaml.MappingNode):
            merged = self._merged.get(id(node))
            if merged is None:
                own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
                self.loader.flatten_mapping(node)  # `<<: *anchor` merge keys come first
                merged = self._merged[id(node)] = len(node.value) - own
            out: dict[str, Any] = {}
            own_keys: set[str] = set()
            for index, (knode, vnode) in enumerate(node.value):
                korigin = _mark(self.src.file, knode.start_mark)
                if not isinstance(knode, yaml.ScalarNode):
                    self.problems.append(
                        Problem(
                            korigin,
                            format_path(loc),
                            "keys must be plain names, not a "
                            + ("list" if isinstance(knode, yaml.SequenceNode) else "mapping"),
                        )
                    )
                    continue
                key = self.scalar(knode, korigin, loc)
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
        value = self.scalar(node, origin, loc)
        if self.interpolating and isinstance(value, str) and "$" in value:
            value = self.interpolate(value, loc, origin)
        return value

    def scalar(self, node: yaml.Node, origin: Origin, loc: Loc) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except Exception as exc:  # e.g. !!int "x", or an integer of 5000 digits
            self.problems.append(
                Problem(
                    origin,
                    format_path(loc),
                    f"cannot read this value as {node.tag.rsplit(':', 1)[-1]} "
                    f"({type(exc).__name__}); quote it or fix its tag",
                )
            )
            return None

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
            if value is not None and len(value) >= _SECRET_MIN:
                self.src.secrets[value] = f"${{{name}}}"
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


_SECRET_MIN = 4
"""Shorter values from the environment are not redacted from messages (a "1" would
hide line numbers, and is no secret)."""

_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


def _bad_character(text: str, file: str) -> Problem | None:
    m = _NON_PRINTABLE.search(text)
    if m is None:
        return None
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return Problem(
        Origin(file, line, column),
        "",
        f"the character {_escape_char(m.group())} is not allowed in YAML; remove it "
        '(inside a double-quoted string, write it as an escape such as "\\t")',
    )


def _too_big(size: int, file: str) -> Problem | None:
    limit = max_yaml_bytes()
    if size <= limit:
        return None
    return Problem(
        Origin(file),
        "",
        f"the file is {size:,} bytes, more than the {limit:,} a graph file may have; "
        f"split it, or raise the limit with {MAX_BYTES_ENV}=<bytes>",
    )


def _is_cap(exc: yaml.MarkedYAMLError) -> bool:
    """A limit was hit (ours, or libyaml's own nesting limit of 1000 levels, met
    before ours when that many brackets open in a row), not a syntax error."""
    return isinstance(exc, _Limit) or exc.problem == "exceeded maximum nesting depth"


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    origin = _mark(file, mark) if mark is not None else Origin(file)
    if _is_cap(exc):
        return Problem(origin, "", str(exc.problem) if isinstance(exc, _Limit) else _too_deep())
    what = exc.problem or exc.context or "invalid YAML"
    ctx = f" ({exc.context})" if exc.context and exc.problem else ""
    return Problem(origin, "", f"invalid YAML: {what}{ctx}; fix the syntax at this position")


def load_value(text: str, origin: Origin) -> tuple[Any, Problem | None]:
    """One YAML value (of a ``--set``) under the caps of a file: (value, None) or
    (None, problem). Text that is not valid YAML is the value itself."""
    first = _too_big(len(text.encode("utf-8", "surrogatepass")), origin.file) or _bad_character(
        text, origin.file
    )
    if first is not None:
        return None, Problem(origin, "", first.message)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            if _is_cap(exc):
                return None, Problem(origin, "", _syntax_problem(exc, origin.file).message)
            return text, None
        except yaml.YAMLError:
            return text, None
        if node is None:
            return None, None
        broken = _check_shape(node)
        if broken is not None:
            return None, Problem(origin, "", broken[1])
        builder = _Builder(origin.file, loader, {}, interpolate=False)
        try:
            value = builder.build(node, ())
        except yaml.YAMLError:
            return text, None
        if builder.problems:
            return None, Problem(origin, "", builder.problems[0].message)
        return value, None
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Source, list[Problem]]:
    """Parse ``text`` safely; return the source (data and positions) and any problems.

    >>> src, problems = parse_yaml("a:\\n  b: [1, 2]\\n", "g.yaml", {})
    >>> src.data, src.values[("a", "b", 1)].prefix(), problems
    ({'a': {'b': [1, 2]}}, 'g.yaml:2:10: ', [])
    """
    first = _too_big(len(text.encode("utf-8", "surrogatepass")), file) or _bad_character(text, file)
    if first is not None:
        return Source(file, None), [first]
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return Source(file, None), [_syntax_problem(exc, file)]
        except yaml.YAMLError as exc:  # reader errors (bad characters) carry no mark type
            return Source(file, None), [Problem(Origin(file), "", f"invalid YAML: {exc}")]
        if node is None:
            return Source(file, None), []
        broken = _check_shape(node)
        if broken is not None:
            return Source(file, None), [Problem(_mark(file, broken[0].start_mark), "", broken[1])]
        builder = _Builder(file, loader, env, interpolate=True)
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
        with path.open("rb") as f:
            limit = max_yaml_bytes()
            data = f.read(limit + 1)
    except FileNotFoundError:
        return Source(file, None), [Problem(None, "", f"{file}: no such file")]
    except IsADirectoryError:
        return Source(file, None), [Problem(None, "", f"{file}: is a folder, not a YAML file")]
    except OSError as exc:
        return Source(file, None), [
            Problem(None, "", f"{file}: cannot read it: {exc.strerror or exc}")
        ]
    if len(data) > limit:
        size = path.stat().st_size
        return Source(file, None), [_too_big(max(size, len(data)), file) or Problem(None, "", "")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Source(file, None), [
            Problem(
                Origin(file, line),
                "",
                f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "save the file as UTF-8",
            )
        ]
    return parse_yaml(text, file, env)
