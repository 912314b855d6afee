"""Access control's Python reference (docs/auth.md), through the test kit:
address lists, API keys, Basic, JWT and forward auth, several policies on
one route, what later hooks see; and SHA-512-crypt against its published
test vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import rproxy
from rproxy.builtins import auth as builtin
from rproxy.builtins import headers as header_policy
from rproxy.errors import ConfigError
from rproxy.routing import parse_template
from rproxy.sha_crypt import sha512_check, sha512_crypt
from rproxy.testing import Simulated, Simulator, call_hook, make_request, proxy_config
from rproxy.testing.origin import Origin, Received, Reply

Fields = Mapping[str, str] | Sequence[tuple[str, str]]

SECRET = "an HS256 secret of reasonable length"
# Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512", SHA-512 test vector 1.
SHA512_HELLO = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def configuration(
    auth: dict[str, Any],
    routes: list[dict[str, Any]],
    *,
    pools: dict[str, dict[str, Any]] | None = None,
    **tables: Any,
) -> dict[str, Any]:
    doc = proxy_config(pools=pools, routes=routes)
    doc["auth"] = auth
    doc.update(tables)
    return doc


def simulator(auth: dict[str, Any], routes: list[dict[str, Any]], **options: Any) -> Simulator:
    plugins = options.pop("plugins", ())
    return Simulator(configuration(auth, routes, **options), plugins=plugins)


def send(sim: Simulator, target: str = "/", fields: Fields | None = None, **options: Any) -> Simulated:
    method = options.pop("method", "GET")
    return sim.request(method, target, fields, **options)


def sent(result: Simulated, name: str) -> list[str]:
    """The lines of field ``name`` the upstream received."""
    assert result.upstream_request is not None, f"refused with {result.response.status}"
    return result.upstream_request.headers.get_all(name)


def status(result: Simulated) -> int:
    return result.response.status


def basic(user: str | bytes, password: str | bytes) -> tuple[str, str]:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return ("Authorization", "Basic " + base64.b64encode(raw).decode())


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


# -- address lists --------------------------------------------------------------------------


def test_deny_comes_first_then_allow() -> None:
    sim = simulator(
        {},
        [
            {
                "path_prefix": "/admin/",
                "upstream": "app",
                "allow": ["10.0.0.0/8", "2001:db8::/32"],
                "deny": ["10.0.0.13"],
            },
            {"path_prefix": "/open/", "upstream": "app", "deny": ["192.0.2.0/24"]},
            {"upstream": "app"},
        ],
    )
    assert status(send(sim, "/admin/x", client="10.1.2.3:5000")) == 200
    assert status(send(sim, "/admin/x", client="[2001:db8::7]:5000")) == 200
    assert status(send(sim, "/admin/x", client="[::ffff:10.9.9.9]:5000")) == 200, "a mapped address is its IPv4 one"
    denied = send(sim, "/admin/x", client="10.0.0.13:5000")
    assert status(denied) == 403 and denied.upstream is None
    assert denied.response.body == b"403 Forbidden\n"
    assert denied.response.headers.items() == [
        ("content-type", "text/plain; charset=utf-8"),
        ("cache-control", "no-store"),
    ]
    assert status(send(sim, "/admin/x", client="192.0.2.1:5000")) == 403, "not in allow"
    assert status(send(sim, "/admin/x", client="[2001:db9::1]:5000")) == 403
    assert status(send(sim, "/admin/x")) == 403, "127.0.0.1 is not allowed"
    assert status(send(sim, "/open/x", client="192.0.2.9:5000")) == 403
    assert status(send(sim, "/open/x", client="[::ffff:192.0.2.9]:5000")) == 403, "deny matches mapped addresses too"
    assert status(send(sim, "/open/x", client="198.51.100.1:5000")) == 200, "no allow list: everyone else"
    assert status(send(sim, "/elsewhere", client="10.0.0.13:5000")) == 200, "other routes have no lists"


def test_mapped_networks_and_ipv6_only_lists() -> None:
    sim = simulator(
        {},
        [
            {"path_prefix": "/mapped/", "upstream": "app", "allow": ["::ffff:10.0.0.0/104"]},
            {"path_prefix": "/v6/", "upstream": "app", "allow": ["::/0"]},
            {"upstream": "app"},
        ],
    )
    assert status(send(sim, "/mapped/", client="10.200.0.1:1")) == 200, "a mapped network is its IPv4 network"
    assert status(send(sim, "/mapped/", client="11.0.0.1:1")) == 403
    assert status(send(sim, "/v6/", client="[::1]:1")) == 200
    assert status(send(sim, "/v6/", client="10.0.0.1:1")) == 403, "an IPv4 client is in no IPv6 network"
    assert status(send(sim, "/v6/", client="[::ffff:10.0.0.1]:1")) == 403, "nor is a mapped one"


def fake_request(**values: Any) -> Any:
    """A request with what the hook reads, for what the test views cannot
    make: a client address a trusted proxy named, an unnamed route."""
    base = {"client": "127.0.0.1", "route_name": "routes[0]", "headers": make_request().headers, "query": None}
    return types.SimpleNamespace(**{**base, **values})


def test_the_client_address_is_the_one_a_trusted_proxy_names() -> None:
    Simulator(configuration({}, [{"upstream": "app", "allow": ["203.0.113.0/24"]}]))  # configures the plugin
    access = builtin.rproxy_access
    assert call_hook(builtin, "rproxy_access", request=fake_request(client="203.0.113.7")) is None
    assert access(fake_request(client="198.51.100.7"), {}).status == 403  # type: ignore[union-attr]
    assert access(fake_request(client="not an address"), {}).status == 403, "unparsable: refused"  # type: ignore[union-attr]
    assert access(fake_request(client=None), {}).status == 403  # type: ignore[union-attr]
    assert access(fake_request(client="fe80::1%eth0"), {}).status == 403  # type: ignore[union-attr]
    for name in ("", None, "elsewhere"):
        assert access(fake_request(client="198.51.100.7", route_name=name), {}) is None, "no such route: no rules"


# -- API keys ---------------------------------------------------------------------------------


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text("# partners\n\n  initech : k-initech  \nglobex:k:with:colons\n")
    return path


def api_keys(keys_file: Path, **extra: Any) -> Simulator:
    auth = {
        "partners": {"type": "api_key", "keys": {"acme": "k-acme", "café": "k-café"}, "keys_file": str(keys_file)},
        "by_query": {"type": "api_key", "query": "api key", "keys": {"acme": "k-acme"}, "realm": 'Q "x" \\ y'},
        "kept": {"type": "api_key", "header": "X-Token", "keys": {"acme": "k-acme"}, "forward_credentials": True},
    }
    routes = [
        {"path_prefix": "/keys/", "upstream": "app", "auth": "partners"},
        {"path_prefix": "/query/", "upstream": "app", "auth": "by_query"},
        {"path_prefix": "/kept/", "upstream": "app", "auth": ["kept"]},
        {"path": "/status", "respond": {"body": "ok\n"}, "auth": "partners"},
        {"upstream": "app"},
    ]
    return simulator(auth, routes, **extra)


def test_api_keys_in_a_header(keys_file: Path) -> None:
    sim = api_keys(keys_file)
    missing = send(sim, "/keys/a")
    assert status(missing) == 401 and missing.upstream is None
    assert missing.response.body == b"401 Unauthorized\n"
    assert missing.response.headers.get_all("www-authenticate") == ['ApiKey realm="partners", header="x-api-key"']
    assert status(send(sim, "/keys/a", {"X-Api-Key": "k-acmE"})) == 401
    ok = send(sim, "/keys/a", {"X-Api-Key": "k-acme", "X-Other": "1"})
    assert status(ok) == 200
    assert sent(ok, "x-api-key") == [], "the key is not forwarded"
    assert ok.ctx["auth"] == {"policy": "partners", "type": "api_key", "user": "acme", "claims": {}}
    for key, holder in (("k-initech", "initech"), ("k:with:colons", "globex"), ("k-café", "café")):
        assert send(sim, "/keys/a", {"X-Api-Key": key}).ctx["auth"]["user"] == holder
    only_first = send(sim, "/keys/a", [("X-Api-Key", "wrong"), ("X-Api-Key", "k-acme")])
    assert status(only_first) == 401, "only the first line counts"
    assert status(send(sim, "/status")) == 401, "a route that answers itself is protected too"
    assert send(sim, "/status", {"X-Api-Key": "k-acme"}).response.body == b"ok\n"
    assert status(send(sim, "/other")) == 200


def test_api_keys_in_the_query(keys_file: Path) -> None:
    sim = api_keys(keys_file)
    refused = send(sim, "/query/x")
    assert refused.response.headers["www-authenticate"] == 'ApiKey realm="Q \\"x\\" \\\\ y", query="api key"'
    ok = send(sim, "/query/x?z=1&api%20key=k-%61cme&api+key=no")
    assert status(ok) == 200 and ok.ctx["auth"]["user"] == "acme"
    assert ok.upstream_request is not None and ok.upstream_request.query == "z=1&api%20key=k-%61cme&api+key=no"
    assert status(send(sim, "/query/x?api%20key=nope&api%20key=k-acme")) == 401, "the first occurrence counts"
    assert status(send(sim, "/query/x", {"X-Api-Key": "k-acme"})) == 401


def test_forward_credentials_keeps_the_key(keys_file: Path) -> None:
    sim = api_keys(keys_file)
    kept = send(sim, "/kept/", {"X-Token": "k-acme"})
    assert sent(kept, "x-token") == ["k-acme"]
    assert kept.response.status == 200


# -- Basic -------------------------------------------------------------------------------------------

LONG = b"p" * 72


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("basic") / "users.htpasswd"
    binary = bcrypt.hashpw(b"\xff\xfe", bcrypt.gensalt(4)).decode()
    lines = [
        f"ann:{bcrypt.hashpw(b'pw-ann', bcrypt.gensalt(4)).decode()}",
        f"bob:{SHA512_HELLO}",
        f"cat:{sha512_crypt(b'pw-cat', 'NaCl', 1000)}",
        f"long:{bcrypt.hashpw(LONG, bcrypt.gensalt(4)).decode().replace('$2b$', '$2y$')}",
        f"bin:{binary.replace('$2b$', '$2a$')}",
        f"zoë:{sha512_crypt('pw-zoë'.encode(), 'salt')}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def basic_simulator(htpasswd: Path, **extra: Any) -> Simulator:
    auth = {
        "staff": {"type": "basic", "htpasswd": str(htpasswd), "realm": "Staff only"},
        "kept": {"type": "basic", "htpasswd": str(htpasswd), "forward_credentials": True},
    }
    routes = [
        {"path_prefix": "/staff/", "upstream": "app", "auth": "staff"},
        {"path_prefix": "/kept/", "upstream": "app", "auth": "kept"},
    ]
    return simulator(auth, routes, **extra)


def test_basic_with_bcrypt_and_sha512_crypt(htpasswd: Path) -> None:
    sim = basic_simulator(htpasswd)
    challenge = send(sim, "/staff/")
    assert status(challenge) == 401
    assert challenge.response.headers.get_all("www-authenticate") == ['Basic realm="Staff only", charset="UTF-8"']
    ok = send(sim, "/staff/", [basic("ann", "pw-ann")])
    assert status(ok) == 200 and sent(ok, "authorization") == []
    assert ok.ctx["auth"] == {"policy": "staff", "type": "basic", "user": "ann", "claims": {}}
    assert status(send(sim, "/staff/", [basic("bob", "Hello world!")])) == 200, "SHA-512-crypt"
    assert status(send(sim, "/staff/", [basic("cat", "pw-cat")])) == 200, "SHA-512-crypt with rounds=1000"
    assert send(sim, "/staff/", [basic("zoë", "pw-zoë")]).ctx["auth"]["user"] == "zoë", "UTF-8 user names"
    assert status(send(sim, "/staff/", [basic("bin", b"\xff\xfe")])) == 200, "bcrypt takes any bytes ($2a$)"
    for user, password in (("ann", "pw-bob"), ("carl", "pw-ann"), ("bob", "hello world!"), ("Ann", "pw-ann")):
        assert status(send(sim, "/staff/", [basic(user, password)])) == 401, (user, password)
    kept = send(sim, "/kept/", [basic("ann", "pw-ann")])
    assert sent(kept, "authorization") == [basic("ann", "pw-ann")[1]]


def test_bcrypt_passwords_longer_than_72_bytes_are_refused(htpasswd: Path) -> None:
    sim = basic_simulator(htpasswd)
    assert status(send(sim, "/staff/", [basic("long", LONG)])) == 200, "72 bytes ($2y$)"
    assert status(send(sim, "/staff/", [basic("long", LONG + b"p")])) == 401, "not silently cut at 72"
    assert not builtin.verify(LONG + b"x", bcrypt.hashpw(LONG, bcrypt.gensalt(4)).decode())


def test_sha512_crypt_needs_a_utf8_password(htpasswd: Path) -> None:
    sim = basic_simulator(htpasswd)
    assert status(send(sim, "/staff/", [basic("bob", b"Hello world!\xff")])) == 401
    assert not sha512_check("Hello world!".encode("utf-16"), SHA512_HELLO)


@pytest.mark.parametrize(
    "value",
    [
        "Basic YW5uOnB3LWFubg",  # no padding
        "Basic YW5uOnB3LWFubg==x",
        "Basic YW5uOnB3LWFubh==",  # stray bits in the last character
        "Basic YW5u OnB3LWFubg==",
        "Basic YW5uOnB3LWFubg=\t=",
        "Basic YW5uLXB3LWFubg==",  # ann-pw-ann: no colon
        "Basic",
        "Basic ",
        "Basic\tYW5uOnB3LWFubg==",
        "Bearer YW5uOnB3LWFubg==",
        "Basic !!!",
    ],
)
def test_malformed_basic_credentials(htpasswd: Path, value: str) -> None:
    sim = basic_simulator(htpasswd)
    assert status(send(sim, "/staff/", [("Authorization", value)])) == 401


def test_basic_scheme_and_spaces(htpasswd: Path) -> None:
    sim = basic_simulator(htpasswd)
    encoded = basic("ann", "pw-ann")[1].removeprefix("Basic ")
    assert status(send(sim, "/staff/", [("Authorization", f"bAsIc    {encoded}")])) == 200
    assert status(send(sim, "/staff/", [("Authorization", f"Basic {encoded}"), basic("x", "y")])) == 200
    assert status(send(sim, "/staff/", [basic("x", "y"), ("Authorization", f"Basic {encoded}")])) == 401
    non_ascii = [("Authorization", f"Basic {encoded} é")]
    assert status(send(sim, "/staff/", non_ascii)) == 401, "a field with obs-text has no credentials"


def test_successful_checks_are_remembered(htpasswd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = basic_simulator(htpasswd)
    calls: list[bytes] = []
    verify = builtin.verify

    def counting(password: bytes, hashed: str) -> bool:
        calls.append(password)
        return verify(password, hashed)

    monkeypatch.setattr(builtin, "verify", counting)
    for _ in range(3):
        assert status(send(sim, "/staff/", [basic("ann", "pw-ann")])) == 200
    assert calls == [b"pw-ann"]
    for _ in range(2):
        assert status(send(sim, "/staff/", [basic("ann", "wrong")])) == 401
    assert calls == [b"pw-ann", b"wrong", b"wrong"], "failures are not remembered"
    monkeypatch.setattr(builtin, "REMEMBERED", 1)
    assert status(send(sim, "/staff/", [basic("bob", "Hello world!")])) == 200
    assert status(send(sim, "/staff/", [basic("ann", "pw-ann")])) == 200
    assert calls[-2:] == [b"Hello world!", b"pw-ann"], "a full memory starts over"


# -- SHA-512-crypt -----------------------------------------------------------------------------------

# The SHA-512 test vectors of Drepper's document: (setting, password, result).
DREPPER = [
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/"
        "y3RnOaw5v.",
    ),
    (
        "$6$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8"
        "audkUEm0",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiD"
        "wGqd8p4ur1",
    ),
    (
        "$6$rounds=77777$short",
        "we have a short salt string but not a short password",
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0",
    ),
    (
        "$6$rounds=123456$asaltof16chars..",
        "a short string",
        "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcg"
        "EJAstJeonj1",
    ),
    (
        "$6$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaH"
        "HrsX.",
    ),
]


@pytest.mark.parametrize(("setting", "password", "expected"), DREPPER, ids=[v[0] for v in DREPPER])
def test_sha512_crypt_test_vectors(setting: str, password: str, expected: str) -> None:
    rest = setting.removeprefix("$6$")
    rounds = None
    if rest.startswith("rounds="):
        count, rest = rest.split("$", 1)
        rounds = int(count.removeprefix("rounds="))
    assert sha512_crypt(password.encode(), rest, rounds) == expected
    assert sha512_check(password.encode(), expected)
    assert not sha512_check(password.encode() + b".", expected)


def test_sha512_check_reads_hashes_as_the_engine_does() -> None:
    assert sha512_crypt(b"pw", "salt$ignored") == sha512_crypt(b"pw", "salt")
    # The engine refuses, rather than clamps, rounds outside [1000, 999999999].
    low = DREPPER[-1][2].replace("=1000$", "=10$")
    assert not sha512_check(b"the minimum number is still observed", low)
    assert sha512_check(b"the minimum number is still observed", low.replace("=10$", "=1000$"))
    assert not sha512_check(b"Hello world!", SHA512_HELLO + "$")
    assert not sha512_check(b"Hello world!", SHA512_HELLO.replace("$6$", "$5$"))
    assert not sha512_check(b"Hello world!", "$6$rounds=x$" + SHA512_HELLO.removeprefix("$6$"))
    # A salt longer than 16 characters is cut, as the document says.
    long_salt = sha512_crypt(b"pw", "0123456789abcdefXYZ")
    assert long_salt.split("$")[2] == "0123456789abcdef"
    assert sha512_check(b"pw", long_salt.replace("$0123456789abcdef$", "$0123456789abcdefXYZ$"))


# -- JWT -----------------------------------------------------------------------------------------------


class Keys:
    """An RSA and a P-256 key pair, and a second RSA key."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def jwk(key: rsa.RSAPrivateKey, **members: str) -> dict[str, str]:
        numbers = key.public_key().public_numbers()
        n, e = numbers.n.to_bytes(256, "big"), numbers.e.to_bytes(3, "big")
        return {"kty": "RSA", "n": b64url(n), "e": b64url(e), **members}

    def pem(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return public.decode()

    @staticmethod
    def rs256(key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
        return lambda message: key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def es256(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self.ec.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def hs256(message: bytes, secret: bytes = SECRET.encode()) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def token(header: dict[str, Any], claims: dict[str, Any] | str, sign: Callable[[bytes], bytes] = hs256) -> str:
    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload.encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def raw_token(header: bytes, payload: bytes, sign: Callable[[bytes], bytes] = hs256) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


CLAIMS = {"sub": "u-1", "iss": "https://id.example", "aud": "api", "exp": int(time.time()) + 3600, "scope": ["read"]}


@pytest.fixture
def jwt_simulator(keys: Keys, tmp_path: Path) -> Simulator:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [Keys.jwk(keys.rsa, kid="r1"), Keys.jwk(keys.rsa2, kid="r2", alg="RS256")]}, indent=1)
    )
    auth = {
        "tokens": {
            "type": "jwt",
            "algorithms": ["HS256", "RS256", "ES256"],
            "secret": SECRET,
            "jwks_file": str(jwks),
            "public_key": keys.pem(keys.ec),
            "issuer": "https://id.example",
            "audience": ["api", "web"],
        },
        "rsa_only": {"type": "jwt", "algorithms": ["RS256"], "public_key": keys.pem(keys.rsa)},
        "kept": {"type": "jwt", "algorithms": ["HS256"], "secret": SECRET, "forward_credentials": True},
    }
    routes = [
        {"path_prefix": "/jwt/", "upstream": "app", "auth": "tokens"},
        {"path_prefix": "/rsa/", "upstream": "app", "auth": "rsa_only"},
        {"path_prefix": "/kept/", "upstream": "app", "auth": "kept"},
    ]
    return simulator(auth, routes)


