"""Agents for the NATS tests: a pinger that counts rounds with a ponger."""

from __future__ import annotations

import os


async def ping(ctx, message):
    meta = dict(message.metadata or {})
    if message.sender == "user":
        rounds = int(os.environ.get("PP_ROUNDS", "3"))
        th = await ctx.create_thread("work", ["pong"])
        meta = {"task_thread": message.thread_id, "n": 1, "rounds": rounds}
        await ctx.send_message(th.id, "ping 1", ["pong"], metadata=meta)
        return
    n = int(meta["n"])
    if n >= int(meta["rounds"]):
        await ctx.send_message(meta["task_thread"], f"done after {n} rounds", ["user"])
        return
    meta["n"] = n + 1
    await ctx.send_message(message.thread_id, f"ping {n + 1}", ["pong"], metadata=meta)


async def pong(ctx, message):
    meta = dict(message.metadata or {})
    marks = os.environ.get("PP_MARK_DIR")
    if marks:  # lets a test see that a turn has begun (to kill the worker in it)
        path = os.path.join(marks, f"pong-{meta['n']}-{os.getpid()}")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY))
    delay = float(os.environ.get("PP_PONG_DELAY", "0"))
    if delay:
        import asyncio

        await asyncio.sleep(delay)
    if os.environ.get("PP_PONG_SIDE"):  # a thread of its own each turn, then one message there
        side = await ctx.create_thread(f"side {meta['n']}", ["ping"])
        await ctx.send_message(side.id, f"aside {meta['n']}", [])
    await ctx.send_message(message.thread_id, "pong " + str(meta["n"]), ["ping"], metadata=meta)
    after = float(os.environ.get("PP_PONG_DELAY_AFTER", "0"))
    if marks and after:  # a turn that has sent its message and is not over yet
        os.close(os.open(os.path.join(marks, f"sent-{meta['n']}-{os.getpid()}"), os.O_CREAT))
        import asyncio

        await asyncio.sleep(after)


async def quiet(ctx, message):
    """Replies to nobody: the run goes idle."""
    await ctx.send_message(message.thread_id, "noted", [])


async def spam(ctx, message):
    """Posts as fast as it can until a budget stops it. With PP_RACERS set, first
    waits (up to 20 s) until that many spammers have begun their turn, so that they
    race from the same moment (a worker process slow to start would miss the race)."""
    marks, racers = os.environ.get("PP_MARK_DIR"), int(os.environ.get("PP_RACERS", "0"))
    if marks and racers:
        import asyncio

        os.close(os.open(os.path.join(marks, f"spam-{ctx.name}"), os.O_CREAT))
        for _ in range(2000):
            if len([f for f in os.listdir(marks) if f.startswith("spam-")]) >= racers:
                break
            await asyncio.sleep(0.01)
    for i in range(10_000):
        await ctx.send_message(message.thread_id, f"{ctx.name} {i}", [])


async def oversize(ctx, message):
    """Tries a message over the server's max payload; answers with what it was told."""
    try:
        await ctx.send_message(
            message.thread_id, "big", ["user"], metadata={"blob": "x" * 2_000_000}
        )
    except Exception as exc:
        await ctx.send_message(message.thread_id, f"{type(exc).__name__}: {exc}", ["user"])


async def prober(ctx, message):
    """Breaks each rule once and answers with the error types, in order."""
    seen = []

    async def attempt(op):
        try:
            await op()
            seen.append("ok")
        except Exception as exc:
            seen.append(type(exc).__name__)

    th = await ctx.create_thread("probe", ["helper"])
    await attempt(lambda: ctx.send_message(th.id, "hi", ["stranger"]))  # no edge
    await attempt(lambda: ctx.send_message(th.id, "hi", ["nobody"]))  # unknown agent
    await attempt(lambda: ctx.send_message(th.id, "hi", ["prober"]))  # itself
    await attempt(lambda: ctx.send_message("t-missing", "hi", []))  # unknown thread
    await attempt(lambda: ctx.create_thread("x", ["stranger"]))  # no edge
    await attempt(lambda: ctx.add_participant(th.id, "helper"))  # twice: nothing
    await attempt(lambda: ctx.remove_participant(th.id, "helper"))
    await attempt(lambda: ctx.send_message(th.id, "hi", ["helper"]))  # not a participant
    await attempt(lambda: ctx.close_thread(th.id, "done"))
    await attempt(lambda: ctx.send_message(th.id, "hi", []))  # closed
    await attempt(lambda: ctx.send_message(th.id, "x" * 200_000, []))  # too large
    names = sorted(a.name for a in await ctx.list_agents())
    await ctx.send_message(message.thread_id, " ".join(seen) + " | " + ",".join(names), ["user"])


async def helper(ctx, message):
    pass


async def asker(ctx, message):
    """Asks the loop agent; answers the user with its reply."""
    if message.sender == "user":
        th = await ctx.create_thread("ask", ["echoer"])
        meta = {"task_thread": message.thread_id}
        await ctx.send_message(th.id, message.content, ["echoer"], metadata=meta)
        return
    task_thread = ctx.thread(message.thread_id).messages[0].metadata["task_thread"]
    await ctx.send_message(task_thread, "got: " + message.content, ["user"])


class Echoer:
    """A loop agent: pulls its mentions and echoes each one (except 'hush') after a
    pause in which it holds no delivery (the idle scan must see it busy)."""

    async def run(self, ctx):
        import asyncio

        while True:
            for m in await ctx.wait_for_mentions(30):
                if m.content != "hush":
                    await asyncio.sleep(0.3)
                    await ctx.send_message(m.thread_id, "echo: " + m.content, [m.sender])


async def crasher(ctx, message):
    """Raises in its turn (its on_error policy decides what follows)."""
    raise RuntimeError(f"crasher broke on {message.id}")


async def sleeper(ctx, message):
    """Outlives its turn timeout."""
    import asyncio

    await asyncio.sleep(10)
    await ctx.send_message(message.thread_id, "woke up", ["user"])


async def noter(ctx, message):
    """Makes sure the reader is in the run (a question and its answer), then posts
    notes for its helper in a thread the reader is in too, without mentioning the
    reader; then asks the reader, in the task's thread, what it reads."""
    if message.sender == "user":
        await ctx.add_participant(message.thread_id, "reader")
        await ctx.send_message(message.thread_id, "ready?", ["reader"])
        return
    notes = await ctx.create_thread("notes", ["helper", "reader"])
    await ctx.send_message(notes.id, "note 1", ["helper"])
    await ctx.add_participant(notes.id, "late")
    await ctx.send_message(notes.id, "note 2", [])
    await ctx.send_message(message.thread_id, notes.id, ["reader"])


async def reader(ctx, message):
    """Reads the thread named in the message (never mentioned in it) and answers
    with what it holds, through the sync reads an LLM agent's prompt is made from."""
    if message.content == "ready?":
        await ctx.send_message(message.thread_id, "ready", ["noter"])
        return
    th = ctx.thread(message.content)
    mine = [t.name for t in ctx.threads()]
    seen = "; ".join(m.content for m in th.messages)
    answer = f"{seen} | {','.join(th.participants)} | {','.join(sorted(mine))}"
    await ctx.send_message(message.thread_id, answer, ["user"])


async def silent(ctx, message):
    """Takes a delivery and does nothing."""
