"""Resolved agents -> a runnable :class:`LoadedGraph`: Python, human and LLM agents
created and connected along the edges."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_graph._agent import FunctionAgent
from coral_graph._budgets import Budgets
from coral_graph._errors import ConfigError
from coral_graph._graph import AgentGraph
from coral_graph.config._problems import raise_problems
from coral_graph.config._pyload import (
    PythonRefError,
    StaticRef,
    check_ref,
    load_object,
    reraise_if_fatal,
)
from coral_graph.config._resolve import ResolvedAgent, resolve_all
from coral_graph.config._source import Loc, Problem, Source, format_path
from coral_graph.config._spec import MODEL_FIELDS, AgentDef, GraphSpec, ModelSettings

__all__ = ["LoadedGraph", "build_loaded"]


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
        warnings: things that load but look like mistakes (an agent no edge
            reaches), one line each with file:line:column.
    """

    graph: AgentGraph
    spec: GraphSpec
    agents: dict[str, ResolvedAgent]
    entry: list[str]
    answer_by: list[str] | None
    budgets: Budgets
    task: str | None = None
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

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
    if d.tools:
        from coral_graph.mcp._client import MCPServer

        try:
            kwargs["tools"] = [
                MCPServer.of(t.model_dump(exclude_none=True), base_dir=r.base_dir) for t in d.tools
            ]
        except ValueError as exc:
            raise ConfigError(str(exc), field=f"agents.{r.name}.tools") from exc
        kwargs["max_tool_calls"] = d.max_tool_calls
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
        except BaseException as exc:
            reraise_if_fatal(exc)
            raise PythonRefError(f"{d.python}(**args) failed: {type(exc).__name__}: {exc}") from exc
    if inspect.iscoroutinefunction(obj) or isinstance(obj, FunctionAgent) or hasattr(obj, "handle"):
        if args:
            raise PythonRefError(f"{d.python} is not a class or factory: remove args:")
        return obj
    if callable(obj):
        try:
            return obj(**args)
        except BaseException as exc:
            reraise_if_fatal(exc)
            raise PythonRefError(f"{d.python}(**args) failed: {type(exc).__name__}: {exc}") from exc
    raise PythonRefError(f"{d.python} is not an agent class, an async function or a factory")


def _mcp_agent(r: ResolvedAgent, hub: Any, cmd_dir: Path) -> Any:
    try:
        from coral_graph.mcp import ExternalAgent, ProcessAgent
    except ImportError as exc:  # pragma: no cover - the package itself is stdlib + anyio
        raise ConfigError(
            f"{r.kind} agents need the mcp extra: pip install 'coral-graph[mcp]'"
        ) from exc
    d = r.definition
    timeout = d.connect_timeout_s if d.connect_timeout_s is not None else 30.0
    if r.kind == "external":
        return ExternalAgent(d.description or "", hub=hub, connect_timeout_s=timeout)
    assert d.command is not None
    return ProcessAgent(
        d.command,
        d.description or "",
        env=d.env,
        cwd=(cmd_dir / d.cwd) if d.cwd else cmd_dir,
        system_prompt=d.system_prompt,
        hub=hub,
        connect_timeout_s=timeout,
    )


