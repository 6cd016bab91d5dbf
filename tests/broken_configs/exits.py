"""A module that ends the process at import, for the broken-config corpus."""


class Echo:
    async def handle(self, ctx, message):
        return None


raise SystemExit(0)
