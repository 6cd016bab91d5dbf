"""NatsContext: the seven operations for an agent whose run is spread over workers.

It has the public shape of :class:`~coral_graph.AgentContext` — the same
operations, arguments, typed errors and events — with the state behind it shared
through the run's bucket (:mod:`._state`). Agents use the async forms
(``await ctx.send_message(...)``); the ``*_nowait`` twins of operations that change
shared state raise, because they would need the network. Reading (``thread``,
``threads``, ``list_agents_nowait``, ``can_address``) is local and synchronous.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from coral_graph._errors import (
    BudgetExceededError,
    ContentTooLargeError,
    EdgeNotAllowedError,
    InvalidArgumentError,
    InvalidMentionError,
    NotAParticipantError,
    RuntimeClosedError,
    ThreadClosedError,
    UnknownAgentError,
    UnknownThreadError,
)
from coral_graph._events import (
    LLMCalled,
    MessageSent,
    ParticipantAdded,
    ParticipantRemoved,
    ThreadClosed,
    ThreadCreated,
    ToolCalled,
)
from coral_graph._model import AgentInfo, AgentUsage, Message, Thread
from coral_graph._types import MAX_THREAD_NAME, USER, AgentName, MessageId, ThreadId

if TYPE_CHECKING:
    from coral_graph.transport.nats._worker import WorkerRun

__all__ = ["NatsContext"]

ThreadRef = Thread | ThreadId | str


def _tid(thread: ThreadRef) -> str:
    if isinstance(thread, str):
        return thread
    if isinstance(thread, Thread):
        return thread.id
    raise InvalidArgumentError("thread_id", f"a thread id is a string, not {type(thread).__name__}")


_USER_INFO = AgentInfo(USER, "the caller of the run; mention it to give the final answer")


class NatsContext:
    """What an agent can do and see during one turn of a distributed run."""

    def __init__(self, run: WorkerRun, name: AgentName, turn: str, *, replay: bool = False) -> None:
        self._run = run
        self.name = name
        self.run_id = run.run_id
        self._turn = turn  # "<thread>.<seq>.<agent>": the same for every copy of a delivery
        self._replay = replay  # a redelivery: the interrupted attempt may have made things
        self._ops = 0
        self._succ = set(run.graph.successors(name))
        self._may_answer = name in run.answer_by
        self.usage = AgentUsage()
        self.t0 = 0.0

    def __repr__(self) -> str:
        return f"NatsContext({self.name!r}, run={self.run_id})"

    # -- reading ------------------------------------------------------------

    @property
    def task(self) -> str:
        """The task of the run."""
        return self._run.task

    @property
    def run_usage(self) -> dict[str, AgentUsage]:
        """This agent's usage in this turn (run totals are in the result)."""
        return {self.name: self.usage}

    def can_address(self, name: str) -> bool:
        """Whether an edge lets this agent address ``name``."""
        if name == USER:
            return self._may_answer
        return name in self._succ

    def thread(self, thread: ThreadRef) -> Thread:
        """The thread (read-only, as of the start of this turn or this agent's last
        change). Only participants may read it."""
        th = self._local(thread)
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        return th

    def threads(self, *, include_closed: bool = True) -> list[Thread]:
        """Every thread this agent participates in, oldest first."""
        me = self.name
        ts = [
            t
            for t in self._run.replica.threads.values()
            if me in t._pset and (include_closed or not t.closed)
        ]
        return sorted(ts, key=lambda t: t.created_at)

    def _local(self, thread: ThreadRef) -> Thread:
        tid = _tid(thread)
        th = self._run.replica.threads.get(tid)
        if th is None:
            raise UnknownThreadError(tid)
        return th

    async def _member(self, thread: ThreadRef) -> Thread:
        tid = _tid(thread)
        th = await self._run.replica.refresh_header(tid)
        self._check_member(th)
        return th

    def _check_member(self, th: Thread) -> None:
        if self.name not in th._pset:
            raise NotAParticipantError(self.name, th.id)
        if th.closed:
            raise ThreadClosedError(th.id)

    def _check_addressable(self, name: str, action: str) -> AgentName:
        if not isinstance(name, str):
            raise InvalidMentionError(repr(name), "an agent name is a string")
        if name == self.name:
            raise InvalidMentionError(name, f"an agent cannot {action} itself")
        if name == USER:
            if not self._may_answer:
                raise EdgeNotAllowedError(self.name, name, action)
        elif name not in self._succ:
            if name not in self._run.graph:
                raise UnknownAgentError(name, self._run.graph.agents)
            raise EdgeNotAllowedError(self.name, name, action)
        return AgentName(name)

    def _check_active(self) -> None:
        run = self._run
        if run.finished:
            raise RuntimeClosedError(
                f"run {run.run_id} has ended ({run.stop_reason}); nothing more can happen in it"
            )

    def _next_op(self) -> int:
        self._ops += 1
        return self._ops

    @staticmethod
    def _needs_await(op: str) -> NoReturn:
        raise RuntimeClosedError(
            f"{op}_nowait is not available on the NATS transport: the state is shared "
            f"over the network; use `await ctx.{op}(...)`"
        )

    # -- the seven operations -----------------------------------------------

    def list_agents_nowait(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        graph = self._run.graph
        out = [AgentInfo(AgentName(n), graph.spec(n).description) for n in sorted(self._succ)]
        if self._may_answer:
            out.append(_USER_INFO)
        return out

    async def list_agents(self) -> list[AgentInfo]:
        """The agents this agent can reach, with their descriptions."""
        return self.list_agents_nowait()

    def create_thread_nowait(self, name: str, participants: Iterable[str] = ()) -> Thread:
        self._needs_await("create_thread")

    async def create_thread(self, name: str, participants: Iterable[str] = ()) -> Thread:
        """Open a thread with ``participants``; this agent is added as its creator."""
        self._check_active()
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError("name", "a thread needs a non-empty name, e.g. 'research'")
        name = name.strip()
        if len(name) > MAX_THREAD_NAME:
            raise InvalidArgumentError(
                "name", f"a thread name has at most {MAX_THREAD_NAME} characters, not {len(name)}"
            )
        if isinstance(participants, str):
            participants = [participants]
        members: list[AgentName] = [self.name]
        for p in participants:
            if p == self.name or p in members:
                continue
            members.append(self._check_addressable(p, "add"))
        run = self._run
        with self._run.committing():
            n = self._next_op()
            ref = await run.state.made(self._turn, n) if self._replay else None
            if ref is not None:  # the replay of a turn that made this thread already
                return await run.replica.refresh_header(ref)
            th = Thread(
                ThreadId(f"t-{secrets.token_hex(4)}"),
                name.strip()[:200],
                self.name,
                members,
                time.time(),
            )
            await run.state.create_thread(th)
            await run.remember(self._turn, n, th.id)
            run.replica.threads[th.id] = th
            await run.emit(
                ThreadCreated(
                    run.run_id, 0, th.created_at, th.id, th.name, self.name, list(members)
                )
            )
            return th

    def add_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        self._needs_await("add_participant")

    async def add_participant(self, thread: ThreadRef, name: str) -> None:
        """Add ``name`` to the thread; adding a participant twice does nothing."""
        self._check_active()
        agent = self._check_addressable(name, "add")
        tid = _tid(thread)

        def change(th: Thread) -> bool:
            self._check_member(th)
            if agent in th._pset:
                return False
            th._participants.append(AgentName(agent))
            th._pset.add(agent)
            return True

        run = self._run
        with self._run.committing():
            before = await run.replica.refresh_header(tid)
            self._check_member(before)
            if agent in before._pset:
                return
            th = await run.state.change_thread(tid, change)
            th._messages = before._messages
            run.replica.threads[tid] = th
            await run.emit(
                ParticipantAdded(run.run_id, 0, time.time(), th.id, agent, self.name, th.last_seq)
            )

    def remove_participant_nowait(self, thread: ThreadRef, name: str) -> None:
        self._needs_await("remove_participant")

    async def remove_participant(self, thread: ThreadRef, name: str) -> None:
        """Remove ``name`` (possibly this agent itself) from the thread."""
        self._check_active()
        tid = _tid(thread)

        def change(th: Thread) -> bool:
            self._check_member(th)
            if name not in th._pset:
                raise NotAParticipantError(name, th.id, acting=False)
            th._participants.remove(AgentName(name))
            th._pset.discard(name)
            return True

        run = self._run
        with self._run.committing():
            before = await run.replica.refresh_header(tid)
            th = await run.state.change_thread(tid, change)
            th._messages = before._messages
            run.replica.threads[tid] = th
            await run.emit(ParticipantRemoved(run.run_id, 0, time.time(), th.id, name, self.name))

    def close_thread_nowait(self, thread: ThreadRef, summary: str = "") -> None:
        self._needs_await("close_thread")

    async def close_thread(self, thread: ThreadRef, summary: str = "") -> None:
        """Close the thread: its messages stay, ``summary`` is stored, sends fail."""
        self._check_active()
        tid = _tid(thread)

        def change(th: Thread) -> bool:
            self._check_member(th)
            th.closed = True
            th.summary = str(summary)
            return True

        run = self._run
        with self._run.committing():
            before = await run.replica.refresh_header(tid)
            th = await run.state.change_thread(tid, change)
            th._messages = before._messages
            run.replica.threads[tid] = th
            await run.emit(
                ThreadClosed(run.run_id, 0, time.time(), th.id, self.name, th.summary or "")
            )

    def send_message_nowait(
        self,
        thread: ThreadRef,
        content: str,
        mentions: Sequence[str] | str = (),
        *,
        reply_to: MessageId | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Message:
        self._needs_await("send_message")

    async def send_message(
        self,
        thread: ThreadRef,
        content: str,
        mentions: Sequence[str] | str = (),
        *,
        reply_to: MessageId | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Message:
        """Post ``content`` into ``thread``; each mentioned agent gets one delivery.

        The same rules and errors as :meth:`coral_graph.AgentContext.send_message`,
        plus :class:`MessageTooLargeError` when the encoded message is over the
        NATS server's max payload.
        """
        self._check_active()
        run = self._run
        # The order of the checks is the in-process one (coral_graph._rules): the
        # content, the mentions' form, then the thread.
        if not isinstance(content, str):
            raise TypeError(f"message content must be a string, not {type(content).__name__}")
        if len(content) > run.max_content_chars:
            raise ContentTooLargeError(len(content), run.max_content_chars)
        if isinstance(mentions, str):
            mentions = (mentions,)
        try:
            ms = tuple(dict.fromkeys(mentions))
        except TypeError:
            raise InvalidMentionError(
                repr(mentions), "each mention is an agent name (a string)"
            ) from None
        tid = _tid(thread)
        th = await self._member(tid)
        targets: list[AgentName] = []
        answered = False
        for m in ms:
            if m in self._succ and m in th._pset:
                targets.append(AgentName(m))
            elif m == USER and m in th._pset and self._may_answer:
                answered = True
            else:
                self._bad_mention(m, th)
        with self._run.committing():
            n = self._next_op()
            ref = await run.state.made(self._turn, n) if self._replay else None
            if ref is not None:
                # The replay of a turn a crash interrupted: this message was appended
                # already. Publish its deliveries again (the server drops the ones it
                # has by their message id) and hand back the same message.
                old_tid, _, seq = ref.rpartition("#")
                old = await run.state.message(old_tid, int(seq))
                if old is not None:
                    await run.deliver(old, targets)
                    if answered:
                        await run.stop("answer", answer=old)
                    return old
            run.check_payload(tid, content, ms, metadata)
            if await run.state.reserve("messages", 1, run.budgets.max_messages) is None:
                limit = run.budgets.max_messages or 0
                await run.stop("budget:messages")
                raise BudgetExceededError("messages", limit)
            me = self.name
            # Which worker process wrote it: the transcript of a distributed run says
            # where each message was made.
            meta = dict(metadata) if metadata else {}
            meta["worker"] = run.worker.tag

            def make(seq: int) -> Message:
                return Message(
                    MessageId(f"{tid}#{seq}"),
                    th.id,
                    seq,
                    me,
                    content,
                    ms,  # type: ignore[arg-type]
                    time.time(),
                    reply_to,  # type: ignore[arg-type]
                    meta,
                )

            local = run.replica.threads.get(tid)
            msg = await run.state.append(make, len(local._messages) if local is not None else 0)
            await run.remember(self._turn, n, msg.id)
            self.usage.messages_sent += 1
            await run.emit(MessageSent(run.run_id, 0, msg.timestamp, msg))
            await run.deliver(msg, targets)
            if answered:
                await run.stop("answer", answer=msg)
            return msg

    def _bad_mention(self, m: object, th: Thread) -> NoReturn:
        if not isinstance(m, str):
            raise InvalidMentionError(repr(m), "a mention is an agent name (a string)")
        if m == self.name:
            raise InvalidMentionError(m, "an agent cannot mention itself")
        if m != USER and m not in self._run.graph:
            raise UnknownAgentError(m, self._run.graph.agents)
        if m not in th._pset:
            raise NotAParticipantError(m, th.id, acting=False)
        raise EdgeNotAllowedError(self.name, m, "mention")

    def pending_mentions(self) -> int:
        """Always 0: on NATS each delivery is its own turn, queued on the server."""
        return 0

    async def wait_for_mentions(self, timeout: float | None = None) -> list[Message]:  # noqa: ASYNC109
        """On the NATS transport an agent handles one delivery per turn and the next
        one waits on the server until this turn ends, so there is nothing more to
        read now: returns ``[]`` at once (loop-style agents are not supported here)."""
        self._check_active()
        return []

    # -- accounting for model calls -----------------------------------------

    def check_llm_budget(self, *, tokens: int = 0, cost_usd: float = 0.0, calls: int = 1) -> None:
        """Raise :class:`BudgetExceededError` (and stop the run) if a model call would
        pass a budget, by the run's totals as read at the start of this turn plus
        what this turn spent."""
        run = self._run
        run.check_llm_budget(self.usage, tokens=tokens, cost_usd=cost_usd, calls=calls)

    def record_llm_call(
        self,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        latency_s: float,
        outcome: str = "ok",
        error: str | None = None,
    ) -> None:
        """Record one model call: an ``llm_called`` event and the usage totals."""
        u = self.usage
        u.llm_calls += 1
        u.prompt_tokens += prompt_tokens
        u.completion_tokens += completion_tokens
        u.cost_usd += cost_usd
        u.llm_latency_s += latency_s
        u.latencies_s.append(latency_s)
        run = self._run
        run.emit_nowait(
            LLMCalled(
                run.run_id,
                0,
                time.time(),
                self.name,
                model,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                latency_s,
                outcome,
                error,
            )
        )

    def record_tool_call(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        result: str,
        ok: bool,
        duration_s: float,
        thread_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Record one tool call of a model as a ``tool_called`` event."""
        run = self._run
        run.emit_nowait(
            ToolCalled(
                run.run_id,
                0,
                time.time(),
                self.name,
                thread_id,
                tool,
                arguments,
                result,
                ok,
                duration_s,
                message_id,
            )
        )