def jwt_status(sim: Simulator, jwt: str, target: str = "/jwt/x") -> int:
    return status(send(sim, target, [bearer(jwt)]))


def test_jwt_signed_each_way(jwt_simulator: Simulator, keys: Keys) -> None:
    sim = jwt_simulator
    good = [
        token({"alg": "HS256", "typ": "JWT"}, CLAIMS),
        token({"alg": "RS256", "kid": "r1"}, CLAIMS, Keys.rs256(keys.rsa)),
        token({"alg": "RS256"}, CLAIMS, Keys.rs256(keys.rsa2)),  # no kid: every suitable key is tried
        token({"alg": "ES256"}, {**CLAIMS, "aud": ["other", "web"]}, keys.es256),
    ]
    for jwt in good:
        result = send(sim, "/jwt/x", [bearer(jwt)])
        assert status(result) == 200, jwt
        assert sent(result, "authorization") == []
    ok = send(sim, "/jwt/x", [bearer(good[0])])
    assert ok.ctx["auth"] == {"policy": "tokens", "type": "jwt", "user": "u-1", "claims": CLAIMS}
    missing = send(sim, "/jwt/x")
    assert missing.response.headers.get_all("www-authenticate") == ['Bearer realm="tokens"']
    bad = send(sim, "/jwt/x", [bearer(good[0][:-1])])
    assert bad.response.headers.get_all("www-authenticate") == ['Bearer realm="tokens", error="invalid_token"']
    assert status(send(sim, "/jwt/x", [("Authorization", f"bearer   {good[0]}")])) == 200
    assert status(send(sim, "/jwt/x", [("Authorization", f"Basic {good[0]}")])) == 401
    kept = send(sim, "/kept/", [bearer(token({"alg": "HS256"}, {"sub": 7}))])
    assert kept.ctx["auth"]["user"] == "", "a sub that is not a string"
    assert sent(kept, "authorization") == [f"Bearer {token({'alg': 'HS256'}, {'sub': 7})}"]


