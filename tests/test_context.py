"""AgentContext: the seven operations and every rule and error of the protocol.

Most tests run a *script*: the body of the entry agent ``a``'s first turn. The body
performs operations and asserts; whatever it raises is kept and re-raised by the
test after the run, so a failed assertion inside a turn fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import pytest

import coral_graph as cg
from coral_graph import (
    AgentContext,
    AgentGraph,
    ConcurrentWaitError,
    ContentTooLargeError,
    EdgeNotAllowedError,
    InboxFullError,
    InvalidMentionError,
    Message,
    NotAParticipantError,
    ProtocolError,
    RuntimeClosedError,
    ThreadClosedError,
    UnknownAgentError,
    UnknownThreadError,
)

pytestmark = pytest.mark.anyio

Body = Callable[[AgentContext], Awaitable[Any]]


class Recorder:
    """Records every delivery; optionally runs ``react`` on each."""

    def __init__(self, react: Callable[[AgentContext, Message], Awaitable[None]] | None = None):
        self.got: list[Message] = []
        self.react = react
        self.error: BaseException | None = None

    async def handle(self, ctx: AgentContext, message: Message) -> None:
        self.got.append(message)
        if self.react is not None:
            try:
                await self.react(ctx, message)
            except Exception as exc:
                self.error = exc


class Script:
    """Runs ``body`` on its first delivery and keeps what it returned or raised."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.calls = 0
        self.value: Any = None
        self.error: BaseException | None = None
        self.got: list[Message] = []

    async def handle(self, ctx: AgentContext, message: Message) -> None:
        self.got.append(message)
        self.calls += 1
        if self.calls > 1:
            return
        try:
            self.value = await self.body(ctx)
        except Exception as exc:
            self.error = exc


class World:
    """A graph with a scripted entry agent ``a`` and recorders for the others."""

    def __init__(self, body: Body, agents: Iterable[str], edges: Iterable[str]) -> None:
        self.graph = AgentGraph()
        self.script = Script(body)
        self.graph.add_agent("a", self.script, description="the script")
        self.rec: dict[str, Recorder] = {}
        for name in agents:
            self.rec[name] = Recorder()
            self.graph.add_agent(name, self.rec[name], description=f"agent {name}")
        for edge in edges:
            if "<>" in edge:
                x, y = edge.split("<>")
                self.graph.connect(x, y, mutual=True)
            else:
                x, y = edge.split(">")
                self.graph.connect(x, y)

    async def run(self, **kwargs: Any) -> cg.RunResult:
        rt_opts = {k: kwargs.pop(k) for k in ("max_inbox", "max_content_chars") if k in kwargs}
        with anyio.fail_after(10):
            async with cg.open_runtime(self.graph, **rt_opts) as rt:
                result = await rt.run("the task", entry=kwargs.pop("entry", ["a"]), **kwargs)
        if self.script.error is not None:
            raise self.script.error
        return result


async def script(
    body: Body,
    agents: Iterable[str] = ("b", "c"),
    edges: Iterable[str] = ("a<>b", "a<>c"),
    **kwargs: Any,
) -> tuple[cg.RunResult, World]:
    world = World(body, agents, edges)
    result = await world.run(**kwargs)
    return result, world


def kinds(result: cg.RunResult, kind: str) -> list[Any]:
    return [e for e in result.events if e.kind == kind]


# -- list_agents ---------------------------------------------------------------------


async def test_list_agents_returns_reachable_agents_and_user_for_an_entry() -> None:
    async def body(ctx: AgentContext) -> Any:
        infos = await ctx.list_agents()
        assert infos == ctx.list_agents_nowait()
        return [(i.name, i.description) for i in infos]

    _, world = await script(body, agents=("b", "c", "d"), edges=("a>b", "a>c", "d>a"))
    got = dict(world.script.value)
    assert set(got) == {"b", "c", "user"}  # not d: the edge is d -> a
    assert got["b"] == "agent b"
    assert got["c"] == "agent c"


async def test_list_agents_of_a_non_answerer_does_not_show_user() -> None:
    seen: dict[str, list[str]] = {}

    async def react(ctx: AgentContext, message: Message) -> None:
        seen[ctx.name] = [i.name for i in await ctx.list_agents()]

    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("work", ["b"])
        await ctx.send_message(th, "go", ["b"])

    world = World(body, ["b", "c"], ["a>b", "b>c"])
    world.rec["b"].react = react
    await world.run()
    assert seen == {"b": ["c"]}


async def test_list_agents_shows_user_for_answer_by_agents_only() -> None:
    seen: dict[str, list[str]] = {}

    async def react(ctx: AgentContext, message: Message) -> None:
        seen[ctx.name] = [i.name for i in await ctx.list_agents()]

    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("work", ["b"])
        await ctx.send_message(th, "go", ["b"])
        return [i.name for i in await ctx.list_agents()]

    world = World(body, ["b"], ["a>b"])
    world.rec["b"].react = react
    await world.run(answer_by=["b"])
    assert world.script.value == ["b"]  # a is the entry but not an answerer
    assert seen == {"b": ["user"]}


