"""The differential corpus: one configuration that uses every built-in
policy, and several hundred generated requests (edge cases included) to
send through the engine's native built-ins and through their Python
references (``--no-native``). Both must decide identically.

A new built-in adds its keys to :func:`config` and its cases to
:func:`requests`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from rproxy.testing.origin import Received, Reply

POOLS = ("a", "b", "c")
#: Pools of several servers, one per algorithm (docs/load-balancing.md):
#: each server's (weight, backup), and the pool's settings. The origins of
#: pool P are named "P.0", "P.1", ... and say so in X-Origin.
LB_POOLS: dict[str, tuple[tuple[tuple[int, bool], ...], dict[str, Any]]] = {
    "lb-rr": (((2, False), (1, False), (1, False), (1, True)), {}),
    "lb-lc": (((1, False), (2, False), (1, False)), {"balance": "least_conn"}),
    "lb-hash": (((1, False), (1, False), (3, False)), {"balance": "hash", "hash_key": "header:X-User"}),
    "lb-cookie": (((1, False),) * 3, {"balance": "hash", "hash_key": "cookie:uid"}),
    "lb-ip": (((1, False),) * 4, {"balance": "hash"}),
    "lb-first": (((1, False), (1, False)), {"balance": "first"}),
}


def lb_servers() -> list[str]:
    """The origin names of the pools of :data:`LB_POOLS`."""
    return [f"{pool}.{i}" for pool, (servers, _) in LB_POOLS.items() for i in range(len(servers))]


#: The pool of the auth service of forward auth (:func:`auth_service`).
AUTH_POOL = "sso"


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


def auth_service(req: Received) -> Reply:
    """The auth service of forward auth: the X-Token field decides. It lets
    a request through with what it was asked, which the policy copies onto
    the upstream request, and so into the echo the client gets."""
    token = req.header("x-token")
    if token in ("good", "also-good"):
        asked = json.dumps({"method": req.method, "target": req.target, "headers": req.headers}, sort_keys=True)
        return Reply(200, [("X-User", f"user-{token}"), ("X-Auth-Echo", asked)], b"ok\n")
    if token == "banned":
        return Reply(403, [], b"no\n")
    if token == "odd":
        return Reply(500, [], b"broken\n")
    if token == "quiet":
        return Reply(401, [], b"")
    return Reply(401, [("WWW-Authenticate", 'Cookie realm="sso"'), ("WWW-Authenticate", "Other")], b"who?\n")


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
        *({"path_prefix": f"/lb/{pool[3:]}/", "upstream": pool} for pool in LB_POOLS),
        *auth_routes(),
        {"path": "/", "upstream": "a"},
    ]


def auth_routes() -> list[dict[str, Any]]:
    """Routes with access control (docs/auth.md)."""
    return [
        {
            "name": "admin",
            "path_prefix": "/admin/",
            "upstream": "a",
            "allow": ["10.0.0.0/8", "2001:db8::/32"],
            "deny": ["10.0.0.13", "2001:db8::bad"],
        },
        {"path_prefix": "/auth/keys/", "upstream": "b", "auth": "keys"},
        {"path_prefix": "/auth/query/", "upstream": "b", "auth": "qkeys"},
        {"path_prefix": "/auth/staff/", "upstream": "b", "auth": "staff"},
        {"path_prefix": "/auth/kept/", "upstream": "b", "auth": "kept"},
        {"path_prefix": "/auth/jwt/", "upstream": "c", "auth": "tokens"},
        {"path_prefix": "/auth/sso/", "upstream": "a", "auth": "sso"},
        {"path_prefix": "/auth/any/", "upstream": "c", "auth": ["keys", "staff", "tokens", "sso"]},
        {"path": "/auth/status", "respond": {"body": "ok\n"}, "auth": ["tokens", "keys"], "deny": ["10.0.0.13"]},
    ]


#: Every variable of header rules but ``$request_id``, which differs between two engines.
_VARIABLES = (
    "$client_ip|$remote_addr|$host|$scheme|$method|$path|$query|$request_uri|$route|$upstream|$upstream_addr|"
    "$auth_user|$$"
)

#: The key of the HS256 tokens.
SECRET = "the corpus's HS256 secret"
#: Drepper's SHA-512-crypt test vector 1: the password "Hello world!".
SHA512_HELLO = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


@functools.cache
def _keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    """The RSA and P-256 key pairs of the corpus's tokens (one per test run)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP256R1())


