"""The tally agent: ask every voter the same question and answer with the majority.

When the task arrives, it opens one thread with the voters (every agent it can
reach, or ``voters``) and asks the question. Each reply is one vote; the vote is
normalised (a ``FINAL:`` line if present, else the first number, else the first
line, lower-cased without punctuation) so "42." and "The answer is 42" agree.
Once every voter has answered, or ``quorum`` votes agree, it mentions ``user``
with the winner and the count.

>>> normalise_vote("FINAL: Paris.")
'paris'
>>> normalise_vote("I think it is 42, because 6*7")
'42'
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["Tally", "normalise_vote"]

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def normalise_vote(text: str) -> str:
    """The comparable form of one vote."""
    body = text.strip()
    for line in body.splitlines():
        if line.strip().upper().startswith("FINAL:"):
            body = line.strip()[6:]
            break
    else:
        m = _NUMBER.search(body)
        if m is not None:
            return m.group(0).replace(",", ".")
        body = body.splitlines()[0] if body else ""
    body = re.sub(r"@[a-z][a-z0-9_-]*", " ", body)
    return " ".join(re.sub(r"[^\w\s.-]", " ", body).lower().split()).strip(". ")


@dataclass
class _Poll:
    thread: str
    voters: list[str]
    task_thread: str
    votes: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    done: bool = False


class Tally:
    """Fans a question out to voters and answers the user with the majority vote.

    Args:
        voters: the agents to ask (default: every agent this one can reach).
        quorum: answer as soon as this many votes agree (default: wait for all).
    """

    description = "Asks every voter the question and answers with the majority vote."

    def __init__(self, voters: list[str] | None = None, quorum: int | None = None) -> None:
        self.voters = voters
        self.quorum = quorum
        self._polls: dict[str, _Poll] = {}  # by run id: one runtime may run several

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        poll = self._polls.get(ctx.run_id)
        if poll is None:
            reachable = [a.name for a in await ctx.list_agents() if a.name != "user"]
            voters = self.voters if self.voters is not None else reachable
            thread = await ctx.create_thread("vote", voters)
            poll = self._polls[ctx.run_id] = _Poll(thread.id, list(voters), message.thread_id)
            await ctx.send_message(thread, message.content, voters)
            return
        if poll.done or message.sender not in poll.voters or message.sender in poll.votes:
            return
        poll.votes[message.sender] = normalise_vote(message.content)
        poll.raw[message.sender] = message.content.strip()
        counts = Counter(v for v in poll.votes.values() if v)
        if not counts:
            return  # nothing to count yet; without votes the run ends idle
        winner, n = counts.most_common(1)[0]
        if len(poll.votes) < len(poll.voters) and (self.quorum is None or n < self.quorum):
            return
        poll.done = True
        self._polls.pop(ctx.run_id, None)
        detail = ", ".join(f"{k}: {v}" for k, v in counts.most_common())
        await ctx.send_message(
            poll.task_thread,
            f"{winner} ({n} of {len(poll.voters)} votes; {detail})",
            ["user"],
        )
