"""YAML graphs: loading, edges, defaults, overrides, env, round trip, registry, agents."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import coral_graph as cg
from coral_graph import Budgets, ConfigError
from coral_graph.config import (
    AgentDef,
    BudgetsSpec,
    EdgeMap,
    GraphSpec,
    HumanAgent,
    build_graph,
    check_graph,
    find_agent,
    graph_schema,
    list_registry,
    load_graph,
    parse_spec,
    search_path,
)

ROOT = Path(__file__).resolve().parent.parent

ECHO = """
async def echo(ctx, message):
    '''Repeats the task to the user.'''
    await ctx.send_message(message.thread_id, "echo: " + message.content, ["user"])


class Greeter:
    description = "greets"

    def __init__(self, greeting="hello"):
        self.greeting = greeting

    async def handle(self, ctx, message):
        await ctx.send_message(message.thread_id, f"{self.greeting} {message.content}", ["user"])
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_python_agents_load_relative_to_the_file_and_run(tmp_path: Path) -> None:
    write(tmp_path, "code/echo.py", ECHO)
    f = write(
        tmp_path,
        "graph.yaml",
        """
        name: greet
        agents:
          greeter:
            python: code/echo.py:Greeter
            args: {greeting: hi}
          echo:
            kind: python
            python: code/echo.py:echo
            on_error: stop
        edges: [greeter -> echo]
        budgets: {max_messages: 5, timeout_s: 10}
        task: there
        """,
    )
    lg = load_graph(f)
    assert lg.graph.name == "greet"
    assert lg.entry == ["greeter"]  # the first agent by default
    assert lg.graph.spec("greeter").description == "greets"
    assert lg.graph.spec("echo").description == "Repeats the task to the user."
    assert lg.graph.spec("echo").on_error == "stop"
    assert lg.budgets == Budgets(max_messages=5, timeout_s=10)
    assert lg.run().answer == "hi there"
    assert lg.run("you", entry=["echo"], answer_by=["echo"]).answer == "echo: you"


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        (["a -> b"], {("a", "b")}),
        (["a <-> b"], {("a", "b"), ("b", "a")}),
        (["a <- b"], {("b", "a")}),
        (["a -> b, c"], {("a", "b"), ("a", "c")}),
        (["a -> b -> c"], {("a", "b"), ("b", "c")}),
        ([["c", "a"]], {("c", "a")}),
        (
            [{"from": "a", "to": ["b", "c"], "mutual": True}],
            {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")},
        ),
        ([EdgeMap.model_validate({"from": ["a", "b"], "to": "c"})], {("a", "c"), ("b", "c")}),
    ],
)
def test_edge_forms(edges: list[object], expected: set[tuple[str, str]]) -> None:
    spec = GraphSpec(
        agents={n: AgentDef(kind="human") for n in "abc"},
        edges=edges,  # type: ignore[arg-type]
    )
    assert set(build_graph(spec).graph.edges) == expected


def test_defaults_registry_and_own_fields_in_that_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        "agents/helper/agent.yaml",
        """
        description: a helper from the graph's folder
        system_prompt: help
        temperature: 0.5
    """,
    )
    f = write(
        tmp_path,
        "g.yaml",
        """
        defaults: {model: scripted/x, temperature: 0.1, max_tokens: 50}
        agents:
          a: {use: helper}
          b: {use: helper, temperature: 0.9, description: mine}
          c: {}
    """,
    )
    lg = check_graph(f)
    a, b, c = (lg.agents[n].definition for n in "abc")
    assert (a.model, a.temperature, a.max_tokens, a.system_prompt) == (
        "scripted/x",
        0.5,
        50,
        "help",
    )
    assert (b.temperature, b.description) == (0.9, "mine")
    assert (c.model, c.temperature) == ("scripted/x", 0.1)
    assert lg.agents["a"].use is not None
    assert lg.agents["a"].use.scope == "graph"
    lg = check_graph(f, model="openai/gpt-4o-mini")
    assert {r.definition.model for r in lg.agents.values()} == {"openai/gpt-4o-mini"}


