"""Hooks through the real engine: every phase, async hooks, failure
isolation, view lifetimes and statistics."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from typing import Any

import pytest

import rproxy
from rproxy import _engine
from rproxy.testing import proxy_config
from rproxy.testing.origin import Origin, Reply

from conftest import StartProxy
from support.client import Reader, build, connect, request


def plugin(name: str, **hooks: Any) -> tuple[str, types.SimpleNamespace]:
    return name, types.SimpleNamespace(**hooks)


def test_request_filter_answers_before_any_upstream(origin: Origin, rproxy_engine: StartProxy) -> None:
    def rproxy_request_filter(request: rproxy.Request) -> rproxy.Response | None:
        if request.headers.get("x-block") == "yes":
            return rproxy.Response(403, {"X-Blocked-By": "filter"}, "blocked\n")
        return None

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("f", rproxy_request_filter=rproxy_request_filter)])
    resp = request(engine.addresses[0], "GET", "/x", [("X-Block", "yes")])
    assert (resp.status, resp.header("x-blocked-by"), resp.body) == (403, "filter", b"blocked\n")
    assert origin.connections == 0
    assert request(engine.addresses[0], "GET", "/y").status == 200
    assert [r.target for r in origin.requests] == ["/y"]


def test_route_select_and_upstream_request(rproxy_engine: StartProxy) -> None:
    with Origin() as a1, Origin() as a2, Origin() as b:
        seen: dict[str, Any] = {}

        def rproxy_route(request: rproxy.Request) -> rproxy.Route | None:
            if request.path.startswith("/b/"):
                return rproxy.Route(upstream="b", path="/rewritten" + request.path[2:], host="b.internal")
            return None

        def rproxy_select_upstream(route: rproxy.Route, candidates: list[str]) -> str | None:
            seen["route"], seen["candidates"] = route, candidates
            return candidates[-1] if route.upstream == "app" else None

        def rproxy_upstream_request(request: rproxy.Request, upstream: str, ctx: dict[str, Any]) -> None:
            seen.setdefault("upstreams", []).append(upstream)
            request.headers.set("X-Chosen", upstream)
            request.headers.remove("x-forwarded-host")
            ctx["pool"] = request.upstream_pool

        def rproxy_response(request: rproxy.Request, response: rproxy.Response, ctx: dict[str, Any]) -> None:
            response.headers.set("X-Pool", ctx.get("pool", "-"))
            seen["final_route"] = request.route

        config = proxy_config([a1.addr, a2.addr], pools={"b": {"servers": [b.addr]}})
        engine = rproxy_engine(
            config,
            [
                plugin(
                    "p",
                    rproxy_route=rproxy_route,
                    rproxy_select_upstream=rproxy_select_upstream,
                    rproxy_upstream_request=rproxy_upstream_request,
                    rproxy_response=rproxy_response,
                )
            ],
        )
        for _ in range(3):
            resp = request(engine.addresses[0], "GET", "/a?q=1")
            assert resp.header("x-pool") == "app"
        assert len(a2.requests) == 3 and not a1.requests, "the hook's choice is tried first"
        assert a2.requests[0].header("x-chosen") == a2.addr
        assert a2.requests[0].header("x-forwarded-host") is None
        assert a2.requests[0].target == "/a?q=1"
        assert seen["candidates"] == [a1.addr, a2.addr]
        assert seen["route"] == rproxy.Route(upstream="app", name="routes[0]")

        resp = request(engine.addresses[0], "GET", "/b/item?x=2")
        assert resp.header("x-pool") == "b"
        assert seen["final_route"] == rproxy.Route(upstream="b", path="/rewritten/item", host="b.internal")
        (got,) = b.requests
        assert got.target == "/rewritten/item"
        assert got.header("host") == "b.internal"


def test_upstream_request_can_change_the_path(origin: Origin, rproxy_engine: StartProxy) -> None:
    def rproxy_upstream_request(request: rproxy.Request) -> None:
        request.path = "/v2" + request.path

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("p", rproxy_upstream_request=rproxy_upstream_request)])
    request(engine.addresses[0], "GET", "/items?page=2")
    assert origin.requests[0].target == "/v2/items?page=2"


def test_response_hooks_change_status_and_headers(rproxy_engine: StartProxy) -> None:
    with Origin(lambda req: Reply(200, [("Server", "secret/1.0"), ("X-Up", "1")], b"body")) as origin:

        def rproxy_upstream_response(response: rproxy.Response, ctx: dict[str, Any]) -> None:
            ctx["upstream_server"] = response.headers.get("server")
            response.headers.remove("server")

        def rproxy_response(response: rproxy.Response, ctx: dict[str, Any]) -> None:
            response.headers.add("X-Seen", str(ctx.get("upstream_server")))
            if response.status == 200:
                response.status = 203

        engine = rproxy_engine(
            proxy_config(origin.addr),
            [plugin("p", rproxy_upstream_response=rproxy_upstream_response, rproxy_response=rproxy_response)],
        )
        resp = request(engine.addresses[0], "GET", "/")
        assert resp.status == 203
        assert resp.header("server") is None
        assert resp.header("x-seen") == "secret/1.0"
        assert resp.header("x-up") == "1"
        assert resp.body == b"body"
        # Responses the proxy makes itself go through rproxy_response too.
        assert request(engine.addresses[0], "CONNECT", "h:1").header("x-seen") == "None"


def test_error_hook_replaces_the_error_page(rproxy_engine: StartProxy) -> None:
    errors: list[rproxy.ErrorInfo] = []

    def rproxy_error(error: rproxy.ErrorInfo) -> rproxy.Response:
        errors.append(error)
        return rproxy.Response(error.status, {"Content-Type": "application/json"}, f'{{"error": "{error.kind}"}}')

    engine = rproxy_engine(
        proxy_config("127.0.0.1:9", pools={"app": {"connect_timeout": "200ms"}}),
        [plugin("e", rproxy_error=rproxy_error)],
    )
    resp = request(engine.addresses[0], "GET", "/")
    assert resp.status == 502
    assert resp.body == b'{"error": "UpstreamConnect"}'
    assert errors[0].source == "upstream"


def test_log_runs_after_the_response_with_timings(origin: Origin, rproxy_engine: StartProxy) -> None:
    logged: list[tuple[Any, ...]] = []
    sent = threading.Event()

    def rproxy_log(
        request: rproxy.Request,
        response: rproxy.Response,
        error: rproxy.ErrorInfo | None,
        timings: dict[str, float],
        ctx: dict[str, Any],
    ) -> None:
        assert sent.wait(5), "the client must have the response before the log hook runs"
        logged.append((request.method, request.path, response.status, error, dict(timings), ctx.get("mark")))
        with pytest.raises(RuntimeError, match="read-only"):
            response.headers.set("x-late", "1")

    def rproxy_request_filter(ctx: dict[str, Any]) -> None:
        ctx["mark"] = "from the filter"

    engine = rproxy_engine(
        proxy_config(origin.addr), [plugin("l", rproxy_log=rproxy_log, rproxy_request_filter=rproxy_request_filter)]
    )
    with connect(engine.addresses[0]) as s:
        s.sendall(build("GET", "/logged"))
        resp = Reader(s).response()
        sent.set()
    assert resp.status == 200
    deadline = time.monotonic() + 5
    while not logged and time.monotonic() < deadline:
        time.sleep(0.01)
    method, path, status, error, timings, mark = logged[0]
    assert (method, path, status, error, mark) == ("GET", "/logged", 200, None, "from the filter")
    assert timings["total"] > 0 and timings["upstream"] > 0 and timings["body_bytes"] == len(resp.body)
    assert timings["complete"] is True


def test_cache_key_is_visible_to_later_hooks(origin: Origin, rproxy_engine: StartProxy) -> None:
    keys: list[Any] = []

    def rproxy_cache_key(request: rproxy.Request) -> str | bool | None:
        return False if request.path == "/nocache" else f"k:{request.path}"

    def rproxy_response(request: rproxy.Request) -> None:
        keys.append(request.cache_key)

    engine = rproxy_engine(
        proxy_config(origin.addr), [plugin("c", rproxy_cache_key=rproxy_cache_key, rproxy_response=rproxy_response)]
    )
    request(engine.addresses[0], "GET", "/a")
    request(engine.addresses[0], "GET", "/nocache")
    assert keys == ["k:/a", False]


def test_async_hooks_are_awaited_while_other_requests_flow(origin: Origin, rproxy_engine: StartProxy) -> None:
    async def rproxy_request_filter(request: rproxy.Request) -> rproxy.Response | None:
        if request.path == "/slow":
            await asyncio.sleep(1.0)
            return rproxy.Response(200, {}, f"slow {request.path}")
        return None

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("a", rproxy_request_filter=rproxy_request_filter)])
    slow: dict[str, Any] = {}
    t = threading.Thread(target=lambda: slow.update(r=request(engine.addresses[0], "GET", "/slow")))
    started = time.monotonic()
    t.start()
    time.sleep(0.1)
    fast = [request(engine.addresses[0], "GET", f"/fast{i}") for i in range(5)]
    fast_done = time.monotonic() - started
    t.join(5)
    assert all(r.status == 200 for r in fast)
    assert fast_done < 0.8, "other requests are served while an async hook waits"
    assert slow["r"].body == b"slow /slow"


def test_async_hook_timeout_fails_the_request(
    origin: Origin, rproxy_engine: StartProxy, capfd: pytest.CaptureFixture[str]
) -> None:
    async def rproxy_request_filter() -> None:
        await asyncio.sleep(10)

    config = proxy_config(origin.addr)
    config["plugins"]["slow"] = {"timeout": "300ms"}
    engine = rproxy_engine(config, [plugin("slow", rproxy_request_filter=rproxy_request_filter)])
    started = time.monotonic()
    resp = request(engine.addresses[0], "GET", "/")
    assert resp.status == 500
    assert 0.25 < time.monotonic() - started < 2
    assert origin.connections == 0
    assert "plugin 'slow' failed in rproxy_request_filter: TimeoutError: timed out after 0.3s" in capfd.readouterr().err


def test_failing_hook_fails_only_its_request(
    origin: Origin, rproxy_engine: StartProxy, capfd: pytest.CaptureFixture[str]
) -> None:
    """1,000 requests through a plugin that raises on every other one: the
    other half succeed, on the same worker, and each failure is logged once
    with the plugin's own frames."""
    count = 0

    def rproxy_request_filter(request: rproxy.Request) -> None:
        nonlocal count
        count += 1
        if count % 2 == 0:
            raise ValueError(f"boom {request.path}")

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("flaky", rproxy_request_filter=rproxy_request_filter)])
    statuses: dict[int, int] = {}
    with connect(engine.addresses[0]) as s:
        reader = Reader(s)
        for i in range(1000):
            s.sendall(build("GET", f"/{i}"))
            status = reader.response().status
            statuses[status] = statuses.get(status, 0) + 1
    assert statuses == {200: 500, 500: 500}
    assert len(origin.requests) == 500
    err = capfd.readouterr().err
    assert err.count("plugin 'flaky' failed in rproxy_request_filter: ValueError: boom") == 500
    assert 'in rproxy_request_filter\n      raise ValueError(f"boom {request.path}")' in err
    assert "rproxy/plan.py" not in err and "pluggy" not in err, "frames trimmed to the plugin's"
    (stats,) = [s for s in engine.hook_stats() if s["plugin"] == "flaky"]
    assert (stats["calls"], stats["errors"]) == (1000, 500)


