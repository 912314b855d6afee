"""Test kit for plugins: no sockets for unit tests, a real engine for the rest.

Unit tests::

    from rproxy.testing import make_request, call_hook, Simulator
    import my_plugin

    def test_filter_blocks():
        req = make_request("GET", "/admin", {"X-Role": "guest"})
        assert call_hook(my_plugin, "rproxy_request_filter", request=req).status == 403

    def test_whole_plan():
        sim = Simulator(plugins=[my_plugin])
        result = sim.request("GET", "/", upstream=Response(200, body="hi"))
        assert result.response.headers["x-tagged"] == "yes"

:class:`Simulator` runs every phase the way the engine does, through
pluggy's own dispatch (which defines the order the engine follows), with the
built-ins' Python reference implementations, against a fake upstream.

Integration tests get pytest fixtures (registered through the ``pytest11``
entry point, so they are there once rproxy is installed): ``rproxy_engine``
starts a real engine on 127.0.0.1:0 with a configuration and plugins, and
``rproxy_origin`` is a real origin server that records what it receives.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import tomli_w

import rproxy
from rproxy._engine import Request, Response
from rproxy.config import Config
from rproxy.plan import Candidate, ErrorInfo, Route
from rproxy.plugins import LoadedPlugins, load_plugins

__all__ = [
    "Simulated",
    "Simulator",
    "call_hook",
    "make_request",
    "make_response",
    "plugin_pairs",
    "proxy_config",
]

Upstream = Response | Callable[[Request], Response]


def make_request(
    method: str = "GET",
    path: str = "/",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    *,
    host: str = "test.local",
    client: str = "127.0.0.1:40000",
    scheme: str = "http",
) -> Request:
    """A request view for unit tests. ``path`` may carry a query; a ``Host``
    field is added unless ``headers`` has one or ``host`` is empty."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    if host and not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("Host", host))
    return Request._for_testing(method, path, pairs, client, scheme)


def make_response(
    status: int = 200,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    body: bytes | str = b"",
) -> Response:
    """A response view for unit tests (the same as ``rproxy.Response``)."""
    return Response(status, headers, body)


def call_hook(plugin: Any, hook: str, **arguments: Any) -> Any:
    """Call ``plugin``'s implementation of ``hook`` with the arguments it
    takes (by name, as pluggy does); ``ctx`` defaults to a new dict."""
    func = getattr(plugin, hook)
    arguments.setdefault("ctx", {})
    wanted = inspect.signature(func).parameters
    return func(**{k: v for k, v in arguments.items() if k in wanted})


