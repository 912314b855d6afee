"""Access control (docs/auth.md) through the real engine, natively and with
the Python reference (``native=False``): address lists, API keys, Basic,
JWT and forward auth — refused requests never reach the upstream."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from rproxy.testing.origin import Origin, Received, Reply

from conftest import StartProxy
from support.client import request

NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])

# Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512", test vector 1 (SHA-512).
SHA512_HELLO = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
SECRET = "an HS256 secret of reasonable length"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def hs256(message: bytes) -> bytes:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).digest()


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


class Keys:
    """An RSA and a P-256 key pair, their public halves as a JWKS and a PEM."""

    def __init__(self, folder: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        numbers = self.rsa.public_key().public_numbers()
        jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": "r1",
                    "n": b64url(numbers.n.to_bytes(256, "big")),
                    "e": b64url(numbers.e.to_bytes(3, "big")),
                }
            ]
        }
        self.jwks = folder / "jwks.json"
        self.jwks.write_text(json.dumps(jwks))
        self.pem = folder / "ec.pem"
        self.pem.write_bytes(
            self.ec.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def rs256(self, message: bytes) -> bytes:
        return self.rsa.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def es256(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self.ec.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def service(req: Received) -> Reply:
    """An auth service: the X-Token field decides."""
    token = req.header("x-token")
    if token == "good":
        return Reply(200, [("X-User", "ann"), ("X-Groups", "admin")], b"")
    if token == "banned":
        return Reply(403, [], b"no\n")
    if token == "odd":
        return Reply(500, [], b"broken\n")
    return Reply(401, [("WWW-Authenticate", 'Cookie realm="sso"')], b"who?\n")


def config(origin: str, auth_service: str, folder: Path, keys: Keys) -> dict[str, Any]:
    htpasswd = folder / "users.htpasswd"
    htpasswd.write_text(f"ann:{bcrypt.hashpw(b'pw-ann', bcrypt.gensalt(4)).decode()}\nbob:{SHA512_HELLO}\n")
    keys_file = folder / "keys.txt"
    keys_file.write_text("# partners\ninitech:k-initech\n")
    return {
        "server": {
            "listen": ["127.0.0.1:0"],
            "workers": 1,
            "shutdown_timeout": "2s",
            "trusted_proxies": ["127.0.0.1"],
        },
        "upstreams": {"app": {"servers": [origin]}, "sso": {"servers": [auth_service], "response_timeout": "2s"}},
        "auth": {
            "partners": {"type": "api_key", "keys": {"acme": "k-acme"}, "keys_file": str(keys_file)},
            "by_query": {"type": "api_key", "query": "api_key", "keys": {"acme": "k-acme"}},
            "staff": {"type": "basic", "htpasswd": str(htpasswd), "realm": "Staff only"},
            "tokens": {
                "type": "jwt",
                "algorithms": ["HS256", "RS256", "ES256"],
                "secret": SECRET,
                "jwks_file": str(keys.jwks),
                "public_key_file": str(keys.pem),
                "issuer": "https://id.example",
                "audience": ["api", "web"],
            },
            "sso": {
                "type": "forward",
                "upstream": "sso",
                "path": "/check",
                "send_headers": ["x-token"],
                "copy_headers": ["x-user"],
                "cache": "30s",
            },
            "kept": {"type": "basic", "htpasswd": str(htpasswd), "forward_credentials": True},
        },
        "headers": {"request": {"set": {"x-auth-user": "$auth_user"}}},
        "cors": {"origins": ["https://app.example"], "methods": ["GET"]},
        "routes": [
            {
                "path_prefix": "/admin/",
                "upstream": "app",
                "allow": ["10.0.0.0/8", "2001:db8::/32"],
                "deny": ["10.0.0.13"],
            },
            {"path_prefix": "/keys/", "upstream": "app", "auth": "partners"},
            {"path_prefix": "/query/", "upstream": "app", "auth": "by_query"},
            {"path_prefix": "/staff/", "upstream": "app", "auth": "staff"},
            {"path_prefix": "/kept/", "upstream": "app", "auth": "kept"},
            {"path_prefix": "/jwt/", "upstream": "app", "auth": "tokens"},
            {"path_prefix": "/sso/", "upstream": "app", "auth": "sso"},
            {"path_prefix": "/either/", "upstream": "app", "auth": ["partners", "staff"]},
            {"path": "/status", "respond": {"body": "ok\n"}, "auth": "partners"},
            {"path_prefix": "/", "upstream": "app"},
        ],
        "plugins": {"dirs": []},
    }


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


class Seen:
    """A plugin that records ``ctx["auth"]`` in the upstream request phase."""

    def __init__(self) -> None:
        self.auth: list[Any] = []

    def rproxy_upstream_request(self, ctx: dict[str, Any]) -> None:
        self.auth.append(ctx.get("auth"))


def start(
    native: bool, start_proxy: StartProxy, origin: Origin, tmp_path: Path, keys: Keys, seen: Seen | None = None
) -> tuple[str, Origin]:
    sso = Origin(service)
    cfg = config(origin.addr, sso.addr, tmp_path, keys)
    proxy = start_proxy(cfg, plugins=[("seen", seen)] if seen else [], native=native)
    return proxy.addresses[0], sso


@NATIVE
def test_address_lists(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys
) -> None:
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys)
    with sso:

        def status(client: str) -> int:
            return request(addr, "GET", "/admin/x", [("X-Forwarded-For", client)]).status

        assert status("10.1.2.3") == 200
        assert status("2001:db8::7") == 200
        assert status("10.0.0.13") == 403, "deny comes first"
        assert status("192.0.2.1") == 403
        assert status("::ffff:10.9.9.9") == 200, "an IPv4-mapped address is its IPv4 address"
        assert request(addr, "GET", "/admin/x").status == 403, "127.0.0.1 itself is not allowed"
        assert len(rproxy_origin.requests) == 3
        refused = request(addr, "GET", "/admin/x", [("X-Forwarded-For", "192.0.2.1")])
        assert refused.body == b"403 Forbidden\n" and refused.header("www-authenticate") is None


@NATIVE
def test_api_keys(native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys) -> None:
    seen = Seen()
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys, seen)
    with sso:
        missing = request(addr, "GET", "/keys/a")
        assert missing.status == 401 and missing.body == b"401 Unauthorized\n"
        assert missing.header_all("www-authenticate") == ['ApiKey realm="partners", header="x-api-key"']
        assert request(addr, "GET", "/keys/a", [("X-Api-Key", "k-acmE")]).status == 401
        assert not rproxy_origin.requests
        assert request(addr, "GET", "/keys/a", [("X-Api-Key", "k-acme")]).status == 200
        assert request(addr, "GET", "/keys/b", [("X-Api-Key", "k-initech")]).status == 200
        first, second = rproxy_origin.requests
        assert first.header("x-api-key") is None, "the key is not forwarded"
        assert (first.header("x-auth-user"), second.header("x-auth-user")) == ("acme", "initech")
        assert seen.auth == [
            {"policy": "partners", "type": "api_key", "user": "acme", "claims": {}},
            {"policy": "partners", "type": "api_key", "user": "initech", "claims": {}},
        ]
        assert request(addr, "GET", "/query/x?api_key=k-%61cme&z=1").status == 200
        assert rproxy_origin.requests[2].target == "/query/x?api_key=k-%61cme&z=1"
        assert request(addr, "GET", "/query/x?api_key=nope").status == 401
        # A route that answers itself is protected too.
        assert request(addr, "GET", "/status").status == 401
        assert request(addr, "GET", "/status", [("X-Api-Key", "k-acme")]).body == b"ok\n"


@NATIVE
def test_basic_auth(native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys) -> None:
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys)
    with sso:
        challenge = request(addr, "GET", "/staff/")
        assert challenge.status == 401
        assert challenge.header("www-authenticate") == 'Basic realm="Staff only", charset="UTF-8"'
        assert request(addr, "GET", "/staff/", [basic("ann", "pw-ann")]).status == 200  # bcrypt
        assert request(addr, "GET", "/staff/", [basic("ann", "pw-ann")]).status == 200  # remembered
        assert request(addr, "GET", "/staff/", [basic("bob", "Hello world!")]).status == 200  # SHA-512-crypt
        assert request(addr, "GET", "/staff/", [basic("ann", "pw-bob")]).status == 401
        assert request(addr, "GET", "/staff/", [basic("carl", "pw-ann")]).status == 401
        assert request(addr, "GET", "/staff/", [("Authorization", "Basic !!!")]).status == 401
        assert [r.header("authorization") for r in rproxy_origin.requests] == [None, None, None]
        assert [r.header("x-auth-user") for r in rproxy_origin.requests] == ["ann", "ann", "bob"]
        assert request(addr, "GET", "/kept/", [basic("ann", "pw-ann")]).status == 200
        assert rproxy_origin.requests[-1].header("authorization") == basic("ann", "pw-ann")[1]


@NATIVE
def test_jwt(native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys) -> None:
    seen = Seen()
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys, seen)
    now = int(time.time())
    claims = {"sub": "u-1", "iss": "https://id.example", "aud": "api", "exp": now + 300, "scope": ["read"]}
    good = [
        jwt({"alg": "HS256", "typ": "JWT"}, claims, hs256),
        jwt({"alg": "RS256", "kid": "r1"}, claims, keys.rs256),
        jwt({"alg": "ES256"}, {**claims, "aud": ["other", "web"]}, keys.es256),
    ]
    bad = [
        jwt({"alg": "HS256"}, {**claims, "exp": now - 120}, hs256),  # expired beyond the leeway
        jwt({"alg": "HS256"}, {**claims, "nbf": now + 120}, hs256),  # not yet valid
        jwt({"alg": "HS256"}, {**claims, "aud": "elsewhere"}, hs256),
        jwt({"alg": "HS256"}, {**claims, "iss": "https://evil.example"}, hs256),
        jwt({"alg": "RS256", "kid": "other"}, claims, keys.rs256),
        jwt({"alg": "HS256", "crit": ["exp"]}, claims, hs256),
        jwt({"alg": "none"}, claims, lambda _: b""),
        good[0][:-2] + ("AA" if not good[0].endswith("AA") else "BB"),  # signature altered
        "not.a.token",
    ]
    with sso:
        for token in good:
            assert request(addr, "GET", "/jwt/x", [bearer(token)]).status == 200, token
        for token in bad:
            resp = request(addr, "GET", "/jwt/x", [bearer(token)])
            assert resp.status == 401, token
            assert resp.header("www-authenticate") == 'Bearer realm="tokens", error="invalid_token"'
        assert request(addr, "GET", "/jwt/x").header("www-authenticate") == 'Bearer realm="tokens"'
        assert len(rproxy_origin.requests) == 3
        assert all(r.header("authorization") is None for r in rproxy_origin.requests)
        assert seen.auth[0] == {"policy": "tokens", "type": "jwt", "user": "u-1", "claims": claims}


@NATIVE
def test_forward_auth(native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys) -> None:
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys)
    with sso:
        ok = request(addr, "GET", "/sso/page?x=1", [("X-Token", "good"), ("X-User", "forged")])
        assert ok.status == 200
        upstream = rproxy_origin.requests[0]
        assert upstream.header_all("x-user") == ["ann"], "the service's answer replaces the client's field"
        asked = sso.requests[0]
        assert (asked.method, asked.target) == ("GET", "/check")
        assert asked.header("x-original-uri") == "/sso/page?x=1"
        assert asked.header("x-original-method") == "GET"
        assert asked.header("x-forwarded-for") == "127.0.0.1"

        # Cached for 30 s: the service is asked once per distinct credential.
        assert request(addr, "GET", "/sso/again", [("X-Token", "good")]).status == 200
        assert len(sso.requests) == 1

        denied = request(addr, "GET", "/sso/", [("X-Token", "who")])
        assert denied.status == 401 and denied.header("www-authenticate") == 'Cookie realm="sso"'
        assert request(addr, "GET", "/sso/", [("X-Token", "banned")]).status == 403
        assert request(addr, "GET", "/sso/", [("X-Token", "odd")]).status == 502
        assert len(rproxy_origin.requests) == 2

        # No X-User from the service: the client's own is removed, not trusted.
        request(addr, "GET", "/sso/", [("X-Token", "good"), ("X-User", "forged")])
        assert rproxy_origin.requests[2].header_all("x-user") == ["ann"]
    # The service is gone: 502, never the upstream.
    assert request(addr, "GET", "/sso/", [("X-Token", "new")]).status == 502
    assert len(rproxy_origin.requests) == 3


@NATIVE
def test_any_of_several_policies(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys
) -> None:
    addr, sso = start(native, start_proxy, rproxy_origin, tmp_path, keys)
    with sso:
        resp = request(addr, "GET", "/either/")
        assert resp.status == 401
        assert resp.header_all("www-authenticate") == [
            'ApiKey realm="partners", header="x-api-key"',
            'Basic realm="Staff only", charset="UTF-8"',
        ]
        assert request(addr, "GET", "/either/", [basic("bob", "Hello world!")]).status == 200
        assert request(addr, "GET", "/either/", [("X-Api-Key", "k-acme")]).status == 200
        # A CORS preflight is answered before authentication.
        pre = request(
            addr, "OPTIONS", "/either/", [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")]
        )
        assert pre.status == 204
        # A refusal still carries the CORS fields, so the page can read the 401.
        refused = request(addr, "GET", "/either/", [("Origin", "https://app.example")])
        assert refused.status == 401
        assert refused.header("access-control-allow-origin") == "https://app.example"


@NATIVE
def test_plugins_override_the_built_in_the_pluggy_way(
    native: bool, start_proxy: StartProxy, rproxy_origin: Origin, tmp_path: Path, keys: Keys
) -> None:
    from rproxy import Response, hookimpl

    calls: list[str] = []

    class First:
        """tryfirst: runs before the built-in, and its answer wins."""

        @staticmethod
        @hookimpl(tryfirst=True)
        def rproxy_access(request: Any, ctx: dict[str, Any]) -> Response | None:
            calls.append(f"first {ctx.get('auth')}")
            if request.headers.get("x-emergency") == "open":
                return Response(299, body="let in by a plugin")
            return None

    class After:
        """An ordinary hook: runs after the built-in let the request through."""

        @staticmethod
        @hookimpl
        def rproxy_access(request: Any, ctx: dict[str, Any]) -> None:
            calls.append(f"after {ctx['auth']['user']}")

    sso = Origin(service)
    with sso:
        cfg = config(rproxy_origin.addr, sso.addr, tmp_path, keys)
        proxy = start_proxy(cfg, plugins=[("first", First), ("after", After)], native=native)
        addr = proxy.addresses[0]
        assert request(addr, "GET", "/keys/", [("X-Emergency", "open")]).status == 299
        assert request(addr, "GET", "/keys/").status == 401
        assert request(addr, "GET", "/keys/", [("X-Api-Key", "k-acme")]).status == 200
        assert calls == ["first None", "first None", "first None", "after acme"]

        cfg["plugins"]["disable"] = ["auth"]
        off = start_proxy(cfg, native=native)
        assert request(off.addresses[0], "GET", "/keys/").status == 200, "no auth without the built-in"
