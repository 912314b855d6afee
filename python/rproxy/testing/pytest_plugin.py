"""pytest fixtures of rproxy (registered through the ``pytest11`` entry point).

``rproxy_engine(config, plugins=[...])`` starts a real engine on
127.0.0.1:0 — ``config`` is TOML text, a dict (see
:func:`rproxy.testing.proxy_config`) or a loaded config — and stops it when
the test ends; ``native=False`` runs the built-ins' Python reference
implementations instead of the engine's compiled forms. ``rproxy_origin`` is a real origin server on 127.0.0.1:0
that records every connection, byte and request it receives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from rproxy.config import Config
from rproxy.engine import Engine
from rproxy.testing import _as_config, plugin_pairs
from rproxy.testing.origin import Origin

StartEngine = Callable[..., Engine]


@pytest.fixture
def rproxy_origin() -> Iterator[Origin]:
    """A real origin server on 127.0.0.1:0 (``.addr`` is "127.0.0.1:PORT")."""
    with Origin() as origin:
        yield origin


@pytest.fixture
def rproxy_engine() -> Iterator[StartEngine]:
    """Start real engines: ``rproxy_engine(config, plugins=[...], native=True)``; all stop at teardown."""
    engines: list[Engine] = []

    def start(config: str | Mapping[str, Any] | Config, plugins: Sequence[Any] = (), native: bool = True) -> Engine:
        engine = Engine(_as_config(config), plugins=plugin_pairs(plugins), native=native)
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()
