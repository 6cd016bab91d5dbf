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
    # Each client's group: the official client (ours with a wait kept in flight, the
    # main figure, and one call at a time; the floor's one echo per round trip, two
    # sequential echoes, the round trip on a bare SDK mailbox), the lean client on
    # the official client's protocol, and the lean client through the handshake.
    assert list(figures) == [
        "floor",
        "floor-2calls",
        "floor-relay",
        "coral-graph",
        "coral-graph-seq",
        "lean:floor",
        "lean:floor-relay",
        "lean:coral-graph",
        "lean:coral-graph-seq",
        "lean2025:floor",
        "lean2025:coral-graph",
        "lean2025:coral-graph-seq",
    ]
    for impl, fig in figures.items():
        assert fig["round_trips_per_s"] > 0
        assert 0 < fig["p50_us"] <= fig["p99_us"]
        assert fig["client_cpu_us"] > 0
        assert fig["client"] == _mcp.IMPLS[impl][0]
        # Each row against the floor measured with its own client.
        assert ("ratio_to_floor" in fig) is (impl != _mcp.floor_of(impl))
        assert fig.get("ratio_to_floor", 1) > 0
    assert {_mcp.floor_of(k) for k in figures} == {"floor", "lean:floor", "lean2025:floor"}
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


def test_the_table_keeps_long_row_names_apart_from_their_figures() -> None:
    from coral_graph.bench._main import format_table

    rows = [
        {"workload": "mcp-rtt", "impl": "floor", "round_trips_per_s": 900.0},
        {"workload": "mcp-rtt", "impl": "lean2025:coral-graph-seq", "round_trips_per_s": 170.0},
    ]
    lines = format_table(rows).splitlines()
    assert "lean2025:coral-graph-seq round_trips_per_s=170.00" in lines[-1]
    # The figures start in one column, whatever the row's name.
    assert {line.index("round_trips_per_s") for line in lines[2:]} == {lines[0].index("figures")}