def test_jwt_kid_chooses_the_key(jwt_simulator: Simulator, keys: Keys) -> None:
    sim = jwt_simulator
    assert jwt_status(sim, token({"alg": "RS256", "kid": "r2"}, CLAIMS, Keys.rs256(keys.rsa2))) == 200
    assert jwt_status(sim, token({"alg": "RS256", "kid": "r1"}, CLAIMS, Keys.rs256(keys.rsa2))) == 401
    assert jwt_status(sim, token({"alg": "RS256", "kid": "r3"}, CLAIMS, Keys.rs256(keys.rsa))) == 401
    for kid in (None, 1, ["r1"]):
        assert jwt_status(sim, token({"alg": "RS256", "kid": kid}, CLAIMS, Keys.rs256(keys.rsa))) == 401, kid
    # The configured secret has no kid: a token naming one never uses it.
    assert jwt_status(sim, token({"alg": "HS256", "kid": "h"}, CLAIMS)) == 401
    assert jwt_status(sim, token({"alg": "ES256", "kid": "e"}, CLAIMS, keys.es256)) == 401


def test_jwt_algorithms_and_key_types(jwt_simulator: Simulator, keys: Keys) -> None:
    sim = jwt_simulator
    public_pem = keys.pem(keys.rsa).encode()
    confused = token({"alg": "HS256"}, CLAIMS, lambda m: hs256(m, public_pem))
    assert jwt_status(sim, confused) == 401, "an RSA public key is never an HMAC secret"
    assert jwt_status(sim, confused, "/rsa/") == 401
    assert jwt_status(sim, token({"alg": "RS256"}, CLAIMS, Keys.rs256(keys.rsa)), "/rsa/") == 200
    assert jwt_status(sim, token({"alg": "HS256"}, CLAIMS), "/rsa/") == 401, "HS256 is not in algorithms"
    assert jwt_status(sim, token({"alg": "none"}, CLAIMS, lambda m: b"")) == 401
    assert jwt_status(sim, token({"alg": "none"}, CLAIMS, lambda m: b"x")) == 401
    assert jwt_status(sim, token({"alg": "hs256"}, CLAIMS)) == 401
    assert jwt_status(sim, token({"alg": "RS512"}, CLAIMS, Keys.rs256(keys.rsa))) == 401
    assert jwt_status(sim, token({}, CLAIMS)) == 401
    assert jwt_status(sim, token({"alg": ["HS256"]}, CLAIMS)) == 401
    assert jwt_status(sim, token({"alg": "HS256", "crit": ["exp"]}, CLAIMS)) == 401
    assert jwt_status(sim, token({"alg": "HS256", "crit": []}, CLAIMS)) == 401
    # ES256 signatures are R || S, not DER.
    der = token({"alg": "ES256"}, CLAIMS, lambda m: keys.ec.sign(m, ec.ECDSA(hashes.SHA256())))
    assert jwt_status(sim, der) == 401
    # An RSA signature one byte short.
    assert jwt_status(sim, token({"alg": "RS256"}, CLAIMS, lambda m: Keys.rs256(keys.rsa)(m)[1:])) == 401


