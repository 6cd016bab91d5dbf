"""Names on the NATS server for one graph, and the graph's identity (hash + diff).

Per graph (``<g>`` is the graph's name made subject-safe):

* stream ``CORAL_<g>_INBOX`` (work queue): subjects ``coral.<g>.<run>.inbox.<agent>``,
  one durable pull consumer ``in_<agent>`` per agent;
* stream ``CORAL_<g>_EVENTS``: subjects ``coral.<g>.<run>.events``;
* key-value bucket ``coral_<g>``: the graph's identity (``graph``), the live workers
  the runs (``r.<run>``) and each run's shared state
  (``<run>.t.<thread>``, ``m.<run>.<thread>.<seq>``, ``<run>.b.<budget>``,
  ``<run>.busy.<worker>``);
* key-value bucket ``coral_<g>_workers``: one record per live worker (host, pid,
  agents, graph hash), refreshed every second and forgotten after 5 s;
* plain subject ``coral.<g>.<run>.ctl``: the stop of a run, broadcast;
* plain subjects ``coral.<g>.<run>.kv.<revision>.<key>``: each change of a run's
  thread header or counter, published by its writer once stored (the key's new
  value, as in the bucket), so every process of the run keeps its copy current
  without a key-value watch (see ``Replica``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["GraphIdentity", "Names", "graph_identity"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Names:
    """Every subject, stream, consumer and bucket name of one graph."""

    graph: str

    @classmethod
    def for_graph(cls, name: str) -> Names:
        safe = _UNSAFE.sub("_", name or "graph")[:64] or "graph"
        return cls(safe)

    @property
    def inbox_stream(self) -> str:
        return f"CORAL_{self.graph}_INBOX"

    @property
    def events_stream(self) -> str:
        return f"CORAL_{self.graph}_EVENTS"

    @property
    def bucket(self) -> str:
        return f"coral_{self.graph}"

    @property
    def workers_bucket(self) -> str:
        return f"coral_{self.graph}_workers"

    def inbox(self, run_id: str, agent: str) -> str:
        return f"coral.{self.graph}.{run_id}.inbox.{agent}"

    def inbox_filter(self, agent: str) -> str:
        return f"coral.{self.graph}.*.inbox.{agent}"

    def events(self, run_id: str) -> str:
        return f"coral.{self.graph}.{run_id}.events"

    @property
    def all_events(self) -> str:
        return f"coral.{self.graph}.*.events"

    def changes(self, run_id: str) -> str:
        """The prefix of the run's change notices: ``<prefix>.<revision>.<key>``."""
        return f"coral.{self.graph}.{run_id}.kv"

    def ctl(self, run_id: str) -> str:
        return f"coral.{self.graph}.{run_id}.ctl"

    @property
    def all_ctl(self) -> str:
        return f"coral.{self.graph}.*.ctl"

    @staticmethod
    def consumer(agent: str) -> str:
        return f"in_{agent}"

    @staticmethod
    def run_of(subject: str) -> str | None:
        """The run id in ``coral.<g>.<run>.…``, or None for a foreign subject."""
        parts = subject.split(".")
        return parts[2] if len(parts) >= 4 and parts[0] == "coral" else None


@dataclass(frozen=True, slots=True)
class GraphIdentity:
    """What two processes must agree on to serve one graph: its agents (each agent's
    resolved definition), edges, entry and answerers. ``hash`` is over all of it."""

    name: str
    hash: str
    agents: dict[str, str]  # agent -> digest of its resolved definition
    fields: dict[str, dict[str, str]]  # agent -> field -> digest (to name differences)
    edges: list[list[str]]
    entry: list[str]
    answer_by: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hash": self.hash,
            "agents": self.agents,
            "fields": self.fields,
            "edges": self.edges,
            "entry": self.entry,
            "answer_by": self.answer_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphIdentity:
        return cls(
            str(data["name"]),
            str(data["hash"]),
            dict(data["agents"]),
            {k: dict(v) for k, v in dict(data.get("fields", {})).items()},
            [list(e) for e in data["edges"]],
            list(data["entry"]),
            list(data["answer_by"]),
        )

    def differences(self, other: GraphIdentity) -> list[str]:
        """What differs from ``other`` (the running one), in words; empty when equal."""
        out: list[str] = []
        mine, theirs = set(self.agents), set(other.agents)
        if mine - theirs:
            out.append(f"agents only in this file: {', '.join(sorted(mine - theirs))}")
        if theirs - mine:
            out.append(f"agents only in the running graph: {', '.join(sorted(theirs - mine))}")
        for a in sorted(mine & theirs):
            if self.agents[a] != other.agents[a]:
                f1, f2 = self.fields.get(a, {}), other.fields.get(a, {})
                changed = sorted(k for k in set(f1) | set(f2) if f1.get(k) != f2.get(k))
                what = f" ({', '.join(changed)})" if changed else ""
                out.append(f"agent {a!r} is defined differently{what}")
        e1 = {tuple(e) for e in self.edges}
        e2 = {tuple(e) for e in other.edges}
        if e1 - e2:
            out.append(
                "edges only in this file: " + ", ".join(f"{a}->{b}" for a, b in sorted(e1 - e2))
            )
        if e2 - e1:
            out.append(
                "edges only in the running graph: "
                + ", ".join(f"{a}->{b}" for a, b in sorted(e2 - e1))
            )
        if self.entry != other.entry:
            out.append(f"entry {self.entry} vs {other.entry}")
        if self.answer_by != other.answer_by:
            out.append(f"answer_by {self.answer_by} vs {other.answer_by}")
        if not out and self.hash != other.hash:
            out.append("the resolved definitions differ")
        return out


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def graph_identity(
    graph: Any,
    definitions: dict[str, dict[str, Any]] | None = None,
    entry: list[str] | None = None,
    answer_by: list[str] | None = None,
) -> GraphIdentity:
    """The identity of an :class:`~coral_graph.AgentGraph`. ``definitions`` are the
    resolved definitions from a graph file (``LoadedGraph.agents``); without them an
    agent is known by its description, kind and Python type."""
    fields: dict[str, dict[str, str]] = {}
    for name in graph.agents:
        spec = graph.spec(name)
        data = dict(definitions.get(name, {})) if definitions else {}
        data.setdefault("kind", spec.kind)
        data.setdefault("description", spec.description)
        data.setdefault("on_error", spec.on_error)
        data["type"] = f"{type(spec.agent).__module__}.{type(spec.agent).__qualname__}"
        fields[name] = {k: _digest(v) for k, v in data.items()}
    agents = {n: _digest(f) for n, f in fields.items()}
    edges = sorted([str(a), str(b)] for a, b in graph.edges)
    ent = [str(e) for e in (entry if entry is not None else graph.entry or [])]
    ans = [str(a) for a in (answer_by if answer_by is not None else graph.answer_by or ent)]
    h = _digest({"agents": agents, "edges": edges, "entry": ent, "answer_by": ans})
    return GraphIdentity(graph.name or "graph", h, agents, fields, edges, ent, ans)
