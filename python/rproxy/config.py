"""Loading and validating ``proxy.toml``.

The file is read with ``tomllib`` and checked completely before anything
binds: every problem is collected and reported at once, each as
``FILE:LINE:COL: error: key.path: message``. Unknown keys are errors with a
did-you-mean. Every key, its kind, default and meaning is declared once in
the tables below; ``rproxy init`` and ``docs/config.md`` are built from them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import os
import re
import socket
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rproxy import _authfiles, _engine
from rproxy._toml_positions import Path as KeyPath
from rproxy._toml_positions import Positions
from rproxy.errors import ConfigError, ConfigIssue
from rproxy.routing import VARIABLES, normalise_path, parse_template

__all__ = [
    "API_KEY_KEYS",
    "AUTH_KEYS",
    "AUTH_TYPES",
    "AUTH_TYPE_KEYS",
    "BALANCES",
    "BASIC_KEYS",
    "CACHE_KEYS",
    "CORS_KEYS",
    "DEFAULT_HIDE",
    "FORWARD_KEYS",
    "HEADERS_KEYS",
    "HEADER_VARIABLES",
    "HEALTH_CHECK_KEYS",
    "HEALTH_CHECK_TYPES",
    "JWT_KEYS",
    "PLUGINS_KEYS",
    "PLUGIN_TABLE_KEYS",
    "POOL_SERVER_KEYS",
    "REDIRECT_KEYS",
    "REQUIRED",
    "RESPOND_KEYS",
    "ROUTE_KEYS",
    "RULE_KEYS",
    "SECURITY_KEYS",
    "SERVER_KEYS",
    "SPLIT_KEYS",
    "UPSTREAM_KEYS",
    "Address",
    "ApiKeyAuth",
    "AuthSettings",
    "BasicAuth",
    "CacheSettings",
    "Condition",
    "Config",
    "CorsSettings",
    "ForwardAuth",
    "HashKey",
    "HeaderRules",
    "HeadersSettings",
    "HealthCheck",
    "JwtAuth",
    "Key",
    "PluginTable",
    "PluginsSettings",
    "RedirectSettings",
    "RespondSettings",
    "RouteSettings",
    "SecuritySettings",
    "Server",
    "ServerSettings",
    "SplitShare",
    "UpstreamSettings",
    "load",
    "loads",
    "parse_duration",
    "parse_size",
]

REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One configuration key: its name, kind, default and meaning."""

    name: str
    kind: str
    default: Any
    help: str
    minimum: int = 0


SERVER_KEYS: tuple[Key, ...] = (
    Key(
        "listen",
        "listen",
        ["127.0.0.1:8080"],
        'addresses to accept clients on, "host:port" (":8080" is every interface; port 0 picks one)',
    ),
    Key(
        "workers", "workers", "auto", 'worker processes sharing the listeners (SO_REUSEPORT), or "auto" for one per CPU'
    ),
    Key("threads", "int", 1, "engine threads in each worker process", minimum=1),
    Key(
        "client_header_timeout",
        "duration",
        "10s",
        "time a client has to send a request's header section, from its first byte (slowloris defence)",
    ),
    Key("client_body_timeout", "duration", "60s", "time allowed between two reads of a request body"),
    Key(
        "send_timeout",
        "duration",
        "60s",
        "time a write to a client may make no progress (the client stopped reading); then the connection is closed",
    ),
    Key(
        "keepalive_timeout",
        "duration0",
        "60s",
        "time an idle keep-alive client connection stays open (0s disables keep-alive)",
    ),
    Key("max_body_size", "size", "128MiB", "largest request body accepted; larger ones get 413"),
    Key(
        "max_header_bytes",
        "size",
        "64KiB",
        "largest request header section, request line included; larger ones get 431",
        minimum=1024,
    ),
    Key("max_headers", "int", 100, "most header fields in a request; more get 431", minimum=1),
    Key("max_uri_size", "size", "8KiB", "longest request target; longer ones get 414", minimum=16),
    Key(
        "max_connections",
        "int",
        10000,
        "most simultaneous client connections, shared out between the workers",
        minimum=1,
    ),
    Key("shutdown_timeout", "duration", "10s", "on SIGTERM/SIGINT, time in-flight requests get to finish"),
    Key(
        "request_buffer_size",
        "size",
        "64KiB",
        "request body bytes read before choosing an upstream; a body that fits is checked whole "
        "before any of it is sent, and can be retried",
    ),
    Key(
        "trusted_proxies",
        "cidrs",
        [],
        "addresses or networks (CIDR) of proxies in front of this one: from them X-Forwarded-For and Forwarded "
        "are extended and the client address is read from X-Forwarded-For; from anyone else the forwarding "
        "fields are replaced",
    ),
)

#: The values of a pool's ``balance``.
BALANCES = ("round_robin", "least_conn", "random_two", "hash", "first")

UPSTREAM_KEYS: tuple[Key, ...] = (
    Key(
        "servers",
        "servers",
        REQUIRED,
        'the pool\'s servers: "host:port", or { address = "host:port", weight = 1, backup = false } '
        "(docs/load-balancing.md)",
    ),
    Key(
        "balance",
        "balance",
        "round_robin",
        'how a server is chosen for a request: "round_robin", "least_conn", "random_two", "hash" or "first"',
    ),
    Key(
        "hash_key",
        "hash_key",
        None,
        'with balance = "hash": what is hashed, "client_ip", "header:NAME" or "cookie:NAME" '
        '(default "client_ip"); a request without it is balanced round robin',
    ),
    Key("retries", "int", 2, "further attempts after a failed one, each on a different server (0: none)"),
    Key(
        "retry_budget",
        "share",
        0.2,
        "retries may be at most this share of the pool's requests in a 10 s window, from 0 to 1",
    ),
    Key("retry_budget_min", "int", 10, "retries allowed per second whatever the share"),
    Key(
        "connect_timeout",
        "duration",
        "2s",
        "time allowed to connect to a server; beyond it the attempt has failed (see `retries`), and with no "
        "attempt left the client gets 502",
    ),
    Key(
        "response_timeout",
        "duration",
        "30s",
        "time from sending a request to receiving the response headers; beyond it 504",
    ),
    Key(
        "body_idle_timeout",
        "duration",
        "60s",
        "time allowed between two reads of a response body, or two writes of a request body",
    ),
    Key("max_requests", "int", 0, "requests in progress to the pool at once (0: no limit)"),
    Key("max_requests_per_server", "int", 0, "requests in progress to one server at once (0: no limit)"),
    Key(
        "max_pending",
        "int",
        0,
        "requests that may wait for capacity when a limit is reached; beyond them, 503 with `Retry-After: 1`",
    ),
    Key("queue_timeout", "duration0", "1s", "how long such a request waits for capacity before 503"),
    Key(
        "max_fails",
        "int",
        5,
        "consecutive failed attempts that eject a server (passive health checks; 0 turns them off)",
    ),
    Key(
        "fail_on_5xx",
        "bool",
        False,
        "count 5xx responses as failed attempts too (failing to connect, a reset and a timeout always count)",
    ),
    Key("eject_time", "duration", "10s", "how long a server's first ejection lasts; doubled on each repeat ..."),
    Key("eject_time_max", "duration", "5m", "... up to this"),
    Key(
        "max_ejected_percent",
        "percent",
        50,
        "at most this share of the pool's servers is ejected at once, from 0 to 100; one server always may be, "
        "unless it is 0",
    ),
    Key(
        "slow_start",
        "duration0",
        "0s",
        "a server back from down or ejected ramps its weight from near 0 to full over this time (0s: at once)",
    ),
    Key(
        "health_check",
        "health_check",
        None,
        "active health checks: a `[upstreams.NAME.health_check]` table (none by default)",
    ),
    Key("keepalive", "int", 64, "idle keep-alive connections kept per server (0 disables reuse)"),
    Key("keepalive_timeout", "duration0", "60s", "time an idle upstream connection is kept"),
    Key("keepalive_requests", "int", 1000, "requests sent over one upstream connection before it is closed", minimum=1),
    Key(
        "request_headers",
        "rules",
        {},
        "header rules for the requests sent to this pool, after `[headers.request]`: { remove, set, add }; "
        "one in `[defaults.upstream]` applies to the pools without their own (it is replaced, not merged)",
    ),
    Key(
        "response_headers",
        "rules",
        {},
        "header rules for the responses to requests for which this pool was chosen, after `[headers.response]`; "
        "inherited like `request_headers`",
    ),
)

POOL_SERVER_KEYS: tuple[Key, ...] = (
    Key("address", "server_address", REQUIRED, 'the server, "host:port"'),
    Key("weight", "weight", 1, "its share of the pool's requests relative to the others, from 1 to 100"),
    Key(
        "backup",
        "bool",
        False,
        "a backup gets requests only when no other server can take them (every one is down or ejected)",
    ),
)

#: The values of a health check's ``type``.
HEALTH_CHECK_TYPES = ("http", "tcp")

HEALTH_CHECK_KEYS: tuple[Key, ...] = (
    Key(
        "type",
        "check_type",
        REQUIRED,
        '"http" (a request to `path`, which must be answered with `status`) or "tcp" (a connection, which must '
        "be accepted)",
    ),
    Key("path", "check_path", "/", 'http only: the path (and query) asked, starting with "/"'),
    Key("host", "check_host", None, "http only: the `Host` sent (default: the server's address)"),
    Key("status", "status_range", "200-399", 'http only: the statuses that pass, a code (200) or a range ("200-399")'),
    Key("interval", "duration", "5s", "time between two checks of a server"),
    Key("timeout", "duration", "2s", "time a check may take; beyond it, it has failed"),
    Key("rise", "int", 2, "consecutive passed checks that bring a down server up", minimum=1),
    Key("fall", "int", 3, "consecutive failed checks that take an up server down", minimum=1),
)

RESPOND_KEYS: tuple[Key, ...] = (
    Key("status", "status", 200, "status code of the response"),
    Key("body", "str", "", "response body"),
    Key("headers", "headers", {}, "response header fields"),
)

REDIRECT_KEYS: tuple[Key, ...] = (
    Key("status", "redirect_status", 302, "status code: 301, 302, 303, 307 or 308"),
    Key("location", "template", REQUIRED, 'where to, a template: "https://example.com$request_uri"'),
)

SPLIT_KEYS: tuple[Key, ...] = (
    Key("upstream", "str", REQUIRED, "a pool"),
    Key(
        "weight",
        "int",
        1,
        "its share of the requests (the weights of one split add up to at most 10000)",
        minimum=1,
    ),
)

ROUTE_KEYS: tuple[Key, ...] = (
    Key("name", "name", None, "the route's name in logs and as `$route` (default `routes[N]`, N counted from 0)"),
    Key(
        "host",
        "hosts",
        None,
        'match this host: exact ("api.example.com"), any subdomain ("*.example.com"), or an array of them',
    ),
    Key("path", "path", None, "match this path exactly (paths are normalised first)"),
    Key("path_prefix", "path_prefix", None, 'match paths starting with this string ("/" matches all)'),
    Key(
        "path_regex",
        "regex",
        None,
        "match paths in which this regular expression finds a match; its groups are template variables",
    ),
    Key("methods", "methods", None, 'match these methods, e.g. ["GET", "HEAD"]'),
    Key(
        "headers",
        "header_conditions",
        None,
        'match header fields: { NAME = COND }, COND being true (present), false (absent), "text" (equal) '
        'or { regex = "..." }',
    ),
    Key("query", "query_conditions", None, "match query parameters: { NAME = COND }, as for `headers`"),
    Key("upstream", "str", None, "action: forward to this pool"),
    Key("split", "split", None, "action: forward to one of several pools by weight: [{ upstream, weight }, ...]"),
    Key("redirect", "redirect", None, "action: answer with a redirect: { status, location }"),
    Key("respond", "respond", None, "action: answer directly: { status, body, headers }"),
    Key("strip_prefix", "bool", False, "remove `path_prefix` from the path sent upstream"),
    Key(
        "rewrite",
        "rewrite",
        None,
        'send this path upstream instead, a template such as "/v2/$1" (the query is kept unless it has a "?")',
    ),
    Key("upstream_host", "template", None, "send this `Host` upstream instead of the client's (a template)"),
    Key("sticky_cookie", "cookie_name", None, "with `split`: choose the pool by a hash of this cookie"),
    Key("sticky_header", "header_name", None, "with `split`: choose the pool by a hash of this header field"),
    Key(
        "request_headers",
        "rules",
        {},
        "with `upstream` or `split`: header rules for the requests this route forwards, after the global "
        "and the pool's: { remove, set, add }",
    ),
    Key(
        "response_headers",
        "rules",
        {},
        "header rules for the responses to this route's requests, after the global and the pool's",
    ),
    Key(
        "cors",
        "route_cors",
        None,
        "`false` turns CORS off for this route; a table with the keys of `[cors]` replaces the global one "
        "(by default the route has the global `[cors]`, if any)",
    ),
    Key(
        "auth",
        "auth_names",
        None,
        "credential policies (`[auth.NAME]`): a name, or an array of names of which any one may accept the "
        "request; others get 401 (docs/auth.md)",
    ),
    Key(
        "allow",
        "cidrs",
        [],
        "client addresses or networks (CIDR) let through; any other client gets 403 (empty: every client)",
    ),
    Key("deny", "cidrs", [], "client addresses or networks (CIDR) refused with 403, checked before `allow`"),
    Key(
        "cache",
        "bool",
        None,
        "with `upstream` or `split`: whether this route's responses are cached (docs/caching.md); by default "
        "as `[cache] enabled` says. Needs a `[cache]` table",
    ),
    Key(
        "cache_ttl",
        "cache_ttl",
        None,
        "with `upstream` or `split`: the freshness lifetime of this route's responses that state none "
        "(no `max-age`, `s-maxage` or `Expires`), instead of the heuristic; only for heuristically cacheable "
        "statuses (200 203 204 206 300 301 308 404 405 410 414 501) or `public` responses; whole seconds, "
        "at least 1s. Needs a `[cache]` table",
    ),
)

