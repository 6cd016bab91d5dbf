"""Property-based tests: random graphs, random agents' scripts, random budgets.

Every agent follows a script: one action per delivery (create a thread, send,
add, remove, close, raise), with targets picked by index. Before each operation
the script computes, from the state it sees, whether the protocol allows it; the
runtime must agree (success, or a typed ProtocolError). After the run:

* every delivery matches a successful send that mentioned the recipient (no
  phantom, no edge bypassed) and happened at most once (no duplicate);
* per (sender, recipient) the deliveries are a prefix of the sends, in order;
* an ``idle`` run delivered everything (nothing lost);
* the run terminates, within its budgets, with a known stop reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coral_graph as cg
from coral_graph import AgentContext, Message

USER = "user"
NAMES = [f"a{i}" for i in range(6)]

Action = tuple[Any, ...]


@st.composite
def actions(draw: st.DrawFn, n: int) -> Action:
    # A target is ("ok", k): the k-th candidate the rules allow (so that runs get
    # going); ("peer", k): the k-th participant of the thread (or agent of the graph),
    # edge or not, oneself included; ("raw", i): any name, n standing for "user".
    # The last two probe the refusals.
    ok = st.tuples(st.just("ok"), st.integers(0, 5))
    peer = st.tuples(st.just("peer"), st.integers(0, 5))
    raw = st.tuples(st.just("raw"), st.integers(0, n))
    target = st.one_of(ok, ok, ok, peer, peer, raw)
    kind = draw(
        st.sampled_from(["create"] * 4 + ["send"] * 4 + ["add", "remove", "close", "raise"])
    )
    if kind == "create":
        return (
            "create",
            draw(st.lists(target, min_size=1, max_size=3)),
            draw(st.lists(target, min_size=1, max_size=3)),
        )
    if kind == "send":
        return (
            "send",
            draw(st.integers(0, 5)),
            draw(st.lists(target, max_size=3)),
            draw(st.integers(1, 3)),
        )
    if kind in ("add", "remove"):
        return (kind, draw(st.integers(0, 5)), draw(target))
    if kind == "close":
        return ("close", draw(st.integers(0, 5)))
    return ("raise",)


@dataclass
class Scenario:
    n: int
    edges: set[tuple[str, str]]
    entry: list[str]
    loops: set[str]
    scripts: dict[str, list[list[Action]]]  # the actions of each turn
    max_messages: int
    max_turns: int | None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 5))
    names = NAMES[:n]
    pairs = [(a, b) for a in names for b in names if a != b]
    # Sparse graphs probe the refusals; dense ones keep conversations going.
    dense = draw(st.sampled_from([1, 3, 9]))
    keep = draw(st.lists(st.integers(0, dense), min_size=len(pairs), max_size=len(pairs)))
    edges = {pair for pair, k in zip(pairs, keep, strict=True) if k}
    entry = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    loops = set(draw(st.lists(st.sampled_from(names), max_size=2, unique=True)))
    turn = st.lists(actions(n), min_size=1, max_size=3)
    scripts = {name: draw(st.lists(turn, min_size=1, max_size=6)) for name in names}
    return Scenario(
        n=n,
        edges=edges,
        entry=entry,
        loops=loops,
        scripts=scripts,
        max_messages=draw(st.sampled_from([5, 30, 1000])),
        max_turns=draw(st.sampled_from([None, 2, 5])),
    )


@dataclass
class Log:
    # (message id, sender, recipients other than user), in the order the sends happened
    sends: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    # (recipient, message id, sender), in the order each recipient got them
    deliveries: list[tuple[str, str, str]] = field(default_factory=list)
    raised: int = 0
    violations: list[str] = field(default_factory=list)
    threads: dict[str, cg.Thread] = field(default_factory=dict)
    # Set once the run has ended (an answer, a budget): later actions are skipped.
    over: bool = False


class Budgeted(Exception):
    pass


class Actor:
    """Runs its script, one action per delivery, checking the runtime's verdicts."""

    def __init__(self, name: str, sc: Scenario, log: Log) -> None:
        self.name = name
        self.sc = sc
        self.log = log
        self.script = list(sc.scripts[name])
        self.may_answer = name in sc.entry
        self.names = [*NAMES[: sc.n], USER]

    # -- the oracle ---------------------------------------------------------

    def addressable(self, x: str) -> bool:
        if x == USER:
            return self.may_answer
        return (self.name, x) in self.sc.edges

    def may_send(self, th: cg.Thread, mentions: list[str]) -> bool:
        if self.name not in th.participants or th.closed:
            return False
        return all(
            m != self.name and m in th.participants and self.addressable(m) for m in mentions
        )

    def mentionable(self, th: cg.Thread) -> list[str]:
        return [p for p in th.participants if p not in (self.name, USER) and self.addressable(p)]

    def expect(self, ctx: AgentContext, allowed: bool, op: Any, what: str) -> Any:
        try:
            value = op()
        except (cg.BudgetExceededError, cg.RuntimeClosedError):
            self.log.over = True
            raise Budgeted from None
        except cg.ProtocolError as exc:
            if allowed:
                self.log.violations.append(f"{self.name}: {what} refused: {exc!r}")
            return None
        except Exception as exc:
            self.log.violations.append(f"{self.name}: {what} raised {exc!r}")
            return None
        if not allowed:
            self.log.violations.append(f"{self.name}: {what} was allowed")
        return value

    # -- acting ---------------------------------------------------------------

    def send(self, ctx: AgentContext, th: cg.Thread, mentions: list[str]) -> None:
        uniq = list(dict.fromkeys(mentions))
        allowed = self.may_send(th, uniq)
        before = len(th.messages)
        msg = self.expect(
            ctx,
            allowed,
            lambda: ctx.send_message_nowait(th, "x", uniq),
            f"send {uniq} in {th.id}",
        )
        if msg is None:
            if len(th.messages) != before:
                self.log.violations.append(f"{self.name}: a refused send was posted")
            return
        self.log.sends.append((msg.id, self.name, tuple(m for m in uniq if m != USER)))
        if USER in uniq:
            self.log.over = True  # the answer

    def resolve(
        self, target: tuple[str, int], candidates: list[str], peers: list[str] | None = None
    ) -> str | None:
        how, i = target
        if how == "raw":
            return self.names[i]
        if how == "peer":
            candidates = peers if peers is not None else NAMES[: self.sc.n]
        return candidates[i % len(candidates)] if candidates else None

    def targets(
        self, specs: list[tuple[str, int]], candidates: list[str], peers: list[str] | None = None
    ) -> list[str]:
        out = [self.resolve(t, candidates, peers) for t in specs]
        return [x for x in out if x is not None]

    def pick(self, ctx: AgentContext, i: int, message: Message) -> cg.Thread | None:
        # 0: the thread of the delivery (where it may no longer be); else any of its own.
        threads = sorted(ctx.threads(), key=lambda t: int(t.id[2:]))
        self.log.threads.update((t.id, t) for t in threads)
        if i == 0:
            return self.log.threads.get(message.thread_id)
        return threads[i % len(threads)] if threads else None

    def got(self, message: Message) -> None:
        self.log.deliveries.append((self.name, message.id, message.sender))

    def act(self, ctx: AgentContext, message: Message) -> None:
        if not self.script or self.log.over:
            return
        for action in self.script.pop(0):
            if not self.log.over:
                self.do(ctx, message, action)

    def do(self, ctx: AgentContext, message: Message, action: Action) -> None:
        kind = action[0]
        try:
            if kind == "raise":
                self.log.raised += 1
                raise ValueError("scripted failure")
            # "ok" targets leave out user: answering is left to "raw" targets, or runs
            # would mostly end at once.
            reachable = [x for x in NAMES[: self.sc.n] if x != self.name and self.addressable(x)]
            if kind == "create":
                parts = self.targets(action[1], reachable)
                allowed = all(p == self.name or self.addressable(p) for p in parts)
                th = self.expect(
                    ctx, allowed, lambda: ctx.create_thread_nowait("t", parts), f"create {parts}"
                )
                if th is not None:
                    self.log.threads[th.id] = th
                    mentions = self.targets(action[2], self.mentionable(th), list(th.participants))
                    self.send(ctx, th, mentions)
                return
            th = self.pick(ctx, action[1], message)
            if th is None:
                return
            if kind == "send":
                for _ in range(action[3]):
                    mentions = self.targets(action[2], self.mentionable(th), list(th.participants))
                    self.send(ctx, th, mentions)
            elif kind == "add":
                x = self.resolve(action[2], [r for r in reachable if r not in th.participants])
                if x is None:
                    return
                ok = (
                    self.name in th.participants
                    and not th.closed
                    and x != self.name
                    and self.addressable(x)
                )
                self.expect(ctx, ok, lambda: ctx.add_participant_nowait(th, x), f"add {x}")
            elif kind == "remove":
                x = self.resolve(
                    action[2], [p for p in th.participants if p != self.name], list(th.participants)
                )
                if x is None:
                    return
                ok = self.name in th.participants and not th.closed and x in th.participants
                self.expect(ctx, ok, lambda: ctx.remove_participant_nowait(th, x), f"remove {x}")
            elif kind == "close":
                ok = self.name in th.participants and not th.closed
                self.expect(ctx, ok, lambda: ctx.close_thread_nowait(th, "s"), "close")
        except Budgeted:
            return


