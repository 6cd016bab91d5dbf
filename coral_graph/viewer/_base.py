"""The plumbing every query of :class:`~coral_graph.viewer.query.RunReader` shares.

:class:`ReaderBase` owns the per-thread read-only connections, the cache of a
finished run's aggregates and the lookup of a run's row; :func:`loads` decodes the
JSON columns of the store leniently.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from coral_graph.store import resolve_db
from coral_graph.store._guard import lenient_text
from coral_graph.store._json import loads as _loads
from coral_graph.store._reader import open_reader
from coral_graph.viewer._filters import cg_match

__all__ = ["ReaderBase", "RunNotFoundError", "loads"]


class RunNotFoundError(LookupError):
    """No run with this id in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} in the store; `coral-graph view` lists the runs")
        self.run_id = run_id


def loads(text: object, default: Any) -> Any:
    """A JSON column's value, or ``default`` if it is empty, not JSON, or JSON of
    another type than ``default`` (a damaged row). Non-finite numbers read as the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (see ``store/_json.py``)."""
    if text is None or text == "":
        return default
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = _loads(str(text))
    except (ValueError, RecursionError):
        return default
    if default is not None and type(value) is not type(default):
        return default
    return value


class ReaderBase:
    """Connections, cache and run lookup over one SQLite database.

    Each thread gets its own read-only connection (the web server runs its queries
    in a thread pool).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_db(path)
        # The store's own reader checks that this is a store of a version we read
        # (NotAStoreError, StoreVersionError otherwise).
        open_reader(self.path).close()
        self._local = threading.local()
        self._cache: dict[tuple[str, ...], Any] = {}
        self._cache_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            # A row with bytes that are not UTF-8 (a damaged file) reads with U+FFFD
            # instead of failing the whole page.
            conn.text_factory = lenient_text
            conn.create_function("cg_match", 3, cg_match, deterministic=True)
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA busy_timeout = 5000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _cached(self, key: tuple[str, ...], live: bool, fn: Any) -> Any:
        # Finished runs never change, so their aggregates are computed once.
        if live:
            return fn()
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = fn()
        with self._cache_lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = value
        return value

    def _run_row(self, run_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        return row
