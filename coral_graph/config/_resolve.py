"""Spec -> resolved agents: ``use:`` chains through the registry, ``defaults`` and
overrides merged, and the fields each kind of agent allows checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coral_graph._types import NAME_PATTERN, USER
from coral_graph.config._problems import describe, did_you_mean, problems_from_validation
from coral_graph.config._registry import RegistryEntry, find_agent, search_path
from coral_graph.config._source import Loc, Origin, Problem, Source, format_path, read_source
from coral_graph.config._spec import MODEL_FIELDS, AgentDef, ModelSettings
from coral_graph.config._validate import check_refs, free_form_problems

__all__ = ["ResolvedAgent", "resolve_all"]

_LLM_ONLY = (*MODEL_FIELDS, "system_prompt", "tools", "max_tool_calls")
_KIND_ONLY = {
    "python": ("python", "args"),
    "human": ("prompt",),
    "process": ("command", "env", "cwd"),
}
# MCP agents: connect_timeout_s for both; a process gets system_prompt as
# CORAL_PROMPT_SYSTEM.
_MCP_KINDS = ("process", "external")


def _misplaced(kind: str, f: str) -> str | None:
    """The kind ``f`` belongs to, when an agent of ``kind`` cannot have it."""
    if f == "connect_timeout_s":
        return None if kind in _MCP_KINDS else "process or external"
    if f == "system_prompt" and kind == "process":
        return None
    if kind != "llm" and f in _LLM_ONLY:
        return "llm"
    for k, only in _KIND_ONLY.items():
        if f in only and kind != k:
            return k
    return None


@dataclass(slots=True)
class ResolvedAgent:
    """An agent after ``use:``, ``defaults`` and overrides were applied.

    Attributes:
        name: the agent's name in the graph.
        kind: ``llm``, ``python`` or ``human``.
        definition: the effective fields (``use`` resolved away).
        use: the registry entry it started from, if any.
        base_dir: the folder Python references are resolved against.
        python_origin: where ``python:`` was written (the graph file or a registry
            definition), for problems of the reference.
    """

    name: str
    kind: str
    definition: AgentDef
    use: RegistryEntry | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    python_origin: Origin | None = None


def _display(path: Path) -> Path:
    """``path`` relative to the working directory when it is below it (shorter
    messages), else as it is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


class _Resolver:
    def __init__(
        self, src: Source, graph_dir: Path, env: Mapping[str, str], model: str | None
    ) -> None:
        self.src = src
        self.graph_dir = graph_dir
        self.env = env
        self.model = model
        self.problems: list[Problem] = []
        self.secrets: dict[str, str] = {}
        self._defs: dict[Path, tuple[AgentDef, Source] | None] = {}

    def _registry_def(self, entry: RegistryEntry) -> tuple[AgentDef, Source] | None:
        key = entry.file.resolve()
        if key in self._defs:
            return self._defs[key]
        self._defs[key] = None  # a cycle resolves to "broken" instead of recursing
        src, problems = read_source(_display(entry.file), self.env)
        self.secrets.update(src.secrets)
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
                problems = free_form_problems(src, agent_file=True)
                try:
                    definition = AgentDef.model_validate(src.data)
                except ValidationError as exc:
                    problems += problems_from_validation(exc, src, agent_file=True)
                else:
                    result = None if problems else (definition, src)
        self.problems.extend(problems)
        self._defs[key] = result
        return result

    def resolve(
        self, name: str, own: AgentDef, src: Source, loc: Loc, base_dir: Path, depth: int = 0
    ) -> tuple[dict[str, Any], Path, RegistryEntry | None, Origin | None] | None:
        """The effective fields of ``own`` (merged over its ``use:`` chain), the folder
        for its Python reference, the registry entry, and where ``python:`` was set."""
        fields = own.model_dump(exclude_unset=True)
        use = fields.pop("use", None)
        py_origin = src.origin((*loc, "python")) if "python" in fields else None
        if use is None:
            return fields, base_dir, None, py_origin
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
        merged, inner_dir, _, inner_origin = inner
        # A `python:` set here is relative to this file; one inherited, to its own.
        py_dir = base_dir if "python" in fields else inner_dir
        merged.update(fields)
        return merged, py_dir, entry, py_origin or inner_origin


def resolve_all(
    src: Source,
    spec_agents: Mapping[str, AgentDef],
    spec_defaults: ModelSettings,
    *,
    graph_dir: Path,
    env: Mapping[str, str],
    model: str | None,
) -> tuple[dict[str, ResolvedAgent], list[tuple[str, str, bool]], list[Problem], dict[str, str]]:
    """Resolve every agent of ``spec_agents``; also returns the edges, the problems
    found and the secrets read from the environment by registry files."""
    res = _Resolver(src, graph_dir, env, model)
    problems = res.problems
    agents: dict[str, ResolvedAgent] = {}
    defaults = spec_defaults.model_dump(exclude_none=True)
    for name, own in spec_agents.items():
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
        fields, py_dir, entry, py_origin = got
        kind = fields.get("kind") or (
            "python" if fields.get("python") else "process" if fields.get("command") else "llm"
        )
        fields["kind"] = kind
        where = src.origin(loc, key=True)
        for f in sorted(fields):
            if fields[f] is None:
                continue
            owner = _misplaced(kind, f)
            if owner is not None:
                in_graph = f in own.model_fields_set
                problems.append(
                    Problem(
                        src.origin((*loc, f), key=True) if in_graph else where,
                        format_path((*loc, f)),
                        f'"{f}" applies to {owner} agents, and this one is kind {kind}; '
                        f"remove it or set kind: {owner}",
                    )
                )
        if kind == "process" and not fields.get("command"):
            problems.append(
                Problem(
                    where,
                    format_path((*loc, "command")),
                    "a process agent needs command: [program, args…], e.g. [python, agent.py]",
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
        agents[name] = ResolvedAgent(
            name, kind, AgentDef.model_validate(fields), entry, py_dir, py_origin
        )
    edges, ref_problems = check_refs(src)
    problems.extend(ref_problems)
    return agents, edges, problems, res.secrets