# -- create_thread ------------------------------------------------------------------------


async def test_create_thread_adds_the_creator_first_and_keeps_order() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("  research  ", ["c", "b", "c", "a"])
        assert th.participants == ("a", "c", "b")
        assert th.creator == "a"
        assert th.name == "research"
        assert th.state == "open"
        assert th.messages == ()
        assert th.summary is None
        assert ctx.thread(th.id) is th
        return th.id

    result, world = await script(body)
    tid = world.script.value
    created = [e for e in kinds(result, "thread_created") if e.thread_id == tid]
    assert len(created) == 1
    assert created[0].creator == "a"
    assert created[0].participants == ["a", "c", "b"]
    assert result.threads[tid].participants == ("a", "c", "b")


async def test_create_thread_alone_and_with_a_single_name() -> None:
    async def body(ctx: AgentContext) -> Any:
        solo = await ctx.create_thread("notes")
        pair = await ctx.create_thread("pair", "b")
        return solo.participants, pair.participants

    _, world = await script(body)
    assert world.script.value == (("a",), ("a", "b"))


async def test_thread_ids_are_unique() -> None:
    async def body(ctx: AgentContext) -> Any:
        return [(await ctx.create_thread("x", ["b"])).id for _ in range(5)]

    result, world = await script(body)
    ids = world.script.value
    assert len(set(ids)) == 5
    assert "t-1" not in ids  # the task thread is the first
    assert set(ids) <= set(result.threads)


async def test_create_thread_with_unknown_agent_suggests_a_name() -> None:
    async def body(ctx: AgentContext) -> Any:
        before = len(ctx.threads())
        with pytest.raises(UnknownAgentError) as info:
            await ctx.create_thread("x", ["b", "solvr"])
        assert len(ctx.threads()) == before  # nothing was created
        return info.value

    _, world = await script(body, agents=("b", "solver"), edges=("a>b", "a>solver"))
    err = world.script.value
    assert err.name == "solvr"
    assert err.suggestion == "solver"
    assert "solver" in str(err)
    assert isinstance(err, ProtocolError)


async def test_create_thread_needs_an_edge_to_every_participant() -> None:
    async def body(ctx: AgentContext) -> Any:
        with pytest.raises(EdgeNotAllowedError) as info:
            await ctx.create_thread("x", ["b", "c"])
        return info.value

    result, world = await script(body, edges=("a>b", "c>a"))
    err = world.script.value
    assert (err.sender, err.recipient) == ("a", "c")
    assert 'add the edge "a -> c"' in str(err)
    assert len(result.threads) == 1  # only the task thread


@pytest.mark.parametrize("name", ["", "   ", None])
async def test_create_thread_needs_a_name(name: Any) -> None:
    async def body(ctx: AgentContext) -> None:
        with pytest.raises(ValueError, match="name"):
            await ctx.create_thread(name, ["b"])

    await script(body)


async def test_create_thread_with_user_only_for_answerers() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("report", ["user", "b"])
        await ctx.send_message(th, "go", ["b"])
        return th.participants

    async def react(ctx: AgentContext, message: Message) -> None:
        with pytest.raises(EdgeNotAllowedError) as info:
            await ctx.create_thread("sneak", ["user"])
        assert info.value.recipient == "user"
        assert "answer_by" in str(info.value)

    world = World(body, ["b"], ["a<>b"])
    world.rec["b"].react = react
    await world.run()
    assert world.script.value == ("a", "user", "b")
    assert world.rec["b"].got
    assert world.rec["b"].error is None


# -- send_message -----------------------------------------------------------------------------


async def test_send_appends_with_seq_and_delivers_once_per_mention() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("x", ["b", "c"])
        m1 = await ctx.send_message(th, "one", ["b", "c", "b"])
        m2 = await ctx.send_message(th.id, "two", "c")
        m3 = ctx.send_message_nowait(th, "three")
        assert [m.seq for m in th.messages] == [1, 2, 3]
        assert th.messages == (m1, m2, m3)
        assert m1.id == f"{th.id}#1"
        assert m1.mentions == ("b", "c")
        assert m2.mentions == ("c",)
        assert m3.mentions == ()
        assert m1.sender == "a"
        assert m1.thread_id == th.id
        return th.id

    result, world = await script(body)
    assert [m.content for m in world.rec["b"].got] == ["one"]
    assert [m.content for m in world.rec["c"].got] == ["one", "two"]
    assert result.stop_reason == "idle"
    assert result.messages == 3
    assert result.usage["a"].messages_sent == 3
    assert result.usage["c"].deliveries == 2
    sent = [e.message.content for e in kinds(result, "message_sent")]
    assert sent == ["the task", "one", "two", "three"]


async def test_every_participant_can_read_a_message_without_a_mention() -> None:
    read: list[str] = []

    async def react(ctx: AgentContext, message: Message) -> None:
        read.extend(m.content for m in ctx.thread(message.thread_id).messages)

    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b", "c"])
        await ctx.send_message(th, "for everyone")
        await ctx.send_message(th, "wake c", ["c"])

    world = World(body, ["b", "c"], ["a<>b", "a<>c"])
    world.rec["c"].react = react
    await world.run()
    assert world.rec["b"].got == []
    assert read == ["for everyone", "wake c"]