@functools.cache
def _htpasswd() -> str:
    ann = bcrypt.hashpw(b"pw-ann", bcrypt.gensalt(4)).decode()
    return f"ann:{ann}\nbob:{SHA512_HELLO}\n"


def auth_files(folder: Path) -> dict[str, str]:
    """Write the files the auth policies read into ``folder``; their paths."""
    rsa_key, _ = _keys()
    numbers = rsa_key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "r1", "n": _b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
    files = {"htpasswd": folder / "users.htpasswd", "jwks": folder / "jwks.json"}
    files["htpasswd"].write_text(_htpasswd())
    files["jwks"].write_text(json.dumps({"keys": [jwk]}))
    return {name: str(path) for name, path in files.items()}


def auth(folder: Path) -> dict[str, Any]:
    """The ``[auth.NAME]`` policies of the corpus; their files go into ``folder``."""
    files = auth_files(folder)
    _, ec_key = _keys()
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "keys": {"type": "api_key", "keys": {"acme": "k-acme", "initech": "k-initech", "zoë": "k-é"}},
        "qkeys": {"type": "api_key", "query": "key", "keys": {"acme": "k-acme"}, "realm": 'Query "keys" \\o/'},
        "staff": {"type": "basic", "htpasswd": files["htpasswd"], "realm": "Staff only"},
        "kept": {"type": "basic", "htpasswd": files["htpasswd"], "forward_credentials": True},
        "tokens": {
            "type": "jwt",
            "algorithms": ["HS256", "RS256", "ES256"],
            "secret": SECRET,
            "jwks_file": files["jwks"],
            "public_key": pem.decode(),
            "issuer": "https://id.example",
            "audience": ["api", "web"],
        },
        "sso": {
            "type": "forward",
            "upstream": AUTH_POOL,
            "path": "/check?from=proxy",
            "send_headers": ["x-token", "cookie"],
            "copy_headers": ["x-user", "x-auth-echo"],
            "cache": "10s",
        },
    }


def config(origins: dict[str, str], folder: Path) -> dict[str, Any]:
    """The corpus configuration in front of ``origins`` (pool → address;
    :data:`AUTH_POOL` is the auth service), with a header policy
    (docs/headers.md) on top of the routes, and access control
    (docs/auth.md) whose files are written into ``folder``."""
    table = routes()
    by_path = {r.get("path") or r.get("path_prefix"): r for r in table if "host" not in r}
    by_path["/healthz"]["response_headers"] = {"add": {"x-trail": "route $route"}}
    by_path["/static/"].update(cors=False, request_headers={"remove": ["x-debug"], "set": {"host": "static.$host"}})
    by_path["/canary/"]["cors"] = {"origins": ["*"], "headers": ["*"], "max_age": "90.5s"}
    by_path["/sticky/"]["cors"] = {"origins": ["*"], "methods": ["GET", "PUT"], "expose": ["x-origin"]}
    upstreams: dict[str, Any] = {name: {"servers": [addr]} for name, addr in origins.items() if "." not in name}
    for pool, (servers, settings) in LB_POOLS.items():
        entries = [
            {"address": origins[f"{pool}.{i}"], "weight": weight, "backup": backup}
            for i, (weight, backup) in enumerate(servers)
        ]
        upstreams[pool] = {"servers": entries, **settings}
    upstreams["b"]["request_headers"] = {"set": {"x-pool": "$upstream"}, "add": {"x-trail": "pool"}}
    upstreams["b"]["response_headers"] = {"add": {"x-trail": "pool"}, "remove": ["x-origin-only"]}
    return {
        "server": {
            "listen": ["127.0.0.1:0"],
            "workers": 1,
            "shutdown_timeout": "2s",
            "trusted_proxies": ["127.0.0.1"],  # so that X-Forwarded-For can name the client of /admin/
        },
        "upstreams": upstreams,
        "routes": table,
        "auth": auth(folder),
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
_CORS_PATHS = ("/", "/healthz", "/moved", "/static/x", "/canary/x", "/sticky/x", "/nope", "/%zz", "/auth/any/")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64url(sign(signing_input.encode()))}"


