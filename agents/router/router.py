"""The router agent: a mixture-of-experts gate over specialist agents.

For each task the gate scores every specialist it can reach by the similarity of
the task to the specialist's description (cosine of bag-of-words vectors, after
lower-casing and dropping stop words), minus ``balance`` times the specialist's
share of the tasks routed so far (the load-balancing term of sparse MoE gates),
and sends the task to the ``k`` best in one thread. The answer is the reply of the
best-scored specialist that replied; the gate's scores, the choice and the load
counts are in the answer's metadata under ``router``.

>>> round(similarity("add these numbers", "exact arithmetic on numbers"), 3)
0.333
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["Router", "similarity"]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to in on for and or is are be it this that what which who how with "
    "by as at from your you me my i do does can please".split()
)


def _bag(text: str) -> Counter[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    # a light stemmer: "numbers" and "number" count as one word
    return Counter(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the bags of words of ``a`` and ``b`` (0 to 1)."""
    x, y = _bag(a), _bag(b)
    dot = sum(x[w] * y[w] for w in x)
    if not dot:
        return 0.0
    return dot / math.sqrt(sum(v * v for v in x.values()) * sum(v * v for v in y.values()))


@dataclass
class _Routed:
    task_thread: str
    chosen: list[str]
    scores: dict[str, float]
    replies: dict[str, str] = field(default_factory=dict)


class Router:
    """Routes each task to the top-``k`` specialists (see the module docs).

    Args:
        k: how many specialists get each task.
        balance: weight of the load-balancing term (0: similarity only).
        experts: the specialists (default: every agent this one can reach).
    """

    description = "Routes each task to the specialists that fit it best."

    def __init__(self, k: int = 1, balance: float = 0.1, experts: list[str] | None = None) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.balance = balance
        self.experts = experts
        self.load: Counter[str] = Counter()  # tasks routed to each specialist, all runs
        self._runs: dict[str, _Routed] = {}

    def gate(self, task: str, described: dict[str, str]) -> dict[str, float]:
        """The gate's score of each specialist for ``task``."""
        total = sum(self.load.values())
        return {
            name: round(
                similarity(task, desc) - self.balance * (self.load[name] / total if total else 0),
                6,
            )
            for name, desc in described.items()
        }

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        routed = self._runs.get(ctx.run_id)
        if routed is None:
            reachable = {a.name: a.description for a in await ctx.list_agents()}
            reachable.pop("user", None)
            names = self.experts if self.experts is not None else list(reachable)
            scores = self.gate(message.content, {n: reachable.get(n, "") for n in names})
            order = sorted(names, key=lambda n: (-scores[n], names.index(n)))
            chosen = order[: self.k]
            self.load.update(chosen)
            self._runs[ctx.run_id] = _Routed(message.thread_id, chosen, scores)
            thread = await ctx.create_thread("routed", chosen)
            await ctx.send_message(thread, message.content, chosen)
            return
        if message.sender not in routed.chosen or message.sender in routed.replies:
            return
        routed.replies[message.sender] = message.content.strip()
        if len(routed.replies) < len(routed.chosen):
            return
        del self._runs[ctx.run_id]
        best = routed.chosen[0]  # the best-scored specialist (all have replied)
        meta: dict[str, Any] = {
            "router": {
                "scores": routed.scores,
                "chosen": routed.chosen,
                "answered_by": best,
                "replies": routed.replies,
                "load": dict(self.load),
            }
        }
        await ctx.send_message(routed.task_thread, routed.replies[best], ["user"], metadata=meta)
