"""The pattern configs run as their papers describe, on scripted models: who is asked
what, in which thread, and who answers."""

from __future__ import annotations

from pathlib import Path

import pytest

import coral_graph as cg
from coral_graph.config import load_graph
from coral_graph.testing import NoisyModel, ScriptedModel

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


# -- the strategy auction ------------------------------------------------------------

_NAMES = [f"{a}{b}" for a in "bcdfg" for b in "aeiouy"]  # no digits: "text" tasks
TEXT_QS = {f"What is the capital of {n}land?": f"{n}ville" for n in _NAMES}
NUM_QS = {f"What is {i} * 13?": str(i * 13) for i in range(30)}
JUDGE = """
KEY = {key!r}

async def judge(ctx, message):
    text = message.content
    q = next(q for q in KEY if q in text)
    proposed = text.split("Proposed answer:", 1)[1].split("\\n", 1)[0].strip()
    verdict = "OK" if proposed == KEY[q] else "WRONG"
    await ctx.send_message(message.thread_id, verdict, [message.sender])
"""


def _auction_graph(tmp_path: Path) -> Path:
    (tmp_path / "judge.py").write_text(JUDGE.format(key={**TEXT_QS, **NUM_QS}))
    memory = tmp_path / "memory.db"
    (tmp_path / "auction.yaml").write_text(
        f"""
name: auction-test
defaults: {{mode: text, max_tokens: 16}}
agents:
  auction:
    use: {CONFIGS.parent / "agents" / "auction"}
    args:
      bidders: [small, large]
      prices: {{small: 0.01, large: 0.2}}
      lam: 10.0
      judge: judge
      memory: {memory}
  small: {{model: scripted/cheap}}
  large: {{model: scripted/large}}
  judge: {{kind: python, python: judge.py:judge}}
edges:
  - auction <-> small, large, judge
entry: auction
"""
    )
    return memory


def test_the_auction_picks_the_cheap_model_when_it_suffices_and_the_large_one_when_not(
    tmp_path: Path,
) -> None:
    memory = _auction_graph(tmp_path)
    kinds = {**dict.fromkeys(TEXT_QS, "text"), **dict.fromkeys(NUM_QS, "numeric")}
    answers = {**TEXT_QS, **NUM_QS}
    wrong = ["0", "nowhere", "7"]
    # the cheap model knows the facts but not the arithmetic; the large one knows both
    cheap = NoisyModel(answers, {"text": 0.95, "numeric": 0.1}, wrong=wrong, kinds=kinds,
                       cost_per_call=0.001, name="cheap")  # fmt: skip
    large = NoisyModel(answers, 0.95, wrong=wrong, cost_per_call=0.02, name="large")
    winners: dict[str, list[str]] = {"text": [], "numeric": []}
    right = 0
    spent = 0.0
    try:
        lg = load_graph(tmp_path / "auction.yaml")
        for text_q, num_q in zip(TEXT_QS, NUM_QS, strict=True):
            for q, kind in ((text_q, "text"), (num_q, "numeric")):
                result = lg.run(q)
                assert result.stop_reason == "answer", result.error
                assert result.answer_message is not None
                sale = result.answer_message.metadata["auction"]
                assert sale["kind"] == kind
                winners[kind].append(sale["winner"])
                right += result.answer == answers[q]
                spent += result.cost_usd
    finally:
        cheap.close()
        large.close()
    # facts: the cheap bidder suffices and wins nearly always
    assert winners["text"].count("small") >= 27, winners["text"]
    # arithmetic: the memory of failed auctions moves the work to the large bidder
    assert winners["numeric"][-15:].count("large") >= 14, winners["numeric"]
    assert right >= 50  # escalation on WRONG keeps the answers right
    from coral_graph.config._pyload import load_object

    auction_report = load_object("auction.py:auction_report", CONFIGS.parent / "agents" / "auction")
    report = auction_report(memory)  # type: ignore[operator]
    assert report["auctions"] == 60
    assert 0.5 < report["cheapest_won_share"] < 0.8
    # the report's money is the runs' own: bids, execution and checks all count
    assert abs(report["spent_usd"] - spent) < 1e-9
    assert abs(report["always_largest_usd"] - 60 * 0.02) < 1e-9
    assert abs(report["saved_usd"] - (60 * 0.02 - spent)) < 1e-9


