"""What a view shows: :class:`Filters` and the SQL they compile to.

:meth:`Filters.sql` builds the WHERE clause over ``messages`` that every message
query of :class:`~coral_graph.viewer.query.RunReader` uses; :func:`cg_match` is
the SQL function behind its text search (registered on each connection).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["KINDS", "Filters", "cg_match"]

KINDS = ("task", "answer", "llm", "tool")
"""Message kinds a view can filter on: the task (sent by ``user``), answers (that
mention ``user``), messages written by a model (``metadata.model`` set), and
messages that carry tool calls."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What a view shows. Every field is optional; they combine with AND.

    Attributes:
        thread: one thread id.
        agent: messages an agent sent **or** was mentioned in.
        sender / mention: the exact sender → mention edge (``from`` / ``to`` in URLs).
        kind: one of :data:`KINDS`.
        errors: only messages whose handling raised.
        q: text search (case-insensitive, Unicode-aware) in content and sender.
    """

    thread: str | None = None
    agent: str | None = None
    sender: str | None = None
    mention: str | None = None
    kind: str | None = None
    errors: bool = False
    q: str | None = None

    _PARAM = {"sender": "from", "mention": "to"}  # noqa: RUF012 - class constant

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Filters:
        """Read filters from URL query parameters (``from``/``to`` for the edge)."""

        def get(name: str) -> str | None:
            value = params.get(cls._PARAM.get(name, name))
            return value if value else None

        kind = get("kind")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        return cls(
            thread=get("thread"),
            agent=get("agent"),
            sender=get("sender"),
            mention=get("mention"),
            kind=kind,
            errors=params.get("errors") in ("1", "true"),
            q=get("q"),
        )

    def to_params(self) -> dict[str, str]:
        """The inverse of :meth:`from_params` (unset fields left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is True:
                out[f.name] = "1"
            elif value:
                out[self._PARAM.get(f.name, f.name)] = value
        return out

    def without_query(self) -> Filters:
        """The same filters without the text search."""
        return Filters(
            self.thread, self.agent, self.sender, self.mention, self.kind, self.errors, None
        )

    def sql(self, run_id: str) -> tuple[str, list[Any]]:
        """A WHERE clause (over ``messages``) and its parameters."""
        where = ["run_id = ?"]
        params: list[Any] = [run_id]
        mentioned = "message_id IN (SELECT message_id FROM mentions WHERE run_id = ? AND agent = ?)"
        if self.thread:
            where.append("thread_id = ?")
            params.append(self.thread)
        if self.agent:
            where.append(f"(sender = ? OR {mentioned})")
            params += [self.agent, run_id, self.agent]
        if self.sender:
            where.append("sender = ?")
            params.append(self.sender)
        if self.mention:
            where.append(mentioned)
            params += [run_id, self.mention]
        if self.kind == "task":
            where.append("sender = 'user'")
        elif self.kind == "answer":
            where.append(mentioned)
            params += [run_id, "user"]
        elif self.kind == "llm":
            where.append(
                "metadata IS NOT NULL AND json_valid(metadata) "
                "AND json_extract(metadata, '$.model') IS NOT NULL"
            )
        elif self.kind == "tool":
            where.append(
                "message_id IN (SELECT message_id FROM tool_calls WHERE run_id = ? "
                "AND message_id IS NOT NULL)"
            )
            params.append(run_id)
        if self.errors:
            where.append(
                "message_id IN (SELECT message_id FROM errors WHERE run_id = ? "
                "AND message_id IS NOT NULL)"
            )
            params.append(run_id)
        if self.q:
            where.append("cg_match(content, sender, ?)")
            params.append(self.q.casefold())
        return " AND ".join(where), params


def cg_match(content: object, sender: object, needle: object) -> bool:
    """Whether the casefolded ``needle`` is in ``content`` or ``sender`` (SQL ``cg_match``)."""
    if not isinstance(needle, str):
        return False
    if isinstance(content, str) and needle in content.casefold():
        return True
    return isinstance(sender, str) and needle in sender.casefold()