@pytest.mark.parametrize("on_error", ["continue", "fail"])
def test_on_error_policy_per_plugin(origin: Origin, rproxy_engine: StartProxy, on_error: str) -> None:
    def rproxy_request_filter() -> None:
        raise RuntimeError("always")

    def rproxy_response(response: rproxy.Response) -> None:
        raise RuntimeError("always")

    config = proxy_config(origin.addr)
    config["plugins"]["p"] = {"on_error": on_error}
    engine = rproxy_engine(
        config, [plugin("p", rproxy_request_filter=rproxy_request_filter, rproxy_response=rproxy_response)]
    )
    resp = request(engine.addresses[0], "GET", "/")
    assert resp.status == (200 if on_error == "continue" else 500)


def test_wrong_return_type_is_a_failure(
    origin: Origin, rproxy_engine: StartProxy, capfd: pytest.CaptureFixture[str]
) -> None:
    def rproxy_route() -> str:
        return "app"

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("typo", rproxy_route=rproxy_route)])
    assert request(engine.addresses[0], "GET", "/").status == 500
    assert "rproxy_route must return rproxy.Route or None, not str" in capfd.readouterr().err


def test_views_expire_with_their_request(origin: Origin, rproxy_engine: StartProxy) -> None:
    kept: list[rproxy.Request] = []

    def rproxy_request_filter(request: rproxy.Request) -> None:
        kept.append(request)

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("k", rproxy_request_filter=rproxy_request_filter)])
    request(engine.addresses[0], "GET", "/")
    with pytest.raises(RuntimeError, match="only valid during a hook call"):
        _ = kept[0].path
    with pytest.raises(RuntimeError):
        kept[0].headers.get("host")