def test_jwt_keys_own_alg_restricts_them(keys: Keys, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [Keys.jwk(keys.rsa, alg="RS512"), Keys.jwk(keys.rsa2)]}))
    sim = simulator(
        {"t": {"type": "jwt", "algorithms": ["RS256"], "jwks_file": str(jwks)}},
        [{"upstream": "app", "auth": "t"}],
    )
    assert jwt_status(sim, token({"alg": "RS256"}, CLAIMS, Keys.rs256(keys.rsa)), "/") == 401
    assert jwt_status(sim, token({"alg": "RS256"}, CLAIMS, Keys.rs256(keys.rsa2)), "/") == 200


def test_jwt_claims(jwt_simulator: Simulator) -> None:
    sim = jwt_simulator
    now = int(time.time())
    valid = [
        CLAIMS,
        {**CLAIMS, "exp": now - 10},  # within the leeway of 30 s
        {**CLAIMS, "nbf": now + 10},
        {**CLAIMS, "exp": now + 300.5, "nbf": now - 1.5},
        {**CLAIMS, "aud": ["x", 3, "web"]},
        {"iss": "https://id.example", "aud": "web"},  # neither exp nor nbf
    ]
    invalid = [
        {**CLAIMS, "exp": now - 40},
        {**CLAIMS, "nbf": now + 40},
        {**CLAIMS, "exp": str(now + 300)},
        {**CLAIMS, "exp": True},
        {**CLAIMS, "exp": None},
        {**CLAIMS, "nbf": [now]},
        {**CLAIMS, "iss": "https://evil.example"},
        {k: v for k, v in CLAIMS.items() if k != "iss"},
        {**CLAIMS, "aud": "elsewhere"},
        {**CLAIMS, "aud": ["elsewhere"]},
        {**CLAIMS, "aud": [["api"]]},
        {**CLAIMS, "aud": None},
        {k: v for k, v in CLAIMS.items() if k != "aud"},
    ]
    for claims in valid:
        assert jwt_status(sim, token({"alg": "HS256"}, claims)) == 200, claims
    for claims in invalid:
        assert jwt_status(sim, token({"alg": "HS256"}, claims)) == 401, claims


