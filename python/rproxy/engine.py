"""Running the engine inside this Python process.

``rproxy run`` starts worker processes; this module is for embedding one
engine in a program or a test::

    with Engine(rproxy.load("proxy.toml")) as engine:
        print(engine.addresses)   # ["127.0.0.1:8080"]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rproxy import _engine
from rproxy.config import Address, Config
from rproxy.plan import Plan, build_plan
from rproxy.plugins import LoadedPlugins, load_plugins

__all__ = ["Engine"]


def engine_json(
    config: Config,
    plan: Plan,
    listen: Sequence[Address] | None = None,
    workers: int = 1,
    stats_file: Path | None = None,
) -> str:
    """The engine's configuration for one process; ``natives`` names the
    built-ins whose compiled forms the engine runs (the native steps of
    ``plan``). With ``stats_file`` the engine writes its hook, upstream and
    cache statistics there every second."""
    doc = config.engine_config(listen=listen, workers=workers)
    doc["natives"] = sorted({s.native for steps in plan.steps.values() for s in steps if s.native is not None})
    if stats_file is not None:
        doc["server"]["stats_file"] = str(stats_file)
    return json.dumps(doc)


class Engine:
    """One engine serving ``config`` (and its plugins) on a background thread.

    ``plugins`` adds ``(name, plugin)`` pairs to those the configuration
    loads (the test kit uses it). ``native=False`` runs the built-ins'
    Python reference implementations instead of the engine's compiled forms.
    """

    def __init__(self, config: Config, plugins: Sequence[tuple[str, Any]] = (), native: bool = True) -> None:
        self.config = config
        self.plugins: LoadedPlugins = load_plugins(config, extra=plugins)
        self.plan = build_plan(self.plugins, native=native)
        # Without a Python step on the request path the engine gets no plan
        # at all, and never enters the interpreter.
        plan = self.plan if self.plan.python_steps() else None
        self._native = _engine.Engine(engine_json(config, self.plan), plan)
        self.addresses: list[str] = []

    def start(self) -> list[str]:
        """Run the startup hooks, bind and start serving; returns the bound
        "host:port" addresses."""
        self.plugins.pm.hook.rproxy_startup()
        self.addresses = self._native.start()
        return self.addresses

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, wait, then run the
        shutdown hooks."""
        if self._native.is_running() or self.addresses:
            self._native.stop()
            self.addresses = []
            self.plugins.pm.hook.rproxy_shutdown()
            self.plan.runtime.close()

    def hook_stats(self) -> list[dict[str, Any]]:
        """Counters of every hook step (see ``rproxy hooks --stats``)."""
        return self._native.hook_stats()

    def upstream_stats(self) -> list[dict[str, Any]]:
        """Each pool's counters and its servers' state in this engine (see
        ``rproxy upstreams`` and docs/load-balancing.md)."""
        return self._native.upstream_stats()

    def cache_stats(self) -> dict[str, Any] | None:
        """This engine's cache store (docs/caching.md): ``bytes`` held
        (bodies, fields and keys, roughly), its bound ``max_size`` and the
        number of ``keys``; ``None`` without a ``[cache]`` table."""
        return self._native.cache_stats()

    @property
    def url(self) -> str:
        """``http://host:port`` of the first listener."""
        return f"http://{self.addresses[0]}"

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