def test_requests_without_python_steps_never_enter_python(origin: Origin, rproxy_engine: StartProxy) -> None:
    calls = 0

    def rproxy_startup() -> None:
        nonlocal calls
        calls += 1

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("life", rproxy_startup=rproxy_startup)])
    assert engine.plan.python_steps() == 0
    assert engine.hook_stats() == []
    assert request(engine.addresses[0], "GET", "/").status == 200
    assert calls == 1


def test_hooks_see_h2_requests(origin: Origin, rproxy_engine: StartProxy) -> None:
    from test_forwarding import h2_exchange

    def rproxy_request_filter(request: rproxy.Request) -> rproxy.Response:
        return rproxy.Response(200, {}, f"{request.version} {request.method} {request.host} {request.path}")

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("h", rproxy_request_filter=rproxy_request_filter)])
    status, body = h2_exchange(
        engine.addresses[0],
        [(":method", "GET"), (":path", "/p"), (":scheme", "http"), (":authority", "H2.Example:8443")],
        b"",
    )
    assert (status, body) == ("200", b"HTTP/2 GET h2.example /p")


def test_hook_stats_count_calls(origin: Origin, rproxy_engine: StartProxy) -> None:
    def rproxy_response(response: rproxy.Response) -> None:
        response.headers.set("x", "1")

    engine = rproxy_engine(proxy_config(origin.addr), [plugin("s", rproxy_response=rproxy_response)])
    for _ in range(7):
        request(engine.addresses[0], "GET", "/")
    (stats,) = engine.hook_stats()
    assert (stats["hook"], stats["plugin"], stats["calls"], stats["errors"]) == ("rproxy_response", "s", 7, 0)
    assert sum(stats["histogram"]) == 7 and stats["total_ns"] > 0


