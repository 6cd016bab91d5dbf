"""Answers out of free text: extraction, normalisation, equivalence, voting.

Shared by the ``tally`` agent (sampling-and-voting) and the eval scorers, so a
vote and a score read an answer the same way.

>>> extract_answer("2 + 8 = 10")
'10'
>>> extract_answer("Let me think.\\nFINAL: Ottawa.")
'Ottawa.'
>>> extract_answer("I think 3 apples, then 12 pears", "last_number")
'12'
>>> extract_answer("The answer is (b) because...", "option")
'B'
>>> normalise_answer("The Capital is OTTAWA!")
'capital is ottawa'
>>> normalise_answer("1,000.0 dollars")
'1000 dollars'
>>> normalise_answer("Ten")
'10'
>>> same_answer("the capital of canada is ottawa", "Ottawa")
True
>>> same_answer("10", "100")
False
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal

__all__ = [
    "EXTRACTORS",
    "Extract",
    "VoteResult",
    "extract_answer",
    "normalise_answer",
    "parse_number",
    "same_answer",
    "similarity",
    "tally_votes",
]

Extract = Literal["auto", "final", "last_number", "option", "first_line", "text"]
EXTRACTORS: tuple[str, ...] = ("auto", "final", "last_number", "option", "first_line", "text")
"""The ways to pull an answer out of a reply (see :func:`extract_answer`)."""

_FINAL = re.compile(
    r"^\s*(?:\**\s*)?(?:final(?:\s+answer)?|answer)\s*(?:is)?\s*:\s*(.+)$", re.I | re.M
)
_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(.+)", re.I)
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_MENTION = re.compile(r"@[a-z][a-z0-9_-]*")
_ARTICLES = frozenset({"a", "an", "the"})
_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}


def _final_line(text: str) -> str | None:
    found = None
    for m in _FINAL.finditer(text):
        found = m.group(1).strip()  # the last one: a model may restate its answer
    return found or None


def _option(text: str, letters: str) -> str | None:
    cls = f"[{letters}{letters.lower()}]"
    patterns = (
        rf"answer\s*(?:is|:)?\s*[:(\[]?\s*({cls})\b",
        rf"^\s*[(\[]?({cls})[)\].:]",
        rf"^\s*({cls})\s*$",
        rf"[(\[]({cls})[)\]]",
        rf"\b(?:option|choice)\s+({cls})\b",
    )
    for body in (_final_line(text), text):
        if body is None:
            continue
        for p in patterns:
            m = re.search(p, body, re.I | re.M)
            if m:
                return m.group(1).upper()
    # A lone capital letter as a word, e.g. "B" or "I pick C".
    m = re.search(rf"\b([{letters}])\b", text)
    return m.group(1) if m else None


def extract_answer(text: str, how: str = "auto", *, options: str = "ABCDE") -> str | None:
    """The answer in a model's reply, or None when there is none of that kind.

    Args:
        text: the reply.
        how: ``final`` (a ``FINAL:`` / ``Answer:`` line), ``last_number`` (the last
            number in the reply, so "2 + 8 = 10" is 10), ``option`` (a multiple-choice
            letter), ``first_line``, ``text`` (all of it), or ``auto``: a final-answer
            line, else "the answer is X", else what follows the last ``=`` of the
            first line, else the first line.
        options: the letters ``option`` accepts.
    """
    text = _MENTION.sub(" ", text or "").strip()
    if not text:
        return None
    if how == "text":
        return text
    if how == "final":
        return _final_line(text)
    if how == "last_number":
        nums = _NUMBER.findall(_final_line(text) or text)
        return nums[-1].rstrip(",") if nums else None
    if how == "option":
        return _option(text, options)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if how == "first_line":
        return first or None
    if how != "auto":
        raise ValueError(f"extract must be one of {', '.join(EXTRACTORS)}, not {how!r}")
    found = _final_line(text)
    if found is None:
        m = _ANSWER_IS.search(first)
        found = m.group(1).strip() if m else None
    if found is None and "=" in first:
        found = first.rsplit("=", 1)[1].strip() or None
    return found or first or None


def parse_number(text: str) -> float | None:
    """The value of a number written as ``1,000``, ``-2.50``, ``3/4`` or ``ten``."""
    t = text.strip().lower().rstrip(".").replace(",", "").replace("$", "")
    t = _WORDS.get(t, t)
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return float(a) / float(b)
        return float(t)
    except (ValueError, ZeroDivisionError):
        return None


def _number_token(tok: str) -> str:
    value = parse_number(tok)
    if value is None:
        return tok
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalise_answer(text: str) -> str:
    """The comparable form of an answer: lower case, no punctuation, no articles,
    numbers as numbers (``1,000.0`` -> ``1000``, ``ten`` -> ``10``)."""
    t = _MENTION.sub(" ", text).lower()
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"[^\w\s.\-/]", " ", t)
    tokens = []
    for raw in t.split():
        tok = raw.strip(".-/")
        if not tok or tok in _ARTICLES:
            continue
        tokens.append(_number_token(_WORDS.get(tok, tok)))
    return " ".join(tokens)


def _is_number(norm: str) -> bool:
    return " " not in norm and parse_number(norm) is not None


def similarity(a: str, b: str) -> float:
    """How alike two normalised answers are, 0 to 1: 1 when equal or when one is the
    other's first or last words ("ottawa" and "capital of canada is ottawa");
    numbers are alike only when equal; otherwise difflib's ratio."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    if _is_number(a) or _is_number(b):
        ta, tb = a.split(), b.split()
        short, long_ = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
        # "10" and "2 + 8 = 10": the number ends the longer answer
        return 1.0 if len(short) == 1 and long_[-1] == short[0] and _is_number(short[0]) else 0.0
    ta, tb = a.split(), b.split()
    short, long_ = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    n = len(short)
    if long_[:n] == short or long_[-n:] == short:
        return 1.0
    return SequenceMatcher(None, a, b).ratio()


