"""Messages handed to their handler while the connection reads them.

nats-py gives each subscription that has a callback a task of its own: the
connection's reader puts a message into the subscription's queue, that wakes the
subscription's task, which runs the callback, which (for a reply) completes the
future that wakes the coroutine waiting for it. That is two turns of the event
loop per message. A worker receives about five messages per delivery (the
delivery, the compare-and-set's reply, the acknowledgements of what it published,
another worker's change notice), so those turns are a large part of its CPU.

:func:`hand_over` replaces a subscription's queue by a :class:`_Handover`, which
runs a plain function on each message as the reader parses it: one turn of the
loop less per message. :func:`speed_up` does it for the two reply subscriptions
of every connection coral-graph makes (request replies and publish
acknowledgements); the worker's pull inboxes, the run's change notices and the
event recorder use it too. It relies on nats-py's subscription internals
(``_pending_queue``, ``_pending_size``, ``_wait_for_msgs_task``); when they are
not there, the subscriptions keep their tasks and only speed is lost. Tests check
that each of them is handed over, so a nats-py that changes them fails a test
instead of slowing down unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

__all__ = [
    "Asker",
    "as_callback",
    "hand_over",
    "run_now",
    "speed_up",
    "stream_pending",
    "stream_seq",
]

log = logging.getLogger("coral_graph.nats")


class _Handover:
    """Stands in for a subscription's queue of pending messages: each message is
    given to ``handle`` at once, in the connection's reader."""

    __slots__ = ("handle", "sub")

    def __init__(self, sub: Any, handle: Callable[[Msg], None]) -> None:
        self.sub = sub
        self.handle = handle

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # (counted up just before: nothing waits)
        try:
            self.handle(msg)
        except Exception:  # never into the reader: it would take the connection down
            log.exception("coral-graph: handling a message on %s failed", msg.subject)

    # What nats-py asks of a subscription's queue besides put_nowait.
    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None


def hand_over(sub: Any, handle: Callable[[Msg], None]) -> bool:
    """Make subscription ``sub`` (a connection's, or JetStream's wrapping one) run
    ``handle(msg)`` in the reader instead of in a task of its own. ``handle`` must
    not block and should not raise (what it raises is logged and the message is
    lost). False when this version of nats-py's subscriptions does not look as
    expected (the subscription is left unchanged)."""
    sub = getattr(sub, "_sub", sub)  # JetStream's subscriptions wrap the connection's
    try:
        registered = sub._conn._subs.get(sub._id) is sub
    except AttributeError:
        registered = False
    if not registered or not all(hasattr(sub, a) for a in ("_pending_queue", "_pending_size")):
        return False
    task = getattr(sub, "_wait_for_msgs_task", None)
    if task is not None:
        task.cancel()
        sub._wait_for_msgs_task = None
    old, sub._pending_queue = sub._pending_queue, _Handover(sub, handle)
    # What came before (still queued: a task takes a message out only when it runs,
    # and it never will now), in order.
    while isinstance(old, asyncio.Queue) and not old.empty():
        sub._pending_queue.put_nowait(old.get_nowait())
    return True


def as_callback(handle: Callable[[Msg], None]) -> Callable[[Msg], Coroutine[Any, Any, None]]:
    """``handle`` as a nats-py subscription callback: it takes what arrives before
    the subscription is handed over (:func:`hand_over`), and everything if it cannot
    be."""

    async def cb(msg: Msg) -> None:
        handle(msg)

    return cb


def run_now(cb: Callable[[Msg], Coroutine[Any, Any, None]]) -> Callable[[Msg], None]:
    """``cb``, a nats-py callback that never waits for anything (its reply routers
    only complete a future), as a plain function."""

    def handle(msg: Msg) -> None:
        coro = cb(msg)
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        name = getattr(cb, "__qualname__", cb)
        raise RuntimeError(f"{name} waited for something: it cannot run in the reader")

    return handle


_NOT_IN_NAME = re.compile(rb"[\t-\r\x1c-\x20\x80-\xff]")  # white space (str.isspace), not ASCII


def _header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines`` (same result: names that are not
    ASCII or hold white space are skipped), with one regular expression per name
    instead of a Python-level test per character."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if _NOT_IN_NAME.search(name):
            continue
        out[name.decode()] = value.strip().decode("utf-8", "replace")
    return out