class HandlerActor(Actor):
    async def handle(self, ctx: AgentContext, message: Message) -> None:
        self.got(message)
        self.act(ctx, message)


class LoopActor(Actor):
    async def run(self, ctx: AgentContext) -> None:
        while True:
            batch = await ctx.wait_for_mentions()
            for m in batch:  # all of them are delivered, even if acting on one raises
                self.got(m)
            for m in batch:
                self.act(ctx, m)


async def play(sc: Scenario) -> tuple[cg.RunResult, Log]:
    log = Log()
    g = cg.AgentGraph()
    for name in NAMES[: sc.n]:
        if name in sc.loops:
            g.add_agent(name, LoopActor(name, sc, log), on_error="restart", max_restarts=1000)
        else:
            g.add_agent(name, HandlerActor(name, sc, log))
    for a, b in sorted(sc.edges):
        g.connect(a, b)
    budgets = cg.Budgets(max_messages=sc.max_messages, max_turns=sc.max_turns)
    with anyio.fail_after(10):  # every run terminates
        async with cg.open_runtime(g, budgets=budgets) as rt:
            result = await rt.run("task", entry=sc.entry)
    return result, log


def check(sc: Scenario, result: cg.RunResult, log: Log) -> None:
    assert log.violations == []
    check_deliveries(result, log, sc.edges, sc.entry, sc.max_messages, sc.max_turns)
    events = result.events
    for e in events:
        if e.kind == "thread_created" and e.creator != USER:
            assert all((e.creator, p) in sc.edges for p in e.participants[1:] if p != USER)
        if e.kind == "participant_added":
            assert e.agent == USER or (e.by, e.agent) in sc.edges
    errors = [e for e in events if e.kind == "agent_errored"]
    assert [e.error_type for e in errors] == ["ValueError"] * len(errors)
    assert len(errors) == log.raised
    if result.stop_reason == "answer":
        assert result.answer_message is not None
        assert result.answer_message.sender in sc.entry


