"""The text convention: how a plain reply becomes a message.

For models that cannot call tools (and for a tools-mode reply that posted nothing):

* the reply is posted to the thread that woke the agent;
* ``@name`` tokens naming agents this agent can reach become mentions (a reachable
  agent that is not yet in the thread is added to it first);
* an agent allowed to answer gives the final answer with a reply that starts a
  line with ``FINAL:`` (the marker is removed), or that contains ``@user``, or
  that mentions nobody at all; the answer goes to the thread the user is in;
* any other reply that mentions nobody goes back to the agent that woke it.

A reply that cannot be posted (closed thread, inbox full ...) is dropped, never
raised: one bad reply does not end the run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from coral_graph._errors import ProtocolError
from coral_graph._types import USER
from coral_graph.llm._prompt import answer_thread

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message, Thread

__all__ = ["clean_reply", "parse_mentions", "post_reply", "split_final"]

_MENTION = re.compile(r"(?<![\w@.])@([a-z][a-z0-9_-]{0,63})")
_FINAL = re.compile(
    r"^[ \t>*_#-]*FINAL(?:[ _]ANSWER)?[*_]*\s*:[*_]*\s*", re.IGNORECASE | re.MULTILINE
)
_PREFIX = re.compile(r"^\s*\[t-\d+#\d+\]\s*")


def clean_reply(text: str, me: str) -> str:
    """Strip what small models echo from their prompt (``[t-1#3]`` and ``me:``
    prefixes) and paragraphs they repeat.

    >>> clean_reply("[t-1#4] solver -> @planner: 4", "solver")
    '4'
    >>> clean_reply("The answer is 4.\\n\\nThe answer is 4.\\n\\nThe answer is 4.", "solver")
    'The answer is 4.'
    """
    text = _PREFIX.sub("", text.strip())
    own = re.match(rf"^\s*{re.escape(me)}\s*(?:->[^:\n]*)?:\s*", text)
    if own:
        text = text[own.end() :]
    # Small models repeat a paragraph until max_tokens: keep each one once.
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n\n".join(dict.fromkeys(paragraphs))


def split_final(text: str) -> tuple[bool, str]:
    """Whether the reply carries the ``FINAL:`` marker, and the text without it.

    >>> split_final("I checked.\\nFINAL: Paris")
    (True, 'Paris')
    >>> split_final("no marker")
    (False, 'no marker')
    """
    m = _FINAL.search(text)
    if m is None:
        return False, text
    after = text[m.end() :].strip()
    return True, after or (text[: m.start()].strip() or text)


def parse_mentions(text: str) -> list[str]:
    """The ``@name`` tokens of ``text``, in order, without duplicates.

    >>> parse_mentions("ask @solver and @critic-2, then @solver. mail me@x.org")
    ['solver', 'critic-2']
    """
    names = [n.rstrip("-_") for n in _MENTION.findall(text)]
    return list(dict.fromkeys(n for n in names if n))


def _target_thread(ctx: AgentContext, wake: Message, targets: list[str]) -> Thread | None:
    for th in ctx.threads(include_closed=False):
        if th.id == wake.thread_id:
            return th
    for th in ctx.threads(include_closed=False):
        if all(th.has_participant(t) for t in targets):
            return th
    return None


async def post_reply(
    ctx: AgentContext,
    wake: Message,
    text: str,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Message | None:
    """Post ``text`` by the text convention; returns the message, or None if nothing
    could be posted."""
    text = clean_reply(text, ctx.name)
    if not text:
        return None
    final, body = split_final(text)
    names = [n for n in parse_mentions(body) if n != ctx.name]
    targets = [n for n in names if ctx.can_address(n)]
    others = [t for t in targets if t != USER]
    may_answer = ctx.can_address(USER)
    th: Thread | None = None
    mentions: list[str] = []
    if may_answer and (final or USER in targets or not others):
        th = answer_thread(ctx, wake.thread_id)
        if th is not None:
            mentions = [USER, *(t for t in others if th.has_participant(t))]
    if th is None:
        body = text if not final else body
        mentions = others
        if (
            not mentions
            and wake.sender != ctx.name
            and wake.sender != USER
            and ctx.can_address(wake.sender)
        ):
            mentions = [wake.sender]
        th = _target_thread(ctx, wake, mentions)
        if th is None and mentions:
            try:
                th = await ctx.create_thread(f"{ctx.name}: {body[:40]}", mentions)
            except ProtocolError:
                th = None
        if th is None:
            return None
        for name in mentions:
            if not th.has_participant(name):
                try:
                    await ctx.add_participant(th.id, name)
                except ProtocolError:
                    pass
        mentions = [n for n in mentions if th.has_participant(n)]
    try:
        return await ctx.send_message(th.id, body, mentions, reply_to=wake.id, metadata=metadata)
    except ProtocolError:
        pass
    try:  # the mentions were the problem: post the text alone
        return await ctx.send_message(th.id, body, (), reply_to=wake.id, metadata=metadata)
    except ProtocolError:
        return None
