"""The transport seam: where a delivery leaves for an inbox and where an inbox is fed.

A run's rules (edges, participants, closed threads, mentions, budgets, the answer)
are enforced once, in :class:`~coral_graph.AgentContext`. What a transport supplies
is the *state behind them* and the *wire between agents*:

* :class:`ThreadStore` — the run's threads (create, participants, append a message
  with its per-thread ``seq``, close);
* :class:`Counters` — the run's shared counters, reserved before they are spent
  (messages posted; LLM calls, tokens and cost go through the budget ledger, which
  may keep its totals here);
* :class:`RunTransport` — deliveries out (``send_nowait``/``send``), acks after a
  turn, quiescence and the stop signal;
* :class:`RouterPort` — what the core hands the transport: ``feed`` (the one place
  an inbox is fed), ``stop``, the local ``pending``/``busy`` counts and the event
  stream.

The in-process transport (:class:`~coral_graph.transport.LocalTransport`) is a
deque and a wake-up per agent: every method completes synchronously and the core
calls the ``*_nowait`` forms on its hot path (no await per message). A distributed
transport (NATS JetStream) implements the async forms and may raise
:class:`NotImplementedError` from a ``*_nowait`` form it cannot complete without
waiting; agents that want to run on any transport use the async operations of
:class:`~coral_graph.AgentContext` (``await ctx.send_message(...)``), which call
the async forms.

Lifecycle of one run::

    rt = transport.open_run(port)      # one RunTransport per run
    await rt.start()                   # connect, create consumers, load state
    ... rt.threads / rt.counters / rt.send_nowait / rt.ack / rt.quiet ...
    rt.stopped(reason)                 # the run ended here: tell every worker
    await rt.aclose()                  # let go of connections (also on error)

The process that starts a run calls ``Runtime.run`` (it records ``run_started``,
posts the task and records ``run_finished``); every other worker process calls
``Runtime.join(run_id, ...)`` on the same graph and transport: it hosts the agents
its transport feeds (``hosts``), starts the loop agents it hosts, records nothing
of the run's start and end, and returns when the run's stop reaches it. The
transport tells the two apart by ``port.spec.joining`` (:class:`RunSpec`: the run's
task, entry, budgets … as the process that started it gave them).

The starting process of a distributed run records it: the events other processes
emit reach it through the transport, which hands each to ``port.record(event)``
(numbered there, given to that process's subscribers and store, counted in the
run's result). Two optional methods let a transport finish a run properly, and
the core calls them only when they are there:

* ``RunTransport.finish()`` — awaited once the run has stopped here and before
  ``run_finished`` is recorded: e.g. wait (bounded) for turns other processes were
  in to end and for their events to arrive, then hand the usage of agents that
  ran elsewhere to ``port.merge_usage``;
* ``Transport.aclose()`` — awaited when the runtime closes (a connection it opened).

Guarantees a transport must give (the tests of the protocol run over every
transport and check them):

1. **Order per (sender, recipient).** Two deliveries from the same sender to the
   same recipient are fed to the recipient in the order they were sent. Nothing
   is promised across senders.
2. **Nothing dropped, nothing invented.** Each target of ``send`` is fed exactly
   once, or — on a durable transport after a crash — at least once (a redelivery
   must carry the same :class:`Message`, same id, so it can be recognised).
   A delivery that cannot be accepted raises at the sender (e.g.
   :class:`~coral_graph.InboxFullError`), before anything is appended.
3. **Ack after the turn.** The core calls ``ack(agent, msg)`` when the turn that
   handled ``msg`` has ended (normally, by an error, or by a timeout), or when a
   loop agent took it through ``wait_for_mentions``. A durable transport
   acknowledges the broker message only then, so a worker killed mid-turn gets it
   redelivered. (``needs_ack = False`` lets the local transport skip the call.)
4. **Exact quiescence.** The core counts, per process, ``port.pending``
   (deliveries fed but not yet taken) and ``port.busy`` (agents inside a turn, or
   loop agents not blocked in ``wait_for_mentions``). When both reach zero it calls
   ``quiet()``. The local transport then stops the run with ``idle`` at once. A
   distributed transport must only stop the run with ``idle`` when *no* worker has
   anything queued or in flight and nothing is on the wire (e.g. every consumer's
   ``num_pending == 0`` and ``num_ack_pending == 0`` on two scans with the stream's
   last sequence unchanged between them) — never after a timeout. ``quiet()`` may
   be called many times; it must not block.
5. **One stop for everyone.** When the run ends locally (answer, budget, error,
   cancelled) the core calls ``stopped(reason)`` once; the transport broadcasts it.
   A stop that arrives from elsewhere is given to ``port.stop(reason)``; the core
   ignores every stop after the first.
6. **One transcript.** Every process emits its events through ``port`` (they reach
   that process's subscribers); a distributed transport forwards them (subscribe
   with ``port.add_sink``) to the process that records the run.

Threads (``ThreadStore``) must give each message of a thread a unique ``seq``
(1, 2, 3 … with no gaps) and apply a change only to the thread's current state:
:meth:`ThreadStore.update` runs the core's rule check on the current thread and
commits its change atomically (a distributed store retries with a fresh copy on a
compare-and-set conflict, so the ``change`` callable must be safe to run again on
a fresh copy; it only mutates the :class:`Thread` it is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from coral_graph._budgets import Budgets
    from coral_graph._events import Event
    from coral_graph._graph import AgentGraph
    from coral_graph._model import AgentUsage, Message, Thread
    from coral_graph._types import AgentName, RunId, StopReason, ThreadId

__all__ = ["Counters", "RouterPort", "RunSpec", "RunTransport", "ThreadStore", "Transport"]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What a run is, as the process that started it gave it (``port.spec``)."""

    graph: AgentGraph
    task: str
    entry: tuple[AgentName, ...]
    answer_by: tuple[AgentName, ...]
    budgets: Budgets
    max_content_chars: int
    joining: bool
    """Whether this process joined a run another process started (``Runtime.join``)."""


