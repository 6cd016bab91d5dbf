"""What an eval measured, per config: accuracy with a Wilson interval, spend, latency."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConfigReport", "ItemResult", "percentile", "summarise", "wilson"]


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of ``successes`` out of ``n``.

    >>> lo, hi = wilson(30, 60)
    >>> round(lo, 3), round(hi, 3)
    (0.377, 0.623)
    >>> wilson(0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None when empty.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(slots=True)
class ItemResult:
    """One config on one item."""

    config: str
    item_id: str
    run_id: str | None
    stop_reason: str
    answer: str | None
    extracted: str | None
    score: float
    llm_calls: int
    tokens: int
    cost_usd: float
    latency_s: float
    error: str | None = None
    scorer_error: str | None = None

    @property
    def solved(self) -> bool:
        return self.score >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "item_id": self.item_id,
            "run_id": self.run_id,
            "stop_reason": self.stop_reason,
            "answer": self.answer,
            "extracted": self.extracted,
            "score": self.score,
            "solved": self.solved,
            "llm_calls": self.llm_calls,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "error": self.error,
            "scorer_error": self.scorer_error,
        }


@dataclass(slots=True)
class ConfigReport:
    """The figures of one config over the items it ran."""

    config: str
    n: int
    solved: int
    accuracy: float
    ci_low: float
    ci_high: float
    llm_calls_per_item: float
    tokens_per_item: float
    cost_per_item: float
    cost_per_solved: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    stop_reasons: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    scorer_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def summarise(config: str, results: Sequence[ItemResult]) -> ConfigReport:
    """The :class:`ConfigReport` of ``results`` (all of one config)."""
    n = len(results)
    solved = sum(1 for r in results if r.solved)
    lo, hi = wilson(solved, n)
    cost = sum(r.cost_usd for r in results)
    lat = [r.latency_s for r in results]
    return ConfigReport(
        config=config,
        n=n,
        solved=solved,
        accuracy=solved / n if n else 0.0,
        ci_low=lo,
        ci_high=hi,
        llm_calls_per_item=sum(r.llm_calls for r in results) / n if n else 0.0,
        tokens_per_item=sum(r.tokens for r in results) / n if n else 0.0,
        cost_per_item=cost / n if n else 0.0,
        cost_per_solved=cost / solved if solved else None,
        latency_p50_s=percentile(lat, 50),
        latency_p95_s=percentile(lat, 95),
        stop_reasons=dict(Counter(r.stop_reason for r in results).most_common()),
        errors=sum(1 for r in results if r.error),
        scorer_errors=sum(1 for r in results if r.scorer_error),
    )


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    return "$0" if x == 0 else f"${x:.6f}" if x < 0.01 else f"${x:.4f}"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def table_rows(reports: Sequence[ConfigReport]) -> list[tuple[str, list[str]]]:
    """The report as rows (metric, one cell per config): configs side by side."""
    return [
        ("items", [str(r.n) for r in reports]),
        ("solved", [str(r.solved) for r in reports]),
        ("accuracy", [f"{r.accuracy:.1%}" for r in reports]),
        ("95% CI (Wilson)", [f"{r.ci_low:.1%} - {r.ci_high:.1%}" for r in reports]),
        ("LLM calls / item", [f"{r.llm_calls_per_item:.2f}" for r in reports]),
        ("tokens / item", [f"{r.tokens_per_item:,.0f}" for r in reports]),
        ("cost / item", [_money(r.cost_per_item) for r in reports]),
        ("cost / solved item", [_money(r.cost_per_solved) for r in reports]),
        ("latency p50", [_secs(r.latency_p50_s) for r in reports]),
        ("latency p95", [_secs(r.latency_p95_s) for r in reports]),
        (
            "stop reasons",
            [", ".join(f"{k} {v}" for k, v in r.stop_reasons.items()) or "-" for r in reports],
        ),
        ("errors (run / scorer)", [f"{r.errors} / {r.scorer_errors}" for r in reports]),
    ]
