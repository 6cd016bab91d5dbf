"""Read-only queries over the SQLite store, shared by the web viewer and its export.

Everything here returns plain JSON-ready data. The store's schema (see
``coral_graph/store/_schema.py``) is the contract; the viewer opens the database
read-only (``mode=ro``) and never writes, so it can watch a run that another
process is still writing (SQLite WAL lets readers and one writer work together).

Messages are paged by **cursor** (the run-global ``gseq``), never by offset, so the
first or the 100,000th screen of a run costs the same: one index range scan.

>>> Filters.from_params({"thread": "t-1", "errors": "1"}).to_params()
{'thread': 't-1', 'errors': '1'}
"""

from __future__ import annotations

from coral_graph.viewer._base import RunNotFoundError
from coral_graph.viewer._evals import EvalNotFoundError, EvalQueries
from coral_graph.viewer._filters import KINDS, Filters
from coral_graph.viewer._logs import LogQueries
from coral_graph.viewer._runs import RunQueries
from coral_graph.viewer._stats import StatsQueries, percentile

__all__ = ["KINDS", "EvalNotFoundError", "Filters", "RunNotFoundError", "RunReader", "percentile"]


# The queries live in private modules by responsibility: _filters (Filters and the
# WHERE clauses), _base (connections, cache, run lookup), _runs (runs, threads and
# message pages), _stats (per-agent statistics, the mention graph), _logs (agent_logged
# lines and MCP endpoints), _evals (the tables of `coral-graph eval`).


class RunReader(RunQueries, StatsQueries, LogQueries, EvalQueries):
    """Read-only access to the runs of one SQLite database.

    Thread-safe: each thread gets its own read-only connection (the web server
    runs its queries in a thread pool).
    """