def _tokens() -> dict[str, str]:
    """Tokens for the "tokens" policy: valid ones and every kind of invalid one."""
    rsa_key, ec_key = _keys()
    now = int(time.time())
    claims = {"sub": "u-1", "iss": "https://id.example", "aud": "api", "exp": now + 3600}

    def hs256(message: bytes, secret: bytes = SECRET.encode()) -> bytes:
        return hmac.new(secret, message, hashlib.sha256).digest()

    def rs256(message: bytes) -> bytes:
        return rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def es256(message: bytes) -> bytes:
        r, s = decode_dss_signature(ec_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = _token({"alg": "HS256", "typ": "JWT"}, claims, hs256)
    return {
        "hs256": good,
        "rs256": _token({"alg": "RS256", "kid": "r1"}, {**claims, "sub": "u-2"}, rs256),
        "rs256-no-kid": _token({"alg": "RS256"}, {**claims, "aud": ["x", "web"]}, rs256),
        "es256": _token({"alg": "ES256"}, {**claims, "sub": "u-3", "nbf": now - 10}, es256),
        "no-sub": _token({"alg": "HS256"}, {"iss": "https://id.example", "aud": "web", "sub": 5}, hs256),
        "in-leeway": _token({"alg": "HS256"}, {**claims, "exp": now - 5, "nbf": now + 5}, hs256),
        "expired": _token({"alg": "HS256"}, {**claims, "exp": now - 3600}, hs256),
        "not-yet": _token({"alg": "HS256"}, {**claims, "nbf": now + 3600}, hs256),
        "exp-string": _token({"alg": "HS256"}, {**claims, "exp": str(now + 3600)}, hs256),
        "wrong-aud": _token({"alg": "HS256"}, {**claims, "aud": "elsewhere"}, hs256),
        "no-aud": _token({"alg": "HS256"}, {k: v for k, v in claims.items() if k != "aud"}, hs256),
        "wrong-iss": _token({"alg": "HS256"}, {**claims, "iss": "https://evil.example"}, hs256),
        "wrong-kid": _token({"alg": "RS256", "kid": "r2"}, claims, rs256),
        "kid-number": _token({"alg": "RS256", "kid": 1}, claims, rs256),
        "crit": _token({"alg": "HS256", "crit": ["exp"]}, claims, hs256),
        "none": _token({"alg": "none"}, claims, lambda m: b""),
        "confused": _token({"alg": "HS256"}, claims, lambda m: hs256(m, public_pem)),
        "es256-der": _token({"alg": "ES256"}, claims, lambda m: ec_key.sign(m, ec.ECDSA(hashes.SHA256()))),
        "altered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "padded": good + "=",
        "two-parts": good.rsplit(".", 1)[0],
        "array": _token({"alg": "HS256"}, [1], hs256),  # type: ignore[arg-type]
    }


def _basic(user: bytes, password: bytes) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(user + b":" + password).decode())


