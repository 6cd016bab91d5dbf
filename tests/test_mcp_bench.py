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
    # Ours with a wait kept in flight (the main figure) and one call at a time, the
    # floor's one echo per round trip, two sequential echoes, and the round trip on a
    # bare SDK mailbox (what bounds ours).
    assert list(figures) == [
        "floor",
        "floor-2calls",
        "floor-relay",
        "coral-graph",
        "coral-graph-seq",
    ]
    for fig in figures.values():
        assert fig["round_trips_per_s"] > 0
        assert 0 < fig["p50_us"] <= fig["p99_us"]
        assert fig["client_cpu_us"] > 0
    for impl in ("floor-2calls", "floor-relay", "coral-graph", "coral-graph-seq"):
        assert figures[impl]["ratio_to_floor"] > 0
    assert "ratio_to_floor" not in figures["floor"]
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
