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
import ipaddress
import os
import re
import socket
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rproxy import _engine
from rproxy._toml_positions import Path as KeyPath
from rproxy._toml_positions import Positions
from rproxy.errors import ConfigError, ConfigIssue
from rproxy.routing import VARIABLES, normalise_path, parse_template

__all__ = [
    "CORS_KEYS",
    "DEFAULT_HIDE",
    "HEADERS_KEYS",
    "HEADER_VARIABLES",
    "PLUGINS_KEYS",
    "PLUGIN_TABLE_KEYS",
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
    "Condition",
    "Config",
    "CorsSettings",
    "HeaderRules",
    "HeadersSettings",
    "Key",
    "PluginTable",
    "PluginsSettings",
    "RedirectSettings",
    "RespondSettings",
    "RouteSettings",
    "SecuritySettings",
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

UPSTREAM_KEYS: tuple[Key, ...] = (
    Key("servers", "servers", REQUIRED, 'the pool\'s servers, "host:port"; tried round-robin'),
    Key(
        "connect_timeout",
        "duration",
        "2s",
        "time allowed to connect to a server; beyond it the next server is tried, then 502",
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

TOP_KEYS = ("server", "defaults", "upstreams", "routes", "headers", "cors", "plugins")


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
class UpstreamSettings:
    """``[upstreams.NAME]``: one pool of servers, and its header rules."""

    name: str
    servers: tuple[Address, ...]
    connect_timeout: float
    response_timeout: float
    body_idle_timeout: float
    keepalive: int
    keepalive_timeout: float
    keepalive_requests: int
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()


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
            "upstreams": {
                name: {
                    "servers": [str(a) for a in u.servers],
                    "connect_timeout": _ms(u.connect_timeout),
                    "response_timeout": _ms(u.response_timeout),
                    "body_idle_timeout": _ms(u.body_idle_timeout),
                    "keepalive": u.keepalive,
                    "keepalive_timeout": _ms(u.keepalive_timeout),
                    "keepalive_requests": u.keepalive_requests,
                    "request_headers": _rules_json(u.request_headers),
                    "response_headers": _rules_json(u.response_headers),
                }
                for name, u in self.upstreams.items()
            },
            "routes": [_route_json(r) for r in self.routes],
            "headers": {
                "hide": list(self.headers.hide),
                "security": None if self.headers.security is None else dataclasses.asdict(self.headers.security),
                "request": _rules_json(self.headers.request),
                "response": _rules_json(self.headers.response),
            },
            "cors": None if self.cors is None else _cors_json(self.cors),
        }


def _ms(seconds: float) -> int:
    ms = round(seconds * 1000)
    return max(ms, 1) if seconds > 0 else 0


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
                return self.methods(path, v)
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
            if kind == "workers":
                if v == "auto":
                    return len(os.sched_getaffinity(0)) or 1
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f'expected a positive integer or "auto", got {_show(v)}')
                return v
            if kind in ("listen", "servers"):
                return self.addresses(path, v, listen=kind == "listen")
            if kind == "cidrs":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f'expected an array of addresses or networks such as "10.0.0.0/8", got {_show(v)}')
                nets: list[str] = []
                for i, net in enumerate(v):
                    try:
                        nets.append(str(ipaddress.ip_network(net, strict=False)))
                    except ValueError:
                        self.error(path + (i,), f'"{net}" is not an IP address or network')
                return tuple(nets)
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
            if kind in ("rule_names", "hide", "field_names", "cors_headers"):
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
                return self.cors_methods(path, v)
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

    def methods(self, path: KeyPath, v: Any) -> tuple[str, ...] | None:
        if not isinstance(v, list):
            raise ValueError(f'expected an array of methods such as ["GET", "HEAD"], got {_type_name(v)}')
        if not v:
            raise ValueError("needs at least one method (leave the key out to match any method)")
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
        ``remove`` the ``Host``; ``cors_headers`` may be ``["*"]``."""
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

    def cors_methods(self, path: KeyPath, v: Any) -> tuple[str, ...] | None:
        if not isinstance(v, list):
            raise ValueError(f'expected an array of methods such as ["GET", "POST"], got {_type_name(v)}')
        if not v:
            raise ValueError("needs at least one method")
        out: list[str] = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _TOKEN.fullmatch(item):
                self.error(path + (i,), f'expected a method such as "GET", got {_show(item)}')
            elif item != item.upper():
                self.error(path + (i,), f'methods are case-sensitive: write "{item.upper()}"')
            else:
                out.append(item)
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
        return Address(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
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


def _route(c: _Checker, i: int, raw: Any, pools: Mapping[str, Any]) -> RouteSettings | None:
    """One ``[[routes]]`` entry, checked key by key and then as a whole."""
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

    for key in ("strip_prefix", "rewrite", "upstream_host", "request_headers"):
        if actions and not forwards and key in t and t[key] is not False:
            c.error(here + (key,), f'"{key}" needs "upstream" or "split"', at_key=True)
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
    )


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
        if None not in s.values():
            upstreams[name] = UpstreamSettings(name=name, **s)

    routes: list[RouteSettings] = []
    raw_routes = raw.get("routes", [])
    if not isinstance(raw_routes, list):
        c.error(("routes",), "expected an array of tables ([[routes]])")
    elif not raw_routes:
        c.error(("routes",) if "routes" in raw else (), "no routes: add at least one [[routes]] entry")
    names: dict[str, int] = {}
    for i, table in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        route = _route(c, i, table, pools)
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
    )


def _headers(raw: Any, c: _Checker) -> HeadersSettings:
    """``[headers]``; the defaults where it has errors (they are reported)."""
    t = c.table(("headers",), raw, [k.name for k in HEADERS_KEYS]) or {}
    s = c.settings(("headers",), t, HEADERS_KEYS)
    if None in s.values():
        return HeadersSettings()
    return HeadersSettings(hide=s["hide"], security=s["security"] or None, request=s["request"], response=s["response"])
