"""The router: the ``[[routes]]`` of the configuration, first match wins.

The engine runs its compiled form of this table; this reference is what
``rproxy run --no-native`` and the test kit (``rproxy.testing``) run, and it
spells out docs/routing.md in plain Python: a request is matched on its host,
normalised path, method, header fields and query parameters, against each
route in the order written; the first route whose every condition holds
decides. It is ``trylast``, so a plugin's ``rproxy_route`` always gets the
first say.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from rproxy import _engine
from rproxy._engine import Request
from rproxy.config import Condition, Config, RouteSettings
from rproxy.plan import Route, native
from rproxy.plugins import hookimpl
from rproxy.routing import normalise_path, parse_template

Template = tuple[tuple[str, str], ...]


@dataclass
class _Route:
    """A route ready for requests: its settings, with its expressions
    compiled, its templates parsed and its split sequence worked out."""

    settings: RouteSettings
    path_regex: re.Pattern[str] | None
    regexes: dict[str, re.Pattern[str]]  # of header and query conditions, by pattern
    rewrite: Template | None
    upstream_host: Template | None
    location: Template | None
    sequence: list[str]  # smooth weighted round robin over the split's pools
    turns: Iterator[int] = field(default_factory=itertools.count)


_routes: list[_Route] = []


@hookimpl
def rproxy_configure(config: Config, options: dict[str, object]) -> None:
    global _routes
    _routes = [_prepare(route) for route in config.routes]


def _prepare(route: RouteSettings) -> _Route:
    conditions = [*route.headers, *route.query]
    return _Route(
        settings=route,
        path_regex=_compile(route.path_regex) if route.path_regex is not None else None,
        regexes={c.value: _compile(c.value) for c in conditions if c.cond == "regex"},
        rewrite=parse_template(route.rewrite) if route.rewrite is not None else None,
        upstream_host=parse_template(route.upstream_host) if route.upstream_host is not None else None,
        location=parse_template(route.redirect.location) if route.redirect is not None else None,
        sequence=_smooth_weighted_round_robin([(s.upstream, s.weight) for s in route.split]),
    )


def _compile(pattern: str) -> re.Pattern[str]:
    """``pattern`` as the engine reads it. There ``$`` matches only at the
    very end of the text; Python's also matches before a final newline
    (which a decoded query value may have), so it becomes ``\\Z`` — unless
    the pattern uses multi-line mode, where both mean "end of a line"."""
    if re.search(r"\(\?[a-zA-Z-]*m", pattern):
        return re.compile(pattern)
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            # "]" right after "[" or "[^" is a literal, not the end of the class.
            start = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            end = start + 1 if pattern[start : start + 1] == "]" else start
            out.append(pattern[i:end])
            i, in_class = end, True
            continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _smooth_weighted_round_robin(pools: Sequence[tuple[str, int]]) -> list[str]:
    """One cycle of nginx's smooth weighted round robin: at each turn every
    pool's current weight grows by its weight, the largest (the first on a
    tie) is chosen and loses the total. Weights 3 and 1 give a a b a."""
    total = sum(weight for _, weight in pools)
    current = [0] * len(pools)
    sequence = []
    for _ in range(total):
        for n, (_, weight) in enumerate(pools):
            current[n] += weight
        best = current.index(max(current))
        current[best] -= total
        sequence.append(pools[best][0])
    return sequence


# -- matching ----------------------------------------------------------------


@hookimpl(trylast=True)
@native("router")
def rproxy_route(request: Request) -> Route | None:
    host = (request.host or "").lower().removesuffix(".")
    path = normalise_path(request.path)
    if path is None:
        return None  # the engine answers 400 before routing
    query = _query_parameters(request.query)
    for route in _routes:
        if not _matches(route, request, host, path, query):
            continue
        match = None
        if route.path_regex is not None:
            match = route.path_regex.search(path)
            if match is None:
                continue
        return _act(route, request, host, path, match)
    return None


def _matches(route: _Route, request: Request, host: str, path: str, query: list[tuple[str, str]]) -> bool:
    """Whether every condition of ``route`` but its ``path_regex`` holds."""
    r = route.settings
    if r.hosts and not any(_host_matches(pattern, host) for pattern in r.hosts):
        return False
    if r.path is not None and path != r.path:
        return False
    if r.path_prefix is not None and not path.startswith(r.path_prefix):
        return False
    if r.methods and request.method not in r.methods:
        return False
    for condition in r.headers:
        lines = [_field_text(line) for line in request.headers.get_all(condition.name)]
        if not _holds(route, condition, lines):
            return False
    for condition in r.query:
        if not _holds(route, condition, [value for name, value in query if name == condition.name]):
            return False
    return True


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


def _holds(route: _Route, condition: Condition, values: list[str]) -> bool:
    """Whether a header or query condition holds, given every value (field
    line or parameter occurrence) of its name; one satisfying value is enough."""
    if condition.cond == "present":
        return bool(values)
    if condition.cond == "absent":
        return not values
    if condition.cond == "equals":
        return condition.value in values
    regex = route.regexes[condition.value]
    return any(regex.search(value) for value in values)


def _field_text(line: str) -> str:
    """A header field line as text: its bytes read as UTF-8 (invalid ones
    become U+FFFD). Request views show bytes above 0x7F as Latin-1, one
    character per byte, so ``encode("latin-1")`` gives back the bytes."""
    return line.encode("latin-1").decode("utf-8", "replace")


def _query_parameters(query: str | None) -> list[tuple[str, str]]:
    """``a=1&b&a=%32`` → ``[("a", "1"), ("b", ""), ("a", "2")]`` (``+`` stays ``+``)."""
    if query is None:
        return []
    out = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        out.append((unquote(name), unquote(value)))
    return out


# -- actions -----------------------------------------------------------------


def _act(route: _Route, request: Request, host: str, path: str, match: re.Match[str] | None) -> Route:
    """What ``route`` does with this request; ``match`` is its ``path_regex``'s."""
    r = route.settings

    def expand(template: Template) -> str:
        return "".join(
            text + (_variable(name, route, request, host, path, match) if name else "") for text, name in template
        )

    if r.respond is not None:
        return Route(respond=_engine.Response(r.respond.status, list(r.respond.headers), r.respond.body), name=r.name)
    if r.redirect is not None and route.location is not None:
        location = expand(route.location)
        return Route(respond=_engine.Response(r.redirect.status, [("location", location)], b""), name=r.name)

    new_path = None
    if r.strip_prefix and r.path_prefix is not None:
        new_path = _rooted(path[len(r.path_prefix) :]) + _query_suffix(request)
    elif r.rewrite is not None and route.rewrite is not None:
        new_path = _rooted(expand(route.rewrite))
        if "?" not in r.rewrite:
            new_path += _query_suffix(request)
    new_host = expand(route.upstream_host) if route.upstream_host is not None else None
    pool = r.upstream if r.upstream is not None else _split(route, request)
    return Route(upstream=pool, path=new_path, host=new_host, name=r.name)