#: Response fields that name the software behind the proxy; ``[headers] hide`` by default.
DEFAULT_HIDE = ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-runtime", "x-generator"]

#: The variables of header rule values (docs/headers.md).
HEADER_VARIABLES = (
    "client_ip",
    "remote_addr",
    "host",
    "scheme",
    "method",
    "path",
    "query",
    "request_uri",
    "route",
    "upstream",
    "upstream_addr",
    "auth_user",
    "request_id",
)

HEADERS_KEYS: tuple[Key, ...] = (
    Key(
        "hide",
        "hide",
        DEFAULT_HIDE,
        "response header fields removed before the response rules run, so that clients do not learn what "
        "runs behind the proxy (`[]` passes them through)",
    ),
    Key(
        "security",
        "security",
        False,
        "the security header preset: `true` for its defaults, or a `[headers.security]` table",
    ),
    Key("request", "rules", {}, "header rules for every request sent upstream: { remove, set, add }"),
    Key("response", "rules", {}, "header rules for every response sent to the client: { remove, set, add }"),
)

RULE_KEYS: tuple[Key, ...] = (
    Key("remove", "rule_names", [], "fields to remove, every line of each name"),
    Key(
        "set",
        "rule_values",
        {},
        '{ name = "value" }: each replaces every field of its name with one field; the value is a template',
    ),
    Key(
        "add",
        "rule_values",
        {},
        '{ name = "value" }: each appends a field, keeping those already there; the value is a template',
    ),
)

SECURITY_KEYS: tuple[Key, ...] = (
    Key(
        "hsts",
        "field_value",
        "max-age=31536000",
        "`Strict-Transport-Security`, sent only on responses to requests that came over TLS",
    ),
    Key("content_type_options", "field_value", "nosniff", "`X-Content-Type-Options`"),
    Key(
        "frame_options",
        "frame_options",
        "DENY",
        '`X-Frame-Options`: "DENY" or "SAMEORIGIN"; without `csp` it also adds '
        "`Content-Security-Policy: frame-ancestors 'none'` (or `'self'`)",
    ),
    Key("referrer_policy", "field_value", "strict-origin-when-cross-origin", "`Referrer-Policy`"),
    Key("csp", "field_value", "", "`Content-Security-Policy`"),
)

CORS_KEYS: tuple[Key, ...] = (
    Key(
        "origins",
        "origins",
        REQUIRED,
        'the origins allowed, as browsers send them: "scheme://host[:port]" in lower case, or ["*"] for any',
    ),
    Key("methods", "cors_methods", ["GET", "HEAD", "POST"], "the methods a preflight allows"),
    Key(
        "headers",
        "cors_headers",
        [],
        'the request header fields a preflight allows, or ["*"] for those it asks for',
    ),
    Key("expose", "field_names", [], "the response header fields scripts may read (`Access-Control-Expose-Headers`)"),
    Key(
        "credentials",
        "bool",
        False,
        "allow requests with credentials (cookies, `Authorization`): `Access-Control-Allow-Credentials: true`",
    ),
    Key(
        "max_age",
        "duration0",
        None,
        "how long a browser may keep a preflight's answer (`Access-Control-Max-Age`, in whole seconds); "
        "not sent when absent",
    ),
)

PLUGINS_KEYS: tuple[Key, ...] = (
    Key("dirs", "dirs", ["plugins"], "folders whose *.py files are loaded as plugins, relative to this file"),
    Key("disable", "names", [], "plugins not to load, by name (built-ins and installed ones included)"),
)

PLUGIN_TABLE_KEYS: tuple[Key, ...] = (
    Key(
        "on_error",
        "on_error",
        None,
        'what a failing hook of this plugin does to its request: "fail" (an error response) or "continue" '
        "(skip the hook); the default depends on the hook (see docs/hooks.md)",
    ),
    Key("timeout", "duration", "5s", "longest an async hook of this plugin may take before it counts as failed"),
)

CACHE_KEYS: tuple[Key, ...] = (
    Key(
        "enabled",
        "bool",
        False,
        "every route that forwards caches, unless it says `cache = false`; when false, only the routes that "
        "say `cache = true` do",
    ),
    Key(
        "max_size",
        "size",
        "256MiB",
        "the bound of each worker process's store (bodies, fields and keys, roughly); beyond it stored "
        "responses are evicted",
    ),
    Key(
        "max_object_size",
        "size",
        "8MiB",
        "the largest response body stored; at most `max_size`. Responses with larger bodies pass through uncached",
    ),
    Key(
        "lock_timeout",
        "duration",
        "5s",
        "how long a request waits for a fetch of the same key already in progress before going upstream itself",
    ),
    Key(
        "heuristic_max",
        "duration0",
        "1d",
        "the longest heuristic freshness lifetime (10 % of the time since `Last-Modified`) given to responses "
        "that state none (0s: none)",
    ),
    Key("name", "cache_name", "rproxy", "this cache's name in `Cache-Status` (a token)"),
    Key(
        "purge_from",
        "cidrs",
        [],
        "client addresses or networks (CIDR) allowed to send `PURGE` (the peer's address, not "
        "`X-Forwarded-For`); anyone else gets 403",
    ),
    Key(
        "cdn_cache_control",
        "bool",
        False,
        "obey `CDN-Cache-Control` (RFC 9213): when a response has it, its directives replace those of "
        "`Cache-Control`, and `Expires` is not used",
    ),
    Key(
        "admin",
        "admin_address",
        None,
        'serve the cache\'s admin endpoint here, "host:port" (POST /purge?key=... or ?prefix=..., '
        "GET /stats): keep it on a loopback or private address",
    ),
)

AUTH_TYPES = ("api_key", "basic", "jwt", "forward")

AUTH_KEYS: tuple[Key, ...] = (
    Key("type", "auth_type", REQUIRED, '"api_key", "basic", "jwt" or "forward": the keys below of that type apply'),
    Key(
        "forward_credentials",
        "bool",
        False,
        "send the credential the policy checked upstream; by default it is removed (`Authorization`, or the "
        "API key's header field)",
    ),
)

_REALM = Key(
    "realm", "realm", None, "the realm of the `WWW-Authenticate` challenge, ASCII text (default: the policy's name)"
)

API_KEY_KEYS: tuple[Key, ...] = (
    Key(
        "header",
        "auth_field",
        None,
        'the header field that carries the key (default "x-api-key", unless `query` is given)',
    ),
    Key(
        "query",
        "query_name",
        None,
        "or: the query parameter that carries the key (percent-decoded); it stays in the request",
    ),
    Key("keys", "api_keys", {}, '{ NAME = "KEY" }: the keys, each with the name of its holder'),
    Key(
        "keys_file",
        "file",
        None,
        "and/or: a file of `NAME:KEY` lines (blank lines and lines starting with `#` are skipped), relative to "
        "this file",
    ),
    _REALM,
)

BASIC_KEYS: tuple[Key, ...] = (
    Key(
        "htpasswd",
        "file",
        REQUIRED,
        "an htpasswd file of `user:hash` lines, relative to this file; bcrypt (`$2y$`, `$2b$`, `$2a$`) and "
        "SHA-512-crypt (`$6$`) hashes only",
    ),
    _REALM,
)

JWT_KEYS: tuple[Key, ...] = (
    Key("algorithms", "jwt_algorithms", REQUIRED, 'accepted `alg` values: any of "HS256", "RS256" and "ES256"'),
    Key("secret", "secret", None, "the shared secret of HS256"),
    Key(
        "public_key",
        "pem",
        None,
        "a PEM public key for RS256 (RSA, 2048 to 8192 bits) or ES256 (EC P-256)",
    ),
    Key("public_key_file", "file", None, "or: a file holding one, relative to this file"),
    Key(
        "jwks_file",
        "file",
        None,
        "a JSON Web Key Set file (RFC 7517) of oct, RSA and EC P-256 keys, relative to this file; a token's "
        "`kid` chooses among them",
    ),
    Key("issuer", "str", None, "the `iss` claim required, if set"),
    Key("audience", "audience", None, "the `aud` accepted, if set: a string, or an array of which any one will do"),
    Key("leeway", "duration0", "30s", "clock skew allowed on `exp` and `nbf`"),
    _REALM,
)

FORWARD_KEYS: tuple[Key, ...] = (
    Key("upstream", "str", REQUIRED, "the pool of the auth service; its timeouts apply"),
    Key("path", "forward_path", "/", "the path (and query) asked of the auth service"),
    Key("send_headers", "field_names", ["authorization", "cookie"], "request fields passed on to the auth service"),
    Key(
        "copy_headers",
        "copy_names",
        [],
        "fields of a `2xx` answer set on the upstream request, replacing the client's (which are removed when "
        "the answer has none)",
    ),
    Key(
        "cache",
        "duration0",
        "0s",
        "how long a decision (allow or deny) is remembered, keyed on the fields sent (`0s`: not at all)",
    ),
)

#: The keys of each type of ``[auth.NAME]``, besides ``AUTH_KEYS``.
AUTH_TYPE_KEYS: dict[str, tuple[Key, ...]] = {
    "api_key": API_KEY_KEYS,
    "basic": BASIC_KEYS,
    "jwt": JWT_KEYS,
    "forward": FORWARD_KEYS,
}

TOP_KEYS = ("server", "defaults", "upstreams", "routes", "headers", "cors", "auth", "cache", "plugins")


@dataclass(frozen=True)
class Address:
    """A host and port; ``host`` is an IP address once resolved."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: listeners and client-side limits (durations in seconds)."""

    listen: tuple[Address, ...]
    workers: int
    threads: int
    client_header_timeout: float
    client_body_timeout: float
    send_timeout: float
    keepalive_timeout: float
    max_body_size: int
    max_header_bytes: int
    max_headers: int
    max_uri_size: int
    max_connections: int
    shutdown_timeout: float
    request_buffer_size: int
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeaderRules:
    """A rule set (docs/headers.md): names are lower-case, values templates,
    each in the order written. ``remove`` runs first, then ``set``, then ``add``."""

    remove: tuple[str, ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SecuritySettings:
    """``[headers.security]``: the value of each field the preset adds ("" = not added)."""

    hsts: str = "max-age=31536000"
    content_type_options: str = "nosniff"
    frame_options: str = "DENY"
    referrer_policy: str = "strict-origin-when-cross-origin"
    csp: str = ""


@dataclass(frozen=True)
class CorsSettings:
    """``[cors]`` or a route's own ``cors`` table. Header names are
    lower-case; ``max_age`` is in seconds (``None``: not sent)."""

    origins: tuple[str, ...]
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    credentials: bool = False
    max_age: float | None = None


@dataclass(frozen=True)
class HeadersSettings:
    """``[headers]``: hidden response fields, the security preset (``None``
    when off) and the global rule sets."""

    hide: tuple[str, ...] = tuple(DEFAULT_HIDE)
    security: SecuritySettings | None = None
    request: HeaderRules = HeaderRules()
    response: HeaderRules = HeaderRules()


@dataclass(frozen=True)
class Server:
    """One server of a pool: its address, weight (1 to 100) and whether it
    is a backup. ``str()`` is the address, ``"host:port"``."""

    address: Address
    weight: int = 1
    backup: bool = False

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    def __str__(self) -> str:
        return str(self.address)


@dataclass(frozen=True)
class HashKey:
    """What ``balance = "hash"`` hashes: ``kind`` is "client_ip", "header"
    or "cookie"; ``name`` names the field (lower-case) or the cookie."""

    kind: str
    name: str | None = None


@dataclass(frozen=True)
class HealthCheck:
    """``[upstreams.NAME.health_check]``: active checks (durations in
    seconds; ``status`` is an inclusive range)."""

    type: str
    path: str = "/"
    host: str | None = None
    status: tuple[int, int] = (200, 399)
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True)
class UpstreamSettings:
    """``[upstreams.NAME]``: one pool of servers, how a server is chosen
    and checked (docs/load-balancing.md), and its header rules. Durations
    are in seconds; ``hash_key`` is ``None`` unless ``balance`` is "hash"."""

    name: str
    servers: tuple[Server, ...]
    connect_timeout: float
    response_timeout: float
    body_idle_timeout: float
    keepalive: int
    keepalive_timeout: float
    keepalive_requests: int
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    balance: str = "round_robin"
    hash_key: HashKey | None = None
    retries: int = 2
    retry_budget: float = 0.2
    retry_budget_min: int = 10
    max_requests: int = 0
    max_requests_per_server: int = 0
    max_pending: int = 0
    queue_timeout: float = 1.0
    max_fails: int = 5
    fail_on_5xx: bool = False
    eject_time: float = 10.0
    eject_time_max: float = 300.0
    max_ejected_percent: int = 50
    slow_start: float = 0.0
    health_check: HealthCheck | None = None


