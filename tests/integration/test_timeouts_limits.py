"""Client-side timeouts (slowloris, keep-alive idle, slow bodies) and the
connection limit."""

from __future__ import annotations

import socket
import time

import pytest

from rproxy.testing.origin import Origin, Reply

from conftest import StartProxy, proxy_config
from support.client import Reader, build, connect

H = b"Host: test.local\r\n"


def test_slowloris_header_is_cut_off(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"client_header_timeout": "1s"}))
    with connect(engine.addresses[0]) as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        # Keep dripping bytes: the timeout runs from the first byte of the head.
        for i in range(6):
            time.sleep(0.2)
            try:
                s.sendall(f"X-Drip-{i}: 1\r\n".encode())
            except OSError:
                break
        reader = Reader(s)
        resp = reader.response()
        assert resp.status == 408
        assert reader.closed()
        assert 0.9 < time.monotonic() - started < 2.5
    assert origin.connections == 0


def test_silent_connection_is_closed_after_client_header_timeout(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"client_header_timeout": "1s"}))
    with connect(engine.addresses[0]) as s:
        started = time.monotonic()
        assert Reader(s).closed(timeout=3)
        assert 0.9 < time.monotonic() - started < 2.0


def test_idle_keepalive_connection_is_closed(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"keepalive_timeout": "1s", "client_header_timeout": "5s"}))
    with connect(engine.addresses[0]) as s:
        s.sendall(build("GET", "/"))
        reader = Reader(s)
        assert reader.response().status == 200
        started = time.monotonic()
        assert reader.closed(timeout=3)
        assert 0.9 < time.monotonic() - started < 2.0


def test_slow_request_body_gets_408(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"client_body_timeout": "1s"}))
    with connect(engine.addresses[0]) as s:
        s.sendall(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc")
        reader = Reader(s)
        started = time.monotonic()
        assert reader.response().status == 408
        assert 0.9 < time.monotonic() - started < 2.0
        assert reader.closed()
    assert origin.bytes_received == 0


def test_max_connections_pauses_accepting(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"max_connections": 2}))
    addr = engine.addresses[0]
    first, second = connect(addr), connect(addr)
    third = connect(addr)  # the kernel completes the handshake; the engine does not accept it yet
    try:
        for s in (first, second):
            s.sendall(build("GET", "/"))
            assert Reader(s).response().status == 200
        third.sendall(build("GET", "/third"))
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(1)  # a third connection waits: no answer, no close
        first.close()
        third.settimeout(5)
        assert Reader(third).response().body == b"origin saw GET /third\n"
    finally:
        for s in (first, second, third):
            s.close()


def test_keepalive_timeout_zero_disables_keep_alive(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"keepalive_timeout": "0s"}))
    with connect(engine.addresses[0]) as s:
        s.sendall(build("GET", "/"))
        reader = Reader(s)
        resp = reader.response()
        assert resp.status == 200
        assert resp.header("connection") == "close"
        assert reader.closed()


def test_client_that_stops_reading_is_cut_off(start_proxy: StartProxy) -> None:
    size = 64 << 20
    block = b"z" * (1 << 20)
    with Origin(lambda req: Reply(200, [], (block for _ in range(64)), length=size)) as origin:
        engine = start_proxy(proxy_config(origin.addr, server={"send_timeout": "1s"}))
        with connect(engine.addresses[0], timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.sendall(build("GET", "/big"))
            time.sleep(2.5)  # read nothing: the proxy's writes stall
            received = 0
            while data := s.recv(1 << 20):
                received += len(data)
        assert 0 < received < size, "the proxy gave up on a client that stopped reading"
