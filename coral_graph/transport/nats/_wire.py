"""The wire format of the NATS transport: msgpack maps, versioned.

Every record is a map ``{"v": 3, "t": <type>, …}``; see ``docs/msgpack-format.md``
("The NATS wire format"). :func:`decode` refuses anything else with a
:class:`WireError`, so a foreign or malformed message is recorded and skipped,
never crashing a worker. Version 2 added ``es`` (the events of one flush in one
record); version 3 replaced the replay markers (``c``) by the origin of each
message (``lo`` of ``th``, ``o`` of ``m``); version 4 announces each change of a
thread header or counter on the run's change subject (a counter's ``n`` record
names its writer, ``by``), which version 3 processes do not follow. Records of
versions 1 to 3 are still read.
"""

from __future__ import annotations

from typing import Any

import msgpack

from coral_graph.transport.nats._errors import WireError

__all__ = ["WIRE_VERSION", "decode", "encode", "encode_events", "events_of"]

WIRE_VERSION = 4

# The record types and the keys each must have.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "d": ("run", "to", "msg"),  # a delivery of one message to one agent
    "e": ("worker", "ev"),  # an event, from the worker that made it
    "es": ("worker", "evs"),  # events in their order, from the worker that made them (v2)
    "stop": ("run", "reason"),  # a run ended
    "start": ("run",),  # a run started (workers hosting loop agents join it)
    "th": ("id", "name", "creator", "participants", "closed"),  # a thread's header
    "m": ("msg",),  # a message of a thread
    "run": ("status", "graph_hash", "task", "entry", "answer_by", "budgets"),
    "w": ("id", "host", "pid", "agents", "graph_hash", "ts"),  # a live worker
    "n": ("n",),  # a counter
    "g": ("identity",),  # the graph's identity
    "o": ("by",),  # the heartbeat of the process that started a run
}


def encode(kind: str, **fields: Any) -> bytes:
    """One record of type ``kind``."""
    data: dict[str, Any] = {"v": WIRE_VERSION, "t": kind}
    data.update(fields)
    out: bytes = msgpack.packb(data, use_bin_type=True)
    return out


def encode_events(worker: str, evs: list[dict[str, Any]], limit: int) -> list[bytes]:
    """``evs`` (plain data, in order) as ``es`` records of at most ``limit`` bytes each,
    as few as fit (one event bigger than ``limit`` alone in its record)."""
    data = encode("es", worker=worker, evs=evs)
    if len(data) <= limit or len(evs) <= 1:
        return [data]
    half = len(evs) // 2
    return encode_events(worker, evs[:half], limit) + encode_events(worker, evs[half:], limit)


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


def events_of(rec: dict[str, Any]) -> list[Any]:
    """The events (plain data) of a decoded ``e`` or ``es`` record.

    Raises:
        WireError: another record type, or an ``es`` record whose ``evs`` is not a list.
    """
    t = rec.get("t")
    if t == "e":
        return [rec["ev"]]
    if t == "es" and isinstance(rec["evs"], list):
        return list(rec["evs"])
    raise WireError(f"expected an event record ('e' or 'es'), got {t!r}")
