"""The error tree of coral-graph.

Every error the library raises on purpose derives from :class:`CoralError`::

    CoralError
    ├── ConfigError                 bad graph definition (YAML or Python): .path .line .field
    │   ├── AgentNameError          a name not matching ^[a-z][a-z0-9_-]{0,63}$, or reserved
    │   └── DuplicateAgentError     the same name added twice
    ├── ProtocolError               an operation broke a rule of the thread/mention protocol
    │   ├── UnknownAgentError       no agent of that name (.name, .suggestion)
    │   ├── UnknownThreadError      no thread of that id in this run (.thread_id)
    │   ├── EdgeNotAllowedError     no edge sender -> recipient (.sender, .recipient)
    │   ├── NotAParticipantError    not a participant of the thread (.agent, .thread_id)
    │   ├── ThreadClosedError       the thread is closed (.thread_id)
    │   ├── InvalidMentionError     a mention of oneself or a malformed one (.agent)
    │   ├── ContentTooLargeError    the content is over the size limit (.size, .limit)
    │   ├── InvalidArgumentError    an argument breaks an operation's rule (.field)
    │   ├── InvalidMetadataError    message metadata the store cannot keep (.key)
    │   ├── InboxFullError          the recipient's inbox is at its bound (.recipient, .limit)
    │   └── ConcurrentWaitError     two wait_for_mentions() of one agent at the same time
    ├── BudgetExceededError         a limit of the run was reached (.budget, .limit)
    ├── TurnTimeoutError            a turn ran past its timeout (.agent, .timeout_s)
    ├── RuntimeClosedError          the runtime is not open
    └── LLMError                    a model call failed (the provider error is __cause__)

Errors carry their data as attributes and their message says what to do. They never
log anything themselves.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AgentNameError",
    "BudgetExceededError",
    "ConcurrentWaitError",
    "ConfigError",
    "ContentTooLargeError",
    "CoralError",
    "DuplicateAgentError",
    "EdgeNotAllowedError",
    "InboxFullError",
    "InvalidArgumentError",
    "InvalidMetadataError",
    "InvalidMentionError",
    "LLMError",
    "NotAParticipantError",
    "ProtocolError",
    "RuntimeClosedError",
    "ThreadClosedError",
    "TurnTimeoutError",
    "UnknownAgentError",
    "UnknownThreadError",
    "suggest",
]


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """Return the nearest of ``choices`` to ``name`` (for "did you mean" hints), or None."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class CoralError(Exception):
    """The root of every error coral-graph raises on purpose."""


class ConfigError(CoralError):
    """A graph definition is invalid.

    Attributes:
        path: the file, when the definition came from one.
        line: 1-based line in that file, when known.
        column: 1-based column, when known.
        field: the dotted field path, e.g. ``agents.planner.model``.
        problems: every problem found, when several were collected at once.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        problems: list[ConfigError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.field = field
        self.problems: list[ConfigError] = problems if problems is not None else []


class AgentNameError(ConfigError, ValueError):
    """An agent name is malformed or reserved."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid agent name {name!r}: {reason}")
        self.name = name


class DuplicateAgentError(ConfigError):
    """An agent of that name is already in the graph."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"an agent named {name!r} is already in the graph; pick another name "
            "or remove the first one"
        )
        self.name = name


class ProtocolError(CoralError):
    """An operation broke a rule of the thread/mention protocol."""


class UnknownAgentError(ProtocolError, LookupError):
    """No agent of that name exists."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.suggestion = suggest(name, known)
        hint = f' — did you mean "{self.suggestion}"?' if self.suggestion else ""
        super().__init__(f'unknown agent "{name}"{hint} (list_agents() shows whom you can reach)')


