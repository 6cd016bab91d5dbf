"""The benchmark driver: runs the workloads, prints a table and JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import platform
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from coral_graph.bench import _coral, _floor
from coral_graph.bench._util import median, set_clock

WORKLOADS = ("pingpong", "ring", "fanout", "idle")

# The figure each workload is judged on, and whether higher is better.
HEADLINE = {
    "pingpong": ("round_trips_per_s", True),
    "ring": ("deliveries_per_s", True),
    "fanout": ("deliveries_per_s", True),
    "idle": ("start_s", False),
}


@dataclass
class BenchConfig:
    """Sizes of the workloads (BENCH.md's by default; ``quick`` shrinks them)."""

    repeat: int = 3
    warmup: int = 1_000
    rounds: int = 20_000
    ring_agents: int = 1_000
    ring_tokens: int = 100
    ring_hops: int = 200_000
    fanout_participants: int = 50
    fanout_messages: int = 2_000
    idle_agents: int = 100_000
    workloads: tuple[str, ...] = WORKLOADS
    extras: tuple[str, ...] = field(default_factory=tuple)
    small: bool = False

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            repeat=1,
            warmup=100,
            rounds=2_000,
            ring_hops=20_000,
            fanout_messages=200,
            idle_agents=10_000,
            small=True,
        )


Runner = Callable[[], Coroutine[Any, Any, dict[str, Any]]]


def _runners(cfg: BenchConfig, mod: Any) -> dict[str, Runner]:
    return {
        "pingpong": lambda: mod.pingpong(cfg.warmup, cfg.rounds),
        "ring": lambda: mod.ring(cfg.ring_agents, cfg.ring_tokens, cfg.ring_hops),
        "fanout": lambda: mod.fanout(cfg.fanout_participants, cfg.fanout_messages),
    }


_IMPLS: dict[str, Any] = {"floor": _floor, "coral-graph": _coral}


async def workload(impl: str, name: str, **sizes: int) -> dict[str, Any]:
    """Run workload ``name`` (``pingpong``, ``ring`` or ``fanout``) once on ``impl``
    (``coral-graph`` or ``floor``) with the given sizes, and return its figures.

    Sizes: pingpong ``warmup``, ``rounds``; ring ``n``, ``tokens``, ``hops``;
    fanout ``participants``, ``messages``. Figures as in BENCH.md (and
    ``deliveries``/``events``, to check that the work was done)."""
    mod = _IMPLS.get(impl)
    if mod is None or name not in ("pingpong", "ring", "fanout"):
        raise ValueError(f"unknown workload {impl!r}/{name!r}")
    figures: dict[str, Any] = await getattr(mod, name)(**sizes)
    return figures


