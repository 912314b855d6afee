"""The example plugins of plugins/, loaded from the folder by the real engine."""

from __future__ import annotations

from pathlib import Path

from rproxy.testing import proxy_config
from rproxy.testing.origin import Origin
from rproxy.testing.pytest_plugin import StartEngine

from support.client import request

PLUGINS = str(Path(__file__).resolve().parents[2] / "plugins")


def test_examples_through_the_engine(rproxy_engine: StartEngine) -> None:
    with Origin() as app, Origin() as acme, Origin() as canary:
        config = proxy_config(
            app.addr,
            pools={"acme_pool": {"servers": [acme.addr]}, "canary_pool": {"servers": [canary.addr]}},
            plugins={
                "dirs": [PLUGINS],
                "api_key": {"keys": ["secret"], "paths": ["/api/"]},
                "header_route": {"header": "X-Tenant", "pools": {"acme": "acme_pool"}},
                "canary": {"pool": "canary_pool", "percent": 50},
            },
        )
        engine = rproxy_engine(config)
        addr = engine.addresses[0]

        hello = request(addr, "GET", "/hello")
        assert (hello.status, hello.body, hello.header("x-hello")) == (200, b"hello from a plugin\n", "plugin")
        assert len(hello.header("x-request-id") or "") == 32

        assert request(addr, "GET", "/api/x").status == 401
        ok = request(addr, "GET", "/api/x", [("X-Api-Key", "secret")])
        assert ok.status == 200
        seen = app.requests[-1] if app.requests else canary.requests[-1]
        assert seen.header("x-api-key") is None
        assert seen.header("x-request-id") == ok.header("x-request-id")

        request(addr, "GET", "/t", [("X-Tenant", "acme")])
        assert [r.target for r in acme.requests] == ["/t"]

        for i in range(40):
            request(addr, "GET", f"/c{i}", [("Cookie", f"session=u{i}")])
        canary_share = sum(r.target.startswith("/c") for r in canary.requests)
        assert 8 < canary_share < 32
        assert canary_share + sum(r.target.startswith("/c") for r in app.requests) == 40