def same_answer(a: str, b: str, threshold: float = 0.85) -> bool:
    """Whether two raw answers count as the same (normalised, then :func:`similarity`)."""
    return similarity(normalise_answer(a), normalise_answer(b)) >= threshold


@dataclass(slots=True)
class _Cluster:
    members: list[str] = field(default_factory=list)  # voter names, in voter order
    forms: dict[str, int] = field(default_factory=dict)  # normalised form -> count
    texts: dict[str, str] = field(default_factory=dict)  # normalised form -> first raw text

    @property
    def rep(self) -> str:
        # the most common form; ties to the shorter, then to the earlier voter's
        return min(self.forms, key=lambda f: (-self.forms[f], len(f)))


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The outcome of a vote.

    Attributes:
        winner: the winning answer's text (as a voter wrote it), None if nobody voted.
        winner_normalised: its normalised form.
        votes: the winning cluster's size.
        voters: how many were asked.
        tie_break: ``none``, ``support`` or ``voter_order``: what decided between
            clusters with as many votes.
        table: the whole vote, JSON-ready (per voter and per cluster).
    """

    winner: str | None
    winner_normalised: str | None
    votes: int
    voters: int
    tie_break: str
    table: dict[str, Any]


def tally_votes(
    replies: Mapping[str, str | None],
    voters: Sequence[str],
    *,
    extract: str = "auto",
    threshold: float = 0.85,
    options: str = "ABCDE",
) -> VoteResult:
    """Count the votes in ``replies`` (voter -> reply text; None: no reply).

    Answers are extracted and normalised, then clustered: a vote joins the first
    cluster whose answer is at least ``threshold`` similar (see :func:`similarity`;
    ``threshold`` above 1 turns clustering off: only equal normalised answers agree).
    The cluster with most votes wins. The tie-break is never arrival order:

    1. *support*: the summed similarity of the cluster's answer to all votes outside
       it (the open-ended rule of "More Agents Is All You Need": the answer most
       alike to the others);
    2. *voter order*: the cluster holding the voter listed first in ``voters`` (put
       the greedy, temperature-0 voter first to let it decide the remaining ties).
    """
    order = {v: i for i, v in enumerate(voters)}
    per_voter: dict[str, dict[str, Any]] = {}
    normalised: dict[str, str] = {}
    for v in sorted(replies, key=lambda x: order.get(x, len(order))):
        reply = replies[v]
        ans = extract_answer(reply, extract, options=options) if reply is not None else None
        norm = normalise_answer(ans) if ans is not None else ""
        per_voter[v] = {"answer": ans, "normalised": norm or None, "cluster": None}
        if norm:
            normalised[v] = norm
    clusters: list[_Cluster] = []
    for v, norm in normalised.items():
        for c in clusters:
            if norm in c.forms or similarity(norm, c.rep) >= threshold:
                break
        else:
            c = _Cluster()
            clusters.append(c)
        c.members.append(v)
        c.forms[norm] = c.forms.get(norm, 0) + 1
        c.texts.setdefault(norm, str(per_voter[v]["answer"]).strip())
    for i, c in enumerate(clusters):
        for v in c.members:
            per_voter[v]["cluster"] = i

    def support(c: _Cluster) -> float:
        return sum(similarity(c.rep, n) for v, n in normalised.items() if v not in c.members)

    ranked = sorted(
        clusters,
        key=lambda c: (-len(c.members), -support(c), min(order.get(v, 1 << 30) for v in c.members)),
    )
    tie_break = "none"
    if len(ranked) > 1 and len(ranked[0].members) == len(ranked[1].members):
        s0, s1 = support(ranked[0]), support(ranked[1])
        tie_break = "support" if abs(s0 - s1) > 1e-9 else "voter_order"
    table = {
        "voters": per_voter,
        "clusters": [
            {
                "answer": c.texts[c.rep],
                "normalised": c.rep,
                "votes": len(c.members),
                "voters": list(c.members),
                "support": round(support(c), 4),
            }
            for c in ranked
        ],
        "extract": extract,
        "threshold": threshold,
        "tie_break": tie_break,
        "abstained": [v for v in voters if v not in normalised],
    }
    if not ranked:
        return VoteResult(None, None, 0, len(voters), "none", table)
    win = ranked[0]
    return VoteResult(win.texts[win.rep], win.rep, len(win.members), len(voters), tie_break, table)
