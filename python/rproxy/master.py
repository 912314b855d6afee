"""The master process of ``rproxy run``: reserve the ports, start the
workers, restart any that die, and stop them all gracefully on a signal.

Workers are fresh interpreters (``python -m rproxy.worker``), never forks of
this process. The master binds each listen address without listening on it,
which resolves port 0 and keeps the port reserved; each worker then opens its
own listener on that exact port with SO_REUSEPORT and the kernel spreads
connections between them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rproxy.config import Address, Config
from rproxy.stats import stats_dir

__all__ = ["Master"]

#: Time a worker has to bind its listeners and report ready.
READY_TIMEOUT = 30.0
#: Extra time, beyond ``shutdown_timeout``, before stragglers are killed.
KILL_GRACE = 5.0
#: A worker that dies sooner than this after starting is restarted with backoff.
QUICK_DEATH = 1.0


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    ready_fd: int | None
    started: float
    ready: bool = False
    buffer: bytes = b""


@dataclass
class _State:
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    backoff: float = 0.1
    respawn_at: list[float] = field(default_factory=list)


class Master:
    """Supervises the worker processes of one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int | None = None,
        native: bool = True,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
    ) -> None:
        self.config = config
        self.count = workers or config.server.workers
        self.native = native
        self.out = out
        self.err = err
        self._reserved: list[socket.socket] = []
        self._state = _State()
        self._sel = selectors.DefaultSelector()
        self._orders = ""

    def _log(self, message: str) -> None:
        print(f"rproxy: {message}", file=self.err, flush=True)

    def reserve(self) -> list[Address]:
        """Bind (without listening) every listen address; resolve port 0."""
        out = []
        for addr in self.config.server.listen:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr.host, addr.port))
            except OSError as e:
                s.close()
                raise OSError(e.errno, f"cannot listen on {addr}: {e.strerror}") from None
            self._reserved.append(s)
            out.append(Address(addr.host, s.getsockname()[1]))
        return out

    def _spawn(self) -> _Worker:
        r, w = os.pipe()
        env = dict(os.environ, RPROXY_READY_FD=str(w), RPROXY_MASTER_PID=str(os.getpid()))
        proc = subprocess.Popen(
            [sys.executable, "-m", "rproxy.worker"],
            stdin=subprocess.PIPE,
            pass_fds=(w,),
            env=env,
        )
        os.close(w)
        assert proc.stdin is not None
        try:
            proc.stdin.write(self._orders.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # It died at once; the supervisor loop will notice.
        worker = _Worker(proc=proc, ready_fd=r, started=time.monotonic())
        self._sel.register(r, selectors.EVENT_READ, worker)
        self._state.workers.append(worker)
        return worker

    def _read_ready(self, worker: _Worker) -> None:
        assert worker.ready_fd is not None
        data = os.read(worker.ready_fd, 256)
        worker.buffer += data
        if b"ready" in worker.buffer:
            worker.ready = True
        if worker.ready or not data:
            self._sel.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def _forget(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            self._sel.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None
        self._state.workers.remove(worker)

    def _install_signals(self) -> socket.socket:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda *_: None)
        self._wake_w = wake_w
        self._sel.register(wake_r, selectors.EVENT_READ, None)
        return wake_r

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit status."""
        addresses = self.reserve()
        stats = stats_dir(self.config)
        # Only this user: the workers' control sockets live here too.
        stats.parent.mkdir(mode=0o700, exist_ok=True)
        stats.mkdir(mode=0o700, exist_ok=True)
        for directory in (stats.parent, stats):
            if directory.stat().st_uid != os.getuid():
                raise SystemExit(f"rproxy: error: {directory} belongs to another user; remove it")
            directory.chmod(0o700)
        for old in (*stats.glob("worker-*.json"), *stats.glob("worker-*.sock")):
            old.unlink(missing_ok=True)
        self._orders = json.dumps(
            {
                "config_text": self.config.source,
                "config_path": str(self.config.path.resolve()),
                "listen": [[a.host, a.port] for a in addresses],
                "workers": self.count,
                "stats_dir": str(stats),
                "native": self.native,
            }
        )
        wake = self._install_signals()
        for _ in range(self.count):
            self._spawn()
        if not self._wait_ready(wake):
            self._stop_workers()
            return 1
        for addr in addresses:
            print(f"rproxy: listening on {addr}", file=self.out, flush=True)
        self._supervise(wake)
        self._stop_workers()
        return 0

    def _signals(self, wake: socket.socket) -> list[int]:
        try:
            return list(wake.recv(4096))
        except BlockingIOError:
            return []

    def _wait_ready(self, wake: socket.socket) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(w.ready for w in self._state.workers):
            left = deadline - time.monotonic()
            if left <= 0:
                self._log(f"error: workers did not start within {READY_TIMEOUT:.0f}s")
                return False
            for key, _ in self._sel.select(timeout=min(left, 0.5)):
                if key.data is None:
                    if {signal.SIGTERM, signal.SIGINT} & set(self._signals(wake)):
                        return False
                else:
                    self._read_ready(key.data)
            for w in self._state.workers:
                if w.proc.poll() is not None and not w.ready:
                    self._log(f"error: worker {w.proc.pid} failed to start (exit status {w.proc.returncode})")
                    return False
        return True

    def _supervise(self, wake: socket.socket) -> None:
        st = self._state
        while not st.stopping:
            timeout = 1.0
            if st.respawn_at:
                timeout = max(0.0, min(st.respawn_at) - time.monotonic())
            for key, _ in self._sel.select(timeout=timeout):
                if key.data is None:
                    for sig in self._signals(wake):
                        if sig in (signal.SIGTERM, signal.SIGINT):
                            st.stopping = True
                        elif sig == signal.SIGHUP:
                            self._log("SIGHUP received; configuration reload is not supported yet, ignoring")
                else:
                    self._read_ready(key.data)
            if st.stopping:
                return
            self._reap()
            now = time.monotonic()
            due = [t for t in st.respawn_at if t <= now]
            for t in due:
                st.respawn_at.remove(t)
                worker = self._spawn()
                self._log(f"started worker {worker.proc.pid}")

    def _reap(self) -> None:
        st = self._state
        for w in list(st.workers):
            code = w.proc.poll()
            if code is None:
                continue
            self._forget(w)
            for suffix in ("json", "sock"):  # its statistics, its control socket
                (stats_dir(self.config) / f"worker-{w.proc.pid}.{suffix}").unlink(missing_ok=True)
            how = f"signal {-code}" if code < 0 else f"status {code}"
            lived = time.monotonic() - w.started
            if lived < QUICK_DEATH:
                delay = st.backoff
                st.backoff = min(st.backoff * 2, 5.0)
            else:
                delay = 0.0
                st.backoff = 0.1
            self._log(f"worker {w.proc.pid} exited ({how}); starting a new one")
            st.respawn_at.append(time.monotonic() + delay)

    def _stop_workers(self) -> None:
        workers = [w for w in self._state.workers if w.proc.poll() is None]
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.shutdown_timeout + KILL_GRACE
        for w in workers:
            left = max(0.0, deadline - time.monotonic())
            try:
                w.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self._log(f"worker {w.proc.pid} did not stop in time; killing it")
                w.proc.kill()
                w.proc.wait()
        for w in list(self._state.workers):
            self._forget(w)
        for s in self._reserved:
            s.close()
        signal.set_wakeup_fd(-1)