async def test_reply_to_and_metadata_are_kept() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("x", ["b"])
        m1 = await ctx.send_message(th, "q", ["b"])
        return await ctx.send_message(
            th, "a", ["b"], reply_to=m1.id, metadata={"model": "m", "tokens": 3}
        )

    _, world = await script(body)
    msg = world.script.value
    assert msg.reply_to.endswith("#1")
    assert dict(msg.metadata) == {"model": "m", "tokens": 3}
    assert world.rec["b"].got[1] == msg


async def test_send_to_an_unknown_thread() -> None:
    async def body(ctx: AgentContext) -> None:
        with pytest.raises(UnknownThreadError) as info:
            await ctx.send_message("t-999", "hi", ["b"])
        assert info.value.thread_id == "t-999"
        assert "create_thread" in str(info.value)

    result, world = await script(body)
    assert world.rec["b"].got == []
    assert result.messages == 0


async def test_send_by_a_non_participant() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "c, join", ["b"])

    async def react(ctx: AgentContext, message: Message) -> None:
        # b creates a thread without a; a posting into it must fail.
        if ctx.name == "b":
            th = await ctx.create_thread("private", ["c"])
            await ctx.send_message(th, "psst", ["c"])

    async def c_react(ctx: AgentContext, message: Message) -> None:
        with pytest.raises(NotAParticipantError) as info:
            await ctx.send_message("t-2", "intrude")  # a's thread "x": c is not in it
        assert (info.value.agent, info.value.thread_id) == ("c", "t-2")

    world = World(body, ["b", "c"], ["a<>b", "b<>c"])
    world.rec["b"].react = react
    world.rec["c"].react = c_react
    result = await world.run()
    assert world.rec["c"].got
    assert world.rec["c"].error is None
    assert [m.content for m in result.threads["t-2"].messages] == ["c, join"]


async def test_send_to_a_closed_thread() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.close_thread(th, "done")
        with pytest.raises(ThreadClosedError) as info:
            await ctx.send_message(th, "late", ["b"])
        assert info.value.thread_id == th.id
        assert "create a new thread" in str(info.value)
        assert th.messages == ()

    _, world = await script(body)
    assert world.rec["b"].got == []


async def test_mention_of_a_non_participant() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(NotAParticipantError) as info:
            await ctx.send_message(th, "hi", ["b", "c"])
        assert info.value.agent == "c"
        assert "add_participant" in str(info.value)
        assert th.messages == ()

    _, world = await script(body)
    # Nothing was posted, so b got no delivery either: a send is all or nothing.
    assert world.rec["b"].got == []
    assert world.rec["c"].got == []


async def test_mention_of_oneself() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(InvalidMentionError) as info:
            await ctx.send_message(th, "me", ["b", "a"])
        assert info.value.agent == "a"
        assert "itself" in str(info.value)
        assert th.messages == ()

    _, world = await script(body)
    assert world.rec["b"].got == []


async def test_mention_of_an_unknown_agent_suggests_a_name() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("x", ["solver"])
        with pytest.raises(UnknownAgentError) as info:
            await ctx.send_message(th, "hi", ["solvr"])
        return info.value

    _, world = await script(body, agents=("solver",), edges=("a>solver",))
    assert world.script.value.suggestion == "solver"
    assert world.rec["solver"].got == []


@pytest.mark.parametrize("mention", [3, None, b"b"])
async def test_malformed_mention(mention: Any) -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(InvalidMentionError):
            await ctx.send_message(th, "hi", [mention])

    await script(body)


async def test_unhashable_mention_is_a_typed_error() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(InvalidMentionError):
            await ctx.send_message(th, "hi", [["b"]])  # type: ignore[list-item]
        with pytest.raises(InvalidMentionError):
            await ctx.send_message(th, "hi", ["b", ["b"]])  # type: ignore[list-item]
        assert th.messages == ()

    await script(body)


async def test_mention_of_a_participant_without_an_edge() -> None:
    # b was added by a; c may not address b even though they share the thread.
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b", "c"])
        await ctx.send_message(th, "c, talk to b", ["c"])

    async def c_react(ctx: AgentContext, message: Message) -> None:
        with pytest.raises(EdgeNotAllowedError) as info:
            await ctx.send_message(message.thread_id, "hey b", ["b"])
        assert (info.value.sender, info.value.recipient) == ("c", "b")
        assert info.value.action == "mention"
        # Posting without a mention is fine: every participant may post.
        await ctx.send_message(message.thread_id, "noted")

    world = World(body, ["b", "c"], ["a>b", "a<>c"])
    world.rec["c"].react = c_react
    result = await world.run()
    assert world.rec["c"].error is None
    assert world.rec["b"].got == []
    th = next(t for t in result.threads.values() if t.name == "x")
    assert [m.content for m in th.messages] == ["c, talk to b", "noted"]


