"""100 MiB each way through ``rproxy run`` without growing the worker's
memory by more than 16 MiB: bodies stream, they are never buffered whole."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import tomli_w

from rproxy.testing.origin import Origin, Received, Reply

from conftest import proxy_config
from support.client import Reader, build, connect
from support.process import RproxyProcess, peak_rss

MIB = 1 << 20
SIZE = 100 * MIB
BLOCK = os.urandom(MIB)


def handler(req: Received) -> Reply:
    if req.target == "/download":
        return Reply(200, [("Content-Type", "application/octet-stream")], (BLOCK for _ in range(100)), length=SIZE)
    return Reply(200, [], f"{req.body_len} {req.body_sha256}".encode())


@pytest.mark.slow
def test_100_mib_both_ways_with_bounded_memory(tmp_path: Path) -> None:
    with Origin(handler) as origin:
        config = tmp_path / "proxy.toml"
        config.write_text(tomli_w.dumps(proxy_config(origin.addr, server={"workers": 1})))
        proc = RproxyProcess(config)
        try:
            (worker,) = proc.wait_workers(1)
            with connect(proc.addr, timeout=30) as s:
                s.sendall(build("GET", "/warm-up"))
                Reader(s).response()
            baseline = peak_rss(worker)

            expected = hashlib.sha256(BLOCK * 100).hexdigest()
            with connect(proc.addr, timeout=30) as s:
                s.sendall(build("GET", "/download"))
                reader = Reader(s)
                head = reader._until(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert f"content-length: {SIZE}".encode() in head
                digest, got = hashlib.sha256(reader.buf), len(reader.buf)
                while got < SIZE:
                    data = s.recv(1 << 20)
                    assert data, "download cut short"
                    digest.update(data)
                    got += len(data)
                assert got == SIZE and digest.hexdigest() == expected

            with connect(proc.addr, timeout=30) as s:
                s.sendall(build("POST", "/upload", [("Content-Length", str(SIZE))]))
                for _ in range(100):
                    s.sendall(BLOCK)
                resp = Reader(s).response()
                assert resp.body == f"{SIZE} {expected}".encode()

            growth = peak_rss(worker) - baseline
            print(f"worker peak RSS grew by {growth / MIB:.1f} MiB")
            assert growth <= 16 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
        finally:
            assert proc.stop() == 0
