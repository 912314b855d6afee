"""A worker process: ``python -m rproxy.worker``, started by the master.

It reads its instructions (JSON) from stdin: the configuration text and
path, the listen addresses the master reserved, the number of workers,
where to write hook statistics, and whether the engine runs the built-ins'
compiled forms (``native``). It loads the plugins in its own interpreter,
binds its own listeners on those ports (SO_REUSEPORT), runs the startup
hooks, reports "ready" on the file descriptor named by ``RPROXY_READY_FD``,
and serves until SIGTERM or SIGINT, which the engine handles by draining.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

from rproxy import _engine
from rproxy.config import Address, loads
from rproxy.engine import engine_json
from rproxy.errors import ConfigError
from rproxy.plan import build_plan
from rproxy.plugins import load_plugins

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
    orders = json.loads(sys.stdin.read())
    ready_fd = int(os.environ.get("RPROXY_READY_FD", "-1"))
    try:
        config = loads(orders["config_text"], orders["config_path"])
        plugins = load_plugins(config)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        return 2
    plan = build_plan(plugins, native=orders.get("native", True))
    listen = [Address(host, port) for host, port in orders["listen"]]
    stats_file = Path(orders["stats_dir"]) / f"worker-{os.getpid()}.json" if orders.get("stats_dir") else None
    config_json = engine_json(config, plan, listen=listen, workers=orders["workers"], stats_file=stats_file)

    def on_ready(addresses: list[str]) -> None:
        if ready_fd >= 0:
            os.write(ready_fd, f"ready {os.getpid()}\n".encode())
            os.close(ready_fd)

    try:
        engine = _engine.Engine(config_json, plan if plan.python_steps() else None)
        plugins.pm.hook.rproxy_startup()
        try:
            engine.serve(on_ready)
        finally:
            plugins.pm.hook.rproxy_shutdown()
            plan.runtime.close()
    except OSError as e:
        print(f"rproxy: worker {os.getpid()}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
