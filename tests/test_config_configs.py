"""Every graph in configs/ is validated and run: LLM agents on scripted models
(deterministic), and once on the embedded SmolLM2 (marked ``embedded``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_graph.config import check_graph, load_graph
from coral_graph.testing import ScriptedModel

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# Per config: the replies of each LLM agent, and what the answer must contain.
SCRIPTS: dict[str, tuple[dict[str, list[str]], str]] = {
    # echo is a process agent over MCP (agents/mcp_echo): it answers "echo: <text>".
    "mcp_mix.yaml": (
        {"planner": ["@echo coral", "@calculator 12 * 12", "FINAL: coral, 12 * 12 = 144"]},
        "144",
    ),
    "quickstart.yaml": (
        {"planner": ["@calculator 17 * 23", "FINAL: 17 * 23 = 391"]},
        "391",
    ),
    "voting.yaml": (
        {"voter-a": ["Paris"], "voter-b": ["Paris."], "voter-c": ["Lyon"]},
        "Paris",
    ),
    "specialists.yaml": (
        {
            "planner": [
                "@researcher what do 3 pens cost?",
                "@calculator 27 / 3 * 2",
                "FINAL: 27 pens cost $18",
            ],
            "researcher": ["3 pens cost $2."],
        },
        "$18",
    ),
    "roleplay.yaml": (
        {
            "instructor": [
                "Write one line about waves.",
                "Now one line about the moon.",
                "<CAMEL_TASK_DONE> Waves roll in.\nThe moon pulls them back.",
            ],
            "assistant": ["Waves roll in.", "The moon pulls them back."],
        },
        "The moon pulls them back.",
    ),
    # the pattern configs (see tests/test_patterns.py for their structure)
    "single.yaml": ({"solo": ["Paris"]}, "Paris"),
    "single-sampled.yaml": ({"solo": ["Paris"]}, "Paris"),
    "voting-5.yaml": (
        {f"voter-{v}": ["Lyon" if v == "a" else "Paris"] for v in "abcde"},
        "Paris",
    ),
    "voting-9.yaml": ({f"voter-{v}": ["Paris"] for v in "abcdefghi"}, "Paris"),
    "moa.yaml": (
        {
            **{p: ["Paris"] for p in ("p1a", "p1b", "p1c", "p2a", "p2b", "p2c")},
            "aggregator": ["Paris"],
        },
        "Paris",
    ),
    "auction.yaml": (
        {
            "small": ["STRATEGY: add the two numbers\nCOST: 40", "42"],
            "large": ["STRATEGY: add them carefully\nCOST: 60"],
            "critic": ["OK"],
        },
        "42",
    ),
    "router.yaml": ({"geographer": ["Lima"]}, "Lima"),
    "gaia.yaml": (
        {
            "planner": [
                "@researcher how many metres are in a kilometre?",
                "@calculator 42.195 * 1000",
                "@critic is 42195 metres right for 42.195 km?",
                "@answerer 42195 metres",
            ],
            "researcher": ["1 km = 1000 m"],
            "critic": ["OK"],
            "answerer": ["FINAL: 42,195 metres"],
        },
        "42,195 metres",
    ),
    "study-group.yaml": (
        {
            **{s: ["10:15", "10:15"] for s in ("solver-a", "solver-b", "solver-c")},
            "synthesiser": ["It arrives at 10:15."],
        },
        "10:15",
    ),
}


def config_files() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[ScriptedModel]:
    name = f"cfg-{request.node.callspec.id}".replace(".", "-")
    steps, _ = SCRIPTS[request.node.callspec.params["path"].name]
    model = ScriptedModel(steps, name=name)  # type: ignore[arg-type]
    yield model
    model.close()


def test_every_config_has_a_script() -> None:
    assert {p.name for p in config_files()} == set(SCRIPTS)
    assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.name)
def test_config_validates(path: Path) -> None:
    lg = check_graph(path)
    assert lg.task, "every ready graph has a default task"
    for r in lg.agents.values():
        if r.kind == "llm":
            assert r.definition.model == "embedded/smollm2-135m"
            assert r.definition.max_tokens is not None
            assert r.definition.max_tokens <= 128


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.name)
def test_config_runs_on_scripted_models(
    path: Path, scripted: ScriptedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Agents that keep memory in the store (the auction) write it under .coral/ of the
    # working directory: a temporary one, never the checkout.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORAL_DB", raising=False)
    lg = load_graph(path, model=f"scripted/{scripted.name}")
    result = lg.run()
    _, expected = SCRIPTS[path.name]
    assert result.stop_reason == "answer", (result.stop_reason, result.error)
    assert result.answer is not None
    assert expected in result.answer
    assert scripted.remaining == 0  # every scripted reply was used


@pytest.mark.embedded
@pytest.mark.slow
def test_quickstart_on_the_embedded_model() -> None:
    lg = load_graph(
        CONFIGS / "quickstart.yaml",
        overrides=["defaults.max_tokens=24", "budgets.max_llm_calls=1", "budgets.timeout_s=120"],
    )
    result = lg.run()
    # A 135M model may or may not finish; the run must end cleanly within its budgets.
    assert result.stop_reason in ("answer", "idle", "budget:llm_calls", "budget:messages")
    assert result.error is None
    assert result.total.llm_calls >= 1
