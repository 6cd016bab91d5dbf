"""coral-graph eval: datasets, scorers, the Wilson interval, the runner and its store,
resume after a kill, and the evidence that voting helps independent voters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from interrupt import INHERITED_SIGINT, interrupt
from typer.testing import CliRunner

import coral_graph as cg
from coral_graph.cli import app
from coral_graph.eval._datasets import DatasetError, Item, load_dataset, parse_items
from coral_graph.eval._report import wilson
from coral_graph.eval._runner import EvalTables, run_eval
from coral_graph.eval._scorers import score_answer
from coral_graph.testing import NoisyModel

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


# -- datasets --------------------------------------------------------------------------


def test_bundled_datasets_load_offline() -> None:
    facts = load_dataset("facts")
    choice = load_dataset("choice")
    arith = load_dataset("arithmetic", seed=3)
    assert len(facts) >= 200
    assert len(choice) >= 100
    assert len(arith) == 300
    assert {i.scorer for i in facts} == {"exact"}
    assert all(i.scorer == "option" and len(i.choices) == 4 for i in choice)
    assert "A) " in choice.items[0].question
    assert [i.question for i in load_dataset("arithmetic", seed=3)] == [i.question for i in arith]
    assert [i.question for i in load_dataset("arithmetic", seed=4)] != [i.question for i in arith]
    assert len({i.id for i in facts}) == len(facts)


def test_gsm8k_and_mmlu_lines_are_read_as_they_are() -> None:
    items = parse_items(
        [
            json.dumps({"question": "Tom has 3 bags of 4.", "answer": "3*4=12\n#### 1,200"}),
            json.dumps({"question": "Pick", "choices": ["x", "y", "z"], "answer": 2}),
            json.dumps({"id": 7, "question": "Q", "choices": ["x", "y"], "answer": "y"}),
        ],
        "mine.jsonl",
    )
    gsm, mmlu, text = items
    assert (gsm.id, gsm.answers, gsm.scorer) == ("line-1", ("1200",), "numeric")
    assert (mmlu.answers, mmlu.scorer) == (("C",), "option")
    assert "C) z" in mmlu.question
    assert (text.id, text.answers) == ("7", ("B",))


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"id": "a", "question": "q", "answers": ["x"]', None, "not valid JSON"),
        ('{"id": "a", "answers": ["x"]}', "question", "question"),
        ('{"id": "a", "question": "q"}', "answers", "answers"),
        ('{"id": "a", "question": "q", "answers": []}', "answers", "non-empty"),
        ('{"id": "a", "question": "q", "answers": ["x"], "scorer": "fuzzy"}', "scorer", "fuzzy"),
        ('{"id": "a", "question": "q", "choices": ["x", "y"], "answer": 5}', "answer", "range"),
        ('["q", "a"]', None, "JSON object"),
    ],
)
def test_a_bad_line_names_file_line_and_field(
    tmp_path: Path, line: str, field: str | None, words: str
) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "ok", "question": "fine", "answers": ["1"]}\n\n' + line + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f)
    assert info.value.line == 3
    assert info.value.field == field
    assert f"{f}:3" in str(info.value)
    assert words in str(info.value)


def test_duplicate_ids_and_unknown_names_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "dup.jsonl"
    f.write_text('{"id": 1, "question": "a", "answers": ["1"]}\n' * 2)
    with pytest.raises(DatasetError, match="line 1"):
        load_dataset(f)
    with pytest.raises(DatasetError, match="bundled: facts, choice, arithmetic"):
        load_dataset("nope")


# -- scorers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answers", "scorer", "right"),
    [
        ("The capital of Canada is Ottawa.", ["Ottawa"], "exact", True),
        ("Ottawa is the capital.", ["Ottawa"], "exact", True),
        ("Toronto", ["Ottawa"], "exact", False),
        ("FINAL: the blue whale", ["blue whale"], "exact", True),
        ("17 * 23 = 391", ["391"], "numeric", True),
        ("It is 1,200 dollars", ["1200"], "numeric", True),
        ("39", ["391"], "numeric", False),
        ("The answer is (B).", ["B"], "option", True),
        ("C", ["B"], "option", False),
        (None, ["B"], "option", False),
    ],
)
def test_scorers(prediction: str | None, answers: list[str], scorer: str, right: bool) -> None:
    item = Item("x", "q", tuple(answers), scorer)
    assert (score_answer(prediction, item)[0] == 1.0) is right


def test_an_option_given_as_text_counts() -> None:
    item = Item("x", "q", ("B",), "option", ("Paris", "Lyon"))
    assert score_answer("Lyon", item) == (1.0, "B")


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0
    assert 0.25 < hi < 0.32
    lo, hi = wilson(10, 10)
    assert hi == 1.0
    assert 0.68 < lo < 0.75
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi
    assert abs((0.5 - lo) - (hi - 0.5)) < 1e-9


# -- the runner ------------------------------------------------------------------------


QUESTIONS = {f"What is {a} + {a}?": str(2 * a) for a in range(1, 121)}
WRONG = [str(n) for n in range(500, 504)]  # four wrong answers: chance is 1/5


def _dataset_file(tmp_path: Path, questions: dict[str, str], scorer: str = "numeric") -> Path:
    f = tmp_path / "set.jsonl"
    with f.open("w") as out:
        for i, (q, a) in enumerate(questions.items()):
            out.write(json.dumps({"id": f"q{i}", "question": q, "answers": [a], "scorer": scorer}))
            out.write("\n")
    return f


def _voting_config(tmp_path: Path, n: int, model: str) -> Path:
    voters = [f"v{i}" for i in range(n)]
    text = "\n".join(
        [
            f"name: voting-{n}",
            f"defaults: {{model: {model}, mode: text, max_tokens: 16, temperature: 0.7}}",
            "agents:",
            "  tally: {use: tally, args: {extract: last_number}}",
            *[f"  {v}: {{system_prompt: Reply with the number.}}" for v in voters],
            "edges:",
            f"  - {{from: tally, to: [{', '.join(voters)}], mutual: true}}",
            "entry: tally",
            "answer_by: tally",
            f"budgets: {{max_llm_calls: {n + 1}}}",
        ]
    )
    path = tmp_path / f"voting-{n}.yaml"
    path.write_text(text + "\n")
    return path


@pytest.mark.anyio
async def test_voting_accuracy_rises_with_n_for_independent_voters(tmp_path: Path) -> None:
    # Each voter is right 45% of the time and otherwise picks one of 4 wrong answers
    # (11% each): better than chance, and the right answer is the likeliest vote.
    model = NoisyModel(QUESTIONS, accuracy=0.45, wrong=WRONG, name="noisy-45")
    try:
        data = load_dataset(_dataset_file(tmp_path, QUESTIONS))
        configs = [_voting_config(tmp_path, n, "scripted/noisy-45") for n in (1, 5, 9)]
        with cg.seed_base(11):
            report = await run_eval(configs, data, concurrency=8, db=tmp_path / "e.db")
    finally:
        model.close()
    acc = {c.config: c.accuracy for c in report.configs}
    assert all(c.stop_reasons == {"answer": 120} for c in report.configs)
    # 1 voter: ~0.45; 5 voters: ~0.67; 9 voters: ~0.78 in expectation (binomial-plurality)
    assert acc["voting-1"] < acc["voting-5"] < acc["voting-9"], acc
    assert acc["voting-9"] - acc["voting-1"] > 0.15, acc
    ones = report.configs[0]
    assert ones.ci_low < ones.accuracy < ones.ci_high
    assert report.configs[2].llm_calls_per_item == 9


@pytest.mark.anyio
async def test_runs_are_stored_under_the_eval_id_and_failures_are_recorded(
    tmp_path: Path,
) -> None:
    (tmp_path / "scorer.py").write_text(
        "def score(prediction, item):\n"
        "    if item.id == 'q1':\n"
        "        raise RuntimeError('scorer broke')\n"
        "    return prediction.strip() == item.answers[0]\n"
    )
    f = tmp_path / "s.jsonl"
    f.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "question": q, "answers": [a], "scorer": "python:scorer.py:score"}
            )
            + "\n"
            for i, (q, a) in enumerate(list(QUESTIONS.items())[:3])
        )
    )
    (tmp_path / "mute.py").write_text("async def mute(ctx, message):\n    return None\n")
    (tmp_path / "mute.yaml").write_text(
        "name: mute\nagents:\n  m: {kind: python, python: mute.py:mute}\n"
    )
    model = NoisyModel(QUESTIONS, accuracy=1.0, wrong=WRONG, name="noisy-100")
    try:
        report = await run_eval(
            [_voting_config(tmp_path, 1, "scripted/noisy-100"), tmp_path / "mute.yaml"],
            load_dataset(f),
            db=tmp_path / "e.db",
        )
    finally:
        model.close()
    voting, mute = report.configs
    assert (voting.solved, voting.scorer_errors) == (2, 1)
    assert mute.stop_reasons == {"idle": 3}
    assert mute.solved == 0
    broken = next(i for i in report.items if i.item_id == "q1" and i.config == "voting-1")
    assert broken.scorer_error == "RuntimeError: scorer broke"
    tables = EvalTables(tmp_path / "e.db")
    try:
        stored = tables.items(report.eval_id)
        assert tables.latest() == report.eval_id
    finally:
        tables.close()
    assert len(stored) == 6
    from coral_graph.store import open_reader

    with open_reader(tmp_path / "e.db") as rd:
        run_ids = {r["run_id"] for r in rd.list_runs()}
    assert {i.run_id for i in stored} <= run_ids  # every item links to its transcript


def test_the_cli_prints_one_table_side_by_side_and_json(tmp_path: Path) -> None:
    model = NoisyModel(QUESTIONS, accuracy=1.0, wrong=WRONG, name="noisy-cli")
    try:
        data = _dataset_file(tmp_path, dict(list(QUESTIONS.items())[:4]))
        cfg = _voting_config(tmp_path, 3, "scripted/noisy-cli")
        runner = CliRunner()
        args = ["eval", str(cfg), str(CONFIGS / "single.yaml"), "-d", str(data)]
        args += ["--db", str(tmp_path / "c.db"), "--set", "defaults.model=scripted/noisy-cli"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert "voting-3" in res.output
        assert "single" in res.output
        assert "95% CI (Wilson)" in res.output
        assert "stop reasons" in res.output
        res = runner.invoke(app, [*args, "--json", "--n", "2"])
        out = json.loads(res.output)
        assert [c["config"] for c in out["configs"]] == ["voting-3", "single"]
        assert out["configs"][0]["accuracy"] == 1.0
        assert out["n"] == 2
        listed = runner.invoke(app, ["eval", "--list", "--db", str(tmp_path / "c.db")])
        assert out["eval_id"] in listed.output
    finally:
        model.close()
    bad = CliRunner().invoke(app, ["eval", str(cfg), "-d", str(tmp_path / "none.jsonl")])
    assert bad.exit_code == 1
    assert "no such file" in bad.output


SLOW_AGENT = """
import os
import anyio