async def speed_up(nc: Any, js: Any) -> bool:
    """Hand over the connection's request replies (compare-and-sets, key reads) and
    JetStream publish acknowledgements, and parse message headers faster. True when
    both reply subscriptions were handed over."""
    if callable(getattr(nc, "_parse_header_lines", None)):
        nc._parse_header_lines = _header_lines  # (a static method: no self)
    try:
        if not nc._resp_sub_prefix:
            await nc._init_request_sub()
        if not js._async_reply_prefix:
            await js._init_async_reply()
        routers = (nc._request_sub_callback, js._handle_async_reply)
        subs = [s for s in list(nc._subs.values()) if s._cb in routers]
    except AttributeError:
        return False
    done = sum(hand_over(s, run_now(s._cb)) for s in subs)
    if done != 2:
        log.warning("coral-graph: nats-py replies keep their tasks (slower): %d of 2", done)
    return done == 2


def stream_seq(reply: str | None) -> int | None:
    """The stream sequence of a JetStream message, from its reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``,
    or with ``<domain>.<account hash>`` before the stream (and a token after). None
    for another message (a bare publish). Cheaper than nats-py's ``Msg.metadata``,
    which also makes a datetime and two objects per message."""
    return _ack_field(reply, 5)


def stream_pending(reply: str | None) -> int | None:
    """How many messages a JetStream consumer had still to deliver after this one,
    from its reply subject (see :func:`stream_seq`); None for another message."""
    return _ack_field(reply, 8)


def _ack_field(reply: str | None, i: int) -> int | None:
    """Number ``i`` of a JetStream reply subject's tokens, as in its short form."""
    if not reply:
        return None
    t = reply.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        return None
    if len(t) > 9:  # (<domain>.<account hash> after "ACK")
        t = t[:2] + t[4:]
    try:
        return int(t[i])
    except (ValueError, IndexError):
        return None


_STATUS = "Status"


class Asker:
    """Publishes to JetStream whose acknowledgements come back on one handed-over
    subscription of the connection: a compare-and-set or an acknowledged publish
    costs a future and a dict entry, where nats-py's request path adds a
    ``wait_for``, random bytes for each token and a ``PubAck`` object for each reply.
    Only for publishes on the hot path (:meth:`RunState.update_header`,
    ``NatsRun.publish_later``); an acknowledgement means the same as nats-py's (the
    same errors are raised, see :func:`acknowledged`)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.prefix = ""
        self.waiting: dict[str, asyncio.Future[int]] = {}
        self._n = 0

    async def start(self) -> bool:
        """Subscribe to the replies; False (and nothing to use) if this nats-py's
        subscriptions cannot be handed over."""
        prefix = self.nc.new_inbox() + "."
        sub = await self.nc.subscribe(prefix + "*")
        if not hand_over(sub, self._reply):
            await sub.unsubscribe()
            return False
        self.prefix = prefix
        return True

    def _reply(self, msg: Msg) -> None:
        fut = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if fut is None or fut.done():
            return
        try:
            fut.set_result(acknowledged(msg))
        except Exception as exc:  # (the error the acknowledgement holds)
            fut.set_exception(exc)

    async def send(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[int]:
        """Publish with a reply subject of this asker's; the future gets the stored
        message's stream sequence, or the error the acknowledgement holds."""
        self._n += 1
        token = str(self._n)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self.waiting
        waiting[token] = fut
        fut.add_done_callback(lambda _: waiting.pop(token, None))  # (a reply that never came)
        await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
        return fut

    async def stored(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> int:
        """Publish to a stream and wait for its acknowledgement; the message's
        stream sequence. Raises as nats-py's ``JetStreamContext.publish`` does."""
        fut = await self.send(subject, data, headers)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise nats.errors.TimeoutError from None


def acknowledged(msg: Msg) -> int:
    """The stream sequence a JetStream publish acknowledgement gives, or the error it
    holds raised (nats-py's own exceptions: ``NoStreamResponseError`` when no stream
    takes the subject, ``APIError`` and its kinds otherwise)."""
    if msg.headers and msg.headers.get(_STATUS) == "503":
        raise nats.js.errors.NoStreamResponseError
    resp = json.loads(msg.data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])
    return int(resp["seq"])
