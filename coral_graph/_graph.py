"""AgentGraph: agents as nodes of a networkx DiGraph, edges as permissions to address."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from coral_graph._agent import Agent, FunctionAgent, LoopAgent
from coral_graph._errors import (
    AgentNameError,
    ConfigError,
    DuplicateAgentError,
    UnknownAgentError,
)
from coral_graph._types import ERROR_POLICIES, NAME_PATTERN, USER, AgentName, ErrorPolicy

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["AgentGraph", "AgentSpec", "validate_name"]

# What a plain async function can be (an agent object is none of these).
_FUNCTION_TYPES = (types.FunctionType, types.MethodType, functools.partial)


def validate_name(name: object) -> AgentName:
    """Return ``name`` as an :data:`AgentName` or raise :class:`AgentNameError`."""
    if not isinstance(name, str):
        raise AgentNameError(repr(name), "an agent name is a string")
    if name == USER:
        raise AgentNameError(name, '"user" is reserved for the caller of the run')
    # fullmatch: `$` alone would also accept a trailing newline ("a\n").
    if NAME_PATTERN.fullmatch(name) is None:
        raise AgentNameError(
            name,
            "use 1-64 characters: a lowercase letter first, then lowercase letters, "
            "digits, '_' or '-'",
        )
    return AgentName(name)


class AgentSpec:
    """An agent in a graph: the object, its description and its policies."""

    __slots__ = (
        "agent",
        "description",
        "is_loop",
        "kind",
        "max_restarts",
        "metadata",
        "name",
        "on_error",
        "turn_timeout_s",
    )

    def __init__(
        self,
        name: AgentName,
        agent: Agent | LoopAgent,
        description: str,
        on_error: ErrorPolicy,
        turn_timeout_s: float | None,
        max_restarts: int,
        kind: str,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.name = name
        self.agent = agent
        self.description = description
        self.on_error = on_error
        self.turn_timeout_s = turn_timeout_s
        self.max_restarts = max_restarts
        self.kind = kind
        self.metadata = metadata
        self.is_loop = not hasattr(agent, "handle")

    def __repr__(self) -> str:
        return f"AgentSpec({self.name!r}, kind={self.kind!r}, on_error={self.on_error!r})"


@functools.lru_cache(maxsize=4096)
def _is_async(fn: object) -> bool:
    """inspect.iscoroutinefunction, remembered per function (a graph of 100,000 agents
    of one class asks 100,000 times about the same method)."""
    return inspect.iscoroutinefunction(fn)


def _check_agent(name: str, agent: object) -> Agent | LoopAgent:
    handle = getattr(agent, "handle", None)
    run = getattr(agent, "run", None)
    fn = handle if handle is not None else run
    if fn is None or not callable(fn):
        raise ConfigError(
            f'agent "{name}": {type(agent).__name__} has no `async def handle(self, ctx, '
            "message)` (or `async def run(self, ctx)` for a loop-style agent); "
            "wrap a plain async function with @coral_graph.agent",
            field=f"agents.{name}",
        )
    if not _is_async(getattr(fn, "__func__", fn)) and not inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        raise ConfigError(
            f'agent "{name}": {type(agent).__name__}.{fn.__name__} must be `async def`',
            field=f"agents.{name}",
        )
    return agent  # type: ignore[return-value]


class AgentGraph:
    """A directed graph of agents. An edge ``a -> b`` lets ``a`` address ``b``.

    The networkx graph underneath is :attr:`nx` (node attribute ``spec`` holds the
    :class:`AgentSpec`). ``user -> entry`` is implicit at run time; ``agent -> user``
    exists only for the agents allowed to answer (``answer_by``, by default the
    entry agents).

    >>> from coral_graph import agent
    >>> @agent
    ... async def noop(ctx, message): ...
    >>> g = AgentGraph()
    >>> g.add_agent("planner", noop, description="plans")
    >>> g.add_agent("solver", noop)
    >>> g.connect("planner", "solver", mutual=True)
    >>> g.has_edge("solver", "planner")
    True
    """

    def __init__(
        self,
        name: str = "graph",
        *,
        description: str = "",
        entry: Iterable[str] = (),
        answer_by: Iterable[str] | None = None,
    ) -> None:
        # Imported on first use: networkx is most of `import coral_graph`'s time.
        import networkx

        self.name = name
        self.description = description
        self.nx: nx.DiGraph[str] = networkx.DiGraph()
        # Our own maps, kept in step with `nx` by every method that changes the
        # graph: runs read them on the hot path (and see edges added mid-run). An
        # agent's successor dict exists once it has an edge or a run asked for it
        # (succ_map): 100,000 idle agents cost no dict each.
        self._specs: dict[str, AgentSpec] = {}
        self._succ: dict[str, dict[str, None]] = {}
        self.entry: list[AgentName] = [AgentName(e) for e in entry]
        self.answer_by: list[AgentName] | None = (
            None if answer_by is None else [AgentName(a) for a in answer_by]
        )

    # -- agents -------------------------------------------------------------

    def add_agent(
        self,
        name: str,
        agent: Agent | LoopAgent | FunctionAgent,
        *,
        description: str | None = None,
        on_error: ErrorPolicy = "continue",
        turn_timeout_s: float | None = None,
        max_restarts: int = 3,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Add an agent.

        Args:
            name: ``^[a-z][a-z0-9_-]{0,63}$``; ``user`` is reserved.
            agent: an object with ``async def handle(self, ctx, message)`` or
                ``async def run(self, ctx)``; a plain async function is wrapped.
            description: what others see in ``list_agents()``; defaults to the
                agent's own ``description`` attribute or docstring.
            on_error: ``continue`` (record and go on), ``restart`` (record, call the
                agent's ``on_restart()`` if it has one, go on; after ``max_restarts``
                the run stops) or ``stop`` (record and stop the run with ``error``).
            turn_timeout_s: overrides ``Budgets.turn_timeout_s`` for this agent.
            kind: a label shown in transcripts (``python``, ``llm`` …).
            metadata: free-form data kept with the agent.
        """
        valid = validate_name(name)
        if valid in self.nx:
            raise DuplicateAgentError(valid)
        if on_error not in ERROR_POLICIES:
            raise ConfigError(
                f'agent "{name}": on_error must be one of {", ".join(ERROR_POLICIES)}, '
                f"not {on_error!r}",
                field=f"agents.{name}.on_error",
            )
        if isinstance(agent, _FUNCTION_TYPES) and inspect.iscoroutinefunction(agent):
            agent = FunctionAgent(agent)
        checked = _check_agent(valid, agent)
        if description is None:
            description = getattr(agent, "description", None) or inspect.getdoc(type(agent)) or ""
            if isinstance(agent, FunctionAgent):
                description = agent.description
        spec = AgentSpec(
            valid,
            checked,
            description,
            on_error,
            turn_timeout_s,
            max_restarts,
            kind or getattr(agent, "kind", None) or "python",
            metadata,
        )
        self.nx.add_node(valid, spec=spec)
        self._specs[valid] = spec

    def remove_agent(self, name: str) -> None:
        """Remove an agent and its edges."""
        self._require(name)
        self.nx.remove_node(name)
        del self._specs[name]
        self._succ.pop(name, None)
        for succ in self._succ.values():
            succ.pop(name, None)

    def connect(self, a: str, b: str | Iterable[str], *, mutual: bool = False) -> None:
        """Add the edge ``a -> b`` (and ``b -> a`` when ``mutual``).

        ``b`` may be a list of names. Both ends must be agents of the graph.
        """
        targets = [b] if isinstance(b, str) else list(b)
        self._require(a)
        for t in targets:
            self._require(t)
            if t == a:
                raise ConfigError(
                    f'edge "{a} -> {a}": an agent cannot address itself; remove the edge',
                    field="edges",
                )
        for t in targets:
            self.nx.add_edge(a, t)
            self.succ_map(a)[t] = None
            if mutual:
                self.nx.add_edge(t, a)
                self.succ_map(t)[a] = None

    def disconnect(self, a: str, b: str) -> None:
        """Remove the edge ``a -> b`` if present."""
        if self.nx.has_edge(a, b):
            self.nx.remove_edge(a, b)
            self.succ_map(a).pop(b, None)

    def succ_map(self, name: str) -> dict[str, None]:
        """The live map of the agents ``name`` may address (kept in step with the
        edges; the runtime reads it on the hot path)."""
        succ = self._succ.get(name)
        if succ is None:
            succ = self._succ[name] = {}
        return succ

    def _require(self, name: str) -> None:
        if name == USER:
            raise ConfigError(
                '"user" is not a node of the graph: user -> entry agents is implicit, '
                "and agent -> user is granted by answer_by",
                field="edges",
            )
        if name not in self._specs:
            raise UnknownAgentError(name, self._specs)

    # -- reading ------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return len(self.nx)

    def __iter__(self) -> Iterator[AgentName]:
        return iter(self.nx)

    @property
    def agents(self) -> list[AgentName]:
        """The agent names, in the order they were added."""
        return list(self.nx)

    @property
    def edges(self) -> list[tuple[AgentName, AgentName]]:
        """Every edge ``(a, b)``."""
        return list(self.nx.edges)

    def spec(self, name: str) -> AgentSpec:
        """The :class:`AgentSpec` of ``name``."""
        self._require(name)
        return self._specs[name]

    def has_edge(self, a: str, b: str) -> bool:
        """Whether ``a`` may address ``b``."""
        succ = self._succ.get(a)
        return succ is not None and b in succ

    def successors(self, name: str) -> list[AgentName]:
        """The agents ``name`` may address."""
        self._require(name)
        return [AgentName(n) for n in self._succ.get(name, ())]

    def validate(
        self, entry: Iterable[str] | None = None, answer_by: Iterable[str] | None = None
    ) -> tuple[list[AgentName], list[AgentName]]:
        """Check entry and answer_by against the graph and return them resolved."""
        # Duplicates are dropped: the task thread's participants never repeat.
        src = entry if entry is not None else self.entry
        ent = list(dict.fromkeys(AgentName(e) for e in src))
        if not ent:
            raise ConfigError(
                "no entry agents: pass entry=[...] to run() or set the graph's entry",
                field="entry",
            )
        for e in ent:
            self._require(e)
        ans_src = answer_by if answer_by is not None else self.answer_by
        ans = ent if ans_src is None else list(dict.fromkeys(AgentName(a) for a in ans_src))
        for a in ans:
            self._require(a)
        return ent, ans

    def check_ready(self, agents: Iterable[str] | None = None) -> None:
        """Ask every agent (or each of ``agents``) that has a ``check_ready()`` (an LLM
        agent checks its API key and model name) whether it can work; the first one
        that cannot raises.

        Every run does this before its task is posted (in a worker thread: the first
        check imports litellm), so a missing key is reported at once rather than as
        failed calls. Calling it before the event loop starts also warms the model's
        tokenizer there (the CLI does). A process of a distributed run checks only
        the agents it hosts.
        """
        specs = self._specs
        for spec in specs.values() if agents is None else (specs[a] for a in agents):
            check = getattr(spec.agent, "check_ready", None)
            if callable(check):
                check()

    def snapshot(self) -> dict[str, Any]:
        """Plain data: name, description, agents (name, description, kind), edges."""
        return {
            "name": self.name,
            "description": self.description,
            "agents": [
                {"name": n, "description": d["spec"].description, "kind": d["spec"].kind}
                for n, d in self.nx.nodes(data=True)
            ],
            "edges": [[a, b] for a, b in self.nx.edges],
        }

    def __repr__(self) -> str:
        return (
            f"AgentGraph({self.name!r}, {len(self.nx)} agents, {self.nx.number_of_edges()} edges)"
        )
