"""The cache under ``rproxy run`` with several workers: each has its own
store, and a purge — a PURGE request or the admin endpoint — reaches all."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import tomli_w

import rproxy
from rproxy.stats import stats_dir
from rproxy.testing import proxy_config
from rproxy.testing.origin import Origin, Received, Reply

from support.client import request
from support.process import RproxyProcess


def cacheable(req: Received) -> Reply:
    return Reply(200, [("Cache-Control", "max-age=600")], f"stored {req.target}".encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_keys(config: Path) -> list[int]:
    """Keys in each reporting worker's store, from their statistics files."""
    out = []
    for f in stats_dir(rproxy.load(config)).glob("worker-*.json"):
        try:
            out.append(json.loads(f.read_text())["cache"]["keys"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def fill(proc: RproxyProcess, config: Path) -> None:
    """Store /a and /b in both workers: new connections land on either."""

    def both_hold_two() -> bool:
        for target in ("/a", "/b"):
            for _ in range(10):
                assert request(proc.addr, "GET", target).status == 200
        keys = worker_keys(config)
        return len(keys) == 2 and all(k == 2 for k in keys)

    assert wait_until(both_hold_two, 20), worker_keys(config)


def test_a_purge_reaches_every_worker(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    with Origin(cacheable) as origin:
        settings = proxy_config(origin.addr, server={"workers": 2})
        settings["routes"][0]["cache"] = True
        settings["cache"] = {"enabled": True, "purge_from": ["127.0.0.1"], "admin": admin}
        config = tmp_path / "proxy.toml"
        config.write_text(tomli_w.dumps(settings))
        proc = RproxyProcess(config)
        try:
            proc.wait_workers(2)
            fill(proc, config)
            # PURGE from an allowed client: this worker's key and the other's.
            assert request(proc.addr, "PURGE", "/a").status == 200
            assert wait_until(lambda: worker_keys(config) == [1, 1]), worker_keys(config)
            served = len(origin.requests)
            assert request(proc.addr, "GET", "/b").status == 200
            assert len(origin.requests) == served, "the rest stays stored"
            # An unsafe request invalidates its target in every worker (RFC 9111 §4.4).
            fill(proc, config)
            assert request(proc.addr, "POST", "/b", body=b"x").status == 200
            assert wait_until(lambda: worker_keys(config) == [1, 1]), worker_keys(config)
            # The admin endpoint: a prefix, everywhere.
            fill(proc, config)
            host, port = admin.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"POST /purge?prefix=http://test.local:80/ HTTP/1.1\r\nHost: admin\r\n\r\n")
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            head, body = reply.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200"), reply
            answer = json.loads(body)
            assert answer["purged"] == 2 and answer["workers_told"] == 1, answer
            assert wait_until(lambda: worker_keys(config) == [0, 0]), worker_keys(config)
            # A web page cannot reach it through a local browser.
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"POST /purge?prefix=http:// HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 403")
        finally:
            assert proc.stop(signal.SIGTERM) == 0
    leftovers = list(stats_dir(rproxy.load(config)).glob("worker-*"))
    assert not leftovers, f"statistics files and control sockets are removed: {leftovers}"