def test_views_are_freed(origin: Origin, rproxy_engine: StartProxy) -> None:
    """Views touched by every phase (headers included) are freed with their
    request: nothing piles up, whatever the number of requests."""

    def rproxy_request_filter(request: rproxy.Request, ctx: dict[str, Any]) -> None:
        ctx["host"] = request.headers.get("host")

    def rproxy_upstream_request(request: rproxy.Request) -> None:
        request.headers.set("x-a", "1")

    def rproxy_response(response: rproxy.Response, request: rproxy.Request) -> None:
        response.headers.set("x-b", request.headers.get("host") or "")

    def rproxy_log(request: rproxy.Request, response: rproxy.Response) -> None:
        _ = (request.headers.items(), response.headers.items())

    engine = rproxy_engine(
        proxy_config(origin.addr),
        [
            plugin(
                "v",
                rproxy_request_filter=rproxy_request_filter,
                rproxy_upstream_request=rproxy_upstream_request,
                rproxy_response=rproxy_response,
                rproxy_log=rproxy_log,
            )
        ],
    )

    def burst(n: int) -> None:
        with connect(engine.addresses[0]) as s:
            reader = Reader(s)
            for i in range(n):
                s.sendall(build("GET", f"/{i}"))
                assert reader.response().status == 200

    burst(50)
    time.sleep(0.2)
    before = _engine._live_views()
    burst(500)
    time.sleep(0.2)
    assert _engine._live_views() - before <= 5