async def test_content_size_limit() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "x" * 50, ["b"])  # exactly the limit
        with pytest.raises(ContentTooLargeError) as info:
            await ctx.send_message(th, "x" * 51, ["b"])
        assert (info.value.size, info.value.limit) == (51, 50)
        assert "max_content_chars" in str(info.value)
        assert len(th.messages) == 1

    _, world = await script(body, max_content_chars=50)
    assert len(world.rec["b"].got) == 1


@pytest.mark.parametrize("content", [None, 3, b"bytes", ["x"]])
async def test_content_must_be_text(content: Any) -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(TypeError, match="string"):
            await ctx.send_message(th, content, ["b"])

    await script(body)


async def test_inbox_bound_rejects_the_send_and_drops_nothing() -> None:
    async def body(ctx: AgentContext) -> Any:
        th = await ctx.create_thread("x", ["b"])
        # b cannot run before this turn yields: its inbox fills up.
        await ctx.send_message(th, "1", ["b"])
        await ctx.send_message(th, "2", ["b"])
        with pytest.raises(InboxFullError) as info:
            await ctx.send_message(th, "3", ["b"])
        assert (info.value.recipient, info.value.limit) == ("b", 2)
        assert "max_inbox" in str(info.value)
        assert ctx.thread(th).last_seq == 2  # the rejected message was not posted
        return th

    result, world = await script(body, max_inbox=2)
    assert [m.content for m in world.rec["b"].got] == ["1", "2"]
    assert result.stop_reason == "idle"


async def test_inbox_bound_frees_up_as_deliveries_are_handled() -> None:
    got_at_b: list[str] = []

    class A:
        def __init__(self) -> None:
            self.sent = 0

        async def handle(self, ctx: AgentContext, message: Message) -> None:
            # Every delivery to a: post two more to b (the bound is 2), until 10.
            if message.sender == "user":
                self.th = await ctx.create_thread("x", ["b"])
            for _ in range(2):
                if self.sent < 10:
                    self.sent += 1
                    await ctx.send_message(self.th, str(self.sent), ["b"])

    class B:
        async def handle(self, ctx: AgentContext, message: Message) -> None:
            got_at_b.append(message.content)
            if message.content in {"2", "4", "6", "8"}:
                await ctx.send_message(message.thread_id, "more", ["a"])

    g = AgentGraph()
    g.add_agent("a", A())
    g.add_agent("b", B())
    g.connect("a", "b", mutual=True)
    with anyio.fail_after(10):
        async with cg.open_runtime(g, max_inbox=2) as rt:
            result = await rt.run("go", entry=["a"])
    assert got_at_b == [str(i) for i in range(1, 11)]
    assert result.stop_reason == "idle"
    assert result.usage["a"].errors == 0


async def test_mention_user_answers_for_an_entry() -> None:
    async def body(ctx: AgentContext) -> Any:
        task = ctx.threads()[0]
        assert task.participants == ("user", "a")
        return await ctx.send_message(task, "42", ["user"])

    result, world = await script(body)
    assert result.stop_reason == "answer"
    assert result.answer == "42"
    assert result.answer_message == world.script.value


async def test_mention_user_by_a_non_answerer_is_not_allowed() -> None:
    async def body(ctx: AgentContext) -> None:
        task = ctx.threads()[0]
        await ctx.add_participant(task, "b")
        await ctx.send_message(task, "b, answer them", ["b"])

    async def react(ctx: AgentContext, message: Message) -> None:
        with pytest.raises(EdgeNotAllowedError) as info:
            await ctx.send_message(message.thread_id, "42", ["user"])
        assert info.value.recipient == "user"

    world = World(body, ["b"], ["a<>b"])
    world.rec["b"].react = react
    result = await world.run()
    assert world.rec["b"].got
    assert world.rec["b"].error is None
    assert result.stop_reason == "idle"
    assert result.answer is None


async def test_answer_by_agent_answers_through_a_thread_with_user() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("work", ["b"])
        await ctx.send_message(th, "solve", ["b"])

    async def react(ctx: AgentContext, message: Message) -> None:
        th = await ctx.create_thread("answer", ["user"])
        await ctx.send_message(th, "solved", ["user"])

    world = World(body, ["b"], ["a>b"])
    world.rec["b"].react = react
    result = await world.run(answer_by=["b"])
    assert world.rec["b"].error is None
    assert result.stop_reason == "answer"
    assert result.answer == "solved"
    assert result.answer_message is not None
    assert result.answer_message.sender == "b"


async def test_mention_user_who_is_not_in_the_thread() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(NotAParticipantError) as info:
            await ctx.send_message(th, "42", ["user"])
        assert info.value.agent == "user"

    result, _ = await script(body)
    assert result.stop_reason == "idle"


# -- add_participant / remove_participant ---------------------------------------------------