def proxy_config(
    upstream: str | list[str] = "127.0.0.1:9",
    *,
    server: Mapping[str, Any] | None = None,
    pools: Mapping[str, Mapping[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    plugins: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A configuration for tests: one listener on 127.0.0.1:0, one worker,
    a pool ``app`` at ``upstream`` and a route from ``/`` to it, and no
    plugin directory (pass ``plugins={"dirs": [...]}`` to load one).
    ``pools`` adds pools or settings of pools, by name."""
    servers = [upstream] if isinstance(upstream, str) else upstream
    upstreams: dict[str, dict[str, Any]] = {"app": {"servers": servers}}
    for name, settings in (pools or {}).items():
        upstreams.setdefault(name, {}).update(settings)
    return {
        "server": {"listen": ["127.0.0.1:0"], "workers": 1, "shutdown_timeout": "2s", **(server or {})},
        "upstreams": upstreams,
        "routes": routes or [{"path_prefix": "/", "upstream": "app"}],
        "plugins": {"dirs": [], **(plugins or {})},
    }


def _load_file(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"rproxy_plugins.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def plugin_pairs(plugins: Sequence[Any]) -> list[tuple[str, Any]]:
    """``(name, plugin)`` pairs from modules, objects, ``.py`` paths, or pairs."""
    out = []
    for p in plugins:
        if isinstance(p, tuple):
            out.append(p)
        elif isinstance(p, str | Path):
            module = _load_file(Path(p))
            out.append((Path(p).stem, module))
        else:
            name = getattr(p, "__name__", type(p).__name__)
            out.append((name.rsplit(".", 1)[-1], p))
    return out


def _as_config(config: str | Mapping[str, Any] | Config | None) -> Config:
    if isinstance(config, Config):
        return config
    if config is None:
        config = proxy_config()
    text = config if isinstance(config, str) else tomli_w.dumps(dict(config))
    return rproxy.loads(text)


@dataclass
class Simulated:
    """What happened to one simulated request. ``cache_key`` is what
    ``rproxy_cache_key`` returned: the built-in ``cache``'s default key
    unless a plugin answered first (``None``: the engine would use its own
    default key)."""

    response: Response
    ctx: dict[str, Any]
    route: Route | None = None
    upstream: str | None = None
    upstream_request: Request | None = None
    error: ErrorInfo | None = None
    logged: bool = False
    cache_key: str | bool | None = None
    calls: list[str] = field(default_factory=list)


class Simulator:
    """Runs the whole hook plan of a configuration for one request at a
    time, without sockets. Plugins raise straight through to the test."""

    def __init__(self, config: str | Mapping[str, Any] | Config | None = None, plugins: Sequence[Any] = ()) -> None:
        self.config = _as_config(config)
        self.plugins: LoadedPlugins = load_plugins(self.config, extra=plugin_pairs(plugins))
        self.hook = self.plugins.pm.hook

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        host: str = "test.local",
        client: str = "127.0.0.1:40000",
        upstream: Upstream | None = None,
        scheme: str = "http",
    ) -> Simulated:
        """Send one request through the plan; ``upstream`` is a response (or a
        function of the outbound request) standing in for the upstream."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if host and not any(k.lower() == "host" for k, _ in pairs):
            pairs.insert(0, ("Host", host))
        req = Request._for_testing(method, path, pairs, client, scheme)
        ctx: dict[str, Any] = {}
        result = Simulated(response=Response(200), ctx=ctx)
        answer = self.hook.rproxy_request_filter(request=req, ctx=ctx)
        if answer is None:
            result.cache_key = self.hook.rproxy_cache_key(request=req, ctx=ctx)
            answer = self._route_and_forward(req, ctx, result, upstream)
        if answer is None:
            error = result.error or ErrorInfo("Internal", "internal", 500, "no response")
            result.error = error
            answer = self.hook.rproxy_error(request=req, error=error, ctx=ctx) or _error_page(error.status)
        self.hook.rproxy_response(request=req, response=answer, ctx=ctx)
        timings = {"total": 0.0, "upstream": 0.0 if result.upstream else None, "hooks": 0.0}
        self.hook.rproxy_log(request=req, response=answer, error=result.error, timings=timings, ctx=ctx)
        result.logged = True
        result.response = answer
        return result

    def _route_and_forward(
        self, req: Request, ctx: dict[str, Any], result: Simulated, upstream: Upstream | None
    ) -> Response | None:
        route: Route | None = self.hook.rproxy_route(request=req, ctx=ctx)
        result.route = route
        if route is None:
            result.error = ErrorInfo("NoRoute", "internal", 404, "no route matches")
            return None
        pool = None
        if route.respond is None:
            pool = self.config.upstreams.get(route.upstream or "")
            if pool is None:
                result.error = ErrorInfo(
                    "Plugin", "plugin", 500, f"a route hook chose an unknown pool {route.upstream!r}"
                )
                return None
        req._set_routing_for_testing(route.name or "", route.upstream if pool else None)
        refusal = self.hook.rproxy_access(request=req, ctx=ctx)
        if refusal is not None:
            return refusal  # type: ignore[no-any-return]
        if route.respond is not None or pool is None:
            return route.respond
        # Every server is up in the kit, and idle: the candidates are the primaries.
        candidates = [Candidate(str(s.address), s.weight, s.backup, 0, 1.0) for s in pool.servers if not s.backup]
        chosen = self.hook.rproxy_select_upstream(request=req, route=route, candidates=candidates, ctx=ctx)
        if chosen is not None and chosen not in candidates:
            result.error = ErrorInfo("Plugin", "plugin", 500, f"{chosen!r} is not a candidate")
            return None
        # The built-in balancer always chooses; without it (disabled) the first candidate does.
        result.upstream = str(chosen) if chosen is not None else str(candidates[0])
        req._set_routing_for_testing(route.name or "", route.upstream, result.upstream)
        outbound = Request._for_testing(
            req.method,
            req.uri,
            req.headers.items(),
            _address(req.remote_addr or "", req.client_port or 0),
            req.scheme,
            True,
            outbound_target=route.path,
            outbound_host=route.host,
            route_name=route.name or "",
            pool=route.upstream,
            upstream=result.upstream,
            request_id=req.id,
        )
        self.hook.rproxy_upstream_request(request=outbound, upstream=result.upstream, ctx=ctx)
        result.upstream_request = outbound
        if upstream is None:
            response = Response(200, {"content-type": "text/plain"}, "from the fake upstream\n")
        elif isinstance(upstream, Response):
            response = upstream
        else:
            response = upstream(outbound)
        if not isinstance(response, Response):
            raise TypeError(f"the fake upstream must return rproxy.Response, not {type(response).__name__}")
        self.hook.rproxy_upstream_response(request=req, response=response, ctx=ctx)
        return response


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _error_page(status: int) -> Response:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return Response(
        status, {"content-type": "text/plain; charset=utf-8", "cache-control": "no-store"}, f"{status} {reason}\n"
    )
