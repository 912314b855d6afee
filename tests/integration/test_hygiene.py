"""Header hygiene between hops (RFC 9110 §7.6) through the real engine."""

from __future__ import annotations

from rproxy.engine import Engine
from rproxy.testing.origin import Origin, Received, Reply

from conftest import StartProxy, proxy_config
from support.client import request


def test_request_hop_by_hop_fields_are_removed(proxy: Engine, origin: Origin) -> None:
    resp = request(
        proxy.addresses[0],
        "GET",
        "/",
        [
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers, gzip"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("Upgrade", "websocket"),
            ("X-End-To-End", "kept"),
        ],
    )
    assert resp.status == 200
    (seen,) = origin.requests
    names = {k.lower() for k, _ in seen.headers}
    for gone in ("connection", "x-hop", "keep-alive", "proxy-connection", "proxy-authorization", "upgrade"):
        assert gone not in names, gone
    assert seen.header("te") == "trailers"
    assert seen.header("x-end-to-end") == "kept"


def test_forwarding_fields_are_added(proxy: Engine, origin: Origin) -> None:
    request(
        proxy.addresses[0],
        "GET",
        "/",
        [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "spoofed.example"),
            ("Via", "1.1 edge-cache"),
        ],
        host="shop.example:8443",
    )
    (seen,) = origin.requests
    assert seen.header("host") == "shop.example:8443", "Host is preserved"
    assert seen.header("x-forwarded-for") == "203.0.113.9, 127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "shop.example:8443"
    assert seen.header_all("via") == ["1.1 edge-cache", "1.1 rproxy"]


def test_response_hop_by_hop_fields_are_removed(origin: Origin, start_proxy: StartProxy) -> None:
    def handler(req: Received) -> Reply:
        return Reply(
            200,
            [
                ("Connection", "X-Internal"),
                ("X-Internal", "node-7"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Authenticate", "Basic"),
                ("Upgrade", "h2c"),
                ("Content-Type", "text/plain"),
            ],
            b"body",
        )

    origin.handler = handler
    engine = start_proxy(proxy_config(origin.addr))
    resp = request(engine.addresses[0], "GET", "/")
    names = {k.lower() for k, _ in resp.headers}
    for gone in ("x-internal", "keep-alive", "proxy-authenticate", "upgrade"):
        assert gone not in names, gone
    assert resp.header("connection") is None
    assert resp.header("content-type") == "text/plain"
    assert resp.header("via") == "1.1 rproxy"
    assert resp.body == b"body"