async def test_add_participant_rules() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        with pytest.raises(UnknownAgentError) as unknown:
            await ctx.add_participant(th, "cc")
        assert unknown.value.suggestion == "c"
        with pytest.raises(EdgeNotAllowedError) as no_edge:
            await ctx.add_participant(th, "d")
        assert (no_edge.value.sender, no_edge.value.recipient) == ("a", "d")
        with pytest.raises(UnknownThreadError):
            await ctx.add_participant("t-77", "c")
        with pytest.raises(InvalidMentionError):
            await ctx.add_participant(th, "a")
        await ctx.add_participant(th, "c")
        await ctx.add_participant(th, "c")  # twice: nothing happens
        assert th.participants == ("a", "b", "c")
        await ctx.close_thread(th)
        with pytest.raises(ThreadClosedError):
            await ctx.add_participant(th, "e")

    result, _ = await script(body, agents=("b", "c", "d", "e"), edges=("a>b", "a>c", "d>a", "a>e"))
    added = kinds(result, "participant_added")
    assert [(e.agent, e.by) for e in added] == [("c", "a")]


async def test_add_participant_by_a_non_participant() -> None:
    async def body(ctx: AgentContext) -> None:
        mine = await ctx.create_thread("mine", ["b"])
        await ctx.send_message(mine, "start", ["b"])

    async def b_react(ctx: AgentContext, message: Message) -> None:
        th = await ctx.create_thread("b-only", ["c"])
        await ctx.send_message(th, "go", ["c"])

    async def c_react(ctx: AgentContext, message: Message) -> None:
        with pytest.raises(NotAParticipantError) as info:
            await ctx.add_participant("t-2", "a")  # "mine": c is not in it
        assert info.value.agent == "c"
        with pytest.raises(NotAParticipantError):
            await ctx.remove_participant("t-2", "b")
        with pytest.raises(NotAParticipantError):
            await ctx.close_thread("t-2")
        with pytest.raises(NotAParticipantError):
            ctx.thread("t-2")

    world = World(body, ["b", "c"], ["a>b", "b>c", "c>a"])
    world.rec["b"].react = b_react
    world.rec["c"].react = c_react
    result = await world.run()
    assert world.rec["c"].got
    assert world.rec["c"].error is None
    assert result.threads["t-2"].participants == ("a", "b")
    assert result.threads["t-2"].state == "open"


async def test_newcomer_reads_history_but_does_not_inherit_earlier_mentions() -> None:
    history: list[list[str]] = []

    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "first, for b", ["b"])
        await ctx.send_message(th, "second, for b", ["b"])
        await ctx.add_participant(th, "c")
        await ctx.send_message(th, "welcome c", ["c"])

    async def c_react(ctx: AgentContext, message: Message) -> None:
        history.append([m.content for m in ctx.thread(message.thread_id).messages])

    world = World(body, ["b", "c"], ["a>b", "a>c"])
    world.rec["c"].react = c_react
    result = await world.run()
    assert [m.content for m in world.rec["c"].got] == ["welcome c"]
    assert history == [["first, for b", "second, for b", "welcome c"]]
    added = kinds(result, "participant_added")
    assert [(e.agent, e.cursor) for e in added] == [("c", 2)]


async def test_newcomer_loop_agent_waits_only_for_later_mentions() -> None:
    got: list[list[str]] = []

    class Waiter:
        async def run(self, ctx: AgentContext) -> None:
            got.append([m.content for m in await ctx.wait_for_mentions()])

    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "for b", ["b"])
        await ctx.add_participant(th, "w")
        await ctx.send_message(th, "for w", ["w"])

    world = World(body, ["b"], ["a>b"])
    world.graph.add_agent("w", Waiter())
    world.graph.connect("a", "w")
    await world.run()
    assert got == [["for w"]]


async def test_remove_participant_rules() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b", "c"])
        with pytest.raises(NotAParticipantError) as info:
            await ctx.remove_participant(th, "d")
        assert info.value.agent == "d"
        await ctx.remove_participant(th, "c")
        assert th.participants == ("a", "b")
        assert not th.has_participant("c")
        with pytest.raises(NotAParticipantError):
            await ctx.send_message(th, "c?", ["c"])
        await ctx.send_message(th, "b!", ["b"])

    result, world = await script(body, agents=("b", "c", "d"), edges=("a>b", "a>c", "a>d"))
    assert world.rec["c"].got == []
    assert [m.content for m in world.rec["b"].got] == ["b!"]
    removed = kinds(result, "participant_removed")
    assert [(e.agent, e.by) for e in removed] == [("c", "a")]


async def test_removing_needs_no_edge_and_the_removed_cannot_post_or_read() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "b, please remove me", ["b"])

    async def b_react(ctx: AgentContext, message: Message) -> None:
        # b has no edge to a, yet any participant may remove any participant.
        await ctx.remove_participant(message.thread_id, "a")
        await ctx.send_message(message.thread_id, "gone", [])
        th = ctx.thread(message.thread_id)
        assert th.participants == ("b",)

    world = World(body, ["b"], ["a>b"])
    world.rec["b"].react = b_react
    result = await world.run()
    assert world.rec["b"].error is None
    assert result.threads["t-2"].participants == ("b",)


async def test_remove_oneself() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.remove_participant(th, "a")
        with pytest.raises(NotAParticipantError):
            await ctx.send_message(th, "still here?")
        with pytest.raises(NotAParticipantError):
            ctx.thread(th.id)
        assert th.id not in [t.id for t in ctx.threads()]

    await script(body)


