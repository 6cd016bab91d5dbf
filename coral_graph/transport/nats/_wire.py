"""The wire format of the NATS transport: msgpack maps, versioned.

Every record is a map ``{"v": 1, "t": <type>, …}``; see ``docs/msgpack-format.md``
("The NATS wire format"). :func:`decode` refuses anything else with a
:class:`WireError`, so a foreign or malformed message is recorded and skipped,
never crashing a worker.
"""

from __future__ import annotations

from typing import Any

import msgpack

from coral_graph.transport.nats._errors import WireError

__all__ = ["WIRE_VERSION", "decode", "encode"]

WIRE_VERSION = 1

# The record types and the keys each must have.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "d": ("run", "to", "msg"),  # a delivery of one message to one agent
    "e": ("worker", "ev"),  # an event, from the worker that made it
    "stop": ("run", "reason"),  # a run ended
    "start": ("run",),  # a run started (workers hosting loop agents join it)
    "th": ("id", "name", "creator", "participants", "closed"),  # a thread's header
    "m": ("msg",),  # a message of a thread
    "run": ("status", "graph_hash", "task", "entry", "answer_by", "budgets"),
    "w": ("id", "host", "pid", "agents", "graph_hash", "ts"),  # a live worker
    "c": ("ref",),  # what a turn's n-th operation made (for replays)
    "n": ("n",),  # a counter
    "g": ("identity",),  # the graph's identity
}


def encode(kind: str, **fields: Any) -> bytes:
    """One record of type ``kind``."""
    data: dict[str, Any] = {"v": WIRE_VERSION, "t": kind}
    data.update(fields)
    out: bytes = msgpack.packb(data, use_bin_type=True)
    return out


def decode(raw: bytes, kind: str | None = None) -> dict[str, Any]:
    """The record in ``raw`` (of type ``kind`` when given).

    Raises:
        WireError: not msgpack, not a coral-graph record, a newer version, another
            type than expected, or a required key missing.
    """
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise WireError(f"not a msgpack record ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "v" not in data or "t" not in data:
        raise WireError("not a coral-graph record (a map with 'v' and 't' keys)")
    v = data["v"]
    if not isinstance(v, int) or v < 1:
        raise WireError(f"bad wire version {v!r}")
    if v > WIRE_VERSION:
        raise WireError(
            f"wire version {v} is newer than this coral-graph's ({WIRE_VERSION}): upgrade it"
        )
    t = data["t"]
    if kind is not None and t != kind:
        raise WireError(f"expected a {kind!r} record, got {t!r}")
    need = _REQUIRED.get(t) if isinstance(t, str) else None
    if need is None:
        raise WireError(f"unknown record type {t!r}")
    missing = [k for k in need if k not in data]
    if missing:
        raise WireError(f"{t!r} record without {', '.join(missing)}")
    return data
