"""A small, real HTTP/1.1 origin server for tests.

It listens on 127.0.0.1:0, serves each connection on its own thread, and
records exactly what arrives: every connection, every byte, every request
(head fields in order, body length and digest). A test decides the replies
with a handler, which may return a :class:`Reply`, raw bytes (to send
malformed responses), or a :class:`Takeover` that gets the socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

KEEP_BODY = 1 << 20


@dataclass
class Received:
    """One request as the origin received it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    body_len: int
    body_sha256: str
    chunked: bool
    trailers: list[tuple[str, str]]
    conn_id: int

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Reply:
    """A well-formed response. ``body`` may be an iterable of chunks; it is
    sent with ``length`` as Content-Length, or chunked when that is None."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None
    trailers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    close: bool = False


@dataclass
class Takeover:
    """Hand the connection to ``run(sock, buffered_bytes, request)``."""

    run: Callable[[socket.socket, bytes, Received], None]


Handler = Callable[[Received], "Reply | bytes | Takeover"]


def default_handler(req: Received) -> Reply:
    return Reply(200, [("Content-Type", "text/plain")], f"origin saw {req.method} {req.target}\n".encode())


class _Closed(Exception):
    pass


class Origin:
    """The server. Use as a context manager or call :meth:`close`."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or default_handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self.connections = 0
        self.bytes_received = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Origin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        # Closing alone does not wake the thread blocked in accept(), which
        # would go on accepting; shutting the listener down does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self._closed:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                conn_id = self.connections
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, conn_id), daemon=True).start()

    def _recv(self, sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            raise _Closed
        with self._lock:
            self.bytes_received += len(data)
        return data

    def _serve(self, sock: socket.socket, conn_id: int) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    buf += self._recv(sock)
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = [(k, v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
                req, buf = self._read_body(sock, buf, method, target, version, headers, conn_id)
                with self._lock:
                    self.requests.append(req)
                reply = self.handler(req)
                if isinstance(reply, Takeover):
                    reply.run(sock, buf, req)
                    return
                if isinstance(reply, bytes):
                    sock.sendall(reply)
                    continue
                if self._send(sock, req, reply) or (req.header("connection") or "").lower() == "close":
                    return
        except (_Closed, OSError, ValueError):
            pass
        finally:
            sock.close()

    def _read_body(
        self,
        sock: socket.socket,
        buf: bytes,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        conn_id: int,
    ) -> tuple[Received, bytes]:
        te = next((v for k, v in headers if k.lower() == "transfer-encoding"), None)
        cl = next((v for k, v in headers if k.lower() == "content-length"), None)
        digest = hashlib.sha256()
        kept = bytearray()
        total = 0
        trailers: list[tuple[str, str]] = []

        def take(data: bytes) -> None:
            nonlocal total
            total += len(data)
            digest.update(data)
            if len(kept) < KEEP_BODY:
                kept.extend(data[: KEEP_BODY - len(kept)])

        if te is not None:
            while True:
                while b"\r\n" not in buf:
                    buf += self._recv(sock)
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
                        buf += self._recv(sock)
                    if buf.startswith(b"\r\n"):
                        buf = buf[2:]
                    else:
                        section, buf = buf.split(b"\r\n\r\n", 1)
                        for line in section.decode("latin-1").split("\r\n"):
                            k, v = line.split(":", 1)
                            trailers.append((k, v.strip()))
                    break
                while len(buf) < size + 2:
                    buf += self._recv(sock)
                take(buf[:size])
                buf = buf[size + 2 :]
        elif cl is not None:
            left = int(cl)
            while left:
                if not buf:
                    buf = self._recv(sock)
                piece, buf = buf[:left], buf[left:]
                take(piece)
                left -= len(piece)
        req = Received(
            method, target, version, headers, bytes(kept), total, digest.hexdigest(), te is not None, trailers, conn_id
        )
        return req, buf

    def _send(self, sock: socket.socket, req: Received, reply: Reply) -> bool:
        if reply.delay:
            time.sleep(reply.delay)
        lines = [f"HTTP/1.1 {reply.status} Reason"] + [f"{k}: {v}" for k, v in reply.headers]
        body = reply.body
        no_body = req.method == "HEAD" or reply.status in (204, 304) or reply.status < 200
        chunked = False
        if isinstance(body, bytes):
            if not no_body or req.method == "HEAD":
                lines.append(f"Content-Length: {len(body)}")
        elif reply.length is not None:
            lines.append(f"Content-Length: {reply.length}")
        else:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        if reply.close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if no_body:
            sock.sendall(head)
            return reply.close
        if isinstance(body, bytes):
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            for piece in body:
                if chunked:
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    sock.sendall(piece)
            if chunked:
                tail = "".join(f"{k}: {v}\r\n" for k, v in reply.trailers)
                sock.sendall(b"0\r\n" + tail.encode() + b"\r\n")
        return reply.close
