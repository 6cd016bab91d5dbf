"""SQLite and msgpack helpers shared by the writer process, import and the readers:
multi-row ``INSERT`` statements of a few fixed sizes, and the msgpack encoder of
stored events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

__all__ = ["insert_many", "new_packer", "write_transaction"]

_MAX_VARS = 32_000
_CHUNK_ROWS = 100_000


_TAIL_ROWS = (1024, 256, 64, 16, 4, 1)
"""Statement sizes (rows) for what is left after the full chunks: a statement of a
size seen before comes from SQLite's statement cache, while preparing a new one of
thousands of rows costs about 10 ms (once per table and transaction otherwise)."""
_SQL: dict[tuple[str, int, int], str] = {}


def _values_sql(sql_head: str, ncols: int, rows: int) -> str:
    key = (sql_head, ncols, rows)
    sql = _SQL.get(key)
    if sql is None:
        row = "(" + ",".join("?" * ncols) + ")"
        sql = _SQL[key] = sql_head + " VALUES " + ",".join([row] * rows)
    return sql


def insert_many(conn: sqlite3.Connection, sql_head: str, ncols: int, flat: list[Any]) -> None:
    """``INSERT`` the rows in ``flat`` (``ncols`` values per row, flattened) with as few
    statements as possible, all of a few fixed sizes (so they stay in SQLite's
    statement cache): full chunks, then the rest in decreasing sizes."""
    if not flat:
        return
    per = min(_CHUNK_ROWS, _MAX_VARS // ncols)
    n = len(flat)
    i = 0
    for size in (per, *_TAIL_ROWS):
        step = size * ncols
        if n - i < step:
            continue
        sql = _values_sql(sql_head, ncols, size)
        while n - i >= step:
            conn.execute(sql, flat[i : i + step])
            i += step


def new_packer() -> Callable[[Any], bytes]:
    """msgpack's encoder as used for stored events and exports (see
    ``docs/msgpack-format.md``): str as UTF-8 ``str``, bytes as ``bin``, floats as
    float64."""
    return msgpack.Packer(use_bin_type=True, autoreset=True).pack  # type: ignore[no-any-return]


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock first, so what the block reads is not
    changed by another writer before it commits), ``COMMIT`` at the end, ``ROLLBACK``
    on any exception (``conn`` in autocommit mode: ``isolation_level=None``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
