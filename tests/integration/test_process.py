"""The process model of ``rproxy run``: workers sharing the port, graceful
drain on SIGTERM, and a dead worker replaced by the master."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from rproxy.testing.origin import Origin, Received, Reply

from conftest import proxy_config
from support.client import request
from support.process import RproxyProcess


def slow_handler(req: Received) -> Reply:
    return Reply(200, [], b"slow done", delay=1.5 if req.target == "/slow" else 0.0)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RproxyProcess, Origin]]:
    with Origin(slow_handler) as origin:
        config = tmp_path / "proxy.toml"
        config.write_text(tomli_w.dumps(proxy_config(origin.addr, server={"workers": 2, "shutdown_timeout": "5s"})))
        proc = RproxyProcess(config)
        try:
            yield proc, origin
        finally:
            proc.stop()


def test_workers_share_the_listener(running: tuple[RproxyProcess, Origin]) -> None:
    proc, origin = running
    assert len(proc.wait_workers(2)) == 2
    assert proc.addr.startswith("127.0.0.1:") and not proc.addr.endswith(":0")
    for i in range(20):
        assert request(proc.addr, "GET", f"/{i}").status == 200
    assert len(origin.requests) == 20


def test_sigterm_drains_in_flight_requests(running: tuple[RproxyProcess, Origin]) -> None:
    proc, origin = running
    result: dict[str, object] = {}

    def slow() -> None:
        resp = request(proc.addr, "GET", "/slow")
        result["status"], result["body"] = resp.status, resp.body

    t = threading.Thread(target=slow)
    t.start()
    origin.wait_requests(1)
    proc.send(signal.SIGTERM)
    t.join(timeout=10)
    assert result == {"status": 200, "body": b"slow done"}, "the in-flight request completes"
    assert proc.proc.wait(timeout=10) == 0
    host, port = proc.addr.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=1)


def test_killed_worker_is_replaced(running: tuple[RproxyProcess, Origin]) -> None:
    proc, _ = running
    before = proc.wait_workers(2)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = proc.workers()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"worker not replaced: {proc.workers()}")
    assert f"worker {victim} exited (signal 9); starting a new one" in proc.stderr
    assert proc.proc.poll() is None, "the master keeps running"
    statuses = {request(proc.addr, "GET", "/").status for _ in range(20)}
    assert statuses == {200}


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        config = tmp_path / "proxy.toml"
        port = taken.getsockname()[1]
        doc = proxy_config("127.0.0.1:9", server={"listen": [f"127.0.0.1:{port}"]})
        config.write_text(tomli_w.dumps(doc))
        out = subprocess.run(
            [sys.executable, "-m", "rproxy", "run", str(config)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert out.returncode == 1
        assert f"rproxy: error: cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        taken.close()
