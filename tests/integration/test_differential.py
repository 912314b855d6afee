"""The engine's native built-ins and their Python references decide alike.

One corpus of requests (tests/support/corpus.py) goes through an engine
running the native forms and through one running the references
(``native=False``, what ``rproxy run --no-native`` does); every status,
response header, body — and so every pool, path and header the origins
received, which they echo — must be the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rproxy import Route
from rproxy.testing.origin import Origin

from support import corpus
from support.client import Reader, build, connect, request


@pytest.fixture
def origins() -> Iterator[dict[str, str]]:
    servers = {name: Origin(corpus.echo(name)) for name in (*corpus.POOLS, *corpus.lb_servers())}
    servers[corpus.AUTH_POOL] = Origin(corpus.auth_service)
    yield {name: o.addr for name, o in servers.items()}
    for o in servers.values():
        o.close()


def _outcomes(addr: str, cases: list[corpus.Case]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    sock = None
    reader = None
    for case in cases:
        if sock is None:
            sock = connect(addr)
            reader = Reader(sock)
        assert reader is not None
        body = b"x" if case.method in ("POST", "PUT") else b""
        sock.sendall(build(case.method, case.target, list(case.headers), body=body, host=case.host))
        resp = reader.response(case.method)
        headers = sorted((k.lower(), v) for k, v in resp.headers if k.lower() != "date")
        out.append((case, resp.status, headers, resp.body))
        if (resp.header("connection") or "").lower() == "close":
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return out


def test_native_and_reference_built_ins_decide_alike(origins: dict[str, str], start_proxy, tmp_path: Path) -> None:
    cases = corpus.requests()
    native = start_proxy(corpus.config(origins, tmp_path))
    reference = start_proxy(corpus.config(origins, tmp_path), native=False)
    assert native.plan.python_steps() == 0
    assert reference.plan.python_steps() > 0
    got_native = _outcomes(native.addresses[0], cases)
    got_reference = _outcomes(reference.addresses[0], cases)
    differ = [(n, r) for n, r in zip(got_native, got_reference, strict=True) if n != r]
    assert not differ, f"{len(differ)} of {len(cases)} differ; first: {differ[0]}"
    # The corpus reaches every kind of decision.
    statuses = {o[1] for o in got_native}
    assert {200, 204, 301, 302, 400, 401, 403, 404, 405, 502, 503} <= statuses, statuses
    fields = {h[0] for o in got_native for h in o[2]}
    assert {"access-control-allow-origin", "x-frame-options", "x-trail", "x-vars"} <= fields, "headers.md at work"
    assert "www-authenticate" in fields, "auth.md at work"
    users = {h[1].split("|")[-2] for o in got_native for h in o[2] if h[0] == "x-vars"}
    assert {"", "acme", "ann", "bob", "u-1", "u-2", "u-3"} <= users, users
    assert "server" not in fields, "hidden"
    pools = {h[1] for o in got_native for h in o[2] if h[0] == "x-origin"}
    unused = {"lb-rr.3", "lb-first.1"}  # a backup; the second of "first"
    assert pools == set(corpus.POOLS) | set(corpus.lb_servers()) - unused


class _TenantRouter:
    """A plugin that routes /tenant/... itself and leaves the rest to the router."""

    @staticmethod
    def rproxy_route(request):  # type: ignore[no-untyped-def]
        if request.path.startswith("/tenant/"):
            return Route(upstream="c", path="/t" + request.path)
        return None


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
def test_a_plugin_routes_first_and_disabling_the_router_leaves_only_it(
    origins: dict[str, str], start_proxy, native: bool, tmp_path: Path
) -> None:
    config = corpus.config(origins, tmp_path)
    proxy = start_proxy(config, plugins=[("tenant", _TenantRouter)], native=native)
    tenant = request(proxy.addresses[0], "GET", "/tenant/x?y=1")
    assert (tenant.status, tenant.header("x-origin")) == (200, "c")
    assert json.loads(tenant.body)["target"] == "/t/tenant/x"
    assert request(proxy.addresses[0], "GET", "/healthz").body == b"ok\n"

    config["plugins"]["disable"] = ["router"]
    alone = start_proxy(config, plugins=[("tenant", _TenantRouter)], native=native)
    assert request(alone.addresses[0], "GET", "/tenant/x").status == 200
    assert request(alone.addresses[0], "GET", "/healthz").status == 404
