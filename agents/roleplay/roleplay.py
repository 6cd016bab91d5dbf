"""The roleplay agent: a CAMEL role-playing session between two agents.

CAMEL (Li et al. 2023) pairs an *AI user*, who gives one instruction at a time,
with an *AI assistant*, who carries each one out; both get inception prompts (the
system prompts of the two agents in the graph). This agent is the session: it
opens one thread with both, hands the task to the user agent, then passes every
message of one to the other — so the pair delegates whether or not a small model
remembers to write ``@name`` — until the user agent's message contains the
termination token (``<CAMEL_TASK_DONE>``) or ``max_turns`` instructions were
given. It then answers the user with the assistant's last result (or the text
after the token, when the user agent gives one), with the session in metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import coral_graph as cg

__all__ = ["RolePlay"]


@dataclass
class _Session:
    task_thread: str
    thread: str
    turns: int = 0
    results: list[str] = field(default_factory=list)
    transcript: list[dict[str, str]] = field(default_factory=list)


class RolePlay:
    """A role-play session (see the module docs).

    Args:
        user: the AI user agent (gives instructions).
        assistant: the AI assistant agent (carries them out).
        max_turns: instructions at most.
        done: the termination token.
    """

    description = "Runs a role-play session between an AI user and an AI assistant."

    def __init__(
        self,
        user: str,
        assistant: str,
        max_turns: int = 4,
        done: str = "<CAMEL_TASK_DONE>",
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.user = user
        self.assistant = assistant
        self.max_turns = max_turns
        self.done = done
        self._sessions: dict[str, _Session] = {}

    async def handle(self, ctx: cg.AgentContext, message: cg.Message) -> None:
        s = self._sessions.get(ctx.run_id)
        if s is None:
            thread = await ctx.create_thread("role-play", [self.user, self.assistant])
            s = self._sessions[ctx.run_id] = _Session(message.thread_id, thread.id)
            await ctx.send_message(
                thread,
                f"Task: {message.content}\nGive the first instruction. When the task is "
                f"done, reply with {self.done} and the result.",
                [self.user],
            )
            return
        text = message.content.strip()
        s.transcript.append({"from": message.sender, "text": text})
        if message.sender == self.user:
            if self.done in text or s.turns >= self.max_turns:
                after = text.split(self.done, 1)[1].strip() if self.done in text else ""
                await self._finish(ctx, s, after or (s.results[-1] if s.results else text))
                return
            s.turns += 1
            await ctx.send_message(s.thread, f"Instruction: {text}", [self.assistant])
        elif message.sender == self.assistant:
            s.results.append(text)
            last = s.turns >= self.max_turns
            ask = (
                f"Turn limit reached: reply with {self.done} and the result."
                if last
                else f"Give the next instruction, or reply with {self.done} and the result."
            )
            await ctx.send_message(s.thread, f"Solution: {text}\n\n{ask}", [self.user])

    async def _finish(self, ctx: cg.AgentContext, s: _Session, answer: str) -> None:
        del self._sessions[ctx.run_id]
        await ctx.send_message(
            s.task_thread,
            answer,
            ["user"],
            metadata={"roleplay": {"turns": s.turns, "transcript": s.transcript}},
        )