def check_deliveries(
    result: cg.RunResult,
    log: Log,
    edges: set[tuple[str, str]],
    entry: list[str],
    max_messages: int,
    max_turns: int | None,
) -> None:
    # Every run terminates (the caller's fail_after), within its budgets.
    assert result.stop_reason in {"answer", "idle", "budget:messages", "budget:turns"}
    assert result.messages <= max_messages
    if max_turns is not None:
        assert all(u.turns <= max_turns for u in result.usage.values())

    sends = [("t-1#1", USER, tuple(entry)), *log.sends]
    sender_of = {mid: s for mid, s, _ in sends}
    expected = Counter((r, mid) for mid, _, rs in sends for r in rs)
    got = Counter((r, mid) for r, mid, _ in log.deliveries)
    # No duplicate, no phantom: each delivery matches one mention of a send.
    assert all(c == 1 for c in got.values()), got
    assert not (got - expected), got - expected
    for r, mid, s in log.deliveries:
        assert sender_of[mid] == s
        # No edge bypassed.
        assert (s, r) in edges if s != USER else r in entry
    # Nothing lost: an idle run handed every delivery over.
    if result.stop_reason == "idle":
        assert got == expected
    # Per (sender, recipient) order: what arrived is a prefix of what was sent.
    sent_pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mid, s, rs in sends:
        for r in rs:
            sent_pairs[(s, r)].append(mid)
    got_pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r, mid, s in log.deliveries:
        got_pairs[(s, r)].append(mid)
    for pair, mids in got_pairs.items():
        assert mids == sent_pairs[pair][: len(mids)], pair

    # The transcript agrees with what the agents saw.
    events = result.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events].count("run_finished") == 1
    sent_events = [e.message for e in events if e.kind == "message_sent"]
    assert [m.id for m in sent_events][1:] == [mid for mid, _, _ in log.sends]
    for m in sent_events:
        for r in m.mentions:
            if r != USER and m.sender != USER:
                assert (m.sender, r) in edges
    handled = [e for e in events if e.kind == "delivery_handled"]
    assert Counter((e.agent, e.message_id) for e in handled) == got


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_random_graphs_and_scripts(sc: Scenario) -> None:
    result, log = anyio.run(play, sc, backend="asyncio")
    check(sc, result, log)


