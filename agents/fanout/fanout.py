"""The fanout agent: one layer of proposers, for Mixture-of-Agents and study groups.

It is woken with a question (the task, or a previous layer's hand-off). It opens a
thread with its ``proposers``, asks them all at once, and waits for one answer from
each. With ``rounds`` above 1 the proposers then *compare notes*: in the same shared
thread each is shown every answer of the round before and asked for its revised
answer (a "heavy" study group). Finally it hands the question and the last round's
answers to ``next`` in the thread it was woken in: another fanout (the next
Mixture-of-Agents layer) or an aggregator / synthesiser that answers the user.

The hand-off's text is a prompt (the question, then the numbered answers); its
metadata holds ``{"fanout": {"question", "answers", "layer"}}`` so a later layer
reads the original question, not the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["FanOut", "compose"]


def compose(question: str, answers: list[str], ask: str) -> str:
    """The prompt that carries ``answers`` to the next agent.

    >>> print(compose("2+2?", ["4", "four"], "Give the best answer."))
    Question: 2+2?
    <BLANKLINE>
    Answers so far:
    1. 4
    2. four
    <BLANKLINE>
    Give the best answer.
    """
    lines = [f"Question: {question}", "", "Answers so far:"]
    lines += [f"{i}. {' '.join(a.split())}" for i, a in enumerate(answers, 1)]
    return "\n".join([*lines, "", ask])


@dataclass
class _Layer:
    question: str
    layer: int
    origin_thread: str
    thread: str = ""
    round: int = 1
    answers: dict[str, str] = field(default_factory=dict)


class FanOut:
    """Asks ``proposers`` in parallel and hands their answers to ``next``.

    Args:
        proposers: the agents of this layer.
        next: who gets the question and the answers (an agent this one can reach).
        rounds: 1 for independent answers; more to let the proposers compare notes
            in their shared thread and revise.
        ask_next: the instruction that ends the hand-off to ``next``.
        ask_revise: the instruction of a compare-notes round.
    """

    description = "Asks a layer of proposers and hands their answers on."

    def __init__(
        self,
        proposers: list[str],
        next: str,
        rounds: int = 1,
        ask_next: str = "Reply with the single best answer only.",
        ask_revise: str = "Compare these answers with yours. Reply with your best answer only.",
        ask_previous: str = "Use these answers if they help. Reply with your best answer only.",
    ) -> None:
        if not proposers:
            raise ValueError("proposers must name at least one agent")
        if rounds < 1:
            raise ValueError("rounds must be at least 1")
        self.proposers = list(proposers)
        self.next = next
        self.rounds = rounds
        self.ask_next = ask_next
        self.ask_revise = ask_revise
        self.ask_previous = ask_previous
        self._layers: dict[str, _Layer] = {}  # by run id

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        state = self._layers.get(ctx.run_id)
        if state is None:
            carried: dict[str, Any] = dict(message.metadata or {}).get("fanout") or {}
            question = str(carried.get("question") or message.content)
            state = _Layer(question, int(carried.get("layer", 0)) + 1, message.thread_id)
            self._layers[ctx.run_id] = state
            thread = await ctx.create_thread(f"layer {state.layer}", self.proposers)
            state.thread = thread.id
            prior = [str(a) for a in carried.get("answers") or []]
            text = compose(question, prior, self.ask_previous) if prior else question
            await ctx.send_message(thread, text, self.proposers)
            return
        if message.sender not in self.proposers or message.sender in state.answers:
            return
        state.answers[message.sender] = message.content.strip()
        if len(state.answers) < len(self.proposers):
            return
        answers = [state.answers[p] for p in self.proposers]
        if state.round < self.rounds:
            state.round += 1
            state.answers = {}
            text = compose(state.question, answers, self.ask_revise)
            await ctx.send_message(state.thread, text, self.proposers)
            return
        del self._layers[ctx.run_id]
        await ctx.add_participant(state.origin_thread, self.next)
        await ctx.send_message(
            state.origin_thread,
            compose(state.question, answers, self.ask_next),
            [self.next],
            metadata={
                "fanout": {"question": state.question, "answers": answers, "layer": state.layer}
            },
        )