async def test_deliveries_queued_before_removal_are_still_delivered() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "queued", ["b"])
        await ctx.remove_participant(th, "b")

    result, world = await script(body)
    assert [m.content for m in world.rec["b"].got] == ["queued"]
    assert result.stop_reason == "idle"


async def test_readded_participant_gets_only_new_mentions() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.remove_participant(th, "b")
        await ctx.add_participant(th, "b")
        await ctx.send_message(th, "back", ["b"])
        assert th.participants == ("a", "b")

    _, world = await script(body)
    assert [m.content for m in world.rec["b"].got] == ["back"]


# -- close_thread ---------------------------------------------------------------------------


async def test_any_participant_may_close_and_messages_are_kept() -> None:
    async def body(ctx: AgentContext) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "close it when done", ["b"])

    async def b_react(ctx: AgentContext, message: Message) -> None:
        await ctx.send_message(message.thread_id, "done")
        await ctx.close_thread(message.thread_id, summary="all done")
        with pytest.raises(ThreadClosedError):
            await ctx.send_message(message.thread_id, "one more")
        with pytest.raises(ThreadClosedError):
            await ctx.close_thread(message.thread_id, "again")
        with pytest.raises(ThreadClosedError):
            await ctx.remove_participant(message.thread_id, "a")
        # Reading a closed thread is fine.
        th = ctx.thread(message.thread_id)
        assert th.state == "closed"
        assert [m.content for m in th.messages] == ["close it when done", "done"]

    world = World(body, ["b"], ["a>b"])
    world.rec["b"].react = b_react
    result = await world.run()
    assert world.rec["b"].error is None
    th = result.threads["t-2"]
    assert th.closed
    assert th.summary == "all done"
    assert len(th.messages) == 2
    closed = kinds(result, "thread_closed")
    assert [(e.thread_id, e.by, e.summary) for e in closed] == [("t-2", "b", "all done")]


async def test_threads_can_filter_closed_ones() -> None:
    async def body(ctx: AgentContext) -> Any:
        one = await ctx.create_thread("one", ["b"])
        await ctx.create_thread("two", ["b"])
        await ctx.close_thread(one)
        return (
            [t.name for t in ctx.threads()],
            [t.name for t in ctx.threads(include_closed=False)],
        )

    _, world = await script(body)
    assert world.script.value == (["task", "one", "two"], ["task", "two"])


# -- operations after the run --------------------------------------------------------------


async def test_operations_after_the_run_raise_runtime_closed() -> None:
    kept: list[AgentContext] = []

    async def body(ctx: AgentContext) -> None:
        kept.append(ctx)

    await script(body)
    ctx = kept[0]
    with pytest.raises(RuntimeClosedError):
        await ctx.send_message("t-1", "late")
    with pytest.raises(RuntimeClosedError):
        await ctx.create_thread("late", ["b"])
    with pytest.raises(RuntimeClosedError):
        await ctx.close_thread("t-1")
    with pytest.raises(RuntimeClosedError):
        await ctx.wait_for_mentions(0)


# -- wait_for_mentions ------------------------------------------------------------------------


class Loop:
    """A loop-style agent running ``body``."""

    def __init__(self, body: Callable[[AgentContext], Awaitable[None]]) -> None:
        self.body = body
        self.error: BaseException | None = None

    async def run(self, ctx: AgentContext) -> None:
        try:
            await self.body(ctx)
        except Exception as exc:
            self.error = exc


async def run_graph(g: AgentGraph, entry: list[str], **kwargs: Any) -> cg.RunResult:
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            return await rt.run("the task", entry=entry, **kwargs)


async def test_wait_returns_all_unread_mentions_across_threads_oldest_first() -> None:
    batches: list[list[tuple[str, str]]] = []

    async def loop(ctx: AgentContext) -> None:
        while True:
            msgs = await ctx.wait_for_mentions()
            batches.append([(m.thread_id, m.content) for m in msgs])
            if any(m.content == "last" for m in msgs):
                return

    async def a(ctx: AgentContext, message: Message) -> None:
        t1 = await ctx.create_thread("one", ["w"])
        t2 = await ctx.create_thread("two", ["w"])
        await ctx.send_message(t1, "1", ["w"])
        await ctx.send_message(t2, "2", ["w"])
        await ctx.send_message(t1, "no mention")
        await ctx.send_message(t1, "last", ["w"])

    g = AgentGraph()
    loop_agent = Loop(loop)
    g.add_agent("a", a)
    g.add_agent("w", loop_agent)
    g.connect("a", "w")
    result = await run_graph(g, ["a"])
    assert loop_agent.error is None
    assert batches == [[("t-2", "1"), ("t-3", "2"), ("t-2", "last")]]
    assert result.stop_reason == "idle"
    via_wait = [e for e in kinds(result, "delivery_handled") if e.via == "wait"]
    assert [e.message_id for e in via_wait] == ["t-2#1", "t-3#1", "t-2#3"]
    assert result.usage["w"].deliveries == 3


