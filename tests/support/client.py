"""Raw-socket HTTP/1.1 client helpers: tests control every byte they send
and see every byte they get back."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    """One parsed response."""

    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def connect(addr: str, timeout: float = 5.0) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def build(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str | None = "test.local",
) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Reader:
    """Reads responses from a socket, keeping what it over-reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        self.buf += data
        return bool(data)

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._more():
                raise EOFError(f"connection closed before {sep!r}; have {self.buf[:200]!r}")
        line, self.buf = self.buf.split(sep, 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, method: str = "GET") -> Response:
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        version, status, *reason = head[0].split(" ", 2)
        headers = [(k, v.strip()) for k, v in (line.split(":", 1) for line in head[1:])]
        resp = Response(int(status), reason[0] if reason else "", version, headers, b"")
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
            return resp
        if te is not None:
            assert te.lower() == "chunked", te
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    break
                parts.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n"
            while True:
                line = self._until(b"\r\n")
                if not line:
                    break
                k, v = line.decode("latin-1").split(":", 1)
                resp.trailers.append((k, v.strip()))
            resp.body = b"".join(parts)
        elif cl is not None:
            resp.body = self._exactly(int(cl))
        else:
            while self._more():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout: float = 3.0) -> bool:
        """Whether the peer closes the connection within ``timeout`` (data is discarded)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False


def request(
    addr: str,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str | None = "test.local",
) -> Response:
    """Send one request on a new connection and read the response."""
    with connect(addr) as sock:
        sock.sendall(build(method, target, headers, body, version, host))
        return Reader(sock).response(method)


def exchange_raw(addr: str, data: bytes, timeout: float = 5.0) -> tuple[Response | None, bool]:
    """Send raw bytes; return the first response (if any) and whether the
    server then closed the connection."""
    with connect(addr, timeout) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        try:
            resp = reader.response()
        except EOFError:
            return None, True
        return resp, reader.closed(timeout)
