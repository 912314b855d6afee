"""rproxy: a reverse proxy with a Rust engine and Python policy.

Run it with ``rproxy run proxy.toml``; embed it with :class:`rproxy.engine.Engine`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from rproxy._engine import Headers, Request, Response
from rproxy.config import Config, load, loads
from rproxy.engine import Engine
from rproxy.errors import ConfigError, ConfigIssue, RproxyError
from rproxy.plan import Candidate, ErrorInfo, Route
from rproxy.plugins import hookimpl

try:
    __version__ = version("rproxy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Candidate",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Engine",
    "ErrorInfo",
    "Headers",
    "Request",
    "Response",
    "Route",
    "RproxyError",
    "__version__",
    "hookimpl",
    "load",
    "loads",
]
