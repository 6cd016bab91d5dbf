"""Agents the broken configs refer to (loaded by path, never imported as a package)."""


class Echo:
    async def handle(self, ctx, message):
        await ctx.send_message(message.thread_id, message.content, [message.sender])


class NotAsync:
    def handle(self, ctx, message):
        return None
