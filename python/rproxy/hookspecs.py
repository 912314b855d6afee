"""The hooks rproxy calls, grouped by phase. Specifications only.

A plugin is a module (or object) with functions named after these hooks.
It may take any subset of a hook's arguments, by name::

    def rproxy_response(response):
        response.headers.set("X-Served-By", "rproxy")

Every docstring below has the same sections: **When** it runs, what its
**Result** means, what happens by **Default** (when no plugin answers), and
on which **Thread** it runs. "The engine thread" is the worker's own thread:
a plain ``def`` hook runs there, inline, between two steps of the engine
(keep it quick: while it runs, that worker serves nothing else). An
``async def`` hook runs on the worker's asyncio loop thread instead, and the
engine awaits it with a timeout while other requests keep flowing.

The names are the API: parameters may be added, meanings never change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rproxy._engine import Request, Response
    from rproxy.config import Config
    from rproxy.plan import Candidate, ErrorInfo, Route

hookspec = pluggy.HookspecMarker("rproxy")

# ---------------------------------------------------------------- lifecycle


@hookspec
def rproxy_configure(config: Config, options: dict[str, Any]) -> None:
    """Check and take this plugin's configuration.

    When: once per process that loads the plugins — ``rproxy check``, the
    master of ``rproxy run`` and each worker — after every plugin is loaded,
    before anything binds. Each plugin is called on its own, with ``options``
    set to its own ``[plugins.NAME]`` table (without the keys rproxy itself
    reads there: ``on_error`` and ``timeout``).

    Result: ignored. Raise :class:`rproxy.ConfigError` to reject the
    configuration; ``ConfigError("message", key="name")`` points the error at
    that key of the plugin's table.

    Default: nothing.

    Thread: the main thread.
    """


@hookspec
def rproxy_startup() -> None:
    """Prepare to serve: open connections, start background work.

    When: once in each worker process, after configure and before the
    worker accepts connections.

    Result: ignored. An exception stops the worker from starting.

    Default: nothing.

    Thread: the worker's main thread.
    """


@hookspec
def rproxy_shutdown() -> None:
    """Release what startup acquired.

    When: once in each worker process, after it stopped accepting and its
    in-flight requests finished (or the grace period ran out).

    Result: ignored; an exception is logged.

    Default: nothing.

    Thread: the worker's main thread.
    """


# ---------------------------------------------------------------- request side


@hookspec(firstresult=True)
def rproxy_request_filter(request: Request, ctx: dict[str, Any]) -> Response | None:
    """Look at a request before anything else, and answer it if you like.

    When: for every request, once its head has been read and checked, before
    routing. (Its body has not been read yet.)

    Result: a :class:`rproxy.Response` is sent to the client at once and the
    request goes no further (no upstream sees it); the remaining filters are
    skipped. ``None`` lets the request through to the next filter.

    Default: the request goes on to routing. A filter that raises fails the
    request with 500 (``on_error = "continue"`` in the plugin's table skips
    the filter instead).

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec(firstresult=True)
def rproxy_cache_key(request: Request, ctx: dict[str, Any]) -> str | bool | None:
    """Choose the cache key of a request: which stored responses it may be
    answered with (docs/caching.md).

    When: after the request filters, before routing, for every request; the
    key is used only if the route the request gets caches.

    Result: a string replaces the default key (responses are stored and
    looked up under it; their ``Vary`` still applies); ``False`` bypasses the
    cache for this request (``Cache-Status: rproxy; fwd=bypass``); ``None``
    leaves the choice to the next plugin. Later hooks see the choice as
    ``request.cache_key`` (``None``: the default key). ``PURGE`` always
    removes the default key of its target.

    Default: the built-in ``cache`` (``trylast``, so any plugin's hook runs
    before it) gives the default key, ``scheme://host:port/path?query``: the
    authority the request names (``host[:port]``, from its target or
    ``Host``) lower-cased, trailing dots dropped, with port 80 or 443 by
    scheme when it names none; then the path and query exactly as received.
    A request that names no host is not cached. A hook that raises is logged
    and ignored.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec(firstresult=True)
def rproxy_route(request: Request, ctx: dict[str, Any]) -> Route | None:
    """Decide which pool serves a request.

    When: after the request filters and the cache key.

    Result: a :class:`rproxy.Route` (a pool name, and optionally a new path,
    ``Host`` or a route name for later hooks and header rules) decides;
    ``None`` leaves the decision to the next plugin. The chosen pool is
    visible to later hooks as ``request.upstream_pool``.

    Default: the ``[[routes]]`` of the configuration, first match wins; no
    match is a 404. A hook that raises, or returns an unknown pool, fails
    the request with 500.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec(firstresult=True)
