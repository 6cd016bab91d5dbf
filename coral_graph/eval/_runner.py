"""Run every config on every item of a dataset, store each run, score it, resume.

Every run goes into the transcript store as usual; the eval keeps its own two
tables in the same SQLite file (created here, separate from the store's schema):

* ``coral_evals``: one row per eval (id, dataset, configs, settings, when);
* ``coral_eval_items``: one row per (eval, config, item) once its run has finished:
  the run id (its transcript: ``coral-graph show RUN_ID``), the stop reason, the
  answer, the score, calls, tokens, cost, latency and any error.

A row is written only when a run has finished and been scored, so an eval killed
half-way (Ctrl-C, a crash) is resumed with ``--resume EVAL_ID``: the items that have
a row are kept, the rest run again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from coral_graph._errors import CoralError
from coral_graph.eval._datasets import Dataset, Item
from coral_graph.eval._report import ConfigReport, ItemResult, summarise
from coral_graph.eval._scorers import score_answer

__all__ = ["EvalError", "EvalReport", "EvalTables", "new_eval_id", "run_eval"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coral_evals (
    eval_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    dataset TEXT NOT NULL,
    source TEXT NOT NULL,
    configs TEXT NOT NULL,
    n INTEGER NOT NULL,
    seed INTEGER,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS coral_eval_items (
    eval_id TEXT NOT NULL,
    config TEXT NOT NULL,
    item_id TEXT NOT NULL,
    run_id TEXT,
    stop_reason TEXT NOT NULL,
    answer TEXT,
    extracted TEXT,
    score REAL NOT NULL,
    llm_calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_s REAL NOT NULL,
    error TEXT,
    scorer_error TEXT,
    finished REAL NOT NULL,
    PRIMARY KEY (eval_id, config, item_id)
);
"""
_ITEM_COLS = (
    "config",
    "item_id",
    "run_id",
    "stop_reason",
    "answer",
    "extracted",
    "score",
    "llm_calls",
    "tokens",
    "cost_usd",
    "latency_s",
    "error",
    "scorer_error",
)


class EvalError(CoralError):
    """An eval that cannot start or resume; the message says what to do."""


def new_eval_id() -> str:
    """A new, time-sortable eval id such as ``eval-18c9f2a3b41-5e2f``."""
    return f"eval-{int(time.time() * 1000):x}-{secrets.token_hex(2)}"


class EvalTables:
    """The eval's own tables in the store's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The store's own writer connection: a new file gets the store's schema (in
        # one step) before the eval's tables, so it stays a coral-graph store that
        # ``runs``/``show`` and the next SQLiteStore accept.
        from coral_graph.store._schema import connect_writer

        self.conn = connect_writer(path)
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def get(self, eval_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT eval_id, created, dataset, source, configs, n, seed, settings "
            "FROM coral_evals WHERE eval_id = ?",
            (eval_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("eval_id", "created", "dataset", "source", "configs", "n", "seed", "settings")
        out = dict(zip(keys, row, strict=True))
        out["configs"] = json.loads(out["configs"])
        out["settings"] = json.loads(out["settings"])
        return out

    def latest(self) -> str | None:
        row = self.conn.execute(
            "SELECT eval_id FROM coral_evals ORDER BY created DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])

    def list_evals(self) -> list[dict[str, Any]]:
        """Every eval, newest first, with its item count."""
        rows = self.conn.execute(
            "SELECT e.eval_id, e.created, e.dataset, e.configs, e.n, "
            "(SELECT COUNT(*) FROM coral_eval_items i WHERE i.eval_id = e.eval_id) "
            "FROM coral_evals e ORDER BY e.created DESC"
        ).fetchall()
        return [
            {
                "eval_id": r[0],
                "created": r[1],
                "dataset": r[2],
                "configs": json.loads(r[3]),
                "n": r[4],
                "done": r[5],
            }
            for r in rows
        ]

    def create(self, eval_id: str, dataset: Dataset, configs: list[dict[str, str]], n: int,
               seed: int | None, settings: dict[str, Any]) -> None:  # fmt: skip
        self.conn.execute(
            "INSERT INTO coral_evals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                eval_id,
                time.time(),
                dataset.name,
                dataset.source,
                json.dumps(configs),
                n,
                seed,
                json.dumps(settings),
            ),
        )

    def items(self, eval_id: str) -> list[ItemResult]:
        rows = self.conn.execute(
            f"SELECT {', '.join(_ITEM_COLS)} FROM coral_eval_items WHERE eval_id = ? "
            "ORDER BY finished",
            (eval_id,),
        ).fetchall()
        return [ItemResult(*r) for r in rows]

    def add(self, eval_id: str, r: ItemResult) -> None:
        values = [getattr(r, c) for c in _ITEM_COLS]
        self.conn.execute(
            f"INSERT OR REPLACE INTO coral_eval_items (eval_id, {', '.join(_ITEM_COLS)}, "
            f"finished) VALUES (?, {', '.join('?' * len(_ITEM_COLS))}, ?)",
            (eval_id, *values, time.time()),
        )


@dataclass(slots=True)
class EvalReport:
    """An eval's outcome: one :class:`ConfigReport` per config, and every item."""

    eval_id: str
    dataset: str
    source: str
    n: int
    seed: int | None
    configs: list[ConfigReport]
    items: list[ItemResult]
    db: str | None
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "eval_id": self.eval_id,
            "dataset": self.dataset,
            "source": self.source,
            "n": self.n,
            "seed": self.seed,
            "complete": self.complete,
            "db": self.db,
            "configs": [c.to_dict() for c in self.configs],
            "items": [i.to_dict() for i in self.items],
        }


