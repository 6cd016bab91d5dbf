"""The evals of a store for :class:`~coral_graph.viewer.query.RunReader`.

``coral-graph eval`` keeps two tables of its own in the store's SQLite file (see
``coral_graph/eval/_runner.py``): ``coral_evals`` (one row per eval) and
``coral_eval_items`` (one row per config and item once its run finished and was
scored, with the run's id). A store where no eval ran has neither: it lists none.
"""

from __future__ import annotations

from typing import Any

from coral_graph.viewer._base import ReaderBase, loads

__all__ = ["EvalNotFoundError", "EvalQueries"]


class EvalNotFoundError(LookupError):
    """No eval with this id in the store."""

    def __init__(self, eval_id: str) -> None:
        super().__init__(f"no eval {eval_id!r} in the store; `coral-graph eval --list` lists them")
        self.eval_id = eval_id


def _labels(configs: object) -> list[str]:
    out = []
    for c in configs if isinstance(configs, list) else []:
        if isinstance(c, dict):
            out.append(str(c.get("label") or c.get("path") or c))
        else:
            out.append(str(c))
    return out


class EvalQueries(ReaderBase):
    """Evals (newest first, with accuracy per config) and one eval's items."""

    def _has_evals(self) -> bool:
        found = self.db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('coral_evals', 'coral_eval_items')"
        ).fetchone()[0]
        return bool(found == 2)

    def evals(self) -> list[dict[str, Any]]:
        """Every eval, newest first: id, dataset, configs, n, seed, when, and per
        config the items done, the accuracy (mean score) and the failed runs."""
        if not self._has_evals():
            return []
        per: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self.db.execute(
            "SELECT eval_id, config, count(*), avg(score), "
            "sum(error IS NOT NULL OR scorer_error IS NOT NULL) "
            "FROM coral_eval_items GROUP BY eval_id, config"
        ):
            per.setdefault(r[0], {})[r[1]] = {
                "config": r[1],
                "done": r[2],
                "accuracy": r[3],
                "errors": r[4] or 0,
            }
        out = []
        for r in self.db.execute(
            "SELECT eval_id, created, dataset, source, configs, n, seed "
            "FROM coral_evals ORDER BY created DESC"
        ):
            labels = _labels(loads(r["configs"], []))
            got = per.get(r["eval_id"], {})
            rows = [
                got.get(lb) or {"config": lb, "done": 0, "accuracy": None, "errors": 0}
                for lb in labels
            ]
            rows += [v for k, v in got.items() if k not in labels]
            out.append(
                {
                    "eval_id": r["eval_id"],
                    "created": r["created"],
                    "dataset": r["dataset"],
                    "source": r["source"],
                    "n": r["n"],
                    "seed": r["seed"],
                    "configs": rows,
                }
            )
        return out

    def eval_items(self, eval_id: str) -> dict[str, Any]:
        """One eval with its items (config, item, run id, stop reason, extracted
        answer, score, calls, tokens, cost, latency, errors), in the order they
        finished.

        Raises:
            EvalNotFoundError: no such eval (or no eval tables in this store).
        """
        head = next((e for e in self.evals() if e["eval_id"] == eval_id), None)
        if head is None:
            raise EvalNotFoundError(eval_id)
        known = {
            r[0]
            for r in self.db.execute(
                "SELECT run_id FROM coral_eval_items i JOIN runs USING (run_id) "
                "WHERE i.eval_id = ?",
                (eval_id,),
            )
        }
        items = []
        for r in self.db.execute(
            "SELECT config, item_id, run_id, stop_reason, extracted, score, llm_calls, "
            "tokens, cost_usd, latency_s, error, scorer_error, finished "
            "FROM coral_eval_items WHERE eval_id = ? ORDER BY finished",
            (eval_id,),
        ):
            item = dict(r)
            item["run_stored"] = r["run_id"] in known
            items.append(item)
        return {**head, "items": items}