@dataclass(frozen=True)
class RespondSettings:
    """A response a route sends itself."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RedirectSettings:
    """The redirect a route answers with; ``location`` is a template."""

    status: int
    location: str


@dataclass(frozen=True)
class SplitShare:
    """One pool of a ``split`` and its weight."""

    upstream: str
    weight: int


@dataclass(frozen=True)
class Condition:
    """A route's condition on a header field or query parameter: ``cond`` is
    "present", "absent", "equals" or "regex"; ``value`` is the string or the
    expression ("" for the first two). Header names are lower-case."""

    name: str
    cond: str
    value: str = ""


@dataclass(frozen=True)
class RouteSettings:
    """One ``[[routes]]`` entry: its conditions, its action, and how it
    forwards (docs/routing.md). Hosts and header names are lower-case."""

    path_prefix: str | None = None
    upstream: str | None = None
    respond: RespondSettings | None = None
    name: str = ""
    hosts: tuple[str, ...] = ()
    path: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[Condition, ...] = ()
    query: tuple[Condition, ...] = ()
    split: tuple[SplitShare, ...] = ()
    redirect: RedirectSettings | None = None
    strip_prefix: bool = False
    rewrite: str | None = None
    upstream_host: str | None = None
    sticky_cookie: str | None = None
    sticky_header: str | None = None
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    cors: CorsSettings | Literal[False] | None = None  # None: the global [cors]; False: none
    auth: tuple[str, ...] = ()  # names of [auth.NAME] policies, any one of which may accept a request
    allow: tuple[str, ...] = ()  # networks, as "10.0.0.0/8"
    deny: tuple[str, ...] = ()
    cache: bool | None = None  # None: as [cache] enabled says
    cache_ttl: float | None = None  # seconds


@dataclass(frozen=True)
class ApiKeyAuth:
    """``type = "api_key"``: ``keys`` are ``(holder, key)`` pairs; the key is
    read from the field ``header`` (lower-case) or the query parameter ``query``."""

    name: str
    keys: tuple[tuple[str, str], ...]
    header: str | None = "x-api-key"
    query: str | None = None
    realm: str = ""
    forward_credentials: bool = False
    type: ClassVar[str] = "api_key"


@dataclass(frozen=True)
class BasicAuth:
    """``type = "basic"``: ``users`` are ``(user, hash)`` pairs of the htpasswd file."""

    name: str
    users: tuple[tuple[str, str], ...]
    realm: str = ""
    forward_credentials: bool = False
    type: ClassVar[str] = "basic"


@dataclass(frozen=True)
class JwtAuth:
    """``type = "jwt"``: ``keys`` are public JWKs (RFC 7517), the configured
    secret and PEM keys converted; ``leeway`` is in seconds."""

    name: str
    algorithms: tuple[str, ...]
    keys: tuple[Mapping[str, str], ...]
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway: float = 30.0
    realm: str = ""
    forward_credentials: bool = False
    type: ClassVar[str] = "jwt"


@dataclass(frozen=True)
class ForwardAuth:
    """``type = "forward"``: ask the pool ``upstream``; ``cache`` is in seconds (0: off)."""

    name: str
    upstream: str
    path: str = "/"
    send_headers: tuple[str, ...] = ("authorization", "cookie")
    copy_headers: tuple[str, ...] = ()
    cache: float = 0.0
    forward_credentials: bool = False
    type: ClassVar[str] = "forward"


#: One ``[auth.NAME]`` policy (docs/auth.md).
AuthSettings = ApiKeyAuth | BasicAuth | JwtAuth | ForwardAuth


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]`` (docs/caching.md): sizes in bytes, durations in seconds;
    ``purge_from`` holds networks, as "10.0.0.0/8"."""

    enabled: bool = False
    max_size: int = 256 << 20
    max_object_size: int = 8 << 20
    lock_timeout: float = 5.0
    heuristic_max: float = 86400.0
    name: str = "rproxy"
    purge_from: tuple[str, ...] = ()
    cdn_cache_control: bool = False
    admin: Address | None = None


@dataclass(frozen=True)
class PluginTable:
    """A ``[plugins.NAME]`` table: rproxy's keys, and the plugin's own options."""

    on_error: str | None
    timeout: float
    options: Mapping[str, Any]


@dataclass(frozen=True)
class PluginsSettings:
    """``[plugins]``: where plugins come from and their tables."""

    dirs: tuple[Path, ...]
    explicit_dirs: tuple[Path, ...]
    disable: tuple[str, ...]
    tables: Mapping[str, PluginTable]


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    path: Path
    server: ServerSettings
    upstreams: Mapping[str, UpstreamSettings]
    routes: tuple[RouteSettings, ...]
    plugins: PluginsSettings
    positions: Positions | None = None
    source: str = ""
    headers: HeadersSettings = HeadersSettings()
    cors: CorsSettings | None = None
    auth: Mapping[str, AuthSettings] = dataclasses.field(default_factory=dict)
    cache: CacheSettings | None = None

    def issue(self, path: KeyPath, message: str, *, at_key: bool = False) -> ConfigIssue:
        """A problem at ``path`` of this file (for checks made after loading)."""
        pos = self.positions or Positions("")
        line, col = pos.key_of(path) if at_key else pos.locate(path)
        return ConfigIssue(line, col, str(self.path), _fmt_path(path), message)

    def table(self, name: str) -> PluginTable:
        """The ``[plugins.NAME]`` table of plugin ``name`` (defaults when absent)."""
        return self.plugins.tables.get(name) or PluginTable(on_error=None, timeout=5.0, options={})

    def engine_config(self, listen: Sequence[Address] | None = None, workers: int = 1) -> dict[str, Any]:
        """The engine's JSON form: numbers in milliseconds and bytes, and
        ``max_connections`` shared out over ``workers`` processes."""
        s = self.server
        per_worker = -(-s.max_connections // max(workers, 1))
        return {
            "server": {
                "listen": [str(a) for a in (listen or s.listen)],
                "threads": s.threads,
                "client_header_timeout": _ms(s.client_header_timeout),
                "client_body_timeout": _ms(s.client_body_timeout),
                "send_timeout": _ms(s.send_timeout),
                "keepalive_timeout": _ms(s.keepalive_timeout),
                "max_body_size": s.max_body_size,
                "max_header_bytes": s.max_header_bytes,
                "max_headers": s.max_headers,
                "max_uri_size": s.max_uri_size,
                "max_connections": per_worker,
                "shutdown_timeout": _ms(s.shutdown_timeout),
                "request_buffer_size": s.request_buffer_size,
                "trusted_proxies": list(s.trusted_proxies),
            },
            "upstreams": {name: _upstream_json(u) for name, u in self.upstreams.items()},
            "routes": [_route_json(r) for r in self.routes],
            "headers": {
                "hide": list(self.headers.hide),
                "security": None if self.headers.security is None else dataclasses.asdict(self.headers.security),
                "request": _rules_json(self.headers.request),
                "response": _rules_json(self.headers.response),
            },
            "cors": None if self.cors is None else _cors_json(self.cors),
            "auth": {name: _auth_json(policy) for name, policy in self.auth.items()},
            "cache": None if self.cache is None else _cache_json(self.cache),
        }


def _cache_json(c: CacheSettings) -> dict[str, Any]:
    return {
        "enabled": c.enabled,
        "max_size": c.max_size,
        "max_object_size": c.max_object_size,
        "lock_timeout": _ms(c.lock_timeout),
        "heuristic_max": _ms(c.heuristic_max),
        "name": c.name,
        "purge_from": list(c.purge_from),
        "cdn_cache_control": c.cdn_cache_control,
        "admin": None if c.admin is None else str(c.admin),
    }


def _ms(seconds: float) -> int:
    ms = round(seconds * 1000)
    return max(ms, 1) if seconds > 0 else 0


def _upstream_json(u: UpstreamSettings) -> dict[str, Any]:
    """A pool as the engine reads it: every key always present, servers
    always as objects, durations in milliseconds."""
    check = u.health_check
    return {
        "servers": [{"addr": str(s.address), "weight": s.weight, "backup": s.backup} for s in u.servers],
        "balance": u.balance,
        "hash_key": _hash_key_json(u.hash_key),
        "retries": u.retries,
        "retry_budget": float(u.retry_budget),
        "retry_budget_min": u.retry_budget_min,
        "max_requests": u.max_requests,
        "max_requests_per_server": u.max_requests_per_server,
        "max_pending": u.max_pending,
        "queue_timeout": _ms(u.queue_timeout),
        "max_fails": u.max_fails,
        "fail_on_5xx": u.fail_on_5xx,
        "eject_time": _ms(u.eject_time),
        "eject_time_max": _ms(u.eject_time_max),
        "max_ejected_percent": u.max_ejected_percent,
        "slow_start": _ms(u.slow_start),
        "health_check": None
        if check is None
        else {
            "type": check.type,
            "path": check.path,
            "host": check.host,
            "status": list(check.status),
            "interval": _ms(check.interval),
            "timeout": _ms(check.timeout),
            "rise": check.rise,
            "fall": check.fall,
        },
        "connect_timeout": _ms(u.connect_timeout),
        "response_timeout": _ms(u.response_timeout),
        "body_idle_timeout": _ms(u.body_idle_timeout),
        "keepalive": u.keepalive,
        "keepalive_timeout": _ms(u.keepalive_timeout),
        "keepalive_requests": u.keepalive_requests,
        "request_headers": _rules_json(u.request_headers),
        "response_headers": _rules_json(u.response_headers),
    }


def _hash_key_json(key: HashKey | None) -> dict[str, str] | None:
    if key is None:
        return None
    return {"kind": key.kind} if key.name is None else {"kind": key.kind, "name": key.name}


def _route_json(r: RouteSettings) -> dict[str, Any]:
    """A route as the engine reads it: every key always present."""
    return {
        "name": r.name,
        "hosts": list(r.hosts),
        "path": r.path,
        "path_prefix": r.path_prefix,
        "path_regex": r.path_regex,
        "methods": list(r.methods),
        "headers": [{"name": h.name, "cond": h.cond, "value": h.value} for h in r.headers],
        "query": [{"name": q.name, "cond": q.cond, "value": q.value} for q in r.query],
        "upstream": r.upstream,
        "split": [{"upstream": s.upstream, "weight": s.weight} for s in r.split],
        "sticky_cookie": r.sticky_cookie,
        "sticky_header": r.sticky_header,
        "strip_prefix": r.strip_prefix,
        "rewrite": r.rewrite,
        "upstream_host": r.upstream_host,
        "redirect": None if r.redirect is None else {"status": r.redirect.status, "location": r.redirect.location},
        "respond": None
        if r.respond is None
        else {"status": r.respond.status, "body": r.respond.body, "headers": [list(h) for h in r.respond.headers]},
        "request_headers": _rules_json(r.request_headers),
        "response_headers": _rules_json(r.response_headers),
        "cors": _cors_json(r.cors) if r.cors else r.cors,
        "auth": list(r.auth),
        "allow": list(r.allow),
        "deny": list(r.deny),
        "cache": r.cache,
        "cache_ttl": None if r.cache_ttl is None else _ms(r.cache_ttl),
    }


def _auth_json(p: AuthSettings) -> dict[str, Any]:
    """A policy as the engine reads it: API keys by their SHA-256 digests,
    files already read, durations in milliseconds (``leeway`` in seconds)."""
    if isinstance(p, ApiKeyAuth):
        return {
            "type": "api_key",
            "header": p.header,
            "query": p.query,
            "keys": [[holder, hashlib.sha256(key.encode()).hexdigest()] for holder, key in p.keys],
            "realm": p.realm,
            "forward_credentials": p.forward_credentials,
        }
    if isinstance(p, BasicAuth):
        return {
            "type": "basic",
            "users": [list(u) for u in p.users],
            "realm": p.realm,
            "forward_credentials": p.forward_credentials,
        }
    if isinstance(p, JwtAuth):
        return {
            "type": "jwt",
            "algorithms": list(p.algorithms),
            "keys": [dict(k) for k in p.keys],
            "issuer": p.issuer,
            "audience": list(p.audience),
            "leeway": float(p.leeway),
            "realm": p.realm,
            "forward_credentials": p.forward_credentials,
        }
    return {
        "type": "forward",
        "upstream": p.upstream,
        "path": p.path,
        "send_headers": list(p.send_headers),
        "copy_headers": list(p.copy_headers),
        "cache": _ms(p.cache),
        "forward_credentials": p.forward_credentials,
    }


def _rules_json(rules: HeaderRules) -> dict[str, Any]:
    return {
        "remove": list(rules.remove),
        "set": [[name, value] for name, value in rules.set],
        "add": [[name, value] for name, value in rules.add],
    }


def _cors_json(cors: CorsSettings) -> dict[str, Any]:
    return {
        "origins": list(cors.origins),
        "methods": list(cors.methods),
        "headers": list(cors.headers),
        "expose": list(cors.expose),
        "credentials": cors.credentials,
        "max_age": None if cors.max_age is None else int(cors.max_age),
    }


# -- units ------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*([KMG]i?B|[KMGkmg]|B)?")
_SIZE_UNITS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    "K": 1024, "M": 1024**2, "G": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3,
}  # fmt: skip


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"10s"``, ``"1m30s"``, ``"2h"`` → seconds."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f'"{text}" is not a duration (use a number and a unit: "500ms", "10s", "2m", "1h")')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError('empty duration (use a number and a unit: "500ms", "10s")')
    return total


