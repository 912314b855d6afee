"""Benchmark scenario (c): five Python hooks on every request, each doing a
little real work."""

import rproxy

_route = rproxy.Route(upstream="origin")


def rproxy_request_filter(request, ctx):
    ctx["bench"] = request.path


def rproxy_route(request):
    return _route


def rproxy_upstream_request(request):
    request.headers.set("X-Bench-In", "1")


def rproxy_response(response):
    response.headers.set("X-Bench", "1")


def rproxy_log(response, ctx):
    ctx["status"] = response.status
