"""Resume: continue an interrupted run from its stored events.

The stored events are replayed (:func:`replay`) and the state is put back into a
fresh run of the same id through ``Runtime.resume`` (a :class:`RunSnapshot`): threads with
their messages, per-agent usage, the run's counters (so budgets continue from
what was spent; ``timeout_s`` from the time already used) and the event
sequence. Every pending delivery — queued, or in the middle of a turn when the
process died — is delivered again: delivery is *at least once*, so a turn cut
short may run twice. New events append to the same run in the store.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from coral_graph._budgets import Budgets
from coral_graph._results import RunSnapshot
from coral_graph._runtime import RunResult, open_runtime
from coral_graph.store._errors import StoreError
from coral_graph.store._reader import open_reader
from coral_graph.store._replay import RunState, replay
from coral_graph.store._sqlite import SQLiteStore

if TYPE_CHECKING:
    from coral_graph._graph import AgentGraph

__all__ = ["load_for_resume", "resume_run", "snapshot"]


def snapshot(state: RunState) -> RunSnapshot:
    """The core's :class:`RunSnapshot` of a replayed run."""
    return RunSnapshot(
        events=list(state.events),
        threads=dict(state.threads),
        last_seq=state.last_seq,
        started_at=state.started.ts if state.started is not None else None,
        usage=dict(state.usage),
        counters={
            "messages": state.messages_sent,
            "llm_calls": state.llm_calls,
            "tokens": state.tokens,
            "cost_usd": state.cost_usd,
        },
        pending=state.pending_list(),
        answer=state.answer,
    )


def _budgets(row: dict[str, Any], state: RunState, override: Budgets | None) -> Budgets:
    known = {f.name for f in dataclasses.fields(Budgets)}
    stored = {k: v for k, v in (row.get("budgets") or {}).items() if k in known}
    b = Budgets(**stored).merged(override)
    if b.timeout_s is not None and state.started is not None:
        spent = max(0.0, state.last_ts - state.started.ts)
        b = dataclasses.replace(b, timeout_s=max(0.0, b.timeout_s - spent))
    return b


def load_for_resume(
    run_id: str, db: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], RunState]:
    """The run's row and replayed state, checked to be resumable.

    Raises:
        UnknownRunError, NotAStoreError, StoreVersionError; StoreError when the run
        finished or is still running in a live process.
    """
    with open_reader(db) as reader:
        row = reader.run(run_id)
        rid = row["run_id"]
        if row["status"] == "finished":
            raise StoreError(
                f"run {rid} already finished ({row['stop_reason']}); only interrupted runs resume"
            )
        if row["status"] == "running":
            raise StoreError(f"run {rid} is still running (process {row['pid']}); stop it first")
        events = reader.events(rid)
    if not events:
        raise StoreError(f"run {rid} has no stored events to resume from")
    return row, replay(events)


def _check_graph(row: dict[str, Any], graph: AgentGraph) -> None:
    """Refuse a graph that lacks agents of the stored run: their pending deliveries
    would be dropped without a word, and the run would end ``idle``."""
    snap = row.get("graph")
    stored: dict[str, Any] = snap if isinstance(snap, dict) else {}
    names = [a.get("name") for a in stored.get("agents") or () if isinstance(a, dict)]
    missing = [str(n) for n in names if n and n not in graph]
    if missing:
        from coral_graph._errors import ConfigError

        raise ConfigError(
            f"the graph {graph.name or ''} lacks agents of run {row['run_id']}: "
            f"{', '.join(missing)}; resume it with the graph it was started from "
            f"({row.get('graph_path') or 'pass --graph PATH'})",
            field="agents",
        )


async def resume_run(
    graph: AgentGraph,
    run_id: str,
    *,
    db: str | os.PathLike[str] | None = None,
    budgets: Budgets | None = None,
    store: SQLiteStore | None = None,
) -> RunResult:
    """Continue the interrupted run ``run_id`` of store ``db`` on ``graph``.

    Args:
        graph: the run's graph (the same agents; edges are enforced as usual).
        run_id: the run (a unique prefix or ``last`` works too).
        db: the store (default as for :class:`SQLiteStore`).
        budgets: overrides of the run's stored budgets.
        store: an open store on the same file to record into (default: one is
            opened and closed here).

    Returns:
        The result of the whole run (its events include the replayed ones).
    """
    row, state = load_for_resume(run_id, db)
    rid = row["run_id"]
    _check_graph(row, graph)
    own = store is None
    st = store if store is not None else SQLiteStore(db, graph_path=row.get("graph_path"))
    st.mark_resumed(rid)
    try:
        async with open_runtime(graph, store=st, budgets=_budgets(row, state, budgets)) as rt:
            return await rt.resume(
                snapshot(state),
                row["task"] or "",
                entry=row.get("entry") or None,
                answer_by=row.get("answer_by") or None,
                run_id=rid,
            )
    finally:
        if own:
            await st.aclose()
