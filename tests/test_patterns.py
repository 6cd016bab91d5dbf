"""The pattern configs run as their papers describe, on scripted models: who is asked
what, in which thread, and who answers."""

from __future__ import annotations

from pathlib import Path

import coral_graph as cg
from coral_graph.config import load_graph
from coral_graph.testing import ScriptedModel

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _last_prompt(model: ScriptedModel, agent: str) -> str:
    req = [r for r in model.requests if r.agent == agent][-1]
    return str(req.messages[-1]["content"])


def test_moa_layers_read_the_previous_layer_and_the_aggregator_answers() -> None:
    replies = {
        "p1a": ["Paris"],
        "p1b": ["Lyon"],
        "p1c": ["paris, france"],
        "p2a": ["Paris"],
        "p2b": ["Paris"],
        "p2c": ["Marseille"],
        "aggregator": ["Paris"],
    }
    model = ScriptedModel(replies, name="moa-structure")  # type: ignore[arg-type]
    try:
        result = load_graph(CONFIGS / "moa.yaml", model="scripted/moa-structure").run()
    finally:
        model.close()
    assert result.stop_reason == "answer", result.error
    assert result.answer == "Paris"
    assert result.answer_message is not None
    assert result.answer_message.sender == "aggregator"
    # layer 1 sees only the question; layer 2 sees layer 1's answers; the aggregator layer 2's
    first = _last_prompt(model, "p1a")
    assert "What is the capital of France?" in first
    assert "Answers so far" not in first
    layer2 = _last_prompt(model, "p2b")
    assert "Question: What is the capital of France?" in layer2
    assert "2. Lyon" in layer2
    assert "3. paris, france" in layer2
    agg = _last_prompt(model, "aggregator")
    assert "3. Marseille" in agg
    assert "Lyon" not in agg
    assert model.remaining == 0
    threads = {t.name for t in result.threads.values()}
    assert {"layer 1", "layer 2"} <= threads


def test_study_group_compares_notes_in_one_shared_thread() -> None:
    replies = {
        "solver-a": ["10:15", "10:15"],
        "solver-b": ["10:05", "10:15"],
        "solver-c": ["10:15", "10:15"],
        "synthesiser": ["10:15"],
    }
    model = ScriptedModel(replies, name="study-structure")  # type: ignore[arg-type]
    try:
        result = load_graph(CONFIGS / "study-group.yaml", model="scripted/study-structure").run()
    finally:
        model.close()
    assert result.stop_reason == "answer", result.error
    assert result.answer == "10:15"
    # round 2: every solver sees all three round-1 answers, in the same thread
    second = [r for r in model.requests if r.agent == "solver-b"][1]
    text = str(second.messages[-1]["content"])
    assert "2. 10:05" in text
    assert "Compare these answers" in text
    (group,) = [t for t in result.threads.values() if t.name == "layer 1"]
    assert [m.sender for m in group.messages].count("group") == 2  # the question, then notes
    assert {m.sender for m in group.messages} == {"group", "solver-a", "solver-b", "solver-c"}
    assert "2. 10:15" in _last_prompt(model, "synthesiser")


def test_a_proposer_that_fails_is_visible_not_hidden() -> None:
    replies = {"p1a": ["Paris"], "p1b": ["Paris"], "p1c": [cg.LLMError("model down")]}
    model = ScriptedModel(replies, name="moa-fail")  # type: ignore[arg-type]
    try:
        result = load_graph(
            CONFIGS / "moa.yaml", model="scripted/moa-fail", overrides=["defaults.retries=0"]
        ).run()
    finally:
        model.close()
    # the layer waits for an answer that never comes: the run ends idle, with the error
    assert result.stop_reason == "idle"
    assert result.usage["p1c"].errors == 1