def rproxy_access(request: Request, ctx: dict[str, Any]) -> Response | None:
    """Let a routed request through, or refuse it: authentication, address
    lists, CORS preflights — policy that depends on the route.

    When: after routing decided, for every routed request (those a route
    answers itself with ``respond`` or ``redirect`` included), before the
    server is chosen. ``request.route_name`` names the route (``""`` when a
    hook chose one without naming it) and ``request.upstream_pool`` the
    pool, if any.

    Result: a :class:`rproxy.Response` is sent to the client at once (the
    request never reaches an upstream); ``None`` lets the next plugin decide.

    Default: the built-ins ``headers`` (CORS preflights) and ``auth``, per
    the configuration; otherwise the request goes on. A hook that raises
    fails the request with 500 (it is not let through).

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec(firstresult=True)
def rproxy_select_upstream(
    request: Request, route: Route, candidates: list[Candidate], ctx: dict[str, Any]
) -> str | None:
    """Choose the server of the pool that gets the request.

    When: after routing to a pool and the access checks, for requests that
    go upstream: once per attempt — for the first try and again for each
    retry, each time without the servers already tried.

    ``candidates`` are the servers that may take this attempt, in the order
    configured, as :class:`rproxy.Candidate` (a ``str``, ``"host:port"``,
    with read-only ``weight``, ``backup``, ``in_flight`` and ``ramp``):
    the healthy primaries not yet tried and not at
    ``max_requests_per_server``; if there are none, the healthy backups;
    if there are none either, every primary not yet tried and not at its
    limit, health ignored (docs/load-balancing.md).

    Result: one of ``candidates`` (the candidate itself or its address as a
    plain string) gets the attempt; ``None`` leaves the choice to the next
    plugin.

    Default: the built-in ``balancer`` (``trylast``, so any plugin's hook
    runs before it) chooses by the pool's ``balance``: ``round_robin``,
    ``least_conn``, ``random_two``, ``hash`` or ``first``. Returning an
    address that is not a candidate, or raising, fails the request with 500.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec
def rproxy_upstream_request(request: Request, upstream: str, ctx: dict[str, Any]) -> None:
    """Change the request as it will be sent upstream.

    When: after the server is chosen, before connecting. ``request`` is the
    outbound request: hop-by-hop fields are already gone and
    ``X-Forwarded-*`` and ``Via`` are already added. ``upstream`` is the
    chosen ``"host:port"``.

    Result: ignored. Change ``request.headers`` or ``request.path`` in place.

    Default: the request goes as it is. A hook that raises fails the request
    with 500.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


# ---------------------------------------------------------------- response side


@hookspec
def rproxy_upstream_response(request: Request, response: Response, ctx: dict[str, Any]) -> None:
    """Change a response as it comes from the upstream.

    When: once the upstream's response head has arrived (its body has not),
    before it is cached or sent. Not called for responses the proxy makes
    itself.

    Result: ignored. Change ``response.status`` or ``response.headers`` in place.

    Default: the response goes on as it is. A hook that raises is logged and
    skipped.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec
def rproxy_response(request: Request, response: Response, ctx: dict[str, Any]) -> None:
    """Change the response about to be sent to the client.

    When: for every response the client gets — from an upstream, from a
    ``respond`` route, from a request filter or an error — just before its
    head is written.

    Result: ignored. Change ``response.status`` or ``response.headers`` in place.

    Default: the response is sent as it is. A hook that raises is logged and
    skipped.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec(firstresult=True)
def rproxy_error(request: Request, error: ErrorInfo, ctx: dict[str, Any]) -> Response | None:
    """Make the response for a failed request.

    When: a request failed — no route, an upstream that refused, timed out
    or answered malformed, a hook that raised — and the proxy is about to
    answer with an error status.

    Result: a :class:`rproxy.Response` is sent instead of the default error
    page; ``None`` leaves it to the next plugin.

    Default: a one-line page with the status (``502 Bad Gateway``), which
    says nothing about the upstream. A hook that raises is logged and the
    default page is sent.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """


@hookspec
def rproxy_log(
    request: Request,
    response: Response,
    error: ErrorInfo | None,
    timings: dict[str, float],
    ctx: dict[str, Any],
) -> None:
    """Record a finished request.

    When: after the response has been sent (or the connection failed), off
    the request's path: the client is not kept waiting. ``timings`` holds
    seconds: ``total`` (head read to response sent), ``upstream`` (request
    sent to response head, when there was one) and ``hooks`` (time in Python
    hooks).

    Result: ignored. The views are read-only by now.

    Default: nothing. A hook that raises is logged and skipped.

    Thread: the engine thread (``def``) or the asyncio loop thread (``async def``).
    """