def test_jwt_leeway_bounds_exactly() -> None:
    policy = builtin.Jwt(
        rproxy.config.JwtAuth(
            name="t", algorithms=("HS256",), keys=({"kty": "oct", "k": b64url(b"k")},), leeway=30.0, realm="t"
        )
    )

    def claims_at(claims: dict[str, Any], now: float) -> bool:
        return policy.claims(token({"alg": "HS256"}, claims, lambda m: hs256(m, b"k")), now) is not None

    assert claims_at({"exp": 1000}, 1029.9) and not claims_at({"exp": 1000}, 1030)
    assert claims_at({"nbf": 1000}, 970) and not claims_at({"nbf": 1000}, 969.99)
    assert claims_at({"exp": 1000.5, "nbf": 999.5}, 1000)


@pytest.mark.parametrize(
    "jwt",
    [
        "not.a.token",
        "only.two",
        "four.parts.are.wrong",
        "",
        token({"alg": "HS256"}, CLAIMS) + "=",  # padding
        token({"alg": "HS256"}, CLAIMS).replace(".", "=.", 1),
        raw_token(b'{"alg":"HS256"}', b"[1, 2]"),  # the payload is not an object
        raw_token(b'["HS256"]', b"{}"),
        raw_token(b'{"alg":"HS256"}', b"{"),
        raw_token(b'{"alg":"HS256"}', b'{"exp": NaN}'),
        raw_token(b'{"alg":"HS256"}', b'{"exp": 1e400}'),
        raw_token(b'{"alg":"HS256"}', b'{"sub": "\\ud800"}'),  # a lone surrogate
        raw_token(b'{"alg":"HS256"}', b'{"sub": "\xff"}'),  # not UTF-8
        raw_token(b'{"alg":"HS256"}', b'\xef\xbb\xbf{"sub": "a"}'),  # a byte order mark
        raw_token(b'{"alg":"HS256"}', b'{"a": ' + b"[" * 127 + b"]" * 127 + b"}"),  # 128 levels
        raw_token(b'{"alg":"HS256","alg":"none"}', b"{}"),  # the last of two wins, as in the engine
    ],
)
def test_malformed_tokens(jwt_simulator: Simulator, jwt: str) -> None:
    assert jwt_status(jwt_simulator, jwt) == 401