def _auth_cases() -> list[Case]:
    """Requests for the routes with access control: every kind of
    credential, good and bad, and client addresses for the lists."""
    tokens = _tokens()
    bearer = {name: ("Authorization", f"Bearer {t}") for name, t in tokens.items()}
    ann = _basic(b"ann", b"pw-ann")
    bob = _basic(b"bob", b"Hello world!")
    api = [
        (),
        (("X-Api-Key", "k-acme"),),
        (("X-API-KEY", "k-initech"), ("X-Other", "1")),
        (("X-Api-Key", "k-acmE"),),
        (("X-Api-Key", "wrong"), ("X-Api-Key", "k-acme")),
        (("X-Api-Key", "k-\xc3\xa9"),),  # the UTF-8 bytes of "k-é", as obs-text
        (("X-Api-Key", "k-\xe9"),),
    ]
    basic = [
        (ann,),
        (bob,),
        (_basic(b"ann", b"pw-bob"),),
        (_basic(b"carl", b"pw-ann"),),
        (_basic(b"\xff", b"x"),),
        (_basic(b"bob", b"Hello world!\xff"),),
        (("Authorization", "Basic !!!"),),
        (("Authorization", ann[1].rstrip("=")),),
        (("Authorization", "bAsIc   " + ann[1].split(" ", 1)[1]),),
        (("Authorization", "Basic"),),
        (("Authorization", ann[1] + " \xe9"),),
        (ann, bob),
        (bearer["hs256"],),
    ]
    jwt = [(bearer[name],) for name in tokens] + [
        (("Authorization", "Bearer"),),
        (("Authorization", "bearer  " + tokens["hs256"]),),
        (("Authorization", "Bearer not.a.token"),),
    ]
    sso = [
        (),
        (("X-Token", "good"), ("X-User", "forged")),
        (("X-Token", "also-good"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("Authorization", "Bearer x")),
        (("X-Token", "good"), ("Cookie", "a=1")),
        (("X-Token", "banned"),),
        (("X-Token", "odd"),),
        (("X-Token", "quiet"),),
        (("X-Token", "who"),),
    ]
    cases: list[Case] = []
    for fields in api:
        cases += [
            Case("GET", "/auth/keys/x", "www.example.net", fields),
            Case("GET", "/auth/status", "status.example", fields),
        ]
    for query in (
        "",
        "?key=k-acme",
        "?x=1&key=k-%61cme",
        "?key=nope&key=k-acme",
        "?key",
        "?Key=k-acme",
        "?key=k-acme&",
    ):
        cases.append(Case("GET", "/auth/query/x" + query, "www.example.net", (("X-Api-Key", "k-acme"),)))
    for fields in basic:
        cases += [Case("GET", "/auth/staff/", "www.example.net", fields), Case("POST", "/auth/kept/y", "h", fields)]
    for fields in jwt:
        cases += [Case("GET", "/auth/jwt/x?q=1", "www.example.net", fields), Case("HEAD", "/auth/status", "h", fields)]
    for fields in sso:
        cases.append(Case("GET", "/auth/sso/page?x=%41", "SSO.example.net:8080", fields))
        cases.append(Case("PUT", "/auth/sso/", "sso.example", fields))
    for fields in (*api[:2], *basic[:3], *jwt[:3], *sso[:6], (("X-Token", "who"), bob)):
        cases.append(Case("GET", "/auth/any/", "www.example.net", fields))
    for client in ("10.1.2.3", "10.0.0.13", "192.0.2.1", "2001:db8::7", "2001:db8::bad", "::ffff:10.9.9.9", "x"):
        cases.append(Case("GET", "/admin/x", "www.example.net", (("X-Forwarded-For", client),)))
        cases.append(Case("GET", "/auth/status", "www.example.net", (("X-Forwarded-For", client), api[1][0])))
    cases += [Case("GET", "/admin/", "www.example.net", ()), Case("DELETE", "/admin/", "www.example.net", ())]
    return cases


def requests(n: int = 400, seed: int = 20261128) -> list[Case]:
    """``n`` requests: every path once on a typical host, then random mixes,
    then every CORS case on a few paths, then the access control cases."""
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
    return cases + _auth_cases() + _lb_cases()


def _lb_cases() -> list[Case]:
    """Every balanced pool, with and without its hash keys."""
    keys = [
        *_HEADER_SETS,
        *((("X-Forwarded-For", f"198.51.100.{i}"),) for i in range(1, 9)),
        (("X-Forwarded-For", "2001:db8::1"),),
        (("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),),
        (("Cookie", "uid="),),
        (("Cookie", "uid"), ("X-User", "")),
    ]
    cases = [
        Case(method, f"/lb/{pool[3:]}/{i}", "www.example.net", headers)
        for pool in LB_POOLS
        for i, headers in enumerate(keys * 2)
        for method in ("GET", "POST")
    ]
    # Enough clients that each server of the ring (its ports differ from run to run) gets some.
    clients = [(("X-Forwarded-For", f"192.0.2.{i}"),) for i in range(48)]
    return cases + [Case("GET", "/lb/ip/", "www.example.net", c) for c in clients]
