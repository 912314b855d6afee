"""The header policy (docs/headers.md) through the real engine, natively and
with the Python reference (``native=False``): rules, variables, hidden
fields, the security preset, CORS, and where plugins run around it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rproxy.engine import Engine
from rproxy.testing.origin import Origin, Received, Reply

from conftest import StartProxy
from support.client import request

NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])


def origin_reply(req: Received) -> Reply:
    return Reply(
        200,
        [
            ("Content-Type", "text/plain"),
            ("Server", "Apache/2.4.1 (Unix)"),
            ("X-Powered-By", "PHP/8.1"),
            ("X-AspNet-Version", "4.0"),
            ("X-Frame-Options", "SAMEORIGIN"),
            ("X-Origin-Tag", "t"),
        ],
        b"hello\n",
    )


def config(addr: str, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "workers": 1, "shutdown_timeout": "2s"},
        "upstreams": {
            "app": {
                "servers": [addr],
                "request_headers": {"set": {"x-pool": "$upstream"}},
                "response_headers": {"add": {"x-pool-seen": "$upstream_addr"}},
            },
            "other": {"servers": [addr]},
        },
        "routes": [
            {"path": "/healthz", "respond": {"body": "ok\n"}},
            {
                "name": "api",
                "path_prefix": "/api/",
                "upstream": "app",
                "strip_prefix": True,
                "request_headers": {"set": {"x-route": "$route", "x-pool": "route-wins"}},
                "response_headers": {"remove": ["x-origin-tag"], "set": {"x-route": "$route"}},
            },
            {"name": "open", "path_prefix": "/open/", "upstream": "other", "cors": False},
            {"path_prefix": "/", "upstream": "app"},
        ],
        "plugins": {"dirs": []},
        **extra,
    }


RULES = {
    "request": {
        "remove": ["x-debug"],
        "set": {
            "x-real-ip": "$client_ip",
            "x-request-id": "$request_id",
            "x-seen": "$method $scheme://$host$request_uri path=$path query=$query peer=$remote_addr",
        },
        "add": {"x-via": "rproxy"},
    },
    "response": {"set": {"x-served-by": "rproxy"}, "add": {"x-request-id": "$request_id"}},
}


@NATIVE
def test_request_rules_apply_global_then_pool_then_route(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin
) -> None:
    proxy = start_proxy(config(rproxy_origin.addr, headers=RULES), native=native)
    addr = proxy.addresses[0]
    resp = request(
        addr, "GET", "/api/x/../items?q=1", [("X-Debug", "1"), ("X-Via", "client")], host="Shop.Example:8080"
    )
    assert resp.status == 200
    (seen,) = rproxy_origin.requests
    assert seen.target == "/items?q=1"
    assert seen.header("x-debug") is None
    assert seen.header("x-real-ip") == "127.0.0.1"
    assert seen.header_all("x-via") == ["client", "rproxy"]
    assert seen.header("x-pool") == "route-wins"  # the route's rule comes last
    assert seen.header("x-route") == "api"
    assert seen.header("x-seen") == (
        "GET http://shop.example/api/x/../items?q=1 path=/api/items query=q=1 peer=127.0.0.1"
    )
    request_id = seen.header("x-request-id")
    assert request_id is not None and re.fullmatch(r"[0-9a-f]{32}", request_id)
    # The response's $request_id is the same request's.
    assert resp.header("x-request-id") == request_id
    assert resp.header("x-served-by") == "rproxy"
    assert resp.header("x-route") == "api"
    assert resp.header("x-origin-tag") is None
    assert resp.header("x-pool-seen") == rproxy_origin.addr

    request(addr, "GET", "/other")
    assert rproxy_origin.requests[1].header("x-pool") == "app"  # pool rule, no route rule
    assert rproxy_origin.requests[1].header("x-route") is None
    second = rproxy_origin.requests[1].header("x-request-id")
    assert second is not None and second != request_id


@NATIVE
def test_origin_fields_are_hidden_by_default(native: bool, start_proxy: StartProxy) -> None:
    with Origin(origin_reply) as origin:
        proxy = start_proxy(config(origin.addr), native=native)
        resp = request(proxy.addresses[0], "GET", "/")
        assert resp.status == 200 and resp.body == b"hello\n"
        for hidden in ("server", "x-powered-by", "x-aspnet-version"):
            assert resp.header(hidden) is None, hidden
        assert resp.header("x-frame-options") == "SAMEORIGIN"

        kept = start_proxy(config(origin.addr, headers={"hide": []}), native=native)
        resp = request(kept.addresses[0], "GET", "/")
        assert resp.header("server") == "Apache/2.4.1 (Unix)"
        assert resp.header("x-powered-by") == "PHP/8.1"


@NATIVE
def test_rules_apply_to_the_proxys_own_responses(native: bool, start_proxy: StartProxy, rproxy_origin: Origin) -> None:
    cfg = config(rproxy_origin.addr, headers=RULES)
    cfg["routes"] = cfg["routes"][:3]  # no catch-all: /nowhere is a 404
    proxy = start_proxy(cfg, native=native)
    addr = proxy.addresses[0]
    resp = request(addr, "GET", "/healthz")
    assert (resp.status, resp.body) == (200, b"ok\n")
    assert resp.header("x-served-by") == "rproxy"
    resp = request(addr, "GET", "/nowhere")
    assert resp.status == 404 and resp.header("x-served-by") == "rproxy"
    assert resp.header("x-pool-seen") is None
    assert not rproxy_origin.requests


@NATIVE
def test_security_preset_fills_in_missing_fields(native: bool, start_proxy: StartProxy) -> None:
    with Origin(origin_reply) as origin:
        proxy = start_proxy(config(origin.addr, headers={"security": True}), native=native)
        resp = request(proxy.addresses[0], "GET", "/")
        assert resp.header("x-content-type-options") == "nosniff"
        assert resp.header("referrer-policy") == "strict-origin-when-cross-origin"
        assert resp.header("x-frame-options") == "SAMEORIGIN", "the origin's own policy wins"
        assert resp.header("content-security-policy") is None, "no frame-ancestors contradicting it"
        assert resp.header("strict-transport-security") is None, "never over plain HTTP (RFC 6797 §7.2)"

        resp = request(proxy.addresses[0], "GET", "/healthz")
        assert resp.header("x-frame-options") == "DENY"
        assert resp.header("content-security-policy") == "frame-ancestors 'none'"

        custom = {"security": {"csp": "default-src 'self'", "referrer_policy": "", "frame_options": "SAMEORIGIN"}}
        proxy = start_proxy(config(origin.addr, headers=custom), native=native)
        resp = request(proxy.addresses[0], "GET", "/healthz")
        assert resp.header("content-security-policy") == "default-src 'self'"
        assert resp.header("referrer-policy") is None
        assert resp.header("x-frame-options") == "SAMEORIGIN"


CORS = {
    "origins": ["https://app.example", "https://admin.example"],
    "methods": ["GET", "POST", "DELETE"],
    "headers": ["content-type", "authorization"],
    "expose": ["x-request-id"],
    "credentials": True,
    "max_age": "10m",
}


def preflight(addr: str, target: str, origin: str, method: str = "DELETE", asked: str | None = None) -> Any:
    headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if asked is not None:
        headers.append(("Access-Control-Request-Headers", asked))
    return request(addr, "OPTIONS", target, headers)


@NATIVE
def test_cors_preflights_are_answered_by_the_proxy(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin
) -> None:
    proxy = start_proxy(config(rproxy_origin.addr, cors=CORS), native=native)
    addr = proxy.addresses[0]
    resp = preflight(addr, "/api/items", "https://app.example", asked="content-type")
    assert resp.status == 204 and resp.body == b""
    assert resp.header("access-control-allow-origin") == "https://app.example"
    assert resp.header("access-control-allow-credentials") == "true"
    assert resp.header("access-control-allow-methods") == "GET, POST, DELETE"
    assert resp.header("access-control-allow-headers") == "content-type, authorization"
    assert resp.header("access-control-max-age") == "600"
    assert resp.header("vary") == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert resp.header("access-control-expose-headers") is None

    resp = preflight(addr, "/api/items", "https://evil.example")
    assert resp.status == 403 and resp.body == b"CORS origin not allowed\n"
    assert resp.header("access-control-allow-origin") is None
    assert not rproxy_origin.requests, "preflights never reach an upstream"

    # A route with cors = false forwards the OPTIONS request.
    resp = preflight(addr, "/open/x", "https://app.example")
    assert resp.status == 200 and len(rproxy_origin.requests) == 1
    assert resp.header("access-control-allow-origin") is None


@NATIVE
def test_cors_fields_on_actual_responses(native: bool, start_proxy: StartProxy, rproxy_origin: Origin) -> None:
    proxy = start_proxy(config(rproxy_origin.addr, cors={**CORS, "credentials": False}), native=native)
    addr = proxy.addresses[0]
    resp = request(addr, "GET", "/x", [("Origin", "https://admin.example")])
    assert resp.header("access-control-allow-origin") == "https://admin.example"
    assert resp.header("access-control-expose-headers") == "x-request-id"
    assert resp.header("access-control-allow-credentials") is None
    assert resp.header_all("vary") == ["Origin"]
    resp = request(addr, "GET", "/x", [("Origin", "https://evil.example")])
    assert resp.header("access-control-allow-origin") is None
    resp = request(addr, "GET", "/x")
    assert resp.header("access-control-allow-origin") is None
    assert resp.header_all("vary") == ["Origin"], "a cache must not serve this to an allowed origin"

    anyone = start_proxy(config(rproxy_origin.addr, cors={"origins": ["*"], "headers": ["*"]}), native=native)
    resp = request(anyone.addresses[0], "GET", "/x", [("Origin", "https://whoever.example")])
    assert resp.header("access-control-allow-origin") == "*"
    assert resp.header("vary") is None
    resp = preflight(anyone.addresses[0], "/x", "https://whoever.example", asked="x-a, x-b")
    assert resp.status == 204
    assert resp.header("access-control-allow-headers") == "x-a, x-b"
    assert resp.header("access-control-allow-methods") == "GET, HEAD, POST"


class Observer:
    """Sees the response head before (tryfirst) and after the built-in."""

    def __init__(self) -> None:
        self.before: list[str | None] = []
        self.after: list[str | None] = []

        class Early:
            @staticmethod
            def rproxy_response(response: Any) -> None:
                self.before.append(response.headers.get("x-served-by"))

        Early.rproxy_response.tryfirst = True  # type: ignore[attr-defined]
        self.early = Early

        class Late:
            @staticmethod
            def rproxy_response(response: Any) -> None:
                self.after.append(response.headers.get("x-served-by"))
                response.headers.set("x-served-by", "plugin")

        self.late = Late


@NATIVE
def test_plugins_run_around_the_built_in_in_pluggy_order(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin
) -> None:
    from rproxy import hookimpl

    seen: dict[str, list[str | None]] = {"early": [], "late": []}

    class Early:
        @staticmethod
        @hookimpl(tryfirst=True)
        def rproxy_response(response: Any) -> None:
            seen["early"].append(response.headers.get("x-served-by"))

    class Late:
        @staticmethod
        @hookimpl
        def rproxy_response(response: Any) -> None:
            seen["late"].append(response.headers.get("x-served-by"))
            response.headers.set("x-served-by", "plugin")

    proxy: Engine = start_proxy(
        config(rproxy_origin.addr, headers=RULES), plugins=[("early", Early), ("late", Late)], native=native
    )
    resp = request(proxy.addresses[0], "GET", "/")
    assert seen == {"early": [None], "late": ["rproxy"]}
    assert resp.header("x-served-by") == "plugin"


@NATIVE
def test_disabling_the_built_in_turns_the_policy_off(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin
) -> None:
    cfg = config(rproxy_origin.addr, headers=RULES, cors=CORS)
    cfg["plugins"]["disable"] = ["headers"]
    proxy = start_proxy(cfg, native=native)
    resp = request(proxy.addresses[0], "GET", "/", [("X-Debug", "1")])
    assert resp.header("x-served-by") is None
    assert rproxy_origin.requests[0].header("x-debug") == "1"
    resp = preflight(proxy.addresses[0], "/", "https://app.example")
    assert resp.status == 200, "no CORS: the OPTIONS request went upstream"