def parse_size(value: str | int) -> int:
    """``"16MiB"``, ``"64KiB"``, ``"1GB"``, ``512`` → bytes."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.fullmatch(value.strip())
    if not m:
        raise ValueError(f'"{value}" is not a size (use bytes or a unit: "64KiB", "16MiB", "1GB")')
    return int(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"]


# -- validation ---------------------------------------------------------------


def _fmt_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


def _type_name(v: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)  # fmt: skip


def _show(v: object) -> str:
    """A value as it would be written in TOML."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


class _Checker:
    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.pos = positions
        self.issues: list[ConfigIssue] = []

    def error(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        line, col = self.pos.key_of(path) if at_key else self.pos.locate(path)
        self.issues.append(ConfigIssue(line, col, self.file, _fmt_path(path), message))

    def table(self, path: KeyPath, value: object, keys: Sequence[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {_type_name(value)}")
            return None
        for k in value:
            if k not in keys:
                close = difflib.get_close_matches(k, keys, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.error(path + (k,), f"unknown key{hint}", at_key=True)
        return value

    def settings(
        self, path: KeyPath, table: Mapping[str, Any], keys: Sequence[Key], inherited: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Check each key of ``table`` against ``keys``; fill in defaults."""
        out: dict[str, Any] = {}
        for key in keys:
            if key.name in table:
                out[key.name] = self.value(path + (key.name,), table[key.name], key)
            elif inherited is not None and key.name in inherited:
                out[key.name] = inherited[key.name]
            elif key.default is REQUIRED:
                self.error(path, f'missing required key "{key.name}"')
                out[key.name] = None
            elif key.default is None:
                out[key.name] = None
            else:
                out[key.name] = self.value(path + (key.name,), key.default, key)
        return out

    def value(self, path: KeyPath, v: Any, key: Key) -> Any:
        kind = key.kind
        try:
            if kind in ("duration", "duration0"):
                if not isinstance(v, str):
                    raise ValueError(f'expected a duration such as "10s", got {_type_name(v)}')
                seconds = parse_duration(v)
                if seconds <= 0 and kind == "duration":
                    raise ValueError("must be longer than zero")
                return seconds
            if kind == "size":
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise ValueError(f'expected a size such as "64KiB", got {_type_name(v)}')
                n = parse_size(v)
                if n < max(key.minimum, 1):
                    raise ValueError(f"must be at least {max(key.minimum, 1)} bytes")
                return n
            if kind == "int":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"expected an integer, got {_type_name(v)}")
                if v < key.minimum:
                    raise ValueError(f"must be at least {key.minimum}")
                return v
            if kind == "str":
                if not isinstance(v, str):
                    raise ValueError(f"expected a string, got {_type_name(v)}")
                return v
            if kind in ("path", "path_prefix"):
                if not isinstance(v, str):
                    raise ValueError(f"expected a string, got {_type_name(v)}")
                return _route_path(v, prefix=kind == "path_prefix")
            if kind == "bool":
                if not isinstance(v, bool):
                    raise ValueError(f"expected true or false, got {_type_name(v)}")
                return v
            if kind == "name":
                if not isinstance(v, str) or not v or re.search(r"[\x00-\x1f\x7f]", v):
                    raise ValueError("expected a name: a non-empty string without control characters")
                return v
            if kind == "hosts":
                return self.hosts(path, v)
            if kind == "regex":
                if not isinstance(v, str):
                    raise ValueError(f"expected a regular expression (a string), got {_type_name(v)}")
                _check_regex(v)
                return v
            if kind == "methods":
                return self.methods(path, v, "needs at least one method (leave the key out to match any method)")
            if kind in ("header_conditions", "query_conditions"):
                return self.conditions(path, v, headers=kind == "header_conditions")
            if kind == "split":
                return self.split(path, v)
            if kind == "redirect":
                return self.redirect(path, v)
            if kind == "redirect_status":
                if isinstance(v, bool) or v not in _REDIRECT_STATUSES:
                    raise ValueError(f"expected 301, 302, 303, 307 or 308, got {_show(v)}")
                return v
            if kind in ("template", "rewrite"):
                if not isinstance(v, str):
                    raise ValueError(f"expected a template (a string), got {_type_name(v)}")
                if re.search(r"[\x00-\x20\x7f]", v):
                    raise ValueError("expected a template without spaces or control characters")
                parse_template(v)
                if kind == "rewrite" and not v.startswith(("/", "$")):
                    raise ValueError(f'{_show(v)} must start with "/" (or a variable)')
                return v
            if kind == "header_name":
                if not isinstance(v, str) or not _TOKEN.fullmatch(v):
                    raise ValueError(f"expected a header field name, got {_show(v)}")
                return v.lower()
            if kind == "cookie_name":
                if not isinstance(v, str) or not _TOKEN.fullmatch(v):
                    raise ValueError(f"expected a cookie name, got {_show(v)}")
                return v
            if kind == "cache_name":
                if not isinstance(v, str) or not _TOKEN.fullmatch(v):
                    raise ValueError(
                        f'expected a name such as "rproxy" (a token: letters, digits and !#$%&\'*+.^_`|~-), '
                        f"got {_show_any(v)}"
                    )
                return v
            if kind == "cache_ttl":
                if not isinstance(v, str):
                    raise ValueError(f'expected a duration such as "60s", got {_type_name(v)}')
                seconds = parse_duration(v)
                if seconds < 1:
                    raise ValueError("must be at least 1s: freshness is counted in whole seconds")
                return float(int(seconds))
            if kind == "workers":
                if v == "auto":
                    return len(os.sched_getaffinity(0)) or 1
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f'expected a positive integer or "auto", got {_show(v)}')
                return v
            if kind == "listen":
                return self.addresses(path, v, listen=True)
            if kind == "admin_address":
                return _parse_address(v, listen=True)
            if kind in POOL_KINDS:
                return self.pool_value(path, v, kind)
            if kind == "cidrs":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f'expected an array of addresses or networks such as "10.0.0.0/8", got {_show(v)}')
                nets: list[str] = []
                for i, net in enumerate(v):
                    try:
                        nets.append(_network(net))
                    except ValueError:
                        self.error(path + (i,), f'"{net}" is not an IP address or network')
                return tuple(nets)
            if kind in AUTH_KINDS:
                return self.auth_value(path, v, kind)
            if kind == "status":
                if isinstance(v, bool) or not isinstance(v, int) or not 200 <= v <= 599:
                    raise ValueError(f"expected a status code from 200 to 599, got {_show(v)}")
                return v
            if kind == "headers":
                return self.header_table(path, v)
            if kind in ("dirs", "names"):
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f"expected an array of strings, got {_type_name(v)}")
                return tuple(v)
            if kind == "on_error":
                if v not in ("fail", "continue"):
                    raise ValueError(f'expected "fail" or "continue", got {_show(v)}')
                return v
            if kind == "respond":
                return self.respond(path, v)
            if kind == "rules":
                return self.rules(path, v)
            if kind in ("rule_names", "hide", "field_names", "cors_headers", "copy_names"):
                return self.field_names(path, v, kind)
            if kind == "rule_values":
                return self.rule_values(path, v)
            if kind == "field_value":
                if not isinstance(v, str):
                    raise ValueError(f"expected a header field value (a string), got {_type_name(v)}")
                return _field_value(v)
            if kind == "frame_options":
                if isinstance(v, str) and v.upper() in ("DENY", "SAMEORIGIN") and v != v.upper():
                    raise ValueError(f'expected upper case: write "{v.upper()}"')
                if v not in ("DENY", "SAMEORIGIN", ""):
                    raise ValueError(f'expected "DENY", "SAMEORIGIN" or "" (none), got {_show(v)}')
                return v
            if kind == "security":
                return self.security(path, v)
            if kind == "origins":
                return self.origins(path, v)
            if kind == "cors_methods":
                return self.methods(path, v, "needs at least one method")
            if kind == "route_cors":
                if v is True:
                    raise ValueError(
                        "expected false or a table of CORS settings: a route has the global [cors] "
                        "unless it says otherwise, so true is not needed"
                    )
                if v is False:
                    return False
                if not isinstance(v, dict):
                    raise ValueError(f"expected false or a table of CORS settings, got {_type_name(v)}")
                return self.cors(path, v)
        except ValueError as e:
            self.error(path, str(e))
            return None
        raise AssertionError(f"unknown kind {kind}")

    def addresses(self, path: KeyPath, v: Any, *, listen: bool) -> tuple[Address, ...] | None:
        items = [v] if isinstance(v, str) and listen else v
        if not isinstance(items, list):
            self.error(path, f'expected an array of "host:port" strings, got {_type_name(v)}')
            return None
        if not items:
            self.error(path, "needs at least one address")
            return None
        out: list[Address] = []
        for i, item in enumerate(items):
            p = path if items is not v else path + (i,)
            try:
                out.append(_parse_address(item, listen=listen))
            except ValueError as e:
                self.error(p, str(e))
        return tuple(out) if len(out) == len(items) else None

    # -- pools (docs/load-balancing.md) ------------------------------------------

    def pool_value(self, path: KeyPath, v: Any, kind: str) -> Any:
        """A value of one of ``POOL_KINDS``; raises ``ValueError`` (or reports
        the items at fault and returns ``None``)."""
        if kind == "servers":
            return self.servers(path, v)
        if kind == "server_address":
            return _parse_address(v, listen=False)
        if kind == "weight":
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _MAX_WEIGHT:
                raise ValueError(f"expected a weight from 1 to {_MAX_WEIGHT}, got {_show_any(v)}")
            return v
        if kind in ("balance", "check_type"):
            choices = BALANCES if kind == "balance" else HEALTH_CHECK_TYPES
            if isinstance(v, str) and v in choices:
                return v
            close = difflib.get_close_matches(str(v), choices, n=1, cutoff=0.6) if isinstance(v, str) else []
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            listed = ", ".join(f'"{c}"' for c in choices[:-1]) + f' or "{choices[-1]}"'
            raise ValueError(f"expected {listed}, got {_show_any(v)}{hint}")
        if kind == "hash_key":
            return _hash_key(v)
        if kind == "share":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"expected a number from 0 to 1, got {_show_any(v)}")
            return float(v)
        if kind == "percent":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                raise ValueError(f"expected a percentage from 0 to 100 (an integer), got {_show_any(v)}")
            return v
        if kind == "health_check":
            return self.health_check(path, v)
        if kind == "check_path":
            if not isinstance(v, str) or not v.startswith("/"):
                raise ValueError(f'expected a path starting with "/", got {_show_any(v)}')
            if not re.fullmatch(r"/[\x21-\x7e]*", v) or "#" in v:
                raise ValueError(f"{_show(v)}: a request target is visible ASCII, without spaces or a fragment (#)")
            return v
        if kind == "check_host":
            if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9._~!$&'()*+,;=:\[\]%-]+", v):
                raise ValueError(f'expected a host such as "app.internal" or "app.internal:8080", got {_show_any(v)}')
            return v
        if kind == "status_range":
            return _status_range(v)
        raise AssertionError(f"unknown kind {kind}")

    def servers(self, path: KeyPath, v: Any) -> tuple[Server, ...] | None:
        """A pool's ``servers``: each a ``"host:port"`` string or a table
        ``{ address, weight, backup }``; one at least is not a backup."""
        if not isinstance(v, list):
            raise ValueError(
                f'expected an array of servers, "host:port" or {{ address = "host:port", weight = 1 }}, '
                f"got {_type_name(v)}"
            )
        if not v:
            raise ValueError("needs at least one server")
        out: list[Server] = []
        for i, item in enumerate(v):
            where = path + (i,)
            if isinstance(item, dict):
                t = self.table(where, item, [k.name for k in POOL_SERVER_KEYS])
                if t is None:
                    continue
                s = self.settings(where, t, POOL_SERVER_KEYS)
                if None not in s.values() and all(k in s for k in t):
                    out.append(Server(s["address"], s["weight"], s["backup"]))
                continue
            try:
                out.append(Server(_parse_address(item, listen=False)))
            except ValueError as e:
                self.error(where, str(e))
        if len(out) != len(v):
            return None
        seen: dict[Address, int] = {}
        for i, server in enumerate(out):
            if server.address in seen:
                self.error(path + (i,), f'"{server.address}" is servers[{seen[server.address]}] already')
            seen.setdefault(server.address, i)
        if len(seen) != len(out):
            return None
        if all(server.backup for server in out):
            raise ValueError("needs at least one server that is not a backup")
        return tuple(out)

    def health_check(self, path: KeyPath, v: Any) -> HealthCheck | None:
        """``[upstreams.NAME.health_check]``; ``path``, ``host`` and
        ``status`` are for ``type = "http"`` only."""
        if not isinstance(v, dict):
            raise ValueError(f"expected a table ([upstreams.NAME.health_check]), got {_type_name(v)}")
        self.table(path, v, [k.name for k in HEALTH_CHECK_KEYS])
        s = self.settings(path, v, HEALTH_CHECK_KEYS)
        failed = any(s[k.name] is None for k in HEALTH_CHECK_KEYS if k.default is not None or k.name in v)
        if s["type"] == "tcp":
            for key in ("path", "host", "status"):
                if key in v:
                    self.error(path + (key,), f'"{key}" is for type = "http" checks, not "tcp"', at_key=True)
                    failed = True
        if failed or any(k not in s for k in v):
            return None
        return HealthCheck(**s)

    def header_table(self, path: KeyPath, v: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(v, dict):
            raise ValueError(f"expected a table of header fields, got {_type_name(v)}")
        out: list[tuple[str, str]] = []
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                self.error(path + (name,), f'"{name}" is not a valid header field name', at_key=True)
            elif not isinstance(value, str) or re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
                self.error(path + (name,), "expected a header value without control characters")
            else:
                out.append((name, value))
        return tuple(out)

    def respond(self, path: KeyPath, v: Any) -> RespondSettings | None:
        t = self.table(path, v, [k.name for k in RESPOND_KEYS])
        if t is None:
            return None
        s = self.settings(path, t, RESPOND_KEYS)
        if None in s.values():
            return None
        return RespondSettings(status=s["status"], body=s["body"], headers=s["headers"])

    def redirect(self, path: KeyPath, v: Any) -> RedirectSettings | None:
        t = self.table(path, v, [k.name for k in REDIRECT_KEYS])
        if t is None:
            return None
        s = self.settings(path, t, REDIRECT_KEYS)
        if None in s.values():
            return None
        return RedirectSettings(status=s["status"], location=s["location"])

    def hosts(self, path: KeyPath, v: Any) -> tuple[str, ...] | None:
        if isinstance(v, str):
            return (_host(v),)
        if not isinstance(v, list):
            raise ValueError(f"expected a host or an array of hosts, got {_type_name(v)}")
        if not v:
            raise ValueError("needs at least one host (leave the key out to match any host)")
        out: list[str] = []
        for i, item in enumerate(v):
            try:
                out.append(_host(item))
            except ValueError as e:
                self.error(path + (i,), str(e))
        return tuple(out) if len(out) == len(v) else None

    def methods(self, path: KeyPath, v: Any, empty: str) -> tuple[str, ...] | None:
        """An array of methods (a route's condition, or the methods CORS
        allows); ``empty`` says why an empty one is refused."""
        if not isinstance(v, list):
            raise ValueError(f'expected an array of methods such as ["GET", "HEAD"], got {_type_name(v)}')
        if not v:
            raise ValueError(empty)
        out: list[str] = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _TOKEN.fullmatch(item):
                self.error(path + (i,), f'expected a method such as "GET", got {_show(item)}')
            elif item != item.upper():
                self.error(path + (i,), f'methods are case-sensitive: write "{item.upper()}"')
            else:
                out.append(item)
        return tuple(out) if len(out) == len(v) else None

    def conditions(self, path: KeyPath, v: Any, *, headers: bool) -> tuple[Condition, ...] | None:
        what = "header field" if headers else "query parameter"
        if not isinstance(v, dict):
            raise ValueError(f"expected a table of {what} conditions, got {_type_name(v)}")
        out: list[Condition] = []
        for name, cond in v.items():
            where = path + (name,)
            if headers and not _TOKEN.fullmatch(name):
                self.error(where, f'"{name}" is not a valid header field name', at_key=True)
                continue
            if not name:
                self.error(where, f"a {what} needs a name", at_key=True)
                continue
            key = name.lower() if headers else name
            if isinstance(cond, bool):
                out.append(Condition(key, "present" if cond else "absent"))
            elif isinstance(cond, str):
                out.append(Condition(key, "equals", cond))
            elif isinstance(cond, dict) and list(cond) == ["regex"]:
                pattern = cond["regex"]
                try:
                    if not isinstance(pattern, str):
                        raise ValueError(f"expected a regular expression (a string), got {_type_name(pattern)}")
                    _check_regex(pattern)
                except ValueError as e:
                    self.error(where + ("regex",), str(e))
                    continue
                out.append(Condition(key, "regex", pattern))
            elif isinstance(cond, dict):
                self.table(where, cond, ["regex"])
                if "regex" not in cond:
                    self.error(where, 'expected { regex = "..." }')
            else:
                self.error(where, f'expected true, false, a string or {{ regex = "..." }}, got {_type_name(cond)}')
        return tuple(out) if len(out) == len(v) else None

    # -- headers and CORS (docs/headers.md) ----------------------------------

    def rules(self, path: KeyPath, v: Any) -> HeaderRules | None:
        if not isinstance(v, dict):
            raise ValueError(f"expected a rule set {{ remove, set, add }}, got {_type_name(v)}")
        self.table(path, v, [k.name for k in RULE_KEYS])
        s = self.settings(path, v, RULE_KEYS)
        if None in s.values() or any(k not in s for k in v):
            return None
        return HeaderRules(remove=s["remove"], set=s["set"], add=s["add"])

    def field_names(self, path: KeyPath, v: Any, kind: str) -> tuple[str, ...] | None:
        """An array of header field names, lower-cased. ``rule_names`` (a
        rule's ``remove``) and ``hide`` may not name the framing fields, nor
        ``remove`` the ``Host``; ``copy_names`` (forward auth's
        ``copy_headers``) neither; ``cors_headers`` may be ``["*"]``."""
        if not isinstance(v, list):
            raise ValueError(f'expected an array of header field names such as ["x-debug"], got {_type_name(v)}')
        out: list[str] = []
        for i, name in enumerate(v):
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                self.error(path + (i,), f"expected a header field name, got {_show(name)}")
            elif kind == "cors_headers" and name == "*" and len(v) > 1:
                self.error(path + (i,), '"*" allows whatever a preflight asks for: it stands alone')
            elif kind in ("rule_names", "hide") and name.lower() in _FRAMING_FIELDS:
                self.error(path + (i,), _framing_message(name))
            elif kind == "rule_names" and name.lower() == "host":
                self.error(path + (i,), '"host" cannot be removed: a request needs one (`set` can change it)')
            elif kind == "copy_names" and name.lower() in (*_FRAMING_FIELDS, "host"):
                self.error(path + (i,), f"{_show(name)} cannot be copied from an auth service's answer")
            else:
                out.append(name.lower())
        return tuple(out) if len(out) == len(v) else None

    def rule_values(self, path: KeyPath, v: Any) -> tuple[tuple[str, str], ...] | None:
        """``{ name = "template" }`` of a rule's ``set`` or ``add``."""
        if not isinstance(v, dict):
            raise ValueError(f'expected a table of header fields {{ name = "value" }}, got {_type_name(v)}')
        out: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for name, value in v.items():
            where = path + (name,)
            if not _TOKEN.fullmatch(name):
                self.error(where, f"{_show(name)} is not a valid header field name", at_key=True)
                continue
            if name.lower() in _FRAMING_FIELDS:
                self.error(where, _framing_message(name), at_key=True)
                continue
            if path[-1] == "set" and name.lower() in seen:
                self.error(
                    where, f"{_show(seen[name.lower()])} is set already (field names are case-insensitive)", at_key=True
                )
                continue
            seen[name.lower()] = name
            if not isinstance(value, str):
                self.error(where, f"expected a header field value (a string), got {_type_name(value)}")
                continue
            try:
                _field_value(value)
                pieces = parse_template(value)
            except ValueError as e:
                self.error(where, str(e))
                continue
            unknown = [n for _, n in pieces if n and n not in HEADER_VARIABLES]
            for variable in unknown:
                close = difflib.get_close_matches(variable, HEADER_VARIABLES, n=1, cutoff=0.6)
                hint = f' (did you mean "${close[0]}"?)' if close else ""
                self.error(where, f'unknown variable "${variable}"{hint}')
            if not unknown:
                out.append((name.lower(), value))
        return tuple(out) if len(out) == len(v) else None

    def security(self, path: KeyPath, v: Any) -> SecuritySettings | Literal[False] | None:
        """``[headers] security``: ``False`` (off), ``True`` (the defaults) or a table."""
        if isinstance(v, bool):
            return SecuritySettings() if v else False
        if not isinstance(v, dict):
            raise ValueError(f"expected true, false or a table ([headers.security]), got {_type_name(v)}")
        self.table(path, v, [k.name for k in SECURITY_KEYS])
        s = self.settings(path, v, SECURITY_KEYS)
        if None in s.values():
            return None
        return SecuritySettings(**s)

    def cors(self, path: KeyPath, v: Any) -> CorsSettings | None:
        """``[cors]``, or a route's own ``cors`` table."""
        t = self.table(path, v, [k.name for k in CORS_KEYS])
        if t is None:
            return None
        s = self.settings(path, t, CORS_KEYS)
        if any(s[k.name] is None for k in CORS_KEYS if k.default is not None or k.name in t):
            return None
        if s["credentials"] and s["origins"] == ("*",):
            self.error(
                path + ("credentials",),
                'credentials with origins = ["*"] would let every site read responses with its visitors\' '
                "cookies: list the origins",
            )
            return None
        return CorsSettings(**s)

    def origins(self, path: KeyPath, v: Any) -> tuple[str, ...] | None:
        if not isinstance(v, list):
            raise ValueError(f'expected an array of origins such as ["https://app.example.com"], got {_type_name(v)}')
        if not v:
            raise ValueError('needs at least one origin (["*"] allows any)')
        out: list[str] = []
        for i, origin in enumerate(v):
            try:
                if origin == "*" and len(v) > 1:
                    raise ValueError('"*" allows every origin: it stands alone')
                out.append(_origin(origin))
            except ValueError as e:
                self.error(path + (i,), str(e))
        return tuple(out) if len(out) == len(v) else None

    # -- access control (docs/auth.md) ------------------------------------------

    def auth_value(self, path: KeyPath, v: Any, kind: str) -> Any:
        """A value of one of ``AUTH_KINDS``; raises ``ValueError`` (or reports
        the items at fault and returns ``None``)."""
        if kind == "auth_type":
            if isinstance(v, str) and v in AUTH_TYPES:
                return v
            close = difflib.get_close_matches(str(v), AUTH_TYPES, n=1, cutoff=0.6) if isinstance(v, str) else []
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ValueError(f'expected "api_key", "basic", "jwt" or "forward", got {_show(v)}{hint}')
        if kind == "realm":
            if not isinstance(v, str):
                raise ValueError(f"expected a realm (a string), got {_type_name(v)}")
            return _realm(v)
        if kind == "auth_field":
            if not isinstance(v, str) or not _TOKEN.fullmatch(v):
                raise ValueError(f"expected a header field name, got {_show(v)}")
            if v.lower() in (*_FRAMING_FIELDS, "host"):
                raise ValueError(f"{_show(v)} cannot carry a key: the proxy needs it")
            return v.lower()
        if kind == "query_name":
            if not isinstance(v, str) or not v:
                raise ValueError(f"expected the name of a query parameter, got {_show(v)}")
            if re.search(r'[^\x20-\x7e]|["\\]', v):
                raise ValueError(f"{_show(v)}: a parameter name here is ASCII text, without quotes and backslashes")
            return v
        if kind == "api_keys":
            if not isinstance(v, dict):
                raise ValueError(f'expected a table of keys {{ NAME = "KEY" }}, got {_type_name(v)}')
            keys: list[tuple[str, str]] = []
            for holder, key in v.items():
                problem = _holder_problem(holder) or _key_problem(key)
                if problem:
                    self.error(path + (holder,), problem, at_key=_holder_problem(holder) is not None)
                else:
                    keys.append((holder, key))
            return tuple(keys) if len(keys) == len(v) else None
        if kind == "file":
            if not isinstance(v, str) or not v:
                raise ValueError(f"expected a file name, got {_show(v)}")
            return v
        if kind == "jwt_algorithms":
            return self.jwt_algorithms(path, v)
        if kind == "secret":
            if not isinstance(v, str):
                raise ValueError(f"expected a secret (a string), got {_type_name(v)}")
            if not v:
                raise ValueError("the secret is empty")
            return v
        if kind == "pem":
            if not isinstance(v, str):
                raise ValueError(f"expected a PEM public key (a string), got {_type_name(v)}")
            return v
        if kind == "audience":
            if isinstance(v, str):
                return (v,)
            if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                raise ValueError(f"expected a string or an array of strings, got {_show(v)}")
            if not v:
                raise ValueError("needs at least one audience (leave the key out to accept any)")
            return tuple(v)
        if kind == "forward_path":
            if not isinstance(v, str) or not v.startswith("/"):
                raise ValueError(f'expected a path starting with "/", got {_show(v)}')
            if not re.fullmatch(r"/[\x21-\x7e]*", v) or "#" in v:
                raise ValueError(f"{_show(v)}: a request target is visible ASCII, without spaces or a fragment (#)")
            return v
        if kind == "auth_names":
            names = [v] if isinstance(v, str) else v
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"expected the name of an [auth.NAME] policy, or an array of names, got {_show(v)}")
            if not names:
                raise ValueError("needs at least one policy (leave the key out for none)")
            for i, name in enumerate(names):
                if name in names[:i]:
                    self.error(path + (i,), f"{_show(name)} is listed already")
            return tuple(names)
        raise AssertionError(f"unknown kind {kind}")

    def jwt_algorithms(self, path: KeyPath, v: Any) -> tuple[str, ...] | None:
        if not isinstance(v, list):
            raise ValueError(f'expected an array of algorithms such as ["RS256"], got {_type_name(v)}')
        if not v:
            raise ValueError('needs at least one algorithm: "HS256", "RS256" or "ES256"')
        out: list[str] = []
        for i, alg in enumerate(v):
            where = path + (i,)
            if not isinstance(alg, str):
                self.error(where, f"expected an algorithm (a string), got {_type_name(alg)}")
            elif alg.lower() == "none":
                self.error(where, '"none" is never accepted: it means an unsigned token')
            elif alg.upper() in JWT_ALGORITHMS and alg not in JWT_ALGORITHMS:
                self.error(where, f'algorithm names are case-sensitive: write "{alg.upper()}"')
            elif alg not in JWT_ALGORITHMS:
                self.error(where, f'unsupported algorithm {_show(alg)}: expected "HS256", "RS256" or "ES256"')
            elif alg in out:
                self.error(where, f"{_show(alg)} is listed already")
            else:
                out.append(alg)
        return tuple(out) if len(out) == len(v) else None

    def split(self, path: KeyPath, v: Any) -> tuple[SplitShare, ...] | None:
        if not isinstance(v, list):
            raise ValueError(f"expected an array of {{ upstream, weight }} tables, got {_type_name(v)}")
        if not v:
            raise ValueError("needs at least one pool")
        out: list[SplitShare] = []
        for i, item in enumerate(v):
            t = self.table(path + (i,), item, [k.name for k in SPLIT_KEYS])
            if t is not None:
                s = self.settings(path + (i,), t, SPLIT_KEYS)
                if None not in s.values():
                    out.append(SplitShare(**s))
        total = sum(share.weight for share in out)
        if total > _MAX_SPLIT_WEIGHT:
            raise ValueError(f"the weights add up to {total}; at most {_MAX_SPLIT_WEIGHT} is allowed")
        return tuple(out) if len(out) == len(v) else None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: The kinds of value ``_Checker.pool_value`` checks.
POOL_KINDS = frozenset(
    (
        "servers", "server_address", "weight", "balance", "hash_key", "share", "percent", "health_check",
        "check_type", "check_path", "check_host", "status_range",
    )
)  # fmt: skip
_MAX_WEIGHT = 100
#: The kinds of value ``_Checker.auth_value`` checks.
AUTH_KINDS = frozenset(
    (
        "auth_type", "realm", "auth_field", "query_name", "api_keys", "file", "jwt_algorithms", "secret", "pem",
        "audience", "forward_path", "auth_names",
    )
)  # fmt: skip
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
#: Fields that carry a message's framing or a connection's state: no header rule may name them.
_FRAMING_FIELDS = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length")
)
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)(?::(\d{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_MAX_SPLIT_WEIGHT = 10000
_HOST = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")


def _show_any(v: object) -> str:
    """``v`` as written in TOML when it is a scalar, else its type."""
    return _show(v) if isinstance(v, (str, int, float)) else _type_name(v)


_HASH_KEY_FORMS = '"client_ip", "header:NAME" or "cookie:NAME"'


def _hash_key(v: Any) -> HashKey:
    """A pool's ``hash_key``: ``"client_ip"``, ``"header:NAME"`` (a field
    name, lower-cased) or ``"cookie:NAME"``."""
    if not isinstance(v, str):
        raise ValueError(f"expected {_HASH_KEY_FORMS}, got {_type_name(v)}")
    if v == "client_ip":
        return HashKey("client_ip")
    kind, colon, name = v.partition(":")
    if not colon or kind not in ("header", "cookie"):
        close = difflib.get_close_matches(v, ["client_ip"], n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise ValueError(f"expected {_HASH_KEY_FORMS}, got {_show(v)}{hint}")
    what = "header field name" if kind == "header" else "cookie name"
    if not name:
        raise ValueError(f'{_show(v)}: the {what} is missing after ":"')
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{_show(v)}: {_show(name)} is not a valid {what}")
    return HashKey(kind, name.lower() if kind == "header" else name)


def _status_range(v: Any) -> tuple[int, int]:
    """A health check's ``status``: a code, or ``"LOW-HIGH"``, within 100 to 599."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not 100 <= v <= 599:
            raise ValueError(f"expected a status code from 100 to 599, got {v}")
        low = high = v
    elif isinstance(v, str) and re.fullmatch(r"\d{3}-\d{3}", v.strip()):
        low, high = (int(n) for n in v.strip().split("-"))
    else:
        raise ValueError(f'expected a status code (200) or a range of them ("200-399"), got {_show_any(v)}')
    for code in (low, high):
        if not 100 <= code <= 599:
            raise ValueError(f"{_show(v)}: {code} is not a status code (100 to 599)")
    if low > high:
        raise ValueError(f'{_show(v)}: the range is empty (write "{high}-{low}")')
    return low, high


def _host(text: Any) -> str:
    """A ``host`` condition as requests are matched: lower-case, without a
    trailing dot, and an IPv6 address without its brackets."""
    if not isinstance(text, str):
        raise ValueError(f"expected a host, got {_type_name(text)}")
    host = text.lower().removesuffix(".")
    bare = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        pass
    else:
        return bare  # the host of a request to [::1]:8080 is "::1"
    if re.fullmatch(r"[^:\[\]]+:\d+|\[[0-9a-f:.]+\]:\d+", host):
        raise ValueError(f"{_show(text)} has a port: hosts are matched without their port")
    if not _HOST.fullmatch(host):
        raise ValueError(
            f'{_show(text)} is not a host: expected a name such as "api.example.com", or "*.example.com" '
            "for its subdomains"
        )
    return host


def _network(text: str) -> str:
    """An address or network as the engine reads it ("10.0.0.0/8"). An
    IPv4-mapped IPv6 network is written as the IPv4 network it is: clients'
    mapped addresses are matched as IPv4 addresses."""
    if "%" in text:
        raise ValueError("a zone index is not part of a network")
    net = ipaddress.ip_network(text, strict=False)
    mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
    if mapped is not None and net.prefixlen >= 96:
        return str(ipaddress.IPv4Network((mapped, net.prefixlen - 96)))
    return str(net)


def _realm(text: str) -> str:
    """``text`` if it can be a challenge's realm: ASCII, no control characters."""
    bad = re.search(r"[^\x20-\x7e]", text)
    if bad:
        raise ValueError(f"a realm is ASCII text without control characters; {_show(text)} has {bad.group()!r}")
    return text


def _holder_problem(holder: str) -> str | None:
    if not holder or re.search(r"[\x00-\x1f\x7f]", holder):
        return "a key's holder is named by a non-empty string without control characters"
    return None


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return f"expected a key (a non-empty string), got {_show(key) if isinstance(key, str) else _type_name(key)}"
    if re.search(r"[\x00-\x1f\x7f]", key):
        return "a key cannot have control characters"
    if key != key.strip(" \t"):
        return "a key cannot start or end with white space (header fields do not keep it)"
    return None


def _framing_message(name: str) -> str:
    return (
        f"{_show(name)} cannot be named here: it carries the message's framing or the connection's state, "
        "which the proxy manages"
    )


def _field_value(value: str) -> str:
    """``value`` if it can be sent as a header field value as written:
    visible ASCII, spaces and tabs, without space at either end."""
    bad = re.search(r"[^\x20-\x7e\t]", value)
    if bad and ord(bad.group()) > 0x7F:
        raise ValueError(f'the value has the non-ASCII character "{bad.group()}": header values here are ASCII')
    if bad:
        raise ValueError(
            f"the value has a control character (U+{ord(bad.group()):04X}): "
            "header values are visible ASCII characters, spaces and tabs"
        )
    if value != value.strip(" \t"):
        raise ValueError("the value starts or ends with white space, which HTTP does not keep in a field value")
    return value


def _origin(text: Any) -> str:
    """An entry of CORS ``origins``: ``"*"``, or an origin exactly as a
    browser sends it in ``Origin`` (RFC 6454 §6.2)."""
    if not isinstance(text, str):
        raise ValueError(f'expected an origin such as "https://app.example.com", got {_type_name(text)}')
    if text == "*":
        return text
    if text == "null":
        raise ValueError('"null" is the origin of sandboxed documents and local files, which any page can make')
    scheme, sep, rest = text.partition("://")
    authority, slash, _ = rest.partition("/")
    if sep and slash:
        bare = _show(f"{scheme}://{authority}")
        if rest == authority + "/":
            raise ValueError(f'{_show(text)} ends with "/": browsers send origins without it (write {bare})')
        raise ValueError(f"{_show(text)} has a path: an origin is only scheme://host[:port] (write {bare})")
    if "*" in text:
        raise ValueError(f'{_show(text)}: origins are compared exactly; list each one, or use "*" alone for any')
    m = _ORIGIN.fullmatch(text.lower())
    if not sep or not m:
        raise ValueError(
            f'{_show(text)} is not an origin: expected "scheme://host[:port]", such as "https://app.example.com"'
        )
    if text != text.lower():
        raise ValueError(
            f"origins are compared exactly, and browsers send them in lower case: write {_show(text.lower())}"
        )
    port = m.group(3)
    if port is not None and not 0 < int(port) <= 65535:
        raise ValueError(f"{_show(text)}: port {port} is out of range")
    if port is not None and _DEFAULT_PORTS.get(m.group(1)) == port:
        bare = text.rsplit(":", 1)[0]
        raise ValueError(f"browsers leave the default port out of an origin: write {_show(bare)}")
    return text


def _route_path(path: str, *, prefix: bool) -> str:
    """``path`` if some normalised request path can match it."""
    if not path.startswith("/"):
        raise ValueError(f'{_show(path)} must start with "/"')
    if "?" in path:
        raise ValueError(f"{_show(path)} has a query: paths are matched without it (see the `query` key)")
    if not _PATH_CHARS.fullmatch(path):
        raise ValueError(f"{_show(path)} never matches: percent-encode the characters a path cannot have")
    # A prefix may end inside an escape ("/a%2" matches "/a%2F..."); check
    # what comes before it, followed by a character of a longer path.
    stem = re.sub(r"%[0-9A-Fa-f]?$", "", path) if prefix else path
    probe = stem + "x" if prefix else stem
    normal = normalise_path(probe)
    if normal is None:
        raise ValueError(f"{_show(path)} never matches: it has a malformed escape or climbs above the root")
    if normal != probe:
        better = normal[:-1] if prefix else normal
        raise ValueError(f"{_show(path)} never matches: request paths are normalised first (write {_show(better)})")
    return path


def _check_regex(pattern: str) -> None:
    """Raise ``ValueError`` unless both Python and the engine accept
    ``pattern`` and read it the same way."""
    try:
        with warnings.catch_warnings():
            # Python warns where the engine's syntax means something else
            # ("[[:alpha:]]", "[a--b]", "[a&&b]").
            warnings.simplefilter("error", FutureWarning)
            re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None
    except FutureWarning as e:
        where = str(e).removeprefix("Possible ").replace(" at ", ", at ")
        raise ValueError(f"Python and the engine read this differently ({where}): escape the character") from None
    problem = _engine.check_regex(pattern)
    if problem is not None:
        raise ValueError(f"the engine cannot use this regular expression: {problem.removeprefix('error: ')}")


def _parse_address(text: Any, *, listen: bool) -> Address:
    if not isinstance(text, str):
        raise ValueError(f'expected "host:port", got {_type_name(text)}')
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
    if not m:
        if re.fullmatch(r"[^:]+|\[[0-9A-Fa-f:.]+\]", text.strip()):
            raise ValueError(f'"{text}" has no port')
        raise ValueError(f'"{text}" is not a "host:port" address')
    host = m.group(1) or m.group(3) or ""
    port = int(m.group(2) or m.group(4))
    if not (0 if listen else 1) <= port <= 65535:
        raise ValueError(f'"{text}": port {port} is out of range')
    if not host:
        if not listen:
            raise ValueError(f'"{text}" has no host')
        host = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # An upstream at an IPv4-mapped address is that IPv4 address (so that
        # the engine and Python write it alike, "10.0.0.5:80").
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and not listen else None
        return Address(str(mapped or ip), port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f'cannot resolve "{host}": {e.strerror or e}') from None
    infos.sort(key=lambda i: i[0] != socket.AF_INET)  # prefer IPv4, as most "localhost" servers listen there
    return Address(str(infos[0][4][0]), port)


def loads(text: str, file: str = "proxy.toml") -> Config:
    """Validate configuration ``text``; ``file`` names it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        message = re.sub(r"\s*\(at line \d+, column \d+\)|\s*\(at end of document\)", "", str(e))
        raise ConfigError([ConfigIssue(line, col, file, "", f"invalid TOML: {message}")]) from None
    positions = Positions(text)
    config = _validate(raw, _Checker(file, positions), Path(file), positions)
    return dataclasses.replace(config, source=text)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigIssue(0, 0, str(path), "", f"cannot read: {e.strerror or e}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(1, 1, str(path), "", f"not UTF-8 text: {e.reason}")]) from None
    return loads(text, str(path))


def _plugins(raw: Any, c: _Checker, path: Path) -> PluginsSettings:
    base = path.resolve().parent
    t = c.table(
        ("plugins",),
        raw,
        [k.name for k in PLUGINS_KEYS] + [k for k, v in raw.items() if isinstance(v, dict)]
        if isinstance(raw, dict)
        else [],
    )
    t = t or {}
    s = c.settings(("plugins",), {k: v for k, v in t.items() if k in ("dirs", "disable")}, PLUGINS_KEYS)
    tables: dict[str, PluginTable] = {}
    for name, value in t.items():
        if name in ("dirs", "disable"):
            continue
        if not isinstance(value, dict):
            continue
        own = {k: v for k, v in value.items() if k in ("on_error", "timeout")}
        opts = c.settings(("plugins", name), own, PLUGIN_TABLE_KEYS)
        options = {k: v for k, v in value.items() if k not in ("on_error", "timeout")}
        tables[name] = PluginTable(on_error=opts["on_error"], timeout=opts["timeout"] or 5.0, options=options)
    dirs = tuple(base / d for d in (s["dirs"] or ()))
    return PluginsSettings(
        dirs=dirs,
        explicit_dirs=dirs if "dirs" in t else (),
        disable=s["disable"] or (),
        tables=tables,
    )


_ACTIONS = ("upstream", "split", "redirect", "respond")
_PATH_CONDITIONS = ("path", "path_prefix", "path_regex")


def _route(
    c: _Checker, i: int, raw: Any, pools: Mapping[str, Any], policies: Mapping[str, Any], *, has_cache: bool
) -> RouteSettings | None:
    """One ``[[routes]]`` entry, checked key by key and then as a whole;
    ``has_cache`` says whether the file has a ``[cache]`` table."""
    here: KeyPath = ("routes", i)
    t = c.table(here, raw, [k.name for k in ROUTE_KEYS])
    if t is None:
        return None
    s = c.settings(here, t, ROUTE_KEYS)
    failed = any(k in s and s[k] is None for k in t)  # reported; the checks below still run

    def conflict(keys: Sequence[str], message: str) -> None:
        given = [k for k in keys if k in t]
        if len(given) > 1:
            c.error(here + (given[1],), message.format(*given), at_key=True)

    conflict(_PATH_CONDITIONS, 'a route has one of "path", "path_prefix" and "path_regex", not both "{}" and "{}"')
    actions = [k for k in _ACTIONS if k in t]
    if not actions:
        c.error(here, 'needs an action: "upstream", "split", "redirect" or "respond"')
    conflict(_ACTIONS, 'a route has one action, not both "{}" and "{}"')
    forwards = bool(actions) and actions[0] in ("upstream", "split")

    references = [(here + ("upstream",), s["upstream"])]
    if isinstance(t.get("split"), list):
        references += [
            (here + ("split", j, "upstream"), x.get("upstream"))
            for j, x in enumerate(t["split"])
            if isinstance(x, dict)
        ]
    for where, pool in references:
        if isinstance(pool, str) and pool not in pools:
            close = difflib.get_close_matches(pool, list(pools), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            c.error(where, f'unknown upstream "{pool}"{hint}')

    for j, name in enumerate(s["auth"] or ()):
        if name not in policies:
            where = here + ("auth", j) if isinstance(t.get("auth"), list) else here + ("auth",)
            close = difflib.get_close_matches(name, list(policies), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            c.error(where, f'unknown auth policy "{name}"{hint}')

    for key in ("strip_prefix", "rewrite", "upstream_host", "request_headers", "cache", "cache_ttl"):
        if actions and not forwards and key in t and t[key] is not False:
            c.error(here + (key,), f'"{key}" needs "upstream" or "split"', at_key=True)
    for key in ("cache", "cache_ttl"):
        if key in t and not has_cache:
            c.error(here + (key,), f'"{key}" needs a [cache] table (docs/caching.md)', at_key=True)
    for key in ("sticky_cookie", "sticky_header"):
        if key in t and "split" not in t:
            c.error(here + (key,), f'"{key}" needs "split"', at_key=True)
    conflict(("sticky_cookie", "sticky_header"), 'a route has "{}" or "{}", not both')
    if s["strip_prefix"] and "path_prefix" not in t:
        c.error(here + ("strip_prefix",), '"strip_prefix" needs "path_prefix"', at_key=True)
    if s["strip_prefix"]:
        conflict(("strip_prefix", "rewrite"), 'a route has "{}" or "{}", not both')

    if "path_regex" not in t or s["path_regex"] is not None:
        groups = _regex_groups(c, here + ("path_regex",), s["path_regex"])
        templates = [(here + (k,), s[k]) for k in ("rewrite", "upstream_host")]
        if s["redirect"] is not None:
            templates.append((here + ("redirect", "location"), s["redirect"].location))
        for where, template in templates:
            if template is not None:
                _check_variables(c, where, template, groups)

    if failed or not actions:
        return None
    return RouteSettings(
        name=s["name"] or f"routes[{i}]",
        hosts=s["host"] or (),
        path=s["path"],
        path_prefix=s["path_prefix"],
        path_regex=s["path_regex"],
        methods=s["methods"] or (),
        headers=s["headers"] or (),
        query=s["query"] or (),
        upstream=s["upstream"],
        split=s["split"] or (),
        redirect=s["redirect"],
        respond=s["respond"],
        strip_prefix=s["strip_prefix"],
        rewrite=s["rewrite"],
        upstream_host=s["upstream_host"],
        sticky_cookie=s["sticky_cookie"],
        sticky_header=s["sticky_header"],
        request_headers=s["request_headers"],
        response_headers=s["response_headers"],
        cors=s["cors"],
        auth=s["auth"] or (),
        allow=s["allow"],
        deny=s["deny"],
        cache=s["cache"],
        cache_ttl=s["cache_ttl"],
    )


def _check_hash_key(c: _Checker, here: KeyPath, table: Mapping[str, Any], balance: Any) -> bool:
    """``hash_key`` is only for ``balance = "hash"``: checked in the table
    that sets it, against the balance in force there."""
    if "hash_key" in table and balance is not None and balance != "hash":
        c.error(here + ("hash_key",), '"hash_key" needs balance = "hash"', at_key=True)
        return False
    return True


def _regex_groups(c: _Checker, where: KeyPath, pattern: str | None) -> tuple[int, Sequence[str]] | None:
    """How many groups ``pattern`` has, and their names; ``None`` without a pattern."""
    if pattern is None:
        return None
    compiled = re.compile(pattern)
    for name in compiled.groupindex:
        if name in VARIABLES:
            c.error(where, f'the group name "{name}" is also a variable: rename the group')
    return compiled.groups, list(compiled.groupindex)


def _check_variables(c: _Checker, where: KeyPath, template: str, groups: tuple[int, Sequence[str]] | None) -> None:
    """Report the variables of ``template`` that its route does not have."""
    count, names = groups or (0, ())
    known = [*VARIABLES, *names, *(str(n) for n in range(1, min(count, 9) + 1))]
    for _, name in parse_template(template):
        if not name or name in known:
            continue
        if name.isdigit() and groups is None:
            c.error(where, f'"${name}" is a group of path_regex, and this route has none')
        elif name.isdigit():
            c.error(where, f'"${name}": path_regex has {count} group{"" if count == 1 else "s"}')
        else:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f' (did you mean "${close[0]}"?)' if close else ""
            c.error(where, f'unknown variable "${name}"{hint}')


def _validate(raw: dict[str, Any], c: _Checker, path: Path, positions: Positions | None = None) -> Config:
    c.table((), raw, TOP_KEYS)

    server_table = c.table(("server",), raw.get("server", {}), [k.name for k in SERVER_KEYS]) or {}
    server = c.settings(("server",), server_table, SERVER_KEYS)

    defaults: dict[str, Any] = {}
    upstream_keys = [k for k in UPSTREAM_KEYS if k.name != "servers"]
    d = c.table(("defaults",), raw.get("defaults", {}), ["upstream"])
    if d and "upstream" in d:
        du = c.table(("defaults", "upstream"), d["upstream"], [k.name for k in upstream_keys])
        if du is not None:
            defaults = {k: v for k, v in c.settings(("defaults", "upstream"), du, upstream_keys).items() if k in du}
            _check_hash_key(c, ("defaults", "upstream"), du, defaults.get("balance", "round_robin"))

    upstreams: dict[str, UpstreamSettings] = {}
    pools = raw.get("upstreams", {})
    if not isinstance(pools, dict):
        c.error(("upstreams",), f"expected a table of pools ([upstreams.NAME]), got {_type_name(pools)}")
        pools = {}
    for name, table in pools.items():
        t = c.table(("upstreams", name), table, [k.name for k in UPSTREAM_KEYS])
        if t is None:
            continue
        s = c.settings(("upstreams", name), t, UPSTREAM_KEYS, inherited=defaults)
        ok = _check_hash_key(c, ("upstreams", name), t, s["balance"])
        given = set(t) | set(defaults)
        if ok and not any(s[k.name] is None for k in UPSTREAM_KEYS if k.default is not None or k.name in given):
            # The key hashed: client_ip unless one is given; none without "hash".
            s["hash_key"] = (s["hash_key"] or HashKey("client_ip")) if s["balance"] == "hash" else None
            upstreams[name] = UpstreamSettings(name=name, **s)

    raw_auth = raw.get("auth", {})
    auth = _auth(raw_auth, c, path.resolve().parent, pools)
    if not isinstance(raw_auth, dict):
        raw_auth = {}

    cache = _cache(raw["cache"], c) if "cache" in raw else None

    routes: list[RouteSettings] = []
    raw_routes = raw.get("routes", [])
    if not isinstance(raw_routes, list):
        c.error(("routes",), "expected an array of tables ([[routes]])")
    elif not raw_routes:
        c.error(("routes",) if "routes" in raw else (), "no routes: add at least one [[routes]] entry")
    names: dict[str, int] = {}
    for i, table in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        route = _route(c, i, table, pools, raw_auth, has_cache="cache" in raw)
        if route is None:
            continue
        if route.name in names:
            c.error(("routes", i, "name"), f"routes[{names[route.name]}] has this name already")
        names.setdefault(route.name, i)
        routes.append(route)

    headers = _headers(raw.get("headers", {}), c)
    cors = c.cors(("cors",), raw["cors"]) if "cors" in raw else None

    plugins = _plugins(raw.get("plugins", {}), c, path)

    if c.issues:
        raise ConfigError(c.issues)
    return Config(
        path=path,
        server=ServerSettings(**server),
        upstreams=upstreams,
        routes=tuple(routes),
        plugins=plugins,
        positions=positions,
        headers=headers,
        cors=cors,
        auth=auth,
        cache=cache,
    )


def _cache(raw: Any, c: _Checker) -> CacheSettings | None:
    """``[cache]`` (docs/caching.md); ``None`` where it has errors (they are reported)."""
    t = c.table(("cache",), raw, [k.name for k in CACHE_KEYS])
    if t is None:
        return None
    s = c.settings(("cache",), t, CACHE_KEYS)
    largest, bound = s["max_object_size"], s["max_size"]
    if largest is not None and bound is not None and largest > bound:
        c.error(
            ("cache", "max_object_size"),
            f"{largest} bytes is more than max_size ({bound} bytes): the store could not hold such a response",
        )
        return None
    optional = {k.name for k in CACHE_KEYS if k.default is None}
    if any(v is None for k, v in s.items() if k not in optional) or any(k not in s for k in t):
        return None
    return CacheSettings(**s)


# -- [auth.NAME] (docs/auth.md) -----------------------------------------------------


def _auth(raw: Any, c: _Checker, base: Path, pools: Mapping[str, Any]) -> dict[str, AuthSettings]:
    """The ``[auth.NAME]`` policies; their files are read from ``base`` (the
    configuration's folder) now, once."""
    if not isinstance(raw, dict):
        c.error(("auth",), f"expected a table of policies ([auth.NAME]), got {_type_name(raw)}")
        return {}
    out: dict[str, AuthSettings] = {}
    for name, table in raw.items():
        here: KeyPath = ("auth", name)
        if not isinstance(table, dict):
            c.error(here, f"expected a table ([auth.{_fmt_path((name,))}]), got {_type_name(table)}")
            continue
        if "type" not in table:
            c.error(here, 'missing required key "type": "api_key", "basic", "jwt" or "forward"')
            continue
        kind = c.value(here + ("type",), table["type"], AUTH_KEYS[0])
        if kind is None:
            continue
        keys = (*AUTH_KEYS, *AUTH_TYPE_KEYS[kind])
        names = [k.name for k in keys]
        for key in table:
            if key in names:
                continue
            owners = [f'"{t}"' for t, ks in AUTH_TYPE_KEYS.items() if any(k.name == key for k in ks)]
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            if owners:
                listed = owners[0] if len(owners) == 1 else ", ".join(owners[:-1]) + " and " + owners[-1]
                hint = f": it is a key of type{'s' if len(owners) > 1 else ''} {listed}, not of {_show(kind)}"
            else:
                hint = f' (did you mean "{close[0]}"?)' if close else ""
            c.error(here + (key,), f"unknown key{hint}", at_key=True)
        s = c.settings(here, {k: v for k, v in table.items() if k in names}, keys)
        if any(k in s and s[k] is None for k in table) or any(s[k.name] is None for k in keys if k.default is REQUIRED):
            continue  # reported
        realm = s.get("realm")
        if kind != "forward" and realm is None:
            try:
                realm = _realm(name)
            except ValueError:
                c.error(here, 'the realm is the policy\'s name by default, and a realm is ASCII text: set "realm"')
                continue
        policy = _AUTH_BUILDERS[kind](c, here, name, table, s, base, pools)
        if policy is not None:
            out[name] = dataclasses.replace(policy, realm=realm) if realm is not None else policy
    return out


def _read(c: _Checker, where: KeyPath, base: Path, name: str) -> str | None:
    """The text of the file ``name`` (relative to ``base``), or ``None`` (reported)."""
    try:
        data = (base / name).read_bytes()
    except OSError as e:
        c.error(where, f'cannot read "{name}": {e.strerror or e}')
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        c.error(where, f"{name}:{line}: not UTF-8 text")
        return None


def _api_key_auth(
    c: _Checker, here: KeyPath, name: str, t: Mapping[str, Any], s: Mapping[str, Any], base: Path, pools: Any
) -> ApiKeyAuth | None:
    if "header" in t and "query" in t:
        c.error(here + ("query",), 'a key is in "header" or in "query", not both', at_key=True)
        return None
    header = None if s["query"] is not None else s["header"] or "x-api-key"
    keys: list[tuple[str, str]] = list(s["keys"])
    ok = True
    for j, (holder, key) in enumerate(keys):
        if key in (k for _, k in keys[:j]):
            other = next(h for h, k in keys if k == key)
            c.error(here + ("keys", holder), f'the same key as "{other}": each holder needs a key of their own')
            ok = False
    if s["keys_file"] is not None:
        where = here + ("keys_file",)
        file = s["keys_file"]
        text = _read(c, where, base, file)
        if text is None:
            return None
        entries, problems = _authfiles.keys_file(text)
        for line, message in problems:
            c.error(where, f"{file}:{line}: {message}")
        ok = ok and not problems
        for line, holder, key in entries:
            if holder in (h for h, _ in keys):
                c.error(where, f'{file}:{line}: "{holder}" has a key already')
                ok = False
            elif key in (k for _, k in keys):
                other = next(h for h, k in keys if k == key)
                c.error(where, f'{file}:{line}: the same key as "{other}": each holder needs a key of their own')
                ok = False
            else:
                keys.append((holder, key))
    if not keys and ok:
        c.error(here, 'needs at least one key: "keys" or "keys_file"')
        return None
    if not ok:
        return None
    return ApiKeyAuth(
        name=name, keys=tuple(keys), header=header, query=s["query"], forward_credentials=s["forward_credentials"]
    )


def _basic_auth(
    c: _Checker, here: KeyPath, name: str, t: Mapping[str, Any], s: Mapping[str, Any], base: Path, pools: Any
) -> BasicAuth | None:
    where = here + ("htpasswd",)
    file = s["htpasswd"]
    text = _read(c, where, base, file)
    if text is None:
        return None
    entries, problems = _authfiles.htpasswd(text)
    for line, message in problems:
        c.error(where, f"{file}:{line}: {message}")
    users: dict[str, int] = {}
    for line, user, _ in entries:
        if user in users:
            c.error(where, f'{file}:{line}: user "{user}" is on line {users[user]} already')
            problems.append((line, ""))
        users.setdefault(user, line)
    if not entries and not problems:
        c.error(where, f"{file}: no users")
    if problems or not entries:
        return None
    return BasicAuth(
        name=name,
        users=tuple((user, hashed) for _, user, hashed in entries),
        forward_credentials=s["forward_credentials"],
    )


def _jwt_auth(
    c: _Checker, here: KeyPath, name: str, t: Mapping[str, Any], s: Mapping[str, Any], base: Path, pools: Any
) -> JwtAuth | None:
    algorithms: tuple[str, ...] = s["algorithms"]
    keys: list[dict[str, str]] = []
    ok = True
    if "public_key" in t and "public_key_file" in t:
        c.error(here + ("public_key_file",), 'a policy has "public_key" or "public_key_file", not both', at_key=True)
        return None

    def needs(key: str, jwk: dict[str, str]) -> None:
        alg = next(a for a, kty in _authfiles.KEY_TYPES.items() if kty == jwk["kty"])
        if alg not in algorithms:
            c.error(here + (key,), f'an {jwk["kty"]} key is for {alg}, which "algorithms" does not list')

    if s["secret"] is not None:
        keys.append({"kty": "oct", "k": _authfiles.b64url(s["secret"].encode())})
        needs("secret", keys[-1])
    if s["public_key"] is not None:
        try:
            keys.append(_authfiles.jwk_of_pem(s["public_key"].encode()))
            needs("public_key", keys[-1])
        except ValueError as e:
            c.error(here + ("public_key",), str(e))
            ok = False
    if s["public_key_file"] is not None:
        where = here + ("public_key_file",)
        file = s["public_key_file"]
        text = _read(c, where, base, file)
        try:
            if text is not None:
                keys.append(_authfiles.jwk_of_pem(text.encode()))
                needs("public_key_file", keys[-1])
        except ValueError as e:
            c.error(where, f"{file}: {e}")
            ok = False
        ok = ok and text is not None
    if s["jwks_file"] is not None:
        where = here + ("jwks_file",)
        file = s["jwks_file"]
        text = _read(c, where, base, file)
        if text is None:
            ok = False
        else:
            found, problems = _authfiles.jwks(text)
            for line, message in problems:
                c.error(where, f"{file}:{line}: {message}")
            if not found and not problems:
                c.error(where, f"{file}: the key set has no keys")
            keys += [jwk for _, jwk in found]
            ok = ok and bool(found) and not problems
    if not ok:
        return None
    if not keys:
        c.error(here, 'needs a key: "secret", "public_key", "public_key_file" or "jwks_file"')
        return None
    for i, alg in enumerate(algorithms):
        if not any(_authfiles.key_suits(k, alg) for k in keys):
            kind = {"HS256": '"secret" (or an oct key)', "RS256": "an RSA key", "ES256": "an EC P-256 key"}[alg]
            c.error(here + ("algorithms", i), f'"{alg}" has no key to verify it: add {kind}')
            ok = False
    if not ok:
        return None
    return JwtAuth(
        name=name,
        algorithms=algorithms,
        keys=tuple(keys),
        issuer=s["issuer"],
        audience=s["audience"] or (),
        leeway=s["leeway"],
        forward_credentials=s["forward_credentials"],
    )


def _forward_auth(
    c: _Checker,
    here: KeyPath,
    name: str,
    t: Mapping[str, Any],
    s: Mapping[str, Any],
    base: Path,
    pools: Mapping[str, Any],
) -> ForwardAuth | None:
    pool = s["upstream"]
    if pool not in pools:
        close = difflib.get_close_matches(pool, list(pools), n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        c.error(here + ("upstream",), f'unknown upstream "{pool}"{hint}')
        return None
    return ForwardAuth(
        name=name,
        upstream=pool,
        path=s["path"],
        send_headers=s["send_headers"],
        copy_headers=s["copy_headers"],
        cache=s["cache"],
        forward_credentials=s["forward_credentials"],
    )


_AUTH_BUILDERS: dict[str, Callable[..., AuthSettings | None]] = {
    "api_key": _api_key_auth,
    "basic": _basic_auth,
    "jwt": _jwt_auth,
    "forward": _forward_auth,
}


def _headers(raw: Any, c: _Checker) -> HeadersSettings:
    """``[headers]``; the defaults where it has errors (they are reported)."""
    t = c.table(("headers",), raw, [k.name for k in HEADERS_KEYS]) or {}
    s = c.settings(("headers",), t, HEADERS_KEYS)
    if None in s.values():
        return HeadersSettings()
    return HeadersSettings(hide=s["hide"], security=s["security"] or None, request=s["request"], response=s["response"])
