"""Load balancing and upstream health through the real engine, against real
in-process origins: each algorithm's distribution, consistent-hash
remapping, failover under load, active and passive health checks, slow
start, retries and their budget, and the concurrency limits.

Tests that need a deterministic choice run both natively and with the
balancer's Python reference (``native=False``)."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from rproxy.engine import Engine
from rproxy.testing.origin import Origin, Received, Reply, Takeover

from conftest import StartProxy, proxy_config
from support.client import request
from support.process import RproxyProcess

BOTH = pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])


def named(name: str, delay: Callable[[Received], float] | None = None) -> Callable[[Received], Reply]:
    """A handler answering with its own name (after ``delay(req)`` seconds)."""

    def handler(req: Received) -> Reply:
        if delay is not None:
            time.sleep(delay(req))
        return Reply(200, [("Content-Type", "text/plain")], name.encode())

    return handler


@pytest.fixture
def origins() -> Iterator[Callable[..., list[Origin]]]:
    """Start origins named a, b, c, ... (``n`` of them, or given handlers)."""
    with ExitStack() as stack:

        def start(n: int = 0, handlers: list[Callable[[Received], Any]] | None = None) -> list[Origin]:
            hs = handlers or [named(chr(ord("a") + i)) for i in range(n)]
            return [stack.enter_context(Origin(h)) for h in hs]

        yield start


def pool(servers: list[Any], **settings: Any) -> dict[str, Any]:
    config = proxy_config(servers)
    config["upstreams"]["app"].update(settings)
    return config


def who(engine: Engine, target: str = "/", headers: list[tuple[str, str]] | None = None) -> str:
    resp = request(engine.addresses[0], "GET", target, headers=headers)
    assert resp.status == 200, resp
    return resp.body.decode()


def stats(engine: Engine) -> dict[str, Any]:
    (app,) = [p for p in engine.upstream_stats() if p["pool"] == "app"]
    return app


def server_stats(engine: Engine, addr: str) -> dict[str, Any]:
    (s,) = [s for s in stats(engine)["servers"] if s["address"] == addr]
    return s


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# -- selection ---------------------------------------------------------------


@BOTH
def test_round_robin_is_exact(native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    os = origins(3)
    engine = start_proxy(pool([o.addr for o in os]), native=native)
    picks = [who(engine) for _ in range(30)]
    assert picks[:6] == ["a", "b", "c", "a", "b", "c"]
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}


@BOTH
def test_smooth_weighted_round_robin(
    native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    a, b, c = origins(3)
    servers = [{"address": a.addr, "weight": 5}, b.addr, c.addr]
    engine = start_proxy(pool(servers), native=native)
    picks = [who(engine) for _ in range(70)]
    # Smooth: the heavy server's turns are spread out, not bunched.
    assert picks[:7] == ["a", "a", "b", "a", "c", "a", "a"]
    assert Counter(picks) == {"a": 50, "b": 10, "c": 10}


@BOTH
def test_first_and_backup(native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    a, b, c = origins(3)
    servers = [a.addr, b.addr, {"address": c.addr, "backup": True}]
    engine = start_proxy(pool(servers, balance="first"), native=native)
    assert {who(engine) for _ in range(10)} == {"a"}
    a.close()
    assert {who(engine) for _ in range(10)} == {"b"}, "ordered failover to the next primary"
    b.close()
    assert {who(engine) for _ in range(10)} == {"c"}, "the backup takes over when every primary is down"


def test_backup_idle_while_a_primary_lives(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    a, b, c = origins(3)
    servers = [a.addr, b.addr, {"address": c.addr, "backup": True}]
    engine = start_proxy(pool(servers))
    assert Counter(who(engine) for _ in range(20)) == {"a": 10, "b": 10}
    assert not c.requests


@BOTH
def test_least_conn_avoids_the_busy_server(
    native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    slow = lambda req: 0.8 if req.target == "/slow" else 0.0  # noqa: E731
    a, b = origins(handlers=[named("a", slow), named("b", slow)])
    engine = start_proxy(pool([a.addr, b.addr], balance="least_conn"), native=native)
    with ThreadPoolExecutor(1) as ex:
        busy = ex.submit(who, engine, "/slow")
        assert wait_until(lambda: len(a.requests) + len(b.requests) == 1)
        held = "a" if a.requests else "b"
        picks = [who(engine) for _ in range(8)]
        assert busy.result() == held
    assert held not in picks, "every request goes to the idle server while the other is busy"
    # With both idle again, ties rotate.
    assert Counter(who(engine) for _ in range(10)) == {"a": 5, "b": 5}


def chi_square(counts: list[int], expected: list[float]) -> float:
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True))


@BOTH
def test_random_two_spreads_by_weight(
    native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    a, b, c = origins(3)
    servers = [{"address": a.addr, "weight": 2}, b.addr, c.addr]
    engine = start_proxy(pool(servers, balance="random_two"), native=native)
    n = 600
    got = Counter(who(engine) for _ in range(n))
    # Idle servers tie, so the first draw wins: shares follow the weights.
    # 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert chi_square([got["a"], got["b"], got["c"]], [n / 2, n / 4, n / 4]) < 13.8, got


@BOTH
def test_hash_on_a_header_is_sticky_and_even(
    native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    os = origins(4)
    engine = start_proxy(pool([o.addr for o in os], balance="hash", hash_key="header:X-User"), native=native)
    owner = {u: who(engine, headers=[("X-User", f"user-{u}")]) for u in range(400)}
    for u in range(0, 400, 7):
        assert who(engine, headers=[("X-User", f"user-{u}")]) == owner[u], "a key always lands on its server"
    counts = Counter(owner.values())
    # 3 degrees of freedom: P(chi2 > 16.3) = 0.001; the ring is fixed, so this is deterministic.
    assert chi_square([counts[k] for k in "abcd"], [100.0] * 4) < 16.3, counts
    # Without the key, requests are spread round robin.
    assert Counter(who(engine) for _ in range(8)) == {"a": 2, "b": 2, "c": 2, "d": 2}


@BOTH
def test_hash_on_a_cookie(native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    os = origins(3)
    engine = start_proxy(pool([o.addr for o in os], balance="hash", hash_key="cookie:sid"), native=native)
    for sid in ("x1", "x2", "x3", "x4"):
        got = {who(engine, headers=[("Cookie", f"theme=dark; sid={sid}; lang=en")]) for _ in range(5)}
        assert len(got) == 1


def test_consistent_hash_remaps_at_most_about_one_nth(
    origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    os = origins(6)
    keys = [f"client-{i}" for i in range(600)]

    def mapping(servers: list[Origin]) -> dict[str, str]:
        engine = start_proxy(pool([o.addr for o in servers], balance="hash", hash_key="header:X-Key"))
        out = {k: who(engine, headers=[("X-Key", k)]) for k in keys}
        engine.stop()
        return out

    five, six = mapping(os[:5]), mapping(os)
    moved = [k for k in keys if five[k] != six[k]]
    assert all(six[k] == "f" for k in moved), "adding a server only moves keys to it"
    assert len(moved) <= len(keys) / 6 + 0.05 * len(keys), len(moved)
    four = mapping(os[:4])
    moved = [k for k in keys if five[k] != four[k]]
    assert all(five[k] == "e" for k in moved), "removing a server only moves its own keys"
    assert len(moved) <= len(keys) / 5 + 0.05 * len(keys), len(moved)


# -- failover, retries, budget -----------------------------------------------


def test_failover_under_load_has_no_client_errors(
    origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    a, b = origins(2)
    engine = start_proxy(pool([a.addr, b.addr]))
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def load() -> None:
        while time.monotonic() < stop:
            status = request(engine.addresses[0], "GET", "/").status
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    a.close()
    killed_at = len(b.requests)
    for t in threads:
        t.join()
    assert statuses[200] > 200, statuses
    assert set(statuses) == {200}, f"GETs failed while a server died: {statuses}"
    assert len(b.requests) > killed_at + 50, "the survivor took the traffic"
    s = stats(engine)
    assert server_stats(engine, a.addr)["failures"] >= 1
    assert s["retries"] >= 1


def resetter(req: Received) -> Takeover:
    """Read the request, then reset the connection without answering."""

    def run(sock: socket.socket, buffered: bytes, r: Received) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    return Takeover(run)


def test_reset_is_retried_elsewhere_only_for_idempotent_methods(
    origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    bad, good = origins(handlers=[resetter, named("good")])
    engine = start_proxy(pool([bad.addr, good.addr], max_fails=0))
    assert [request(engine.addresses[0], "GET", "/").status for _ in range(4)] == [200] * 4
    assert len(bad.requests) == 2 and len(good.requests) == 4, "each GET the bad server reset went to the good one"
    posts = [request(engine.addresses[0], "POST", "/", body=b"x").status for _ in range(4)]
    assert sorted(posts) == [200, 200, 502, 502], "a POST the server may have seen is not sent again"
    assert len(bad.requests) == 4


def test_a_streamed_body_is_not_sent_twice(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    bad, good = origins(handlers=[resetter, named("good")])
    config = pool([bad.addr, good.addr], max_fails=0, balance="first")
    config["server"]["request_buffer_size"] = "1KiB"
    engine = start_proxy(config)
    small = request(engine.addresses[0], "PUT", "/", body=b"x" * 512)
    assert small.status == 200 and small.body == b"good", "a buffered body is sent again elsewhere"
    big = request(engine.addresses[0], "PUT", "/", body=b"x" * 20_000)
    assert big.status == 502, "a body already streamed upstream cannot be replayed"
    assert len(bad.requests) == 2 and len(good.requests) == 1


def test_retry_budget_holds_in_a_full_outage(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    os = origins(handlers=[resetter, resetter, resetter])
    engine = start_proxy(pool([o.addr for o in os], retries=2, retry_budget=0.2, retry_budget_min=1, max_fails=0))
    n = 200
    statuses = Counter(request(engine.addresses[0], "GET", "/").status for _ in range(n))
    assert statuses == {502: n}
    attempts = sum(len(o.requests) for o in os)
    # Without a budget: 3 attempts each. With it: retries <= max(1/s over 10 s, 20% of requests).
    assert n <= attempts <= n + 0.2 * n + 10, attempts
    s = stats(engine)
    assert s["retries"] == attempts - n
    assert s["retries_refused"] > 0


# -- health ------------------------------------------------------------------


class Switch:
    """An origin whose health endpoint answers 200 or 503 as told."""

    def __init__(self, name: str) -> None:
        self.healthy = True
        self.checks = 0
        self.origin = Origin(self.handle)
        self.name = name

    def handle(self, req: Received) -> Reply:
        if req.target == "/health":
            self.checks += 1
            return Reply(200 if self.healthy else 503, [], b"")
        return Reply(200, [], self.name.encode())


@BOTH
def test_active_http_check_rise_and_fall(native: bool, start_proxy: StartProxy) -> None:
    a, b = Switch("a"), Switch("b")
    try:
        check = {"type": "http", "path": "/health", "interval": "50ms", "timeout": "1s", "rise": 2, "fall": 2}
        engine = start_proxy(pool([a.origin.addr, b.origin.addr], health_check=check), native=native)
        assert wait_until(lambda: a.checks >= 1 and b.checks >= 1), "checks start at once"
        a.healthy = False
        assert wait_until(lambda: server_stats(engine, a.origin.addr)["state"] == "down")
        assert a.checks >= 2
        assert {who(engine) for _ in range(10)} == {"b"}
        a.healthy = True
        assert wait_until(lambda: server_stats(engine, a.origin.addr)["state"] == "up")
        assert Counter(who(engine) for _ in range(10)) == {"a": 5, "b": 5}
    finally:
        a.origin.close()
        b.origin.close()


def test_active_tcp_check(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    a, b = origins(2)
    check = {"type": "tcp", "interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 1}
    engine = start_proxy(pool([a.addr, b.addr], health_check=check, max_fails=0))
    assert wait_until(lambda: server_stats(engine, a.addr)["state"] == "up")
    a.close()
    assert wait_until(lambda: server_stats(engine, a.addr)["state"] == "down")
    before = stats(engine)["retries"]
    assert {who(engine) for _ in range(10)} == {"b"}
    assert stats(engine)["retries"] == before, "a down server is not even tried"


def test_every_server_down_still_tries_them(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    a = Switch("a")
    try:
        check = {"type": "http", "path": "/health", "interval": "50ms", "rise": 1, "fall": 1}
        engine = start_proxy(pool([a.origin.addr], health_check=check))
        a.healthy = False
        assert wait_until(lambda: server_stats(engine, a.origin.addr)["state"] == "down")
        assert who(engine) == "a", "with nothing healthy, health is ignored rather than failing every request"
    finally:
        a.origin.close()


def failing(name: str, fail: list[bool]) -> Callable[[Received], Reply]:
    def handler(req: Received) -> Reply:
        if fail[0]:
            return Reply(500, [], b"broken")
        return Reply(200, [], name.encode())

    return handler


def ejected_span(engine: Engine, addr: str, timeout: float = 5.0) -> float:
    """Wait for ``addr`` to be ejected; return how long the ejection lasts."""
    assert wait_until(lambda: server_stats(engine, addr)["state"] == "ejected", timeout)
    began = time.monotonic()
    assert wait_until(lambda: server_stats(engine, addr)["state"] != "ejected", timeout)
    return time.monotonic() - began


def test_passive_ejection_backs_off_and_slow_start_ramps(
    origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    fail = [True]
    a, b = origins(handlers=[failing("a", fail), named("b")])
    engine = start_proxy(
        pool(
            [a.addr, b.addr],
            max_fails=2,
            fail_on_5xx=True,
            eject_time="300ms",
            eject_time_max="5s",
            slow_start="1500ms",
        )
    )
    statuses = [request(engine.addresses[0], "GET", "/").status for _ in range(4)]
    assert statuses.count(500) == 2, "5xx pass through to the client"
    first = ejected_span(engine, a.addr)
    # Back (ramping up), still failing: two more failures eject it again, for twice as long.
    while server_stats(engine, a.addr)["state"] != "ejected":
        request(engine.addresses[0], "GET", "/")
    fail[0] = False
    second = ejected_span(engine, a.addr)
    assert 0.2 < first < 0.6, first
    assert second > 1.6 * first, (first, second)
    assert server_stats(engine, a.addr)["ejections"] == 2
    # Healthy now: after its ejection it ramps up over slow_start.
    early = Counter(who(engine) for _ in range(40))
    assert server_stats(engine, a.addr)["ramp"] < 1.0
    assert early["a"] < 12, f"a recovering server gets a small share at first: {early}"
    assert wait_until(lambda: server_stats(engine, a.addr)["ramp"] == 1.0, 5)
    later = Counter(who(engine) for _ in range(40))
    assert later == {"a": 20, "b": 20}


def test_ejection_is_capped(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    fail = [True]
    a, b = origins(handlers=[failing("a", fail), failing("b", fail)])
    engine = start_proxy(
        pool([a.addr, b.addr], max_fails=1, fail_on_5xx=True, eject_time="10s", max_ejected_percent=50)
    )
    for _ in range(10):
        request(engine.addresses[0], "GET", "/")
    states = sorted(s["state"] for s in stats(engine)["servers"])
    assert states == ["ejected", "up"], "at most half of the pool is ejected at once"


# -- limits ------------------------------------------------------------------


def concurrent(engine: Engine, n: int, target: str = "/") -> list[tuple[int, str | None, float]]:
    def one(_: int) -> tuple[int, str | None, float]:
        started = time.monotonic()
        resp = request(engine.addresses[0], "GET", target)
        return resp.status, resp.header("retry-after"), time.monotonic() - started

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def test_circuit_breaker_answers_503_at_once(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    (a,) = origins(handlers=[named("a", lambda req: 0.6)])
    engine = start_proxy(pool([a.addr], max_requests=2, max_pending=0))
    results = concurrent(engine, 6)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) == 2 and len(refused) == 4, results
    assert all(r[1] == "1" for r in refused), "503s carry Retry-After"
    assert all(r[2] < 0.4 for r in refused), "refused at once, not queued"
    assert stats(engine)["overloaded"] == 4


def test_per_server_limit_with_a_bounded_queue(origins: Callable[..., list[Origin]], start_proxy: StartProxy) -> None:
    (a,) = origins(handlers=[named("a", lambda req: 0.4)])
    engine = start_proxy(pool([a.addr], max_requests_per_server=1, max_pending=1, queue_timeout="3s"))
    results = concurrent(engine, 4)
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 503, 503], results
    assert max(r[2] for r in results if r[0] == 200) > 0.7, "the queued request waited for the first"


# -- the hook ----------------------------------------------------------------


@BOTH
def test_a_plugin_chooses_first_and_none_falls_back(
    native: bool, origins: Callable[..., list[Origin]], start_proxy: StartProxy
) -> None:
    seen: list[list[tuple[str, int, bool, int, float]]] = []

    def rproxy_select_upstream(request: Any, candidates: list[Any]) -> str | None:
        """Tenant "gold" goes to the last candidate; others to the balancer."""
        seen.append([(str(c), c.weight, c.backup, c.in_flight, c.ramp) for c in candidates])
        if request.headers.get("x-tenant") == "gold":
            return candidates[-1]  # type: ignore[no-any-return]
        return None

    a, b, c = origins(3)
    servers = [{"address": a.addr, "weight": 2}, b.addr, {"address": c.addr, "backup": True}]
    plugin = types.SimpleNamespace(rproxy_select_upstream=rproxy_select_upstream)
    engine = start_proxy(pool(servers), plugins=[("tenants", plugin)], native=native)
    assert {who(engine, headers=[("X-Tenant", "gold")]) for _ in range(4)} == {"b"}
    assert Counter(who(engine) for _ in range(6)) == {"a": 4, "b": 2}
    assert seen[0] == [(a.addr, 2, False, 0, 1.0), (b.addr, 1, False, 0, 1.0)]
    assert isinstance(seen and seen[0][0][0], str)


def test_upstreams_command_reads_the_workers(tmp_path: Path) -> None:
    with Origin(named("a")) as a, Origin(named("b")) as b:
        config = tmp_path / "proxy.toml"
        settings = proxy_config([a.addr, b.addr], server={"workers": 2})
        settings["upstreams"]["app"]["max_fails"] = 1
        config.write_text(tomli_w.dumps(settings))
        proc = RproxyProcess(config)
        try:
            proc.wait_workers(2)
            b.close()
            assert {request(proc.addr, "GET", f"/{i}").status for i in range(40)} == {200}
            time.sleep(1.5)  # workers write their statistics every second
            out = subprocess.run(
                [sys.executable, "-m", "rproxy", "upstreams", str(config)], capture_output=True, text=True, check=True
            ).stdout
        finally:
            assert proc.stop(signal.SIGTERM) == 0
    assert "2 worker(s) reporting" in out
    assert "pool app: 40 requests" in out, out
    (row,) = [line for line in out.splitlines() if line.strip().startswith(b.addr)]
    assert "ejected" in row, out
