"""The agents/ registry: reusable agent definitions, one folder per agent.

A definition is ``<dir>/<name>/agent.yaml`` (the fields of an agent in a graph
file) plus, where needed, Python files next to it. ``use: <name>`` in a graph finds
the first folder of that name along the search path:

1. the graph's own folder: ``<graph dir>/agents/<name>/``;
2. the project's ``agents/``: the nearest one above the graph's folder, then the
   one in the current directory;
3. every folder in ``$CORAL_AGENTS_PATH`` (``os.pathsep``-separated), in order;
4. the built-in definitions shipped with coral-graph.

``use:`` may also be a path (``./my_agents/planner`` or ``../x/agent.yaml``),
resolved relative to the file that says it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RegistryEntry", "builtin_dir", "find_agent", "list_registry", "search_path"]

AGENT_FILES = ("agent.yaml", "agent.yml")


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One definition found in the registry.

    Attributes:
        name: the folder name, which ``use:`` refers to.
        file: its ``agent.yaml``.
        scope: ``graph``, ``project``, ``env``, ``builtin`` or ``path``.
    """

    name: str
    file: Path
    scope: str

    @property
    def folder(self) -> Path:
        """The definition's folder (Python files are resolved relative to it)."""
        return self.file.parent


def builtin_dir() -> Path | None:
    """The built-in definitions: packaged as ``coral_graph/_registry`` in a wheel, or
    the repository's ``agents/`` in a source checkout."""
    pkg = Path(__file__).resolve().parent.parent
    for candidate in (pkg / "_registry", pkg.parent / "agents"):
        if (candidate / "planner").is_dir():
            return candidate
    return None


def search_path(graph_dir: Path | None = None) -> list[tuple[str, Path]]:
    """The registry folders in resolution order as ``(scope, folder)``; missing
    folders are skipped and each folder appears once."""
    out: list[tuple[str, Path]] = []
    seen: set[Path] = set()

    def add(scope: str, folder: Path) -> None:
        try:
            real = folder.resolve()
        except OSError:
            return
        if real in seen or not real.is_dir():
            return
        seen.add(real)
        out.append((scope, real))

    if graph_dir is not None:
        gd = graph_dir.resolve()
        add("graph", gd / "agents")
        for parent in gd.parents:
            if (parent / "agents").is_dir():
                add("project", parent / "agents")
                break
    add("project", Path.cwd() / "agents")
    for part in os.environ.get("CORAL_AGENTS_PATH", "").split(os.pathsep):
        if part.strip():
            add("env", Path(part.strip()))
    builtin = builtin_dir()
    if builtin is not None:
        add("builtin", builtin)
    return out


def _agent_file(folder: Path) -> Path | None:
    for fname in AGENT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    return None


def find_agent(ref: str, *, graph_dir: Path | None, base_dir: Path) -> RegistryEntry | None:
    """Resolve a ``use:`` reference: a name along :func:`search_path`, or a path
    relative to ``base_dir`` (the folder of the file that says ``use:``)."""
    if "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")):
        p = (base_dir / ref).resolve()
        file = p if p.is_file() else _agent_file(p)
        if file is None:
            return None
        return RegistryEntry(file.parent.name, file, "path")
    for scope, folder in search_path(graph_dir):
        file = _agent_file(folder / ref)
        if file is not None:
            return RegistryEntry(ref, file, scope)
    return None


def list_registry(graph_dir: Path | None = None) -> list[tuple[RegistryEntry, bool]]:
    """Every definition along the search path as ``(entry, shadowed)``: ``shadowed``
    is true when an earlier folder has a definition of the same name."""
    out: list[tuple[RegistryEntry, bool]] = []
    names: set[str] = set()
    for scope, folder in search_path(graph_dir):
        for sub in sorted(folder.iterdir()):
            file = _agent_file(sub) if sub.is_dir() else None
            if file is None:
                continue
            out.append((RegistryEntry(sub.name, file, scope), sub.name in names))
            names.add(sub.name)
    return out