class RouterPort(Protocol):
    """The core's side of the seam for one run (implemented by the router)."""

    @property
    def run_id(self) -> RunId:
        """The run this port belongs to."""
        ...

    @property
    def spec(self) -> RunSpec:
        """The run's task, entry, budgets …, and whether this process joined it."""
        ...

    @property
    def pending(self) -> int:
        """Deliveries fed to local inboxes and not yet taken by their agent."""
        ...

    @property
    def busy(self) -> int:
        """Local agents inside a turn (or loop agents not waiting for mentions)."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the run has stopped (locally, or by a stop from elsewhere)."""
        ...

    @property
    def error(self) -> str | None:
        """Why the run stopped with ``error`` (None otherwise)."""
        ...

    @property
    def answer(self) -> Message | None:
        """The message that answered the task, once the run stopped with ``answer``
        (a distributed transport hands it to the other processes with the stop)."""
        ...

    def feed(self, agent: AgentName, msg: Message) -> None:
        """Put one delivery of ``msg`` into ``agent``'s local inbox and wake it.

        The one place an inbox is fed. Must be called on the run's event loop
        thread. It never blocks and never raises for a known agent; the inbox
        bound is checked at the sender (``send_nowait`` callers), not here."""
        ...

    def feed_all(self, agents: Sequence[AgentName], msg: Message) -> None:
        """:meth:`feed` for each of ``agents``, in order (one call for a fanout)."""
        ...

    def stop(
        self, reason: StopReason, error: str | None = None, answer: Message | None = None
    ) -> None:
        """End the run with ``reason`` (``idle``, ``answer``, ``budget:<name>``,
        ``error``, ``cancelled``); later stops are ignored. ``answer``: the message
        that answered the task, when another process saw it (a stop from elsewhere)."""
        ...

    def record(self, event: Event) -> None:
        """An event another process of the run emitted: numbered in this process's
        order and given to its subscribers and store like its own (the starting
        process of a distributed run records everyone's).

        The event becomes the port's: its ``run_id`` and ``seq`` are set in place
        (no copy per event), so the caller hands over an event it made for this
        and keeps no other use of it."""
        ...

    def merge_usage(self, usage: Mapping[str, AgentUsage]) -> None:
        """The usage of agents that ran in other processes, counted in this
        process's result and ``run_finished``."""
        ...

    def add_sink(self, fn: Callable[[Event], None]) -> None:
        """Call ``fn(event)`` for every event this process emits in the run."""
        ...


