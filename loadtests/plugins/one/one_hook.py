"""Benchmark scenario (b): one trivial Python hook on every request."""


def rproxy_response(response):
    response.headers.set("X-Bench", "1")
