"""The tally agent: ask every voter the same question and answer with the vote's winner.

Sampling-and-voting ("More Agents Is All You Need", Li et al. 2024): N voters answer
independently; the answer most of them agree on wins. When the task arrives, the
tally opens one thread with the voters (``voters``, or every agent it can reach, in
the order of the graph file) and asks the question. Each reply is one vote:

* the answer is *extracted* (``extract``: ``auto``, ``final``, ``last_number``,
  ``option``, ``first_line``, ``text``) so "2 + 8 = 10" votes 10, not 2;
* *normalised* (case, punctuation, articles, numbers as numbers);
* *clustered* with equivalent answers by string similarity (``threshold``), so
  "the capital of canada is ottawa" and "Ottawa" are one answer;
* the biggest cluster wins; ties go to the answer most similar to the other votes,
  then to the cluster of the voter listed first -- never to whoever answered first.

The answer sent to ``user`` is the winner's text only; the whole vote table
(per voter and per cluster, the tie-break used) is in the message's metadata under
``vote``. It answers once every voter has replied, or as soon as ``quorum`` votes
agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coral_graph.eval import EXTRACTORS, tally_votes

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["Tally"]


@dataclass
class _Poll:
    thread: str
    voters: list[str]
    task_thread: str
    replies: dict[str, str] = field(default_factory=dict)
    done: bool = False


class Tally:
    """Fans a question out to voters and answers the user with the winning vote.

    Args:
        voters: the agents to ask, in tie-break order (default: every agent this
            one can reach, in the graph's order).
        quorum: answer as soon as this many votes agree (default: wait for all).
        extract: how an answer is read from a reply (see the module docs).
        threshold: similarity at or above which two answers are the same (0-1;
            above 1: only equal normalised answers agree).
        options: the letters ``extract: option`` accepts.
    """

    description = "Asks every voter the question and answers with the winning vote."

    def __init__(
        self,
        voters: list[str] | None = None,
        quorum: int | None = None,
        extract: str = "auto",
        threshold: float = 0.85,
        options: str = "ABCDE",
    ) -> None:
        if extract not in EXTRACTORS:
            raise ValueError(f"extract must be one of {', '.join(EXTRACTORS)}, not {extract!r}")
        if quorum is not None and quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.voters = voters
        self.quorum = quorum
        self.extract = extract
        self.threshold = threshold
        self.options = options
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
        if poll.done or message.sender not in poll.voters or message.sender in poll.replies:
            return
        poll.replies[message.sender] = message.content
        result = tally_votes(
            poll.replies,
            poll.voters,
            extract=self.extract,
            threshold=self.threshold,
            options=self.options,
        )
        waiting = len(poll.replies) < len(poll.voters)
        if waiting and (self.quorum is None or result.votes < self.quorum):
            return
        poll.done = True
        self._polls.pop(ctx.run_id, None)
        text = result.winner if result.winner is not None else "(no answer: no vote could be read)"
        await ctx.send_message(
            poll.task_thread,
            text,
            ["user"],
            metadata={
                "vote": {
                    **result.table,
                    "winner": result.winner,
                    "votes": result.votes,
                    "of": result.voters,
                    "replied": len(poll.replies),
                }
            },
        )