def _rooted(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _query_suffix(request: Request) -> str:
    return "" if request.query is None else "?" + request.query


def _variable(name: str, route: _Route, request: Request, host: str, path: str, match: re.Match[str] | None) -> str:
    """The value of template variable ``name`` for this request."""
    if name == "host":
        return host
    if name == "path":
        return path
    if name == "query":
        return request.query or ""
    if name == "request_uri":
        return request.path + _query_suffix(request)
    if name == "scheme":
        return request.scheme
    if name == "method":
        return request.method
    if name == "route":
        return route.settings.name
    # A group of path_regex (the configuration has checked it exists).
    if match is None:
        return ""
    return match.group(int(name) if name.isdigit() else name) or ""


def _split(route: _Route, request: Request) -> str:
    """The pool of a ``split``: by the hash of the sticky value's bytes if
    the request has one, else the route's next turn of weighted round robin."""
    r = route.settings
    key = None
    if r.sticky_cookie is not None:
        key = _cookie(request, r.sticky_cookie)
    elif r.sticky_header is not None:
        lines = request.headers.get_all(r.sticky_header)
        key = lines[0] if lines else None
    if key is None:
        return route.sequence[next(route.turns) % len(route.sequence)]
    point = _fnv1a64(key.encode("latin-1")) % sum(share.weight for share in r.split)
    for share in r.split:
        if point < share.weight:
            return share.upstream
        point -= share.weight
    raise AssertionError("point is below the sum of the weights")


def _cookie(request: Request, name: str) -> str | None:
    """The value of the first cookie called ``name`` in the Cookie fields."""
    for line in request.headers.get_all("cookie"):
        for pair in line.split(";"):
            cookie, equals, value = pair.strip(" \t").partition("=")
            if equals and cookie == name:
                return value
    return None


def _fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
