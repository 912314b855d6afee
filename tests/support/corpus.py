"""The differential corpus: one configuration that uses every built-in
policy, and several hundred generated requests (edge cases included) to
send through the engine's native built-ins and through their Python
references (``--no-native``). Both must decide identically.

A new built-in adds its keys to :func:`config` and its cases to
:func:`requests`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from rproxy.testing.origin import Received, Reply

POOLS = ("a", "b", "c")


def echo(pool: str) -> Any:
    """An origin handler that answers with what it received, as JSON."""

    def handler(req: Received) -> Reply:
        body = json.dumps(
            {"pool": pool, "method": req.method, "target": req.target, "headers": req.headers}, sort_keys=True
        ).encode()
        headers = [("Content-Type", "application/json"), ("X-Origin", pool), ("Server", "origin/1.0")]
        if pool == "c":
            headers += [("X-Frame-Options", "SAMEORIGIN"), ("Vary", "Accept-Encoding")]
        return Reply(200, headers, b"" if req.method == "HEAD" else body, length=len(body))

    return handler


def routes() -> list[dict[str, Any]]:
    """Routes exercising every condition and action of the router."""
    return [
        {"name": "health", "path": "/healthz", "respond": {"status": 200, "body": "ok\n"}},
        {"host": "api.example.com", "methods": ["POST", "PUT"], "path_prefix": "/v1/", "upstream": "b"},
        {"host": "api.example.com", "path_prefix": "/v1/", "strip_prefix": True, "upstream": "a"},
        {"host": ["*.example.com", "example.org"], "path": "/who", "upstream": "c", "upstream_host": "$host.internal"},
        {"path_regex": "^/users/(?P<id>[0-9]+)(/.*)?$", "rewrite": "/u/${id}$2", "upstream": "a"},
        {"path_regex": "^/search/([a-z]+)$", "rewrite": "/find?term=$1", "upstream": "b"},
        {"path_prefix": "/env/", "headers": {"x-env": "staging"}, "upstream": "c"},
        {"path_prefix": "/env/", "headers": {"x-env": {"regex": "^prod"}, "x-debug": False}, "upstream": "b"},
        {"path_prefix": "/env/", "upstream": "a"},
        {"path_prefix": "/q", "query": {"v": "2", "beta": True}, "upstream": "c"},
        {"path_prefix": "/q", "query": {"v": {"regex": "^[0-9]+$"}}, "upstream": "b"},
        {
            "name": "old",
            "path_prefix": "/old/",
            "redirect": {"status": 301, "location": "https://$host/new$request_uri"},
        },
        {"path": "/moved", "redirect": {"location": "/elsewhere?from=$route"}},
        {"path_prefix": "/canary/", "split": [{"upstream": "a", "weight": 3}, {"upstream": "b", "weight": 1}]},
        {
            "path_prefix": "/sticky/",
            "split": [{"upstream": "a", "weight": 1}, {"upstream": "c", "weight": 1}],
            "sticky_cookie": "uid",
        },
        {
            "path_prefix": "/hsticky/",
            "split": [{"upstream": "b", "weight": 2}, {"upstream": "c", "weight": 1}],
            "sticky_header": "x-user",
        },
        {"path_prefix": "/maint", "respond": {"status": 503, "headers": {"retry-after": "60"}, "body": "later"}},
        {"methods": ["DELETE"], "respond": {"status": 405, "body": "no deletes"}},
        {"path_prefix": "/static/", "upstream": "c"},
        {"path": "/", "upstream": "a"},
    ]


#: Every variable of header rules but ``$request_id``, which differs between two engines.
_VARIABLES = (
    "$client_ip|$remote_addr|$host|$scheme|$method|$path|$query|$request_uri|$route|$upstream|$upstream_addr|$$"
)


def config(origins: dict[str, str]) -> dict[str, Any]:
    """The corpus configuration in front of ``origins`` (pool → address),
    with a header policy (docs/headers.md) on top of the routes."""
    table = routes()
    by_path = {r.get("path") or r.get("path_prefix"): r for r in table if "host" not in r}
    by_path["/healthz"]["response_headers"] = {"add": {"x-trail": "route $route"}}
    by_path["/static/"].update(cors=False, request_headers={"remove": ["x-debug"], "set": {"host": "static.$host"}})
    by_path["/canary/"]["cors"] = {"origins": ["*"], "headers": ["*"], "max_age": "90.5s"}
    by_path["/sticky/"]["cors"] = {"origins": ["*"], "methods": ["GET", "PUT"], "expose": ["x-origin"]}
    upstreams: dict[str, Any] = {name: {"servers": [addr]} for name, addr in origins.items()}
    upstreams["b"]["request_headers"] = {"set": {"x-pool": "$upstream"}, "add": {"x-trail": "pool"}}
    upstreams["b"]["response_headers"] = {"add": {"x-trail": "pool"}, "remove": ["x-origin-only"]}
    return {
        "server": {"listen": ["127.0.0.1:0"], "workers": 1, "shutdown_timeout": "2s"},
        "upstreams": upstreams,
        "routes": table,
        "headers": {
            "security": {"frame_options": "SAMEORIGIN"},
            "request": {"remove": ["via"], "set": {"x-vars": _VARIABLES}, "add": {"x-trail": "global"}},
            "response": {"set": {"x-vars": _VARIABLES}, "add": {"x-trail": "global"}},
        },
        "cors": {"origins": ["https://app.example.com"], "headers": ["content-type"], "expose": ["x-a", "x-b"]},
        "plugins": {"dirs": []},
    }


@dataclass(frozen=True)
class Case:
    """One request of the corpus."""

    method: str
    target: str
    host: str | None
    headers: tuple[tuple[str, str], ...]


_HOSTS = (
    "api.example.com", "API.Example.COM:8443", "api.example.com.", "x.example.com", "a.b.example.com",
    "example.com", "example.org", "other.test", "[::1]:8080", "127.0.0.1",
)  # fmt: skip
_PATHS = (
    "/", "/healthz", "/healthz/", "/v1/users", "/v1/", "/v1", "/who", "/users/42", "/users/42/posts",
    "/users/x", "/search/rust", "/search/Rust", "/env/x", "/q", "/q/x", "/old/a/b", "/moved",
    "/canary/x", "/sticky/x", "/hsticky/x", "/maint", "/static/app.js", "/nope",
    "/a/../healthz", "/%68ealthz", "//healthz", "/v1/./users", "/static/%2e%2e/healthz",
    "/users/%34%32", "/static/a%2fb", "/static/%7euser", "/x/../../etc", "/%zz", "/static/%4",
)  # fmt: skip
_QUERIES = ("", "?v=2&beta", "?v=2", "?v=3", "?v=x", "?beta&v=%32", "?v=2&beta=&x=1", "?a=1&a=2", "?v")
_HEADER_SETS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("X-Env", "staging"),),
    (("X-Env", "production"),),
    (("X-Env", "prod"), ("X-Debug", "1")),
    (("x-env", "Staging"),),
    (("Cookie", "a=1; uid=alice"),),
    (("Cookie", "uid=bob"),),
    (("Cookie", "uid=carol; x=y"), ("Cookie", "uid=dave")),
    (("X-User", "u1"),),
    (("X-User", "u2"),),
    (("X-User", "someone-else"),),
)


_CORS_HEADER_SETS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("Origin", "https://app.example.com"),),
    (("Origin", "https://evil.example.com"),),
    (("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "PUT")),
    (
        ("Origin", "https://app.example.com"),
        ("Access-Control-Request-Method", "PUT"),
        ("Access-Control-Request-Headers", "content-type, x-a"),
    ),
    (("Origin", "https://evil.example.com"), ("Access-Control-Request-Method", "PUT"), ("X-Debug", "1")),
    (("Access-Control-Request-Method", "PUT"),),
)
_CORS_PATHS = ("/", "/healthz", "/moved", "/static/x", "/canary/x", "/sticky/x", "/nope", "/%zz")


def requests(n: int = 400, seed: int = 20261128) -> list[Case]:
    """``n`` requests: every path once on a typical host, then random mixes,
    then every CORS case on a few paths."""
    rng = random.Random(seed)
    cases = [Case("GET", p, "www.example.net", ()) for p in _PATHS]
    while len(cases) < n:
        method = rng.choice(("GET", "GET", "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"))
        path = rng.choice(_PATHS)
        if "%" not in path:
            path += rng.choice(_QUERIES)
        host = rng.choice((*_HOSTS, "www.example.net"))
        cases.append(Case(method, path, host, rng.choice(_HEADER_SETS)))
    for method in ("OPTIONS", "GET"):
        cases += [Case(method, p, "www.example.net", h) for p in _CORS_PATHS for h in _CORS_HEADER_SETS]
    return cases
