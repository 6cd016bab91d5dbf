"""Per-run sampling seeds: samples differ from run to run unless a seed is fixed.

A voter's samples must be independent across questions: a seed fixed in the graph
file makes every run draw the same "random" sample, so a bad seed is bad on every
question. :func:`run_seed` gives any agent (LLM or Python) a seed of its own for
the current run, derived from the run id and its name, so two runs sample
differently and two agents of one run too.

For reproducible experiments (``coral-graph eval --seed S``), :func:`seed_base`
fixes a base seed for the runs started inside it: the seed then derives from the
base, the task text and the agent's name, so a rerun draws the same samples while
different questions still get different seeds.

>>> class Ctx:  # anything with run_id, name and task
...     run_id, name, task = "run-1", "voter-a", "2 + 2?"
>>> run_seed(Ctx()) == run_seed(Ctx())
True
>>> other = Ctx(); other.run_id = "run-2"
>>> run_seed(Ctx()) != run_seed(other)
True
>>> with seed_base(7):
...     a = run_seed(Ctx())
>>> with seed_base(7):
...     b = run_seed(other)  # another run, same base and task: the same seed
>>> a == b
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["run_seed", "seed_base"]

_BASE: ContextVar[int | None] = ContextVar("coral_graph_seed_base", default=None)


@contextmanager
def seed_base(seed: int | None) -> Iterator[None]:
    """Fix the base of :func:`run_seed` for runs started inside the block
    (``None``: per-run seeds, the default). Runs started inside inherit it, as
    their tasks copy the caller's context."""
    token = _BASE.set(seed)
    try:
        yield
    finally:
        _BASE.reset(token)


def run_seed(ctx: Any, salt: str = "") -> int:
    """A 31-bit seed for the agent ``ctx.name`` in the run ``ctx.run_id``.

    Args:
        ctx: the agent's context (an :class:`~coral_graph.AgentContext`; any object
            with ``run_id``, ``name`` and ``task`` works).
        salt: tells apart several seeds one agent needs in one run.
    """
    base = _BASE.get()
    if base is None:
        key = f"run\x00{ctx.run_id}\x00{ctx.name}\x00{salt}"
    else:
        key = f"base\x00{base}\x00{getattr(ctx, 'task', '')}\x00{ctx.name}\x00{salt}"
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