def test_deep_and_odd_json_that_the_engine_reads(jwt_simulator: Simulator) -> None:
    deep = raw_token(b'{"alg":"HS256"}', b'{"a": ' + b"[" * 126 + b"]" * 126 + b"}")  # 127 levels
    assert jwt_status(jwt_simulator, deep, "/kept/") == 200
    odd = raw_token(
        b' {"alg":"HS256","x":{"crit":1}} ', b'{"sub": "\\u00e9", "n": 1e308, "big": 123456789012345678901234567890}'
    )
    result = send(jwt_simulator, "/kept/", [bearer(odd)])
    assert status(result) == 200 and result.ctx["auth"]["user"] == "é"
    assert result.ctx["auth"]["claims"]["big"] == 123456789012345678901234567890


# -- forward auth -----------------------------------------------------------------------------------


class Service:
    """An auth service: the X-Token field decides; counts what it is asked."""

    def __init__(self) -> None:
        self.origin = Origin(self.handle)

    def handle(self, req: Received) -> Reply:
        token = req.header("x-token")
        if token == "good":
            return Reply(200, [("X-User", "ann"), ("X-Groups", "a"), ("X-Groups", "b")], b"fine\n")
        if token == "big":
            return Reply(204, [("X-User", "big")], b"x" * (200 * 1024))
        if token == "banned":
            return Reply(403, [], b"no\n")
        if token == "odd":
            return Reply(500, [], b"broken\n")
        if token == "slow":
            return Reply(200, [], b"", delay=1.0)
        if token == "quiet":
            return Reply(401, [], b"")
        return Reply(401, [("WWW-Authenticate", 'Cookie realm="sso"'), ("WWW-Authenticate", "Other")], b"who?\n")

    @property
    def asked(self) -> list[Received]:
        return self.origin.requests


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.origin.close()


def dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def forward_simulator(service: Service, **policy: Any) -> Simulator:
    auth = {
        "sso": {
            "type": "forward",
            "upstream": "sso",
            "path": "/check?x=1",
            "send_headers": ["x-token", "cookie", "authorization"],
            "copy_headers": ["x-user", "x-groups"],
            **policy,
        },
        "dead": {"type": "forward", "upstream": "dead"},
        "keys": {"type": "api_key", "keys": {"acme": "k-acme"}},
    }
    routes = [
        {"path_prefix": "/sso/", "upstream": "app", "auth": "sso"},
        {"path_prefix": "/dead/", "upstream": "app", "auth": ["keys", "dead"]},
        {"path_prefix": "/either/", "upstream": "app", "auth": ["sso", "keys"]},
    ]
    pools = {
        "sso": {"servers": [dead_port(), service.origin.addr], "response_timeout": "300ms"},
        "dead": {"servers": [dead_port()], "connect_timeout": "200ms"},
    }
    return simulator(auth, routes, pools=pools)


