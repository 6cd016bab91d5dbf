"""Errors of the NATS transport. nats-py's own exceptions never reach user code:
they are wrapped in these (all under :class:`~coral_graph.CoralError`)."""

from __future__ import annotations

from coral_graph._errors import CoralError, RuntimeClosedError

__all__ = [
    "GraphMismatchError",
    "MessageTooLargeError",
    "NatsUnavailableError",
    "NeedsAwaitError",
    "WireError",
]


class NeedsAwaitError(RuntimeClosedError, NotImplementedError):
    """A ``*_nowait`` operation on the NATS transport, whose state is shared over the
    network: use the awaited form (``await ctx.send_message(...)``)."""

    def __init__(self, op: str) -> None:
        super().__init__(
            f"{op}_nowait is not available on the NATS transport: the state is shared "
            f"over the network; use `await ctx.{op}(...)`"
        )


class NatsUnavailableError(CoralError):
    """The NATS server cannot be reached, or has JetStream turned off."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"NATS at {url}: {reason}")


class GraphMismatchError(CoralError):
    """This process's graph file differs from the graph the other processes of the
    deployment run. ``differences`` names each one."""

    def __init__(self, graph: str, differences: list[str]) -> None:
        self.graph = graph
        self.differences = differences
        detail = "; ".join(differences)
        super().__init__(
            f"graph {graph!r} differs from the one the running workers use: {detail}. "
            "Start every worker and run with the same graph file (and the same --set "
            "overrides), or stop the old workers first."
        )


class MessageTooLargeError(CoralError, ValueError):
    """An encoded message is over the NATS server's max payload."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the message is {size} bytes encoded; the NATS server accepts at most {limit} "
            "(max_payload): send shorter content or less metadata, or raise max_payload "
            "in the server's configuration"
        )


class WireError(CoralError, ValueError):
    """Bytes on a run's subjects that are not a coral-graph record of a known version."""