@st.composite
def floods(draw: st.DrawFn) -> tuple[int, set[tuple[str, str]], set[str], int, int | None, int]:
    n = draw(st.integers(2, 5))
    names = NAMES[:n]
    pairs = [(a, b) for a in names for b in names if a != b]
    edges = set(draw(st.lists(st.sampled_from(pairs), min_size=1, unique=True)))
    loops = set(draw(st.lists(st.sampled_from(names), max_size=2, unique=True)))
    return (
        n,
        edges,
        loops,
        draw(st.integers(1, 300)),
        draw(st.one_of(st.none(), st.integers(1, 60))),
        draw(st.integers(1, 3)),
    )


class Flooder:
    """On every delivery, posts ``fanout`` messages mentioning rotating subsets of
    every agent it can reach: talk that only a budget can stop."""

    def __init__(self, name: str, log: Log, fanout: int) -> None:
        self.name = name
        self.log = log
        self.fanout = fanout
        self.thread: cg.Thread | None = None
        self.k = 0

    def on(self, ctx: AgentContext, message: Message) -> None:
        self.log.deliveries.append((self.name, message.id, message.sender))
        peers = [i.name for i in ctx.list_agents_nowait() if i.name != USER]
        if not peers:
            return
        try:
            if self.thread is None:
                self.thread = ctx.create_thread_nowait("flood", peers)
            for _ in range(self.fanout):
                self.k += 1
                ms = [p for j, p in enumerate(peers) if (self.k >> j) & 1] or peers[:1]
                msg = ctx.send_message_nowait(self.thread, str(self.k), ms)
                self.log.sends.append((msg.id, self.name, tuple(ms)))
        except (cg.BudgetExceededError, cg.RuntimeClosedError):
            return


class HandlerFlooder(Flooder):
    async def handle(self, ctx: AgentContext, message: Message) -> None:
        self.on(ctx, message)


class LoopFlooder(Flooder):
    async def run(self, ctx: AgentContext) -> None:
        while True:
            for m in await ctx.wait_for_mentions():
                self.on(ctx, m)


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(floods())
def test_agents_that_never_stop_talking_terminate_by_budget(
    case: tuple[int, set[tuple[str, str]], set[str], int, int | None, int],
) -> None:
    n, edges, loops, max_messages, max_turns, fanout = case
    log = Log()
    entry = [min(edges)[0]]

    async def main() -> cg.RunResult:
        g = cg.AgentGraph()
        for name in NAMES[:n]:
            cls = LoopFlooder if name in loops else HandlerFlooder
            g.add_agent(name, cls(name, log, fanout))
        for a, b in sorted(edges):
            g.connect(a, b)
        budgets = cg.Budgets(max_messages=max_messages, max_turns=max_turns)
        with anyio.fail_after(10):
            async with cg.open_runtime(g, budgets=budgets) as rt:
                return await rt.run("go", entry=entry)

    result = anyio.run(main, backend="asyncio")
    check_deliveries(result, log, edges, entry, max_messages, max_turns)
    assert of_kind_errors(result) == []