def test_forward_auth_asks_the_service(service: Service) -> None:
    sim = forward_simulator(service)
    fields = [
        ("X-Token", "good"),
        ("Cookie", "a=1"),
        ("X-User", "forged"),
        ("Cookie", "b=2"),
        ("Authorization", "Bearer t"),
        ("X-Other", "1"),
    ]
    ok = send(sim, "/sso/page?y=%41", fields, host="Shop.Example:8080", client="10.0.0.5:4000")
    assert status(ok) == 200
    assert sent(ok, "x-user") == ["ann"], "the service's answer replaces the client's field"
    assert sent(ok, "x-groups") == ["a"], "its first line"
    assert sent(ok, "authorization") == [], "the credential is removed"
    assert sent(ok, "x-token") == ["good"], "other sent fields stay"
    assert ok.ctx["auth"] == {"policy": "sso", "type": "forward", "user": "", "claims": {}}
    (asked,) = service.asked
    assert (asked.method, asked.target) == ("GET", "/check?x=1")
    assert asked.headers == [
        ("host", str(sim.config.upstreams["sso"].servers[0])),  # the pool's first server, as the engine sends
        ("x-token", "good"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("authorization", "Bearer t"),
        ("x-original-method", "GET"),
        ("x-original-uri", "/sso/page?y=%41"),
        ("x-forwarded-for", "10.0.0.5"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "Shop.Example:8080"),
    ]
    no_user = send(sim, "/sso/", [("X-Token", "big"), ("X-Groups", "forged")])
    assert status(no_user) == 200, "any 2xx; a long body is read in part"
    assert (sent(no_user, "x-user"), sent(no_user, "x-groups")) == (["big"], []), "the client's own is removed"


def test_forward_auth_refusals(service: Service) -> None:
    sim = forward_simulator(service)
    denied = send(sim, "/sso/", [("X-Token", "who")])
    assert status(denied) == 401 and denied.upstream is None
    assert denied.response.headers.get_all("www-authenticate") == ['Cookie realm="sso"'], "the first line"
    assert denied.response.body == b"401 Unauthorized\n"
    quiet = send(sim, "/sso/", [("X-Token", "quiet")])
    assert status(quiet) == 401 and "www-authenticate" not in quiet.response.headers
    banned = send(sim, "/sso/", [("X-Token", "banned")])
    assert (status(banned), banned.response.body) == (403, b"403 Forbidden\n")
    assert status(send(sim, "/sso/", [("X-Token", "odd")])) == 502
    slow = send(sim, "/sso/", [("X-Token", "slow")])
    assert (status(slow), slow.response.body) == (502, b"502 Bad Gateway\n"), "past the pool's response_timeout"
    assert status(send(sim, "/dead/")) == 502, "a service that cannot be reached"
    assert status(send(sim, "/dead/", {"X-Api-Key": "k-acme"})) == 200, "an earlier policy accepted it"


def test_a_forbidding_service_ends_the_search(service: Service) -> None:
    sim = forward_simulator(service)
    assert status(send(sim, "/either/", [("X-Token", "banned"), ("X-Api-Key", "k-acme")])) == 403
    challenged = send(sim, "/either/", [("X-Token", "who")])
    assert challenged.response.headers.get_all("www-authenticate") == [
        'Cookie realm="sso"',
        'ApiKey realm="keys", header="x-api-key"',
    ]
    assert status(send(sim, "/either/", [("X-Token", "who"), ("X-Api-Key", "k-acme")])) == 200
    assert status(send(sim, "/either/", [("X-Token", "odd"), ("X-Api-Key", "k-acme")])) == 502


def test_forward_decisions_are_cached_by_the_fields_sent(service: Service) -> None:
    sim = forward_simulator(service, cache="30s")
    for _ in range(3):
        assert status(send(sim, "/sso/a", [("X-Token", "good")])) == 200
    assert len(service.asked) == 1
    assert status(send(sim, "/sso/b", [("X-Token", "good"), ("Cookie", "c=1")])) == 200
    assert len(service.asked) == 2, "other fields sent: asked again"
    assert status(send(sim, "/sso/b", [("X-Token", "good"), ("X-Unsent", "1")])) == 200
    assert len(service.asked) == 2, "a field not sent is not part of the key"
    for _ in range(2):
        assert status(send(sim, "/sso/", [("X-Token", "banned")])) == 403
        assert send(sim, "/sso/", [("X-Token", "who")]).response.headers["www-authenticate"] == 'Cookie realm="sso"'
    assert len(service.asked) == 4, "refusals are cached too"
    for _ in range(2):
        assert status(send(sim, "/sso/", [("X-Token", "odd")])) == 502
    assert len(service.asked) == 6, "failures are not"


def test_forward_decisions_expire(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = forward_simulator(service, cache="1s")
    clock = [1000.0]
    monkeypatch.setattr(builtin.time, "monotonic", lambda: clock[0])
    send(sim, "/sso/", [("X-Token", "good")])
    clock[0] += 0.999
    send(sim, "/sso/", [("X-Token", "good")])
    assert len(service.asked) == 1
    clock[0] += 0.001
    send(sim, "/sso/", [("X-Token", "good")])
    assert len(service.asked) == 2


def test_without_a_cache_every_request_is_asked(service: Service) -> None:
    sim = forward_simulator(service)
    for _ in range(3):
        send(sim, "/sso/", [("X-Token", "good")])
    assert len(service.asked) == 3


# -- several policies, and what later hooks see ---------------------------------------------------------


def test_any_of_several_policies_in_order(keys_file: Path, htpasswd: Path) -> None:
    auth = {
        "partners": {"type": "api_key", "keys": {"acme": "k-acme"}},
        "staff": {"type": "basic", "htpasswd": str(htpasswd), "realm": "Staff only"},
        "tokens": {"type": "jwt", "algorithms": ["HS256"], "secret": SECRET},
    }
    sim = simulator(auth, [{"upstream": "app", "auth": ["partners", "staff", "tokens"]}])
    refused = send(sim)
    assert refused.response.headers.get_all("www-authenticate") == [
        'ApiKey realm="partners", header="x-api-key"',
        'Basic realm="Staff only", charset="UTF-8"',
        'Bearer realm="tokens"',
    ]
    # The first policy that accepts wins; only its credential is removed.
    both = send(sim, "/", [("X-Api-Key", "k-acme"), basic("bob", "Hello world!")])
    assert both.ctx["auth"]["policy"] == "partners"
    assert sent(both, "x-api-key") == [] and sent(both, "authorization") == [basic("bob", "Hello world!")[1]]
    staff = send(sim, "/", [("X-Api-Key", "nope"), basic("bob", "Hello world!")])
    assert staff.ctx["auth"]["policy"] == "staff"
    assert sent(staff, "x-api-key") == ["nope"] and sent(staff, "authorization") == []
    jwt = send(sim, "/", [bearer(token({"alg": "HS256"}, {"sub": "t"}))])
    assert jwt.ctx["auth"]["user"] == "t"
    bad = send(sim, "/", [bearer("x.y.z")])
    assert bad.response.headers.get_all("www-authenticate")[2] == 'Bearer realm="tokens", error="invalid_token"'


class Seen:
    """Records ``ctx["auth"]`` in the upstream request phase."""

    def __init__(self) -> None:
        self.auth: list[Any] = []

    def rproxy_upstream_request(self, ctx: dict[str, Any]) -> None:
        self.auth.append(ctx.get("auth"))


def test_later_hooks_and_header_rules_see_the_user() -> None:
    seen = Seen()
    sim = simulator(
        {"partners": {"type": "api_key", "keys": {"acme": "k-acme"}}},
        [{"path_prefix": "/keys/", "upstream": "app", "auth": "partners"}, {"upstream": "app"}],
        plugins=[("seen", seen)],
        headers={
            "request": {"set": {"x-auth-user": "[$auth_user]"}},
            "response": {"set": {"x-auth-user": "[$auth_user]"}},
        },
    )
    ok = send(sim, "/keys/", {"X-Api-Key": "k-acme"})
    assert sent(ok, "x-auth-user") == ["[acme]"] and ok.response.headers["x-auth-user"] == "[acme]"
    assert seen.auth == [{"policy": "partners", "type": "api_key", "user": "acme", "claims": {}}]
    assert send(sim, "/keys/").response.headers["x-auth-user"] == "[]", "refused: nobody"
    assert sent(send(sim, "/open"), "x-auth-user") == ["[]"], "no policy: nobody"
    expand = header_policy.expand
    assert expand(parse_template("$auth_user"), make_request(), {"auth": {"user": "zoë"}}) == "zoë"
    assert expand(parse_template("$auth_user"), make_request(), {"auth": "odd"}) == ""


def test_a_cors_preflight_is_answered_before_authentication() -> None:
    sim = simulator(
        {"partners": {"type": "api_key", "keys": {"acme": "k-acme"}}},
        [{"upstream": "app", "auth": "partners"}],
        cors={"origins": ["https://app.example"]},
    )
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    assert status(send(sim, "/", preflight, method="OPTIONS")) == 204
    refused = send(sim, "/", {"Origin": "https://app.example"})
    assert status(refused) == 401
    assert refused.response.headers["access-control-allow-origin"] == "https://app.example"


def test_a_plugins_tryfirst_access_hook_runs_before_auth_and_an_ordinary_one_after() -> None:
    calls: list[str] = []

    class First:
        @staticmethod
        @rproxy.hookimpl(tryfirst=True)
        def rproxy_access(request: Any) -> None:
            calls.append("first")

    class After:
        @staticmethod
        def rproxy_access(request: Any) -> None:
            calls.append("after")

    sim = simulator(
        {"partners": {"type": "api_key", "keys": {"acme": "k-acme"}}},
        [{"upstream": "app", "auth": "partners"}],
        plugins=[("first", First), ("after", After)],
    )
    send(sim, "/")
    assert calls == ["first"]
    send(sim, "/", {"X-Api-Key": "k-acme"})
    assert calls == ["first", "first", "after"]


def test_disabling_the_plugin_turns_access_control_off() -> None:
    doc = configuration(
        {"partners": {"type": "api_key", "keys": {"acme": "k-acme"}}},
        [{"upstream": "app", "auth": "partners", "deny": ["127.0.0.1"]}],
    )
    doc["plugins"]["disable"] = ["auth"]
    assert status(send(Simulator(doc))) == 200


def test_the_plugin_has_no_options() -> None:
    doc = configuration({}, [{"upstream": "app"}])
    doc["plugins"]["auth"] = {"x": 1}
    with pytest.raises(ConfigError, match=r"plugins\.auth\.x: the auth plugin has no options"):
        Simulator(doc)


def test_the_plugin_runs_natively_unless_told_not_to() -> None:
    from rproxy.plan import build_plan
    from rproxy.plugins import load_plugins

    cfg = rproxy.testing._as_config(configuration({}, [{"upstream": "app", "deny": ["10.0.0.0/8"]}]))
    loaded = load_plugins(cfg)
    assert [s.native for s in build_plan(loaded).steps["rproxy_access"]] == ["headers", "auth"]
    assert [s.native for s in build_plan(loaded, native=False).steps["rproxy_access"]] == [None, None]


# -- configuration -------------------------------------------------------------------------------------


def test_files_are_read_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "keys.txt").write_text("acme:k-acme\n")
    (tmp_path / "conf" / "proxy.toml").write_text(
        '[upstreams.app]\nservers = ["127.0.0.1:9"]\n'
        '[auth.p]\ntype = "api_key"\nkeys_file = "keys.txt"\n'
        '[[routes]]\nupstream = "app"\nauth = "p"\n[plugins]\ndirs = []\n'
    )
    cfg = rproxy.load(tmp_path / "conf" / "proxy.toml")
    assert cfg.auth["p"] == rproxy.config.ApiKeyAuth(name="p", keys=(("acme", "k-acme"),), realm="p")
    assert cfg.routes[0].auth == ("p",)


def test_policies_that_no_route_uses_are_checked_but_harmless(tmp_path: Path) -> None:
    sim = simulator({"unused": {"type": "api_key", "keys": {"a": "b"}}}, [{"upstream": "app"}])
    assert status(send(sim)) == 200
