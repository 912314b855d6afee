"""Strict parsing (RFC 9112): every ambiguous or malformed request gets the
right status, the connection is closed, and nothing reaches the upstream."""

from __future__ import annotations

import pytest

from rproxy.engine import Engine
from rproxy.testing.origin import Origin

from conftest import StartProxy, proxy_config
from support.client import exchange_raw

H = "Host: test.local\r\n"

CASES = [
    # (id, raw request, expected status)
    ("cl-and-te", f"POST / HTTP/1.1\r\n{H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("differing-cl", f"POST / HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("repeated-cl", f"POST / HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-list", f"POST / HTTP/1.1\r\n{H}Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-sign", f"POST / HTTP/1.1\r\n{H}Content-Length: +5\r\n\r\nhello", 400),
    ("cl-hex", f"POST / HTTP/1.1\r\n{H}Content-Length: 0x5\r\n\r\nhello", 400),
    ("te-identity", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: identity\r\n\r\n", 400),
    ("te-chunked-not-last", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    ("te-twice", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te-xchunked", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("te-space-colon", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk-size-bad", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-space", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
    (
        "chunk-size-overflow",
        f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    ("chunk-bare-lf", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-overrun", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
    ("nul-in-value", f"GET / HTTP/1.1\r\n{H}X-A: a\x00b\r\n\r\n", 400),
    ("cr-in-value", f"GET / HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n", 400),
    ("obs-fold", f"GET / HTTP/1.1\r\n{H}X-A: a\r\n  folded\r\n\r\n", 400),
    ("space-before-colon", f"GET / HTTP/1.1\r\n{H}X-A : a\r\n\r\n", 400),
    ("no-host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("two-hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
    ("bad-host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("userinfo-host", "GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n", 400),
    ("bad-version", f"GET / HTTP/1.2\r\n{H}\r\n", 505),
    ("garbage-version", f"GET / HTTQ/1.1\r\n{H}\r\n", 400),
    ("relative-target", f"GET index.html HTTP/1.1\r\n{H}\r\n", 400),
    ("expect-other", f"GET / HTTP/1.1\r\n{H}Expect: teapot\r\n\r\n", 417),
    ("connect", f"CONNECT test.local:443 HTTP/1.1\r\n{H}\r\n", 405),
    ("uri-too-long", f"GET /{'a' * 9000} HTTP/1.1\r\n{H}\r\n", 414),
    ("header-too-large", f"GET / HTTP/1.1\r\n{H}X-Big: {'v' * 70000}\r\n\r\n", 431),
    ("too-many-headers", f"GET / HTTP/1.1\r\n{H}" + "".join(f"X-{i}: v\r\n" for i in range(101)) + "\r\n", 431),
]


@pytest.mark.parametrize(("raw", "status"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_and_never_forwarded(proxy: Engine, origin: Origin, raw: str, status: int) -> None:
    resp, closed = exchange_raw(proxy.addresses[0], raw.encode("latin-1"))
    assert resp is not None, "expected an error response"
    assert resp.status == status, resp
    assert resp.header("connection") == "close"
    assert closed, "the connection must be closed after an ambiguous request"
    assert origin.connections == 0
    assert origin.bytes_received == 0


def test_body_over_max_body_size(origin: Origin, start_proxy: StartProxy) -> None:
    engine = start_proxy(proxy_config(origin.addr, server={"max_body_size": "40KiB"}))
    resp, closed = exchange_raw(engine.addresses[0], (f"POST / HTTP/1.1\r\n{H}Content-Length: 40961\r\n\r\n").encode())
    assert resp is not None and resp.status == 413 and closed
    # Chunked: the limit is enforced while reading (here within request_buffer_size).
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    raw = f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n".encode() + chunk * 4 + b"0\r\n\r\n"
    resp, closed = exchange_raw(engine.addresses[0], raw)
    assert resp is not None and resp.status == 413 and closed
    assert origin.bytes_received == 0


def test_oversized_chunked_body_after_buffer_is_cut_off(origin: Origin, start_proxy: StartProxy) -> None:
    """Past request_buffer_size the body streams; exceeding the limit then
    aborts the upstream request, which the upstream sees as incomplete."""
    engine = start_proxy(proxy_config(origin.addr, server={"max_body_size": "200KiB", "request_buffer_size": "16KiB"}))
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    raw = f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n".encode() + chunk * 8 + b"0\r\n\r\n"
    resp, closed = exchange_raw(engine.addresses[0], raw)
    assert resp is not None and resp.status == 413 and closed
    assert origin.requests == [], "the upstream never received a complete request"


def test_valid_request_after_rejections_still_works(proxy: Engine, origin: Origin) -> None:
    resp, _ = exchange_raw(proxy.addresses[0], f"GET /ok HTTP/1.1\r\n{H}Connection: close\r\n\r\n".encode())
    assert resp is not None and resp.status == 200
    assert origin.requests[0].target == "/ok"
