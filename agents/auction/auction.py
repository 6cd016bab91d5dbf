"""The auction agent: a strategy auction over bidders of different size and price.

SALE-style (strategy auctions for workload efficiency): instead of always sending
a task to the largest model, bidders on models of different size and price each
post a one-line strategy and the tokens they expect to spend. A jury scores each
bid ``value - lam * cost``:

* ``value``: the bidder's expected success on this *kind* of task, from the memory
  of past auctions: ``(right + 1) / (judged + 2)`` (a Beta(1, 1) prior, so an
  unknown bidder starts at 0.5);
* ``cost``: the bid's token estimate times the bidder's ``prices`` entry (US
  dollars per 1,000 tokens); a bid without ``COST:`` counts ``default_tokens``.

The winner carries out its strategy; its answer goes to the user. With a
``judge`` (an agent that replies OK or WRONG), the answer is checked first; a
WRONG answer is handed once to the most valuable other bidder (``escalate``), and
the verdict goes into the memory, so later auctions of that kind bid and score
differently. Each bidder is shown its own record in the call for bids.

The memory is kept in the store: two tables in the SQLite file ``memory`` (default
``$CORAL_DB`` or ``.coral/coral.db``): ``coral_auction_memory`` (kind, bidder,
wins, judged, right) and ``coral_auction_log`` (one row per auction).
:func:`auction_report` says how often the cheapest bidder won and what was spent
against an estimate of always using the most expensive one. Each answer's
metadata holds the whole auction under ``auction``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["Auction", "auction_report", "parse_bid"]

_COST = re.compile(r"cost\s*[:=]?\s*~?\s*(\d[\d,]*)", re.I)
_STRATEGY = re.compile(r"strategy\s*[:=]\s*(.+)", re.I)
_OK = re.compile(r"\b(ok|correct|right|yes)\b", re.I)
_WRONG = re.compile(r"\b(wrong|incorrect|no)\b", re.I)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS coral_auction_memory (
    kind TEXT NOT NULL, bidder TEXT NOT NULL,
    wins INTEGER NOT NULL DEFAULT 0, judged INTEGER NOT NULL DEFAULT 0,
    right INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, bidder)
);
CREATE TABLE IF NOT EXISTS coral_auction_log (
    ts REAL NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL, winner TEXT NOT NULL,
    cheapest TEXT NOT NULL, ok INTEGER, spent_usd REAL NOT NULL, largest_usd REAL NOT NULL
);
"""


def parse_bid(text: str, default_tokens: int) -> tuple[str, int]:
    """The strategy and token estimate of a bid.

    >>> parse_bid("STRATEGY: add the numbers\\nCOST: 1,200 tokens", 200)
    ('add the numbers', 1200)
    >>> parse_bid("I would just answer.", 200)
    ('I would just answer.', 200)
    """
    m = _STRATEGY.search(text)
    strategy = (m.group(1) if m else text).strip().splitlines()[0] if text.strip() else ""
    c = _COST.search(text)
    tokens = int(c.group(1).replace(",", "")) if c else default_tokens
    return strategy.strip(), max(1, tokens)


def _verdict(text: str) -> bool | None:
    if _WRONG.search(text):
        return False
    if _OK.search(text):
        return True
    return None


class _Memory:
    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        target = ":memory:" if path in (None, ":memory:") else str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.conn.executescript(_SCHEMA)

    def record(self, kind: str, bidder: str) -> tuple[int, int, int]:
        with self._lock:
            row = self.conn.execute(
                "SELECT wins, judged, right FROM coral_auction_memory WHERE kind=? AND bidder=?",
                (kind, bidder),
            ).fetchone()
        return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def update(self, kind: str, bidder: str, won: bool, ok: bool | None) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO coral_auction_memory (kind, bidder) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (kind, bidder),
            )
            self.conn.execute(
                "UPDATE coral_auction_memory SET wins = wins + ?, judged = judged + ?, "
                "right = right + ? WHERE kind = ? AND bidder = ?",
                (int(won), int(ok is not None), int(bool(ok)), kind, bidder),
            )

    def log(self, *row: Any) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO coral_auction_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)


