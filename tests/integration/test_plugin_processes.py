"""Plugins under ``rproxy run``: loaded in every worker, startup and
shutdown hooks per worker, statistics read by ``rproxy hooks --stats``."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import tomli_w

from rproxy.testing import proxy_config
from rproxy.testing.origin import Origin

from support.client import Reader, build, connect, request
from support.process import RproxyProcess

PLUGIN = """\
import os
from pathlib import Path

MARKS = Path(__file__).parent.parent / "marks"


def rproxy_startup():
    MARKS.mkdir(exist_ok=True)
    (MARKS / f"start-{os.getpid()}").touch()


def rproxy_shutdown():
    (MARKS / f"stop-{os.getpid()}").touch()


def rproxy_response(response):
    response.headers.set("X-Worker", str(os.getpid()))
"""


def test_workers_run_plugins_and_report_statistics(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "marker.py").write_text(textwrap.dedent(PLUGIN))
    with Origin() as origin:
        config = tmp_path / "proxy.toml"
        config.write_text(
            tomli_w.dumps(proxy_config(origin.addr, server={"workers": 2}, plugins={"dirs": ["plugins"]}))
        )
        proc = RproxyProcess(config)
        try:
            workers = proc.wait_workers(2)
            pids = {request(proc.addr, "GET", f"/{i}").header("x-worker") for i in range(40)}
            assert pids <= {str(w) for w in workers} and pids
            time.sleep(1.5)  # workers write their counters every second
            out = subprocess.run(
                [sys.executable, "-m", "rproxy", "hooks", "--stats", str(config)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "2 worker(s) reporting" in out
            (row,) = [line for line in out.splitlines() if line.startswith("rproxy_response")]
            assert row.split()[1:4] == ["marker", "40", "0"], row
        finally:
            assert proc.stop(signal.SIGTERM) == 0
    marks = sorted(p.name.split("-")[0] for p in (tmp_path / "marks").iterdir())
    assert marks == ["start", "start", "stop", "stop"], "startup and shutdown ran once in each worker"
    out = subprocess.run(
        [sys.executable, "-m", "rproxy", "hooks", "--stats", str(config)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1 and "no running proxy" in out.stderr


def test_run_refuses_a_broken_plugin_before_binding(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "typo.py").write_text("def rproxy_respnse(response):\n    pass\n")
    config = tmp_path / "proxy.toml"
    config.write_text(tomli_w.dumps(proxy_config(plugins={"dirs": ["plugins"]})))
    out = subprocess.run(
        [sys.executable, "-m", "rproxy", "run", "proxy.toml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr == (
        'plugins/typo.py:1:1: error: plugin "typo": unknown hook "rproxy_respnse" (did you mean "rproxy_response"?)\n'
    )
    assert out.stdout == ""


FLAKY = """\
count = 0


def rproxy_request_filter(request):
    global count
    count += 1
    if count % 2 == 0:
        raise ValueError("every other request")
"""


def test_a_raising_plugin_never_restarts_the_worker(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "flaky.py").write_text(FLAKY)
    with Origin() as origin:
        config = tmp_path / "proxy.toml"
        config.write_text(
            tomli_w.dumps(proxy_config(origin.addr, server={"workers": 1}, plugins={"dirs": ["plugins"]}))
        )
        proc = RproxyProcess(config)
        try:
            (worker,) = proc.wait_workers(1)
            statuses: dict[int, int] = {}
            with connect(proc.addr) as s:
                reader = Reader(s)
                for i in range(1000):
                    s.sendall(build("GET", f"/{i}"))
                    status = reader.response().status
                    statuses[status] = statuses.get(status, 0) + 1
            assert statuses == {200: 500, 500: 500}
            assert proc.workers() == [worker], "the same worker served every request"
            assert "exited" not in proc.stderr
            line = "plugin 'flaky' failed in rproxy_request_filter: ValueError"
            deadline = time.monotonic() + 5  # stderr is read by a thread
            while proc.stderr.count(line) < 500 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.stderr.count(line) == 500
        finally:
            assert proc.stop() == 0
