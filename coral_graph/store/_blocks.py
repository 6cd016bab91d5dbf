"""Delivery blocks: the deliveries of a run, kept as msgpack columns.

``delivery_handled`` is the bulk of every run's events. Stored one SQLite row per
delivery it cost more than the rest of the run's writing together; as columns
in blocks (one ``delivery_blocks`` row per up to :data:`BLOCK_ROWS` deliveries of
one run) it costs a few bytes. See ``docs/store.md``.

Two layouts: format 1 holds seven columns; format 2 adds an eighth, ``workers``
(``host:pid`` of the worker process that handled each delivery, or None), and is
written only for a block that holds a delivery a worker handled (a distributed
run), so the deliveries of a run in one process are stored exactly as before.
"""

from __future__ import annotations

import operator
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgpack

from coral_graph.store._sql import insert_many, new_packer

__all__ = [
    "BLOCK_FORMAT",
    "BLOCK_FORMAT_WORKERS",
    "BLOCK_ROWS",
    "decode_block",
    "encode_block",
    "write_blocks",
]

BLOCK_FORMAT = 1
"""The layout of a ``delivery_blocks.data`` value (its first element) when no
delivery of the block has a worker."""
BLOCK_FORMAT_WORKERS = 2
"""The layout of a block with a ``workers`` column (see the module docstring)."""
BLOCK_ROWS = 16_384
"""Deliveries per block at most (a reader decodes a whole block to reach one)."""


_BLOCK_FIELDS = [operator.itemgetter(i) for i in range(2, 9)]
"""seq, ts, agent, message_id, via, ok, duration_s out of a wire item."""


def _worker(item: tuple[Any, ...]) -> Any:
    """The worker of a wire item: its tenth element; a nine-element item (the
    runtime's own, see ``Router.handled``) has none."""
    return item[9] if len(item) > 9 else None


def encode_block(items: list[tuple[Any, ...]], pack: Callable[[Any], bytes]) -> tuple[Any, ...]:
    """The ``delivery_blocks`` row of one run's deliveries (wire items, in seq order):
    ``(run_id, first_seq, last_seq, n, data)``. ``data`` is msgpack of
    ``[BLOCK_FORMAT, seqs, ts, agents, message_ids, vias, oks, durations]``: one
    array per field, all ``n`` long (columns pack and unpack far faster than rows);
    with ``[BLOCK_FORMAT_WORKERS, …, workers]`` when a delivery has a worker."""
    cols = [list(map(g, items)) for g in _BLOCK_FIELDS]
    seqs = cols[0]
    fmt = BLOCK_FORMAT
    if max(map(len, items)) > 9:  # some items carry a worker field (maybe None)
        workers = list(map(_worker, items))
        if workers.count(None) != len(workers):
            fmt = BLOCK_FORMAT_WORKERS
            cols.append(workers)
    return (items[0][1], seqs[0], max(seqs), len(items), pack([fmt, *cols]))


def decode_block(data: bytes) -> list[Any]:
    """A block's columns: ``[seqs, ts, agents, message_ids, vias, oks, durations,
    workers]`` (``workers`` all None for a block of format 1).

    Raises:
        ValueError: a block of an unknown layout.
    """
    cols = msgpack.unpackb(data, raw=False, use_list=False)
    if type(cols) is tuple and cols:
        if cols[0] == BLOCK_FORMAT and len(cols) == 8:
            return [*cols[1:], (None,) * len(cols[1])]
        if cols[0] == BLOCK_FORMAT_WORKERS and len(cols) == 9:
            return list(cols[1:])
    raise ValueError(f"a delivery block of an unknown layout ({str(cols)[:40]})")


def write_blocks(
    conn: sqlite3.Connection,
    deliveries: dict[str, list[tuple[Any, ...]]],
    counts: defaultdict[str, list[Any]],
) -> None:
    """Write each run's deliveries (wire items) as blocks; raise each run's
    ``last_seq`` in ``counts`` (run_id -> [last_seq, ...]) to its newest."""
    pack = new_packer()
    flat: list[Any] = []
    for rid, items in deliveries.items():
        if not items:
            continue
        c = counts[rid]
        for i in range(0, len(items), BLOCK_ROWS):
            block = encode_block(items[i : i + BLOCK_ROWS], pack)
            flat.extend(block)
            if block[2] > c[0]:
                c[0] = block[2]
    insert_many(conn, "INSERT OR IGNORE INTO delivery_blocks", 5, flat)
