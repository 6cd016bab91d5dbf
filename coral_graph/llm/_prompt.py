"""The context an LLM agent sees when it wakes: built fresh per wake, not a chat log.

In order:

1. a system message: the agent's own system prompt, who it is, whom it can reach
   (with descriptions) and how to act (tools or the text convention);
2. a short note on its *other* threads: open ones briefly (participants, size, the
   last message clipped), closed ones by their summary;
3. the recent messages of the thread that woke it (its own as ``assistant``,
   everyone else's as ``user``, each prefixed ``[t-2#5] sender -> @mentions:``);
4. the message that woke it (the newest mention), with the thread's name and
   participants.

When the whole is over the token budget, the oldest thread messages go first,
then the note on other threads, and last the middle of an oversized wake message.
The system message and the wake message are always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from coral_graph._errors import ProtocolError
from coral_graph._types import USER
from coral_graph.llm._types import ChatMessage

if TYPE_CHECKING:
    from coral_graph._context import AgentContext
    from coral_graph._model import Message, Thread

__all__ = ["Counter", "answer_thread", "build_context", "render_message"]

Counter = Callable[[Sequence[ChatMessage]], int]
"""Counts the tokens of a list of chat messages."""

_HISTORY = 40  # thread messages considered before token trimming
_SNIPPET = 160


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_message(m: Message) -> str:
    """``[t-2#5] solver -> @planner: the text``."""
    to = " ".join("@" + x for x in m.mentions)
    arrow = f" -> {to}" if to else ""
    return f"[{m.id}] {m.sender}{arrow}: {m.content}"


def answer_thread(ctx: AgentContext, prefer: str | None = None) -> Thread | None:
    """The open thread where this agent may answer: one that has ``user`` in it
    (``prefer`` first), or None if the agent may not answer."""
    if not ctx.can_address(USER):
        return None
    threads = ctx.threads(include_closed=False)
    threads.sort(key=lambda t: t.id != prefer)
    for th in threads:
        if th.has_participant(USER):
            return th
    return None


def _rules(ctx: AgentContext, mode: Literal["tools", "text"], wake: Message) -> str:
    answer = answer_thread(ctx, wake.thread_id)
    if mode == "tools":
        lines = [
            "Act with the tools. send_message posts into a thread and wakes the agents you "
            "mention; create_thread opens a new thread for a sub-task with agents you can "
            "reach. A tool error tells you what to fix.",
        ]
        if answer is not None:
            lines.append(
                f"When you have the final answer, send_message to thread {answer.id} "
                'with mentions ["user"].'
            )
        lines.append("When you are done for now, stop calling tools and reply with a short note.")
        return "\n".join(lines)
    if answer is not None:
        return (
            "Reply in plain text; your reply is posted in the thread. To ask an agent, "
            "write @name in your reply. To give the final answer, start your reply with "
            "FINAL: (a reply that mentions nobody is also taken as the final answer)."
        )
    return (
        f"Reply in plain text; your reply is sent back to {wake.sender}. "
        "To ask another agent, write @name in your reply."
    )


def _system(
    ctx: AgentContext,
    system_prompt: str,
    description: str,
    mode: Literal["tools", "text"],
    wake: Message,
) -> str:
    parts = []
    if system_prompt.strip():
        parts.append(system_prompt.strip())
    who = f'You are "{ctx.name}", one of several agents that talk in threads.'
    if description.strip():
        who += f" Your role: {description.strip()}"
    parts.append(who)
    roster = [a for a in ctx.list_agents_nowait()]
    if roster:
        parts.append(
            "You can reach:\n"
            + "\n".join(f"- {a.name}: {a.description or '(no description)'}" for a in roster)
        )
    else:
        parts.append("You cannot address any other agent.")
    parts.append(_rules(ctx, mode, wake))
    return "\n\n".join(parts)


def _other_threads(ctx: AgentContext, wake: Message) -> str:
    lines = []
    for th in ctx.threads():
        if th.id == wake.thread_id:
            continue
        if th.closed:
            summary = _clip(th.summary or "(no summary)", _SNIPPET)
            lines.append(f'- {th.id} "{th.name}" (closed): {summary}')
            continue
        who = ", ".join(th.participants)
        msgs = th.messages
        last = ""
        if msgs:
            m = msgs[-1]
            last = f"; last, from {m.sender}: {_clip(m.content, _SNIPPET)}"
        lines.append(f'- {th.id} "{th.name}" (open, with {who}): {len(msgs)} messages{last}')
    return ("Your other threads:\n" + "\n".join(lines)) if lines else ""


def build_context(
    ctx: AgentContext,
    wake: Message,
    *,
    system_prompt: str,
    description: str,
    mode: Literal["tools", "text"],
    budget_tokens: int,
    count: Counter,
    compact: bool = False,
) -> list[ChatMessage]:
    """The prompt for one wake of ``ctx.name`` by ``wake``, within ``budget_tokens``.

    ``compact`` is for very small models (the embedded 135M one), which echo any
    bookkeeping they are shown: the system message is the agent's own prompt plus
    the text convention only when it can reach agents besides the one that woke
    it, history lines are ``sender: text``, and the wake message is its bare text.
    """
    if compact:
        return _compact_context(ctx, wake, system_prompt, description, budget_tokens, count)
    system: ChatMessage = {
        "role": "system",
        "content": _system(ctx, system_prompt, description, mode, wake),
    }
    note_text = _other_threads(ctx, wake)
    note: ChatMessage | None = {"role": "user", "content": note_text} if note_text else None
    history: list[ChatMessage] = []
    header = ""
    try:
        th: Thread | None = ctx.thread(wake.thread_id)
    except ProtocolError:  # removed from the thread since the mention
        th = None
    if th is not None:
        older = [m for m in th.messages if m.id != wake.id][-_HISTORY:]
        for m in older:
            if m.sender == ctx.name:
                history.append({"role": "assistant", "content": m.content})
            else:
                history.append({"role": "user", "content": render_message(m)})
        state = "" if not th.closed else ", closed"
        header = (
            f'(Thread {th.id} "{th.name}"{state}, participants: {", ".join(th.participants)}. '
            f"This message woke you.)"
        )
    wake_text = render_message(wake) + ("\n\n" + header if header else "")
    final: ChatMessage = {"role": "user", "content": wake_text}

    def sizes(items: list[ChatMessage]) -> list[int]:
        return [count([m]) for m in items]

    fixed = count([system]) + count([final])
    hist_sizes = sizes(history)
    note_size = count([note]) if note is not None else 0
    total = fixed + note_size + sum(hist_sizes)
    drop = 0
    while total > budget_tokens and drop < len(history):
        total -= hist_sizes[drop]
        drop += 1
    history = history[drop:]
    if total > budget_tokens and note is not None:
        total -= note_size
        note = None
    if total > budget_tokens:
        # Only the wake message is left to shrink: keep its head and tail.
        over_chars = (total - budget_tokens) * 4 + 64
        text = final["content"]
        if over_chars < len(text) - 200:
            keep = len(text) - over_chars
            head = keep * 2 // 3
            final = {
                "role": "user",
                "content": text[:head] + "\n[... trimmed ...]\n" + text[-(keep - head) :],
            }
    out = [system]
    if note is not None:
        out.append(note)
    out.extend(history)
    out.append(final)
    return out


def _compact_context(
    ctx: AgentContext,
    wake: Message,
    system_prompt: str,
    description: str,
    budget_tokens: int,
    count: Counter,
) -> list[ChatMessage]:
    parts = [system_prompt.strip() or description.strip() or "You are a helpful assistant."]
    others = [a.name for a in ctx.list_agents_nowait() if a.name not in (wake.sender, USER)]
    if others:
        parts.append(
            "To ask for help, write @name with one of: "
            + ", ".join(others)
            + ". "
            + _rules(ctx, "text", wake).split(". ", 1)[-1]
        )
    system: ChatMessage = {"role": "system", "content": "\n\n".join(parts)}
    final: ChatMessage = {"role": "user", "content": wake.content}
    history: list[ChatMessage] = []
    try:
        th: Thread | None = ctx.thread(wake.thread_id)
    except ProtocolError:
        th = None
    if th is not None:
        for m in [m for m in th.messages if m.id != wake.id][-_HISTORY:]:
            if m.sender == ctx.name:
                history.append({"role": "assistant", "content": m.content})
            else:
                history.append({"role": "user", "content": f"{m.sender}: {m.content}"})
    total = count([system]) + count([final])
    kept: list[ChatMessage] = []
    for item in reversed(history):  # newest first, while they fit
        size = count([item])
        if total + size > budget_tokens:
            break
        total += size
        kept.append(item)
    kept.reverse()
    return [system, *kept, final]
