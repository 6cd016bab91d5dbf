"""Resolved agents -> a runnable :class:`LoadedGraph`: Python, human and LLM agents
created and connected along the edges."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_graph._agent import FunctionAgent
from coral_graph._budgets import Budgets
from coral_graph._errors import ConfigError
from coral_graph._graph import AgentGraph
from coral_graph.config._problems import raise_problems
from coral_graph.config._pyload import PythonRefError, load_object
from coral_graph.config._resolve import ResolvedAgent, resolve_all
from coral_graph.config._source import Loc, Origin, Problem, Source, format_path
from coral_graph.config._spec import MODEL_FIELDS, GraphSpec

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


def build_loaded(
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
    agents, edges, problems = resolve_all(src, spec, graph_dir=graph_dir, env=env, model=model)
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
    raise_problems(problems, src.file)
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
