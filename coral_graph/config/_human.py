"""The ``human`` kind: a person at the terminal answers when mentioned.

The line is read in a worker thread so the event loop (and every other agent)
keeps running while the person types. Reply conventions:

* ``@name …`` at the start mentions ``name`` (several are allowed);
* ``FINAL: …`` answers the task (mentions ``user``), when this agent may answer;
* otherwise the reply mentions whoever wrote the message;
* an empty line passes (no reply).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import anyio.to_thread

from coral_graph._types import USER

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message

__all__ = ["HumanAgent", "parse_reply"]

_MENTION = re.compile(r"@([a-z][a-z0-9_-]{0,63})\b")


def parse_reply(text: str, default: str) -> tuple[str, list[str]]:
    """Split a typed reply into content and mentions.

    >>> parse_reply("@critic check this", "planner")
    ('check this', ['critic'])
    >>> parse_reply("FINAL: 42", "planner")
    ('42', ['user'])
    >>> parse_reply("sounds good", "planner")
    ('sounds good', ['planner'])
    """
    body = text.strip()
    if body.upper().startswith("FINAL:"):
        return body[6:].strip(), [USER]
    mentions: list[str] = []
    while True:
        m = _MENTION.match(body)
        if m is None:
            break
        mentions.append(m.group(1))
        body = body[m.end() :].lstrip(" ,:")
    return body, mentions or [default]


class HumanAgent:
    """An agent whose turns are typed by a person.

    Args:
        prompt: shown before each answer is read.
        description: what the other agents see in ``list_agents()``.
        read_line: reads one line (default: ``input``); called in a worker thread.
        out: where incoming messages are shown (default: stderr).
    """

    kind = "human"

    def __init__(
        self,
        prompt: str = "",
        *,
        description: str = "a person at the terminal",
        read_line: Callable[[str], str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.prompt = prompt
        self.description = description
        self._read = read_line if read_line is not None else input
        self._out = out

    async def handle(self, ctx: AgentContext, message: Message) -> None:
        out = self._out if self._out is not None else sys.stderr
        print(f"\n[{message.sender} -> {ctx.name}] {message.content}", file=out, flush=True)
        if self.prompt:
            print(self.prompt, file=out, flush=True)
        try:
            line = await anyio.to_thread.run_sync(
                self._read, f"{ctx.name}> ", abandon_on_cancel=True
            )
        except EOFError:
            return
        content, mentions = parse_reply(line, message.sender)
        if not content:
            return
        allowed = [m for m in mentions if ctx.can_address(m) and m != ctx.name]
        if not allowed and message.sender != ctx.name and ctx.can_address(message.sender):
            allowed = [message.sender]
        thread = ctx.thread(message.thread_id)
        for m in allowed:
            if m != USER and not thread.has_participant(m):
                await ctx.add_participant(thread, m)
        await ctx.send_message(message.thread_id, content, allowed, reply_to=message.id)
