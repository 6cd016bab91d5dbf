"""`coral-graph bench --mcp` runs end to end (tiny sizes; no speed is asserted)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coral_graph.bench import _mcp
from coral_graph.bench._main import main
from coral_graph.bench._mcp import mcp_bench


def test_mcp_bench_measures_ours_beside_the_floor() -> None:
    lines: list[str] = []
    figures = mcp_bench(round_trips=5, warmup=1, repeats=1, log=lines.append)
    assert set(figures) == {"floor", "coral-graph"}
    for fig in figures.values():
        assert fig["round_trips_per_s"] > 0
        assert 0 < fig["p50_us"] <= fig["p99_us"]
    assert figures["coral-graph"]["ratio_to_floor"] > 0
    assert len(lines) == 1


def test_the_bench_flag_reports_mcp_rows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake(**kwargs: Any) -> dict[str, dict[str, Any]]:
        seen.update(kwargs)
        return {"floor": {"round_trips_per_s": 2.0}, "coral-graph": {"ratio_to_floor": 0.5}}

    monkeypatch.setattr(_mcp, "mcp_bench", fake)
    assert main(["--only", "none", "--quick", "--json", "--mcp"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["workload"], r["impl"]) for r in rows] == [
        ("mcp-rtt", "floor"),
        ("mcp-rtt", "coral-graph"),
    ]
    assert seen["round_trips"] == 50