def auction_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """How the auctions stored in ``path`` went: how often the cheapest bidder won,
    what was spent, and the estimate of always using the most expensive bidder."""
    conn = sqlite3.connect(str(path))
    try:
        conn.executescript(_SCHEMA)
        rows = conn.execute(
            "SELECT kind, winner, cheapest, ok, spent_usd, largest_usd FROM coral_auction_log"
        ).fetchall()
    finally:
        conn.close()
    n = len(rows)
    cheap = sum(1 for r in rows if r[1] == r[2])
    spent = sum(r[4] for r in rows)
    largest = sum(r[5] for r in rows)
    judged = [r for r in rows if r[3] is not None]
    return {
        "auctions": n,
        "cheapest_won": cheap,
        "cheapest_won_share": cheap / n if n else 0.0,
        "judged_right_share": sum(1 for r in judged if r[3]) / len(judged) if judged else None,
        "spent_usd": spent,
        "always_largest_usd": largest,
        "saved_usd": largest - spent,
    }


@dataclass
class _Sale:
    task: str
    task_thread: str
    kind: str
    thread: str = ""
    bids: dict[str, str] = field(default_factory=dict)
    ranked: list[dict[str, Any]] = field(default_factory=list)
    executor: str = ""
    answer: str = ""
    tried: list[str] = field(default_factory=list)
    stage: str = "bidding"