def _idle_subprocess(impl: str, agents: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "coral_graph.bench._idle", impl, str(agents)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in samples[0] if isinstance(samples[0][k], int | float)]
    return {k: median([float(s[k]) for s in samples]) for k in keys}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the workloads; return one row per (workload, impl) with median figures."""
    impls: dict[str, Any] = dict(_IMPLS)
    if importlib.util.find_spec("autogen_core") is not None:
        from coral_graph.bench import _autogen

        impls["autogen-core"] = _autogen
    else:
        log(
            "  autogen-core is not installed (pip install 'coral-graph[bench]'): "
            "its column is skipped"
        )
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(cfg.repeat):
        order = list(impls.items()) if r % 2 == 0 else list(reversed(impls.items()))
        for workload in cfg.workloads:
            for impl, mod in order:
                if workload == "idle":
                    fig = _idle_subprocess(impl, cfg.idle_agents)
                else:
                    # Each measurement starts from a collected heap: a full collection
                    # owed by an earlier run would otherwise land in this one at random.
                    gc.collect()
                    fig = asyncio.run(_runners(cfg, mod)[workload]())
                samples.setdefault((workload, impl), []).append(fig)
                log(f"  repeat {r + 1}/{cfg.repeat} {workload:<8} {impl:<11} {_short(fig)}")
    rows: list[dict[str, Any]] = []
    for workload in cfg.workloads:
        floor = _medians(samples[(workload, "floor")])
        for impl in impls:
            med = _medians(samples[(workload, impl)])
            key, _higher = HEADLINE[workload]
            ratio = med[key] / floor[key] if floor[key] else float("nan")
            rows.append(
                {
                    "workload": workload,
                    "impl": impl,
                    **{k: round(v, 3) for k, v in med.items()},
                    "ratio_to_floor": round(ratio, 3),
                    "headline": key,
                    "repeats": cfg.repeat,
                }
            )
    for extra in cfg.extras:
        rows.extend(_run_extra(extra, cfg, log))
    return rows


def _run_extra(name: str, cfg: BenchConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Optional sections that live with their areas: the cost of durability (the
    SQLite store on and off, same run) and the token efficiency of thread-scoped
    context against a full-history baseline (a scripted scenario, same replies)."""
    if name == "store":
        from coral_graph.store._bench import durability_bench

        pairs = max(cfg.repeat, 5)
        log(f"  store: ring and fanout with the SQLite store off and on ({pairs} pairs) ...")
        figures = durability_bench(repeats=pairs, quick=cfg.small)
        return [
            {"workload": f"{workload}+store", "impl": "coral-graph", **_rounded(fig)}
            for workload, fig in figures.items()
        ]
    if name == "tokens":
        from coral_graph.llm._efficiency import measure_token_efficiency

        log("  tokens: the scripted multi-agent scenario, ours against full history ...")
        report = measure_token_efficiency()
        return [{"workload": "tokens", "impl": "coral-graph", **_rounded(report.to_dict())}]
    if name == "mcp":
        from coral_graph.bench._mcp import mcp_bench

        n, warmup = (50, 10) if cfg.small else (300, 30)
        repeats = 1 if cfg.small else max(cfg.repeat, 3)
        log(f"  mcp: {n} round trips between two external agents and the SDK echo floor ...")
        figures = mcp_bench(round_trips=n, warmup=warmup, repeats=repeats, log=log)
        return [
            {"workload": "mcp-rtt", "impl": impl, **_rounded(fig)} for impl, fig in figures.items()
        ]
    raise ValueError(f"unknown bench section {name!r}")


def _rounded(fig: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in fig.items()}


def _short(fig: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in fig.items())


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    hidden = {"workload", "impl", "ratio_to_floor", "headline", "repeats", "deliveries", "events"}
    texts = [
        "  ".join(
            f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in hidden
        )
        for row in rows
    ]
    width = max([62, *(len(t) + 1 for t in texts)])
    iw = max([17, *(len(str(row["impl"])) + 1 for row in rows)])  # e.g. lean2025:coral-graph-seq
    lines = [
        f"{'workload':<14}{'impl':<{iw}}{'figures (median)':<{width}}{'÷ floor':>9}",
        "-" * (23 + iw + width),
    ]
    for row, text in zip(rows, texts, strict=True):
        ratio = row.get("ratio_to_floor")
        lines.append(
            f"{row['workload']:<14}{row['impl']:<{iw}}{text:<{width}}"
            f"{(f'{ratio:.2f}x' if isinstance(ratio, float) else ''):>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if any(a == "--nats" or a.startswith("--nats=") for a in args_in):
        from coral_graph.bench._nats import main as nats_main  # the workloads over NATS

        return nats_main(args_in)
    parser = argparse.ArgumentParser(prog="coral-graph bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--only", default="", help="comma-separated workloads")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument(
        "--store", action="store_true", help="also ring/fanout with the SQLite store on and off"
    )
    parser.add_argument("--tokens", action="store_true", help="also the token-efficiency scenario")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time with the wall clock, or with this process's CPU time (steadier on a "
        "shared, loaded machine; every workload runs on one thread)",
    )
    parser.add_argument(
        "--mcp", action="store_true", help="also round trips between external agents over MCP"
    )
    args = parser.parse_args(argv)
    set_clock(args.clock)
    cfg = BenchConfig.quick() if args.quick else BenchConfig(repeat=args.repeat)
    if args.only == "none":
        args.only = ""
        cfg.workloads = ()
    if args.only:
        wanted = tuple(w.strip() for w in args.only.split(",") if w.strip())
        unknown = [w for w in wanted if w not in WORKLOADS]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
        cfg.workloads = wanted
    extras = []
    if args.store:
        extras.append("store")
    if args.tokens:
        extras.append("tokens")
    if args.mcp:
        extras.append("mcp")
    cfg.extras = tuple(extras)

    def log(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    log(
        f"coral-graph bench on {platform.python_implementation()} {platform.python_version()}"
        f" ({args.clock} clock)"
    )
    rows = run_bench(cfg, log)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0
