"""Measure graphs: answers out of free text, datasets, scorers, and ``coral-graph eval``.

Importing this package is cheap: the runner and the datasets load on first use.
"""

from __future__ import annotations

from coral_graph.eval._answers import (
    EXTRACTORS,
    Extract,
    VoteResult,
    extract_answer,
    normalise_answer,
    parse_number,
    same_answer,
    similarity,
    tally_votes,
)

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