def of_kind_errors(result: cg.RunResult) -> list[Any]:
    return [e for e in result.events if e.kind == "agent_errored"]


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.just(n), st.sets(edge_pairs(n)))))
def test_every_operation_is_edge_checked(case: tuple[int, set[tuple[str, str]]]) -> None:
    # a0 opens a thread with everyone (it is given an edge to everyone) and mentions
    # them all; each then tries every operation on every name. The runtime must say
    # yes exactly where the graph has an edge.
    n, extra = case
    names = NAMES[:n]
    edges = extra | {("a0", b) for b in names[1:]}
    outcomes: list[tuple[str, str, str, bool]] = []
    unexpected: list[BaseException] = []

    def attempt(who: str, op: str, target: str, fn: Any) -> None:
        try:
            fn()
        except cg.ProtocolError:
            outcomes.append((op, who, target, False))
        except Exception as exc:
            unexpected.append(exc)
        else:
            outcomes.append((op, who, target, True))

    async def handle(ctx: AgentContext, message: Message) -> None:
        me = ctx.name
        if message.sender == USER:
            th = ctx.create_thread_nowait("all", names[1:])
            ctx.send_message_nowait(th, "go", names[1:])
            return
        if message.content != "go":
            return  # a successful probe: nothing more to do
        th = ctx.thread(message.thread_id)
        for x in [*names, USER]:
            attempt(me, "mention", x, lambda x=x: ctx.send_message_nowait(th, "hi", [x]))
            attempt(me, "create", x, lambda x=x: ctx.create_thread_nowait("p", [x]))
            side = ctx.create_thread_nowait("side")
            attempt(me, "add", x, lambda x=x, side=side: ctx.add_participant_nowait(side, x))

    async def main() -> cg.RunResult:
        g = cg.AgentGraph()
        for name in names:
            g.add_agent(name, handle)
        for a, b in sorted(edges):
            g.connect(a, b)
        with anyio.fail_after(10):
            async with cg.open_runtime(g) as rt:
                return await rt.run("go", entry=["a0"])

    result = anyio.run(main, backend="asyncio")
    assert unexpected == []
    assert result.stop_reason == "idle"
    assert len(outcomes) == (n - 1) * (n + 1) * 3
    for op, who, target, ok in outcomes:
        allowed = target != who and target != USER and (who, target) in edges
        if op == "create" and target == who:
            allowed = True  # the creator listed among the participants is ignored
        assert ok == allowed, (op, who, target)
    # The mentions that went through were delivered along edges only.
    for e in result.events:
        if e.kind == "delivery_handled":
            sender = next(
                ev.message.sender
                for ev in result.events
                if ev.kind == "message_sent" and ev.message.id == e.message_id
            )
            assert sender == USER or (sender, e.agent) in edges


def edge_pairs(n: int) -> st.SearchStrategy[tuple[str, str]]:
    names = NAMES[:n]
    return st.sampled_from([(a, b) for a in names for b in names if a != b])


# -- message metadata: accepted means kept exactly --------------------------------

_plain_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_any_leaf = (
    _plain_leaf
    | st.integers()
    | st.floats()
    | st.binary(max_size=4)
    | st.datetimes()
    | st.frozensets(st.integers(), max_size=2)
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
)
_keys = st.text(max_size=8) | st.integers() | st.none()


def _nested(leaf: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner, inner)
            | st.dictionaries(keys, inner, max_size=3)
        ),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _nested(_any_leaf, _keys), max_size=4))
def test_metadata_is_refused_at_send_or_round_trips_through_msgpack_and_json(
    meta: dict[Any, Any],
) -> None:
    import json
    import math

    import msgpack

    from coral_graph._model import plain_metadata

    refused: cg.InvalidMetadataError | None = None
    try:
        plain = plain_metadata(meta)
    except cg.InvalidMetadataError as exc:
        refused = exc
    if refused is not None:
        assert isinstance(refused.key, str)
        assert repr(refused.key) in str(refused)
        return
    packed = msgpack.unpackb(msgpack.packb(plain), strict_map_key=True)
    assert packed == plain
    text = json.dumps(plain, allow_nan=False, ensure_ascii=False)
    assert json.loads(text) == plain
    assert all(not isinstance(v, float) or math.isfinite(v) for v in _leaves(plain))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _nested(_plain_leaf, st.text(max_size=8)), max_size=4))
