"""Upgrades: WebSocket is tunnelled once the upstream answers 101; an
`Upgrade: h2c` request never becomes a tunnel."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

from rproxy.testing.origin import Origin, Received, Reply, Takeover

from conftest import StartProxy, proxy_config
from support.client import Reader, build, connect, request

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _read_exactly(sock: socket.socket, buf: bytes, n: int) -> tuple[bytes, bytes]:
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        buf += data
    return buf[:n], buf[n:]


def read_frame(sock: socket.socket, buf: bytes) -> tuple[int, bytes, bytes]:
    """Read one WebSocket frame: (opcode, payload, leftover)."""
    head, buf = _read_exactly(sock, buf, 2)
    opcode, length, masked = head[0] & 0x0F, head[1] & 0x7F, head[1] & 0x80
    if length == 126:
        ext, buf = _read_exactly(sock, buf, 2)
        length = struct.unpack("!H", ext)[0]
    elif length == 127:
        ext, buf = _read_exactly(sock, buf, 8)
        length = struct.unpack("!Q", ext)[0]
    mask = b""
    if masked:
        mask, buf = _read_exactly(sock, buf, 4)
    payload, buf = _read_exactly(sock, buf, length)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buf


def frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    length = (
        bytes([n])
        if n < 126
        else (bytes([126]) + struct.pack("!H", n) if n < 65536 else bytes([127]) + struct.pack("!Q", n))
    )
    if not mask:
        return head + length + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + bytes([length[0] | 0x80]) + length[1:] + key + masked


def ws_echo(sock: socket.socket, buf: bytes, req: Received) -> None:
    key = req.header("sec-websocket-key") or ""
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    sock.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    while True:
        opcode, payload, buf = read_frame(sock, buf)
        if opcode == 8:
            sock.sendall(frame(8, payload, mask=False))
            return
        sock.sendall(frame(opcode, payload, mask=False))


def handler(req: Received) -> Reply | Takeover | bytes:
    if req.header("upgrade") == "websocket":
        return Takeover(ws_echo)
    if req.target == "/force101":
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    return Reply(200, [], b"plain")


def test_websocket_echo(start_proxy: StartProxy) -> None:
    with Origin(handler) as origin:
        engine = start_proxy(proxy_config(origin.addr))
        key = base64.b64encode(os.urandom(16)).decode()
        with connect(engine.addresses[0]) as s:
            s.sendall(
                build(
                    "GET",
                    "/chat",
                    [
                        ("Connection", "Upgrade"),
                        ("Upgrade", "websocket"),
                        ("Sec-WebSocket-Key", key),
                        ("Sec-WebSocket-Version", "13"),
                    ],
                )
            )
            reader = Reader(s)
            resp = reader.response()
            assert resp.status == 101
            assert resp.header("upgrade") == "websocket"
            assert resp.header("connection") == "upgrade"
            buf = reader.buf
            for message in [b"hello", b"x" * 70_000, "héllo".encode()]:
                s.sendall(frame(1, message, mask=True))
                opcode, payload, buf = read_frame(s, buf)
                assert (opcode, payload) == (1, message)
            s.sendall(frame(8, b"\x03\xe8", mask=True))
            opcode, _, buf = read_frame(s, buf)
            assert opcode == 8
        (seen,) = origin.requests
        assert seen.header("upgrade") == "websocket"
        assert seen.header("connection") == "upgrade"


def test_h2c_upgrade_is_never_a_tunnel(start_proxy: StartProxy) -> None:
    with Origin(handler) as origin:
        engine = start_proxy(proxy_config(origin.addr))
        upgrade = [
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ]
        resp = request(engine.addresses[0], "GET", "/", upgrade)
        assert resp.status == 200
        assert resp.body == b"plain"
        (seen,) = origin.requests
        names = {k.lower() for k, _ in seen.headers}
        assert not names & {"upgrade", "connection", "http2-settings"}
        # An upstream that switches protocols uninvited is refused.
        assert request(engine.addresses[0], "GET", "/force101", upgrade).status == 502
