"""AgentGraph: names, agents, edges, the reserved ``user``, entry/answer_by validation."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

import coral_graph as cg
from coral_graph import (
    AgentGraph,
    AgentNameError,
    ConfigError,
    DuplicateAgentError,
    UnknownAgentError,
)


@cg.agent
async def noop(ctx: cg.AgentContext, message: cg.Message) -> None:
    """Does nothing."""


class Handler:
    """A class-based agent."""

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        return None


class Looper:
    async def run(self, ctx: cg.AgentContext) -> None:
        return None


def graph(*names: str) -> AgentGraph:
    g = AgentGraph()
    for n in names:
        g.add_agent(n, noop)
    return g


# -- names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "planner", "solver-2", "x_y", "a" + "b" * 63, "z9", "a-", "a_"]
)
def test_valid_names_are_accepted(name: str) -> None:
    g = graph(name)
    assert name in g
    assert g.agents == [name]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "Planner",
        "1abc",
        "_a",
        "-a",
        "a b",
        "a.b",
        "a" * 65,
        "é",
        "a\n",
        " a",
        "user",
    ],
)
def test_invalid_names_raise_agent_name_error(name: str) -> None:
    g = AgentGraph()
    with pytest.raises(AgentNameError) as info:
        g.add_agent(name, noop)
    assert info.value.name == name
    assert name not in g
    assert len(g) == 0


def test_agent_name_error_is_a_config_error_and_value_error() -> None:
    with pytest.raises(ConfigError):
        AgentGraph().add_agent("Bad", noop)
    with pytest.raises(ValueError, match="lowercase"):
        AgentGraph().add_agent("Bad", noop)


def test_user_is_reserved_with_a_clear_message() -> None:
    with pytest.raises(AgentNameError, match="reserved"):
        AgentGraph().add_agent("user", noop)


@pytest.mark.parametrize("name", [None, 3, b"abc", ["a"]])
def test_non_string_name_is_rejected(name: Any) -> None:
    with pytest.raises(AgentNameError, match="string"):
        AgentGraph().add_agent(name, noop)


def test_duplicate_name_raises_and_keeps_the_first() -> None:
    g = AgentGraph()
    first = Handler()
    g.add_agent("a", first)
    with pytest.raises(DuplicateAgentError) as info:
        g.add_agent("a", noop)
    assert info.value.name == "a"
    assert isinstance(info.value, ConfigError)
    assert g.spec("a").agent is first
    assert len(g) == 1


# -- agents -------------------------------------------------------------------------


def test_function_agent_is_wrapped_and_described_by_its_docstring() -> None:
    async def helper(ctx: cg.AgentContext, message: cg.Message) -> None:
        """Helps out."""

    g = AgentGraph()
    g.add_agent("h", helper)
    spec = g.spec("h")
    assert isinstance(spec.agent, cg.FunctionAgent)
    assert spec.description == "Helps out."
    assert not spec.is_loop
    assert spec.kind == "python"
    assert spec.on_error == "continue"


def test_description_sources() -> None:
    g = AgentGraph()
    g.add_agent("a", Handler())
    g.add_agent("b", Handler(), description="explicit")
    g.add_agent("c", noop)
    g.add_agent("d", cg.agent(description="given")(noop.__wrapped__))
    assert g.spec("a").description == "A class-based agent."
    assert g.spec("b").description == "explicit"
    assert g.spec("c").description == "Does nothing."
    assert g.spec("d").description == "given"


def test_loop_agent_is_recognised() -> None:
    g = AgentGraph()
    g.add_agent("l", Looper())
    assert g.spec("l").is_loop


def test_object_without_handle_or_run_is_a_config_error() -> None:
    class Nothing:
        pass

    with pytest.raises(ConfigError, match="handle") as info:
        AgentGraph().add_agent("a", Nothing())  # type: ignore[arg-type]
    assert info.value.field == "agents.a"


def test_sync_handle_is_a_config_error() -> None:
    class Sync:
        def handle(self, ctx: Any, message: Any) -> None:
            return None

    with pytest.raises(ConfigError, match="async def"):
        AgentGraph().add_agent("a", Sync())  # type: ignore[arg-type]


def test_sync_function_cannot_be_decorated() -> None:
    def plain(ctx: Any, message: Any) -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        cg.agent(plain)  # type: ignore[arg-type]


def test_bad_error_policy_is_a_config_error() -> None:
    g = AgentGraph()
    with pytest.raises(ConfigError, match="on_error") as info:
        g.add_agent("a", noop, on_error="explode")
    assert info.value.field == "agents.a.on_error"
    assert "a" not in g


@pytest.mark.parametrize("policy", ["continue", "restart", "stop"])
def test_error_policies_are_kept(policy: str) -> None:
    g = AgentGraph()
    g.add_agent("a", noop, on_error=policy, turn_timeout_s=2.0, max_restarts=5, kind="llm")
    spec = g.spec("a")
    assert (spec.on_error, spec.turn_timeout_s, spec.max_restarts, spec.kind) == (
        policy,
        2.0,
        5,
        "llm",
    )


def test_remove_agent_removes_its_edges() -> None:
    g = graph("a", "b", "c")
    g.connect("a", ["b", "c"], mutual=True)
    g.remove_agent("b")
    assert "b" not in g
    assert sorted(g.edges) == [("a", "c"), ("c", "a")]
    with pytest.raises(UnknownAgentError):
        g.remove_agent("b")


# -- edges -----------------------------------------------------------------------------


def test_connect_is_directed_by_default() -> None:
    g = graph("a", "b")
    g.connect("a", "b")
    assert g.has_edge("a", "b")
    assert not g.has_edge("b", "a")
    assert g.successors("a") == ["b"]
    assert g.successors("b") == []


def test_connect_mutual_adds_both_directions() -> None:
    g = graph("a", "b")
    g.connect("a", "b", mutual=True)
    assert g.has_edge("a", "b")
    assert g.has_edge("b", "a")


def test_connect_to_a_list() -> None:
    g = graph("hub", "x", "y", "z")
    g.connect("hub", ["x", "y", "z"])
    assert sorted(g.successors("hub")) == ["x", "y", "z"]
    assert g.edges.count(("hub", "x")) == 1


def test_connect_unknown_agent_suggests_a_name() -> None:
    g = graph("planner", "solver")
    with pytest.raises(UnknownAgentError) as info:
        g.connect("planner", "solvr")
    assert info.value.name == "solvr"
    assert info.value.suggestion == "solver"
    assert 'did you mean "solver"' in str(info.value)
    with pytest.raises(UnknownAgentError):
        g.connect("plannr", "solver")
    assert g.edges == []


def test_connect_list_with_one_unknown_adds_nothing() -> None:
    g = graph("a", "b")
    with pytest.raises(UnknownAgentError):
        g.connect("a", ["b", "nope"])
    assert g.edges == []


def test_unknown_agent_without_a_close_name_has_no_suggestion() -> None:
    g = graph("planner")
    with pytest.raises(UnknownAgentError) as info:
        g.connect("planner", "zzzzzzzz")
    assert info.value.suggestion is None
    assert "did you mean" not in str(info.value)


def test_self_edge_is_rejected() -> None:
    g = graph("a")
    with pytest.raises(ConfigError, match="itself"):
        g.connect("a", "a")
    assert g.edges == []


@pytest.mark.parametrize(("a", "b"), [("user", "a"), ("a", "user")])
def test_edges_with_user_are_rejected(a: str, b: str) -> None:
    g = graph("a")
    with pytest.raises(ConfigError, match=r"answer_by|implicit"):
        g.connect(a, b)
    assert g.edges == []


def test_disconnect() -> None:
    g = graph("a", "b")
    g.connect("a", "b", mutual=True)
    g.disconnect("a", "b")
    g.disconnect("a", "b")  # absent: nothing happens
    assert g.edges == [("b", "a")]


def test_networkx_graph_underneath() -> None:
    g = graph("a", "b")
    g.connect("a", "b")
    assert isinstance(g.nx, nx.DiGraph)
    assert list(g.nx.edges) == [("a", "b")]
    assert isinstance(g.nx.nodes["a"]["spec"], cg.AgentSpec)


def test_reading_helpers() -> None:
    g = graph("b", "a")
    assert len(g) == 2
    assert list(g) == ["b", "a"]
    assert "a" in g
    assert "c" not in g
    assert "user" not in g
    with pytest.raises(UnknownAgentError):
        g.spec("c")
    assert "2 agents" in repr(g)


def test_snapshot_is_plain_data() -> None:
    g = AgentGraph("demo", description="a demo")
    g.add_agent("a", noop, description="first")
    g.add_agent("b", noop)
    g.connect("a", "b")
    assert g.snapshot() == {
        "name": "demo",
        "description": "a demo",
        "agents": [
            {"name": "a", "description": "first", "kind": "python"},
            {"name": "b", "description": "Does nothing.", "kind": "python"},
        ],
        "edges": [["a", "b"]],
    }


# -- entry and answer_by -----------------------------------------------------------------


def test_validate_defaults_answer_by_to_entry() -> None:
    g = graph("a", "b")
    assert g.validate(["a"]) == (["a"], ["a"])
    assert g.validate(["a"], ["b"]) == (["a"], ["b"])


def test_validate_uses_the_graphs_entry() -> None:
    g = AgentGraph(entry=["a"], answer_by=["b"])
    g.add_agent("a", noop)
    g.add_agent("b", noop)
    assert g.validate() == (["a"], ["b"])


def test_validate_without_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="entry") as info:
        graph("a").validate()
    assert info.value.field == "entry"


def test_validate_unknown_entry_or_answerer() -> None:
    g = graph("planner")
    with pytest.raises(UnknownAgentError) as info:
        g.validate(["planer"])
    assert info.value.suggestion == "planner"
    with pytest.raises(UnknownAgentError):
        g.validate(["planner"], ["ghost"])


def test_validate_removes_duplicate_entries() -> None:
    g = graph("a", "b")
    entry, answer_by = g.validate(["a", "b", "a"])
    assert entry == ["a", "b"]
    assert answer_by == ["a", "b"]


def test_user_cannot_be_an_entry() -> None:
    with pytest.raises(ConfigError):
        graph("a").validate(["user"])
