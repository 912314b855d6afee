"""Forwarding through the real engine to a real origin: methods, bodies in
both framings, keep-alive, pipelining, 100-continue, HTTP/1.0 and h2c."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events

from rproxy.engine import Engine
from rproxy.testing.origin import Origin, Received, Reply

from conftest import StartProxy, proxy_config
from support.client import Reader, build, connect, request


def addr(engine: Engine) -> str:
    return engine.addresses[0]


def test_get_is_forwarded_with_path_query_and_headers(proxy: Engine, origin: Origin) -> None:
    resp = request(addr(proxy), "GET", "/some/path?x=1&y=%20", [("Accept", "text/plain"), ("X-Custom", "v")])
    assert resp.status == 200
    assert resp.body == b"origin saw GET /some/path?x=1&y=%20\n"
    (seen,) = origin.requests
    assert seen.target == "/some/path?x=1&y=%20"
    assert seen.header("accept") == "text/plain"
    assert seen.header("x-custom") == "v"
    assert seen.header("host") == "test.local"
    assert seen.version == "HTTP/1.1"


def test_post_body_with_content_length(proxy: Engine, origin: Origin) -> None:
    resp = request(addr(proxy), "POST", "/upload", [("Content-Type", "application/json")], b'{"a": 1}')
    assert resp.status == 200
    (seen,) = origin.requests
    assert seen.body == b'{"a": 1}'
    assert seen.header("content-length") == "8"


def test_small_chunked_body_is_checked_whole_and_sent_with_length(proxy: Engine, origin: Origin) -> None:
    raw = build("PUT", "/c", [("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    with connect(addr(proxy)) as s:
        s.sendall(raw)
        resp = Reader(s).response()
    assert resp.status == 200
    (seen,) = origin.requests
    assert seen.body == b"hello world"
    assert not seen.chunked
    assert seen.header("content-length") == "11"


def test_large_chunked_body_streams_chunked_with_trailers(proxy: Engine, origin: Origin) -> None:
    piece = b"x" * 50_000
    body = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(4))
    raw = build("POST", "/big", [("Transfer-Encoding", "chunked"), ("TE", "trailers")]) + body
    raw += b"0\r\nX-Checksum: abc\r\n\r\n"
    with connect(addr(proxy)) as s:
        s.sendall(raw)
        resp = Reader(s).response()
    assert resp.status == 200
    (seen,) = origin.requests
    assert seen.chunked
    assert seen.body_len == 200_000
    assert seen.trailers == [("x-checksum", "abc")]
    assert seen.header("te") == "trailers"


def test_chunked_response_with_trailers_reaches_the_client(origin: Origin, start_proxy: StartProxy) -> None:
    origin.handler = lambda req: Reply(200, [("Trailer", "X-Sum")], iter([b"abc", b"defg"]), trailers=[("X-Sum", "7")])
    engine = start_proxy(proxy_config(origin.addr))
    resp = request(addr(engine), "GET", "/t", [("TE", "trailers")])
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"abcdefg"
    assert resp.trailers == [("x-sum", "7")]


def test_keep_alive_reuses_both_connections(proxy: Engine, origin: Origin) -> None:
    with connect(addr(proxy)) as s:
        reader = Reader(s)
        for i in range(5):
            s.sendall(build("GET", f"/{i}"))
            assert reader.response().body == f"origin saw GET /{i}\n".encode()
    assert len(origin.requests) == 5
    assert origin.connections == 1, "upstream keep-alive connection should be reused"


def test_pipelined_requests_are_answered_in_order(proxy: Engine, origin: Origin) -> None:
    with connect(addr(proxy)) as s:
        s.sendall(b"".join(build("GET", f"/p{i}") for i in range(3)) + build("POST", "/p3", body=b"data"))
        reader = Reader(s)
        bodies = [reader.response().body for _ in range(4)]
    assert bodies == [f"origin saw {m} /p{i}\n".encode() for i, m in enumerate(["GET", "GET", "GET", "POST"])]


def test_head_and_bodiless_statuses(origin: Origin, start_proxy: StartProxy) -> None:
    def handler(req: Received) -> Reply:
        status = {"/204": 204, "/304": 304}.get(req.target, 200)
        return Reply(status, [("ETag", '"v1"')], b"" if status != 200 else b"twelve bytes")

    origin.handler = handler
    engine = start_proxy(proxy_config(origin.addr))
    with connect(addr(engine)) as s:
        reader = Reader(s)
        s.sendall(build("HEAD", "/"))
        head = reader.response("HEAD")
        assert head.status == 200
        assert head.header("content-length") == "12"
        for target, status in [("/204", 204), ("/304", 304)]:
            s.sendall(build("GET", target))
            resp = reader.response()
            assert resp.status == status
            assert resp.header("etag") == '"v1"'
        s.sendall(build("GET", "/"))
        assert reader.response().body == b"twelve bytes", "connection stays in sync after bodiless responses"


def test_expect_100_continue(proxy: Engine, origin: Origin) -> None:
    with connect(addr(proxy)) as s:
        s.sendall(build("PUT", "/e", [("Expect", "100-continue"), ("Content-Length", "5")]))
        reader = Reader(s)
        interim = reader.response()
        assert interim.status == 100
        s.sendall(b"hello")
        final = reader.response()
    assert final.status == 200
    (seen,) = origin.requests
    assert seen.body == b"hello"
    assert seen.header("expect") is None, "the proxy answers the expectation itself"


def test_expect_with_oversized_length_gets_413_without_continue(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"max_body_size": "1KiB"}))
    with connect(addr(engine)) as s:
        s.sendall(build("PUT", "/e", [("Expect", "100-continue"), ("Content-Length", "5000")]))
        reader = Reader(s)
        assert reader.response().status == 413
        assert reader.closed()
    assert origin.connections == 0


def test_http10_client(proxy: Engine, origin: Origin) -> None:
    with connect(addr(proxy)) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reader = Reader(s)
        resp = reader.response()
        assert resp.status == 200
        assert resp.body == b"origin saw GET /old\n"
        assert reader.closed(), "HTTP/1.0 without keep-alive is closed after the response"
    (seen,) = origin.requests
    assert seen.header("host") == origin.addr


def test_absolute_form_target_sets_host(proxy: Engine, origin: Origin) -> None:
    resp = request(addr(proxy), "GET", "http://example.org/abs?q=1", host="ignored.example")
    assert resp.status == 200
    (seen,) = origin.requests
    assert seen.target == "/abs?q=1"
    assert seen.header("host") == "example.org"


def test_h2c_prior_knowledge(proxy: Engine, origin: Origin) -> None:
    host, port = addr(proxy).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        for stream_id, path in [(1, "/h2/a"), (3, "/h2/b")]:
            conn.send_headers(
                stream_id,
                [
                    (":method", "POST"),
                    (":path", path),
                    (":scheme", "http"),
                    (":authority", "h2.test"),
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                ],
            )
            conn.send_data(stream_id, b"payload", end_stream=True)
        s.sendall(conn.data_to_send())
        bodies: dict[int, bytes] = {1: b"", 3: b""}
        statuses: dict[int, str] = {}
        ended: set[int] = set()
        while ended != {1, 3}:
            data = s.recv(65536)
            assert data, "connection closed early"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            s.sendall(conn.data_to_send())
    assert statuses == {1: "200", 3: "200"}
    assert bodies == {1: b"origin saw POST /h2/a\n", 3: b"origin saw POST /h2/b\n"}
    seen = sorted(origin.requests, key=lambda r: r.target)
    assert [r.body for r in seen] == [b"payload", b"payload"]
    assert seen[0].header("host") == "h2.test"
    assert seen[0].header("cookie") == "a=1; b=2"
    assert seen[0].header("via") == "2 rproxy"


def h2_exchange(address: str, headers: list[tuple[str, str]], body: bytes) -> tuple[str, bytes]:
    """One HTTP/2 request with prior knowledge: (status, body)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        # Outbound validation off: tests send requests a careful client would not.
        config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=not body)
        if body:
            conn.send_data(1, body, end_stream=True)
        s.sendall(conn.data_to_send())
        status, data = "", b""
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status, data
            s.sendall(conn.data_to_send())


