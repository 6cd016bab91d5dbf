"""Replay: a run's full state rebuilt from its events alone.

:func:`replay` folds events in ``seq`` order into a :class:`RunState`: threads
(participants, messages, closed/summary), read cursors, pending mentions, usage
and the run's counters. It is what ``coral-graph resume`` starts from, and it
needs nothing but the events — a store, an export or a live ``RunResult``.

Definitions:

* **pending mentions**: for every ``message_sent``, one delivery per mentioned
  agent (``user`` excluded); a ``delivery_handled`` of that agent and message
  consumes it (whatever ``ok`` says — a failed turn was recorded as such).
  What is left was queued, or in the middle of a turn, when the events end.
* **read cursor** of an agent in a thread: the highest message ``seq`` it has
  seen there — it joined at ``cursor`` (``participant_added``) or at 0 (thread
  creation), and it has seen every message it sent and every mention of it that
  it consumed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coral_graph._events import (
    AgentErrored,
    DeliveryHandled,
    Event,
    LLMCalled,
    MessageSent,
    ParticipantAdded,
    ParticipantRemoved,
    RunFinished,
    RunStarted,
    ThreadClosed,
    ThreadCreated,
    ToolCalled,
)
from coral_graph._model import AgentUsage, Message, Thread
from coral_graph._types import USER, AgentName, ThreadId

__all__ = ["RunState", "replay"]


@dataclass
class RunState:
    """A run's state as its events left it.

    Attributes:
        run_id: the run.
        started: the ``run_started`` event (None if it is missing).
        finished: the ``run_finished`` event, if the run ended.
        threads: every thread by id, with messages, participants, state, summary.
        cursors: ``{(agent, thread_id): seq}`` read cursors.
        pending: ``{agent: [message, …]}`` deliveries not yet consumed, oldest first.
        usage: per-agent counters and spend.
        messages_sent: messages posted (the task excluded), as the message budget counts.
        llm_calls / tokens / cost_usd: run totals, as the LLM budgets count.
        answer: the message that mentioned ``user``, if any.
        last_seq: the newest event's seq.
        last_ts: the newest event's time.
        events: every event, in order.
    """

    run_id: str
    started: RunStarted | None = None
    finished: RunFinished | None = None
    threads: dict[ThreadId, Thread] = field(default_factory=dict)
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: dict[str, deque[Message]] = field(default_factory=dict)
    usage: dict[str, AgentUsage] = field(default_factory=dict)
    messages_sent: int = 0
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    answer: Message | None = None
    last_seq: int = 0
    last_ts: float = 0.0
    events: list[Event] = field(default_factory=list, repr=False)

    @property
    def pending_count(self) -> int:
        """Deliveries not yet consumed."""
        return sum(len(q) for q in self.pending.values())

    def pending_list(self) -> list[tuple[str, Message]]:
        """Pending deliveries as ``(agent, message)`` in the order they were sent."""
        flat = [(m, a) for a, q in self.pending.items() for m in q]
        flat.sort(key=lambda p: (p[0].timestamp, p[0].thread_id, p[0].seq))
        return [(a, m) for m, a in flat]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "run_id": self.run_id,
            "finished": self.finished is not None,
            "threads": {
                tid: {
                    "name": th.name,
                    "participants": list(th.participants),
                    "messages": len(th),
                    "state": th.state,
                    "summary": th.summary,
                }
                for tid, th in self.threads.items()
            },
            "cursors": {f"{a}@{t}": s for (a, t), s in self.cursors.items()},
            "pending": {a: [m.id for m in q] for a, q in self.pending.items() if q},
            "usage": {a: u.to_dict() for a, u in self.usage.items()},
            "messages_sent": self.messages_sent,
            "llm_calls": self.llm_calls,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "last_seq": self.last_seq,
        }


def replay(events: Iterable[Event]) -> RunState:
    """Rebuild a run's state from its events (in ``seq`` order).

    >>> import coral_graph as cg
    >>> @cg.agent
    ... async def echo(ctx, message):
    ...     await ctx.send_message(message.thread_id, "hi", ["user"])
    >>> g = cg.AgentGraph(); g.add_agent("echo", echo)
    >>> result = cg.run(g, "hello", entry=["echo"])
    >>> state = replay(result.events)
    >>> state.answer.content, state.pending_count, state.usage["echo"].turns
    ('hi', 0, 1)
    """
    state: RunState | None = None
    threads: dict[ThreadId, Thread] = {}
    cursors: dict[tuple[str, str], int] = {}
    pending: dict[str, deque[Message]] = {}
    usage: dict[str, AgentUsage] = {}
    by_id: dict[str, Message] = {}
    wait_batches: dict[str, float] = {}

    def use(name: str) -> AgentUsage:
        u = usage.get(name)
        if u is None:
            u = usage[name] = AgentUsage()
        return u

    def see(agent: str, tid: str, seq: int) -> None:
        key = (agent, tid)
        if cursors.get(key, -1) < seq:
            cursors[key] = seq

    for e in events:
        if state is None:
            state = RunState(
                e.run_id, threads=threads, cursors=cursors, pending=pending, usage=usage
            )
        state.events.append(e)
        state.last_seq = e.seq
        state.last_ts = e.ts
        t = type(e)
        if t is MessageSent:
            assert isinstance(e, MessageSent)
            m = e.message
            by_id[m.id] = m
            th = threads.get(m.thread_id)
            if th is not None:
                th._messages.append(m)
            if m.sender != USER:  # (the run's message budget counts agents' messages)
                use(m.sender).messages_sent += 1
                state.messages_sent += 1
            see(m.sender, m.thread_id, m.seq)
            for a in m.mentions:
                if a == USER:
                    if state.answer is None:
                        state.answer = m
                else:
                    q = pending.get(a)
                    if q is None:
                        q = pending[a] = deque()
                    q.append(m)
        elif t is DeliveryHandled:
            assert isinstance(e, DeliveryHandled)
            q = pending.get(e.agent)
            if q:
                if q[0].id == e.message_id:
                    m = q.popleft()
                else:
                    found = next((x for x in q if x.id == e.message_id), None)
                    if found is None:
                        continue
                    q.remove(found)
                    m = found
                see(e.agent, m.thread_id, m.seq)
            u = use(e.agent)
            u.deliveries += 1
            if e.via == "handle":
                u.turns += 1
            elif wait_batches.get(e.agent) != e.ts:
                # One wait_for_mentions drain = one turn of a loop agent; its
                # deliveries share a timestamp.
                wait_batches[e.agent] = e.ts
                u.turns += 1
        elif t is ThreadCreated:
            assert isinstance(e, ThreadCreated)
            members = [AgentName(p) for p in e.participants]
            th = Thread(ThreadId(e.thread_id), e.name, AgentName(e.creator), members, e.ts)
            threads[th.id] = th
            for p in members:
                see(p, th.id, 0)
        elif t is ParticipantAdded:
            assert isinstance(e, ParticipantAdded)
            th = threads.get(ThreadId(e.thread_id))
            if th is not None and e.agent not in th._pset:
                th._participants.append(AgentName(e.agent))
                th._pset.add(AgentName(e.agent))
            see(e.agent, e.thread_id, e.cursor)
        elif t is ParticipantRemoved:
            assert isinstance(e, ParticipantRemoved)
            th = threads.get(ThreadId(e.thread_id))
            if th is not None and e.agent in th._pset:
                th._participants.remove(AgentName(e.agent))
                th._pset.discard(e.agent)
        elif t is ThreadClosed:
            assert isinstance(e, ThreadClosed)
            th = threads.get(ThreadId(e.thread_id))
            if th is not None:
                th.closed = True
                th.summary = e.summary
        elif t is AgentErrored:
            assert isinstance(e, AgentErrored)
            # Not an agent's failure: a delivery handled again after a worker stopped
            # (distributed runs), or a foreign event skipped (recorded as the user's).
            if e.error_type != "Redelivered" and e.agent != USER:
                use(e.agent).errors += 1
        elif t is LLMCalled:
            assert isinstance(e, LLMCalled)
            u = use(e.agent)
            u.add_llm_call(e.prompt_tokens, e.completion_tokens, e.cost_usd, e.latency_s)
            if e.outcome != "ok":
                u.llm_errors += 1
            state.llm_calls += 1
            state.tokens += e.prompt_tokens + e.completion_tokens
            state.cost_usd += e.cost_usd
        elif t is ToolCalled:
            assert isinstance(e, ToolCalled)
            if not e.ok:
                use(e.agent).tool_errors += 1
        elif t is RunStarted:
            assert isinstance(e, RunStarted)
            state.started = e
        elif t is RunFinished:
            assert isinstance(e, RunFinished)
            state.finished = e
            if e.answer_id and e.answer_id in by_id:
                state.answer = by_id[e.answer_id]
    if state is None:
        raise ValueError("no events to replay")
    for name, q in list(pending.items()):
        if not q:
            del pending[name]
    return state
