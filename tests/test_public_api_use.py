"""The command line uses the public API only (and declares its shared options once);
the tests of the benchmark use its public API.

The CLI is a user of coral-graph like any other: what it needs from the core has a
public, documented home (``AgentGraph.check_ready``, ``handle_interrupts``, the
error types in ``coral_graph``). The bench's workloads are reached through
``coral_graph.bench.workload``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = sorted((ROOT / "coral_graph" / "cli").glob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def _private_core(module: str) -> bool:
    parts = module.split(".")
    return (
        len(parts) > 1
        and parts[0] == "coral_graph"
        and parts[1].startswith("_")
        and not parts[1].endswith("__")  # __version__
    )


@pytest.mark.parametrize("path", CLI, ids=lambda p: p.name)
def test_the_cli_imports_no_private_core_module(path: Path) -> None:
    bad = [f"{path.name}:{line} {mod}" for line, mod in _imports(path) if _private_core(mod)]
    assert not bad, f"the CLI reaches into the core's private modules: {bad}"


def test_the_check_finds_a_private_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from coral_graph import AgentGraph\n"
        "def f():\n    from coral_graph._runtime import check_ready\n"
        "import coral_graph._blocked\n"
    )
    found = sorted(mod for _, mod in _imports(probe) if _private_core(mod))
    assert found == [
        "coral_graph._blocked",
        "coral_graph._runtime",
        "coral_graph._runtime.check_ready",
    ]


def test_no_test_imports_the_bench_workload_modules() -> None:
    private = ("coral_graph.bench._coral", "coral_graph.bench._floor", "coral_graph.bench._util")
    bad = [
        f"{path.name}:{line} {mod}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, mod in _imports(path)
        if mod.startswith(private)
    ]
    assert not bad, f"use coral_graph.bench.workload / percentile instead: {bad}"


@pytest.mark.parametrize("flag", ["--model", "--set", "--db"])
def test_shared_options_are_declared_once(flag: str) -> None:
    # run, eval, validate, worker, record, show, view ... use the alias of cli/_app.py
    where = [p.name for p in CLI if f'"{flag}"' in p.read_text(encoding="utf-8")]
    assert where == ["_app.py"], where
