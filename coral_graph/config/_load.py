"""The pipeline: YAML -> plain data with positions -> GraphSpec -> resolved agents ->
AgentGraph, collecting every problem before raising one ConfigError."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coral_graph._agent import FunctionAgent
from coral_graph._budgets import Budgets
from coral_graph._errors import ConfigError
from coral_graph._graph import AgentGraph
from coral_graph._types import NAME_PATTERN, USER
from coral_graph.config._problems import describe, did_you_mean, problems_from_validation
from coral_graph.config._pyload import PythonRefError, load_object
from coral_graph.config._registry import RegistryEntry, find_agent, search_path
from coral_graph.config._source import Loc, Origin, Problem, Source, format_path, parse_yaml
from coral_graph.config._spec import MODEL_FIELDS, AgentDef, GraphSpec

__all__ = ["LoadedGraph", "ResolvedAgent", "build_graph", "check_graph", "load_graph", "parse_spec"]

_LLM_ONLY = (*MODEL_FIELDS, "system_prompt")
_KIND_ONLY = {"python": ("python", "args"), "human": ("prompt",)}


@dataclass(slots=True)
class ResolvedAgent:
    """An agent after ``use:``, ``defaults`` and overrides were applied.

    Attributes:
        name: the agent's name in the graph.
        kind: ``llm``, ``python`` or ``human``.
        definition: the effective fields (``use`` resolved away).
        use: the registry entry it started from, if any.
        base_dir: the folder Python references are resolved against.
    """

    name: str
    kind: str
    definition: AgentDef
    use: RegistryEntry | None = None
    base_dir: Path = field(default_factory=Path.cwd)


@dataclass(slots=True)
class LoadedGraph:
    """A graph file, loaded: the :class:`AgentGraph` plus its run settings.

    Attributes:
        graph: the agents and edges, ready for ``open_runtime``.
        spec: the file as written (``use:`` unresolved), for dumps and round trips.
        agents: each agent's resolved definition.
        entry: who receives the task.
        answer_by: who may answer (None: the entry agents).
        budgets: the limits of a run.
        task: the default task, if the file has one.
        path: the file, when loaded from one.
    """

    graph: AgentGraph
    spec: GraphSpec
    agents: dict[str, ResolvedAgent]
    entry: list[str]
    answer_by: list[str] | None
    budgets: Budgets
    task: str | None = None
    path: Path | None = None

    def run(self, task: str | None = None, **options: Any) -> Any:
        """Run ``task`` (default: the file's task) synchronously; see
        :func:`coral_graph.run`. Returns the :class:`~coral_graph.RunResult`."""
        from coral_graph._runtime import run

        text = task if task is not None else self.task
        if text is None:
            raise ConfigError("no task: pass one, or set task: in the graph file", field="task")
        options.setdefault("entry", self.entry)
        options.setdefault("answer_by", self.answer_by)
        options.setdefault("budgets", self.budgets)
        return run(self.graph, text, **options)


# -- reading ---------------------------------------------------------------------------


def _display(path: Path) -> Path:
    """``path`` relative to the working directory when it is below it (shorter
    messages), else as it is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _read(path: Path, env: Mapping[str, str]) -> tuple[Source, list[Problem]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Source(file, None), [Problem(None, "", f"{file}: no such file")]
    except (OSError, UnicodeDecodeError) as exc:
        return Source(file, None), [Problem(None, "", f"{file}: cannot read it: {exc}")]
    return parse_yaml(text, file, env)


def _raise(problems: list[Problem], main_file: str | None) -> None:
    if not problems:
        return

    def key(p: Problem) -> tuple[int, str, int, int]:
        o = p.origin
        if o is None:
            return (0, "", 0, 0)
        return (0 if o.file == main_file else 1, o.file, o.line or 0, o.column or 0)

    problems = sorted(problems, key=key)
    # The same message at the same place is reported once.
    unique = list(dict.fromkeys(str(p) for p in problems))
    first = problems[0]
    errs = [
        ConfigError(
            str(p),
            path=p.origin.file if p.origin else main_file,
            line=p.origin.line if p.origin else None,
            column=p.origin.column if p.origin else None,
            field=p.field or None,
        )
        for p in problems
    ]
    o = first.origin
    raise ConfigError(
        "\n".join(unique),
        path=o.file if o else main_file,
        line=o.line if o else None,
        column=o.column if o else None,
        field=first.field or None,
        problems=errs,
    )


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


# -- validation ------------------------------------------------------------------------


def _validate_spec(src: Source) -> tuple[GraphSpec | None, list[Problem]]:
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
    try:
        spec = GraphSpec.model_validate(src.data)
    except ValidationError as exc:
        _, ref_problems = _check_refs(src)
        return None, problems_from_validation(exc, src) + ref_problems
    spec._env_refs = dict(src.env_refs)
    return spec, []


def parse_spec(
    text: str, file: str = "<string>", env: Mapping[str, str] | None = None
) -> GraphSpec:
    """Parse and validate YAML text into a :class:`GraphSpec` (no registry lookups)."""
    src, problems = parse_yaml(text, file, os.environ if env is None else env)
    if not problems:
        spec, problems = _validate_spec(src)
        if spec is not None and not problems:
            return spec
    _raise(problems, file)
    raise AssertionError("unreachable")


class _Resolver:
    def __init__(
        self, src: Source, graph_dir: Path, env: Mapping[str, str], model: str | None
    ) -> None:
        self.src = src
        self.graph_dir = graph_dir
        self.env = env
        self.model = model
        self.problems: list[Problem] = []
        self._defs: dict[Path, tuple[AgentDef, Source] | None] = {}

    def _registry_def(self, entry: RegistryEntry) -> tuple[AgentDef, Source] | None:
        key = entry.file.resolve()
        if key in self._defs:
            return self._defs[key]
        self._defs[key] = None  # a cycle resolves to "broken" instead of recursing
        src, problems = _read(_display(entry.file), self.env)
        result: tuple[AgentDef, Source] | None = None
        if not problems:
            if not isinstance(src.data, dict):
                problems = [
                    Problem(
                        src.origin(()),
                        "",
                        f"an agent definition is a mapping (kind:, description:, …), "
                        f"got {describe(src.data)}",
                    )
                ]
            else:
                try:
                    result = (AgentDef.model_validate(src.data), src)
                except ValidationError as exc:
                    problems = problems_from_validation(exc, src, agent_file=True)
        self.problems.extend(problems)
        self._defs[key] = result
        return result

    def resolve(
        self, name: str, own: AgentDef, src: Source, loc: Loc, base_dir: Path, depth: int = 0
    ) -> tuple[dict[str, Any], Path, RegistryEntry | None] | None:
        """The effective fields of ``own`` (merged over its ``use:`` chain), the folder
        for Python references of each field, and the registry entry."""
        fields = own.model_dump(exclude_unset=True)
        use = fields.pop("use", None)
        if use is None:
            return fields, base_dir, None
        if depth > 8:
            self.problems.append(
                Problem(
                    src.origin((*loc, "use")),
                    format_path((*loc, "use")),
                    "use: chains more than 8 definitions deep; is there a cycle?",
                )
            )
            return None
        entry = find_agent(use, graph_dir=self.graph_dir, base_dir=base_dir)
        if entry is None:
            names = sorted(
                {p.name for _, d in search_path(self.graph_dir) for p in d.iterdir() if p.is_dir()}
            )
            hint = did_you_mean(use, names)
            fix = hint or (f"; known: {', '.join(names)}" if names else "")
            self.problems.append(
                Problem(
                    src.origin((*loc, "use")),
                    format_path((*loc, "use")),
                    f'unknown registry agent "{use}"{fix}'
                    + ("" if hint else " (coral-graph agents lists them)"),
                )
            )
            return None
        found = self._registry_def(entry)
        if found is None:
            return None
        base_def, base_src = found
        inner = self.resolve(name, base_def, base_src, (), entry.folder, depth + 1)
        if inner is None:
            return None
        merged, inner_dir, _ = inner
        # A `python:` set here is relative to this file; one inherited, to its own.
        py_dir = base_dir if "python" in fields else inner_dir
        merged.update(fields)
        return merged, py_dir, entry


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


def _check_refs(src: Source) -> tuple[list[tuple[str, str, bool]], list[Problem]]:
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


def _resolve_all(
    src: Source,
    spec: GraphSpec,
    *,
    graph_dir: Path,
    env: Mapping[str, str],
    model: str | None,
) -> tuple[dict[str, ResolvedAgent], list[tuple[str, str, bool]], list[Problem]]:
    res = _Resolver(src, graph_dir, env, model)
    problems = res.problems
    list(spec.agents)
    agents: dict[str, ResolvedAgent] = {}
    defaults = spec.defaults.model_dump(exclude_none=True)
    for name, own in spec.agents.items():
        loc: Loc = ("agents", name)
        if name == USER or NAME_PATTERN.match(name) is None:
            why = (
                '"user" is reserved for the caller of the run'
                if name == USER
                else "use 1-64 characters: a lowercase letter first, then lowercase letters, "
                "digits, '_' or '-'"
            )
            problems.append(
                Problem(
                    src.origin(loc, key=True),
                    format_path(loc),
                    f'invalid agent name "{name}": {why}',
                )
            )
            continue
        got = res.resolve(name, own, src, loc, graph_dir)
        if got is None:
            continue
        fields, py_dir, entry = got
        kind = fields.get("kind") or ("python" if fields.get("python") else "llm")
        fields["kind"] = kind
        where = src.origin(loc, key=True)
        for f in sorted(fields):
            if fields[f] is None:
                continue
            bad = (kind != "llm" and f in _LLM_ONLY) or any(
                f in only and kind != k for k, only in _KIND_ONLY.items()
            )
            if bad:
                owner = next((k for k, only in _KIND_ONLY.items() if f in only), "llm")
                in_graph = f in own.model_fields_set
                problems.append(
                    Problem(
                        src.origin((*loc, f), key=True) if in_graph else where,
                        format_path((*loc, f)),
                        f'"{f}" applies to {owner} agents, and this one is kind {kind}; '
                        f"remove it or set kind: {owner}",
                    )
                )
        if kind == "python" and not fields.get("python"):
            problems.append(
                Problem(
                    where,
                    format_path((*loc, "python")),
                    'a python agent needs python: "file.py:ClassName"',
                )
            )
        if kind == "llm":
            fields = {**defaults, **fields}
            if model is not None:
                fields["model"] = model
        agents[name] = ResolvedAgent(name, kind, AgentDef.model_validate(fields), entry, py_dir)
    edges, ref_problems = _check_refs(src)
    problems.extend(ref_problems)
    return agents, edges, problems


# -- building ----------------------------------------------------------------------------

LLMFactory = Callable[[ResolvedAgent], Any]


def _llm_agent(r: ResolvedAgent, client: Any) -> Any:
    try:
        from coral_graph.llm import LLMAgent
    except ImportError as exc:
        raise ConfigError(
            f"llm agents need the llm extra: pip install 'coral-graph[llm]' ({exc})"
        ) from exc
    d = r.definition
    kwargs: dict[str, Any] = {f: getattr(d, f) for f in MODEL_FIELDS if getattr(d, f) is not None}
    if "fallbacks" in kwargs:
        kwargs["fallbacks"] = tuple(kwargs["fallbacks"])
    if client is not None:
        kwargs["client"] = client
    return LLMAgent(system_prompt=d.system_prompt or "", description=d.description or "", **kwargs)


def _python_agent(r: ResolvedAgent) -> Any:
    d = r.definition
    assert d.python is not None
    obj = load_object(d.python, r.base_dir)
    args = d.args or {}
    if inspect.isclass(obj):
        try:
            return obj(**args)
        except TypeError as exc:
            raise PythonRefError(f"{d.python}: cannot create it with args {args}: {exc}") from exc
    if inspect.iscoroutinefunction(obj) or isinstance(obj, FunctionAgent) or hasattr(obj, "handle"):
        if args:
            raise PythonRefError(f"{d.python} is not a class or factory: remove args:")
        return obj
    if callable(obj):
        try:
            return obj(**args)
        except Exception as exc:
            raise PythonRefError(f"{d.python}(**args) failed: {type(exc).__name__}: {exc}") from exc
    raise PythonRefError(f"{d.python} is not an agent class, an async function or a factory")


class _Unbuilt:
    """Stands in for an LLM agent when a graph is only checked (no model library)."""

    kind = "llm"

    async def handle(self, ctx: Any, message: Any) -> None:
        raise ConfigError("this graph was only checked; load it with load_graph() to run it")


def _build(
    src: Source,
    spec: GraphSpec,
    *,
    graph_dir: Path,
    env: Mapping[str, str],
    model: str | None,
    llm_client: Any,
    build_llm: bool,
    path: Path | None,
) -> LoadedGraph:
    agents, edges, problems = _resolve_all(src, spec, graph_dir=graph_dir, env=env, model=model)
    entry = list(spec.entry) if spec.entry else list(spec.agents)[:1]
    graph = AgentGraph(
        spec.name, description=spec.description, entry=entry, answer_by=spec.answer_by
    )
    if not problems:
        for name, r in agents.items():
            d = r.definition
            loc: Loc = ("agents", name)
            try:
                if r.kind == "python":
                    obj = _python_agent(r)
                elif r.kind == "human":
                    from coral_graph.config._human import HumanAgent

                    obj = HumanAgent(
                        d.prompt or "", description=d.description or "a person at the terminal"
                    )
                elif build_llm:
                    obj = _llm_agent(r, llm_client)
                else:
                    obj = _Unbuilt()
                graph.add_agent(
                    name,
                    obj,
                    description=d.description,
                    on_error=d.on_error or "continue",
                    turn_timeout_s=d.turn_timeout_s,
                    max_restarts=3 if d.max_restarts is None else d.max_restarts,
                    kind=r.kind,
                    metadata=d.metadata,
                )
            except PythonRefError as exc:
                ploc = (*loc, "python")
                origin = (
                    src.origin(ploc)
                    if "python" in spec.agents[name].model_fields_set or r.use is None
                    else Origin(str(r.use.file))
                )
                problems.append(Problem(origin, format_path(ploc), str(exc)))
            except ConfigError as exc:
                problems.append(Problem(src.origin(loc, key=True), format_path(loc), exc.message))
        if not problems:
            for a, b, mutual in edges:
                graph.connect(a, b, mutual=mutual)
    _raise(problems, src.file)
    data = spec.budgets.model_dump(exclude_none=True)
    return LoadedGraph(
        graph=graph,
        spec=spec,
        agents=agents,
        entry=entry,
        answer_by=list(spec.answer_by) if spec.answer_by is not None else None,
        budgets=Budgets(**data),
        task=spec.task,
        path=path,
    )


def load_graph(
    path: str | os.PathLike[str],
    *,
    overrides: Iterable[str] = (),
    model: str | None = None,
    env: Mapping[str, str] | None = None,
    llm_client: Any = None,
    _build_llm: bool = True,
) -> LoadedGraph:
    """Load a graph file.

    Args:
        path: the YAML file.
        overrides: ``path=value`` settings applied before validation, e.g.
            ``"agents.solver.temperature=0.2"`` (the value is read as YAML).
        model: run every LLM agent on this model.
        env: the variables ``${NAME}`` reads (default: ``os.environ``).
        llm_client: passed as ``client=`` to every :class:`~coral_graph.LLMAgent`
            (a scripted model in tests).

    Raises:
        ConfigError: with every problem found in ``.problems``; each names the file,
            line, column and field.
    """
    p = Path(path)
    environ = os.environ if env is None else env
    src, problems = _read(p, environ)
    if not problems:
        problems = apply_overrides(src, overrides)
    spec = None
    if not problems:
        spec, problems = _validate_spec(src)
    _raise(problems, src.file)
    assert spec is not None
    return _build(
        src,
        spec,
        graph_dir=p.parent,
        env=environ,
        model=model,
        llm_client=llm_client,
        build_llm=_build_llm,
        path=p,
    )


def check_graph(path: str | os.PathLike[str], **options: Any) -> LoadedGraph:
    """Like :func:`load_graph`, but LLM agents are only checked, not created (no model
    library is imported). The graph of the result lacks them."""
    return load_graph(path, _build_llm=False, **options)


def build_graph(
    spec: GraphSpec,
    *,
    base_dir: str | os.PathLike[str] = ".",
    model: str | None = None,
    llm_client: Any = None,
) -> LoadedGraph:
    """Build a :class:`LoadedGraph` from a spec made in Python (``python:`` references
    and ``use:`` paths resolve against ``base_dir``)."""
    src = Source("<spec>", spec.to_data(reveal=True))
    return _build(
        src,
        spec,
        graph_dir=Path(base_dir),
        env=os.environ,
        model=model,
        llm_client=llm_client,
        build_llm=True,
        path=None,
    )
