"""What the store can hold, and what becomes of a value it cannot.

The store keeps plain data: ``None``, ``bool``, ``int`` in the signed 64-bit
range, ``float``, ``str`` (valid Unicode), ``bytes``, lists, and maps with string
keys. Events are written without checking this on the hot path; only when
encoding a batch fails (in the runtime's process: a value pickle would carry as
an object, such as a ``datetime``; in the writer: an integer SQLite or msgpack
cannot hold, a string with a lone surrogate, a key that is not a string) is the
batch taken apart here, event by event. A value that is not plain is stored as
its text (a too large integer as its digits; a nested one only, a top-level
count is clamped), and a note naming the event, the field and the reason goes
into the run's ``errors`` table (``error_type`` :data:`UNSTORABLE`), so
``show``, ``--json`` and the viewer say what was changed. Nothing else of the
run is lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from coral_graph._events import EVENT_TYPES
from coral_graph._model import Message

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "UNSTORABLE", "item_fields", "plain_item", "storable"]

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""The integers the store holds (SQLite's INTEGER)."""
MAX_DEPTH = 64
"""Nesting depth of a value beyond which it is stored as text."""
UNSTORABLE = "UnstorableValue"
"""``errors.error_type`` of a note about a value the store changed to keep it."""

_FIELDS: dict[str, tuple[str, ...]] = {
    cls.kind: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}
_OPTIONAL: dict[str, int] = {
    cls.kind: sum(1 for f in dataclasses.fields(cls) if f.metadata.get("omit_none"))
    for cls in EVENT_TYPES.values()
}
"""Per kind, how many trailing fields a wire item may leave out."""
_MSG_FIELDS: tuple[str, ...] = Message._fields


def item_fields(kind: str) -> tuple[str, ...]:
    """The field names of a wire item ``(kind, run_id, seq, ts, …)`` after ``kind``."""
    return _FIELDS[kind]


def _text(value: Any) -> str:
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def _valid_str(value: str, path: str, notes: list[str]) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        notes.append(f"{path}: not valid Unicode (a lone surrogate); stored with U+FFFD")
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def storable(value: Any, path: str, notes: list[str], depth: int = 0) -> Any:
    """``value`` as data the store holds; each change is described in ``notes``."""
    t = type(value)
    if value is None or t is bool or t is float or t is bytes:
        return value
    if t is str:
        return _valid_str(value, path, notes)
    if t is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        notes.append(f"{path}: {_text(value)} is outside the signed 64-bit range; stored as text")
        return str(value)
    if depth >= MAX_DEPTH:
        notes.append(f"{path}: nested deeper than {MAX_DEPTH} levels; stored as text")
        return _text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in list(value.items()):
            if type(k) is str:
                key = _valid_str(k, f"{path} key {_text(k)!r}", notes)
            else:
                key = _text(k)
                notes.append(f"{path}: the key {key!r} is a {type(k).__qualname__}; stored as text")
            out[key] = storable(v, f"{path}[{key!r}]", notes, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [storable(v, f"{path}[{i}]", notes, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return storable(int(value), path, notes, depth)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _valid_str(str(value), path, notes)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    text = _text(value)
    notes.append(
        f"{path}: a {type(value).__module__}.{type(value).__qualname__} value cannot be stored "
        f"(only str, int, float, bool, None, bytes, lists and maps with string keys); "
        f"stored as its text {text!r}"
    )
    return text


def _top(value: Any, path: str, notes: list[str]) -> Any:
    """A typed field of an event: counts and seqs are clamped rather than turned into
    text (the rows do arithmetic on them); anything else as :func:`storable`."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        clamped = INT_MAX if value > 0 else INT_MIN
        notes.append(
            f"{path}: {_text(value)} is outside the signed 64-bit range; stored as {clamped}"
        )
        return clamped
    return storable(value, path, notes)


def plain_item(item: Any) -> tuple[Any, list[Any]]:
    """A wire item made storable: ``(item, extra items)``, the extra items being a
    ``("!note", run_id, seq, agent, message_id, text)`` command when something was
    changed. Commands pass unchanged."""
    if type(item) is not tuple or not item or type(item[0]) is not str or item[0][:1] == "!":
        return item, []
    kind = item[0]
    names = _FIELDS.get(kind)
    notes: list[str] = []
    if names is None or not len(names) - _OPTIONAL.get(kind, 0) < len(item) <= len(names) + 1:
        return item, []
    out: list[Any] = [kind]
    agent: Any = None
    mid: Any = None
    # An item may end before its optional trailing fields (a delivery without a
    # worker is nine elements long, see Router.handled).
    for name, value in zip(names, item[1:], strict=False):
        if name == "message" and kind == "message_sent":
            fields = tuple(value) if not isinstance(value, Mapping) else tuple(value.values())
            msg: list[Any] = []
            for mname, mvalue in zip(_MSG_FIELDS, fields, strict=False):
                path = f"message.{mname}"
                if mname == "mentions":
                    got = storable(mvalue, path, notes)
                    msg.append(tuple(got) if isinstance(got, list) else ())
                elif mname == "metadata":
                    msg.append(storable(mvalue, path, notes) if mvalue else {})
                else:
                    msg.append(_top(mvalue, path, notes))
            mid, agent = msg[0], msg[3]
            out.append(tuple(msg))
            continue
        got = _top(value, name, notes)
        if name == "agent":
            agent = got
        elif name == "message_id":
            mid = got
        out.append(tuple(got) if type(value) is tuple and isinstance(got, list) else got)
    if not notes:
        return tuple(out), []
    event = f"{kind} (seq {out[2]!r})"
    text = f"{event}: " + "; ".join(notes)
    if len(text) > 4000:
        text = text[:3997] + "..."
    return tuple(out), [("!note", out[1], out[2], agent, mid, text)]
