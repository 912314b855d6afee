"""Fixtures: a real origin server and real engines on 127.0.0.1:0.

The kit's own fixtures (``rproxy_engine``, ``rproxy_origin``) come from
``rproxy.testing.pytest_plugin``; these are shorter names for the engine's
own tests, which use them everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rproxy.engine import Engine
from rproxy.testing import proxy_config as _kit_config
from rproxy.testing.origin import Origin

StartProxy = Callable[..., Engine]


def proxy_config(
    origin_addr: str | list[str],
    server: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A one-pool configuration in front of ``origin_addr`` (no plugins)."""
    config = _kit_config(origin_addr, server=server, routes=routes)
    config["upstreams"]["app"].update(upstream or {})
    return config


@pytest.fixture
def origin(rproxy_origin: Origin) -> Origin:
    return rproxy_origin


@pytest.fixture
def start_proxy(rproxy_engine: StartProxy) -> StartProxy:
    """Start engines from a config dict (or TOML text); all stop at teardown.
    ``native=False`` runs the built-ins' Python reference implementations."""

    def start(config: Any, plugins: Sequence[Any] = (), native: bool = True) -> Engine:
        return rproxy_engine(config, plugins=plugins, native=native)

    return start


@pytest.fixture
def proxy(request: pytest.FixtureRequest, origin: Origin, start_proxy: StartProxy) -> Iterator[Engine]:
    """An engine forwarding everything to ``origin``; parametrize it
    indirectly with ``False`` to run the built-ins' Python reference
    implementations (``native=False``)."""
    native: bool = getattr(request, "param", True)
    yield start_proxy(proxy_config(origin.addr), native=native)