class UnknownThreadError(ProtocolError, LookupError):
    """No thread of that id exists in this run."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"unknown thread {thread_id!r}: use the id returned by create_thread() "
            "or carried by a message (message.thread_id)"
        )


class EdgeNotAllowedError(ProtocolError):
    """The graph has no edge ``sender -> recipient``."""

    def __init__(self, sender: str, recipient: str, action: str = "address") -> None:
        self.sender = sender
        self.recipient = recipient
        self.action = action
        if recipient == "user":
            fix = f'only the agents named in answer_by may answer the user; "{sender}" is not one'
        else:
            fix = (
                f'add the edge "{sender} -> {recipient}" to the graph, or pick an agent '
                "that list_agents() returns"
            )
        super().__init__(f'"{sender}" may not {action} "{recipient}": no edge. {fix}')


class NotAParticipantError(ProtocolError):
    """The agent is not a participant of the thread."""

    def __init__(self, agent: str, thread_id: str, *, acting: bool = True) -> None:
        self.agent = agent
        self.thread_id = thread_id
        if acting:
            msg = (
                f'"{agent}" is not a participant of thread {thread_id}: only participants '
                "may post, read, add, remove or close; ask a participant to add you"
            )
        else:
            msg = (
                f'"{agent}" is not a participant of thread {thread_id}: add it with '
                "add_participant() before mentioning or removing it"
            )
        super().__init__(msg)


class ThreadClosedError(ProtocolError):
    """The thread is closed: nothing more can be posted into it."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"thread {thread_id} is closed; its messages stay readable, "
            "create a new thread to go on"
        )


class InvalidMentionError(ProtocolError, ValueError):
    """A mention names the sender itself or is not an agent name."""

    def __init__(self, agent: str, reason: str) -> None:
        self.agent = agent
        super().__init__(f"invalid mention {agent!r}: {reason}")


class ContentTooLargeError(ProtocolError, ValueError):
    """The message content is longer than the runtime's limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message content is {size} characters, over the limit of {limit}; "
            "split it into several messages or raise max_content_chars"
        )


class InvalidArgumentError(ProtocolError, ValueError):
    """An argument of an operation breaks its rule (an empty thread name, a name
    over the length limit, a timeout over the cap …); nothing was done.

    Attributes:
        field: the argument, in the operations' vocabulary (``name``, ``timeout_s`` …).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class InvalidMetadataError(ProtocolError, ValueError):
    """Message metadata holds a value the transcript cannot store (a datetime, a set,
    bytes, NaN, a non-string key, an integer beyond 64 bits, nesting too deep);
    the message was not posted.

    Attributes:
        key: the path of the bad value, e.g. ``scores[2]`` or ``a.b``.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(
            f"metadata {key!r}: {reason}; metadata holds JSON-like data only (str, int, "
            "finite float, bool, None, lists and str-keyed dicts): convert it, e.g. a "
            "datetime to its isoformat() string"
        )


class InboxFullError(ProtocolError):
    """The recipient already has ``limit`` undelivered messages; nothing was posted."""

    def __init__(self, recipient: str, limit: int) -> None:
        self.recipient = recipient
        self.limit = limit
        super().__init__(
            f'the inbox of "{recipient}" holds {limit} undelivered messages (its bound); '
            "the message was not posted — wait for replies before sending more, "
            "or raise max_inbox"
        )


class ConcurrentWaitError(ProtocolError):
    """An agent called wait_for_mentions() while another call of it was waiting."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        super().__init__(
            f'"{agent}" is already waiting for mentions; call wait_for_mentions() '
            "from one task at a time"
        )


class BudgetExceededError(CoralError):
    """A limit of the run was reached; the run stops with ``budget:<budget>``."""

    def __init__(self, budget: str, limit: float, detail: str = "") -> None:
        self.budget = budget
        self.limit = limit
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"budget {budget!r} reached: limit {limit:g}{extra}; the run stops. "
            "Raise the limit in Budgets to let it go further"
        )


class TurnTimeoutError(CoralError):
    """A turn of an agent ran past its timeout and was cancelled."""

    def __init__(self, agent: str, timeout_s: float) -> None:
        self.agent = agent
        self.timeout_s = timeout_s
        super().__init__(
            f'the turn of "{agent}" ran past {timeout_s:g} s and was cancelled; '
            "make the handler return sooner or raise turn_timeout_s"
        )


class RuntimeClosedError(CoralError):
    """The runtime is not open (use it inside ``async with open_runtime(...)``)."""


class LLMError(CoralError):
    """A model call failed; the provider's own exception is ``__cause__``.

    Attributes:
        model: the model string.
        retryable: whether a retry could succeed (rate limit, timeout, 5xx).
    """

    def __init__(self, message: str, *, model: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.model = model
        self.retryable = retryable
