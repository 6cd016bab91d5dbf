"""The one JSON encoding of stored data: always valid JSON.

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity`` for non-finite
floats, which no other JSON parser accepts (a browser's ``JSON.parse`` fails, the
viewer's API answered 400). Everything coral-graph writes as JSON from a run —
the store's JSON columns, ``show --json``, the viewer's API and static export,
the JSON Lines export — goes through :func:`dumps`, which writes a non-finite
float as the *string* ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (the names
JavaScript's ``Number()`` and Python's ``float()`` read back), bytes as their
UTF-8 text, and any other value JSON has no type for as its ``str()``. JSON
columns written before this are read by :func:`loads` the same way.

>>> dumps({"x": float("nan"), "y": [1.5, float("-inf")]})
'{"x": "NaN", "y": [1.5, "-Infinity"]}'
>>> loads('{"x": NaN}')
{'x': 'NaN'}
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite", "loads"]


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__qualname__}>"


def _name(x: float) -> str:
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def finite(obj: Any, depth: int = 0) -> Any:
    """``obj`` with every non-finite float replaced by its name (a string)."""
    t = type(obj)
    if t is float:
        return obj if math.isfinite(obj) else _name(obj)
    if depth > 200:
        return obj
    if t is dict or isinstance(obj, dict):
        return {k: finite(v, depth + 1) for k, v in obj.items()}
    if t is list or t is tuple or isinstance(obj, (list, tuple)):
        return [finite(v, depth + 1) for v in obj]
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else _name(obj)
    return obj


def dumps(obj: Any, **options: Any) -> str:
    """``json.dumps(obj, **options)`` that never writes invalid JSON (see above)."""
    options.setdefault("default", _default)
    try:
        return json.dumps(obj, allow_nan=False, **options)
    except ValueError:
        # A non-finite float somewhere (rare: the fast path above is plain json).
        return json.dumps(finite(obj), allow_nan=False, **options)


_DECODER = json.JSONDecoder(parse_constant=lambda name: name)


def loads(text: str | bytes) -> Any:
    """``json.loads`` reading ``NaN``/``Infinity``/``-Infinity`` tokens (written by
    older stores) as those strings, as :func:`dumps` writes them now."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    return _DECODER.decode(text)
