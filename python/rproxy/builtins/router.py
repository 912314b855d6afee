"""The router: the ``[[routes]]`` of the configuration, first match wins.

The engine runs its compiled form of this table; this reference is what the
test kit (``rproxy.testing``) runs, and it shows the rule in a few lines. It
is ``trylast``, so a plugin's ``rproxy_route`` always gets the first say.
"""

from __future__ import annotations

from typing import Any

from rproxy import _engine
from rproxy._engine import Request
from rproxy.config import Config, RouteSettings
from rproxy.plan import Route, native
from rproxy.plugins import hookimpl

_routes: tuple[RouteSettings, ...] = ()


@hookimpl
def rproxy_configure(config: Config, options: dict[str, Any]) -> None:
    global _routes
    _routes = config.routes


@hookimpl(trylast=True)
@native("router")
def rproxy_route(request: Request) -> Route | None:
    path = request.path
    for route in _routes:
        if path.startswith(route.path_prefix):
            if route.respond is not None:
                r = route.respond
                return Route(respond=_engine.Response(r.status, list(r.headers), r.body))
            return Route(upstream=route.upstream)
    return None
