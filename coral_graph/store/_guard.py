"""Readers that survive a damaged store: a bad row is named and read around.

Every public query of :class:`~coral_graph.store.StoreReader` runs under
:func:`guarded`. When SQLite cannot hand a text value over (bytes that are not
UTF-8), the connection switches to decoding text leniently (U+FFFD for bad
bytes; the fast C decoder is kept until then), the rows concerned are found and
named in :attr:`ReadGuard.problems`, and the query runs again (a generator
resumes where it was). A page SQLite reports as malformed raises
:class:`~coral_graph.store.StoreCorruptError`, which says how to recover the
rest; any other SQLite failure a :class:`~coral_graph.store.StoreError` naming the file.
Values that decode but are not what the column should hold (bad JSON, bad
msgpack) are handled where they are read: a default value, and a problem naming
the table and the row.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from coral_graph.store._errors import StoreCorruptError, StoreError, fault_kind

__all__ = ["MAX_PROBLEMS", "ReadGuard", "db_error", "guarded", "lenient_text"]

MAX_PROBLEMS = 200
"""Problems kept per reader (a thoroughly damaged file would otherwise list every row)."""

F = TypeVar("F", bound=Callable[..., Any])


def lenient_text(data: bytes) -> str:
    """SQLite text as ``str``; bytes that are not UTF-8 become U+FFFD."""
    return data.decode("utf-8", "replace")


def _bad_utf8(data: Any) -> bool:
    if not isinstance(data, bytes):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def db_error(exc: sqlite3.Error, path: str) -> StoreError:
    """The store's error for a failed read: :class:`StoreCorruptError` for a
    damaged file, else a :class:`StoreError` naming the file."""
    if fault_kind(exc) == "corrupt":
        return StoreCorruptError(path, str(exc))
    return StoreError(f"cannot read the store {path}: {exc}")


_KEYS = {"messages": ("run_id", "gseq"), "events": ("run_id", "seq"), "runs": ("run_id",)}
_KEYS_NO_ROWID = {"delivery_blocks": ("run_id", "first_seq"), "meta": ("key",)}


class ReadGuard:
    """What a guarded reader needs: ``_conn``, ``path`` and the problems found."""

    _conn: sqlite3.Connection
    path: Path
    _problems: list[str]
    _lenient: bool

    @property
    def problems(self) -> list[str]:
        """Damaged rows met so far, each as ``"table (key): what; how it was read"``."""
        return list(getattr(self, "_problems", []))

    def _problem(self, table: str, key: str, what: str) -> None:
        probs = self.__dict__.setdefault("_problems", [])
        text = f"{table} ({key}): {what}"
        if text not in probs and len(probs) < MAX_PROBLEMS:
            probs.append(text)

    def _db_error(self, exc: sqlite3.Error) -> None:
        """Recover from ``exc`` (then return: the query runs again) or raise the
        store's error for it."""
        if (
            isinstance(exc, sqlite3.OperationalError)
            and "decode" in str(exc)
            and not getattr(self, "_lenient", False)
        ):
            self._lenient = True
            self._conn.text_factory = lenient_text
            self._find_bad_text()
            return
        raise db_error(exc, str(self.path)) from None

    def _find_bad_text(self) -> None:
        """Name every row with a text value that is not UTF-8."""
        conn = self._conn
        conn.create_function("cg_bad_utf8", 1, _bad_utf8, deterministic=True)
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if isinstance(r[0], str)
        ]
        for table in tables:
            cols = [
                r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[2].upper() == "TEXT"
            ]
            keys = _KEYS.get(table) or _KEYS_NO_ROWID.get(table) or ("rowid",)
            key_sql = ", ".join(f"CAST({k} AS BLOB)" if k == "run_id" else k for k in keys)
            for col in cols:
                try:
                    rows = conn.execute(
                        f"SELECT {key_sql} FROM {table} WHERE cg_bad_utf8(CAST({col} AS BLOB)) "
                        "LIMIT 50"
                    ).fetchall()
                except sqlite3.Error:
                    continue
                for row in rows:
                    key = ", ".join(
                        f"{k} {lenient_text(v) if isinstance(v, bytes) else v}"
                        for k, v in zip(keys, row, strict=True)
                    )
                    self._problem(table, key, f"{col} is not valid UTF-8; read with U+FFFD")


def guarded(fn: F) -> F:
    """Run a reader method under the guard (see the module docstring)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(self: ReadGuard, *args: Any, **kwargs: Any) -> Iterator[Any]:
            done = 0
            while True:
                try:
                    for i, item in enumerate(fn(self, *args, **kwargs)):
                        if i >= done:
                            done += 1
                            yield item
                    return
                except sqlite3.Error as exc:
                    self._db_error(exc)

        return gen  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(self: ReadGuard, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                self._db_error(exc)

    return call  # type: ignore[return-value]
