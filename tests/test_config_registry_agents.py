"""The Python agents of the registry: the calculator and the tally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import coral_graph as cg
from coral_graph.config import AgentDef, GraphSpec, build_graph
from coral_graph.config._pyload import load_object

AGENTS = Path(__file__).resolve().parent.parent / "agents"


def calc(name: str) -> Any:
    return load_object(f"calculator.py:{name}", AGENTS / "calculator")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("17 * 23", "391"),
        ("12 * (3 + 4) / 5", "84/5 = 16.8"),
        ("0.1 + 0.2", "3/10 = 0.3"),
        ("2 ^ 64", "18446744073709551616"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** -2", "1/4 = 0.25"),
        ("1,000 * 3", "3000"),
        ("6 \u00d7 7", "42"),
        ("1 / 3", "1/3 \u2248 0.33333333333333333333"),
    ],
)
def test_exact_arithmetic(expr: str, expected: str) -> None:
    assert calc("evaluate")(expr) == expected


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "exponents are limited"),
        ("2 ** 0.5", "whole-number exponents"),
        ("__import__('os')", "not a valid expression"),
        ("(1).real", "only numbers"),
        (
            " * ".join(["10 ** 9000"] * 5),
            "too large",
        ),
    ],
)
def test_refuses_what_it_cannot_do_safely(expr: str, why: str) -> None:
    with pytest.raises(calc("CalculationError"), match=why):
        calc("evaluate")(expr)


def test_extracts_the_expression_from_a_message() -> None:
    extract = calc("extract_expression")
    assert extract("@calculator what is 17 * (2 + 1)?") == "17 * (2 + 1)"
    assert extract("no numbers here") is None


def _graph(**extra: Any) -> GraphSpec:
    return GraphSpec(agents={"calc": AgentDef(use="calculator", **extra)})


def test_calculator_answers_in_a_run() -> None:
    lg = build_graph(_graph())
    assert lg.run("@calc how much is 3 * (4 + 5)?").answer == "3 * (4 + 5) = 27"
    assert "division by zero" in (lg.run("1/0").answer or "")
    assert "send an expression" in (lg.run("hello").answer or "")


def test_tally_counts_votes() -> None:
    votes = {"a": "Paris", "b": "FINAL: paris.", "c": "Lyon"}

    def voter(name: str) -> cg.FunctionAgent:
        async def vote(ctx: cg.AgentContext, message: cg.Message) -> None:
            await ctx.send_message(message.thread_id, votes[name], [message.sender])

        return cg.FunctionAgent(vote)

    lg = build_graph(
        GraphSpec(
            agents={"tally": AgentDef(use="tally"), **{n: AgentDef(kind="human") for n in votes}},
            edges=[{"from": "tally", "to": list(votes), "mutual": True}],  # type: ignore[list-item]
        )
    )
    g = lg.graph
    for n in votes:  # swap the placeholders for scripted voters
        g.remove_agent(n)
        g.add_agent(n, voter(n))
        g.connect("tally", n, mutual=True)
    result = lg.run("capital of France?")
    assert result.answer == "Paris"  # the winner only; the table is in metadata
    assert result.answer_message is not None
    assert result.answer_message.metadata["vote"]["votes"] == 2
