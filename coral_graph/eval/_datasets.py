"""Datasets for ``coral-graph eval``: a JSONL format, bundled sets, GSM8K/MMLU loaders.

One item per line::

    {"id": "q1", "question": "What is 2 + 2?", "answers": ["4"], "scorer": "numeric"}

* ``id`` (string, unique in the file) and ``question`` (string) are required;
* ``answers``: the accepted answers (a list of strings; a lone string is one answer);
* ``scorer``: ``exact`` (normalised exact match, the default), ``numeric``,
  ``option`` (a multiple-choice letter) or ``python:<file.py or module>:<function>``
  (called as ``function(prediction, item)``, returning a bool or a score 0..1);
* ``choices``: for multiple choice, the options; they are appended to the question
  as ``A) ...`` lines and ``answers`` holds the letter (or the option's text);
* anything else is kept in ``meta``.

Files a user already has are read as they are: a GSM8K-style line
(``{"question", "answer": "... #### 72"}``) becomes a numeric item, an MMLU-style
line (``{"question", "choices": [...], "answer": 2 or "C"}``) an option item. A
bad line is an error naming ``file:line`` and the field.

Bundled sets (no network): ``facts`` (206 short facts: capitals, chemical symbols,
general knowledge), ``choice`` (126 four-option questions built from the facts),
``arithmetic`` (300 generated sums, differences and products, drawn with ``seed``).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from coral_graph._errors import CoralError

__all__ = [
    "BUNDLED",
    "SCORERS",
    "Dataset",
    "DatasetError",
    "Item",
    "generate_arithmetic",
    "load_dataset",
    "parse_items",
]

SCORERS = ("exact", "numeric", "option")
"""The built-in scorers; ``python:...`` names a function of your own."""
BUNDLED = ("facts", "choice", "arithmetic")
"""The datasets shipped with coral-graph."""
_LETTERS = "ABCDEFGHIJ"
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


class DatasetError(CoralError):
    """A dataset that cannot be read: the message names ``file:line`` and the field.

    Attributes:
        file: the dataset file (or name).
        line: the 1-based line, or None.
        field: the field at fault, or None.
    """

    def __init__(
        self, message: str, *, file: str, line: int | None = None, field: str | None = None
    ) -> None:
        where = f"{file}:{line}" if line is not None else file
        what = f" (field {field!r})" if field else ""
        super().__init__(f"{where}{what}: {message}")
        self.file = file
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class Item:
    """One question of a dataset.

    Attributes:
        id: unique within the dataset.
        question: the task given to the graph (with the options, for choice items).
        answers: the accepted answers.
        scorer: ``exact``, ``numeric``, ``option`` or ``python:...``.
        choices: the options of a multiple-choice item (empty otherwise).
        meta: the line's other fields.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    scorer: str = "exact"
    choices: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named list of items (``source``: the file or ``bundled:<name>``)."""

    name: str
    source: str
    items: tuple[Item, ...]
    base_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def _with_choices(question: str, choices: list[str]) -> str:
    lines = [question.rstrip(), ""]
    lines += [f"{_LETTERS[i]}) {c}" for i, c in enumerate(choices)]
    lines += ["", "Reply with the letter of the right option."]
    return "\n".join(lines)


def _item(data: Any, file: str, line: int) -> Item:
    def bad(msg: str, fld: str | None = None) -> DatasetError:
        return DatasetError(msg, file=file, line=line, field=fld)

    if not isinstance(data, dict):
        raise bad(f"a line must be a JSON object, not {type(data).__name__}")
    data = dict(data)
    question = data.pop("question", None)
    if not isinstance(question, str) or not question.strip():
        raise bad("missing or empty: every item needs a question (a string)", "question")
    raw_id = data.pop("id", None)
    if raw_id is None:
        item_id = f"line-{line}"  # GSM8K/MMLU files have no ids: the line number is one
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
        item_id = str(raw_id)
    else:
        raise bad("must be a non-empty string or integer", "id")
    choices_raw = data.pop("choices", None)
    choices: list[str] = []
    if choices_raw is not None:
        if (
            not isinstance(choices_raw, list)
            or not 2 <= len(choices_raw) <= len(_LETTERS)
            or not all(isinstance(c, str | int | float) for c in choices_raw)
        ):
            raise bad(f"must be a list of 2 to {len(_LETTERS)} options", "choices")
        choices = [str(c) for c in choices_raw]
    scorer = data.pop("scorer", None)
    answers_raw = data.pop("answers", None)
    answer = data.pop("answer", None)
    if answers_raw is None and answer is not None:
        if choices and isinstance(answer, int) and not isinstance(answer, bool):
            if not 0 <= answer < len(choices):  # MMLU: the index of the right option
                raise bad(f"option index {answer} is out of range 0..{len(choices) - 1}", "answer")
            answers_raw = [_LETTERS[answer]]
        elif isinstance(answer, str) and (m := _GSM8K_ANSWER.search(answer)):
            answers_raw = [m.group(1).replace(",", "")]  # GSM8K: "... #### 72"
            scorer = scorer or "numeric"
            data["solution"] = answer
        else:
            answers_raw = [answer]
    if answers_raw is None:
        raise bad('missing: give "answers" (a list) or "answer"', "answers")
    if isinstance(answers_raw, str | int | float) and not isinstance(answers_raw, bool):
        answers_raw = [answers_raw]
    if (
        not isinstance(answers_raw, list)
        or not answers_raw
        or not all(
            isinstance(a, str | int | float) and not isinstance(a, bool) for a in answers_raw
        )
    ):
        raise bad("must be a non-empty list of strings or numbers", "answers")
    answers = [str(a) for a in answers_raw]
    if choices:
        scorer = scorer or "option"
        # an answer given as the option's text becomes its letter
        letters = _LETTERS[: len(choices)]
        answers = [
            _LETTERS[choices.index(a)]
            if a in choices and not (len(a) == 1 and a.upper() in letters)
            else a
            for a in answers
        ]
        question = _with_choices(question, choices)
    scorer = scorer or "exact"
    if not isinstance(scorer, str) or (
        scorer not in SCORERS and not (scorer.startswith("python:") and scorer.count(":") >= 2)
    ):
        raise bad(
            f"unknown scorer {scorer!r}: use {', '.join(SCORERS)} or python:file.py:function",
            "scorer",
        )
    return Item(item_id, question, tuple(answers), scorer, tuple(choices), data)


def parse_items(lines: Iterator[str] | list[str], file: str) -> list[Item]:
    """Items from JSONL text lines; blank lines and ``#`` comments are skipped.

    Raises:
        DatasetError: a line is not JSON, lacks a field, or repeats an id.
    """
    items: list[Item] = []
    seen: dict[str, int] = {}
    for n, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"not valid JSON ({exc.msg} at column {exc.colno}); one JSON object per line",
                file=file,
                line=n,
            ) from None
        item = _item(data, file, n)
        if item.id in seen:
            raise DatasetError(
                f"duplicate id {item.id!r} (first on line {seen[item.id]})",
                file=file,
                line=n,
                field="id",
            )
        seen[item.id] = n
        items.append(item)
    if not items:
        raise DatasetError("the dataset has no items", file=file)
    return items


def generate_arithmetic(n: int = 300, seed: int = 0) -> list[Item]:
    """``n`` arithmetic questions drawn with ``seed``: two-digit sums and differences,
    one-digit-by-two-digit products. The same seed gives the same items."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            q, ans = f"What is {a} + {b}?", a + b
        elif kind == 1:
            a, b = rng.randint(20, 90), rng.randint(2, 19)
            q, ans = f"What is {a} - {b}?", a - b
        else:
            a, b = rng.randint(2, 9), rng.randint(2, 12)
            q, ans = f"What is {a} * {b}?", a * b
        items.append(Item(f"arith-{seed}-{i + 1:03d}", q, (str(ans),), "numeric"))
    return items