def test_h2_declared_length_over_the_limit_is_413(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"max_body_size": "1KiB"}))
    headers = [
        (":method", "POST"),
        (":path", "/"),
        (":scheme", "http"),
        (":authority", "h2.test"),
        ("content-length", "2000"),
    ]
    status, _ = h2_exchange(addr(engine), headers, b"x" * 2000)
    assert status == "413"
    assert origin.connections == 0


def test_h2_authority_and_host_must_agree(proxy: Engine, origin: Origin) -> None:
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a.test"), ("host", "b.test")]
    status, _ = h2_exchange(addr(proxy), headers, b"")
    assert status == "400"
    assert origin.connections == 0


def test_respond_route_answers_without_upstream(origin: Origin, start_proxy: StartProxy) -> None:
    config = proxy_config(
        origin.addr,
        routes=[
            {"path_prefix": "/healthz", "respond": {"status": 200, "body": "ok\n", "headers": {"X-Check": "1"}}},
            {"path_prefix": "/api/", "upstream": "app"},
        ],
    )
    engine = start_proxy(config)
    resp = request(addr(engine), "GET", "/healthz")
    assert (resp.status, resp.body, resp.header("x-check")) == (200, b"ok\n", "1")
    assert request(addr(engine), "GET", "/api/x").status == 200
    missing = request(addr(engine), "GET", "/elsewhere")
    assert missing.status == 404
    assert missing.body == b"404 Not Found\n"
    assert len(origin.requests) == 1
