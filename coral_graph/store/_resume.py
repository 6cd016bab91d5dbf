"""Resume: continue an interrupted run from its stored events.

The stored events are replayed (:func:`replay`) and the state is put back into a
fresh run of the same id through the runtime's ``restore`` hook: threads with
their messages, per-agent usage, the run's counters (so budgets continue from
what was spent; ``timeout_s`` from the time already used) and the event
sequence. Every pending delivery — queued, or in the middle of a turn when the
process died — is delivered again: delivery is *at least once*, so a turn cut
short may run twice. New events append to the same run in the store.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coral_graph._budgets import Budgets
from coral_graph._runtime import RunResult, open_runtime
from coral_graph.store._errors import StoreError
from coral_graph.store._reader import open_reader
from coral_graph.store._replay import RunState, replay
from coral_graph.store._sqlite import SQLiteStore

if TYPE_CHECKING:
    from coral_graph._graph import AgentGraph
    from coral_graph._run import _Run

__all__ = ["load_for_resume", "restorer", "resume_run"]


def restorer(state: RunState) -> Callable[[_Run], None]:
    """The ``restore`` hook that puts ``state`` into a new :class:`_Run`."""

    def apply(run: _Run) -> None:
        run.events.extend(state.events)
        run.threads.update(state.threads)
        top = max(
            (int(t.rsplit("-", 1)[-1]) for t in state.threads if t.startswith("t-")), default=0
        )
        run._thread_ids = itertools.count(top + 1)
        run.next_seq = itertools.count(state.last_seq + 1).__next__
        run.messages_sent = state.messages_sent
        run.llm_calls = state.llm_calls
        run.tokens = state.tokens
        run.cost_usd = state.cost_usd
        if state.started is not None:
            run.started_at = state.started.ts
        for name, usage in state.usage.items():
            if run.is_agent(name):
                run.slot(name).usage = usage
        if state.answer is not None:
            # It answered before it died: only the end was not recorded.
            run.answer(state.answer)
            return
        loops = [n for n, d in run._nodes.items() if d["spec"].is_loop]
        assert run.tg is not None
        for name in loops:
            slot = run.slot(name)
            run.ensure_inbox(slot)
            run.tg.start_soon(run._loop_main, slot, name=f"coral-loop-{name}")
        for agent, msg in state.pending_list():
            if run.is_agent(agent):
                run.deliver(agent, msg)
        if not loops and run.pending == 0:
            run.finish("idle")

    return apply


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
    own = store is None
    st = store if store is not None else SQLiteStore(db, graph_path=row.get("graph_path"))
    st.mark_resumed(rid)
    try:
        async with open_runtime(graph, store=st, budgets=_budgets(row, state, budgets)) as rt:
            return await rt.run(
                row["task"] or "",
                entry=row.get("entry") or None,
                answer_by=row.get("answer_by") or None,
                run_id=rid,
                _restore=restorer(state),
            )
    finally:
        if own:
            await st.aclose()
