"""The header policy: rule sets, hidden origin fields, the security preset
and CORS (docs/headers.md).

The engine runs its compiled form of this policy; this reference is what
``rproxy run --no-native`` and the test kit (``rproxy.testing``) run, and it
spells out docs/headers.md in plain Python:

- ``rproxy_access`` answers CORS preflights for the route a request took;
- ``rproxy_upstream_request`` applies the request rule sets, global → pool
  → route, each remove → set → add;
- ``rproxy_response`` removes the ``hide`` fields, adds the security preset's
  missing fields, sets the CORS fields, then applies the response rule sets.

Every hook is ``tryfirst``, so a plugin's ordinary hooks run after the rules
and see their result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from rproxy._engine import Headers, Request, Response
from rproxy.config import Config, CorsSettings, HeaderRules, HeadersSettings, RouteSettings, SecuritySettings
from rproxy.errors import ConfigError
from rproxy.plan import native
from rproxy.plugins import hookimpl
from rproxy.routing import normalise_path, parse_template

Template = tuple[tuple[str, str], ...]

PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
REFUSAL_BODY = "CORS origin not allowed\n"


@dataclass(frozen=True)
class _Rules:
    """A rule set with its values parsed."""

    remove: tuple[str, ...] = ()
    set: tuple[tuple[str, Template], ...] = ()
    add: tuple[tuple[str, Template], ...] = ()


def _rules(rules: HeaderRules) -> _Rules:
    return _Rules(
        remove=rules.remove,
        set=tuple((name, parse_template(value)) for name, value in rules.set),
        add=tuple((name, parse_template(value)) for name, value in rules.add),
    )


@dataclass(frozen=True)
class _Route:
    """What a configured route adds: its rule sets and its CORS (``None``: none)."""

    request: _Rules
    response: _Rules
    cors: CorsSettings | None


_settings = HeadersSettings()
_request = _Rules()
_response = _Rules()
_cors: CorsSettings | None = None
_pools: dict[str, tuple[_Rules, _Rules]] = {}
_routes: dict[str, _Route] = {}


@hookimpl
def rproxy_configure(config: Config, options: dict[str, object]) -> None:
    global _settings, _request, _response, _cors, _pools, _routes
    if options:
        raise ConfigError(
            "the headers plugin has no options: it is configured by [headers], [cors], and the "
            "request_headers, response_headers and cors keys of upstreams and routes",
            key=next(iter(options)),
        )
    _settings = config.headers
    _request = _rules(config.headers.request)
    _response = _rules(config.headers.response)
    _cors = config.cors
    _pools = {
        name: (_rules(pool.request_headers), _rules(pool.response_headers)) for name, pool in config.upstreams.items()
    }
    _routes = {route.name: _prepare(route, config.cors) for route in config.routes}


def _prepare(route: RouteSettings, default: CorsSettings | None) -> _Route:
    cors = default if route.cors is None else route.cors or None
    return _Route(request=_rules(route.request_headers), response=_rules(route.response_headers), cors=cors)


# -- which rules and CORS apply --------------------------------------------------


def _rule_sets(request: Request, *, response: bool) -> list[_Rules]:
    """The request (or response) rule sets that apply to ``request``: the
    global one, its pool's if a pool was chosen, its route's if a configured
    route was."""
    out = [_response if response else _request]
    pool = _pools.get(request.upstream_pool or "")
    if pool is not None:
        out.append(pool[1] if response else pool[0])
    route = _routes.get(request.route_name or "")
    if route is not None:
        out.append(route.response if response else route.request)
    return out


def _cors_of(request: Request) -> CorsSettings | None:
    """CORS for the route ``request`` took: a configured route's own (or
    none), the global one for a route a hook chose, none before routing."""
    name = request.route_name
    if name is None:
        return None
    route = _routes.get(name)
    return _cors if route is None else route.cors


# -- templates -----------------------------------------------------------------------


def _uri_parts(request: Request) -> tuple[str, str]:
    """The path and query (without ``?``) the client sent."""
    path, _, query = request.uri.partition("?")
    return path, query


def _path(request: Request) -> str:
    # A path that cannot be normalised gets 400; its response rules see "".
    return normalise_path(_uri_parts(request)[0]) or ""


def _auth_user(ctx: Mapping[str, Any]) -> str:
    """Who the ``auth`` built-in accepted the request as (``""``: nobody)."""
    auth = ctx.get("auth")
    user = auth.get("user", "") if isinstance(auth, dict) else ""
    return user if isinstance(user, str) else ""


VARIABLES: dict[str, Callable[[Request, Mapping[str, Any]], str]] = {
    "client_ip": lambda r, ctx: r.client or "",
    "remote_addr": lambda r, ctx: r.remote_addr or "",
    "host": lambda r, ctx: r.host or "",
    "scheme": lambda r, ctx: r.scheme,
    "method": lambda r, ctx: r.method,
    "path": lambda r, ctx: _path(r),
    "query": lambda r, ctx: _uri_parts(r)[1],
    "request_uri": lambda r, ctx: r.uri,
    "route": lambda r, ctx: r.route_name or "",
    "upstream": lambda r, ctx: r.upstream_pool or "",
    "upstream_addr": lambda r, ctx: r.upstream or "",
    "auth_user": lambda r, ctx: _auth_user(ctx),
    "request_id": lambda r, ctx: r.id,
}


def expand(template: Template, request: Request, ctx: Mapping[str, Any] | None = None) -> str:
    """``template`` with its variables replaced by this request's values
    (``ctx`` is the request's, for ``$auth_user``)."""
    ctx = {} if ctx is None else ctx
    return "".join(text + (VARIABLES[name](request, ctx) if name else "") for text, name in template)


def apply_rules(
    rule_sets: Iterable[_Rules], fields: Headers, request: Request, ctx: Mapping[str, Any] | None = None
) -> None:
    """Apply each rule set in turn: remove, then set, then add. A value that
    is not a valid field value once expanded (a variable brought a control
    character in) skips its rule, as in the engine."""
    for rules in rule_sets:
        for name in rules.remove:
            fields.remove(name)
        for name, template in rules.set:
            with suppress(ValueError):
                fields.set(name, expand(template, request, ctx))
        for name, template in rules.add:
            with suppress(ValueError):
                fields.add(name, expand(template, request, ctx))


# -- the security preset -----------------------------------------------------------


def security_fields(security: SecuritySettings, scheme: str, own_frame_policy: bool) -> list[tuple[str, str]]:
    """The fields the preset adds (each only where the response has none),
    in order; HSTS only on requests that came over TLS. The frame-ancestors
    policy made from ``frame_options`` is left out when the response has its
    own ``X-Frame-Options`` (``own_frame_policy``)."""
    csp = security.csp
    if not csp and security.frame_options and not own_frame_policy:
        csp = "frame-ancestors 'none'" if security.frame_options == "DENY" else "frame-ancestors 'self'"
    fields = [
        ("strict-transport-security", security.hsts if scheme == "https" else ""),
        ("x-content-type-options", security.content_type_options),
        ("x-frame-options", security.frame_options),
        ("referrer-policy", security.referrer_policy),
        ("content-security-policy", csp),
    ]
    return [(name, value) for name, value in fields if value]


# -- CORS ---------------------------------------------------------------------------------


def is_preflight(request: Request) -> bool:
    """``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``."""
    return (
        request.method == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


def allow_origin(cors: CorsSettings, request: Request) -> str | None:
    """``Access-Control-Allow-Origin`` for this request: ``*``, its own
    ``Origin`` (its first line), or ``None`` when the origin is not allowed
    or absent."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    anyone = "*" in cors.origins
    if not anyone and origin not in cors.origins:
        return None
    return "*" if anyone and not cors.credentials else origin


def preflight(cors: CorsSettings, request: Request) -> Response:
    """The answer to a preflight: 204 with the allow fields, or 403."""
    origin = allow_origin(cors, request)
    if origin is None:
        return Response(403, [("content-type", "text/plain; charset=utf-8")], REFUSAL_BODY)
    fields = [("access-control-allow-origin", origin)]
    if cors.credentials:
        fields.append(("access-control-allow-credentials", "true"))
    fields.append(("access-control-allow-methods", ", ".join(cors.methods)))
    if cors.headers == ("*",):
        allowed = request.headers.get("access-control-request-headers") or ""
    else:
        allowed = ", ".join(cors.headers)
    if allowed:
        fields.append(("access-control-allow-headers", allowed))
    if cors.max_age is not None:
        fields.append(("access-control-max-age", str(int(cors.max_age))))
    fields.append(("vary", PREFLIGHT_VARY))
    return Response(204, fields, b"")


#: The CORS response fields, which the proxy owns on a route with CORS.
OWN_FIELDS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
)


def actual_fields(cors: CorsSettings, request: Request, fields: Headers) -> None:
    """The CORS fields of a response (not to a preflight): an upstream's own
    are removed, then the allow fields are set for an allowed origin. Unless
    every origin gets ``*``, the response varies by ``Origin`` whether or not
    it had one."""
    for name in OWN_FIELDS:
        fields.remove(name)
    origin = allow_origin(cors, request)
    if origin is not None:
        fields.set("access-control-allow-origin", origin)
        if cors.credentials:
            fields.set("access-control-allow-credentials", "true")
        if cors.expose:
            fields.set("access-control-expose-headers", ", ".join(cors.expose))
    if not ("*" in cors.origins and not cors.credentials):
        fields.add("vary", "Origin")


# -- hooks ----------------------------------------------------------------------------


@hookimpl(tryfirst=True)
@native("headers")
def rproxy_access(request: Request) -> Response | None:
    cors = _cors_of(request)
    if cors is None or not is_preflight(request):
        return None
    return preflight(cors, request)


@hookimpl(tryfirst=True)
@native("headers")
def rproxy_upstream_request(request: Request, ctx: dict[str, Any]) -> None:
    apply_rules(_rule_sets(request, response=False), request.headers, request, ctx)


@hookimpl(tryfirst=True)
@native("headers")
def rproxy_response(request: Request, response: Response, ctx: dict[str, Any]) -> None:
    fields = response.headers
    for name in _settings.hide:
        fields.remove(name)
    if _settings.security is not None:
        own_frame_policy = "x-frame-options" in fields
        for name, value in security_fields(_settings.security, request.scheme, own_frame_policy):
            if name not in fields:
                fields.set(name, value)
    cors = _cors_of(request)
    if cors is not None and not is_preflight(request):
        actual_fields(cors, request, fields)
    apply_rules(_rule_sets(request, response=True), fields, request, ctx)