class ThreadStore(Protocol):
    """The threads of one run. The local store holds live :class:`Thread` objects."""

    def get_nowait(self, thread_id: ThreadId) -> Thread | None:
        """The thread, or None when the run has no such thread."""
        ...

    async def get(self, thread_id: ThreadId) -> Thread | None:
        """The thread's current state (a distributed store reads it fresh)."""
        ...

    def create_nowait(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        """A new open thread with a run-unique id (``t-1``, ``t-2`` …)."""
        ...

    async def create(self, name: str, creator: AgentName, participants: list[AgentName]) -> Thread:
        """As :meth:`create_nowait`."""
        ...

    def update_nowait(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        """Run ``change(thread, *args)`` on the thread's current state and commit what
        it changed.

        ``change`` checks the rules (raising leaves the thread untouched) and
        mutates the thread (appends a message, adds or removes a participant,
        closes it). Raises :class:`~coral_graph.UnknownThreadError` for an unknown id.
        """
        ...

    async def update(self, thread_id: ThreadId, change: Callable[..., R], *args: Any) -> R:
        """As :meth:`update_nowait`; a distributed store retries ``change`` on a fresh
        copy after a compare-and-set conflict."""
        ...

    def all_nowait(self) -> dict[ThreadId, Thread]:
        """Every thread of the run known here, by id, oldest first."""
        ...


class Counters(Protocol):
    """The run's shared counters (messages posted …), reserved before spending."""

    def reserve_nowait(self, name: str, amount: float, limit: float | None) -> bool:
        """Add ``amount`` to counter ``name`` unless that would pass ``limit``
        (None: no limit). Returns whether it was added."""
        ...

    async def reserve(self, name: str, amount: float, limit: float | None) -> bool:
        """As :meth:`reserve_nowait`, atomically across processes."""
        ...

    def release_nowait(self, name: str, amount: float) -> None:
        """Give back ``amount`` reserved but not spent (the spend failed)."""
        ...

    def value(self, name: str) -> float:
        """The counter's current value (0 when never used)."""
        ...


class RunTransport(Protocol):
    """One run on one transport: see the module docstring for the guarantees."""

    @property
    def threads(self) -> ThreadStore:
        """The run's threads."""
        ...

    @property
    def counters(self) -> Counters:
        """The run's shared counters."""
        ...

    needs_ack: bool
    """Whether the core must call :meth:`ack` (False for the local transport)."""
    immediate: bool
    """Whether every method completes at once (the local transport): the core then
    serves the async operations through the ``*_nowait`` forms, without awaiting,
    and posts a message by applying its rule to the thread ``threads.get_nowait``
    returns, which must be the live thread (no ``update_nowait`` call on the hot
    path)."""

    async def start(self) -> None:
        """Prepare the run (connect, create streams and consumers) before the first send."""
        ...

    def hosts(self, agent: AgentName) -> bool:
        """Whether ``agent`` runs in this process (loop agents are started only here)."""
        ...

    def send_nowait(self, targets: Sequence[AgentName], msg: Message) -> None:
        """Hand one delivery of ``msg`` to each of ``targets``, in order, without
        blocking: a local target is fed through ``port.feed``; a remote one is
        queued for publishing in send order."""
        ...

    async def send(self, targets: Sequence[AgentName], msg: Message) -> None:
        """As :meth:`send_nowait`, returning once every delivery is accepted (a
        durable transport: stored by the broker)."""
        ...

    def ack(self, agent: AgentName, msg: Message) -> None:
        """The turn of ``agent`` that took ``msg`` is over; acknowledge it."""
        ...

    def quiet(self) -> None:
        """Nothing is queued and nobody is busy in this process (see guarantee 4)."""
        ...

    def stopped(self, reason: StopReason) -> None:
        """The run ended here with ``reason``: tell every other worker."""
        ...

    async def aclose(self) -> None:
        """Release the run's resources. Called once, also after errors."""
        ...


class Transport(Protocol):
    """A way to connect the agents of a run: ``open_runtime(graph, transport=...)``."""

    def open_run(self, port: RouterPort) -> RunTransport:
        """The transport of one run; the core then awaits its ``start()``."""
        ...
