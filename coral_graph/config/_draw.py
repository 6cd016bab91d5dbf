"""Draw a graph: a tree for the terminal, Mermaid, or Graphviz DOT.

``user -> entry`` edges and ``answerer -> user`` edges (dashed) are drawn too; an
edge that exists both ways is drawn once with two arrow heads.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING

from coral_graph._types import USER

if TYPE_CHECKING:
    from rich.tree import Tree

    from coral_graph.config._load import LoadedGraph

__all__ = ["to_dot", "to_mermaid", "to_tree"]


def _edges(lg: LoadedGraph) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(one-way edges, mutual pairs) in a stable order."""
    one: list[tuple[str, str]] = []
    both: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    g = lg.graph
    for a, b in g.edges:
        if (a, b) in seen:
            continue
        if g.has_edge(b, a):
            both.append((a, b))
            seen.add((b, a))
        else:
            one.append((a, b))
        seen.add((a, b))
    return one, both


def _answerers(lg: LoadedGraph) -> list[str]:
    return list(lg.answer_by if lg.answer_by is not None else lg.entry)


def to_mermaid(lg: LoadedGraph) -> str:
    """A Mermaid flowchart.

    >>> from coral_graph.config import GraphSpec, AgentDef, build_graph
    >>> spec = GraphSpec(agents={"a": AgentDef(kind="human"), "b": AgentDef(kind="human")},
    ...                  edges=["a <-> b"])
    >>> print(to_mermaid(build_graph(spec)))
    flowchart LR
      user((user))
      a["a<br/><i>human</i>"]
      b["b<br/><i>human</i>"]
      user --> a
      a <--> b
      a -.-> user
    """
    lines = ["flowchart LR", f"  {USER}(({USER}))"]
    for name in lg.graph.agents:
        kind = lg.graph.spec(name).kind
        lines.append(f'  {_mid(name)}["{name}<br/><i>{kind}</i>"]')
    for e in lg.entry:
        lines.append(f"  {USER} --> {_mid(e)}")
    one, both = _edges(lg)
    lines += [f"  {_mid(a)} <--> {_mid(b)}" for a, b in both]
    lines += [f"  {_mid(a)} --> {_mid(b)}" for a, b in one]
    lines += [f"  {_mid(a)} -.-> {USER}" for a in _answerers(lg)]
    return "\n".join(lines)


def _mid(name: str) -> str:
    # Mermaid ids cannot contain '-'; the label keeps the real name.
    return name.replace("-", "_")


def to_dot(lg: LoadedGraph) -> str:
    """A Graphviz digraph."""
    q = json.dumps
    lines = [
        f"digraph {q(lg.graph.name)} {{",
        "  rankdir=LR;",
        f"  {q(USER)} [shape=doublecircle];",
    ]
    for name in lg.graph.agents:
        kind = lg.graph.spec(name).kind
        lines.append(f"  {q(name)} [shape=box, label={q(name + chr(10) + kind)}];")
    for e in lg.entry:
        lines.append(f"  {q(USER)} -> {q(e)};")
    one, both = _edges(lg)
    lines += [f"  {q(a)} -> {q(b)} [dir=both];" for a, b in both]
    lines += [f"  {q(a)} -> {q(b)};" for a, b in one]
    lines += [f"  {q(a)} -> {q(USER)} [style=dashed];" for a in _answerers(lg)]
    lines.append("}")
    return "\n".join(lines)


def to_tree(lg: LoadedGraph) -> Tree:
    """A Rich tree from ``user`` through the entry agents along the edges; an agent
    already drawn is shown again as ``↻ name`` instead of being expanded."""
    from rich.markup import escape
    from rich.tree import Tree

    from coral_graph.config._source import escape_text

    g = lg.graph
    answerers = set(_answerers(lg))
    # Text from the file is escaped twice over: Rich markup, and characters that
    # would act on the terminal (escape sequences, bidi overrides).
    root = Tree(f"[bold]{USER}[/]  [dim]{escape(escape_text(lg.graph.name))}: {len(g)} agents[/]")
    drawn: set[str] = set()

    def label(name: str, parent: str) -> str:
        spec = g.spec(name)
        marks = []
        if parent != USER and g.has_edge(name, parent):
            marks.append("⇄")
        if name in answerers:
            marks.append("→ user")
        desc = escape_text(spec.description.split("\n")[0])
        if len(desc) > 48:
            desc = desc[:45] + "..."
        extra = f" [cyan]{' '.join(marks)}[/]" if marks else ""
        return f"[bold]{escape(name)}[/]{extra}  [dim]{spec.kind} · {escape(desc)}[/]"

    # Breadth first, so each agent is expanded where it is nearest to the user.
    queue: deque[tuple[Tree, str, str]] = deque((root, e, USER) for e in lg.entry)

    def drain() -> None:
        while queue:
            node, name, parent = queue.popleft()
            if name in drawn:
                node.add(f"[dim]↻ {escape(name)}[/]")
                continue
            drawn.add(name)
            child = node.add(label(name, parent))
            for nxt in g.successors(name):
                if nxt == parent and g.has_edge(nxt, name):
                    continue  # the ⇄ mark already says it
                queue.append((child, nxt, name))

    drain()
    rest = [n for n in g.agents if n not in drawn]
    if rest:
        lost = root.add("[yellow]not reachable from the entry agents[/]")
        for n in rest:
            if n not in drawn:
                queue.append((lost, n, USER))
                drain()
    return root
