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


_FORGED = [
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "spoofed.example"),
    ("Forwarded", "for=203.0.113.9;proto=https"),
    ("Via", "1.1 edge-cache"),
]


def _client_seen_by_hooks() -> tuple[list[str], object]:
    seen: list[str] = []

    class ClientIp:
        @staticmethod
        def rproxy_request_filter(request: object) -> None:
            seen.append(request.client)  # type: ignore[attr-defined]

    return seen, ClientIp


def test_forwarding_fields_from_an_untrusted_peer_are_replaced(origin: Origin, start_proxy: StartProxy) -> None:
    clients, plugin = _client_seen_by_hooks()
    proxy = start_proxy(proxy_config(origin.addr), plugins=[("client_ip", plugin)])
    request(proxy.addresses[0], "GET", "/", _FORGED, host="shop.example:8443")
    (seen,) = origin.requests
    assert seen.header("host") == "shop.example:8443", "Host is preserved"
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "shop.example:8443"
    assert seen.header("forwarded") == 'for=127.0.0.1;proto=http;host="shop.example:8443"'
    assert seen.header_all("via") == ["1.1 edge-cache", "1.1 rproxy"]
    assert clients == ["127.0.0.1"]


def test_forwarding_fields_from_a_trusted_proxy_are_extended(origin: Origin, start_proxy: StartProxy) -> None:
    clients, plugin = _client_seen_by_hooks()
    config = proxy_config(origin.addr, server={"trusted_proxies": ["127.0.0.0/8", "::1"]})
    proxy = start_proxy(config, plugins=[("client_ip", plugin)])
    request(proxy.addresses[0], "GET", "/", _FORGED, host="shop.example:8443")
    (seen,) = origin.requests
    assert seen.header("x-forwarded-for") == "203.0.113.9, 127.0.0.1"
    assert seen.header("x-forwarded-proto") == "https"
    assert seen.header("x-forwarded-host") == "spoofed.example"
    assert seen.header("forwarded") == (
        'for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host="shop.example:8443"'
    )
    # The client address hooks see is the one the trusted proxy reported.
    assert clients == ["203.0.113.9"]


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