async def test_wait_blocks_until_a_mention_arrives() -> None:
    order: list[str] = []
    release = anyio.Event()

    async def loop(ctx: AgentContext) -> None:
        order.append("waiting")
        release.set()
        msgs = await ctx.wait_for_mentions(timeout=30)
        order.append(f"got {msgs[0].content}")

    async def a(ctx: AgentContext, message: Message) -> None:
        await release.wait()
        order.append("sending")
        th = await ctx.create_thread("x", ["w"])
        await ctx.send_message(th, "ping", ["w"])

    g = AgentGraph()
    loop_agent = Loop(loop)
    g.add_agent("a", a)
    g.add_agent("w", loop_agent)
    g.connect("a", "w")
    result = await run_graph(g, ["a"])
    assert loop_agent.error is None
    assert order == ["waiting", "sending", "got ping"]
    assert result.stop_reason == "idle"


async def test_wait_timeout_returns_empty_while_another_agent_is_busy() -> None:
    results: list[list[Message]] = []
    unblock = anyio.Event()

    async def loop(ctx: AgentContext) -> None:
        results.append(await ctx.wait_for_mentions(timeout=0.05))
        results.append(await ctx.wait_for_mentions(timeout=0))
        results.append(await ctx.wait_for_mentions(timeout=-1))
        unblock.set()

    async def a(ctx: AgentContext, message: Message) -> None:
        await unblock.wait()  # a stays busy: the run cannot be idle

    g = AgentGraph()
    loop_agent = Loop(loop)
    g.add_agent("a", a)
    g.add_agent("w", loop_agent)
    result = await run_graph(g, ["a"])
    assert loop_agent.error is None
    assert results == [[], [], []]
    assert result.stop_reason == "idle"


async def test_waiting_agents_with_nothing_queued_end_the_run_as_idle() -> None:
    # The timeout is long; the run must still end at once (quiescence, not a timer).
    got: list[tuple[str, str]] = []

    async def loop(ctx: AgentContext) -> None:
        while True:
            for m in await ctx.wait_for_mentions(timeout=3600):
                got.append((ctx.name, m.content))
                if ctx.name == "w1":
                    th = await ctx.create_thread("x", ["w2"])
                    await ctx.send_message(th, "pass", ["w2"])

    g = AgentGraph()
    w1, w2 = Loop(loop), Loop(loop)
    g.add_agent("w1", w1)
    g.add_agent("w2", w2)
    g.connect("w1", "w2", mutual=True)
    with anyio.fail_after(5):
        async with cg.open_runtime(g) as rt:
            result = await rt.run("the task", entry=["w1"])
    assert (w1.error, w2.error) == (None, None)
    assert got == [("w1", "the task"), ("w2", "pass")]
    assert result.stop_reason == "idle"


async def test_loop_agents_talk_and_the_run_goes_idle() -> None:
    log: list[tuple[str, str]] = []

    async def loop(ctx: AgentContext) -> None:
        while True:
            for m in await ctx.wait_for_mentions(timeout=3600):
                log.append((ctx.name, m.content))
                n = int(m.content) if m.content.isdigit() else 0
                if ctx.name == "w1" and m.sender == "user":
                    th = await ctx.create_thread("x", ["w2"])
                    await ctx.send_message(th, "1", ["w2"])
                elif n and n < 6:
                    other = "w2" if ctx.name == "w1" else "w1"
                    await ctx.send_message(m.thread_id, str(n + 1), [other])

    g = AgentGraph()
    g.add_agent("w1", Loop(loop))
    g.add_agent("w2", Loop(loop))
    g.connect("w1", "w2", mutual=True)
    result = await run_graph(g, ["w1"])
    assert log == [
        ("w1", "the task"),
        ("w2", "1"),
        ("w1", "2"),
        ("w2", "3"),
        ("w1", "4"),
        ("w2", "5"),
        ("w1", "6"),
    ]
    assert result.stop_reason == "idle"
    assert result.usage["w1"].turns == 4  # one per non-empty wait


async def test_concurrent_waits_of_one_agent_are_an_error() -> None:
    errors: list[BaseException] = []

    async def loop_inner(ctx: AgentContext) -> None:
        async def second() -> None:
            try:
                await ctx.wait_for_mentions(timeout=3600)
            except ConcurrentWaitError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ctx.wait_for_mentions, 3600)
            await anyio.wait_all_tasks_blocked()
            await second()
            tg.cancel_scope.cancel()

    async def a(ctx: AgentContext, message: Message) -> None:
        await done.wait()  # keeps the run busy while w tries its two waits

    async def loop(ctx: AgentContext) -> None:
        await loop_inner(ctx)
        done.set()

    done = anyio.Event()
    g = AgentGraph()
    loop_agent = Loop(loop)
    g.add_agent("a", a)
    g.add_agent("w", loop_agent)
    await run_graph(g, ["a"])
    assert loop_agent.error is None
    assert len(errors) == 1
    assert errors[0].agent == "w"  # type: ignore[attr-defined]


async def test_the_users_context_cannot_wait() -> None:
    g = AgentGraph()
    gate = anyio.Event()

    async def a(ctx: AgentContext, message: Message) -> None:
        await gate.wait()

    g.add_agent("a", a)
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            handle = rt.start("t", entry=["a"])
            await handle.started()
            with pytest.raises(RuntimeClosedError):
                await handle.user.wait_for_mentions(0)
            gate.set()
            result = await handle.wait()
    assert result.stop_reason == "idle"


