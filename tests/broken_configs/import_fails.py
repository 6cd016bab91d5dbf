"""A module that fails at import, for the broken-config corpus (it names Echo, so
only importing it finds the problem)."""


class Echo:
    async def handle(self, ctx, message):
        return None


raise RuntimeError("this module is broken on purpose")
