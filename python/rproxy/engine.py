"""Running the engine inside this Python process.

``rproxy run`` starts worker processes; this module is for embedding one
engine in a program or a test::

    with Engine(rproxy.load("proxy.toml")) as engine:
        print(engine.addresses)   # ["127.0.0.1:8080"]
"""

from __future__ import annotations

import json
from types import TracebackType

from rproxy import _engine
from rproxy.config import Config

__all__ = ["Engine"]


class Engine:
    """One engine serving ``config`` on a background thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._native = _engine.Engine(json.dumps(config.engine_config()))
        self.addresses: list[str] = []

    def start(self) -> list[str]:
        """Bind and start serving; returns the bound "host:port" addresses."""
        self.addresses = self._native.start()
        return self.addresses

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, and wait."""
        if self._native.is_running() or self.addresses:
            self._native.stop()
            self.addresses = []

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
