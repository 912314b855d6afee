"""Benchmark: the hook of scenario (b) as ``async def``. It runs on the
worker's asyncio loop thread, so each request crosses threads twice: this
measures what a hook thread fed by a queue would cost against running
``def`` hooks inline."""


async def rproxy_response(response):
    response.headers.set("X-Bench", "1")