async def answer(ctx, message):
    if "7 + 7" in message.content and not os.environ.get("FAST"):
        await anyio.sleep(3600)  # hangs: the eval is killed while it waits
    await ctx.send_message(message.thread_id, "14" if "7 + 7" in message.content else "0", ["user"])
"""


@pytest.mark.parametrize("inherited_sigint", INHERITED_SIGINT)
def test_a_killed_eval_resumes_where_it_stopped(tmp_path: Path, inherited_sigint: str) -> None:
    (tmp_path / "slow.py").write_text(SLOW_AGENT)
    (tmp_path / "slow.yaml").write_text(
        "name: slow\nagents:\n  a: {kind: python, python: slow.py:answer}\n"
    )
    qs = {"What is 1 + 1?": "2", "What is 7 + 7?": "14", "What is 2 + 2?": "4"}
    data = _dataset_file(tmp_path, qs)
    db = tmp_path / "k.db"
    cmd = [sys.executable, "-c", "from coral_graph.cli import main; main()", "eval"]
    cmd += [str(tmp_path / "slow.yaml"), "-d", str(data), "--db", str(db), "-c", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    eid = None

    def first_item_stored() -> bool:  # (then the second one hangs: interrupt it)
        nonlocal eid
        if not db.exists():
            return False
        tables = EvalTables(db)
        try:
            eid = tables.latest()
            return eid is not None and len(tables.items(eid)) >= 1
        finally:
            tables.close()

    code, _out, err = interrupt(
        cmd, first_item_stored, inherited_sigint=inherited_sigint, env=env,
        ready_within_s=60, exit_within_s=60,
    )  # fmt: skip
    assert code == 130, err
    assert "--resume" in err
    # resumed without --dataset: the eval's own dataset file is read again
    resume_cmd = [c for c in cmd if c not in ("-d", str(data))]
    resumed = subprocess.run(
        [*resume_cmd, "--resume", "last", "--json"],
        env={**env, "FAST": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["eval_id"] == eid
    assert report["complete"] is True
    assert report["configs"][0]["n"] == 3
    assert report["configs"][0]["solved"] == 1  # 14 only: the agent answers 0 otherwise
    assert [i["item_id"] for i in report["items"]] == ["q0", "q1", "q2"]
