"""A worker process: ``python -m rproxy.worker``, started by the master.

It reads the engine configuration (JSON) from stdin, binds its own
listeners on the ports the master reserved (SO_REUSEPORT), reports
"ready" on the file descriptor named by ``RPROXY_READY_FD``, and serves
until SIGTERM or SIGINT, which the engine handles by draining.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from rproxy import _engine

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to send SIGTERM if the master dies first."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    master = int(os.environ.get("RPROXY_MASTER_PID", "0"))
    if master and os.getppid() != master:
        sys.exit(0)  # The master died before we could ask.


def main() -> int:
    _die_with_parent()
    # The engine handles SIGTERM/SIGINT itself (it drains first); Python's
    # own SIGINT handler would raise KeyboardInterrupt once it returns.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config_json = sys.stdin.read()
    ready_fd = int(os.environ.get("RPROXY_READY_FD", "-1"))

    def on_ready(addresses: list[str]) -> None:
        if ready_fd >= 0:
            os.write(ready_fd, f"ready {os.getpid()}\n".encode())
            os.close(ready_fd)

    try:
        engine = _engine.Engine(config_json)
        engine.serve(on_ready)
    except OSError as e:
        print(f"rproxy: worker {os.getpid()}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
