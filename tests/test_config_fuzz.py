"""Fuzzing the YAML loader: whatever the text, loading it ends in a graph or in a
ConfigError whose lines are printable and placed — never another exception.

Three sources of input: YAML-ish text made of the characters YAML reacts to,
random documents over the schema's own keys (dumped as YAML), and mutations of the
shipped ``configs/`` (lines dropped, doubled, swapped, re-indented, tokens and
characters inserted). Valid graphs made at random must load with exactly their
edges.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_graph import ConfigError
from coral_graph.config import check_graph, parse_spec
from coral_graph.config._spec import AgentDef, BudgetsSpec, GraphSpec, ModelSettings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TEXTS = {p.name: p.read_text("utf-8") for p in CONFIGS}

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

SECRET = "sk-FUZZ-secret-0001"
ENV = {"FUZZ_SECRET": SECRET}


def _keys(model: Any) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


VOCAB = sorted(
    {*_keys(GraphSpec), *_keys(AgentDef), *_keys(BudgetsSpec), *_keys(ModelSettings)}
    | {"planner", "solver", "critic", "calculator", "user", "a", "b", "from", "to", "mutual"}
)


def check_outcome(load: Any) -> None:
    """Run ``load()``: a result, or a ConfigError that is well formed."""
    error: ConfigError | None = None
    try:
        load()
    except ConfigError as exc:
        error = exc
    if error is None:
        return
    text = str(error)
    assert text, "an empty error"
    lines = text.splitlines()
    assert lines == [str(p) for p in error.problems]
    for line in lines:
        assert line.isprintable(), line
        assert SECRET not in line
    for p in error.problems:
        assert p.field is None or p.field.isprintable()


def load_text(text: str, *, registry: bool = True) -> None:
    """Check ``text`` as a graph file (registry lookups and python: checks included)."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "g.yaml"
        f.write_text(text, "utf-8", errors="surrogatepass")
        if registry:
            check_outcome(lambda: check_graph(f, env=ENV))
        else:
            check_outcome(lambda: parse_spec(text, "g.yaml", env=ENV))


# -- YAML-ish text --------------------------------------------------------------------

YAML_CHARS = (
    "abcdeflmnoprstuy_-0123456789 \n\n\n  :::---,,[]{}#&*!|>'\"%@`?<=.$\\\t"
    "\x00\x07\x1b\x85\u2028\u202e\ufeff\u00e9"
)
TOKENS = [
    "agents:",
    "\n  ",
    "\n    ",
    "edges:",
    "entry:",
    "budgets:",
    "max_messages:",
    "use: planner",
    "python: x.py:A",
    "kind: human",
    " -> ",
    " <-> ",
    "&a ",
    "*a",
    "<<: *a",
    "!!int ",
    "!!binary ",
    "!!python/object:os.system ",
    "!!set ",
    "? ",
    "- ",
    "${FUZZ_SECRET}",
    "${",
    "$$",
    "1e308",
    ".nan",
    "99999999999999999999999",
    "{",
    "}",
    "[",
    "]",
]


@FUZZ
@given(st.text(alphabet=YAML_CHARS, max_size=300))
def test_yamlish_text_never_raises_anything_else(text: str) -> None:
    load_text(text, registry=False)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(YAML_CHARS, max_size=4), max_size=60))
def test_token_soup_never_raises_anything_else(parts: list[str]) -> None:
    load_text("".join(parts))


# -- documents over the schema's keys -------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(VOCAB)
    | st.text(max_size=12)
    | st.sampled_from(["a -> b", "planner <-> solver", "x.py:A", "${FUZZ_SECRET}", "sk-1"])
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(VOCAB) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(VOCAB), documents, max_size=6))
def test_documents_over_the_schema_never_raise_anything_else(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    load_text(text)


# -- mutations of the shipped configs ------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(TEXTS)))
    lines = TEXTS[name].splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "double", "swap", "indent", "dedent", "insert", "char"]))
        if op == "drop":
            del lines[i]
        elif op == "double":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i].lstrip()
        elif op == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(TOKENS)) + lines[i][at:]
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = (
                lines[i][:at]
                + draw(st.text(YAML_CHARS, min_size=1, max_size=2))
                + (lines[i][at + 1 :])
            )
    return "\n".join(lines) + "\n"


@FUZZ
@given(mutated())
def test_mutated_configs_never_raise_anything_else(text: str) -> None:
    load_text(text)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_shipped_configs_still_load(path: Path) -> None:
    lg = check_graph(path)
    assert lg.warnings == []
    assert len(lg.graph) >= 1


# -- valid graphs made at random load exactly ----------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9_-]{0,10}\Z").filter(lambda n: n != "user")


@FUZZ
@given(
    st.lists(names, min_size=1, max_size=6, unique=True).flatmap(
        lambda agents: st.tuples(
            st.just(agents),
            st.lists(
                st.tuples(st.sampled_from(agents), st.sampled_from(agents)).filter(
                    lambda e: e[0] != e[1]
                ),
                max_size=10,
            ),
            st.integers(0, 2**53 - 1),
            st.floats(0, 1e300),
        )
    )
)
def test_random_valid_graphs_load_with_exactly_their_edges(
    graph: tuple[list[str], list[tuple[str, str]], int, float],
) -> None:
    agents, edges, max_messages, cost = graph
    text = yaml.safe_dump(
        {
            "agents": {a: {"kind": "human"} for a in agents},
            "edges": [f"{a} -> {b}" for a, b in edges],
            "entry": agents[0],
            "budgets": {"max_messages": max_messages, "max_cost_usd": cost},
        }
    )
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "g.yaml"
        f.write_text(text)
        lg = check_graph(f)
    assert set(lg.graph.edges) == set(edges)
    assert lg.budgets.max_messages == max_messages
    assert lg.budgets.max_cost_usd == cost
    assert os.path.basename(str(lg.path)) == "g.yaml"


# -- --set overrides ------------------------------------------------------------------

set_paths = st.lists(
    st.sampled_from(VOCAB) | st.sampled_from(["[0]", "[9]", "", "."]), min_size=0, max_size=5
).map(lambda parts: ".".join(parts).replace(".[", "["))


@FUZZ
@given(
    st.lists(
        st.tuples(set_paths, st.sampled_from(["=", "", "=="]), st.text(YAML_CHARS, max_size=20))
        | st.tuples(set_paths, st.just("="), st.sampled_from(TOKENS)),
        max_size=4,
    )
)
def test_random_set_overrides_never_raise_anything_else(
    items: list[tuple[str, str, str]],
) -> None:
    overrides = ["".join(item) for item in items]
    check_outcome(lambda: check_graph(CONFIGS[0], overrides=overrides, env=ENV))