def test_registry_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    write(project, "agents/critic/agent.yaml", "description: project critic\n")
    write(project, "configs/agents/critic/agent.yaml", "description: graph-folder critic\n")
    write(tmp_path, "extra/solver/agent.yaml", "description: env solver\n")
    graph = write(
        project,
        "configs/g.yaml",
        """
        agents:
          critic: {use: critic}
          solver: {use: solver}
          planner: {use: planner}
    """,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORAL_AGENTS_PATH", str(tmp_path / "extra"))
    lg = check_graph(graph)
    got = {
        n: (r.definition.description, r.use.scope if r.use else None) for n, r in lg.agents.items()
    }
    assert got["critic"] == ("graph-folder critic", "graph")
    assert got["solver"] == ("env solver", "env")
    assert got["planner"][1] == "builtin"  # shipped with coral-graph
    scopes = [scope for scope, _ in search_path(graph.parent)]
    assert scopes == ["graph", "project", "env", "builtin"]
    # Without the graph folder's own definition, the project's wins.
    (project / "configs/agents/critic/agent.yaml").unlink()
    assert check_graph(graph).agents["critic"].definition.description == "project critic"
    listed = [(e.name, e.scope, shadowed) for e, shadowed in list_registry(graph.parent)]
    assert ("critic", "project", False) in listed
    assert ("solver", "env", False) in listed
    assert ("solver", "builtin", True) in listed


def test_use_by_path_and_python_relative_to_the_definition(tmp_path: Path) -> None:
    write(tmp_path, "lib/echoer/echo.py", ECHO)
    write(tmp_path, "lib/echoer/agent.yaml", "python: echo.py:echo\ndescription: echoes\n")
    f = write(tmp_path, "g/graph.yaml", "agents:\n  e: {use: ../lib/echoer}\n")
    lg = load_graph(f)
    assert lg.agents["e"].kind == "python"
    assert lg.run("x").answer == "echo: x"
    assert find_agent("nope", graph_dir=f.parent, base_dir=f.parent) is None


def test_builtin_registry_has_the_first_set() -> None:
    names = {e.name for e, _ in list_registry(None)}
    assert {
        "planner",
        "researcher",
        "solver",
        "critic",
        "summariser",
        "answerer",
        "calculator",
        "tally",
    } <= names


def test_set_overrides(tmp_path: Path) -> None:
    write(tmp_path, "echo.py", ECHO)
    f = write(
        tmp_path,
        "g.yaml",
        """
        agents:
          g: {python: "echo.py:Greeter"}
          s: {use: solver}
        edges: [g -> s]
    """,
    )
    lg = check_graph(
        f,
        overrides=[
            "budgets.max_messages=7",
            "agents.s.temperature=0.3",
            "agents.g.args.greeting=yo",
            "edges[0]=s -> g",
            "defaults.stop=[END]",
            "task=do it",
        ],
    )
    assert lg.budgets.max_messages == 7
    assert lg.agents["s"].definition.temperature == 0.3
    assert lg.agents["s"].definition.stop == ["END"]
    assert lg.graph.edges == [("s", "g")]
    assert lg.task == "do it"
    assert lg.agents["g"].definition.args == {"greeting": "yo"}
    with pytest.raises(ConfigError, match="no such place"):
        check_graph(f, overrides=["edges[5]=a -> b"])


def test_env_interpolation_and_redaction(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "g.yaml",
        """
        defaults:
          api_base: ${BASE}/v1
          model: ${MODEL:-openai/gpt-4o-mini}
        agents:
          a: {use: solver, api_key_env: OPENAI_API_KEY, description: "costs $$5"}
    """,
    )
    lg = check_graph(f, env={"BASE": "http://secret-host:9"})
    d = lg.agents["a"].definition
    assert (d.api_base, d.model, d.description) == (
        "http://secret-host:9/v1",
        "openai/gpt-4o-mini",
        "costs $5",
    )
    dumped = lg.spec.to_yaml()
    assert "secret-host" not in dumped
    assert "${BASE}/v1" in dumped
    assert "secret-host" in lg.spec.to_yaml(reveal=True)


def test_round_trip_python_spec_to_yaml_and_back(tmp_path: Path) -> None:
    spec = GraphSpec(
        name="team",
        description="multi\nline",
        defaults={"model": "scripted/t", "temperature": 0.2, "stop": ["END"]},  # type: ignore[arg-type]
        agents={
            "planner": AgentDef(use="planner", max_tokens=64),
            "calc": AgentDef(use="calculator"),
            "me": AgentDef(kind="human", prompt="your turn", on_error="stop"),
        },
        edges=[
            "planner <-> calc",
            ["planner", "me"],
            EdgeMap.model_validate({"from": "me", "to": ["planner"]}),
        ],
        entry=["planner"],
        answer_by=["planner", "me"],
        budgets=BudgetsSpec(max_messages=9, max_cost_usd=0.5),
        task="2 + 2?",
    )
    text = spec.to_yaml()
    again = parse_spec(text)
    assert again == spec
    assert again.to_yaml() == text
    f = tmp_path / "team.yaml"
    f.write_text(text)
    lg = check_graph(f)
    assert lg.spec == spec
    assert sorted(lg.graph.edges) == [
        ("calc", "planner"),
        ("me", "planner"),
        ("planner", "calc"),
        ("planner", "me"),
    ]
    assert lg.answer_by == ["planner", "me"]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_files_round_trip(path: Path) -> None:
    spec = check_graph(path).spec
    assert parse_spec(spec.to_yaml()) == spec


def test_schema_describes_the_format() -> None:
    schema = graph_schema()
    assert schema["title"] == "coral-graph graph"
    props = schema["properties"]
    assert isinstance(props, dict)
    assert {"agents", "edges", "entry", "answer_by", "budgets", "defaults"} <= set(props)
    assert schema["additionalProperties"] is False
    assert "system_prompt" in graph_schema(agent=True)["properties"]  # type: ignore[operator]


def test_schema_file_in_docs_is_current() -> None:
    import json

    docs = ROOT / "docs"
    assert json.loads((docs / "coral-graph.schema.json").read_text()) == graph_schema(), (
        "regenerate it: coral-graph schema > docs/coral-graph.schema.json"
    )
    agent_doc = json.loads((docs / "coral-graph.agent.schema.json").read_text())
    assert agent_doc == graph_schema(agent=True), (
        "regenerate it: coral-graph schema --agent > docs/coral-graph.agent.schema.json"
    )


def test_loading_config_does_not_import_litellm() -> None:
    code = (
        "import sys, coral_graph.config as c; "
        f"c.check_graph({str(ROOT / 'configs/quickstart.yaml')!r}); "
        "print('litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_names_on_the_package() -> None:
    assert cg.load_graph is load_graph
    assert cg.GraphSpec is GraphSpec


def test_the_agents_folder_is_not_a_package() -> None:
    assert not (ROOT / "agents" / "__init__.py").exists()
    assert "agents" not in sys.modules or not str(
        getattr(sys.modules["agents"], "__file__", "")
    ).startswith(str(ROOT))


@pytest.mark.anyio
async def test_human_agent_reads_without_blocking(tmp_path: Path) -> None:
    import io

    import anyio

    typed = iter(["@bot check this", "FINAL: 42"])
    seen: list[str] = []

    def read_line(prompt: str) -> str:
        return next(typed)

    @cg.agent
    async def bot(ctx: cg.AgentContext, message: cg.Message) -> None:
        seen.append(message.content)
        await ctx.send_message(message.thread_id, "checked", [message.sender])

    out = io.StringIO()
    g = cg.AgentGraph()
    g.add_agent("me", HumanAgent("type", read_line=read_line, out=out))
    g.add_agent("bot", bot)
    g.connect("me", "bot", mutual=True)
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            result = await rt.run("what is 6*7?", entry=["me"])
    assert result.answer == "42"
    assert seen == ["check this"]
    assert "what is 6*7?" in out.getvalue()