class _Unbuilt:
    """Stands in for an agent when a graph is only checked: no model library is
    imported and no Python agent's code runs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def handle(self, ctx: Any, message: Any) -> None:
        raise ConfigError("this graph was only checked; load it with load_graph() to run it")


def _check_python(
    src: Source, agents: dict[str, ResolvedAgent]
) -> tuple[dict[str, StaticRef], list[Problem]]:
    """Check every ``python:`` reference statically (nothing is imported)."""
    found: dict[str, StaticRef] = {}
    problems: list[Problem] = []
    for name, r in agents.items():
        ref = r.definition.python
        if r.kind != "python" or not ref:
            continue
        try:
            found[name] = check_ref(ref, r.base_dir)
        except PythonRefError as exc:
            problems.append(_python_problem(src, r, str(exc)))
    return found, problems


def _python_problem(src: Source, r: ResolvedAgent, message: str) -> Problem:
    """A problem of an agent's ``python:`` reference, placed where it was written
    (the graph file, or the registry definition it came from)."""
    ploc: Loc = ("agents", r.name, "python")
    origin = r.python_origin or src.origin(ploc)
    field = format_path(ploc) if origin.file == src.file else "python"
    return Problem(origin, field, message)


def _unreached(
    src: Source, agents: Mapping[str, object], entry: list[str], edges: list[tuple[str, str, bool]]
) -> list[str]:
    """Warnings for the agents no path of edges from the entry agents reaches: they
    can never receive a message."""
    nxt: dict[str, list[str]] = {}
    for a, b, mutual in edges:
        nxt.setdefault(a, []).append(b)
        if mutual:
            nxt.setdefault(b, []).append(a)
    seen = {e for e in entry if e in agents}
    todo = list(seen)
    while todo:
        for b in nxt.get(todo.pop(), []):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    out = []
    starts = ", ".join(entry)
    for name in agents:
        if name in seen:
            continue
        loc: Loc = ("agents", name)
        p = Problem(
            src.origin(loc, key=True),
            format_path(loc),
            f'warning: no edge from the entry agents ({starts}) reaches "{name}", so it can '
            f'never receive a message; add an edge such as "{entry[0] if entry else "a"} -> '
            f'{name}", make it an entry agent, or remove it',
        )
        out.append(str(p))
    return out


def build_loaded(
    src: Source,
    spec: GraphSpec | None,
    *,
    graph_dir: Path,
    env: Mapping[str, str],
    model: str | None,
    llm_client: Any,
    build_llm: bool,
    path: Path | None,
    problems: list[Problem] | None = None,
) -> LoadedGraph:
    """Resolve, check and (when no problem was found) build the graph.

    ``spec`` is None when the file did not validate: the agents that are valid on
    their own are still resolved and checked, so that every problem of the file is
    reported in one pass (``problems`` holds those found before).
    """
    problems = list(problems or [])
    if spec is not None:
        spec_agents: dict[str, AgentDef] = dict(spec.agents)
        defaults = spec.defaults
    else:
        spec_agents, defaults = _valid_parts(src)
    agents, edges, more, secrets = resolve_all(
        src, spec_agents, defaults, graph_dir=graph_dir, env=env, model=model
    )
    problems += more
    static, more = _check_python(src, agents)
    problems += more
    secrets = {**src.secrets, **secrets}
    if problems or spec is None:
        raise_problems(problems, src.file, secrets=secrets)
    assert spec is not None
    entry = list(spec.entry) if spec.entry else list(spec.agents)[:1]
    graph = AgentGraph(
        spec.name, description=spec.description, entry=entry, answer_by=spec.answer_by
    )
    hub: Any = None
    for name, r in agents.items():
        d = r.definition
        loc: Loc = ("agents", name)
        description = d.description
        try:
            if r.kind == "python":
                if build_llm:
                    obj = _python_agent(r)
                else:
                    obj = _Unbuilt("python")
                    description = description or static[name].doc
            elif r.kind in ("process", "external") and not build_llm:
                obj = _Unbuilt(r.kind)  # checked only: no endpoint, no process
                description = description or ""
            elif r.kind in ("process", "external"):
                if hub is None:
                    from coral_graph.mcp import MCPHub

                    hub = MCPHub()  # one endpoint server for the graph's MCP agents
                own = spec_agents[name].model_fields_set
                cmd_dir = graph_dir if ("command" in own or r.use is None) else r.use.folder
                obj = _mcp_agent(r, hub, cmd_dir)
            elif r.kind == "human":
                from coral_graph.config._human import HumanAgent

                obj = HumanAgent(
                    d.prompt or "", description=d.description or "a person at the terminal"
                )
            elif build_llm:
                obj = _llm_agent(r, llm_client)
            else:
                obj = _Unbuilt("llm")
                description = description or ""
            graph.add_agent(
                name,
                obj,
                description=description,
                # An MCP agent that fails (never connects, its process dies) stops the
                # run by default: the others would wait for it in vain.
                on_error=d.on_error
                or ("stop" if r.kind in ("process", "external") else "continue"),
                turn_timeout_s=d.turn_timeout_s,
                max_restarts=3 if d.max_restarts is None else d.max_restarts,
                kind=r.kind,
                metadata=d.metadata,
            )
        except PythonRefError as exc:
            problems.append(_python_problem(src, r, str(exc)))
        except ConfigError as exc:
            problems.append(Problem(src.origin(loc, key=True), format_path(loc), exc.message))
    if not problems:
        for a, b, mutual in edges:
            graph.connect(a, b, mutual=mutual)
    raise_problems(problems, src.file, secrets=secrets)
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
        warnings=_unreached(src, agents, entry, edges),
    )


def _valid_parts(src: Source) -> tuple[dict[str, AgentDef], ModelSettings]:
    """The agents (and defaults) of a file that failed validation which are valid on
    their own; their problems were reported by the whole file's validation."""
    from pydantic import ValidationError

    data = src.data if isinstance(src.data, dict) else {}
    raw_agents = data.get("agents")
    agents: dict[str, AgentDef] = {}
    for name, raw in (raw_agents if isinstance(raw_agents, dict) else {}).items():
        try:
            agents[str(name)] = AgentDef.model_validate(raw if raw is not None else {})
        except ValidationError:
            continue
    try:
        defaults = ModelSettings.model_validate(data.get("defaults") or {})
    except ValidationError:
        defaults = ModelSettings()
    return agents, defaults
