"""Graphs from YAML files, and the ``agents/`` registry of reusable definitions.

>>> import textwrap, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "echo.py").write_text(textwrap.dedent('''
...     async def echo(ctx, message):
...         await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])
... '''))
>>> _ = (folder / "graph.yaml").write_text(textwrap.dedent('''
...     name: hello
...     agents:
...       echo: {kind: python, python: "echo.py:echo"}
... '''))
>>> loaded = load_graph(folder / "graph.yaml")
>>> loaded.run("hi").answer
'echo: hi'

See ``docs/yaml.md`` for the format.
"""

from __future__ import annotations

from coral_graph.config._human import HumanAgent
from coral_graph.config._load import (
    LoadedGraph,
    ResolvedAgent,
    build_graph,
    check_graph,
    load_graph,
    parse_spec,
)
from coral_graph.config._registry import RegistryEntry, find_agent, list_registry, search_path
from coral_graph.config._spec import (
    AgentDef,
    BudgetsSpec,
    EdgeMap,
    GraphSpec,
    ModelSettings,
)

__all__ = [
    "AgentDef",
    "BudgetsSpec",
    "EdgeMap",
    "GraphSpec",
    "HumanAgent",
    "LoadedGraph",
    "ModelSettings",
    "RegistryEntry",
    "ResolvedAgent",
    "build_graph",
    "check_graph",
    "find_agent",
    "graph_schema",
    "list_registry",
    "load_graph",
    "parse_spec",
    "search_path",
]


def graph_schema(*, agent: bool = False) -> dict[str, object]:
    """The JSON Schema of a graph file (or, with ``agent``, of a registry ``agent.yaml``)."""
    model = AgentDef if agent else GraphSpec
    schema: dict[str, object] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(by_alias=True),
    }
    schema["title"] = "coral-graph agent definition" if agent else "coral-graph graph"
    # The first paragraph only: the rest of the docstring is a Python example.
    schema["description"] = " ".join((model.__doc__ or "").split("\n\n")[0].split())
    return schema