# -- the router ----------------------------------------------------------------------


def test_the_router_sends_each_task_to_the_best_fitting_specialist_and_counts_load() -> None:
    model = ScriptedModel(default="an answer", name="router-structure")
    try:
        lg = load_graph(CONFIGS / "router.yaml", model="scripted/router-structure")
        tasks = {
            "What is 17 * 23? Use exact arithmetic on the numbers.": "calculator",
            "Which river flows through Cairo, and what country is it in?": "geographer",
            "What is the plural of mouse? Spelling of words please.": "linguist",
        }
        for task, expert in tasks.items():
            result = lg.run(task)
            assert result.stop_reason == "answer", result.error
            assert result.answer_message is not None
            routed = result.answer_message.metadata["router"]
            assert routed["chosen"] == [expert], routed["scores"]
            assert routed["answered_by"] == expert
            # only the chosen specialist worked
            assert {n for n, u in result.usage.items() if u.turns} == {"gate", expert}
        gate = lg.graph.spec("gate").agent
        assert dict(gate.load) == {"calculator": 1, "geographer": 1, "linguist": 1}
        assert routed["load"] == dict(gate.load)
    finally:
        model.close()


def test_the_load_term_spreads_ties_across_specialists() -> None:
    from coral_graph.config._pyload import load_object

    router_cls = load_object("router.py:Router", CONFIGS.parent / "agents" / "router")
    gate = router_cls(k=1, balance=0.5)  # type: ignore[operator]
    same = {"a": "answers questions", "b": "answers questions"}
    picks = []
    for _ in range(4):
        scores = gate.gate("questions", same)
        best = max(same, key=lambda n: (scores[n], n == "a"))
        gate.load.update([best])
        picks.append(best)
    assert picks == ["a", "b", "a", "b"]


# -- CAMEL role-play ---------------------------------------------------------------------


def test_roleplay_passes_instructions_until_the_turn_limit() -> None:
    replies = {
        "instructor": ["Step one.", "Step two.", "Step three.", "never used"],
        "assistant": ["did one", "did two", "did three"],
    }
    model = ScriptedModel(replies, name="camel-limit")  # type: ignore[arg-type]
    try:
        result = load_graph(
            CONFIGS / "roleplay.yaml",
            model="scripted/camel-limit",
            overrides=["defaults.context=compact"],
        ).run()
    finally:
        model.close()
    assert result.stop_reason == "answer", result.error
    assert result.answer == "did three"  # the turn limit (3): the assistant's last result
    assert result.answer_message is not None
    session = result.answer_message.metadata["roleplay"]
    assert session["turns"] == 3
    # every instruction reached the assistant, every result the instructor
    asked = [str(r.messages[-1]["content"]) for r in model.requests if r.agent == "assistant"]
    assert [a.split("Instruction: ")[-1] for a in asked] == [
        "Step one.",
        "Step two.",
        "Step three.",
    ]
    assert "Turn limit reached" in str(
        [r for r in model.requests if r.agent == "instructor"][-1].messages[-1]["content"]
    )


@pytest.mark.embedded
@pytest.mark.slow
def test_roleplay_delegates_on_the_embedded_model() -> None:
    lg = load_graph(
        CONFIGS / "roleplay.yaml",
        overrides=["defaults.max_tokens=24", "agents.session.args.max_turns=1"],
    )
    result = lg.run()
    assert result.stop_reason == "answer", (result.stop_reason, result.error)
    assert result.usage["assistant"].llm_calls >= 1  # the assistant was asked: delegation
    assert result.usage["instructor"].llm_calls >= 2


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.parametrize("name", ["voting-5.yaml", "moa.yaml", "router.yaml"])
def test_patterns_run_on_the_embedded_model(name: str) -> None:
    lg = load_graph(CONFIGS / name, overrides=["defaults.max_tokens=8"])
    result = lg.run()
    # a 135M model's wording is not tested: the pattern's structure is
    assert result.stop_reason == "answer", (result.stop_reason, result.error)
    assert result.error is None
    assert result.answer_message is not None
    llm = [n for n, u in result.usage.items() if u.llm_calls]
    expected = {"voting-5.yaml": 5, "moa.yaml": 7, "router.yaml": 1}[name]
    assert len(llm) == expected, llm
