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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rproxy._toml_positions import Path as KeyPath
from rproxy._toml_positions import Positions
from rproxy.errors import ConfigError, ConfigIssue

__all__ = [
    "PLUGINS_KEYS",
    "PLUGIN_TABLE_KEYS",
    "REQUIRED",
    "RESPOND_KEYS",
    "ROUTE_KEYS",
    "SERVER_KEYS",
    "UPSTREAM_KEYS",
    "Address",
    "Config",
    "Key",
    "PluginTable",
    "PluginsSettings",
    "RespondSettings",
    "RouteSettings",
    "ServerSettings",
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
)

RESPOND_KEYS: tuple[Key, ...] = (
    Key("status", "status", 200, "status code of the response"),
    Key("body", "str", "", "response body"),
    Key("headers", "headers", {}, "response header fields"),
)

ROUTE_KEYS: tuple[Key, ...] = (
    Key("path_prefix", "path", REQUIRED, 'requests whose path starts with this string match ("/" matches all)'),
    Key("upstream", "str", None, "the pool that serves matching requests"),
    Key("respond", "respond", None, "or answer matching requests directly: { status, body, headers }"),
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

TOP_KEYS = ("server", "defaults", "upstreams", "routes", "plugins")


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


@dataclass(frozen=True)
class UpstreamSettings:
    """``[upstreams.NAME]``: one pool of servers."""

    name: str
    servers: tuple[Address, ...]
    connect_timeout: float
    response_timeout: float
    body_idle_timeout: float
    keepalive: int
    keepalive_timeout: float
    keepalive_requests: int


@dataclass(frozen=True)
class RespondSettings:
    """A response a route sends itself."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RouteSettings:
    """One ``[[routes]]`` entry: a match and what to do with it."""

    path_prefix: str
    upstream: str | None
    respond: RespondSettings | None


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
                }
                for name, u in self.upstreams.items()
            },
            "routes": [_route_json(r) for r in self.routes],
        }


def _ms(seconds: float) -> int:
    ms = round(seconds * 1000)
    return max(ms, 1) if seconds > 0 else 0


def _route_json(r: RouteSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"path_prefix": r.path_prefix}
    if r.upstream is not None:
        out["upstream"] = r.upstream
    if r.respond is not None:
        out["respond"] = {
            "status": r.respond.status,
            "body": r.respond.body,
            "headers": [list(h) for h in r.respond.headers],
        }
    return out


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
            if kind == "path":
                if not isinstance(v, str):
                    raise ValueError(f"expected a string, got {_type_name(v)}")
                if not v.startswith("/"):
                    raise ValueError(f'"{v}" must start with "/"')
                return v
            if kind == "workers":
                if v == "auto":
                    return len(os.sched_getaffinity(0)) or 1
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f'expected a positive integer or "auto", got {_show(v)}')
                return v
            if kind in ("listen", "servers"):
                return self.addresses(path, v, listen=kind == "listen")
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
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
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
    for i, route in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        t = c.table(("routes", i), route, [k.name for k in ROUTE_KEYS])
        if t is None:
            continue
        s = c.settings(("routes", i), t, ROUTE_KEYS)
        if "upstream" in t and "respond" in t:
            c.error(("routes", i, "respond"), 'a route has either "upstream" or "respond", not both', at_key=True)
        elif "upstream" not in t and "respond" not in t:
            c.error(("routes", i), 'needs either "upstream" or "respond"')
        elif s["upstream"] is not None and s["upstream"] not in pools:
            close = difflib.get_close_matches(s["upstream"], list(pools), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            c.error(("routes", i, "upstream"), f'unknown upstream "{s["upstream"]}"{hint}')
        elif s["path_prefix"] is not None and (s["upstream"] or s["respond"]) is not None:
            routes.append(RouteSettings(**s))

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
    )
