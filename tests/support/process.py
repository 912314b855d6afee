"""Running ``rproxy run`` as a real process, as a user would."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` in bytes."""
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert m, "no VmHWM"
    return int(m.group(1)) * 1024


class RproxyProcess:
    """``rproxy run CONFIG``; waits for its "listening on" line."""

    def __init__(self, config: Path, *args: str, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rproxy", "run", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: list[str] = []
        assert self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        self.addresses = self._wait_listening(timeout)
        self.addr = self.addresses[0]

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.stderr_lines.append(line)

    def _wait_listening(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if not line:
                    break
                m = re.fullmatch(r"rproxy: listening on (\S+)\n", line)
                assert m, f"unexpected output: {line!r}"
                lines.append(m.group(1))
                # One line per listener; they come together.
                if not sel.select(timeout=0.2):
                    return lines
            if self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"rproxy did not start: {''.join(self.stderr_lines)}")

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def wait_workers(self, n: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == n:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"expected {n} workers, have {self.workers()}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
            raise
