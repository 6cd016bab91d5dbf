"""The broken-config corpus: every file must fail with exactly its .expected message."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral_graph import ConfigError
from coral_graph.config import check_graph, load_graph

CORPUS = Path(__file__).parent / "broken_configs"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
# Problems only importing the code can find: `validate` (check_graph) runs no code,
# so these pass it and fail when a run loads them (load_graph).
LOAD_ONLY = {"python_bad_args", "python_import_fails", "python_exits"}


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert all((CORPUS / f"{c}.expected").is_file() for c in CASES)


@pytest.mark.parametrize("case", CASES)
def test_broken_file_reports_exactly(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    monkeypatch.delenv("CORAL_TEST_SURELY_UNSET", raising=False)
    expected = (CORPUS / f"{case}.expected").read_text("utf-8").rstrip("\n")
    if case in LOAD_ONLY:
        check_graph(f"{case}.yaml")
    with pytest.raises(ConfigError) as info:
        (load_graph if case in LOAD_ONLY else check_graph)(f"{case}.yaml")
    err = info.value
    assert str(err) == expected
    # One ConfigError per problem, with the position as attributes.
    assert [str(p) for p in err.problems] == expected.splitlines()
    first = err.problems[0]
    assert (err.path, err.line, err.column, err.field) == (
        first.path,
        first.line,
        first.column,
        first.field,
    )


def test_several_problems_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ConfigError) as info:
        check_graph("several_problems.yaml")
    fields = [p.field for p in info.value.problems]
    assert fields == [
        "agents.planner.temprature",
        "agents.solver.max_tokens",
        "edges[0]",
        "entry",
    ]
    assert [(p.line, p.column) for p in info.value.problems] == [(5, 5), (8, 17), (10, 5), (11, 8)]


def test_a_secret_in_the_wrong_place_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    for case in ("api_key_literal", "api_key_env_value"):
        with pytest.raises(ConfigError) as info:
            check_graph(f"{case}.yaml")
        assert "sk-live" not in str(info.value)


def test_an_interpolated_value_is_not_echoed(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("agents:\n  a:\n    use: solver\n    temperature: ${TEMP}\n")
    with pytest.raises(ConfigError) as info:
        load_graph(f, env={"TEMP": "s3cret-value"})
    assert "s3cret-value" not in str(info.value)
    assert 'the value of "${TEMP}"' in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_graph(tmp_path / "nope.yaml")


def test_a_bad_set_override_names_the_option(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("agents:\n  a: {use: solver}\n")
    with pytest.raises(ConfigError) as info:
        check_graph(f, overrides=["budgets.max_messages=lots", "oops"])
    assert str(info.value).splitlines() == [
        "--set budgets.max_messages=lots: budgets.max_messages: expected a whole number, "
        'got a string ("lots")',
        '--set oops: expected path=value, e.g. "agents.solver.temperature=0.2"',
    ]
    with pytest.raises(ConfigError) as info:
        check_graph(f, overrides=["budgets.max_messages=lots"])
    assert str(info.value) == (
        "--set budgets.max_messages=lots: budgets.max_messages: expected a whole number, "
        'got a string ("lots")'
    )