def _labels(paths: Sequence[Path]) -> list[str]:
    out: list[str] = []
    for p in paths:
        label = p.stem
        k = 2
        while label in out:
            label = f"{p.stem}-{k}"
            k += 1
        out.append(label)
    return out


async def _one(rt: Any, lg: Any, label: str, item: Item, base_dir: Path | None) -> ItemResult:
    t0 = time.perf_counter()
    try:
        result = await rt.run(item.question, entry=lg.entry, answer_by=lg.answer_by)
    except Exception as exc:  # the run could not start: recorded for this item
        return ItemResult(
            label, item.id, None, "error", None, None, 0.0, 0, 0, 0.0,
            time.perf_counter() - t0, f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
    total = result.total
    scorer_error = None
    try:
        score, extracted = score_answer(result.answer, item, base_dir=base_dir)
    except Exception as exc:  # a scorer that raises: recorded, the eval goes on
        score, extracted = 0.0, None
        scorer_error = f"{type(exc).__name__}: {exc}"
    return ItemResult(
        config=label,
        item_id=item.id,
        run_id=str(result.run_id),
        stop_reason=result.stop_reason,
        answer=result.answer,
        extracted=extracted,
        score=score,
        llm_calls=total.llm_calls,
        tokens=total.prompt_tokens + total.completion_tokens,
        cost_usd=total.cost_usd,
        latency_s=result.duration_s,
        error=result.error,
        scorer_error=scorer_error,
    )


async def run_eval(
    configs: Sequence[Path],
    dataset: Dataset,
    *,
    n: int | None = None,
    seed: int | None = None,
    concurrency: int = 4,
    db: Path | None = None,
    resume: str | None = None,
    model: str | None = None,
    overrides: Sequence[str] = (),
    on_progress: Callable[[int, int, ItemResult | None], None] | None = None,
    store: bool = True,
) -> EvalReport:
    """Run each config of ``configs`` on the first ``n`` items of ``dataset``.

    Args:
        configs: graph files; each is a column of the report (labelled by file name).
        dataset: the items (see :func:`load_dataset`).
        n: how many items (default: all).
        seed: a base seed for every agent's sampling (reproducible runs); None:
            every run draws its own.
        concurrency: runs in flight at once, across configs.
        db: the store (default: ``$CORAL_DB`` or ``.coral/coral.db``).
        resume: an eval id to finish; its dataset, configs, n and seed are reused.
        model, overrides: as ``coral-graph run --model / --set``, for every config.
        on_progress: called as ``(done, total, item_result)`` after each run.
        store: record the runs and the eval (False: in memory only, no resume).

    Raises:
        EvalError: nothing to run, or a resume that does not match.
        ConfigError: a config file is broken.
    """
    from coral_graph._runtime import open_runtime
    from coral_graph._seeds import seed_base
    from coral_graph.config import load_graph

    if concurrency < 1:
        raise EvalError("--concurrency must be at least 1")
    paths = [Path(p) for p in configs]
    if not paths:
        raise EvalError("give at least one graph file to evaluate")
    labels = _labels(paths)
    graphs = [load_graph(p, overrides=overrides, model=model) for p in paths]
    sink: Any = None
    tables: EvalTables | None = None
    if store:
        from coral_graph.store import SQLiteStore

        sink = SQLiteStore(db)
        tables = EvalTables(Path(sink.path))
    try:
        eval_id = resume or new_eval_id()
        done: dict[tuple[str, str], ItemResult] = {}
        count = len(dataset) if n is None else min(n, len(dataset))
        if count < 1:
            raise EvalError("the dataset has no items to run (check --n)")
        described = [{"label": lb, "path": str(p)} for lb, p in zip(labels, paths, strict=True)]
        if tables is not None:
            if resume is not None:
                prior = tables.get(resume)
                if prior is None:
                    raise EvalError(f"no eval {resume!r} in {tables.path}; list them with --list")
                if prior["source"] != dataset.source or prior["configs"] != described:
                    raise EvalError(
                        f"eval {resume} ran {prior['source']} on "
                        f"{', '.join(c['path'] for c in prior['configs'])}: resume it with the "
                        "same --dataset and configs"
                    )
                count, seed = int(prior["n"]), prior["seed"]
                for r in tables.items(resume):
                    done[(r.config, r.item_id)] = r
            else:
                tables.create(
                    eval_id,
                    dataset,
                    described,
                    count,
                    seed,
                    {"concurrency": concurrency, "model": model, "overrides": list(overrides)},
                )
        items = list(dataset.items[:count])
        jobs = [
            (i, item)
            for item in items
            for i in range(len(paths))
            if (labels[i], item.id) not in done
        ]
        total = count * len(paths)
        finished = len(done)
        results: list[ItemResult] = list(done.values())
        if on_progress is not None:
            on_progress(finished, total, None)
        limit = anyio.Semaphore(concurrency)

        async with AsyncExitStack() as stack:
            rts = []
            for lg in graphs:
                rts.append(
                    await stack.enter_async_context(
                        open_runtime(
                            lg.graph, budgets=lg.budgets, store=sink if sink is not None else False
                        )
                    )
                )

            async def job(i: int, item: Item) -> None:
                nonlocal finished
                async with limit:
                    with seed_base(seed) if seed is not None else nullcontext():
                        r = await _one(rts[i], graphs[i], labels[i], item, dataset.base_dir)
                results.append(r)
                if tables is not None:
                    tables.add(eval_id, r)
                finished += 1
                if on_progress is not None:
                    on_progress(finished, total, r)

            async with anyio.create_task_group() as tg:
                for i, item in jobs:
                    tg.start_soon(job, i, item)
        if "coral_graph.llm" in __import__("sys").modules:
            from coral_graph.llm import aclose_clients

            await aclose_clients()
    finally:
        if tables is not None:
            tables.close()
        if sink is not None:
            sink.close()
    order = {item.id: k for k, item in enumerate(items)}
    results.sort(key=lambda r: (order.get(r.item_id, 1 << 30), labels.index(r.config)))
    reports = [summarise(lb, [r for r in results if r.config == lb]) for lb in labels]
    return EvalReport(
        eval_id=eval_id if store else "",
        dataset=dataset.name,
        source=dataset.source,
        n=count,
        seed=seed,
        configs=reports,
        items=results,
        db=str(sink.path) if sink is not None else None,
        complete=len(results) == total,
    )