class Auction:
    """Runs a strategy auction per task (see the module docs).

    Args:
        bidders: the bidding agents (edges both ways).
        prices: US dollars per 1,000 tokens of each bidder's model.
        lam: the weight of cost against value (value is 0..1, cost in dollars).
        judge: an agent that replies OK or WRONG to a proposed answer (optional).
        escalate: hand a WRONG answer once to the most valuable other bidder.
        memory: the SQLite file of the memory (default: the store's file;
            ``:memory:`` keeps it for this process only).
        kinds: kind name -> regular expression; the first that matches the task
            names its kind (default: ``numeric`` when the task has a digit, else
            ``text``).
        default_tokens: the estimate of a bid without ``COST:``.
    """

    description = "Auctions each task to the bidder with the best value for its cost."

    def __init__(
        self,
        bidders: list[str],
        prices: dict[str, float],
        lam: float = 1.0,
        judge: str | None = None,
        escalate: bool = True,
        memory: str | None = None,
        kinds: dict[str, str] | None = None,
        default_tokens: int = 200,
    ) -> None:
        missing = [b for b in bidders if b not in prices]
        if missing:
            raise ValueError(f"prices: give the price per 1,000 tokens of {', '.join(missing)}")
        if lam < 0:
            raise ValueError("lam must be >= 0")
        self.bidders = list(bidders)
        self.prices = {k: float(v) for k, v in prices.items()}
        self.lam = lam
        self.judge = judge
        self.escalate = escalate
        self.kinds = [(k, re.compile(v)) for k, v in (kinds or {"numeric": r"\d"}).items()]
        self.default_tokens = default_tokens
        if memory is None:
            memory = os.environ.get("CORAL_DB") or ".coral/coral.db"
        self.memory = _Memory(memory)
        self._sales: dict[str, _Sale] = {}

    def kind_of(self, task: str) -> str:
        for name, rx in self.kinds:
            if rx.search(task):
                return name
        return "text"

    def value(self, kind: str, bidder: str) -> float:
        _, judged, right = self.memory.record(kind, bidder)
        return (right + 1) / (judged + 2)

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        sale = self._sales.get(ctx.run_id)
        if sale is None:
            sale = _Sale(message.content, message.thread_id, self.kind_of(message.content))
            self._sales[ctx.run_id] = sale
            judge = [self.judge] if self.judge is not None else []
            thread = await ctx.create_thread("auction", [*self.bidders, *judge])
            sale.thread = thread.id
            for b in self.bidders:  # each bidder sees its own record: memory refines bids
                _wins, judged, right = self.memory.record(sale.kind, b)
                record = (
                    f"Your record on {sale.kind} tasks: {right} right of {judged} checked."
                    if judged
                    else f"You have no record on {sale.kind} tasks yet."
                )
                await ctx.send_message(
                    thread,
                    f"Task: {sale.task}\n\n{record} Bid: reply with one line "
                    "STRATEGY: how you would solve it, and one line COST: the tokens "
                    "you expect to use. Do not solve it yet.",
                    [b],
                )
            return
        if sale.stage == "bidding" and message.sender in self.bidders:
            sale.bids.setdefault(message.sender, message.content)
            if len(sale.bids) == len(self.bidders):
                self._rank(sale)
                await self._execute(ctx, sale, sale.ranked[0]["bidder"])
            return
        if sale.stage == "executing" and message.sender == sale.executor:
            sale.answer = message.content.strip()
            if self.judge is not None:
                sale.stage = "judging"
                await ctx.send_message(
                    sale.thread,
                    f"Task: {sale.task}\nProposed answer: {sale.answer}\n\n"
                    "Reply OK if the answer is right, WRONG if it is not.",
                    [self.judge],
                )
                return
            await self._finish(ctx, sale, None)
            return
        if sale.stage == "judging" and message.sender == self.judge:
            ok = _verdict(message.content)
            self.memory.update(sale.kind, sale.executor, won=False, ok=ok)
            if ok is False and self.escalate:
                others = [b for b in sale.ranked if b["bidder"] not in sale.tried]
                if others:
                    best = max(others, key=lambda b: (b["value"], -b["cost_usd"]))
                    await self._execute(ctx, sale, best["bidder"])
                    return
            await self._finish(ctx, sale, ok)

    def _rank(self, sale: _Sale) -> None:
        rows = []
        for i, b in enumerate(self.bidders):
            strategy, tokens = parse_bid(sale.bids[b], self.default_tokens)
            cost = tokens / 1000 * self.prices[b]
            value = self.value(sale.kind, b)
            rows.append(
                {
                    "bidder": b,
                    "strategy": strategy[:200],
                    "tokens": tokens,
                    "cost_usd": cost,
                    "value": round(value, 4),
                    "score": round(value - self.lam * cost, 6),
                    "order": i,
                }
            )
        # best score first; ties to the cheaper bid, then to the bidder listed first
        sale.ranked = sorted(rows, key=lambda r: (-r["score"], r["cost_usd"], r["order"]))

    async def _execute(self, ctx: cg.AgentContext, sale: _Sale, bidder: str) -> None:
        sale.stage = "executing"
        sale.executor = bidder
        sale.tried.append(bidder)
        bid = next(r for r in sale.ranked if r["bidder"] == bidder)
        await ctx.send_message(
            sale.thread,
            f"You won the auction. Task: {sale.task}\nYour strategy: {bid['strategy']}\n"
            "Carry it out and reply with the answer only.",
            [bidder],
        )

    async def _finish(self, ctx: cg.AgentContext, sale: _Sale, ok: bool | None) -> None:
        del self._sales[ctx.run_id]
        self.memory.update(sale.kind, sale.tried[0], won=True, ok=None)
        cheapest = min(self.bidders, key=lambda b: (self.prices[b], self.bidders.index(b)))
        largest = max(self.bidders, key=lambda b: (self.prices[b], -self.bidders.index(b)))
        usage = ctx.run_usage
        spent = sum(u.cost_usd for u in usage.values())  # bids, execution and judge
        big = usage.get(largest)
        # Always using the largest: one call of it, priced as its calls here were.
        largest_usd = big.cost_usd / big.llm_calls if big is not None and big.llm_calls else 0.0
        self.memory.log(
            time.time(), ctx.run_id, sale.kind, sale.tried[0], cheapest,
            None if ok is None else int(ok), spent, largest_usd,
        )  # fmt: skip
        await ctx.send_message(
            sale.task_thread,
            sale.answer or "(no answer)",
            ["user"],
            metadata={
                "auction": {
                    "kind": sale.kind,
                    "bids": sale.ranked,
                    "winner": sale.tried[0],
                    "executed_by": sale.tried,
                    "judged_ok": ok,
                    "lam": self.lam,
                    "spent_usd": spent,
                    "always_largest_usd": largest_usd,
                }
            },
        )