def _bundled(name: str, seed: int) -> Dataset:
    if name == "arithmetic":
        return Dataset(
            name, f"bundled:arithmetic(seed={seed})", tuple(generate_arithmetic(300, seed))
        )
    text = resources.files("coral_graph.eval").joinpath("data", f"{name}.jsonl").read_text("utf-8")
    return Dataset(name, f"bundled:{name}", tuple(parse_items(text.splitlines(), f"{name}.jsonl")))


def load_dataset(name_or_path: str | Path, *, seed: int = 0) -> Dataset:
    """A bundled dataset by name (``facts``, ``choice``, ``arithmetic``) or a JSONL file.

    Raises:
        DatasetError: an unknown name, an unreadable file, or a bad line.
    """
    text = str(name_or_path)
    if text in BUNDLED:
        return _bundled(text, seed)
    path = Path(text)
    if not path.exists():
        raise DatasetError(
            f"no such file, and not a bundled dataset (bundled: {', '.join(BUNDLED)})", file=text
        )
    try:
        with path.open(encoding="utf-8") as f:
            items = parse_items(list(f), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read it: {exc}", file=str(path)) from None
    return Dataset(path.stem, str(path), tuple(items), base_dir=path.resolve().parent)


ScoreFn = Callable[[str, Item], "bool | float"]
