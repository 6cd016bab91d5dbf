"""Transports: how the deliveries of a run reach the agents' inboxes.

The seam (:class:`Transport`, :class:`RunTransport`, :class:`ThreadStore`,
:class:`Counters`, :class:`RouterPort`) and its contract are documented in
``coral_graph.transport._base``; :class:`LocalTransport` is the in-process one
(the default of :func:`coral_graph.open_runtime`).
"""

from __future__ import annotations

from coral_graph.transport._base import (
    Counters,
    RouterPort,
    RunSpec,
    RunTransport,
    ThreadStore,
    Transport,
)
from coral_graph.transport._local import LocalCounters, LocalRun, LocalThreads, LocalTransport

__all__ = [
    "Counters",
    "LocalCounters",
    "LocalRun",
    "LocalThreads",
    "LocalTransport",
    "RouterPort",
    "RunSpec",
    "RunTransport",
    "ThreadStore",
    "Transport",
]