async def test_handler_agent_may_wait_inside_its_turn() -> None:
    got: list[str] = []

    async def a(ctx: AgentContext, message: Message) -> None:
        th = await ctx.create_thread("x", ["b"])
        await ctx.send_message(th, "ping", ["b"])
        got.extend(m.content for m in await ctx.wait_for_mentions(timeout=3600))

    async def b(ctx: AgentContext, message: Message) -> None:
        await ctx.send_message(message.thread_id, "pong", ["a"])

    g = AgentGraph()
    g.add_agent("a", a)
    g.add_agent("b", b)
    g.connect("a", "b", mutual=True)
    result = await run_graph(g, ["a"])
    assert got == ["pong"]
    assert result.stop_reason == "idle"
    assert result.usage["a"].deliveries == 2


# -- the user's context ---------------------------------------------------------------------


async def test_user_context_posts_to_entry_agents_only() -> None:
    gate = anyio.Event()
    seen: list[str] = []

    async def a(ctx: AgentContext, message: Message) -> None:
        seen.append(message.content)
        if message.content == "more":
            gate.set()

    async def keeper(ctx: AgentContext, message: Message) -> None:
        await gate.wait()  # keeps the run going until a got "more"

    g = AgentGraph()
    g.add_agent("a", a)
    g.add_agent("b", a)
    g.add_agent("k", keeper)
    g.connect("a", "b")
    with anyio.fail_after(10):
        async with cg.open_runtime(g) as rt:
            handle = rt.start("first", entry=["a", "k"])
            await handle.started()
            user = handle.user
            assert user.name == "user"
            assert [i.name for i in await user.list_agents()] == ["a", "k"]
            with pytest.raises(EdgeNotAllowedError):
                await user.create_thread("x", ["b"])
            await user.send_message("t-1", "more", ["a"])
            result = await handle.wait()
    assert seen == ["first", "more"]
    assert result.stop_reason == "idle"


async def test_a_lone_handler_waiting_with_nothing_to_come_ends_the_run_as_idle() -> None:
    # Nobody else can ever mention a: its long wait must not keep the run alive.
    cancelled = False

    async def a(ctx: AgentContext, message: Message) -> None:
        nonlocal cancelled
        try:
            await ctx.wait_for_mentions(timeout=3600)
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise

    g = AgentGraph()
    g.add_agent("a", a)
    with anyio.fail_after(5):
        result = await run_graph(g, ["a"])
    assert result.stop_reason == "idle"
    assert cancelled


# -- the operations' arguments: one source for schemas and validation ------------


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("send_message", {"content": "", "mentions": []}, "content"),
        ("send_message", {"content": "x", "mentions": ["BAD NAME", "BAD NAME"]}, "mentions.0"),
        ("send_message", {"content": "x", "mentions": ["b", "b"]}, "listed twice"),
        ("create_thread", {"name": "x" * 201, "participants": []}, "at most 200"),
        ("create_thread", {"name": "", "participants": []}, "'name'"),
        ("wait_for_mentions", {"timeout_s": 9999}, "timeout_s"),
        ("wait_for_mentions", {"timeout_s": -1}, "timeout_s"),
        ("add_participant", {"thread_id": "t-1"}, "missing required argument(s) name"),
        ("close_thread", {"thread_id": "t-1", "summary": "s", "x": 1}, "unknown argument(s) x"),
    ],
)
def test_every_rule_the_tool_schema_states_is_enforced(
    tool: str, args: dict[str, Any], field: str
) -> None:
    import json

    from coral_graph._ops import ToolArgumentError, parse_call

    with pytest.raises(ToolArgumentError, match=re.escape(field)):
        parse_call(tool, json.dumps(args))


def test_tool_schemas_are_generated_from_the_operation_models() -> None:
    from coral_graph._ops import OPERATIONS
    from coral_graph.llm import TOOL_SCHEMAS

    assert [t["function"]["name"] for t in TOOL_SCHEMAS] == list(OPERATIONS)
    for tool in TOOL_SCHEMAS:
        params = tool["function"]["parameters"]
        model = OPERATIONS[tool["function"]["name"]]
        assert set(params["properties"]) == set(model.model_fields)
        assert params["additionalProperties"] is False
    send = TOOL_SCHEMAS[5]["function"]["parameters"]["properties"]
    assert send["content"]["minLength"] == 1
    assert send["mentions"]["uniqueItems"] is True
    assert send["mentions"]["items"]["pattern"] == cg._types.NAME_PATTERN.pattern  # type: ignore[attr-defined]


async def test_a_thread_name_over_the_limit_is_an_error_not_cut() -> None:
    async def body(ctx: AgentContext) -> Any:
        try:
            await ctx.create_thread("x" * 201, ["b"])
        except cg.InvalidArgumentError as exc:
            return exc.field
        return "created"

    w = World(body, ["b"], ["a<>b"])
    await w.run()
    assert w.script.value == "name"
