"""Scorers: is a graph's answer one of the item's accepted answers?

Each returns a score from 0 to 1 (1: right) and the answer it read, so the report
shows what was compared. ``exact`` reads the answer like the tally does
(:func:`extract_answer` with ``auto``) and accepts it when its normalised form is
an accepted answer's, or starts or ends with it ("The capital is Ottawa").
``numeric`` compares the last number with the accepted values (relative tolerance
1e-6). ``option`` reads a choice letter, or an option's text. ``python:...`` calls
your function ``(prediction, item) -> bool | float``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coral_graph.eval._answers import extract_answer, normalise_answer, parse_number, similarity
from coral_graph.eval._datasets import Item

__all__ = ["ScoreError", "score_answer"]

_LETTERS = "ABCDEFGHIJ"
_python_cache: dict[tuple[str, str], Callable[..., Any]] = {}


class ScoreError(Exception):
    """A python scorer could not be loaded or returned something that is not a score."""


def _exact(prediction: str, item: Item) -> tuple[float, str | None]:
    got = extract_answer(prediction, "auto")
    if got is None:
        return 0.0, None
    norm = normalise_answer(got)
    for a in item.answers:
        if similarity(norm, normalise_answer(a)) >= 1.0:
            return 1.0, got
    return 0.0, got


def _numeric(prediction: str, item: Item) -> tuple[float, str | None]:
    got = extract_answer(prediction, "last_number")
    value = parse_number(got) if got is not None else None
    if value is None:
        return 0.0, got
    for a in item.answers:
        want = parse_number(a)
        if want is not None and abs(value - want) <= 1e-6 * max(1.0, abs(want)):
            return 1.0, got
    return 0.0, got


def _option(prediction: str, item: Item) -> tuple[float, str | None]:
    letters = _LETTERS[: len(item.choices)] if item.choices else "ABCDE"
    got = extract_answer(prediction, "option", options=letters)
    if got is None and item.choices:
        # no letter: an option's text counts as choosing it
        text = normalise_answer(extract_answer(prediction, "auto") or "")
        for i, c in enumerate(item.choices):
            if text and similarity(text, normalise_answer(c)) >= 1.0:
                got = letters[i]
                break
    if got is None:
        return 0.0, None
    return (1.0 if got.upper() in {a.strip().upper() for a in item.answers} else 0.0), got


def _python(ref: str, base_dir: Path | None) -> Callable[..., Any]:
    key = (ref, str(base_dir))
    fn = _python_cache.get(key)
    if fn is None:
        from coral_graph.config._pyload import PythonRefError, load_object

        try:
            obj = load_object(ref, base_dir or Path.cwd())
        except PythonRefError as exc:
            raise ScoreError(f"scorer python:{ref}: {exc}") from None
        if not callable(obj):
            raise ScoreError(f"scorer python:{ref} is not a function")
        fn = _python_cache[key] = obj
    return fn


def score_answer(
    prediction: str | None, item: Item, *, base_dir: Path | None = None
) -> tuple[float, str | None]:
    """The score (0 to 1) of ``prediction`` for ``item``, and the answer read from it.

    Raises:
        ScoreError: a python scorer cannot be loaded or returned a non-score;
            whatever a python scorer raises propagates (the runner records it).
    """
    if prediction is None or not prediction.strip():
        return 0.0, None
    if item.scorer == "exact":
        return _exact(prediction, item)
    if item.scorer == "numeric":
        return _numeric(prediction, item)
    if item.scorer == "option":
        return _option(prediction, item)
    fn = _python(item.scorer.removeprefix("python:"), base_dir)
    value = fn(prediction, item)
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, int | float) and 0 <= value <= 1:
        return float(value), None
    raise ScoreError(f"scorer {item.scorer} returned {value!r}; return a bool or a number 0..1")