def test_plain_metadata_is_always_accepted(meta: dict[str, Any]) -> None:
    import msgpack

    from coral_graph._model import plain_metadata

    plain = plain_metadata(meta)
    # Tuples come back as lists; everything else is kept as it was.
    assert msgpack.unpackb(msgpack.packb(meta), strict_map_key=True) == plain


def _leaves(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [x for item in v.values() for x in _leaves(item)]
    if isinstance(v, list):
        return [x for item in v for x in _leaves(item)]
    return [v]


@pytest.mark.parametrize(
    ("meta", "key"),
    [
        ({"when": __import__("datetime").datetime(2024, 1, 1)}, "when"),
        ({"tags": {1, 2}}, "tags"),
        ({"raw": b"x"}, "raw"),
        ({"score": float("nan")}, "score"),
        ({"a": {"b": [1, float("inf")]}}, "a.b[1]"),
        ({1: "x"}, "1"),
        ({"big": 1 << 70}, "big"),
    ],
)
def test_bad_metadata_is_refused_at_send_naming_the_key(meta: dict[Any, Any], key: str) -> None:
    sent: list[Any] = []

    @cg.agent
    async def a(ctx: AgentContext, message: Message) -> None:
        try:
            await ctx.send_message(message.thread_id, "x", ["user"], metadata=meta)
        except cg.InvalidMetadataError as exc:
            sent.append(exc.key)
            await ctx.send_message(message.thread_id, "ok", ["user"], metadata={"fine": [1]})

    g = cg.AgentGraph()
    g.add_agent("a", a)
    result = cg.run(g, "go", entry=["a"])
    assert sent == [key]
    assert result.answer == "ok"
    assert result.messages == 1  # the refused message was not posted, nor counted
    assert result.answer_message is not None
    assert result.answer_message.metadata == {"fine": [1]}


def test_deep_metadata_is_refused() -> None:
    from coral_graph._model import MAX_METADATA_DEPTH, plain_metadata

    deep: Any = "leaf"
    for _ in range(MAX_METADATA_DEPTH + 1):
        deep = {"d": deep}
    with pytest.raises(cg.InvalidMetadataError, match="nested"):
        plain_metadata({"x": deep})


# -- the tools: what the validator accepts is what the schema promises -----------

_names = st.sampled_from(["a", "b", "planner", "user", "BAD NAME", "", "@a", "a" * 70, "x-1"])
_json_leaf = st.none() | st.booleans() | st.integers(-5, 100) | st.floats(-5, 100) | _names
_values = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
_keys = st.sampled_from(
    ["thread_id", "name", "participants", "summary", "content", "mentions", "timeout_s", "x"]
)


@settings(max_examples=400, deadline=None)
@given(
    tool=st.sampled_from(
        [
            "list_agents",
            "create_thread",
            "add_participant",
            "remove_participant",
            "close_thread",
            "send_message",
            "wait_for_mentions",
        ]
    ),
    args=st.dictionaries(_keys, _values, max_size=4),
)
def test_tool_arguments_accepted_satisfy_the_generated_schema(
    tool: str, args: dict[str, Any]
) -> None:
    """Every rule the tool's JSON schema states is enforced: arguments the schema
    accepts are accepted, and whatever is accepted (as read) satisfies the schema."""
    import json

    import jsonschema

    from coral_graph._ops import ToolArgumentError, parse_call
    from coral_graph.llm import TOOL_SCHEMAS

    schema = next(t for t in TOOL_SCHEMAS if t["function"]["name"] == tool)["function"]
    params = schema["parameters"]
    valid = jsonschema.Draft202012Validator(params).is_valid(args)
    try:
        op = parse_call(tool, json.dumps(args))
    except ToolArgumentError:
        assert not valid, f"the schema accepts {args} but the call was refused"
        return
    read = op.model_dump(exclude_unset=True)
    assert jsonschema.Draft202012Validator(params).is_valid(read), (args, read)
