"""The plugin test kit: views without the engine, one hook, the whole plan."""

from __future__ import annotations

import types

import pytest

import rproxy
from rproxy.testing import Simulator, call_hook, make_request, make_response


def test_request_views() -> None:
    req = make_request(
        "POST",
        "/a/b?x=1&y=2",
        {"Content-Type": "text/plain", "X-Many": "1"},
        host="Shop.Example:8443",
        client="10.0.0.7:5555",
    )
    assert (req.method, req.path, req.query, req.host, req.client, req.client_port) == (
        "POST",
        "/a/b",
        "x=1&y=2",
        "shop.example",
        "10.0.0.7",
        5555,
    )
    assert req.version == "HTTP/1.1" and req.scheme == "http"
    h = req.headers
    h.add("x-many", "2")
    assert h.get_all("X-MANY") == ["1", "2"]
    assert h["content-type"] == "text/plain" and "CONTENT-TYPE" in h
    h["x-set"] = "v"
    h.set("x-many", "3")
    assert h.get("x-many") == "3"
    del h["x-set"]
    assert "x-set" not in h and h.get("x-set", "default") == "default"
    assert h.remove("content-type") is True and h.remove("content-type") is False
    assert list(h) == ["host", "x-many"] and len(h) == 2
    with pytest.raises(KeyError):
        h["missing"]
    with pytest.raises(ValueError, match="invalid header value"):
        h.set("x", "bad\r\nvalue")
    with pytest.raises(ValueError, match="invalid header name"):
        h.set("bad name", "v")
    with pytest.raises(RuntimeError, match="only in rproxy_upstream_request"):
        req.path = "/elsewhere"


def test_response_views() -> None:
    resp = make_response(404, [("X-A", "1")], "gone")
    assert (resp.status, resp.body, resp.headers.items()) == (404, b"gone", [("x-a", "1")])
    resp.status = 410
    assert resp.status == 410
    with pytest.raises(ValueError, match="invalid status"):
        resp.status = 99
    with pytest.raises(TypeError, match="body must be bytes or str"):
        rproxy.Response(200, None, 3)  # type: ignore[arg-type]
    copy = rproxy.Response(200, resp.headers, b"")
    assert copy.headers.items() == [("x-a", "1")]


def test_route_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError):
        rproxy.Route()
    with pytest.raises(ValueError):
        rproxy.Route(upstream="a", respond=rproxy.Response(200))
    with pytest.raises(ValueError, match="must start with '/'"):
        rproxy.Route(upstream="a", path="relative")


def test_call_hook_passes_only_what_the_hook_takes() -> None:
    plugin = types.SimpleNamespace(rproxy_response=lambda response, ctx: ctx.setdefault("seen", response.status))
    ctx: dict[str, int] = {}
    call_hook(plugin, "rproxy_response", request=make_request(), response=make_response(201), ctx=ctx)
    assert ctx == {"seen": 201}


def test_simulator_runs_every_phase_in_order() -> None:
    calls: list[str] = []

    def hook(name: str, result: object = None) -> object:
        def impl(request: rproxy.Request, ctx: dict[str, object]) -> object:
            calls.append(name)
            return result

        return impl

    plugin = types.SimpleNamespace(
        rproxy_request_filter=hook("filter"),
        rproxy_cache_key=hook("cache_key", "k"),
        rproxy_route=hook("route"),
        rproxy_access=lambda request: calls.append(f"access {request.route_name}"),
        rproxy_select_upstream=lambda candidates: calls.append("select") or candidates[-1],
        rproxy_upstream_request=lambda request, upstream: calls.append(f"upstream_request {upstream} {request.path}"),
        rproxy_upstream_response=lambda response: calls.append(f"upstream_response {response.status}"),
        rproxy_response=lambda response: calls.append("response"),
        rproxy_log=lambda error, timings: calls.append(f"log {error}"),
    )
    config = rproxy.testing.proxy_config(["10.0.0.1:80", "10.0.0.2:80"])
    sim = Simulator(config, plugins=[("p", plugin)])
    result = sim.request("GET", "/x?y=1", upstream=rproxy.Response(202, body="up"))
    assert calls == [
        "filter",
        "cache_key",
        "route",
        "access routes[0]",
        "select",
        "upstream_request 10.0.0.2:80 /x",
        "upstream_response 202",
        "response",
        "log None",
    ]
    assert (result.response.status, result.upstream, result.cache_key) == (202, "10.0.0.2:80", "k")
    assert result.route == rproxy.Route(upstream="app", name="routes[0]")
    assert result.upstream_request is not None
    assert result.upstream_request.headers["x-forwarded-for"] == "127.0.0.1"


def test_simulator_error_paths() -> None:
    config = rproxy.testing.proxy_config(routes=[{"path_prefix": "/only", "upstream": "app"}])
    result = Simulator(config).request("GET", "/elsewhere")
    assert result.response.status == 404 and result.error is not None and result.error.kind == "NoRoute"
    custom = types.SimpleNamespace(rproxy_error=lambda error: rproxy.Response(error.status, body="custom"))
    result = Simulator(config, plugins=[("e", custom)]).request("GET", "/elsewhere")
    assert result.response.body == b"custom"
