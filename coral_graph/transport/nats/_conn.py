"""Connecting to NATS and making sure a graph's streams, consumers and bucket exist.

This module and the others of ``coral_graph.transport.nats`` import nats-py at
module level; ``coral_graph`` itself never imports them (the ``[nats]`` extra)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from coral_graph.transport.nats._errors import NatsUnavailableError
from coral_graph.transport.nats._handover import Asker, speed_up
from coral_graph.transport.nats._names import Names

__all__ = ["DEFAULT_ACK_WAIT_S", "WORKER_TTL_S", "Link", "connect", "ensure_graph"]

DEFAULT_ACK_WAIT_S = 30.0
"""How long a delivery may stay unacknowledged without a sign of life before the
server gives it to another worker. A worker in a turn says it is alive every
third of this (``in_progress``), so only a dead worker's delivery moves."""

WORKER_TTL_S = 5.0
"""A worker refreshes its record every second; the bucket forgets one older than this."""

_RETAIN_S = 7 * 24 * 3600.0  # events and shared state of past runs


@dataclass(slots=True)
class Link:
    """One connection: the client, JetStream, and the state of the connection."""

    url: str
    nc: Client
    js: JetStreamContext
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    # Connections lost: counted when the client notices, before it reconnects (so
    # before anything arrives on the new connection).
    drops: int = 0
    # Whether replies and acknowledgements skip nats-py's subscription tasks
    # (:func:`~coral_graph.transport.nats._handover.speed_up`).
    handed_over: bool = False
    # This connection's own requests on the hot path (compare-and-sets, acknowledged
    # publishes), when its replies can be handed over.
    asker: Asker | None = None

    async def close(self) -> None:
        # Everything that matters was awaited (publishes are acknowledged, acks are
        # synchronous): flush what is buffered and close, without draining the
        # subscriptions (a drain waits out pull requests still open on the server).
        if self.nc.is_connected:  # (else there is no one to flush to)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.flush(), 2.0)
        with contextlib.suppress(Exception):
            await self.nc.close()


async def connect(
    url: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
    name: str = "coral-graph",
    no_echo: bool = False,
) -> Link:
    """Connect to ``url`` and check that JetStream is on. ``no_echo``: the server
    sends this connection none of its own plain publishes (a worker's change notices
    and stop broadcasts: it knows them already).

    Raises:
        NatsUnavailableError: nothing answers at ``url`` within ``timeout`` seconds,
            or the server has JetStream turned off.
    """
    errors: list[str] = []
    state: dict[str, Link] = {}

    async def on_error(exc: Exception) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")
        del errors[:-20]

    async def on_reconnect() -> None:
        link = state.get("link")
        if link is not None:
            link.reconnects += 1

    async def on_disconnect() -> None:
        link = state.get("link")
        if link is not None:
            link.drops += 1

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[u.strip() for u in url.split(",") if u.strip()],  # a cluster
                name=name,
                connect_timeout=min(2.0, timeout),
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # a worker outlives a server restart
                reconnect_time_wait=0.25,
                error_cb=on_error,
                reconnected_cb=on_reconnect,
                disconnected_cb=on_disconnect,
                no_echo=no_echo,
            ),
            timeout,
        )
    except TimeoutError:
        last = f" (last error: {errors[-1]})" if errors else ""
        raise NatsUnavailableError(
            url,
            f"no NATS server answered within {timeout:g} s{last}; start one with "
            "`nats-server -js` or pass the right --nats URL",
        ) from None
    except Exception as exc:
        raise NatsUnavailableError(url, f"cannot connect: {type(exc).__name__}: {exc}") from None
    js = nc.jetstream(timeout=timeout)
    try:
        await js.account_info()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise NatsUnavailableError(
            url,
            "JetStream is not enabled on this server "
            f"({type(exc).__name__}); start nats-server with -js (and -sd DIR for a store)",
        ) from None
    link = Link(url, nc, js, errors)
    link.handed_over = await speed_up(nc, js)
    asker = Asker(nc)
    if await asker.start():
        link.asker = asker
    state["link"] = link
    return link


async def _add_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Already there with another configuration (e.g. made by an older version):
        # keep it, as long as it exists.
        assert config.name is not None
        await js.stream_info(config.name)


async def ensure_graph(
    link: Link,
    names: Names,
    agents: Iterable[str],
    *,
    ack_wait_s: float = DEFAULT_ACK_WAIT_S,
) -> tuple[KeyValue, KeyValue]:
    """Create (idempotently) the graph's streams, one consumer per agent, and its
    buckets; return the state bucket and the live-workers bucket."""
    js = link.js
    await _add_stream(
        js,
        StreamConfig(
            name=names.inbox_stream,
            subjects=[f"coral.{names.graph}.*.inbox.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
        ),
    )
    await _add_stream(
        js,
        StreamConfig(
            name=names.events_stream,
            subjects=[names.all_events],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=_RETAIN_S,
            duplicate_window=120.0,
        ),
    )
    for agent in agents:
        await ensure_consumer(link, names, agent, ack_wait_s)
    return (
        await _bucket(js, names.bucket, _RETAIN_S),
        await _bucket(js, names.workers_bucket, WORKER_TTL_S),
    )


async def _bucket(js: JetStreamContext, name: str, ttl: float) -> KeyValue:
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(bucket=name, history=1, ttl=ttl, storage=StorageType.FILE)


async def ensure_consumer(link: Link, names: Names, agent: str, ack_wait_s: float) -> None:
    """The durable pull consumer of ``agent``'s inbox: explicit acks, one delivery in
    flight (``max_ack_pending=1``: one turn at a time, in order)."""
    durable = names.consumer(agent)
    try:
        await link.js.consumer_info(names.inbox_stream, durable)
        return
    except nats.js.errors.NotFoundError:
        pass
    cfg = ConsumerConfig(
        durable_name=durable,
        filter_subject=names.inbox_filter(agent),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=1,
        ack_wait=ack_wait_s,
        max_deliver=-1,
    )
    with contextlib.suppress(nats.js.errors.BadRequestError):  # made meanwhile by a peer
        await link.js.add_consumer(names.inbox_stream, cfg)


def nats_errors() -> tuple[type[BaseException], ...]:
    """nats-py's exception types (to wrap them at our boundary)."""
    return (nats.errors.Error, nats.js.errors.Error)
