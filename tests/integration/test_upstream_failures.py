"""Upstream failures: malformed responses, refused and unreachable servers,
timeouts, truncated bodies, failover and stale pooled connections."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rproxy.testing.origin import Origin, Received, Reply, Takeover

from conftest import StartProxy, proxy_config
from support.client import Reader, build, connect, request

MALFORMED = {
    "status-4-digits": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "bad-protocol": b"HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "not-http": b"hello there\r\n\r\n",
    "repeated-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "differing-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "invalid-cl": b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_response_is_502_and_connection_not_reused(raw: bytes, start_proxy: StartProxy) -> None:
    def handler(req: Received) -> Reply | bytes:
        return raw if req.target == "/bad" else Reply(200, [], b"fine")

    with Origin(handler) as origin:
        engine = start_proxy(proxy_config(origin.addr))
        with connect(engine.addresses[0]) as s:
            reader = Reader(s)
            s.sendall(build("GET", "/bad"))
            resp = reader.response()
            assert resp.status == 502
            assert resp.body == b"502 Bad Gateway\n"
            s.sendall(build("GET", "/good"))
            assert reader.response().body == b"fine", "the client connection stays usable"
        bad, good = origin.requests
        assert good.conn_id != bad.conn_id, "an upstream connection that sent garbage must not be reused"


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_refused_upstream_is_502_fast(dead_port: int, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(f"127.0.0.1:{dead_port}"))
    started = time.monotonic()
    resp = request(engine.addresses[0], "GET", "/")
    assert resp.status == 502
    assert time.monotonic() - started < 0.5
    assert str(dead_port) not in resp.body.decode(), "error pages do not reveal the origin"


def test_failover_to_the_next_server_on_connect_failure(
    dead_port: int, origin: Origin, start_proxy: StartProxy
) -> None:
    engine = start_proxy(proxy_config([f"127.0.0.1:{dead_port}", origin.addr]))
    statuses = [request(engine.addresses[0], "POST", f"/{i}", body=b"x").status for i in range(6)]
    assert statuses == [200] * 6
    assert len(origin.requests) == 6


def test_connect_timeout_is_502(start_proxy: StartProxy) -> None:
    # A listener whose accept queue is full drops new SYNs, so connecting hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    time.sleep(0.1)
    try:
        engine = start_proxy(proxy_config(f"127.0.0.1:{port}", upstream={"connect_timeout": "300ms"}))
        started = time.monotonic()
        resp = request(engine.addresses[0], "GET", "/")
        elapsed = time.monotonic() - started
        assert resp.status == 502
        assert 0.25 < elapsed < 2.0
    finally:
        for f in fillers:
            f.close()
        listener.close()


def test_response_timeout_is_504(origin: Origin, start_proxy: StartProxy) -> None:
    origin.handler = lambda req: Reply(200, [], b"late", delay=2.0)
    engine = start_proxy(proxy_config(origin.addr, upstream={"response_timeout": "400ms"}))
    started = time.monotonic()
    resp = request(engine.addresses[0], "GET", "/")
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert resp.body == b"504 Gateway Timeout\n"
    assert 0.35 < elapsed < 1.5


def _stalling_body(close: bool) -> Takeover:
    def run(sock: socket.socket, _: bytes, req: Received) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        if not close:
            time.sleep(3)

    return Takeover(run)


@pytest.mark.parametrize("close", [False, True], ids=["stall", "close"])
def test_truncated_response_body_cuts_the_client_connection(
    close: bool, origin: Origin, start_proxy: StartProxy
) -> None:
    origin.handler = lambda req: _stalling_body(close)
    engine = start_proxy(proxy_config(origin.addr, upstream={"body_idle_timeout": "500ms"}))
    started = time.monotonic()
    with connect(engine.addresses[0]) as s:
        s.sendall(build("GET", "/"))
        reader = Reader(s)
        with pytest.raises(EOFError, match="10 of 100"):
            reader.response()
    assert time.monotonic() - started < 2.0


def test_upstream_closing_idle_connections_is_handled(start_proxy: StartProxy) -> None:
    """The origin closes every connection after its response without saying
    so; the proxy must notice before reusing one."""

    def run(sock: socket.socket, _: bytes, req: Received) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        sock.close()

    with Origin(lambda req: Takeover(run)) as origin:
        engine = start_proxy(proxy_config(origin.addr))
        for _ in range(5):
            assert request(engine.addresses[0], "GET", "/").status == 200
            time.sleep(0.05)
        assert origin.connections == 5


def test_early_response_stops_the_upload(origin: Origin, start_proxy: StartProxy) -> None:
    """An upstream that answers before reading the body (here 413) gets no
    more of it; the client receives that answer."""
    # A raw listener: it answers as soon as the head is in, without reading the body.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope")
        time.sleep(1.5)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    engine = start_proxy(proxy_config(f"127.0.0.1:{port}", server={"request_buffer_size": "16KiB"}))
    with connect(engine.addresses[0]) as s:
        s.sendall(build("POST", "/", [("Content-Length", str(10 << 20))]))
        s.sendall(b"x" * (64 << 10))
        resp = Reader(s).response()
    assert resp.status == 413
    assert resp.body == b"nope"
    listener.close()
