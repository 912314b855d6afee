"""Fixtures: a real origin server and real engines on 127.0.0.1:0."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

sys.path.insert(0, str(Path(__file__).parent))

import rproxy
from rproxy.engine import Engine
from support.origin import Origin

StartProxy = Callable[..., Engine]


def proxy_config(
    origin_addr: str | list[str],
    server: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A one-pool configuration in front of ``origin_addr``."""
    servers = [origin_addr] if isinstance(origin_addr, str) else origin_addr
    return {
        "server": {"listen": ["127.0.0.1:0"], "workers": 1, "shutdown_timeout": "2s", **(server or {})},
        "upstreams": {"app": {"servers": servers, **(upstream or {})}},
        "routes": routes or [{"path_prefix": "/", "upstream": "app"}],
    }


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as o:
        yield o


@pytest.fixture
def start_proxy() -> Iterator[StartProxy]:
    """Start engines from a config dict (or TOML text); all stop at teardown."""
    engines: list[Engine] = []

    def start(config: dict[str, Any] | str) -> Engine:
        text = config if isinstance(config, str) else tomli_w.dumps(config)
        engine = Engine(rproxy.loads(text))
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


@pytest.fixture
def proxy(origin: Origin, start_proxy: StartProxy) -> Engine:
    """An engine forwarding everything to ``origin``."""
    return start_proxy(proxy_config(origin.addr))
