"""The benchmark runs end to end and reports every figure (never judged on speed here)."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest

from coral_graph.bench import percentile, workload

pytestmark = pytest.mark.anyio


def test_percentile_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0


async def test_ring_delivers_exactly_the_budgeted_hops() -> None:
    with anyio.fail_after(30):
        fig = await workload("coral-graph", "ring", n=20, tokens=4, hops=400)
    assert fig["deliveries"] == 400
    assert fig["deliveries_per_s"] > 0


async def test_fanout_every_participant_counts_every_message() -> None:
    with anyio.fail_after(30):
        fig = await workload("coral-graph", "fanout", participants=5, messages=40)
    assert fig["deliveries"] == 200


async def test_pingpong_times_every_round_trip() -> None:
    with anyio.fail_after(30):
        fig = await workload("coral-graph", "pingpong", warmup=5, rounds=50)
    assert fig["p99_rtt_us"] >= fig["p50_rtt_us"] > 0
    # task + (5 + 50) pings and pongs, each a message_sent and a delivery_handled event
    assert fig["events"] > 4 * 55


async def test_floor_matches_the_same_workloads() -> None:
    with anyio.fail_after(30):
        ring = await workload("floor", "ring", n=20, tokens=4, hops=400)
        fan = await workload("floor", "fanout", participants=5, messages=40)
    assert ring["deliveries"] == 400
    assert fan["deliveries"] == 200


def test_cli_json_lines_name_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coral_graph.bench", "--quick", "--json", "--only", "pingpong,idle"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    by = {(r["workload"], r["impl"]): r for r in rows}
    assert {"p50_rtt_us", "p99_rtt_us", "round_trips_per_s"} <= set(by[("pingpong", "coral-graph")])
    assert {"start_s", "kib_per_agent", "shutdown_s"} <= set(by[("idle", "coral-graph")])
    assert by[("pingpong", "floor")]["ratio_to_floor"] == 1.0


def test_cli_cpu_clock_reports_the_same_figures() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coral_graph.bench",
            "--quick",
            "--json",
            "--only",
            "ring,idle",
            "--clock",
            "cpu",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(r["workload"], r["impl"]) for r in rows} >= {
        ("ring", "floor"), ("ring", "coral-graph"), ("idle", "coral-graph"),
    }  # fmt: skip
    assert all(r["ratio_to_floor"] > 0 for r in rows if r["workload"] == "ring")
